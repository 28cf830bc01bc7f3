// Forward inference and the folding transform.
//
// With the running statistics in place of the batch ones,
//   rstd  = 1 / sqrt(running_var + eps)
//   y     = (x - running_mean) * (gamma * rstd) + beta
// one subtract and one fma per value. The per-channel factors are computed
// in double (correctly rounded on both the GPU and the emulator, so both
// agree bitwise) once per thread for ChannelMinor tensors, and whenever a
// thread's channel changes for ChannelMajor ones. One launch, no workspace.
//
// The factor is frozen_scale() (frozen.cuh), shared with the frozen backward.
// For folding BN into the preceding layer the same transform is exported as
//   scale = gamma * rstd,   shift = beta - running_mean * scale
// so that y = x * scale + shift, or folded on the device into a linear or
// 1x1-convolution layer: W[o][:] *= scale[o], b[o] = b[o] * scale[o] + shift[o].
#include "dtype.cuh"
#include "epilogue.cuh"
#include "frozen.cuh"
#include "launch.h"
#include "geometry.cuh"
#include "layout.cuh"

namespace bnorm {
namespace kernels {

namespace {

// y = (x - running_mean) * scale + beta, then the epilogue.
template <class T, int N>
struct InferenceOp {
  struct Coef {
    float mean, scale, beta;
  };
  struct In {
    Packed<T, N> x, z;
  };
  const T* x;
  T* y;
  const float* __restrict__ gamma;
  const float* __restrict__ beta;
  const float* __restrict__ running_mean;
  const float* __restrict__ running_var;
  double eps;
  const T* __restrict__ z;  // ADD_RELU, else NULL
  uint32_t* mask;           // optional with a ReLU
  bool relu;

  __device__ Coef coef(int64_t ch) const {
    return {running_mean[ch], float(frozen_scale(gamma, running_var, ch, eps)),
            beta ? beta[ch] : 0.0f};
  }
  __device__ void load(int64_t offset, In& in) const {
    in.x = load_packed<T, N>(x + offset);
    in.z = z ? load_packed<T, N>(z + offset) : Packed<T, N>{};  // zeros, never read, without z
  }
  __device__ float compute(const Coef& k, const In& in, int i) const {
    const float v = fmaf(in.x[i] - k.mean, k.scale, k.beta) + (z ? in.z[i] : 0.0f);
    return relu ? kernels::relu(v) : v;
  }
  __device__ void store(int64_t offset, const In&, const float (&out)[N]) const {
    store_vec<T, N>(y + offset, out);
    if (mask) set_mask_bits<N>(mask, offset, out);
  }
};

__global__ void __launch_bounds__(kApplyThreads)
    scale_shift(ScaleShiftArgs a) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; ch < a.c; ch += stride) {
    const double b = a.beta ? double(a.beta[ch]) : 0.0;
    const double scale = frozen_scale(a.gamma, a.running_var, ch, a.eps);
    a.scale[ch] = float(scale);
    a.shift[ch] = float(b - double(a.running_mean[ch]) * scale);
  }
}

// A block per output row of the layer: the row's weights times the BN's
// scale, and its bias folded with the shift.
__global__ void __launch_bounds__(kApplyThreads) fold_linear(FoldArgs a) {
  for (int64_t o = blockIdx.x; o < a.out_features; o += gridDim.x) {
    const double scale = frozen_scale(a.gamma, a.running_var, o, a.eps);
    const float s = float(scale);
    float* row = a.weight + o * a.in_features;
    for (int64_t i = threadIdx.x; i < a.in_features; i += blockDim.x) row[i] *= s;
    if (threadIdx.x == 0) {
      const double b = a.beta ? double(a.beta[o]) : 0.0;
      const double shift = b - double(a.running_mean[o]) * scale;
      const double bias = a.bias_in ? double(a.bias_in[o]) : 0.0;
      a.bias_out[o] = float(bias * scale + shift);
    }
  }
}

}  // namespace

cudaError_t fold_into_linear(const FoldArgs& a, cudaStream_t stream) {
  const unsigned blocks = unsigned(a.out_features < 65535 ? a.out_features : 65535);
  BNORM_LAUNCH(fold_linear, blocks, kApplyThreads, 0, stream, a);
  return cudaGetLastError();
}

cudaError_t forward_inference(const InferenceArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const bool major = t.order == Order::ChannelMajor;
    const int width = vector_width<T>(major ? t.spatial : t.c, {a.x, a.y, a.ep.residual});
    if (a.ep.mask) {
      const cudaError_t e = cudaMemsetAsync(a.ep.mask, 0, a.ep.mask_bytes, stream);
      if (e != cudaSuccess) return e;
    }
    return dispatch_width<T>(width, [&](auto n) -> cudaError_t {
      constexpr int N = decltype(n)::value;
      const InferenceOp<T, N> op{static_cast<const T*>(a.x),
                                 static_cast<T*>(a.y),
                                 a.gamma,
                                 a.beta,
                                 a.running_mean,
                                 a.running_var,
                                 a.eps,
                                 static_cast<const T*>(a.ep.residual),
                                 a.ep.mask,
                                 a.ep.kind != 0};
      launch_apply<N>(op, t, a.plan, stream);
      return cudaGetLastError();
    });
  });
}

cudaError_t inference_scale_shift(const ScaleShiftArgs& a, cudaStream_t stream) {
  const int64_t blocks64 = (a.c + kApplyThreads - 1) / kApplyThreads;
  const unsigned blocks = unsigned(blocks64 < 1024 ? blocks64 : 1024);
  BNORM_LAUNCH(scale_shift, blocks, kApplyThreads, 0, stream, a);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace bnorm

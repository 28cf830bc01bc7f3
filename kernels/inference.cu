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
// so that y = x * scale + shift.
#include "dtype.cuh"
#include "frozen.cuh"
#include "launch.h"
#include "geometry.cuh"
#include "layout.cuh"

namespace bnorm {
namespace kernels {

namespace {

// y = (x - running_mean) * scale + beta.
template <class T, int N>
struct InferenceOp {
  struct Coef {
    float mean, scale, beta;
  };
  struct In {
    float x[N];
  };
  const T* x;
  T* y;
  const float* __restrict__ gamma;
  const float* __restrict__ beta;
  const float* __restrict__ running_mean;
  const float* __restrict__ running_var;
  double eps;

  __device__ Coef coef(int64_t ch) const {
    return {running_mean[ch], float(frozen_scale(gamma, running_var, ch, eps)),
            beta ? beta[ch] : 0.0f};
  }
  __device__ void load(int64_t offset, In& in) const { load_vec<T, N>(x + offset, in.x); }
  __device__ float compute(const Coef& k, const In& in, int i) const {
    return fmaf(in.x[i] - k.mean, k.scale, k.beta);
  }
  __device__ void store(int64_t offset, const float (&out)[N]) const {
    store_vec<T, N>(y + offset, out);
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

}  // namespace

cudaError_t forward_inference(const InferenceArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const bool major = t.order == Order::ChannelMajor;
    const int width = vector_width<T>(major ? t.spatial : t.c, {a.x, a.y});
    return dispatch_width<T>(width, [&](auto n) -> cudaError_t {
      constexpr int N = decltype(n)::value;
      const InferenceOp<T, N> op{static_cast<const T*>(a.x), static_cast<T*>(a.y), a.gamma,
                                 a.beta, a.running_mean, a.running_var, a.eps};
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

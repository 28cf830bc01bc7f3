// Forward inference and the folding transform.
//
// With the running statistics in place of the batch ones,
//   rstd  = 1 / sqrt(running_var + eps)
//   y     = (x - running_mean) * (gamma * rstd) + beta
// one subtract and one fma per value. The per-channel factors are computed
// in double (correctly rounded on both the GPU and the emulator, so both
// agree bitwise) whenever a thread's channel changes, which in a grid-stride
// walk is rare for ChannelMajor tensors with large spatial extents.
//
// The factor is frozen_scale() (frozen.cuh), shared with the frozen backward.
// For folding BN into the preceding layer the same transform is exported as
//   scale = gamma * rstd,   shift = beta - running_mean * scale
// so that y = x * scale + shift.
#include "dtype.cuh"
#include "frozen.cuh"
#include "launch.h"
#include "layout.cuh"

namespace bnorm {
namespace kernels {

namespace {

template <class T>
__global__ void __launch_bounds__(kApplyThreads)
    normalize_inference(const T* x, T* y, int64_t numel, int64_t inner, int64_t c,
                        const float* __restrict__ gamma, const float* __restrict__ beta,
                        const float* __restrict__ running_mean,
                        const float* __restrict__ running_var, double eps) {
  FlatCursor cur(int64_t(blockIdx.x) * blockDim.x + threadIdx.x,
                 int64_t(blockDim.x) * gridDim.x, inner, c);
  int64_t cached = -1;
  float mean = 0.0f, scale = 0.0f, b = 0.0f;
  for (; cur.i < numel; cur.advance()) {
    if (cur.ch != cached) {
      cached = cur.ch;
      mean = running_mean[cached];
      scale = float(frozen_scale(gamma, running_var, cached, eps));
      b = beta ? beta[cached] : 0.0f;
    }
    y[cur.i] = from_float<T>(fmaf(to_float(x[cur.i]) - mean, scale, b));
  }
}

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
    const int64_t inner = t.order == Order::ChannelMajor ? t.spatial : 1;
    BNORM_LAUNCH((normalize_inference<T>), unsigned(a.plan.apply_blocks), kApplyThreads, 0,
                 stream, static_cast<const T*>(a.x), static_cast<T*>(a.y), t.numel(), inner,
                 t.c, a.gamma, a.beta, a.running_mean, a.running_var, a.eps);
    return cudaGetLastError();
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

// Forward training: batch statistics, running statistics, normalize.
//
// Per channel, over its m = n * spatial values:
//   mean = sum x / m,  var = sum (x - mean)^2 / m,  rstd = 1 / sqrt(var + eps)
//   y    = gamma * (x - mean) * rstd + beta
//   running_mean <- (1 - f) running_mean + f mean
//   running_var  <- (1 - f) running_var  + f var m / (m - 1)
//
// Accuracy when the mean dwarfs the spread. Every value is first shifted by
// a pivot, the channel's first value: x - pivot is exact in fp32 whenever x
// and the pivot are within a factor of two (Sterbenz), so the statistics of
// the shifted values carry no cancellation however large the mean. Each
// thread accumulates register tiles of kTile values (tile mean and M2 in two
// passes over registers), folds them into its (count, mean, M2) with Chan's
// rule, and the block merges threads in a fixed tree (reduce.cuh). The
// normalize pass keeps the pivot too:
//   y = scale * (x - pivot) + shift,   scale = gamma * rstd,
//   shift = beta - scale * (mean - pivot)
// so a constant channel gives exactly beta, and one fma per value remains.
//
// Three launches, all deterministic:
//   1. partial statistics: `splits` blocks per channel (ChannelMajor) or per
//      32-channel tile (ChannelMinor), each writing (count, mean, M2) to the
//      workspace; no atomics.
//   2. finalize: one block merges each channel's partials in split order,
//      writes saved and running statistics and the normalize coefficients,
//      then advances the step counter (after every thread has read it).
//   3. normalize: a grid-stride elementwise pass (y may alias x: each value
//      is read and then written by the same thread).
#include "dtype.cuh"
#include "launch.h"
#include "layout.cuh"
#include "reduce.cuh"

namespace bnorm {
namespace kernels {

namespace {

constexpr int kFinalizeThreads = 256;

template <class T>
__global__ void __launch_bounds__(kReduceThreads)
    stats_channel_major(const T* __restrict__ x, int64_t c, int64_t spatial, int64_t m,
                        Welford* __restrict__ partials) {
  BNORM_DYNAMIC_SHARED(smem);
  const int64_t ch = blockIdx.x;
  const float pivot = to_float(x[ch * spatial]);
  const int64_t stride = int64_t(blockDim.x) * gridDim.y;
  int64_t j = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  ChannelRunCursor cur(j, stride, spatial, c, ch);
  Welford s{};
  while (j < m) {
    float v[kTile] = {};
    int count = 0;
#pragma unroll
    for (int k = 0; k < kTile; ++k) {
      if (j < m) {
        v[k] = to_float(x[cur.offset()]) - pivot;
        ++count;
        j += stride;
        cur.advance();
      }
    }
    add_tile(s, v, count);
  }
  s = block_merge(s, reinterpret_cast<Welford*>(smem));
  if (threadIdx.x == 0) partials[int64_t(blockIdx.y) * c + ch] = s;
}

template <class T>
__global__ void __launch_bounds__(kReduceThreads)
    stats_channel_minor(const T* __restrict__ x, int64_t c, int64_t rows,
                        Welford* __restrict__ partials) {
  BNORM_DYNAMIC_SHARED(smem);
  const int64_t ch = int64_t(blockIdx.x) * kMinorCols + threadIdx.x;
  const bool active = ch < c;
  Welford s{};
  if (active) {
    const float pivot = to_float(x[ch]);
    const int64_t stride = int64_t(blockDim.y) * gridDim.y;
    int64_t r = int64_t(blockIdx.y) * blockDim.y + threadIdx.y;
    while (r < rows) {
      float v[kTile] = {};
      int count = 0;
#pragma unroll
      for (int k = 0; k < kTile; ++k) {
        if (r < rows) {
          v[k] = to_float(x[r * c + ch]) - pivot;
          ++count;
          r += stride;
        }
      }
      add_tile(s, v, count);
    }
  }
  s = column_merge(s, reinterpret_cast<Welford*>(smem));
  if (threadIdx.y == 0 && active) partials[int64_t(blockIdx.y) * c + ch] = s;
}

struct FinalizeParams {
  int64_t c, m, splits, pivot_stride;
  const Welford* partials;
  const float* gamma;
  const float* beta;
  float* running_mean;
  float* running_var;
  int64_t* step_count;
  float* saved_mean;
  float* saved_rstd;
  double eps, factor;
  float *ws_pivot, *ws_scale, *ws_shift, *ws_mean, *ws_rstd;
};

template <class T>
__global__ void __launch_bounds__(kFinalizeThreads)
    finalize_stats(const T* __restrict__ x, FinalizeParams p) {
  // Read the step counter once per thread, before thread 0 advances it.
  const double f = p.step_count ? 1.0 / (1.0 + double(*p.step_count)) : p.factor;
  for (int64_t ch = threadIdx.x; ch < p.c; ch += blockDim.x) {
    Welford s = p.partials[ch];
    for (int64_t k = 1; k < p.splits; ++k) s = merge(s, p.partials[k * p.c + ch]);
    const float pivot = to_float(x[ch * p.pivot_stride]);
    const double var = s.m2 > 0.0f ? double(s.m2) / double(p.m) : 0.0;
    const double mean = double(pivot) + double(s.mean);
    const double rstd = 1.0 / sqrt(var + p.eps);
    const double g = p.gamma ? double(p.gamma[ch]) : 1.0;
    const double b = p.beta ? double(p.beta[ch]) : 0.0;
    const float scale = float(g * rstd);
    p.ws_pivot[ch] = pivot;
    p.ws_scale[ch] = scale;
    p.ws_shift[ch] = float(b - double(scale) * double(s.mean));
    p.ws_mean[ch] = float(mean);
    p.ws_rstd[ch] = float(rstd);
    if (p.saved_mean) {
      p.saved_mean[ch] = float(mean);
      p.saved_rstd[ch] = float(rstd);
    }
    if (p.running_mean) {
      const double unbiased = var * double(p.m) / double(p.m - 1);
      if (f == 1.0) {  // replace, even if the old value is not finite
        p.running_mean[ch] = float(mean);
        p.running_var[ch] = float(unbiased);
      } else if (f != 0.0) {
        p.running_mean[ch] = float((1.0 - f) * double(p.running_mean[ch]) + f * mean);
        p.running_var[ch] = float((1.0 - f) * double(p.running_var[ch]) + f * unbiased);
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0 && p.step_count && p.running_mean) *p.step_count += 1;
}

template <class T>
__global__ void __launch_bounds__(kApplyThreads)
    normalize(const T* x, T* y, int64_t numel, int64_t inner,
              int64_t c, const float* __restrict__ pivot, const float* __restrict__ scale,
              const float* __restrict__ shift) {
  FlatCursor cur(int64_t(blockIdx.x) * blockDim.x + threadIdx.x,
                 int64_t(blockDim.x) * gridDim.x, inner, c);
  int64_t cached = -1;
  float p = 0.0f, sc = 0.0f, sh = 0.0f;
  for (; cur.i < numel; cur.advance()) {
    if (cur.ch != cached) {
      cached = cur.ch;
      p = pivot[cached];
      sc = scale[cached];
      sh = shift[cached];
    }
    y[cur.i] = from_float<T>(fmaf(sc, to_float(x[cur.i]) - p, sh));
  }
}

}  // namespace

cudaError_t forward_training(const ForwardTrainingArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const ForwardWorkspace ws(t.c, a.plan.splits);
    char* w = static_cast<char*>(a.workspace);
    Welford* partials = reinterpret_cast<Welford*>(w + ws.partials);
    const T* x = static_cast<const T*>(a.x);
    const bool major = t.order == Order::ChannelMajor;
    const unsigned splits = static_cast<unsigned>(a.plan.splits);

    if (major) {
      BNORM_LAUNCH((stats_channel_major<T>), dim3(unsigned(t.c), splits), kReduceThreads,
                   (kReduceThreads / 32) * sizeof(Welford), stream, x, t.c, t.spatial, t.m(),
                   partials);
    } else {
      BNORM_LAUNCH((stats_channel_minor<T>),
                   dim3(unsigned((t.c + kMinorCols - 1) / kMinorCols), splits),
                   dim3(kMinorCols, kMinorRows), kReduceThreads * sizeof(Welford), stream, x,
                   t.c, t.m(), partials);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;

    FinalizeParams p;
    p.c = t.c;
    p.m = t.m();
    p.splits = a.plan.splits;
    p.pivot_stride = major ? t.spatial : 1;
    p.partials = partials;
    p.gamma = a.gamma;
    p.beta = a.beta;
    p.running_mean = a.running_mean;
    p.running_var = a.running_var;
    p.step_count = a.step_count;
    p.saved_mean = a.saved_mean;
    p.saved_rstd = a.saved_rstd;
    p.eps = a.eps;
    p.factor = a.factor;
    p.ws_pivot = reinterpret_cast<float*>(w + ws.pivot);
    p.ws_scale = reinterpret_cast<float*>(w + ws.scale);
    p.ws_shift = reinterpret_cast<float*>(w + ws.shift);
    p.ws_mean = reinterpret_cast<float*>(w + ws.mean);
    p.ws_rstd = reinterpret_cast<float*>(w + ws.rstd);
    BNORM_LAUNCH((finalize_stats<T>), 1, kFinalizeThreads, 0, stream, x, p);
    e = cudaGetLastError();
    if (e != cudaSuccess || !a.y) return e;

    BNORM_LAUNCH((normalize<T>), unsigned(a.plan.apply_blocks), kApplyThreads, 0, stream, x,
                 static_cast<T*>(a.y), t.numel(), major ? t.spatial : 1, t.c, p.ws_pivot,
                 p.ws_scale, p.ws_shift);
    return cudaGetLastError();
  });
}

}  // namespace kernels
}  // namespace bnorm

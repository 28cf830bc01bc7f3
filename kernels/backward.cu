// Backward: dx, dgamma, dbeta, through the batch statistics or frozen ones.
//
// With g = dy, xhat = (x - mean) * rstd and m values per channel:
//   dbeta  = sum g
//   dgamma = sum g * xhat = rstd * sum g * (x - mean)
//   dx     = gamma * rstd * (g - dbeta / m - xhat * dgamma / m)        (full)
//   dx     = gamma * rstd * g                                          (frozen)
// The full form is the gradient through mean and variance: differentiate
// y = gamma * xhat + beta with mean and rstd as functions of x; the two
// subtracted terms are the paths through the mean and through the variance.
// Frozen (eval-mode) statistics are constants, so only the direct path stays;
// its mean and rstd come from the running statistics.
//
// Three launches, deterministic as the forward is (no atomics, fixed order):
//   1. partial sums (sum g, sum g * (x - mean)) per split and channel,
//      accumulated over register tiles and merged in a fixed tree;
//   2. finalize: per channel, merge the splits in order, write dgamma and
//      dbeta, and the coefficients of dx: a = gamma * rstd, mdy = dbeta / m,
//      k = rstd * dgamma / m, so that dx = a * ((g - mdy) - (x - mean) * k);
//   3. dx, elementwise (dx may alias dy or x: each value is read and then
//      written by the same thread).
// The frozen dx needs no reduction, so without dgamma/dbeta it is one launch.
// A full backward whose caller kept no saved statistics first recomputes
// them with the forward-statistics kernels (forward.cu).
#include "dtype.cuh"
#include "frozen.cuh"
#include "launch.h"
#include "layout.cuh"
#include "reduce.cuh"

namespace bnorm {
namespace kernels {

namespace {

constexpr int kFinalizeThreads = 256;

struct Coeffs {
  float a, mdy, k, mean;
};

template <int K>
__device__ __forceinline__ void add_tile(Sum2& s, const float (&g)[K], const float (&d)[K],
                                         int count) {
  float sg = 0.0f, sgd = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (k < count) {
      sg += g[k];
      sgd = fmaf(g[k], d[k], sgd);
    }
  }
  s.a += sg;
  s.b += sgd;
}

template <class T>
__global__ void __launch_bounds__(kReduceThreads)
    grad_sums_channel_major(const T* __restrict__ x, const T* __restrict__ dy, int64_t c,
                            int64_t spatial, int64_t m, const float* __restrict__ mean,
                            Sum2* __restrict__ partials) {
  BNORM_DYNAMIC_SHARED(smem);
  const int64_t ch = blockIdx.x;
  const float mu = mean[ch];
  const int64_t stride = int64_t(blockDim.x) * gridDim.y;
  int64_t j = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  ChannelRunCursor cur(j, stride, spatial, c, ch);
  Sum2 s{};
  while (j < m) {
    float g[kTile] = {}, d[kTile] = {};
    int count = 0;
#pragma unroll
    for (int k = 0; k < kTile; ++k) {
      if (j < m) {
        const int64_t o = cur.offset();
        g[k] = to_float(dy[o]);
        d[k] = to_float(x[o]) - mu;
        ++count;
        j += stride;
        cur.advance();
      }
    }
    add_tile(s, g, d, count);
  }
  s = block_merge(s, reinterpret_cast<Sum2*>(smem));
  if (threadIdx.x == 0) partials[int64_t(blockIdx.y) * c + ch] = s;
}

template <class T>
__global__ void __launch_bounds__(kReduceThreads)
    grad_sums_channel_minor(const T* __restrict__ x, const T* __restrict__ dy, int64_t c,
                            int64_t rows, const float* __restrict__ mean,
                            Sum2* __restrict__ partials) {
  BNORM_DYNAMIC_SHARED(smem);
  const int64_t ch = int64_t(blockIdx.x) * kMinorCols + threadIdx.x;
  const bool active = ch < c;
  Sum2 s{};
  if (active) {
    const float mu = mean[ch];
    const int64_t stride = int64_t(blockDim.y) * gridDim.y;
    int64_t r = int64_t(blockIdx.y) * blockDim.y + threadIdx.y;
    while (r < rows) {
      float g[kTile] = {}, d[kTile] = {};
      int count = 0;
#pragma unroll
      for (int k = 0; k < kTile; ++k) {
        if (r < rows) {
          g[k] = to_float(dy[r * c + ch]);
          d[k] = to_float(x[r * c + ch]) - mu;
          ++count;
          r += stride;
        }
      }
      add_tile(s, g, d, count);
    }
  }
  s = column_merge(s, reinterpret_cast<Sum2*>(smem));
  if (threadIdx.y == 0 && active) partials[int64_t(blockIdx.y) * c + ch] = s;
}

struct FinalizeParams {
  int64_t c, m, splits;
  const Sum2* partials;
  const float* gamma;
  const float* mean;
  const float* stat;  // rstd (full) or running variance (frozen)
  double eps;
  bool frozen;
  float* dgamma;
  float* dbeta;
  Coeffs* coeffs;
};

__global__ void __launch_bounds__(kFinalizeThreads) finalize_grads(FinalizeParams p) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; ch < p.c; ch += stride) {
    double sg = 0.0, sgd = 0.0;
    for (int64_t k = 0; k < p.splits; ++k) {
      const Sum2 s = p.partials[k * p.c + ch];
      sg += double(s.a);
      sgd += double(s.b);
    }
    const double rstd =
        p.frozen ? 1.0 / sqrt(double(p.stat[ch]) + p.eps) : double(p.stat[ch]);
    const double dbeta = sg;
    const double dgamma = sgd * rstd;
    if (p.dgamma) {
      p.dgamma[ch] = float(dgamma);
      p.dbeta[ch] = float(dbeta);
    }
    const double g = p.gamma ? double(p.gamma[ch]) : 1.0;
    const double inv_m = 1.0 / double(p.m);
    p.coeffs[ch] = Coeffs{float(g * rstd), float(dbeta * inv_m), float(rstd * dgamma * inv_m),
                          p.mean[ch]};
  }
}

template <class T>
__global__ void __launch_bounds__(kApplyThreads)
    dx_full(const T* x, const T* dy, T* dx, int64_t numel, int64_t inner, int64_t c,
            const Coeffs* __restrict__ coeffs) {
  FlatCursor cur(int64_t(blockIdx.x) * blockDim.x + threadIdx.x,
                 int64_t(blockDim.x) * gridDim.x, inner, c);
  int64_t cached = -1;
  Coeffs k{};
  for (; cur.i < numel; cur.advance()) {
    if (cur.ch != cached) {
      cached = cur.ch;
      k = coeffs[cached];
    }
    const float g = to_float(dy[cur.i]);
    const float d = to_float(x[cur.i]) - k.mean;
    dx[cur.i] = from_float<T>(k.a * ((g - k.mdy) - d * k.k));
  }
}

template <class T>
__global__ void __launch_bounds__(kApplyThreads)
    dx_frozen(const T* dy, T* dx, int64_t numel, int64_t inner, int64_t c,
              const float* __restrict__ gamma, const float* __restrict__ running_var,
              double eps) {
  FlatCursor cur(int64_t(blockIdx.x) * blockDim.x + threadIdx.x,
                 int64_t(blockDim.x) * gridDim.x, inner, c);
  int64_t cached = -1;
  float a = 0.0f;
  for (; cur.i < numel; cur.advance()) {
    if (cur.ch != cached) {
      cached = cur.ch;
      a = float(frozen_scale(gamma, running_var, cached, eps));
    }
    dx[cur.i] = from_float<T>(a * to_float(dy[cur.i]));
  }
}

}  // namespace

cudaError_t backward(const BackwardArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const bool recompute = !a.frozen && !a.mean;
    const BackwardWorkspace ws(t.c, a.plan.splits, recompute);
    char* w = static_cast<char*>(a.workspace);
    const T* x = static_cast<const T*>(a.x);
    const T* dy = static_cast<const T*>(a.dy);
    T* dx = static_cast<T*>(a.dx);
    const bool major = t.order == Order::ChannelMajor;
    const int64_t inner = major ? t.spatial : 1;
    const unsigned splits = static_cast<unsigned>(a.plan.splits);
    const unsigned apply_blocks = static_cast<unsigned>(a.plan.apply_blocks);
    cudaError_t e;

    const float* mean = a.mean;
    const float* stat = a.stat;
    if (recompute) {
      ForwardTrainingArgs f{};
      f.t = t;
      f.plan = a.plan;
      f.x = a.x;
      f.eps = a.eps;
      f.workspace = w + ws.forward;
      e = forward_training(f, stream);
      if (e != cudaSuccess) return e;
      const ForwardWorkspace fws(t.c, a.plan.splits);
      mean = reinterpret_cast<const float*>(w + ws.forward + fws.mean);
      stat = reinterpret_cast<const float*>(w + ws.forward + fws.rstd);
    }

    if (!a.frozen || a.dgamma) {
      Sum2* partials = reinterpret_cast<Sum2*>(w + ws.partials);
      if (major) {
        BNORM_LAUNCH((grad_sums_channel_major<T>), dim3(unsigned(t.c), splits), kReduceThreads,
                     (kReduceThreads / 32) * sizeof(Sum2), stream, x, dy, t.c, t.spatial, t.m(),
                     mean, partials);
      } else {
        BNORM_LAUNCH((grad_sums_channel_minor<T>),
                     dim3(unsigned((t.c + kMinorCols - 1) / kMinorCols), splits),
                     dim3(kMinorCols, kMinorRows), kReduceThreads * sizeof(Sum2), stream, x, dy,
                     t.c, t.m(), mean, partials);
      }
      if ((e = cudaGetLastError()) != cudaSuccess) return e;

      FinalizeParams p;
      p.c = t.c;
      p.m = t.m();
      p.splits = a.plan.splits;
      p.partials = partials;
      p.gamma = a.gamma;
      p.mean = mean;
      p.stat = stat;
      p.eps = a.eps;
      p.frozen = a.frozen;
      p.dgamma = a.dgamma;
      p.dbeta = a.dbeta;
      p.coeffs = reinterpret_cast<Coeffs*>(w + ws.coeffs);
      const int64_t fblocks = (t.c + kFinalizeThreads - 1) / kFinalizeThreads;
      BNORM_LAUNCH(finalize_grads, unsigned(fblocks < 1024 ? fblocks : 1024), kFinalizeThreads,
                   0, stream, p);
      if ((e = cudaGetLastError()) != cudaSuccess) return e;
      if (!a.frozen) {
        BNORM_LAUNCH((dx_full<T>), apply_blocks, kApplyThreads, 0, stream, x, dy, dx, t.numel(),
                     inner, t.c, p.coeffs);
        return cudaGetLastError();
      }
    }
    BNORM_LAUNCH((dx_frozen<T>), apply_blocks, kApplyThreads, 0, stream, dy, dx, t.numel(), inner,
                 t.c, a.gamma, a.stat, a.eps);
    return cudaGetLastError();
  });
}

}  // namespace kernels
}  // namespace bnorm

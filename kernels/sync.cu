// Synchronized batch norm: the statistics of a mini-batch spread over
// several ranks (GPUs), each holding n_r of the samples.
//
// Forward. Rank r reduces its own values exactly as forward.cu does (x
// shifted by the pivot p_r, its first value of the channel) and packs, per
// channel, (p_r, mean_r of x - p_r, M2_r) beside its count n_r. After the
// all-gather every rank holds every rank's triple and merges them with
// Chan's rule, in rank order 0, 1, ..., in fp64:
//   mu_r  = p_r + mean_r                       (exact in fp64)
//   n     = n_a + n_b,   delta = mu_b - mu_a,   w = n_b / n
//   mu    = mu_a + delta * w
//   M2    = M2_a + M2_b + delta^2 * n_a * w
// fp64 keeps the between-rank term free of cancellation however far the
// mean sits from zero (fp32 rank means would lose it at mean/std ~ 1e4),
// and the same order on every rank gives bitwise the same statistics
// everywhere. The rest is forward training's: var = M2 / n, rstd, running
// statistics with m / (m - 1) = n / (n - 1), and y = scale * (x - p_rank) +
// shift against this rank's own pivot (finalize.cuh's finish_moments, the
// arithmetic every path shares).
//
// Backward. The two sums of the gradient, sum g and sum g * (x - mean) with
// the global mean, are sums over ranks of sums over each rank's values, so
// each rank packs its fp32 sums as fp64 (with its count) and one all-reduce
// adds them; finish_grad_sums then gives dgamma, dbeta and dx's
// coefficients with 1/m of the global count.
//
// Launches, all deterministic (no atomics, fixed orders):
//   stats:  the statistics pass (channel_reduce.cuh), then a warp per channel
//           merges the splits and packs (forward.cu's finalize, minus the finish);
//   apply:  a thread per channel merges the ranks and finishes it; a
//           one-thread launch advances the cumulative step counter after
//           every thread has read it; the normalize pass (apply.cuh);
//   grads:  the gradient-sum pass, then a warp per channel adds the splits;
//   dx:     a thread per channel finishes the sums, then the dx pass.
// A rank with no values launches no tensor pass; it still packs (count 0)
// and still finishes every channel, so that its running statistics, dgamma
// and dbeta stay the same as every other rank's.
#include <cmath>

#include "backward_ops.cuh"
#include "dtype.cuh"
#include "finalize.cuh"
#include "forward_ops.cuh"
#include "geometry.cuh"
#include "launch.h"
#include "reduce.cuh"
#include "vector.cuh"

namespace bnorm {
namespace kernels {

namespace {

constexpr int kSyncThreads = 256;

unsigned warp_blocks(int64_t c) {
  const int64_t b = (c + kSyncThreads / 32 - 1) / (kSyncThreads / 32);
  return unsigned(b < 4096 ? b : 4096);
}
unsigned thread_blocks(int64_t c) {
  const int64_t b = (c + kSyncThreads - 1) / kSyncThreads;
  return unsigned(b < 4096 ? b : 4096);
}

// Zeroes the bytes [from, to) of a packed buffer (its padding), so that
// what the collective moves is fully written.
__device__ __forceinline__ void zero_bytes(char* p, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) p[i] = 0;
}

struct StatsPack {
  int64_t c, m, splits, pivot_stride;
  const Welford* partials;  // splits x c; unused when m == 0
  char* out;                // SyncStatsLayout(c)
  size_t pivot, mean, m2, total;
};

// A warp per channel: the splits merged as forward.cu's finalize merges them.
template <class T>
__global__ void __launch_bounds__(kSyncThreads) pack_stats(const T* __restrict__ x, StatsPack p) {
  const unsigned lane = threadIdx.x % 32, warps = blockDim.x / 32;
  float* pivot = reinterpret_cast<float*>(p.out + p.pivot);
  float* mean = reinterpret_cast<float*>(p.out + p.mean);
  float* m2 = reinterpret_cast<float*>(p.out + p.m2);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    reinterpret_cast<int64_t*>(p.out)[0] = p.m;
    reinterpret_cast<int64_t*>(p.out)[1] = 0;
    zero_bytes(p.out, p.m2 + size_t(p.c) * sizeof(float), p.total);
  }
  for (int64_t ch = int64_t(blockIdx.x) * warps + threadIdx.x / 32; ch < p.c;
       ch += int64_t(gridDim.x) * warps) {
    const Welford s = warp_merge_splits(p.partials, p.splits, p.c, ch);
    if (lane == 0) {
      pivot[ch] = p.m > 0 ? to_float(x[ch * p.pivot_stride]) : 0.0f;
      mean[ch] = s.mean;
      m2[ch] = s.m2;
    }
  }
}

struct RankMerge {
  const char* gathered;
  size_t stride;  // SyncStatsLayout(c).total
  size_t pivot, mean, m2;
  int nranks, rank;
};

__device__ __forceinline__ int64_t rank_count(const RankMerge& q, int r) {
  return reinterpret_cast<const int64_t*>(q.gathered + size_t(r) * q.stride)[0];
}
__device__ __forceinline__ float rank_value(const RankMerge& q, int r, size_t field, int64_t ch) {
  return reinterpret_cast<const float*>(q.gathered + size_t(r) * q.stride + field)[ch];
}

// A thread per channel: Chan's rule over the ranks in rank order (see the
// top of this file), then the channel's outputs.
__global__ void __launch_bounds__(kSyncThreads) merge_ranks(RankMerge q, StatsParams p) {
  const double f = average_factor(p);  // read before sync_advance_step runs (a later launch)
  for (int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; ch < p.c;
       ch += int64_t(gridDim.x) * blockDim.x) {
    double n = 0.0, mu = 0.0, m2 = 0.0;
    for (int r = 0; r < q.nranks; ++r) {
      const double nb = double(rank_count(q, r));
      if (nb == 0.0) continue;
      const double mub =
          double(rank_value(q, r, q.pivot, ch)) + double(rank_value(q, r, q.mean, ch));
      const double total = n + nb;
      const double delta = mub - mu;
      const double w = nb / total;
      mu += delta * w;
      // delta * (delta * (n * w)): merging into the empty state adds exactly
      // 0 even when delta^2 overflows (reduce.cuh's merge says why).
      m2 += double(rank_value(q, r, q.m2, ch)) + delta * (delta * (n * w));
      n = total;
    }
    if (n == 0.0) continue;  // no values anywhere: nothing to write
    // One value in all: the variance is undefined, so rstd (and y) are NaN.
    const double var = n < 2.0 ? NAN : (m2 < 0.0 ? 0.0 : m2 / n);
    const double unbiased = n < 2.0 ? NAN : (m2 < 0.0 ? 0.0 : m2 / (n - 1.0));
    const float pivot = rank_value(q, q.rank, q.pivot, ch);
    finish_moments(mu, mu - double(pivot), var, unbiased, n >= 2.0, pivot, ch, p, f);
  }
}

// The cumulative step counter moves only when the running statistics did
// (a global count of two or more).
__global__ void sync_advance_step(RankMerge q, int64_t* step_count) {
  int64_t n = 0;
  for (int r = 0; r < q.nranks; ++r) n += rank_count(q, r);
  if (n >= 2) *step_count += 1;
}

struct GradPack {
  int64_t c, m, splits;
  const Sum2* partials;  // splits x c; unused when m == 0
  double* out;           // sync_grads_bytes(c) / 8 values
  int64_t values;
};

// A warp per channel: the splits added as backward.cu's finalize adds them.
__global__ void __launch_bounds__(kSyncThreads) pack_grads(GradPack p) {
  const unsigned lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    p.out[0] = double(p.m);
    p.out[1] = 0.0;
    for (int64_t i = 2 + 2 * p.c; i < p.values; ++i) p.out[i] = 0.0;
  }
  for (int64_t ch = int64_t(blockIdx.x) * warps + threadIdx.x / 32; ch < p.c;
       ch += int64_t(gridDim.x) * warps) {
    const Sum2 s = warp_merge_splits(p.partials, p.splits, p.c, ch);
    if (lane == 0) {
      p.out[2 + ch] = double(s.a);
      p.out[2 + p.c + ch] = double(s.b);
    }
  }
}

// A thread per channel: dgamma, dbeta and the dx coefficients from the
// global sums; with no values anywhere, dgamma and dbeta are zero.
__global__ void __launch_bounds__(kSyncThreads) finish_reduced(const double* __restrict__ sums,
                                                               GradParams p) {
  const double m = sums[0];
  for (int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; ch < p.c;
       ch += int64_t(gridDim.x) * blockDim.x) {
    if (m == 0.0) {
      if (p.dgamma) p.dgamma[ch] = p.dbeta[ch] = 0.0f;
      continue;
    }
    p.coeffs[ch] = finish_grad_sums(sums[2 + ch], sums[2 + p.c + ch], 1.0 / m, ch, p);
  }
}

RankMerge rank_merge(const SyncApplyArgs& a) {
  const SyncStatsLayout l(a.f.t.c);
  return RankMerge{static_cast<const char*>(a.gathered), l.total, l.pivot, l.mean, l.m2,
                   a.nranks, a.rank};
}

}  // namespace

cudaError_t sync_forward_stats(const SyncStatsArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const bool major = t.order == Order::ChannelMajor;
    const ForwardWorkspace ws(t.c, a.plan.splits);
    Welford* partials = reinterpret_cast<Welford*>(static_cast<char*>(a.workspace) + ws.partials);
    const T* x = static_cast<const T*>(a.x);
    const int64_t m = t.m();
    if (m > 0) {
      const int width = vector_width<T>(major ? t.spatial : t.c, {a.x});
      const cudaError_t e = dispatch_width<T>(width, [&](auto n) -> cudaError_t {
        constexpr int N = decltype(n)::value;
        launch_reduce<N>(WelfordAcc<T, N>{x, major ? t.spatial : 1}, t, a.plan, partials, stream);
        return cudaGetLastError();
      });
      if (e != cudaSuccess) return e;
    }
    const SyncStatsLayout l(t.c);
    const StatsPack p{t.c,       m,      m > 0 ? a.plan.splits : 0, major ? t.spatial : 1,
                      partials,  static_cast<char*>(a.local_stats), l.pivot, l.mean,
                      l.m2,      l.total};
    BNORM_LAUNCH((pack_stats<T>), warp_blocks(t.c), kSyncThreads, 0, stream, x, p);
    return cudaGetLastError();
  });
}

cudaError_t sync_forward_apply(const SyncApplyArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.f.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const ForwardTrainingArgs& f = a.f;
    const Tensor& t = f.t;
    const ForwardWorkspace ws(t.c, f.plan.splits);
    char* w = static_cast<char*>(f.workspace);
    StatsParams p = stats_params(f);
    point_at_workspace(p, w, ws);
    const RankMerge q = rank_merge(a);
    BNORM_LAUNCH(merge_ranks, thread_blocks(t.c), kSyncThreads, 0, stream, q, p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (f.step_count && f.running_mean) {
      BNORM_LAUNCH(sync_advance_step, 1, 1, 0, stream, q, f.step_count);
      if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    if (t.m() == 0 || !f.y) return cudaSuccess;
    const bool major = t.order == Order::ChannelMajor;
    const int width = vector_width<T>(major ? t.spatial : t.c, {f.x, f.y, f.ep.residual});
    return normalize_pass<T>(f, width, p.ws_pivot, p.ws_scale, p.ws_shift, stream);
  });
}

cudaError_t sync_backward_grads(const SyncGradsArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const bool major = t.order == Order::ChannelMajor;
    const BackwardWorkspace ws(t.c, a.plan.splits, false);
    Sum2* partials = reinterpret_cast<Sum2*>(static_cast<char*>(a.workspace) + ws.partials);
    const int64_t m = t.m();
    if (m > 0) {
      const int width = vector_width<T>(major ? t.spatial : t.c, {a.x, a.dy});
      const cudaError_t e = dispatch_width<T>(width, [&](auto n) -> cudaError_t {
        constexpr int N = decltype(n)::value;
        const GradAcc<T, N> acc{static_cast<const T*>(a.x), static_cast<const T*>(a.dy), a.mean,
                                a.ep.mask};
        launch_reduce<N>(acc, t, a.plan, partials, stream);
        return cudaGetLastError();
      });
      if (e != cudaSuccess) return e;
    }
    const GradPack p{t.c, m, m > 0 ? a.plan.splits : 0, partials,
                     static_cast<double*>(a.local_grads),
                     int64_t(sync_grads_bytes(t.c) / sizeof(double))};
    BNORM_LAUNCH(pack_grads, warp_blocks(t.c), kSyncThreads, 0, stream, p);
    return cudaGetLastError();
  });
}

cudaError_t sync_backward_apply(const SyncGradApplyArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.b.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const BackwardArgs& b = a.b;
    const Tensor& t = b.t;
    const BackwardWorkspace ws(t.c, b.plan.splits, false);
    Coeffs* coeffs = reinterpret_cast<Coeffs*>(static_cast<char*>(b.workspace) + ws.coeffs);
    GradParams p{};
    p.c = t.c;
    p.gamma = b.gamma;
    p.mean = b.mean;
    p.stat = b.stat;
    p.eps = b.eps;
    p.frozen = false;
    p.dgamma = b.dgamma;
    p.dbeta = b.dbeta;
    p.coeffs = coeffs;
    BNORM_LAUNCH(finish_reduced, thread_blocks(t.c), kSyncThreads, 0, stream,
                 static_cast<const double*>(a.reduced), p);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || t.m() == 0) return e;
    const bool major = t.order == Order::ChannelMajor;
    const int width =
        vector_width<T>(major ? t.spatial : t.c, {b.x, b.dy, b.dx, b.ep.residual_grad});
    return dx_full_pass<T>(b, width, coeffs, stream);
  });
}

}  // namespace kernels
}  // namespace bnorm

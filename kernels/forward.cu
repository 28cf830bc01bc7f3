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
//   2. finalize: a warp per channel merges its partials (lanes over splits,
//      then a fixed tree), writes saved and running statistics and the
//      normalize coefficients; in cumulative mode a one-thread launch then
//      advances the step counter, after every warp has read it.
//   3. normalize: a grid-stride elementwise pass (y may alias x: each value
//      is read and then written by the same thread).
#include "dtype.cuh"
#include "launch.h"
#include "layout.cuh"
#include "reduce.cuh"
#include "epilogue.cuh"
#include "finalize.cuh"
#include "apply.cuh"
#include "channel_reduce.cuh"
#include "geometry.cuh"
#include "forward_ops.cuh"

namespace bnorm {
namespace kernels {

namespace {

constexpr int kFinalizeThreads = 256;

// One warp per channel: lanes merge every 32nd split, then the warp merges
// its lanes (fixed tree), and lane 0 finishes the channel.
template <class T>
__global__ void __launch_bounds__(kFinalizeThreads)
    finalize_stats(const T* __restrict__ x, StatsParams p) {
  const unsigned lane = threadIdx.x % 32, warps = blockDim.x / 32;
  // Read before advance_step runs (a later launch).
  const double f = average_factor(p);
  for (int64_t ch = int64_t(blockIdx.x) * warps + threadIdx.x / 32; ch < p.c;
       ch += int64_t(gridDim.x) * warps) {
    const Welford s = warp_merge_splits(p.partials, p.splits, p.c, ch);
    if (lane == 0) finish_channel(s, to_float(x[ch * p.pivot_stride]), ch, p, f);
  }
}

// The cumulative average's step counter advances in a launch of its own,
// after every block of the finalize has read it.
__global__ void advance_step(int64_t* step_count) { *step_count += 1; }

}  // namespace

cudaError_t forward_training(const ForwardTrainingArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const bool major = t.order == Order::ChannelMajor;
    const ForwardWorkspace ws(t.c, a.plan.splits);
    char* w = static_cast<char*>(a.workspace);
    Welford* partials = reinterpret_cast<Welford*>(w + ws.partials);
    const T* x = static_cast<const T*>(a.x);
    const int width = vector_width<T>(major ? t.spatial : t.c, {a.x, a.y, a.ep.residual});

    cudaError_t e = dispatch_width<T>(width, [&](auto n) -> cudaError_t {
      constexpr int N = decltype(n)::value;
      const WelfordAcc<T, N> acc{x, major ? t.spatial : 1};
      launch_reduce<N>(acc, t, a.plan, partials, stream);
      return cudaGetLastError();
    });
    if (e != cudaSuccess) return e;

    StatsParams p = stats_params(a);
    p.splits = a.plan.splits;
    p.pivot_stride = major ? t.spatial : 1;
    p.partials = partials;
    point_at_workspace(p, w, ws);
    const int64_t fblocks = (t.c + kFinalizeThreads / 32 - 1) / (kFinalizeThreads / 32);
    BNORM_LAUNCH((finalize_stats<T>), unsigned(fblocks < 4096 ? fblocks : 4096),
                 kFinalizeThreads, 0, stream, x, p);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (a.step_count && a.running_mean) {
      BNORM_LAUNCH(advance_step, 1, 1, 0, stream, a.step_count);
      if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    if (!a.y) return cudaSuccess;
    return normalize_pass<T>(a, width, p.ws_pivot, p.ws_scale, p.ws_shift, stream);
  });
}

}  // namespace kernels
}  // namespace bnorm

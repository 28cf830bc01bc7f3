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

namespace bnorm {
namespace kernels {

namespace {

constexpr int kFinalizeThreads = 256;

// Statistics of x - pivot (see the top of this file).
template <class T, int N>
struct WelfordAcc {
  using State = Welford;
  static constexpr int kTile = reduce_tile<N>();
  struct Const {
    float pivot;
  };
  struct In {
    float x[N];
  };
  const T* x;
  int64_t pivot_stride;  // the pivot of channel ch is x[ch * pivot_stride]

  __device__ Const channel(int64_t ch) const { return {to_float(x[ch * pivot_stride])}; }
  __device__ void load(int64_t offset, In& in) const { load_vec<T, N>(x + offset, in.x); }
  template <int K>
  __device__ void add_column(Welford& s, const Const& k, const In (&in)[K], int lane,
                             int count) const {
    float v[K];
#pragma unroll
    for (int j = 0; j < K; ++j) v[j] = in[j].x[lane] - k.pivot;
    add_tile(s, v, count);
  }
  template <int K>
  __device__ void add_all(Welford& s, const Const& k, const In (&in)[K], int count) const {
    float v[K * N];
#pragma unroll
    for (int j = 0; j < K; ++j)
#pragma unroll
      for (int i = 0; i < N; ++i) v[j * N + i] = in[j].x[i] - k.pivot;
    add_tile(s, v, count * N);
  }
};

// y = scale * (x - pivot) + shift, then the epilogue: + z, ReLU, mask.
template <class T, int N>
struct NormalizeOp {
  struct Coef {
    float pivot, scale, shift;
  };
  struct In {
    float x[N], z[N];
  };
  const T* x;
  T* y;
  const float* __restrict__ pivot;
  const float* __restrict__ scale;
  const float* __restrict__ shift;
  const T* __restrict__ z;  // ADD_RELU, else NULL
  uint32_t* mask;           // ReLU in training, else NULL
  bool relu;

  __device__ Coef coef(int64_t ch) const { return {pivot[ch], scale[ch], shift[ch]}; }
  __device__ void load(int64_t offset, In& in) const {
    load_vec<T, N>(x + offset, in.x);
    if (z) load_vec<T, N>(z + offset, in.z);
  }
  __device__ float compute(const Coef& k, const In& in, int i) const {
    const float v = fmaf(k.scale, in.x[i] - k.pivot, k.shift) + (z ? in.z[i] : 0.0f);
    return relu ? kernels::relu(v) : v;
  }
  __device__ void store(int64_t offset, const float (&out)[N]) const {
    store_vec<T, N>(y + offset, out);
    if (mask) set_mask_bits<N>(mask, offset, out);
  }
};

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
    Welford s{};
    for (int64_t k = lane; k < p.splits; k += 32) s = merge(s, p.partials[k * p.c + ch]);
    s = warp_merge(s);
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
    p.ws_pivot = reinterpret_cast<float*>(w + ws.pivot);
    p.ws_scale = reinterpret_cast<float*>(w + ws.scale);
    p.ws_shift = reinterpret_cast<float*>(w + ws.shift);
    p.ws_mean = reinterpret_cast<float*>(w + ws.mean);
    p.ws_rstd = reinterpret_cast<float*>(w + ws.rstd);
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
    if (a.ep.mask && (e = cudaMemsetAsync(a.ep.mask, 0, a.ep.mask_bytes, stream)) != cudaSuccess)
      return e;

    return dispatch_width<T>(width, [&](auto n) -> cudaError_t {
      constexpr int N = decltype(n)::value;
      const NormalizeOp<T, N> op{x,
                                 static_cast<T*>(a.y),
                                 p.ws_pivot,
                                 p.ws_scale,
                                 p.ws_shift,
                                 static_cast<const T*>(a.ep.residual),
                                 a.ep.mask,
                                 a.ep.kind != 0};
      launch_apply<N>(op, t, a.plan, stream);
      return cudaGetLastError();
    });
  });
}

}  // namespace kernels
}  // namespace bnorm

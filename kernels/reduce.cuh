// Reduction primitives: the per-thread states of bnorm's per-channel
// reductions, and how they merge across lanes, warps and blocks.
//
// Everything here is deterministic: each primitive merges in one fixed order
// (a binary tree over lanes, then warps in index order), so the same inputs
// give bitwise the same result on every run. No atomics.
#pragma once

#include "portable.cuh"

namespace bnorm {
namespace kernels {

constexpr unsigned kFullMask = 0xffffffffu;

// ---- states ------------------------------------------------------------------------

// Count, mean and M2 (the sum of squared deviations from the mean) of a set
// of values. Merging two sets is Chan's rule, exact in real arithmetic and
// stable in floating point (no E[x^2] - E[x]^2 cancellation). The empty set
// is all zeros, so a value-initialized Welford{} is the identity.
struct Welford {
  float n, mean, m2;
};

// The weight b.n / n needs no correctly rounded division: a 2-ulp quotient
// (__fdividef, a reciprocal and a multiply) moves the merged mean by far less
// than the fp32 rounding of the values themselves.
__device__ __forceinline__ Welford merge(const Welford& a, const Welford& b) {
  const float n = a.n + b.n;
  if (n == 0.0f) return a;
  const float delta = b.mean - a.mean;
  const float r = __fdividef(b.n, n);
  // delta * (delta * (a.n * r)), not delta * delta * a.n * r: merging into an
  // empty state (a.n == 0) must add exactly 0 even when delta^2 overflows
  // fp32 (a spread beyond ~1.8e19), where inf * 0 would make M2 NaN instead
  // of the +inf it is.
  return Welford{n, a.mean + delta * r, a.m2 + b.m2 + delta * (delta * (a.n * r))};
}

// Folds the first `count` values of a register tile into s. The tile's own
// mean and M2 come from two passes over registers (exact to rounding), and
// one Chan merge joins it to s: one division per tile, not per value.
template <int K>
__device__ __forceinline__ void add_tile(Welford& s, const float (&v)[K], int count) {
  if (count == 0) return;
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (k < count) sum += v[k];
  // A full tile divides by the power of two K: an exact multiply. A partial
  // one needs no correctly rounded quotient (see merge).
  const float mean = count == K ? sum * (1.0f / K) : __fdividef(sum, static_cast<float>(count));
  float m2 = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (k < count) {
      const float d = v[k] - mean;
      m2 += d * d;
    }
  }
  s = merge(s, Welford{static_cast<float>(count), mean, m2});
}

// Two running sums (backward: sum dy and sum dy * (x - mean)).
struct Sum2 {
  float a, b;
};

__device__ __forceinline__ Sum2 merge(const Sum2& x, const Sum2& y) {
  return Sum2{x.a + y.a, x.b + y.b};
}

__device__ __forceinline__ Welford shfl_down(const Welford& s, unsigned delta) {
  return Welford{__shfl_down_sync(kFullMask, s.n, delta), __shfl_down_sync(kFullMask, s.mean, delta),
                 __shfl_down_sync(kFullMask, s.m2, delta)};
}

__device__ __forceinline__ Sum2 shfl_down(const Sum2& s, unsigned delta) {
  return Sum2{__shfl_down_sync(kFullMask, s.a, delta), __shfl_down_sync(kFullMask, s.b, delta)};
}

// ---- merges across threads ---------------------------------------------------------------

// Merges the states of the 32 lanes of a full warp. Lane 0 holds the result;
// the other lanes hold partial merges. Every lane must call it.
template <class S>
__device__ __forceinline__ S warp_merge(S s) {
#pragma unroll
  for (unsigned d = 16; d > 0; d >>= 1) s = merge(s, shfl_down(s, d));
  return s;
}

// Merges the `splits` partial states of channel ch (partials[k * c + ch],
// one per block of a split reduction) across a full warp: lane l takes splits
// l, l + 32, ... in order, then the lanes merge in warp_merge's tree. Lane 0
// holds the result. Every lane must call it.
template <class S>
__device__ __forceinline__ S warp_merge_splits(const S* partials, int64_t splits, int64_t c,
                                               int64_t ch) {
  S s{};
  for (int64_t k = threadIdx.x % 32; k < splits; k += 32) s = merge(s, partials[k * c + ch]);
  return warp_merge(s);
}

// Merges the states of a 1-D block whose size is a multiple of 32, up to
// 1024 threads. Thread 0 holds the result. Shared memory: `scratch` holds
// blockDim.x / 32 states. Every thread must call it; it ends with a barrier,
// so `scratch` may be reused at once.
template <class S>
__device__ __forceinline__ S block_merge(S s, S* scratch) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  s = warp_merge(s);
  if (lane == 0) scratch[warp] = s;
  __syncthreads();
  if (warp == 0) {
    S w = lane < warps ? scratch[lane] : S{};
    s = warp_merge(w);
  }
  __syncthreads();
  return s;
}

// Merges along y in a 2-D block (x over channels, y over rows): the result
// for column threadIdx.x is held by thread (threadIdx.x, 0), merged in y
// order. Shared memory: `scratch` holds blockDim.x * blockDim.y states.
// Every thread must call it; it ends with a barrier.
template <class S>
__device__ __forceinline__ S column_merge(S s, S* scratch) {
  const unsigned cols = blockDim.x;
  scratch[threadIdx.y * cols + threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0) {
    for (unsigned r = 1; r < blockDim.y; ++r) s = merge(s, scratch[r * cols + threadIdx.x]);
  }
  __syncthreads();
  return s;
}

}  // namespace kernels
}  // namespace bnorm

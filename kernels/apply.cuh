// Elementwise passes with per-channel coefficients (normalize, inference,
// dx): one skeleton per memory order, parameterized by an Op that says what
// a channel's coefficients are and what to do with a vector of values.
//
// An Op<N> provides
//   struct Coef;                                  per-channel constants
//   Coef coef(int64_t ch) const;                  read or compute them
//   struct In;                                    one vector's inputs, as loaded
//   void load(int64_t offset, In&) const;         issues the loads of the N
//                                                 values at offset, reads none
//   float compute(const Coef&, const In&, int i)  the result for value i
//   void store(int64_t offset, const In&, const float (&)[N])
// For ChannelMinor the N values of a vector are N channels; for
// ChannelMajor they share one channel.
//
// A thread's kApplyUnroll loads are unconditional (a vector past the end
// reloads one in bounds and stores nothing) and nothing reads them before
// the last is issued, so all are in flight at once; the rules and why are in
// channel_reduce.cuh. Every load of an iteration comes before its stores,
// which keeps y == x (in place) correct.
//
// Both skeletons walk the tensor from its end towards its start: the
// reduction pass before them walked it front to back, so the tail of the
// tensor is what the L2 cache still holds when they begin.
#pragma once

#include "dtype.cuh"
#include "layout.cuh"
#include "vector.cuh"

namespace bnorm {
namespace kernels {

constexpr int kApplyUnroll = 4;  // vectors in flight per thread

// ChannelMinor: thread (tx, ty) of block (bx, by) owns channels
// [(bx * blockDim.x + tx) * N, + N) and rows rows-1-(by*blockDim.y + ty),
// stepping down by blockDim.y * gridDim.y. Coefficients stay in registers.
template <int N, class Op>
__global__ void __launch_bounds__(kApplyThreads)
    apply_channel_minor(Op op, int64_t c, int64_t rows) {
  const int64_t c0 = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * N;
  if (c0 >= c) return;  // no barriers below
  typename Op::Coef k[N];
#pragma unroll
  for (int i = 0; i < N; ++i) k[i] = op.coef(c0 + i < c ? c0 + i : c0);
  const int64_t stride = int64_t(blockDim.y) * gridDim.y;
  for (int64_t r = rows - 1 - (int64_t(blockIdx.y) * blockDim.y + threadIdx.y); r >= 0;
       r -= kApplyUnroll * stride) {
    typename Op::In in[kApplyUnroll];
#pragma unroll
    for (int u = 0; u < kApplyUnroll; ++u) {
      const int64_t ru = r - u * stride;
      op.load((ru >= 0 ? ru : r) * c + c0, in[u]);
    }
#pragma unroll
    for (int u = 0; u < kApplyUnroll; ++u) {
      if (r - u * stride >= 0) {
        float out[N];
#pragma unroll
        for (int i = 0; i < N; ++i) out[i] = op.compute(k[i], in[u], i);
        op.store((r - u * stride) * c + c0, in[u], out);
      }
    }
  }
}

// ChannelMajor: vectors of N values within one (sample, channel) run of
// `spatial` values (spatial % N == 0), grid-stride from the end.
template <int N, class Op>
__global__ void __launch_bounds__(kApplyThreads)
    apply_channel_major(Op op, int64_t numel, int64_t spatial, int64_t c) {
  const int64_t vectors = numel / N;
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  const int64_t first = vectors - 1 - (int64_t(blockIdx.x) * blockDim.x + threadIdx.x);
  if (first < 0) return;  // no barriers below
  FlatCursor cur(first, stride, spatial / N, c);
  int64_t cached = -1;
  typename Op::Coef k[kApplyUnroll] = {};
  for (;;) {
    typename Op::In in[kApplyUnroll];
    int64_t at[kApplyUnroll];
    int live = 0;
#pragma unroll
    for (int u = 0; u < kApplyUnroll; ++u) {
      const bool in_bounds = cur.i >= 0;
      at[u] = (in_bounds ? cur.i : first) * N;
      op.load(at[u], in[u]);
      if (in_bounds) {
        if (cur.ch != cached) {
          cached = cur.ch;
          k[u] = op.coef(cached);
        } else {
          k[u] = u > 0 ? k[u - 1] : k[kApplyUnroll - 1];
        }
        ++live;
        cur.retreat();
      }
    }
#pragma unroll
    for (int u = 0; u < kApplyUnroll; ++u) {
      if (u < live) {
        float out[N];
#pragma unroll
        for (int i = 0; i < N; ++i) out[i] = op.compute(k[u], in[u], i);
        op.store(at[u], in[u], out);
      }
    }
    if (live < kApplyUnroll) break;
  }
}

}  // namespace kernels
}  // namespace bnorm

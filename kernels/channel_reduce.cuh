// Per-channel reduction passes: one skeleton per memory order,
// parameterized by an accumulator, each block writing one partial state per
// channel it covers to partials[split * c + channel] (no atomics; the
// finalize merges the splits in order).
//
// An Acc<T, N> provides
//   using State;                  the per-channel state (Welford, Sum2)
//   struct Const;                 per-channel constants (pivot, mean)
//   Const channel(int64_t ch);    read them
//   struct In;                    one vector's inputs, as loaded (raw T)
//   void load(int64_t offset, In&)  issues the loads and nothing that reads
//       what they return
//   void add_column(State&, const Const&, const In (&)[K], int lane, int count)
//       folds value `lane` of the first `count` vectors (ChannelMinor: the
//       lanes of a vector are channels)
//   void add_all(State&, const Const&, const In (&)[K], int count)
//       folds every value of the first `count` vectors (ChannelMajor: a
//       vector lies in one channel)
// Both skeletons ask for two resident blocks per SM (at most 128 registers a
// thread), the grid the planner sizes. Each thread double-buffers register
// tiles of K vectors: the loads of the next tile are in flight while the
// current one is folded (2 * K * 16 bytes per thread), which the statistics
// pass needs to approach the copy rate at the occupancy its registers allow.
//
// That only holds if nothing waits on a load before the tile's last load is
// issued. Two rules keep it so (checked in the SASS with bench/sass_mlp.py;
// bench/NOTES.md, 2026-12-03, second session): In is raw, 32-bit words
// (Packed) converted to fp32 only in the fold (an fp16 load converted where
// it is loaded is waited on there), and a tile's loads are
// unconditional, their indices independent of each other (a vector past the
// end reloads the thread's first, which is in bounds, and is not counted), so
// no branch separates them from the fold before which ptxas should issue
// them. Under `if (row < rows)` with the row carried from one load to the
// next, ptxas branched around each load and its conversion: one 16-byte load
// in flight per thread.
#pragma once

#include "dtype.cuh"
#include "layout.cuh"
#include "reduce.cuh"
#include "vector.cuh"

namespace bnorm {
namespace kernels {

// Vectors per register tile (double-buffered, so twice this is live): 32
// values a tile per field when vectors are wide, 8 when they are scalar.
template <int N>
__host__ __device__ constexpr int reduce_tile() {
  return N >= 2 ? 4 : 8;
}

// ChannelMinor: block (TX, TY) with TY a power of two; thread (tx, ty) of
// block (bx, split) owns channels [(bx * TX + tx) * N, + N) and rows
// split * TY + ty, stepping TY * gridDim.y. Merged along y by a tree in
// shared memory (TX * TY * N states, laid out [lane][ty][tx] so that a warp
// touches consecutive states: no bank conflicts), thread (tx, 0) writing the
// partials.
template <int N, class Acc>
__global__ void __launch_bounds__(kReduceThreads, 2)
    reduce_channel_minor(Acc acc, int64_t c, int64_t rows, typename Acc::State* partials) {
  BNORM_DYNAMIC_SHARED(smem);
  using S = typename Acc::State;
  constexpr int K = Acc::kTile;
  const unsigned tx = threadIdx.x, ty = threadIdx.y, cols = blockDim.x;
  const int64_t c0 = (int64_t(blockIdx.x) * cols + tx) * N;
  const bool active = c0 < c;
  S s[N];
#pragma unroll
  for (int i = 0; i < N; ++i) s[i] = S{};
  const int64_t stride = int64_t(blockDim.y) * gridDim.y;
  const int64_t r0 = int64_t(blockIdx.y) * blockDim.y + ty;
  if (active && r0 < rows) {
    typename Acc::Const k[N];
#pragma unroll
    for (int i = 0; i < N; ++i) k[i] = acc.channel(c0 + i);
    int64_t r = r0;
    // Software-pipelined: the next tile's loads are issued before the
    // current tile is folded, so 2 * K vectors per thread are in flight.
    // Rows past the end reload row r0 (in bounds) and are not counted.
    auto load = [&](typename Acc::In(&t)[K]) {
      int count = 0;
#pragma unroll
      for (int j = 0; j < K; ++j) {
        const int64_t rj = r + j * stride;
        const bool in = rj < rows;
        acc.load((in ? rj : r0) * c + c0, t[j]);
        count += in;
      }
      r += K * stride;
      return count;
    };
    auto fold = [&](const typename Acc::In(&t)[K], int count) {
#pragma unroll
      for (int i = 0; i < N; ++i) acc.add_column(s[i], k[i], t, i, count);
    };
    typename Acc::In a[K], b[K];
    int na = load(a);
    while (na > 0) {
      const int nb = load(b);
      fold(a, na);
      if (nb == 0) break;
      na = load(a);
      fold(b, nb);
    }
  }
  S* sh = reinterpret_cast<S*>(smem);
#pragma unroll
  for (int i = 0; i < N; ++i) sh[(i * blockDim.y + ty) * cols + tx] = s[i];
  for (unsigned half = blockDim.y / 2; half > 0; half /= 2) {
    __syncthreads();
    if (ty < half) {
#pragma unroll
      for (int i = 0; i < N; ++i) {
        s[i] = merge(s[i], sh[(i * blockDim.y + ty + half) * cols + tx]);
        sh[(i * blockDim.y + ty) * cols + tx] = s[i];
      }
    }
  }
  if (ty == 0 && active) {
#pragma unroll
    for (int i = 0; i < N; ++i) partials[int64_t(blockIdx.y) * c + c0 + i] = s[i];
  }
}

// ChannelMajor: block (channel, split) walks its channel's m values as
// vectors of N within each sample's run of `spatial` values
// (spatial % N == 0), thread t taking vectors split * blockDim.x + t,
// stepping blockDim.x * gridDim.y. Merged by block_merge; thread 0 writes.
template <int N, class Acc>
__global__ void __launch_bounds__(kReduceThreads, 2)
    reduce_channel_major(Acc acc, int64_t c, int64_t spatial, int64_t m,
                         typename Acc::State* partials) {
  BNORM_DYNAMIC_SHARED(smem);
  using S = typename Acc::State;
  constexpr int K = Acc::kTile;
  const int64_t ch = blockIdx.x;
  const typename Acc::Const k = acc.channel(ch);
  const int64_t vectors = m / N;
  const int64_t stride = int64_t(blockDim.x) * gridDim.y;
  int64_t j = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  S s{};
  if (j < vectors) {
    ChannelRunCursor cur(j, stride, spatial / N, c, ch);
    const int64_t first = cur.offset();
    // Software-pipelined as in reduce_channel_minor; vectors past the end
    // reload the thread's first (in bounds) and are not counted.
    auto load = [&](typename Acc::In(&t)[K]) {
      int count = 0;
#pragma unroll
      for (int u = 0; u < K; ++u) {
        const bool in = j < vectors;
        acc.load((in ? cur.offset() : first) * N, t[u]);
        count += in;
        j += stride;
        cur.advance();
      }
      return count;
    };
    typename Acc::In a[K], b[K];
    int na = load(a);
    while (na > 0) {
      const int nb = load(b);
      acc.add_all(s, k, a, na);
      if (nb == 0) break;
      na = load(a);
      acc.add_all(s, k, b, nb);
    }
  }
  s = block_merge(s, reinterpret_cast<S*>(smem));
  if (threadIdx.x == 0) partials[int64_t(blockIdx.y) * c + ch] = s;
}

}  // namespace kernels
}  // namespace bnorm

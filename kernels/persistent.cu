// Persistent (single-pass) forward training and full backward: the whole
// call in one cooperative launch that reads x (and dy) from memory once.
//
// The math is that of forward.cu and backward.cu, and the per-channel
// arithmetic is theirs too (finish_channel / finish_grads, finalize.cuh):
//   forward:  statistics of x - pivot (pivot = the channel's first value,
//             so that a mean far from zero costs no accuracy), merged with
//             Chan's rule; y = scale * (x - pivot) + shift, then the epilogue
//   backward: g = dy (masked by the forward's ReLU bits), the sums
//             (sum g, sum g * (x - mean)) with the saved mean, then
//             dx = a * ((g - mdy) - (x - mean) * k)
// Only the schedule differs. Every thread keeps its slice on chip (launch.h):
// K vectors of N values a tensor in registers, in fp32 and already in the
// form both phases use (x - pivot forward, the masked g and x - mean
// backward), then `staged` vectors of raw activations (dy masked once it
// has landed) in dynamic shared memory, converted again where they are
// used; the conversion is exact and the subtraction the same, so that no
// value is read twice and the statistics and the output see bitwise the
// same operands as NormalizeOp and DxFullOp. A thread's stage is its own:
// no barrier guards it. A tensor larger than that (the hybrid, launch.h)
// leaves `streamed` vectors a thread in memory, past the stage: folded as
// they are read in step 1 and read again in step 4, last first, so that
// only they are read twice.
//   1. load the slice (the stage by cp.async, async_copy.cuh: all of it in
//      flight while the register tile folds); fold
//      it into one partial state per channel and unit
//      (a warp on one channel for ChannelMajor, a block of column vectors
//      for ChannelMinor, merged by a fixed tree) and write it to the
//      workspace at partials[split * c + channel] (no atomics);
//      read everything that is read only once before the barrier: the
//      pivots (y may alias x), the cumulative step counter; zero this
//      block's share of the ReLU mask;
//   2. grid-wide barrier (the launch is cooperative; the grid is no larger
//      than what the device holds resident, host/plan.cpp);
//   3. every unit merges all partials of its channels in the same fixed
//      order (ChannelMajor: lanes over every 32nd split, then the warp
//      tree, as the multi-pass finalize; ChannelMinor: a thread per channel,
//      splits in index order), so every block computes bitwise the same
//      statistics; the unit of split 0 alone writes the saved statistics,
//      the running statistics or dgamma / dbeta;
//   4. normalize (or compute dx, and dz) from the registers and store.
// The step counter of the cumulative average is read by every thread
// before the barrier and advanced by one thread after it, so no reader can
// see the new value. y == x and dx == dy or x are safe: each block writes
// only the elements it read, after it read them, and nothing is read from
// the tensors after the barrier but z (which y may alias, element by
// element: each is read before it is written).
// The fused epilogue is that of the other paths (epilogue.cuh): the same
// fmaf, + z, ReLU and mask bits.
#include <type_traits>

#include "async_copy.cuh"
#include "dtype.cuh"
#include "epilogue.cuh"
#include "finalize.cuh"
#include "launch.h"
#include "layout.cuh"
#include "reduce.cuh"
#include "vector.cuh"

namespace bnorm {
namespace kernels {

namespace {

constexpr int kWarps = kPersistThreads / 32;
// Resident blocks an SM the kernels are compiled for (ptxas -v, bench/NOTES.md,
// 2026-12-03), [register-only, staging]. Forward: two (up to 128 registers)
// either way: at three (80) the scalar and the 8-wide ChannelMinor variants
// spill (32 x-values, the Welford states of 8 channels, the cursor and the
// finish's double arithmetic). Backward: three (80 registers), unspilled at
// every width with registers alone. Built for three, the staging kernel
// spills 132 bytes in its 8-wide 16-bit ChannelMinor variant (the NHWC one;
// every other variant is clean at 80 since the stage fills by cp.async), and
// the handle keeps one occupancy a dtype, so it is built for two.
constexpr int kPersistForwardMinBlocks[2] = {2, 2};
constexpr int kPersistBackwardMinBlocks[2] = {3, 2};

// Zeroes this block's share of the mask words (grid-stride), before the
// barrier after which any block may set bits in any word.
__device__ __forceinline__ void zero_mask_share(uint32_t* mask, int64_t words) {
  if (!mask) return;
  const int64_t threads = int64_t(blockDim.x) * blockDim.y;
  const int64_t tid = int64_t(threadIdx.y) * blockDim.x + threadIdx.x;
  for (int64_t w = int64_t(blockIdx.x) * threads + tid; w < words; w += int64_t(gridDim.x) * threads)
    mask[w] = 0u;
}

// The statistics outputs only split 0 writes: others get NULL pointers.
__device__ __forceinline__ StatsParams writer_view(const StatsParams& p, bool writer) {
  StatsParams q = p;
  if (!writer) {
    q.saved_mean = q.saved_rstd = nullptr;
    q.running_mean = q.running_var = nullptr;
  }
  return q;
}
__device__ __forceinline__ GradParams writer_view(const GradParams& p, bool writer) {
  GradParams q = p;
  if (!writer) q.dgamma = q.dbeta = nullptr;
  return q;
}

// Thread `tid`'s staged vector k of a stage (launch.h's layout).
template <class T, int N>
__device__ __forceinline__ Vec<T, N>& staged_vec(Vec<T, N>* stage, int k, unsigned tid) {
  return stage[size_t(k) * kPersistThreads + tid];
}

// Folds the first `held` staged vectors of x into s (ChannelMajor: one
// channel), a register tile of 8 values at a time, as d = x - pivot.
template <class T, int N>
__device__ __forceinline__ void fold_stage(Welford& s, Vec<T, N>* stage, unsigned tid, int held,
                                           float pivot) {
  constexpr int KT = N >= 8 ? 1 : 8 / N;
  for (int k0 = 0; k0 < held; k0 += KT) {
    float v[KT * N];
    int count = 0;
#pragma unroll
    for (int u = 0; u < KT; ++u) {
      float w[N] = {};
      if (k0 + u < held) {
        unpack<T, N>(staged_vec(stage, k0 + u, tid), w);
        count += N;
      }
#pragma unroll
      for (int i = 0; i < N; ++i) v[u * N + i] = w[i] - pivot;
    }
    add_tile(s, v, count);
  }
}

// The same for ChannelMinor: value i of each vector is channel lane i,
// folded into s[i] as d = x - pv[i], a column of KT vectors at a time.
template <class T, int N>
__device__ __forceinline__ void fold_stage(Welford (&s)[N], Vec<T, N>* stage, unsigned tid,
                                           int held, const float (&pv)[N]) {
  constexpr int KT = N >= 8 ? 2 : N >= 4 ? 4 : 8;
  for (int k0 = 0; k0 < held; k0 += KT) {
    float v[KT][N] = {};
    int count = 0;
#pragma unroll
    for (int u = 0; u < KT; ++u) {
      if (k0 + u < held) {
        unpack<T, N>(staged_vec(stage, k0 + u, tid), v[u]);
        ++count;
      }
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
      float col[KT];
#pragma unroll
      for (int u = 0; u < KT; ++u) col[u] = v[u][i] - pv[i];
      add_tile(s[i], col, count);
    }
  }
}

// x - pivot of a staged vector, bitwise what the register copy holds.
template <class T, int N>
__device__ __forceinline__ void staged_deviation(const Vec<T, N>& v, const float (&pv)[N],
                                                 float (&d)[N]) {
  unpack<T, N>(v, d);
#pragma unroll
  for (int i = 0; i < N; ++i) d[i] -= pv[i];
}

template <class T>
struct ForwardParams {
  StatsParams s;  // counts, eps, factor, outputs; s.partials is written here
  Welford* partials;
  int staged;             // vectors a thread in shared memory, past its K in registers
  int streamed;           // vectors a thread read from memory twice, past the stage
  unsigned stage_offset;  // bytes into the dynamic shared memory (past the merge scratch)
  const T* x;
  T* y;
  const T* z;  // ADD_RELU, else NULL
  uint32_t* mask;
  int64_t mask_words;
  int64_t spatial;
  bool relu;
};

template <class T>
struct BackwardParams {
  GradParams g;  // counts, gamma, saved mean / rstd, dgamma / dbeta
  Sum2* partials;
  int staged;             // vectors of dy, then as many of x, a thread in shared memory
  int streamed;           // vectors of each a thread read from memory twice, past the stage
  unsigned stage_offset;  // bytes into the dynamic shared memory (past the merge scratch)
  const T* x;
  const T* dy;
  T* dx;
  T* dz;                 // ADD_RELU, else NULL
  const uint32_t* mask;  // ReLU epilogue, else NULL
  int64_t spatial;
};

// Vectors a thread past its stage (the hybrid, launch.h) are read before
// the barrier and again after it, a group at a time: every load of a group
// is issued before any is used, raw and unconditional (channel_reduce.cuh's
// rules; a vector past the tensor reloads the group's first in-bounds one
// and is not used). After the barrier the walk runs backwards, last read
// first: what the grid read last is what L2 still holds. Groups: x forward,
// x and dy backward.
constexpr int kStreamForward = 8, kStreamBackward = 4;

// ---- forward -----------------------------------------------------------------------------

// y for the N values of one vector, from d = x - pivot (the value the
// statistics used, and the one NormalizeOp computes from x).
template <class T, int N>
__device__ __forceinline__ void normalize_store(const ForwardParams<T>& p, int64_t o,
                                                const float (&d)[N], const Affine (&a)[N]) {
  float zv[N] = {}, out[N];
  if (p.z) load_vec<T, N>(p.z + o, zv);
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float v = fmaf(a[i].scale, d[i], a[i].shift) + (p.z ? zv[i] : 0.0f);
    out[i] = p.relu ? relu(v) : v;
  }
  store_vec<T, N>(p.y + o, out);
  if (p.mask) set_mask_bits<N>(p.mask, o, out);
}

// ChannelMajor: warp `unit` of the grid holds vectors split * 32K + lane +
// 32k of channel unit / splits (vectors of N within each sample's run).
template <class T, int N, int K, bool Staged>
__global__ void __launch_bounds__(kPersistThreads, kPersistForwardMinBlocks[Staged])
    persist_forward_major(ForwardParams<T> p) {
  BNORM_DYNAMIC_SHARED(smem);
  Vec<T, N>* stage = reinterpret_cast<Vec<T, N>*>(smem + p.stage_offset);
  const unsigned lane = threadIdx.x % 32, tid = threadIdx.x;
  const int staged = Staged ? p.staged : 0;  // the register-only kernel compiles the stage out
  const int vectors_of_thread = K + staged + (Staged ? p.streamed : 0);
  const int64_t splits = p.s.splits, c = p.s.c;
  const int64_t unit = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const bool live = unit < c * splits;  // the same for the whole warp
  const int64_t ch = live ? unit / splits : 0;
  const int64_t split = unit - ch * splits;
  const int64_t vectors = p.s.m / N, j0 = split * 32 * vectors_of_thread + lane;
  const double f = average_factor(p.s);  // before the barrier: the counter advances after it

  // The on-chip copy: d = x - pivot, exact where the statistics need it
  // (see forward.cu) and all the normalize needs.
  float d[K][N] = {};
  int count = 0;     // vectors held in registers: a prefix of d
  int held = 0;      // staged vectors held: a prefix of the stage
  int streamed = 0;  // streamed vectors in the tensor: a prefix
  float pivot = 0.0f;
  Welford s{};
  if (live) {
    pivot = to_float(p.x[ch * p.s.pivot_stride]);
    ChannelRunCursor cur(j0, 32, p.spatial / N, c, ch);
    // Raw until the stage is loaded too, so that the register loads stay in
    // flight beside the stage's (channel_reduce.cuh says why).
    Packed<T, N> raw[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (j0 + 32 * k < vectors) {
        raw[k] = load_packed<T, N>(p.x + cur.offset() * N);
        ++count;
      }
      cur.advance();
    }
#pragma unroll 4
    for (int k = 0; k < staged; ++k) {
      if (j0 + 32 * int64_t(K + k) < vectors) {
        copy_async(&staged_vec(stage, k, tid), as_vec<T, N>(p.x + cur.offset() * N));
        ++held;
      }
      cur.advance();
    }
    float flat[K * N];
#pragma unroll
    for (int k = 0; k < K; ++k)
#pragma unroll
      for (int i = 0; i < N; ++i) flat[k * N + i] = d[k][i] = (k < count ? raw[k][i] : 0.0f) - pivot;
    add_tile(s, flat, count * N);  // while the stage lands
    if constexpr (Staged) {  // and the streamed vectors, folded as they come
      constexpr int U = kStreamForward;
      const int64_t o0 = cur.offset();  // the first streamed vector, if any is in the tensor
      for (int64_t k0 = 0, j = j0 + 32 * int64_t(K + staged); k0 < p.streamed && j < vectors;
           k0 += U) {
        Packed<T, N> grp[U];
        int in = 0;  // a prefix of the group
#pragma unroll
        for (int u = 0; u < U; ++u, j += 32) {
          const bool ok = k0 + u < p.streamed && j < vectors;
          grp[u] = load_packed<T, N>(p.x + (ok ? cur.offset() : o0) * N);
          in += ok;
          cur.advance();
        }
        // Folded 8 values at a time, as fold_stage: a tile of the whole
        // group would hold U * N floats more.
        constexpr int KT = N >= 8 ? 1 : 8 / N;
#pragma unroll
        for (int u0 = 0; u0 < U; u0 += KT) {
          float v[KT * N];
#pragma unroll
          for (int u = 0; u < KT; ++u)
#pragma unroll
            for (int i = 0; i < N; ++i)
              v[u * N + i] = (u0 + u < in ? grp[u0 + u][i] : 0.0f) - pivot;
          const int n_in = in - u0 < 0 ? 0 : in - u0 > KT ? KT : in - u0;
          add_tile(s, v, n_in * N);
        }
        streamed += in;
      }
      async_wait_all();  // no copies in the register-only kernel
    }
    fold_stage<T, N>(s, stage, tid, held, pivot);
  }
  s = warp_merge(s);
  if (live && lane == 0) p.partials[split * c + ch] = s;
  zero_mask_share(p.mask, p.mask_words);

  BNORM_GRID_SYNC();

  if (live) {
    Welford t{};
    for (int64_t k = lane; k < splits; k += 32) t = merge(t, p.partials[k * c + ch]);
    t = warp_merge(t);
    Affine a{pivot, 0.0f, 0.0f};
    if (lane == 0) a = finish_channel(t, pivot, ch, writer_view(p.s, split == 0), f);
    a.scale = __shfl_sync(kFullMask, a.scale, 0);
    a.shift = __shfl_sync(kFullMask, a.shift, 0);
    if (p.y) {
      Affine an[N];
#pragma unroll
      for (int i = 0; i < N; ++i) an[i] = a;
      ChannelRunCursor cur(j0, 32, p.spatial / N, c, ch);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (k < count) normalize_store<T, N>(p, cur.offset() * N, d[k], an);
        cur.advance();
      }
      float pv[N];
#pragma unroll
      for (int i = 0; i < N; ++i) pv[i] = pivot;
      if constexpr (Staged) {
        if (streamed > 0) {
          constexpr int U = kStreamForward;
          ChannelRunCursor back(j0 + 32 * int64_t(K + staged + streamed - 1), 32, p.spatial / N,
                                c, ch);
          const int64_t last = back.offset();
          for (int k0 = streamed - 1; k0 >= 0; k0 -= U) {
            Packed<T, N> grp[U];
            int64_t o[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
              o[u] = (k0 - u >= 0 ? back.offset() : last) * N;
              grp[u] = load_packed<T, N>(p.x + o[u]);
              back.retreat();
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
              if (k0 - u >= 0) {
                float dv[N];
#pragma unroll
                for (int i = 0; i < N; ++i) dv[i] = grp[u][i] - pivot;
                normalize_store<T, N>(p, o[u], dv, an);
              }
            }
          }
        }
      }
      for (int k = 0; k < held; ++k) {
        float dv[N];
        staged_deviation<T, N>(staged_vec(stage, k, tid), pv, dv);
        normalize_store<T, N>(p, cur.offset() * N, dv, an);
        cur.advance();
      }
    }
  }
  if (blockIdx.x == 0 && threadIdx.x == 0 && p.s.step_count && p.s.running_mean)
    *p.s.step_count += 1;
}

// Dynamic shared memory of a ChannelMinor block: the column merge's states
// (laid out [lane][ty][tx], as reduce_channel_minor), reused after the
// barrier for the per-channel coefficients.
template <class S, class Coef>
constexpr size_t minor_shared_bytes(int n) {
  return size_t(kPersistThreads) * n * sizeof(S) > size_t(32) * n * sizeof(Coef)
             ? size_t(kPersistThreads) * n * sizeof(S)
             : size_t(32) * n * sizeof(Coef);
}

// Merges the per-thread states of a (tx, ty) block along y by a fixed tree
// in shared memory: thread (tx, 0) ends with its columns' states.
template <int N, class S>
__device__ __forceinline__ void column_tree(S (&s)[N], S* sh) {
  const unsigned tx = threadIdx.x, ty = threadIdx.y, cols = blockDim.x, rows = blockDim.y;
#pragma unroll
  for (int i = 0; i < N; ++i) sh[(i * rows + ty) * cols + tx] = s[i];
  for (unsigned half = rows / 2; half > 0; half /= 2) {
    __syncthreads();
    if (ty < half) {
#pragma unroll
      for (int i = 0; i < N; ++i) {
        s[i] = merge(s[i], sh[(i * rows + ty + half) * cols + tx]);
        sh[(i * rows + ty) * cols + tx] = s[i];
      }
    }
  }
}

// ChannelMinor: block = column_block * splits + split; thread (tx, ty)
// holds channels [(column_block * tx_count + tx) * N, + N) of rows
// split * ty_count * K + ty + ty_count * k.
template <class T, int N, int K, bool Staged>
__global__ void __launch_bounds__(kPersistThreads, kPersistForwardMinBlocks[Staged])
    persist_forward_minor(ForwardParams<T> p) {
  BNORM_DYNAMIC_SHARED(smem);
  const unsigned tx = threadIdx.x, ty = threadIdx.y, cols = blockDim.x, rows = blockDim.y;
  const unsigned tid = ty * cols + tx;
  const int64_t splits = p.s.splits, c = p.s.c, m = p.s.m;
  const int64_t cb = blockIdx.x / splits, split = blockIdx.x - cb * splits;
  const int64_t c0 = (cb * cols + tx) * N;  // c % N == 0: a vector is all in or all out
  const bool active = c0 < c;
  const int staged = Staged ? p.staged : 0;  // the register-only kernel compiles the stage out
  const int vectors_of_thread = K + staged + (Staged ? p.streamed : 0);
  Vec<T, N>* stage = reinterpret_cast<Vec<T, N>*>(smem + p.stage_offset);
  const int64_t r0 = split * rows * vectors_of_thread + ty;
  // Thread tid merges channel cb * cols * N + tid after the barrier; its
  // pivot is read now (y may alias x).
  const int64_t mch = cb * cols * N + tid;
  const bool merges = tid < cols * N && mch < c;
  const float mpivot = merges ? to_float(p.x[mch]) : 0.0f;
  const double f = average_factor(p.s);  // before the barrier: the counter advances after it

  // The register tile is kept as loaded, x - pivot formed where it is used
  // (the same exact conversion and subtraction): for 16-bit types that is
  // half the registers of persist_forward_major's d, which the 8-wide
  // staging kernel needs beside its streamed group, its 8 Welford states and
  // pivots (it spilled 80 bytes holding d).
  Packed<T, N> raw[K] = {};
  int count = 0, held = 0, streamed = 0;
  float pv[N] = {};
  Welford s[N] = {};
  if (active) {
#pragma unroll
    for (int i = 0; i < N; ++i) pv[i] = to_float(p.x[c0 + i]);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t r = r0 + int64_t(rows) * k;
      if (r < m) {
        raw[k] = load_packed<T, N>(p.x + r * c + c0);
        ++count;
      }
    }
#pragma unroll 4
    for (int k = 0; k < staged; ++k) {
      const int64_t r = r0 + int64_t(rows) * (K + k);
      if (r < m) {
        copy_async(&staged_vec(stage, k, tid), as_vec<T, N>(p.x + r * c + c0));
        ++held;
      }
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
      float col[K];
#pragma unroll
      for (int k = 0; k < K; ++k) col[k] = (k < count ? raw[k][i] : 0.0f) - pv[i];
      add_tile(s[i], col, count);  // while the stage lands
    }
    if constexpr (Staged) {  // and the streamed vectors, as in persist_forward_major
      constexpr int U = kStreamForward;
      const int64_t first = r0 + int64_t(rows) * (K + staged), o0 = first * c + c0;
      for (int64_t k0 = 0, r = first; k0 < p.streamed && r < m; k0 += U) {
        Packed<T, N> grp[U];
        int in = 0;
#pragma unroll
        for (int u = 0; u < U; ++u, r += rows) {
          const bool ok = k0 + u < p.streamed && r < m;
          grp[u] = load_packed<T, N>(p.x + (ok ? r * c + c0 : o0));
          in += ok;
        }
#pragma unroll
        for (int i = 0; i < N; ++i) {
          float col[U];
#pragma unroll
          for (int u = 0; u < U; ++u) col[u] = (u < in ? grp[u][i] : 0.0f) - pv[i];
          add_tile(s[i], col, in);
        }
        streamed += in;
      }
      async_wait_all();  // no copies in the register-only kernel
    }
    fold_stage<T, N>(s, stage, tid, held, pv);
  }
  column_tree<N>(s, reinterpret_cast<Welford*>(smem));
  if (ty == 0 && active) {
#pragma unroll
    for (int i = 0; i < N; ++i) p.partials[split * c + c0 + i] = s[i];
  }
  zero_mask_share(p.mask, p.mask_words);

  BNORM_GRID_SYNC();  // also a block barrier: the merge scratch is free again

  Affine* coef = reinterpret_cast<Affine*>(smem);
  if (merges) {
    Welford t{};
#pragma unroll 4
    for (int64_t k = 0; k < splits; ++k) t = merge(t, p.partials[k * c + mch]);
    coef[tid] = finish_channel(t, mpivot, mch, writer_view(p.s, split == 0), f);
  }
  __syncthreads();
  if (active && p.y) {
    Affine a[N];
#pragma unroll
    for (int i = 0; i < N; ++i) a[i] = coef[tx * N + i];
#pragma unroll
    for (int k = 0; k < K; ++k)
      if (k < count) {
        float dv[N];
#pragma unroll
        for (int i = 0; i < N; ++i) dv[i] = raw[k][i] - pv[i];
        normalize_store<T, N>(p, (r0 + int64_t(rows) * k) * c + c0, dv, a);
      }
    if constexpr (Staged) {  // streamed: last read first, as in persist_forward_major
      constexpr int U = kStreamForward;
      const int64_t first = r0 + int64_t(rows) * (K + staged);
      const int64_t step = int64_t(rows) * c;
      for (int k0 = streamed - 1; k0 >= 0; k0 -= U) {
        // Vector k0 - u is at top - u * step: one offset a group, not U
        // held across the stores (the 8-wide 16-bit kernel spilled on sm_80).
        const int64_t top = (first + int64_t(rows) * k0) * c + c0;
        Packed<T, N> grp[U];
#pragma unroll
        for (int u = 0; u < U; ++u)
          grp[u] = load_packed<T, N>(p.x + top - (k0 - u >= 0 ? u : 0) * step);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (k0 - u >= 0) {
            float dv[N];
#pragma unroll
            for (int i = 0; i < N; ++i) dv[i] = grp[u][i] - pv[i];
            normalize_store<T, N>(p, top - u * step, dv, a);
          }
        }
      }
    }
    for (int k = 0; k < held; ++k) {
      float dv[N];
      staged_deviation<T, N>(staged_vec(stage, k, tid), pv, dv);
      normalize_store<T, N>(p, (r0 + int64_t(rows) * (K + k)) * c + c0, dv, a);
    }
  }
  if (blockIdx.x == 0 && tid == 0 && p.s.step_count && p.s.running_mean) *p.s.step_count += 1;
}

// ---- backward ----------------------------------------------------------------------------

// Loads one vector of g (dy, masked) and of xm = x - mean: the on-chip
// copy of the backward, all that the sums and dx need (the same values
// GradAcc and DxFullOp compute from dy and x).
template <class T, int N>
__device__ __forceinline__ void load_grads(const BackwardParams<T>& p, int64_t o,
                                           const float (&mean)[N], float (&g)[N],
                                           float (&xm)[N]) {
  load_vec<T, N>(p.dy + o, g);
  load_vec<T, N>(p.x + o, xm);
  if (p.mask) apply_mask<N>(p.mask, o, g);
#pragma unroll
  for (int i = 0; i < N; ++i) xm[i] -= mean[i];
}

// Starts staging one vector of dy and of x (async_copy.cuh); dy is masked
// once both have landed (mask_staged).
template <class T, int N>
__device__ __forceinline__ void stage_grads(const BackwardParams<T>& p, int64_t o,
                                            Vec<T, N>& g, Vec<T, N>& x) {
  copy_async(&g, as_vec<T, N>(p.dy + o));
  copy_async(&x, as_vec<T, N>(p.x + o));
}

// Zeroes the staged dy values whose ReLU was closed: a zero is exact in any
// dtype, so g unpacks to what load_grads computes.
template <class T, int N>
__device__ __forceinline__ void mask_staged(const uint32_t* mask, int64_t o, Vec<T, N>& g) {
  const unsigned bits = mask_bits<N>(mask, o);
#pragma unroll
  for (int i = 0; i < N; ++i)
    if (!((bits >> i) & 1u)) g.v[i] = from_float<T>(0.0f);
}

// g and x - mean of a staged pair, bitwise what the register copy holds.
template <class T, int N>
__device__ __forceinline__ void unstage_grads(const Vec<T, N>& gs, const Vec<T, N>& xs,
                                              const float (&mean)[N], float (&g)[N],
                                              float (&xm)[N]) {
  unpack<T, N>(gs, g);
  staged_deviation<T, N>(xs, mean, xm);
}

// Adds g and g * (x - mean) of one vector into the sums: one pair for
// ChannelMajor (the vector is one channel), one a lane for ChannelMinor.
template <int N>
__device__ __forceinline__ void add_grads(Sum2& s, const float (&g)[N], const float (&xm)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    s.a += g[i];
    s.b = fmaf(g[i], xm[i], s.b);
  }
}
template <int N>
__device__ __forceinline__ void add_grads(Sum2 (&s)[N], const float (&g)[N],
                                          const float (&xm)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    s[i].a += g[i];
    s[i].b = fmaf(g[i], xm[i], s[i].b);
  }
}

// A streamed group of the backward: dy (with its mask word) and x of U
// vectors as loaded, and where each is.
template <class T, int N, int U>
struct GradGroup {
  MaskedGrad<T, N> g[U];
  Packed<T, N> x[U];
  int64_t o[U];

  __device__ __forceinline__ void load(const BackwardParams<T>& p, int u, int64_t offset) {
    o[u] = offset;
    g[u].load(p.dy, p.mask, offset);
    x[u] = load_packed<T, N>(p.x + offset);
  }
  // g and x - mean of vector u, bitwise what load_grads computes.
  __device__ __forceinline__ void grads(int u, const float (&mean)[N], float (&gv)[N],
                                        float (&xm)[N]) const {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      gv[i] = g[u][i];
      xm[i] = x[u][i] - mean[i];
    }
  }
  // Adds the first n vectors into s (add_grads).
  template <class S>
  __device__ __forceinline__ void add_to(S& s, int n, const float (&mean)[N]) const {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (u < n) {
        float gv[N], xv[N];
        grads(u, mean, gv, xv);
        add_grads<N>(s, gv, xv);
      }
    }
  }
};

// dx (and dz) for the N values of one vector, as DxFullOp computes them.
template <class T, int N>
__device__ __forceinline__ void dx_store(const BackwardParams<T>& p, int64_t o,
                                         const float (&g)[N], const float (&xm)[N],
                                         const Coeffs (&k)[N]) {
  float out[N];
  if (p.dz) store_vec<T, N>(p.dz + o, g);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = k[i].a * ((g[i] - k[i].mdy) - xm[i] * k[i].k);
  store_vec<T, N>(p.dx + o, out);
}

// ChannelMajor backward: the units of persist_forward_major.
template <class T, int N, int K, bool Staged>
__global__ void __launch_bounds__(kPersistThreads, kPersistBackwardMinBlocks[Staged])
    persist_backward_major(BackwardParams<T> p) {
  BNORM_DYNAMIC_SHARED(smem);
  const int staged = Staged ? p.staged : 0;  // the register-only kernel compiles the stage out
  const int vectors_of_thread = K + staged + (Staged ? p.streamed : 0);
  Vec<T, N>* gstage = reinterpret_cast<Vec<T, N>*>(smem + p.stage_offset);
  Vec<T, N>* xstage = gstage + size_t(staged) * kPersistThreads;
  const unsigned lane = threadIdx.x % 32, tid = threadIdx.x;
  const int64_t splits = p.g.splits, c = p.g.c;
  const int64_t unit = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const bool live = unit < c * splits;
  const int64_t ch = live ? unit / splits : 0;
  const int64_t split = unit - ch * splits;
  const int64_t vectors = p.g.m / N, j0 = split * 32 * vectors_of_thread + lane;

  float g[K][N] = {}, xm[K][N] = {};
  float mean[N] = {};
  int count = 0, held = 0, streamed = 0;
  Sum2 s{};
  if (live) {
#pragma unroll
    for (int i = 0; i < N; ++i) mean[i] = p.g.mean[ch];
    ChannelRunCursor cur(j0, 32, p.spatial / N, c, ch);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (j0 + 32 * k < vectors) {
        load_grads<T, N>(p, cur.offset() * N, mean, g[k], xm[k]);
        ++count;
      }
      cur.advance();
    }
#pragma unroll 4
    for (int k = 0; k < staged; ++k) {
      if (j0 + 32 * int64_t(K + k) < vectors) {
        stage_grads<T, N>(p, cur.offset() * N, staged_vec(gstage, k, tid),
                          staged_vec(xstage, k, tid));
        ++held;
      }
      cur.advance();
    }
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (k < count) {
#pragma unroll
        for (int i = 0; i < N; ++i) {
          s.a += g[k][i];
          s.b = fmaf(g[k][i], xm[k][i], s.b);
        }
      }
    }
    if constexpr (Staged) {  // the streamed vectors, summed as they come
      constexpr int U = kStreamBackward;
      const int64_t o0 = cur.offset() * N;  // the first streamed vector, if any is in the tensor
      for (int64_t k0 = 0, j = j0 + 32 * int64_t(K + staged); k0 < p.streamed && j < vectors;
           k0 += U) {
        GradGroup<T, N, U> in;
        int n_in = 0;
#pragma unroll
        for (int u = 0; u < U; ++u, j += 32) {
          const bool ok = k0 + u < p.streamed && j < vectors;
          in.load(p, u, ok ? cur.offset() * N : o0);
          n_in += ok;
          cur.advance();
        }
        in.add_to(s, n_in, mean);
        streamed += n_in;
      }
      async_wait_all();  // no copies in the register-only kernel
    }
    if (p.mask) {
      ChannelRunCursor mc(j0 + 32 * int64_t(K), 32, p.spatial / N, c, ch);
#pragma unroll 4
      for (int k = 0; k < held; ++k) {
        mask_staged<T, N>(p.mask, mc.offset() * N, staged_vec(gstage, k, tid));
        mc.advance();
      }
    }
    for (int k = 0; k < held; ++k) {
      float gv[N], xv[N];
      unstage_grads<T, N>(staged_vec(gstage, k, tid), staged_vec(xstage, k, tid), mean, gv, xv);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        s.a += gv[i];
        s.b = fmaf(gv[i], xv[i], s.b);
      }
    }
  }
  s = warp_merge(s);
  if (live && lane == 0) p.partials[split * c + ch] = s;

  BNORM_GRID_SYNC();

  if (live) {
    Sum2 t{};
    for (int64_t k = lane; k < splits; k += 32) t = merge(t, p.partials[k * c + ch]);
    t = warp_merge(t);
    Coeffs q{};
    if (lane == 0) q = finish_grads(t, ch, writer_view(p.g, split == 0));
    q = Coeffs{__shfl_sync(kFullMask, q.a, 0), __shfl_sync(kFullMask, q.mdy, 0),
               __shfl_sync(kFullMask, q.k, 0), __shfl_sync(kFullMask, q.mean, 0)};
    Coeffs qn[N];
#pragma unroll
    for (int i = 0; i < N; ++i) qn[i] = q;
    ChannelRunCursor cur(j0, 32, p.spatial / N, c, ch);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (k < count) dx_store<T, N>(p, cur.offset() * N, g[k], xm[k], qn);
      cur.advance();
    }
    if constexpr (Staged) {
      if (streamed > 0) {  // last read first
        constexpr int U = kStreamBackward;
        ChannelRunCursor back(j0 + 32 * int64_t(K + staged + streamed - 1), 32, p.spatial / N, c,
                              ch);
        const int64_t last = back.offset() * N;
        for (int k0 = streamed - 1; k0 >= 0; k0 -= U) {
          GradGroup<T, N, U> in;
#pragma unroll
          for (int u = 0; u < U; ++u) {
            in.load(p, u, k0 - u >= 0 ? back.offset() * N : last);
            back.retreat();
          }
#pragma unroll
          for (int u = 0; u < U; ++u) {
            if (k0 - u >= 0) {
              float gv[N], xv[N];
              in.grads(u, mean, gv, xv);
              dx_store<T, N>(p, in.o[u], gv, xv, qn);
            }
          }
        }
      }
    }
    for (int k = 0; k < held; ++k) {
      float gv[N], xv[N];
      unstage_grads<T, N>(staged_vec(gstage, k, tid), staged_vec(xstage, k, tid), mean, gv, xv);
      dx_store<T, N>(p, cur.offset() * N, gv, xv, qn);
      cur.advance();
    }
  }
}

// ChannelMinor backward: the blocks of persist_forward_minor.
template <class T, int N, int K, bool Staged>
__global__ void __launch_bounds__(kPersistThreads, kPersistBackwardMinBlocks[Staged])
    persist_backward_minor(BackwardParams<T> p) {
  BNORM_DYNAMIC_SHARED(smem);
  const unsigned tx = threadIdx.x, ty = threadIdx.y, cols = blockDim.x, rows = blockDim.y;
  const unsigned tid = ty * cols + tx;
  const int64_t splits = p.g.splits, c = p.g.c, m = p.g.m;
  const int64_t cb = blockIdx.x / splits, split = blockIdx.x - cb * splits;
  const int64_t c0 = (cb * cols + tx) * N;
  const bool active = c0 < c;
  const int staged = Staged ? p.staged : 0;  // the register-only kernel compiles the stage out
  const int vectors_of_thread = K + staged + (Staged ? p.streamed : 0);
  Vec<T, N>* gstage = reinterpret_cast<Vec<T, N>*>(smem + p.stage_offset);
  Vec<T, N>* xstage = gstage + size_t(staged) * kPersistThreads;
  const int64_t r0 = split * rows * vectors_of_thread + ty;
  const int64_t mch = cb * cols * N + tid;
  const bool merges = tid < cols * N && mch < c;

  float g[K][N] = {}, xm[K][N] = {};
  float mean[N] = {};
  int count = 0, held = 0, streamed = 0;
  Sum2 s[N] = {};
  if (active) {
#pragma unroll
    for (int i = 0; i < N; ++i) mean[i] = p.g.mean[c0 + i];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t r = r0 + int64_t(rows) * k;
      if (r < m) {
        load_grads<T, N>(p, r * c + c0, mean, g[k], xm[k]);
        ++count;
      }
    }
#pragma unroll 4
    for (int k = 0; k < staged; ++k) {
      const int64_t r = r0 + int64_t(rows) * (K + k);
      if (r < m) {
        stage_grads<T, N>(p, r * c + c0, staged_vec(gstage, k, tid), staged_vec(xstage, k, tid));
        ++held;
      }
    }
    // One state per channel lane: value i of every vector.
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (k < count) {
#pragma unroll
        for (int i = 0; i < N; ++i) {
          s[i].a += g[k][i];
          s[i].b = fmaf(g[k][i], xm[k][i], s[i].b);
        }
      }
    }
    if constexpr (Staged) {  // the streamed vectors, as in persist_backward_major
      constexpr int U = kStreamBackward;
      const int64_t first = r0 + int64_t(rows) * (K + staged), o0 = first * c + c0;
      for (int64_t k0 = 0, r = first; k0 < p.streamed && r < m; k0 += U) {
        GradGroup<T, N, U> in;
        int n_in = 0;
#pragma unroll
        for (int u = 0; u < U; ++u, r += rows) {
          const bool ok = k0 + u < p.streamed && r < m;
          in.load(p, u, ok ? r * c + c0 : o0);
          n_in += ok;
        }
        in.add_to(s, n_in, mean);
        streamed += n_in;
      }
      async_wait_all();  // no copies in the register-only kernel
    }
    if (p.mask) {
#pragma unroll 4
      for (int k = 0; k < held; ++k)
        mask_staged<T, N>(p.mask, (r0 + int64_t(rows) * (K + k)) * c + c0,
                          staged_vec(gstage, k, tid));
    }
    for (int k = 0; k < held; ++k) {
      float gv[N], xv[N];
      unstage_grads<T, N>(staged_vec(gstage, k, tid), staged_vec(xstage, k, tid), mean, gv, xv);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        s[i].a += gv[i];
        s[i].b = fmaf(gv[i], xv[i], s[i].b);
      }
    }
  }
  column_tree<N>(s, reinterpret_cast<Sum2*>(smem));
  if (ty == 0 && active) {
#pragma unroll
    for (int i = 0; i < N; ++i) p.partials[split * c + c0 + i] = s[i];
  }

  BNORM_GRID_SYNC();  // also a block barrier: the merge scratch is free again

  Coeffs* coef = reinterpret_cast<Coeffs*>(smem);
  if (merges) {
    Sum2 t{};
#pragma unroll 4
    for (int64_t k = 0; k < splits; ++k) t = merge(t, p.partials[k * c + mch]);
    coef[tid] = finish_grads(t, mch, writer_view(p.g, split == 0));
  }
  __syncthreads();
  if (active) {
    Coeffs q[N];
#pragma unroll
    for (int i = 0; i < N; ++i) q[i] = coef[tx * N + i];
#pragma unroll
    for (int k = 0; k < K; ++k)
      if (k < count)
        dx_store<T, N>(p, (r0 + int64_t(rows) * k) * c + c0, g[k], xm[k], q);
    if constexpr (Staged) {  // streamed: last read first
      constexpr int U = kStreamBackward;
      const int64_t first = r0 + int64_t(rows) * (K + staged);
      for (int k0 = streamed - 1; k0 >= 0; k0 -= U) {
        GradGroup<T, N, U> in;
#pragma unroll
        for (int u = 0; u < U; ++u)
          in.load(p, u, (first + int64_t(rows) * (k0 - u >= 0 ? k0 - u : k0)) * c + c0);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (k0 - u >= 0) {
            float gv[N], xv[N];
            in.grads(u, mean, gv, xv);
            dx_store<T, N>(p, in.o[u], gv, xv, q);
          }
        }
      }
    }
    for (int k = 0; k < held; ++k) {
      float gv[N], xv[N];
      unstage_grads<T, N>(staged_vec(gstage, k, tid), staged_vec(xstage, k, tid), mean, gv, xv);
      dx_store<T, N>(p, (r0 + int64_t(rows) * (K + k)) * c + c0, gv, xv, q);
    }
  }
}

// The merge scratch launch.h plans for is the one the kernels use.
static_assert(persist_scratch_bytes(false, 8, false) == minor_shared_bytes<Welford, Affine>(8) &&
                  persist_scratch_bytes(false, 1, false) == minor_shared_bytes<Welford, Affine>(1),
              "forward scratch");
static_assert(persist_scratch_bytes(false, 8, true) == minor_shared_bytes<Sum2, Coeffs>(8) &&
                  persist_scratch_bytes(false, 1, true) == minor_shared_bytes<Sum2, Coeffs>(1),
              "backward scratch");

// Resident blocks per SM of one kernel by registers and threads, with its
// merge scratch and no stage (0 if a query fails). A staging kernel may
// first take the device's whole opt-in shared memory, carved out of L1 as
// far as it goes, so that any stage persist_fit plans can launch and be
// resident; the register-only ones keep the default carveout (L1 serves
// their loads).
int occupancy_of(const void* kernel, size_t scratch, bool staged, int shared_optin) {
  int n = 0;
  if ((staged &&
       (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_optin) !=
            cudaSuccess ||
        cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                             int(cudaSharedmemCarveoutMaxShared)) != cudaSuccess)) ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kPersistThreads, scratch) !=
          cudaSuccess) {
    cudaGetLastError();  // the handle treats the path as unavailable; nothing stays pending
    return 0;
  }
  return n;
}

// blocks[direction][staged] of one dtype: the fewest over widths and layouts.
template <class T>
void occupancy_of_dtype(DType dtype, int shared_optin, int (&blocks)[2][2][3]) {
  const int dt = int(dtype);
  int best[2][2] = {{1 << 30, 1 << 30}, {1 << 30, 1 << 30}};
  auto take = [&](int dir, bool staged, const void* kernel, size_t scratch) {
    const int v = occupancy_of(kernel, scratch, staged, shared_optin);
    best[dir][staged] = v < best[dir][staged] ? v : best[dir][staged];
  };
  for (int w : {16, 8, 4, 2}) {
    if (w < int(sizeof(T))) continue;
    dispatch_width<T>(w / int(sizeof(T)), [&](auto n) -> cudaError_t {
      constexpr int N = decltype(n)::value;
      constexpr int KF = kPersistForwardValues / N, KB = kPersistBackwardValues / N;
      auto both = [&](auto staged) {
        constexpr bool S = decltype(staged)::value;
        take(0, S, reinterpret_cast<const void*>(&persist_forward_major<T, N, KF, S>),
             persist_scratch_bytes(true, N, false));
        take(0, S, reinterpret_cast<const void*>(&persist_forward_minor<T, N, KF, S>),
             persist_scratch_bytes(false, N, false));
        take(1, S, reinterpret_cast<const void*>(&persist_backward_major<T, N, KB, S>),
             persist_scratch_bytes(true, N, true));
        take(1, S, reinterpret_cast<const void*>(&persist_backward_minor<T, N, KB, S>),
             persist_scratch_bytes(false, N, true));
      };
      both(std::false_type{});
      both(std::true_type{});
      return cudaSuccess;
    });
  }
  for (int dir = 0; dir < 2; ++dir)
    for (int staged = 0; staged < 2; ++staged) blocks[dir][staged][dt] = best[dir][staged];
}

// Calls launch(std::true_type) for the staging kernels, launch(std::false_type)
// for the register-only ones.
template <class Launch>
void with_stage(bool staged, Launch&& launch) {
  if (staged)
    launch(std::true_type{});
  else
    launch(std::false_type{});
}

// A cooperative grid the device cannot hold at once (persist_fit's
// arithmetic against a device shared with others, e.g. under MPS) is
// refused at launch, before anything runs: the multi-pass kernels run
// instead. Any other error is the call's.
template <class Fallback>
cudaError_t launched_or(Fallback&& multi_pass) {
  const cudaError_t e = cudaGetLastError();
  return e == cudaErrorCooperativeLaunchTooLarge ? multi_pass() : e;
}

}  // namespace

cudaError_t persistent_forward_training(const ForwardTrainingArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const bool major = t.order == Order::ChannelMajor;
    const int width = vector_width<T>(major ? t.spatial : t.c, {a.x, a.y, a.ep.residual});
    return dispatch_width<T>(width, [&](auto n) -> cudaError_t {
      constexpr int N = decltype(n)::value;
      constexpr int K = kPersistForwardValues / N;
      // Pointers narrower than planned can make the grid too large to be resident.
      const PersistFit fit = persist_fit(t, N, false, a.plan.persist);
      if (!fit.fits) return forward_training(a, stream);
      const PersistGeometry& g = fit.g;
      ForwardParams<T> p{};
      p.s = stats_params(a);
      p.s.splits = g.splits;
      p.staged = fit.staged;
      p.streamed = fit.streamed;
      p.stage_offset = unsigned(persist_scratch_bytes(major, N, false));
      p.s.pivot_stride = major ? t.spatial : 1;
      p.partials = static_cast<Welford*>(a.workspace);
      p.x = static_cast<const T*>(a.x);
      p.y = static_cast<T*>(a.y);
      p.z = static_cast<const T*>(a.ep.residual);
      p.mask = a.ep.mask;
      p.mask_words = int64_t(a.ep.mask_bytes / 4);
      p.spatial = t.spatial;
      p.relu = a.ep.kind != 0;
      with_stage(fit.staged > 0, [&](auto staged) {
        constexpr bool S = decltype(staged)::value;
        if (major)
          BNORM_LAUNCH_COOPERATIVE((persist_forward_major<T, N, K, S>), unsigned(g.grid),
                                   dim3(g.block_x, g.block_y), fit.shared, stream, p);
        else
          BNORM_LAUNCH_COOPERATIVE((persist_forward_minor<T, N, K, S>), unsigned(g.grid),
                                   dim3(g.block_x, g.block_y), fit.shared, stream, p);
      });
      return launched_or([&] { return forward_training(a, stream); });
    });
  });
}

cudaError_t persistent_backward(const BackwardArgs& a, cudaStream_t stream) {
  // Frozen statistics need no grid-wide merge before dx, and unsaved ones a
  // statistics pass first: both stay on the multi-pass kernels.
  if (a.frozen || !a.mean) return backward(a, stream);
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const bool major = t.order == Order::ChannelMajor;
    T* dz = static_cast<T*>(a.ep.residual_grad);
    const int width = vector_width<T>(major ? t.spatial : t.c, {a.x, a.dy, a.dx, dz});
    return dispatch_width<T>(width, [&](auto n) -> cudaError_t {
      constexpr int N = decltype(n)::value;
      constexpr int K = kPersistBackwardValues / N;
      const PersistFit fit = persist_fit(t, N, true, a.plan.persist);
      if (!fit.fits) return backward(a, stream);
      const PersistGeometry& g = fit.g;
      BackwardParams<T> p{};
      p.staged = fit.staged;
      p.streamed = fit.streamed;
      p.stage_offset = unsigned(persist_scratch_bytes(major, N, true));
      p.g.c = t.c;
      set_counts(p.g, t.m());
      p.g.splits = g.splits;
      p.g.gamma = a.gamma;
      p.g.mean = a.mean;
      p.g.stat = a.stat;
      p.g.eps = a.eps;
      p.g.frozen = false;
      p.g.dgamma = a.dgamma;
      p.g.dbeta = a.dbeta;
      p.partials = static_cast<Sum2*>(a.workspace);
      p.x = static_cast<const T*>(a.x);
      p.dy = static_cast<const T*>(a.dy);
      p.dx = static_cast<T*>(a.dx);
      p.dz = dz;
      p.mask = a.ep.mask;
      p.spatial = t.spatial;
      with_stage(fit.staged > 0, [&](auto staged) {
        constexpr bool S = decltype(staged)::value;
        if (major)
          BNORM_LAUNCH_COOPERATIVE((persist_backward_major<T, N, K, S>), unsigned(g.grid),
                                   dim3(g.block_x, g.block_y), fit.shared, stream, p);
        else
          BNORM_LAUNCH_COOPERATIVE((persist_backward_minor<T, N, K, S>), unsigned(g.grid),
                                   dim3(g.block_x, g.block_y), fit.shared, stream, p);
      });
      return launched_or([&] { return backward(a, stream); });
    });
  });
}

PersistOccupancy persistent_occupancy(int shared_optin) {
  PersistOccupancy o{};
  occupancy_of_dtype<float>(DType::F32, shared_optin, o.blocks);
  occupancy_of_dtype<__half>(DType::F16, shared_optin, o.blocks);
  occupancy_of_dtype<__nv_bfloat16>(DType::BF16, shared_optin, o.blocks);
  return o;
}

}  // namespace kernels
}  // namespace bnorm

// Tiny tensors: the whole operation in one launch of one block, a warp per
// channel, so that launch latency (a few microseconds per launch) is paid
// once. The math and the per-channel arithmetic are those of forward.cu and
// backward.cu (shared through finalize.cuh); only the schedule differs:
//   forward:  Welford over the channel's values (lanes strided, merged by a
//             fixed tree), lane 0 finishes the channel, the warp normalizes;
//   backward: (statistics if not saved,) the two gradient sums, lane 0
//             finishes them, the warp writes dx.
// A channel of one register chunk (Chunk) is read once, the later passes
// working from the registers; longer channels are read again each pass.
// Every lane reads each value it later writes, so y == x and dx == dy or x
// are safe. The fused epilogue (epilogue.cuh) is applied as in the other
// paths, one bit at a time. Used where m and n * c * spatial are small (host/plan.cpp) or when
// the caller asks for BNORM_PATH_SINGLE_BLOCK.
#include "dtype.cuh"
#include "epilogue.cuh"
#include "finalize.cuh"
#include "frozen.cuh"
#include "launch.h"
#include "layout.cuh"
#include "reduce.cuh"

namespace bnorm {
namespace kernels {

namespace {

constexpr int kTinyThreads = 256;  // 255 registers a thread: the double finish math fits unspilled
// Values of a channel a lane loads at once: every load of a chunk is issued
// before any is used, so a channel costs one memory latency per pass (m <=
// 32 * kTinyChunk = 256, as the automatic choice guarantees, is one chunk).
constexpr int kTinyChunk = 8;

// A lane's chunk of a channel, kept in registers from one pass to the next
// where the channel is one chunk (m <= 32 * kTinyChunk, what the automatic
// choice sends here): the later passes then read nothing again, and the
// channel costs one memory latency, not two (three backward). The values are
// the ones a reload would give, so the results are bitwise the same.
struct Chunk {
  float v[kTinyChunk];
  int64_t o[kTinyChunk];
  int count;
};

__device__ __forceinline__ float broadcast(float v) { return __shfl_sync(kFullMask, v, 0); }

// Loads the chunk of channel ch that starts at value j0 into registers:
// value j0 + lane + 32 k into v[k]. Returns how many of v are valid (a
// prefix). `offset` receives the element offsets.
template <class T>
__device__ __forceinline__ int load_chunk(const T* p, const ChannelIndex& at, int64_t ch,
                                          int64_t j0, int64_t m, float (&v)[kTinyChunk],
                                          int64_t (&offset)[kTinyChunk]) {
  const int64_t lane = threadIdx.x % 32;
  int count = 0;
#pragma unroll
  for (int k = 0; k < kTinyChunk; ++k) {
    const int64_t j = j0 + lane + 32 * k;
    v[k] = 0.0f;
    offset[k] = 0;
    if (j < m) {
      offset[k] = at(ch, j);
      v[k] = to_float(p[offset[k]]);
      ++count;
    }
  }
  return count;
}

// Zeroes the gradients of a chunk whose ReLU was closed.
__device__ __forceinline__ void mask_chunk(const uint32_t* mask, int count,
                                           const int64_t (&o)[kTinyChunk],
                                           float (&g)[kTinyChunk]) {
#pragma unroll
  for (int k = 0; k < kTinyChunk; ++k)
    if (k < count && !((mask[o[k] / 32] >> unsigned(o[k] % 32)) & 1u)) g[k] = 0.0f;
}

// The statistics of channel ch of x: every lane returns the same Affine;
// lane 0 has written the outputs p names. `keep` (one-chunk channels only,
// else NULL) receives the lane's chunk of x.
template <class T>
__device__ Affine channel_stats(const T* x, const ChannelIndex& at, int64_t ch,
                                const StatsParams& p, double f, Chunk* keep) {
  const float pivot = to_float(x[at(ch, 0)]);
  Welford s{};
#pragma unroll 1
  for (int64_t j0 = 0; j0 < p.m; j0 += 32 * kTinyChunk) {
    float v[kTinyChunk];
    int64_t o[kTinyChunk];
    const int count = load_chunk(x, at, ch, j0, p.m, v, o);
    if (keep) {
#pragma unroll
      for (int k = 0; k < kTinyChunk; ++k) keep->v[k] = v[k], keep->o[k] = o[k];
      keep->count = count;
    }
#pragma unroll
    for (int k = 0; k < kTinyChunk; ++k) v[k] -= pivot;
    add_tile(s, v, count);
  }
  s = warp_merge(s);
  Affine a{pivot, 0.0f, 0.0f};
  if (threadIdx.x % 32 == 0) a = finish_channel(s, pivot, ch, p, f);
  a.scale = broadcast(a.scale);
  a.shift = broadcast(a.shift);
  return a;
}

template <class T>
__global__ void __launch_bounds__(kTinyThreads, 1)
    tiny_forward(const T* x, T* y, ChannelIndex at, StatsParams p, EpilogueArgs ep) {
  const T* z = static_cast<const T*>(ep.residual);
  const unsigned warps = blockDim.x / 32;
  const double f = average_factor(p);  // every thread reads it before the barrier below
  const bool one_chunk = p.m <= 32 * kTinyChunk;
  for (int64_t ch = threadIdx.x / 32; ch < p.c; ch += warps) {
    Chunk kept{};
    const Affine a = channel_stats(x, at, ch, p, f, one_chunk && y ? &kept : nullptr);
    if (!y) continue;
#pragma unroll 1
    for (int64_t j0 = 0; j0 < p.m; j0 += 32 * kTinyChunk) {
      float v[kTinyChunk];
      int64_t o[kTinyChunk];
      int count;
      if (one_chunk) {
#pragma unroll
        for (int k = 0; k < kTinyChunk; ++k) v[k] = kept.v[k], o[k] = kept.o[k];
        count = kept.count;
      } else {
        count = load_chunk(x, at, ch, j0, p.m, v, o);
      }
      float zv[kTinyChunk] = {};
      if (z) load_chunk(z, at, ch, j0, p.m, zv, o);
#pragma unroll
      for (int k = 0; k < kTinyChunk; ++k) {
        if (k < count) {
          float out = fmaf(a.scale, v[k] - a.pivot, a.shift) + zv[k];
          if (ep.kind != 0) {
            out = relu(out);
            if (ep.mask && out > 0.0f) atomicOr(ep.mask + o[k] / 32, 1u << unsigned(o[k] % 32));
          }
          y[o[k]] = from_float<T>(out);
        }
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0 && p.step_count && p.running_mean) *p.step_count += 1;
}

// sp: statistics to recompute (sp.ws_mean/ws_rstd receive them) when the
// caller saved none; g.mean/g.stat then point at those arrays.
template <class T>
__global__ void __launch_bounds__(kTinyThreads, 1)
    tiny_backward(const T* x, const T* dy, T* dx, ChannelIndex at, GradParams g, StatsParams sp,
                  bool recompute, EpilogueArgs ep) {
  T* dz = static_cast<T*>(ep.residual_grad);
  const unsigned lane = threadIdx.x % 32, warps = blockDim.x / 32;
  // One-chunk channels: x and the masked dy stay in registers across the
  // passes (Chunk); dx and dz are written only after every read of the
  // channel, so dx == dy or x stays safe.
  const bool one_chunk = g.m <= 32 * kTinyChunk;
  for (int64_t ch = threadIdx.x / 32; ch < g.c; ch += warps) {
    Chunk xk{}, gk{};
    bool have_x = false, have_g = false;
    if (recompute) {
      channel_stats(x, at, ch, sp, 0.0, one_chunk ? &xk : nullptr);
      have_x = one_chunk;
      __syncwarp();  // lane 0's ws_mean / ws_rstd, read below by every lane
    }
    // This lane's chunk j0 of the masked dy and of x (x only if `with_x`).
    auto chunk = [&](int64_t j0, bool with_x, float (&gv)[kTinyChunk], float (&xv)[kTinyChunk],
                     int64_t (&o)[kTinyChunk]) {
      int count;
      if (have_g) {
#pragma unroll
        for (int u = 0; u < kTinyChunk; ++u) gv[u] = gk.v[u], o[u] = gk.o[u];
        count = gk.count;
      } else {
        count = load_chunk(dy, at, ch, j0, g.m, gv, o);
        if (ep.mask) mask_chunk(ep.mask, count, o, gv);
      }
      if (with_x) {
        if (have_x) {
#pragma unroll
          for (int u = 0; u < kTinyChunk; ++u) xv[u] = xk.v[u];
        } else {
          load_chunk(x, at, ch, j0, g.m, xv, o);
        }
      }
      if (one_chunk && !have_g) {
#pragma unroll
        for (int u = 0; u < kTinyChunk; ++u) gk.v[u] = gv[u], gk.o[u] = o[u];
        gk.count = count;
        have_g = true;
      }
      if (one_chunk && with_x && !have_x) {
#pragma unroll
        for (int u = 0; u < kTinyChunk; ++u) xk.v[u] = xv[u];
        have_x = true;
      }
      return count;
    };
    Coeffs k{};
    if (!g.frozen || g.dgamma) {
      const float mean = g.mean[ch];
      Sum2 s{};
#pragma unroll 1
      for (int64_t j0 = 0; j0 < g.m; j0 += 32 * kTinyChunk) {
        float gv[kTinyChunk], xv[kTinyChunk];
        int64_t o[kTinyChunk];
        const int count = chunk(j0, true, gv, xv, o);
#pragma unroll
        for (int u = 0; u < kTinyChunk; ++u) {
          if (u < count) {
            s.a += gv[u];
            s.b = fmaf(gv[u], xv[u] - mean, s.b);
          }
        }
      }
      s = warp_merge(s);
      if (lane == 0) k = finish_grads(s, ch, g);
      k = Coeffs{broadcast(k.a), broadcast(k.mdy), broadcast(k.k), broadcast(k.mean)};
    }
    const float frozen_a = g.frozen ? float(frozen_scale(g.gamma, g.stat, ch, g.eps)) : 0.0f;
#pragma unroll 1
    for (int64_t j0 = 0; j0 < g.m; j0 += 32 * kTinyChunk) {
      float gv[kTinyChunk], xv[kTinyChunk] = {};
      int64_t o[kTinyChunk];
      const int count = chunk(j0, !g.frozen, gv, xv, o);
#pragma unroll
      for (int u = 0; u < kTinyChunk; ++u) {
        if (u < count) {
          const float d = g.frozen ? frozen_a * gv[u]
                                   : k.a * ((gv[u] - k.mdy) - (xv[u] - k.mean) * k.k);
          if (dz) dz[o[u]] = from_float<T>(gv[u]);
          dx[o[u]] = from_float<T>(d);
        }
      }
    }
  }
}

}  // namespace

cudaError_t tiny_forward_training(const ForwardTrainingArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const StatsParams p = stats_params(a);
    if (a.ep.mask) {
      const cudaError_t e = cudaMemsetAsync(a.ep.mask, 0, a.ep.mask_bytes, stream);
      if (e != cudaSuccess) return e;
    }
    BNORM_LAUNCH((tiny_forward<T>), 1, kTinyThreads, 0, stream, static_cast<const T*>(a.x),
                 static_cast<T*>(a.y), channel_index(a.t), p, a.ep);
    return cudaGetLastError();
  });
}

cudaError_t tiny_backward(const BackwardArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const bool recompute = !a.frozen && !a.mean;
    const BackwardWorkspace ws(a.t.c, a.plan.splits, recompute);
    char* w = static_cast<char*>(a.workspace);
    StatsParams sp{};
    GradParams g{};
    g.c = sp.c = a.t.c;
    set_counts(g, a.t.m());
    set_counts(sp, a.t.m());
    g.gamma = a.gamma;
    g.mean = a.mean;
    g.stat = a.stat;
    g.eps = sp.eps = a.eps;
    g.frozen = a.frozen;
    g.dgamma = a.dgamma;
    g.dbeta = a.dbeta;
    if (recompute) {
      const ForwardWorkspace fws(a.t.c, a.plan.splits);
      point_at_workspace(sp, w + ws.forward, fws);
      g.mean = sp.ws_mean;
      g.stat = sp.ws_rstd;
    }
    BNORM_LAUNCH((tiny_backward<T>), 1, kTinyThreads, 0, stream, static_cast<const T*>(a.x),
                 static_cast<const T*>(a.dy), static_cast<T*>(a.dx), channel_index(a.t), g, sp,
                 recompute, a.ep);
    return cudaGetLastError();
  });
}

}  // namespace kernels
}  // namespace bnorm

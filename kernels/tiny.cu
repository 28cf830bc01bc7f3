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

// A lane's chunk of a channel: value j0 + lane + 32 k in v[k], its element
// offset in o[k], the first `count` valid. Where the channel is one chunk
// (m <= 32 * kTinyChunk, what the automatic choice sends here) the chunk is
// kept in registers from one pass to the next: the later passes read nothing
// again, and the channel costs one memory latency, not two (three
// backward). The values are the ones a reload would give, so the results are
// bitwise the same.
struct Chunk {
  float v[kTinyChunk];
  int64_t o[kTinyChunk];
  int count;
};

__device__ __forceinline__ float broadcast(float v) { return __shfl_sync(kFullMask, v, 0); }

// Loads the chunk of channel ch that starts at value j0 (every load issued
// before any is used).
template <class T>
__device__ __forceinline__ Chunk load_chunk(const T* p, const ChannelIndex& at, int64_t ch,
                                            int64_t j0, int64_t m) {
  const int64_t lane = threadIdx.x % 32;
  Chunk c;
  c.count = 0;
#pragma unroll
  for (int k = 0; k < kTinyChunk; ++k) {
    const int64_t j = j0 + lane + 32 * k;
    c.v[k] = 0.0f;
    c.o[k] = 0;
    if (j < m) {
      c.o[k] = at(ch, j);
      c.v[k] = to_float(p[c.o[k]]);
      ++c.count;
    }
  }
  return c;
}

// Zeroes the gradients of a chunk whose ReLU was closed.
__device__ __forceinline__ void mask_chunk(const uint32_t* mask, Chunk& g) {
#pragma unroll
  for (int k = 0; k < kTinyChunk; ++k)
    if (k < g.count && !((mask[g.o[k] / 32] >> unsigned(g.o[k] % 32)) & 1u)) g.v[k] = 0.0f;
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
    const Chunk c = load_chunk(x, at, ch, j0, p.m);
    if (keep) *keep = c;
    float v[kTinyChunk];
#pragma unroll
    for (int k = 0; k < kTinyChunk; ++k) v[k] = c.v[k] - pivot;
    add_tile(s, v, c.count);
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
      const Chunk c = one_chunk ? kept : load_chunk(x, at, ch, j0, p.m);
      const Chunk zc = z ? load_chunk(z, at, ch, j0, p.m) : Chunk{};
#pragma unroll
      for (int k = 0; k < kTinyChunk; ++k) {
        if (k < c.count) {
          float out = fmaf(a.scale, c.v[k] - a.pivot, a.shift) + zc.v[k];
          if (ep.kind != 0) {
            out = relu(out);
            if (ep.mask && out > 0.0f)
              atomicOr(ep.mask + c.o[k] / 32, 1u << unsigned(c.o[k] % 32));
          }
          y[c.o[k]] = from_float<T>(out);
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
  // The gradient sums read x and the masked dy, dx (frozen) dy alone.
  const bool sums = !g.frozen || g.dgamma;
  const bool one_chunk = g.m <= 32 * kTinyChunk;
  // The masked dy of chunk j0.
  auto grads = [&](int64_t ch, int64_t j0) {
    Chunk c = load_chunk(dy, at, ch, j0, g.m);
    if (ep.mask) mask_chunk(ep.mask, c);
    return c;
  };
  for (int64_t ch = threadIdx.x / 32; ch < g.c; ch += warps) {
    // One-chunk channels: x and the masked dy read once, here, and kept in
    // registers across the passes; dx and dz are written only after every
    // read of the channel, so dx == dy or x stays safe.
    Chunk xk{}, gk{};
    if (recompute) {
      channel_stats(x, at, ch, sp, 0.0, one_chunk ? &xk : nullptr);
      __syncwarp();  // lane 0's ws_mean / ws_rstd, read below by every lane
    } else if (one_chunk && sums) {
      xk = load_chunk(x, at, ch, 0, g.m);
    }
    if (one_chunk) gk = grads(ch, 0);
    Coeffs k{};
    if (sums) {
      const float mean = g.mean[ch];
      Sum2 s{};
#pragma unroll 1
      for (int64_t j0 = 0; j0 < g.m; j0 += 32 * kTinyChunk) {
        const Chunk gc = one_chunk ? gk : grads(ch, j0);
        const Chunk xc = one_chunk ? xk : load_chunk(x, at, ch, j0, g.m);
#pragma unroll
        for (int u = 0; u < kTinyChunk; ++u) {
          if (u < gc.count) {
            s.a += gc.v[u];
            s.b = fmaf(gc.v[u], xc.v[u] - mean, s.b);
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
      const Chunk gc = one_chunk ? gk : grads(ch, j0);
      const Chunk xc = one_chunk || g.frozen ? xk : load_chunk(x, at, ch, j0, g.m);
#pragma unroll
      for (int u = 0; u < kTinyChunk; ++u) {
        if (u < gc.count) {
          const float d = g.frozen ? frozen_a * gc.v[u]
                                   : k.a * ((gc.v[u] - k.mdy) - (xc.v[u] - k.mean) * k.k);
          if (dz) dz[gc.o[u]] = from_float<T>(gc.v[u]);
          dx[gc.o[u]] = from_float<T>(d);
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

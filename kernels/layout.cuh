// Index walkers over the two memory orders. A thread visits elements at a
// fixed stride; instead of dividing a 64-bit index on every step (tens of
// instructions on a GPU), it divides once and then carries.
#pragma once

#include "launch.h"
#include "portable.cuh"

namespace bnorm {
namespace kernels {

// Walks flat indices i0, i0 + D, i0 + 2D, ... of a tensor in which the
// channel of flat index i is (i / inner) % c: inner = spatial for
// ChannelMajor, 1 for ChannelMinor.
struct FlatCursor {
  int64_t i, pos, ch;         // flat index, i % inner, channel
  int64_t d, d_pos, d_ch;     // stride split the same way
  int64_t inner, c;

  __device__ __forceinline__ FlatCursor(int64_t i0, int64_t stride, int64_t inner_, int64_t c_)
      : i(i0), d(stride), inner(inner_), c(c_) {
    const int64_t q = i0 / inner;
    pos = i0 - q * inner;
    ch = q % c;
    const int64_t dq = stride / inner;
    d_pos = stride - dq * inner;
    d_ch = dq % c;
  }
  __device__ __forceinline__ void advance() {
    i += d;
    pos += d_pos;
    ch += d_ch;
    if (pos >= inner) {
      pos -= inner;
      ++ch;
    }
    if (ch >= c) ch -= c;  // ch < 2c here: d_ch < c and the carry adds one
  }
  __device__ __forceinline__ void retreat() {
    i -= d;
    pos -= d_pos;
    ch -= d_ch;
    if (pos < 0) {
      pos += inner;
      --ch;
    }
    if (ch < 0) ch += c;  // ch >= -c here
  }
};

// Walks the values j0, j0 + D, ... (j < m = n * spatial) of one channel of a
// ChannelMajor tensor: value j of channel ch sits at
// (j / spatial) * c * spatial + ch * spatial + j % spatial.
struct ChannelRunCursor {
  int64_t q, r;        // sample, position in the sample's run
  int64_t dq, dr;      // stride split the same way
  int64_t spatial, row_stride, base;

  __device__ __forceinline__ ChannelRunCursor(int64_t j0, int64_t stride, int64_t spatial_,
                                              int64_t c, int64_t ch)
      : spatial(spatial_), row_stride(c * spatial_), base(ch * spatial_) {
    q = j0 / spatial;
    r = j0 - q * spatial;
    dq = stride / spatial;
    dr = stride - dq * spatial;
  }
  __device__ __forceinline__ int64_t offset() const { return q * row_stride + base + r; }
  __device__ __forceinline__ void advance() {
    q += dq;
    r += dr;
    if (r >= spatial) {
      r -= spatial;
      ++q;
    }
  }
  __device__ __forceinline__ void retreat() {
    q -= dq;
    r -= dr;
    if (r < 0) {
      r += spatial;
      --q;
    }
  }
};

// Value j (0 <= j < m) of channel ch, found with one division (the
// single-block path's per-value index).
struct ChannelIndex {
  int64_t c, spatial;
  bool major;
  // A 32-bit division finds the sample: the single-block path runs only for
  // m < 2^32 (host/plan.cpp), and a 64-bit division is a call around which
  // ptxas spills.
  __device__ __forceinline__ int64_t operator()(int64_t ch, int64_t j) const {
    if (!major) return j * c + ch;
    const int64_t q = int64_t(uint32_t(j) / uint32_t(spatial));
    return (q * c + ch) * spatial + (j - q * spatial);
  }
};

// Requires t.m() < 2^32.
inline ChannelIndex channel_index(const Tensor& t) {
  return ChannelIndex{t.c, t.spatial, t.order == Order::ChannelMajor};
}

}  // namespace kernels
}  // namespace bnorm

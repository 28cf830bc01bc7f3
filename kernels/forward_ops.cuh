// The per-value halves of forward training, shared by the kernel families
// that reduce x and normalize it (forward.cu, sync.cu): the accumulator of
// the statistics pass (channel_reduce.cuh) and the operator of the
// normalize pass (apply.cuh). The math is at the top of forward.cu.
#pragma once

#include "dtype.cuh"
#include "epilogue.cuh"
#include "reduce.cuh"
#include "vector.cuh"
#include "channel_reduce.cuh"
#include "geometry.cuh"
#include "launch.h"

namespace bnorm {
namespace kernels {

// Statistics of x - pivot (see the top of this file).
template <class T, int N>
struct WelfordAcc {
  using State = Welford;
  static constexpr int kTile = reduce_tile<N>();
  struct Const {
    float pivot;
  };
  struct In {
    Packed<T, N> x;
  };
  const T* x;
  int64_t pivot_stride;  // the pivot of channel ch is x[ch * pivot_stride]

  __device__ Const channel(int64_t ch) const { return {to_float(x[ch * pivot_stride])}; }
  __device__ void load(int64_t offset, In& in) const { in.x = load_packed<T, N>(x + offset); }
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
    Packed<T, N> x, z;
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
    in.x = load_packed<T, N>(x + offset);
    in.z = z ? load_packed<T, N>(z + offset) : Packed<T, N>{};  // zeros, never read, without z
  }
  __device__ float compute(const Coef& k, const In& in, int i) const {
    const float v = fmaf(k.scale, in.x[i] - k.pivot, k.shift) + (z ? in.z[i] : 0.0f);
    return relu ? kernels::relu(v) : v;
  }
  __device__ void store(int64_t offset, const In&, const float (&out)[N]) const {
    store_vec<T, N>(y + offset, out);
    if (mask) set_mask_bits<N>(mask, offset, out);
  }
};

// The normalize pass of forward training over a.t into a.y, with
// per-channel coefficients y = scale * (x - pivot) + shift in device memory
// and a.ep's epilogue (the mask is cleared first: its bits are or-ed in).
// `width`: the vector width the pointers allow (vector_width).
template <class T>
cudaError_t normalize_pass(const ForwardTrainingArgs& a, int width, const float* pivot,
                           const float* scale, const float* shift, cudaStream_t stream) {
  cudaError_t e;
  if (a.ep.mask && (e = cudaMemsetAsync(a.ep.mask, 0, a.ep.mask_bytes, stream)) != cudaSuccess)
    return e;
  return dispatch_width<T>(width, [&](auto n) -> cudaError_t {
    constexpr int N = decltype(n)::value;
    const NormalizeOp<T, N> op{static_cast<const T*>(a.x),
                               static_cast<T*>(a.y),
                               pivot,
                               scale,
                               shift,
                               static_cast<const T*>(a.ep.residual),
                               a.ep.mask,
                               a.ep.kind != 0};
    launch_apply<N>(op, a.t, a.plan, stream);
    return cudaGetLastError();
  });
}

}  // namespace kernels
}  // namespace bnorm

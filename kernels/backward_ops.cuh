// The per-value halves of the full backward, shared by the kernel families
// that reduce (x, dy) and write dx (backward.cu, sync.cu): the accumulator
// of the gradient sums (channel_reduce.cuh) and the dx operator
// (apply.cuh). The math is at the top of backward.cu.
#pragma once

#include "dtype.cuh"
#include "epilogue.cuh"
#include "finalize.cuh"
#include "reduce.cuh"
#include "vector.cuh"
#include "channel_reduce.cuh"
#include "geometry.cuh"
#include "launch.h"

namespace bnorm {
namespace kernels {

// Sums of g and g * (x - mean), over register tiles.
template <class T, int N>
struct GradAcc {
  using State = Sum2;
  // Two fields a value: half the statistics pass's tile keeps the double
  // buffer within about 128 registers.
  static constexpr int kTile = reduce_tile<N>() / 2;
  struct Const {
    float mean;
  };
  struct In {  // raw, as channel_reduce.cuh asks
    Packed<T, N> x;
    MaskedGrad<T, N> g;
  };
  const T* x;
  const T* dy;
  const float* __restrict__ mean;
  const uint32_t* __restrict__ mask;  // ReLU epilogue, else NULL

  __device__ Const channel(int64_t ch) const { return {mean[ch]}; }
  __device__ void load(int64_t offset, In& in) const {
    in.g.load(dy, mask, offset);
    in.x = load_packed<T, N>(x + offset);
  }
  template <int K>
  __device__ void add_column(Sum2& s, const Const& k, const In (&in)[K], int lane,
                             int count) const {
    float sg = 0.0f, sgd = 0.0f;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      if (j < count) {
        const float g = in[j].g[lane];
        sg += g;
        sgd = fmaf(g, in[j].x[lane] - k.mean, sgd);
      }
    }
    s.a += sg;
    s.b += sgd;
  }
  template <int K>
  __device__ void add_all(Sum2& s, const Const& k, const In (&in)[K], int count) const {
    float sg = 0.0f, sgd = 0.0f;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      if (j < count) {
#pragma unroll
        for (int i = 0; i < N; ++i) {
          const float g = in[j].g[i];
          sg += g;
          sgd = fmaf(g, in[j].x[i] - k.mean, sgd);
        }
      }
    }
    s.a += sg;
    s.b += sgd;
  }
};

// dx = a * ((g - mdy) - (x - mean) * k), coefficients from the finalize;
// with an epilogue g is the masked dy, and ADD_RELU also writes dz = g.
template <class T, int N>
struct DxFullOp {
  using Coef = Coeffs;
  struct In {
    Packed<T, N> x;
    MaskedGrad<T, N> g;
  };
  const T* x;
  const T* dy;
  T* dx;
  const Coeffs* __restrict__ coeffs;
  const uint32_t* __restrict__ mask;
  T* dz;

  __device__ Coef coef(int64_t ch) const { return coeffs[ch]; }
  __device__ void load(int64_t offset, In& in) const {
    in.g.load(dy, mask, offset);
    in.x = load_packed<T, N>(x + offset);
  }
  __device__ float compute(const Coef& c, const In& in, int i) const {
    return c.a * ((in.g[i] - c.mdy) - (in.x[i] - c.mean) * c.k);
  }
  __device__ void store(int64_t offset, const In& in, const float (&out)[N]) const {
    store_vec<T, N>(dx + offset, out);
    if (dz) store_grad<T, N>(dz + offset, in.g);
  }
};

// The dx pass of the full backward over a.t, from per-channel coefficients
// in device memory, with a.ep's mask and dz. `width` as vector_width gave.
template <class T>
cudaError_t dx_full_pass(const BackwardArgs& a, int width, const Coeffs* coeffs,
                         cudaStream_t stream) {
  return dispatch_width<T>(width, [&](auto n) -> cudaError_t {
    constexpr int N = decltype(n)::value;
    const DxFullOp<T, N> op{static_cast<const T*>(a.x), static_cast<const T*>(a.dy),
                            static_cast<T*>(a.dx),      coeffs,
                            a.ep.mask,                  static_cast<T*>(a.ep.residual_grad)};
    launch_apply<N>(op, a.t, a.plan, stream);
    return cudaGetLastError();
  });
}

}  // namespace kernels
}  // namespace bnorm

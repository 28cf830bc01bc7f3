// The fused epilogue: y = relu(bn(x)) or relu(bn(x) + z), and its gradient.
//
// Forward, the ReLU's decisions are kept at one bit per element: bit o % 32
// of word o / 32 for the element at memory offset o, set when the
// pre-activation was > 0. A thread owns N consecutive elements (N divides
// 32 and its first offset is a multiple of N), so its bits fall in one word;
// threads sharing a word combine with atomicOr on bits no one else touches,
// into a mask the launcher zeroed: the result is deterministic.
//
// Backward, the gradient that reaches batch norm is g = dy where the bit is
// set and 0 elsewhere; for ADD_RELU that g is also dz.
#pragma once

#include "dtype.cuh"
#include "vector.cuh"

namespace bnorm {
namespace kernels {

enum class Epilogue : int { None = 0, Relu = 1, AddRelu = 2 };

// ReLU that lets NaN through, as PyTorch's does (max(NaN, 0) is NaN there).
__device__ __forceinline__ float relu(float v) { return v < 0.0f ? 0.0f : v; }

// The N mask bits of the elements at offsets [o, o + N).
template <int N>
__device__ __forceinline__ unsigned mask_bits(const uint32_t* mask, int64_t o) {
  return (__ldg(mask + o / 32) >> unsigned(o % 32)) & ((1u << N) - 1u);
}

// Sets the bits of the outputs that are > 0 (after the ReLU, which is
// exactly where the pre-activation was > 0).
template <int N>
__device__ __forceinline__ void set_mask_bits(uint32_t* mask, int64_t o, const float (&out)[N]) {
  unsigned bits = 0;
  // A branch, not `bits |= (out[i] > 0 ? 1u : 0u) << i`: GCC 12 with
  // -fsanitize=undefined miscompiles that form (the loop index reads
  // garbage), which the sanitized emulator build would hide behind.
#pragma unroll
  for (int i = 0; i < N; ++i)
    if (out[i] > 0.0f) bits |= 1u << i;
  if (bits) atomicOr(mask + o / 32, bits << unsigned(o % 32));
}

// Zeroes the gradients whose ReLU was closed.
template <int N>
__device__ __forceinline__ void apply_mask(const uint32_t* mask, int64_t o, float (&g)[N]) {
  const unsigned bits = mask_bits<N>(mask, o);
#pragma unroll
  for (int i = 0; i < N; ++i) g[i] = (bits >> i) & 1u ? g[i] : 0.0f;
}

// One vector of g as loaded: dy and, with a mask, the word holding its bits,
// both converted only where a value is read (see Packed), so that loading it
// waits for nothing. g[i] is apply_mask's value.
template <class T, int N>
struct MaskedGrad {
  Packed<T, N> dy;
  uint32_t word;   // the mask word (all ones without a mask)
  unsigned shift;  // where the vector's bits start in it

  __device__ __forceinline__ void load(const T* src, const uint32_t* mask, int64_t o) {
    dy = load_packed<T, N>(src + o);
    shift = unsigned(o % 32);
    word = mask ? __ldg(mask + o / 32) : ~0u;
  }
  __device__ __forceinline__ float operator[](int i) const {
    return (word >> (shift + unsigned(i))) & 1u ? dy[i] : 0.0f;
  }
};

// Stores g (dz of ADD_RELU): dy itself or an exact zero, so no rounding.
template <class T, int N>
__device__ __forceinline__ void store_grad(T* p, const MaskedGrad<T, N>& g) {
  float v[N];
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = g[i];
  store_vec<T, N>(p, v);
}

}  // namespace kernels
}  // namespace bnorm

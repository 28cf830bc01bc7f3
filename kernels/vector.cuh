// Vector access: a thread moves N consecutive activations as one aligned
// load or store (16 bytes when N * sizeof(T) == 16: LDG.128 / STG.128), so a
// warp moves 512 contiguous bytes per instruction and the instruction count
// per byte drops by N. The launcher picks N: the widest such that every
// access is aligned (pointers 16-byte aligned, the row length a multiple of
// N); N = 1 is the scalar fallback.
#pragma once

#include <cstring>
#include <type_traits>

#include "dtype.cuh"

namespace bnorm {
namespace kernels {

template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// The vector at p (aligned to it: vector_width's promise).
template <class T, int N>
__device__ __forceinline__ const Vec<T, N>* as_vec(const T* p) {
  return reinterpret_cast<const Vec<T, N>*>(p);
}

template <class T, int N>
__device__ __forceinline__ Vec<T, N> load_raw(const T* p) {
  return *as_vec<T, N>(p);
}

// A vector as loaded, held in 32-bit words until its values are used, for
// loads that must stay in flight while other work runs (channel_reduce.cuh).
// Held as T[N], 16-bit values are repacked by ptxas (PRMT) right after the
// load, and that repacking waits for the load; a word is converted only
// where a value is read (HADD2.F32 with a half selector).
template <class T, int N>
struct alignas(sizeof(T) * N) Packed {
  using Word = std::conditional_t<(sizeof(T) * N >= 4), uint32_t, uint16_t>;
  Word w[sizeof(T) * N / sizeof(Word)];

  // Value i, as fp32.
  __device__ __forceinline__ float operator[](int i) const {
    T e;
    memcpy(&e, reinterpret_cast<const unsigned char*>(w) + i * sizeof(T), sizeof(T));
    return to_float(e);
  }
};

template <class T, int N>
__device__ __forceinline__ Packed<T, N> load_packed(const T* p) {
  return *reinterpret_cast<const Packed<T, N>*>(p);
}

template <class T, int N>
__device__ __forceinline__ void unpack(const Vec<T, N>& v, float (&out)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_float(v.v[i]);
}

template <class T, int N>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[N]) {
  unpack<T, N>(load_raw<T, N>(p), out);
}

template <class T, int N>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[N]) {
  Vec<T, N> v;
#pragma unroll
  for (int i = 0; i < N; ++i) v.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Vec<T, N>*>(p) = v;
}

// The widest vector (in elements) for row length `len` and the given
// pointers: 16 bytes when everything lines up, else narrower, else 1.
template <class T>
inline int vector_width(int64_t len, std::initializer_list<const void*> ptrs) {
  for (int bytes = 16; bytes > int(sizeof(T)); bytes /= 2) {
    const int n = bytes / int(sizeof(T));
    bool ok = len % n == 0;
    for (const void* p : ptrs) ok = ok && (reinterpret_cast<uintptr_t>(p) % bytes == 0);
    if (ok) return n;
  }
  return 1;
}

// Calls f(std::integral_constant<int, N>{}) for the run-time width n.
template <class T, class F>
cudaError_t dispatch_width(int n, F&& f) {
  switch (n * int(sizeof(T))) {
    case 16: return f(std::integral_constant<int, 16 / sizeof(T)>{});
    case 8: return f(std::integral_constant<int, 8 / sizeof(T)>{});
    case 4:
      if (sizeof(T) < 4) return f(std::integral_constant<int, 4 / sizeof(T)>{});
      break;
    default: break;
  }
  return f(std::integral_constant<int, 1>{});
}

}  // namespace kernels
}  // namespace bnorm

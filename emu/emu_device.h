// The CPU SIMT emulator, kernel side. Force-included (g++ -include) into
// every kernel translation unit of the emulated build; never seen by nvcc.
//
// Each CUDA thread is a Boost.Context fiber. A block's fibers run on one OS
// thread and switch only at barriers and warp collectives, so the emulator is
// a faithful model of what CUDA guarantees and no more: nothing may be
// assumed about the order in which threads run between two barriers (the
// randomized schedule shuffles it), and every barrier must be reached by
// every live thread from the same source line.
//
// Rules for kernel authors (so that one source builds for the GPU and here):
//  1. Launch only through BNORM_LAUNCH(kernel, grid, block, smem, stream,
//     args...) (kernels/portable.cuh). A template kernel whose name has a
//     comma goes in parentheses: BNORM_LAUNCH((k<A, B>), ...).
//  2. Shared memory only through BNORM_DYNAMIC_SHARED(name): one untyped,
//     16-byte aligned byte array per kernel, sized by the launch. Static
//     __shared__ arrays do not compile here. The emulator poisons it (0xFF
//     bytes: NaN floats, -1 integers) at the start of every block.
//  3. Use only what this header provides: the index built-ins,
//     __syncthreads, __syncwarp, the *_sync shuffles and votes, atomics on
//     integers, the fp16/bf16 types and the math functions defined below.
//     Anything else (inline PTX, CUB, wmma) sits behind #ifdef
//     __CUDA_ARCH__ with a portable fallback; cp.async goes through
//     kernels/async_copy.cuh, which the emulator runs as late as the
//     hardware may (emu::async_copy below).
//  4. Grid-wide sync (BNORM_GRID_SYNC) only in kernels launched through
//     BNORM_LAUNCH_COOPERATIVE; such a kernel takes its grid size from
//     gridDim, never assumes it.
//  5. Never assume warp lockstep: exchange values only through shuffles or
//     shared memory behind __syncwarp / __syncthreads.
//  6. Every live thread of a block reaches each __syncthreads, from the same
//     line; a thread that has returned must not be waited for (return only
//     after the last barrier). The emulator aborts with a message otherwise.
#pragma once
#ifndef BNORM_EMU
#define BNORM_EMU 1
#endif

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <device_launch_parameters.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#ifdef __launch_bounds__
#undef __launch_bounds__
#endif
#define __launch_bounds__(...)

// Static shared memory cannot be given per-block semantics here; rule 2.
#ifdef __shared__
#undef __shared__
#endif
#define __shared__ bnorm_emu_static_shared_memory_is_not_supported_use_BNORM_DYNAMIC_SHARED

// Exported from bnorm_emu so that kernels compiled outside it (the
// emulator's own tests) run on the same scheduler.
#define BNORM_EMU_API __attribute__((visibility("default")))

namespace emu {

struct ThreadState;
struct BlockState;
BNORM_EMU_API extern thread_local ThreadState* tls_thread;
BNORM_EMU_API extern thread_local BlockState* tls_block;

// The parts of a thread's and a block's state that kernel code reads.
struct ThreadState {
  uint3 idx;
  unsigned linear;
  unsigned lane;
  unsigned warp;
};
struct BlockState {
  uint3 idx;
  dim3 dim;
  dim3 grid;
  unsigned char* shared;
};

// Block-wide barrier: every live thread of the block, from one source line.
BNORM_EMU_API void syncthreads(const char* file, int line);
// Barrier among the lanes of `mask` (which must include the caller).
BNORM_EMU_API void syncwarp(unsigned mask);
// Writes `mine` to the warp's exchange slot, waits for the lanes of `mask`,
// and returns the value lane `src` wrote (a poison pattern if `src` is not
// in `mask`).
BNORM_EMU_API uint64_t warp_exchange(unsigned mask, uint64_t mine, int src);
BNORM_EMU_API unsigned warp_ballot(unsigned mask, bool pred);
BNORM_EMU_API void grid_sync(const char* file, int line);
// cp.async as a GPU may run it at its latest: the copy of `bytes` from
// global src to shared dst (both aligned to `bytes`, dst inside the block's
// dynamic shared memory, else the process aborts) is made only when the
// thread calls async_wait_all, so a read of dst before the wait sees the
// poisoned shared memory, and a thread that exits with copies not waited
// for aborts.
BNORM_EMU_API void async_copy(void* dst, const void* src, size_t bytes);
BNORM_EMU_API void async_wait_all();

using KernelBody = std::function<void()>;
// Runs the grid to completion on the CPU. A bad configuration sets the
// emulated runtime's last error, as a failed <<<>>> launch does: among
// others, more dynamic shared memory than `func` (the kernel's address, the
// key of cudaFuncSetAttribute) was allowed, or a cooperative grid larger
// than the emulated device holds resident.
BNORM_EMU_API void launch(const char* name, const void* func, dim3 grid, dim3 block,
                          size_t shared_bytes, cudaStream_t stream, KernelBody body,
                          bool cooperative);

template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a wide type");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
inline unsigned segment_base(int width) {
  return tls_thread->lane & ~static_cast<unsigned>(width - 1);
}

}  // namespace emu

// ---- index built-ins -------------------------------------------------------
#define threadIdx (::emu::tls_thread->idx)
#define blockIdx (::emu::tls_block->idx)
#define blockDim (::emu::tls_block->dim)
#define gridDim (::emu::tls_block->grid)
#define warpSize 32

// ---- barriers and fences ----------------------------------------------------
#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::syncwarp(mask); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- warp collectives -------------------------------------------------------
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  int target = static_cast<int>(::emu::segment_base(width)) + (src & (width - 1));
  return ::emu::from_bits<T>(::emu::warp_exchange(mask, ::emu::to_bits(v), target));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  int lane = static_cast<int>(::emu::tls_thread->lane);
  int target = lane ^ lane_mask;
  int base = static_cast<int>(::emu::segment_base(width));
  if (target < base || target >= base + width) target = lane;
  return ::emu::from_bits<T>(::emu::warp_exchange(mask, ::emu::to_bits(v), target));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = static_cast<int>(::emu::tls_thread->lane);
  int target = lane + static_cast<int>(delta);
  int base = static_cast<int>(::emu::segment_base(width));
  if (target >= base + width) target = lane;
  return ::emu::from_bits<T>(::emu::warp_exchange(mask, ::emu::to_bits(v), target));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = static_cast<int>(::emu::tls_thread->lane);
  int target = lane - static_cast<int>(delta);
  int base = static_cast<int>(::emu::segment_base(width));
  if (target < base) target = lane;
  return ::emu::from_bits<T>(::emu::warp_exchange(mask, ::emu::to_bits(v), target));
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return ::emu::warp_ballot(mask, pred != 0); }
inline int __any_sync(unsigned mask, int pred) { return (::emu::warp_ballot(mask, pred != 0) & mask) != 0; }
inline int __all_sync(unsigned mask, int pred) {
  return (::emu::warp_ballot(mask, pred != 0) & mask) == mask;
}

// ---- atomics (integers only: bnorm never adds floats atomically) ------------
template <class T>
inline T atomicAdd(T* p, T v) {
  static_assert(std::is_integral<T>::value, "bnorm kernels use no floating-point atomics");
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
template <class T>
inline T atomicCAS(T* p, T expected, T desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected;
}
template <class T>
inline T atomicExch(T* p, T v) {
  return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
template <class T>
inline T atomicOr(T* p, T v) {
  static_assert(std::is_integral<T>::value, "atomicOr on integers");
  return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
}

// ---- math and bit casts that CUDA provides only on the device ---------------
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __float_as_int(float f) { return ::emu::from_bits<int>(::emu::to_bits(f)); }
inline float __int_as_float(int i) { return ::emu::from_bits<float>(::emu::to_bits(i)); }
inline unsigned __float_as_uint(float f) { return ::emu::from_bits<unsigned>(::emu::to_bits(f)); }
inline float __uint_as_float(unsigned u) { return ::emu::from_bits<float>(::emu::to_bits(u)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}

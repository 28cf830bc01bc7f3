// Global -> shared copies that hold no register while they are in flight.
//
// A persistent kernel's stage (persistent.cu) is filled by each thread for
// itself and read back by the same thread only. Through registers
// (ld.global, then st.shared) a thread has only as many loads in flight as it
// has registers to land them in: the stage went four vectors at a time, 16 KB
// an SM at one resident block, less than HBM's latency asks for
// (bench/NOTES.md, 2026-12-03). cp.async (sm_80 and later) writes shared
// memory from the load itself: every copy of a thread's stage can be in
// flight at once, and the registers stay free for folding the register tile
// while they land.
//
// Contract (per thread; nothing here is collective):
//   copy_async(dst, src) starts copying one V from global src to shared dst,
//     both aligned to sizeof(V). Until the same thread returns from
//     async_wait_all(), nothing may read or write *dst, nor write *src.
//   async_wait_all() returns once every copy the thread started has landed;
//     the thread then reads its own copies. Other threads of the block would
//     see them only after a barrier (the stage needs none).
// 16-byte copies bypass L1 (.cg: a staged value is read from memory once,
// and the staging kernels run with most of L1 given to shared memory);
// 4- and 8-byte copies go through it (.ca, the only form that takes them).
// Other sizes (the 2-byte scalar of a 16-bit dtype) and devices before sm_80
// make an ordinary copy, which keeps the same contract: the copy has landed
// when copy_async returns. The emulator holds every copy back until the
// wait (emu_device.h), so that a read before it fails the tests.
#pragma once

namespace bnorm {
namespace kernels {

template <class V>
__device__ __forceinline__ void copy_async(V* dst, const V* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int bytes = int(sizeof(V));
  if constexpr (bytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                     unsigned(__cvta_generic_to_shared(dst))),
                 "l"(src)
                 : "memory");
  } else if constexpr (bytes == 8 || bytes == 4) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(
                     unsigned(__cvta_generic_to_shared(dst))),
                 "l"(src), "n"(bytes)
                 : "memory");
  } else {
    *dst = *src;
  }
#elif defined(BNORM_EMU)
  ::emu::async_copy(dst, src, sizeof(V));  // lands at the wait, as late as a GPU may
#else
  *dst = *src;
#endif
}

__device__ __forceinline__ void async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#elif defined(BNORM_EMU)
  ::emu::async_wait_all();
#endif
}

}  // namespace kernels
}  // namespace bnorm

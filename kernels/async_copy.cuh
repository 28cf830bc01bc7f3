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
// On the GPU these are CUDA's pipeline primitives (cuda_pipeline.h), which
// emit cp.async from sm_80 on (.cg, L1 bypassed, for 16 bytes: a staged
// value is read from memory once, and the staging kernels give most of L1
// to shared memory; .ca for 4 and 8) and an ordinary copy before. They take
// 4, 8 and 16 bytes; the 2-byte scalar of a 16-bit dtype is an ordinary
// copy, which keeps the same contract: it has landed when copy_async
// returns. The emulator holds every copy back until the wait
// (emu_device.h), so that a read before it fails the tests.
#pragma once

#if defined(__CUDACC__)
#include <cuda_pipeline.h>
#endif

namespace bnorm {
namespace kernels {

template <class V>
__device__ __forceinline__ void copy_async(V* dst, const V* src) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(V) == 4 || sizeof(V) == 8 || sizeof(V) == 16)
    __pipeline_memcpy_async(dst, src, sizeof(V));
  else
    *dst = *src;
#elif defined(BNORM_EMU)
  ::emu::async_copy(dst, src, sizeof(V));  // lands at the wait, as late as a GPU may
#else
  *dst = *src;
#endif
}

__device__ __forceinline__ void async_wait_all() {
#if defined(__CUDA_ARCH__)
  __pipeline_commit();
  __pipeline_wait_prior(0);
#elif defined(BNORM_EMU)
  ::emu::async_wait_all();
#endif
}

}  // namespace kernels
}  // namespace bnorm

// Shared between the emulator's scheduler and its CUDA runtime subset.
// Not part of any public interface.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace emu {

// The emulated runtime's per-host-thread last error (cudaGetLastError).
void set_last_error(cudaError_t e);

// Device limits the launcher enforces and cudaGetDeviceProperties reports.
struct Limits {
  int sm_count;
  int max_threads_per_block;
  int max_threads_per_sm;
  size_t shared_per_block;        // without opt-in
  size_t shared_per_block_optin;  // cudaFuncAttributeMaxDynamicSharedMemorySize
  int max_grid[3];
  int max_block[3];
  int max_cooperative_blocks;     // OS threads we are willing to start at once
  size_t shared_per_sm;           // cudaDevAttrMaxSharedMemoryPerMultiprocessor
  size_t shared_reserved;         // cudaDevAttrReservedSharedMemoryPerBlock
};
const Limits& limits();

// Blocks of `threads` threads and `shared` bytes of dynamic shared memory
// one emulated SM holds at once (threads, shared memory with the per-block
// reserve, and max_cooperative_blocks / sm_count): the occupancy query's
// answer, and what a cooperative launch is checked against.
int resident_blocks_per_sm(uint64_t threads, size_t shared);

// The most dynamic shared memory a launch of `func` may ask for: 48 KB, or
// what cudaFuncSetAttribute(MaxDynamicSharedMemorySize) raised it to.
size_t dynamic_shared_limit(const void* func);
void set_dynamic_shared_limit(const void* func, size_t bytes);

// Host threads that execute ordinary (non-cooperative) grids.
int worker_threads();

// Schedule control (see emu/bnorm_emu.h).
void set_random_schedule(bool on, uint64_t seed);

// Grids run so far, all of them and the cooperative ones (bnorm_emu.h).
uint64_t grids_run(bool cooperative_only);

// Work issued to a stream (a kernel, a copy, a host function): runs now,
// since every operation completes when issued, or, while the stream is being
// captured, is appended to the capture's graph and runs at each launch of
// it. Returns the error of a use that stream capture forbids (work on the
// legacy default stream while a capture is under way), which also
// invalidates the capture; `op` then does not run.
// The emulated NCCL (nccl_emu.cpp) issues its collectives through it, so
// that they are ordered and captured like kernels.
cudaError_t submit(cudaStream_t stream, std::function<void()> op);

}  // namespace emu

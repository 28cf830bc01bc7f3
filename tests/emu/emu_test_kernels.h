// Kernels that exercise the emulator itself (tests/emu/emu_test_kernels.cu,
// compiled for the CPU only). Each launcher runs one grid and returns the
// launch's error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace emu_test {

// out[i] = in[(i + 1) % n] through shared memory, with the barrier between
// the write and the read present or (to show the randomized schedule
// catching it) missing. One block of n threads.
cudaError_t neighbour_exchange(const int* in, int* out, int n, bool with_barrier);

// Each lane records what the shuffles and votes return (see the .cu).
// out holds 8 ints per thread; `threads` need not be a multiple of 32 as
// long as partial warps use the matching mask.
cudaError_t warp_collectives(int* out, int threads);

// out[i] = first 4 bytes of shared memory, read before anything is written.
cudaError_t read_unwritten_shared(int* out);

// Every thread of a multi-dimensional grid writes its linear ids.
cudaError_t index_builtins(int* out, dim3 grid, dim3 block);

// Every thread adds 1 to *counter (blocks run on several host threads).
cudaError_t atomic_count(unsigned long long* counter, int blocks, int threads);

// Cooperative: block b writes v[b] = b + 1, grid sync, then reads all and
// writes sum[b] = sum of v. With `cooperative` false the grid sync is
// reached in an ordinary launch, which aborts.
cudaError_t grid_exchange(int* v, int* sum, int blocks, bool cooperative);

// Bugs the emulator must refuse, each aborting with a message:
cudaError_t barrier_after_early_exit();  // thread 0 returns, others wait
cudaError_t divergent_barriers();        // even/odd threads at different lines
cudaError_t shuffle_without_own_lane();  // mask excludes the caller
cudaError_t shuffle_with_exited_lane();  // lane 31 exits, the rest shuffle with it

// One block of n threads: thread t starts copy_async of in[t] into shared
// memory, records the slot in before[t], waits, records it in after[t].
cudaError_t async_copy_at_wait(const int* in, int* before, int* after, int n);
// A copy_async the emulator must refuse, aborting with a message: mode 0
// exits without waiting, 1 copies from a misaligned source, 2 to a slot past
// the launch's shared memory.
cudaError_t bad_async_copy(int mode);

// Writes one int past the end of the launch's dynamic shared memory.
cudaError_t shared_overrun();

// One block of n threads on `stream`: v[i] = 0.5 v[i] + *counter, then
// *counter += 1 (state on the "device", as a captured training step keeps it).
cudaError_t step_with_counter(float* v, int n, int* counter, cudaStream_t stream);

// A launch with 2048 threads per block (invalid configuration).
cudaError_t oversized_block();

// One block with `bytes` of dynamic shared memory (it writes the last
// byte), after raising its kernel's limit to `bytes` with
// cudaFuncSetAttribute when `opt_in` (the error of that call, if any, is
// returned). Two kernels, so that the opt-in of one test is not the other's.
cudaError_t shared_launch(size_t bytes, bool opt_in);

// grid_exchange's cooperative grid of 64-thread blocks with `shared` bytes
// of dynamic shared memory each (at most 48 KB: no opt-in), and the
// occupancy query of its kernel at that size.
cudaError_t grid_exchange_shared(int* v, int* sum, int blocks, size_t shared);
int grid_occupancy(size_t shared);

}  // namespace emu_test

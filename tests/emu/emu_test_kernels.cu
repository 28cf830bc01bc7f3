// Kernels that exercise the emulator itself; see emu_test_kernels.h.
#include "emu_test_kernels.h"
#include "kernels/async_copy.cuh"
#include "kernels/portable.cuh"

namespace emu_test {

namespace {

__global__ void neighbour_kernel(const int* in, int* out, int n, bool with_barrier) {
  BNORM_DYNAMIC_SHARED(smem);
  int* s = reinterpret_cast<int*>(smem);
  const int t = threadIdx.x;
  s[t] = in[t];
  if (with_barrier) __syncthreads();
  out[t] = s[(t + 1) % n];
}

__global__ void warp_kernel(int* out) {
  const int t = threadIdx.x;
  const int lane = t % 32;
  const int warp_first = t - lane;
  const int lanes = (blockDim.x - warp_first) < 32 ? int(blockDim.x - warp_first) : 32;
  const unsigned mask = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
  int* o = out + 8 * t;
  o[0] = __shfl_xor_sync(mask, 100 + lane, 1);
  o[1] = __shfl_down_sync(mask, 200 + lane, 2);
  o[2] = __shfl_up_sync(mask, 300 + lane, 3);
  o[3] = __shfl_sync(mask, 400 + lane, 5);
  o[4] = __shfl_xor_sync(mask, 500 + lane, 4, 8);  // within groups of 8
  o[5] = static_cast<int>(__ballot_sync(mask, lane % 3 == 0));
  o[6] = __any_sync(mask, lane == 7);
  o[7] = __all_sync(mask, lane < 100);
}

// One block: v[i] = 0.5 v[i] + *counter, then *counter += 1.
__global__ void counter_step_kernel(float* v, int* counter) {
  const int t = threadIdx.x;
  v[t] = 0.5f * v[t] + static_cast<float>(*counter);
  __syncthreads();
  if (t == 0) *counter += 1;
}

__global__ void unwritten_shared_kernel(int* out) {
  BNORM_DYNAMIC_SHARED(smem);
  int v;
  memcpy(&v, smem, sizeof v);
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

__global__ void index_kernel(int* out) {
  const int bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  out[bx * threads + tx] = bx * 10000 + tx;
}

__global__ void atomic_kernel(unsigned long long* counter) { atomicAdd(counter, 1ull); }

struct GridParams {
  int* v;
  int* sum;
};

__global__ void grid_kernel(GridParams p) {
  if (threadIdx.x == 0) p.v[blockIdx.x] = int(blockIdx.x) + 1;
  BNORM_GRID_SYNC();
  if (threadIdx.x == 0) {
    int s = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) s += p.v[b];
    p.sum[blockIdx.x] = s;
  }
}

__global__ void early_exit_kernel() {
  if (threadIdx.x == 0) return;
  __syncthreads();
}

__global__ void divergent_kernel() {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void own_lane_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0xfffffffeu, 1, 0);
}

__global__ void exited_lane_kernel(int* out) {
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

__global__ void shared_overrun_kernel(int n) {
  BNORM_DYNAMIC_SHARED(smem);
  reinterpret_cast<volatile int*>(smem)[n] = 1;
}

// Thread t copies in[t] into shared slot t with copy_async and reads the
// slot before and after waiting.
__global__ void async_copy_kernel(const int* in, int* before, int* after) {
  BNORM_DYNAMIC_SHARED(smem);
  int* s = reinterpret_cast<int*>(smem);
  const int t = threadIdx.x;
  bnorm::kernels::copy_async(&s[t], &in[t]);
  before[t] = s[t];
  bnorm::kernels::async_wait_all();
  after[t] = s[t];
}

// mode 0: exits without waiting; 1: a misaligned source; 2: a destination
// past the end of the shared memory.
__global__ void bad_async_copy_kernel(const int* in, int mode) {
  BNORM_DYNAMIC_SHARED(smem);
  int* s = reinterpret_cast<int*>(smem);
  const int t = threadIdx.x;
  if (mode == 1)
    bnorm::kernels::copy_async(&s[t], reinterpret_cast<const int*>(
                                          reinterpret_cast<const char*>(in + t) + 2));
  else
    bnorm::kernels::copy_async(&s[t + (mode == 2 ? int(blockDim.x) : 0)], &in[t]);
  if (mode != 0) bnorm::kernels::async_wait_all();
}

__global__ void trivial_kernel(int* out) { out[0] = 1; }

__global__ void last_shared_byte_kernel(size_t bytes) {
  BNORM_DYNAMIC_SHARED(smem);
  if (threadIdx.x == 0) smem[bytes - 1] = 1;
}
__global__ void last_shared_byte_opt_in_kernel(size_t bytes) {
  BNORM_DYNAMIC_SHARED(smem);
  if (threadIdx.x == 0) smem[bytes - 1] = 1;
}

}  // namespace

cudaError_t neighbour_exchange(const int* in, int* out, int n, bool with_barrier) {
  BNORM_LAUNCH(neighbour_kernel, 1, n, n * sizeof(int), nullptr, in, out, n, with_barrier);
  return cudaGetLastError();
}

cudaError_t warp_collectives(int* out, int threads) {
  BNORM_LAUNCH(warp_kernel, 1, threads, 0, nullptr, out);
  return cudaGetLastError();
}

cudaError_t read_unwritten_shared(int* out) {
  BNORM_LAUNCH(unwritten_shared_kernel, 2, 32, 64, nullptr, out);
  return cudaGetLastError();
}

cudaError_t index_builtins(int* out, dim3 grid, dim3 block) {
  BNORM_LAUNCH(index_kernel, grid, block, 0, nullptr, out);
  return cudaGetLastError();
}

cudaError_t atomic_count(unsigned long long* counter, int blocks, int threads) {
  BNORM_LAUNCH(atomic_kernel, blocks, threads, 0, nullptr, counter);
  return cudaGetLastError();
}

cudaError_t grid_exchange(int* v, int* sum, int blocks, bool cooperative) {
  const GridParams p{v, sum};
  if (cooperative) {
    BNORM_LAUNCH_COOPERATIVE(grid_kernel, blocks, 64, 0, nullptr, p);
  } else {
    BNORM_LAUNCH(grid_kernel, blocks, 64, 0, nullptr, p);
  }
  return cudaGetLastError();
}

cudaError_t barrier_after_early_exit() {
  BNORM_LAUNCH(early_exit_kernel, 1, 64, 0, nullptr);
  return cudaGetLastError();
}

cudaError_t divergent_barriers() {
  BNORM_LAUNCH(divergent_kernel, 1, 64, 0, nullptr);
  return cudaGetLastError();
}

cudaError_t shuffle_without_own_lane() {
  static int out[32];
  BNORM_LAUNCH(own_lane_kernel, 1, 32, 0, nullptr, out);
  return cudaGetLastError();
}

cudaError_t shuffle_with_exited_lane() {
  static int out[32];
  BNORM_LAUNCH(exited_lane_kernel, 1, 32, 0, nullptr, out);
  return cudaGetLastError();
}

cudaError_t async_copy_at_wait(const int* in, int* before, int* after, int n) {
  BNORM_LAUNCH(async_copy_kernel, 1, n, size_t(n) * sizeof(int), nullptr, in, before, after);
  return cudaGetLastError();
}

cudaError_t bad_async_copy(int mode) {
  static int in[33];
  BNORM_LAUNCH(bad_async_copy_kernel, 1, 32, 32 * sizeof(int), nullptr, in, mode);
  return cudaGetLastError();
}

cudaError_t shared_overrun() {
  BNORM_LAUNCH(shared_overrun_kernel, 1, 32, 16 * sizeof(int), nullptr, 16);
  return cudaGetLastError();
}

cudaError_t step_with_counter(float* v, int n, int* counter, cudaStream_t stream) {
  BNORM_LAUNCH(counter_step_kernel, 1, n, 0, stream, v, counter);
  return cudaGetLastError();
}

cudaError_t oversized_block() {
  static int out[1];
  BNORM_LAUNCH(trivial_kernel, 1, 2048, 0, nullptr, out);
  return cudaGetLastError();
}

cudaError_t shared_launch(size_t bytes, bool opt_in) {
  if (opt_in) {
    const cudaError_t e =
        cudaFuncSetAttribute(reinterpret_cast<const void*>(&last_shared_byte_opt_in_kernel),
                             cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    if (e != cudaSuccess) return e;
    BNORM_LAUNCH(last_shared_byte_opt_in_kernel, 1, 32, bytes, nullptr, bytes);
  } else {
    BNORM_LAUNCH(last_shared_byte_kernel, 1, 32, bytes, nullptr, bytes);
  }
  return cudaGetLastError();
}

cudaError_t grid_exchange_shared(int* v, int* sum, int blocks, size_t shared) {
  const GridParams p{v, sum};
  BNORM_LAUNCH_COOPERATIVE(grid_kernel, blocks, 64, shared, nullptr, p);
  return cudaGetLastError();
}

int grid_occupancy(size_t shared) {
  int n = -1;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, reinterpret_cast<const void*>(&grid_kernel),
                                                    64, shared) != cudaSuccess)
    return -1;
  return n;
}

}  // namespace emu_test

// The subset of the CUDA runtime API that bnorm and a typical caller use,
// served on the CPU with C linkage, so that a program written for the GPU
// links against bnorm_emu instead of cudart and runs unchanged.
//
// "Device" memory is host memory, allocated with the exact size asked for (so
// AddressSanitizer sees overruns). Every operation, asynchronous or not, runs
// to completion when it is issued, which satisfies any stream ordering.
// Events record the host clock.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#include <cuda_runtime_api.h>

#include "bnorm_emu.h"
#include "emu_internal.h"

#define EMU_EXPORT __attribute__((visibility("default")))

namespace emu {
namespace {

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;

std::mutex g_alloc_m;
std::map<const void*, size_t>& allocations() {
  static std::map<const void*, size_t> m;
  return m;
}

cudaError_t fail(cudaError_t e) {
  t_last_error = e;
  return e;
}

// Streams and events are small host objects; their handles are pointers.
struct Stream {
  unsigned magic = 0x57a3u;
};
struct Event {
  unsigned magic = 0xe7e7u;
  bool recorded = false;
  std::chrono::steady_clock::time_point t;
};

}  // namespace

void set_last_error(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
}

const Limits& limits() {
  static const Limits l = {
      /*sm_count=*/8,
      /*max_threads_per_block=*/1024,
      /*max_threads_per_sm=*/2048,
      /*shared_per_block=*/48 * 1024,
      /*shared_per_block_optin=*/227 * 1024,
      /*max_grid=*/{2147483647, 65535, 65535},
      /*max_block=*/{1024, 1024, 64},
      /*max_cooperative_blocks=*/64,
  };
  return l;
}

}  // namespace emu

using emu::fail;

extern "C" {

// ---- errors ------------------------------------------------------------------------------

EMU_EXPORT cudaError_t cudaGetLastError(void) {
  cudaError_t e = emu::t_last_error;
  emu::t_last_error = cudaSuccess;
  return e;
}

EMU_EXPORT cudaError_t cudaPeekAtLastError(void) { return emu::t_last_error; }

EMU_EXPORT const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorCooperativeLaunchTooLarge: return "cudaErrorCooperativeLaunchTooLarge";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaErrorUnknown";
  }
}

EMU_EXPORT const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorCooperativeLaunchTooLarge:
      return "too many blocks in cooperative launch";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorNotSupported: return "operation not supported";
    default: return "unknown error (bnorm CPU emulator)";
  }
}

// ---- devices ---------------------------------------------------------------------------

EMU_EXPORT cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = emu::t_device;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaSetDevice(int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  emu::t_device = device;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
EMU_EXPORT cudaError_t cudaDeviceReset(void) { return cudaSuccess; }

EMU_EXPORT cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* p, int device) {
  if (!p) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  const emu::Limits& l = emu::limits();
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "bnorm CPU emulator (%d host threads)",
                emu::worker_threads());
  p->totalGlobalMem = size_t(16) << 30;
  p->sharedMemPerBlock = l.shared_per_block;
  p->sharedMemPerBlockOptin = l.shared_per_block_optin;
  p->sharedMemPerMultiprocessor = l.shared_per_block_optin + 1024;
  p->regsPerBlock = 65536;
  p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = l.max_threads_per_block;
  p->maxThreadsPerMultiProcessor = l.max_threads_per_sm;
  p->maxBlocksPerMultiProcessor = 32;
  for (int i = 0; i < 3; ++i) {
    p->maxThreadsDim[i] = l.max_block[i];
    p->maxGridSize[i] = l.max_grid[i];
  }
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = l.sm_count;
  p->l2CacheSize = 4 << 20;
  p->cooperativeLaunch = 1;
  p->concurrentKernels = 1;
  p->unifiedAddressing = 1;
  p->managedMemory = 0;
  p->memoryBusWidth = 64;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  const emu::Limits& l = emu::limits();
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = l.sm_count; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = l.max_threads_per_block; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = l.max_threads_per_sm; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(l.shared_per_block); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(l.shared_per_block_optin); break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrCooperativeLaunch: *value = 1; break;
    case cudaDevAttrMaxGridDimX: *value = l.max_grid[0]; break;
    case cudaDevAttrMaxGridDimY: *value = l.max_grid[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = l.max_grid[2]; break;
    case cudaDevAttrL2CacheSize: *value = 4 << 20; break;
    default: return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaDriverGetVersion(int* v) {
  if (!v) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaRuntimeGetVersion(int* v) {
  if (!v) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}

// Kernel attributes: the emulator has no per-kernel limits to raise.
EMU_EXPORT cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute, int) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  return cudaSuccess;
}

// The emulator runs any grid; for cooperative sizing it reports what one
// "SM" may hold given the block size, within max_cooperative_blocks overall.
EMU_EXPORT cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void* func,
                                                                     int block_size,
                                                                     size_t shared) {
  if (!n || !func || block_size <= 0) return fail(cudaErrorInvalidValue);
  const emu::Limits& l = emu::limits();
  int by_threads = l.max_threads_per_sm / block_size;
  int by_shared = shared ? int((l.shared_per_block_optin + 1024) / shared) : 32;
  int by_grid = l.max_cooperative_blocks / l.sm_count;
  int v = by_threads < by_shared ? by_threads : by_shared;
  *n = v < by_grid ? v : by_grid;
  return cudaSuccess;
}

// ---- memory ------------------------------------------------------------------------------

EMU_EXPORT cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  void* q = std::malloc(bytes);
  if (!q) return fail(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> lock(emu::g_alloc_m);
  emu::allocations()[q] = bytes;
  *p = q;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(emu::g_alloc_m);
    auto it = emu::allocations().find(p);
    if (it == emu::allocations().end()) return fail(cudaErrorInvalidDevicePointer);
    emu::allocations().erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaMallocHost(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  *p = bytes ? std::malloc(bytes) : nullptr;
  return (bytes && !*p) ? fail(cudaErrorMemoryAllocation) : cudaSuccess;
}

EMU_EXPORT cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  if (!free_bytes || !total) return fail(cudaErrorInvalidValue);
  *total = size_t(16) << 30;
  *free_bytes = *total;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* a, const void* p) {
  if (!a) return fail(cudaErrorInvalidValue);
  std::memset(a, 0, sizeof *a);
  std::lock_guard<std::mutex> lock(emu::g_alloc_m);
  auto& m = emu::allocations();
  auto it = m.upper_bound(p);
  bool device = false;
  if (it != m.begin()) {
    --it;
    device = static_cast<const char*>(p) < static_cast<const char*>(it->first) + it->second;
  }
  a->type = device ? cudaMemoryTypeDevice : cudaMemoryTypeHost;
  a->device = 0;
  a->devicePointer = const_cast<void*>(p);
  a->hostPointer = device ? nullptr : const_cast<void*>(p);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind) {
  if (bytes && (!dst || !src)) return fail(cudaErrorInvalidValue);
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes,
                                       enum cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}

EMU_EXPORT cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes && !dst) return fail(cudaErrorInvalidValue);
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  return cudaMemset(dst, value, bytes);
}

// ---- streams -----------------------------------------------------------------------------

EMU_EXPORT cudaError_t cudaStreamCreate(cudaStream_t* s) {
  if (!s) return fail(cudaErrorInvalidValue);
  *s = reinterpret_cast<cudaStream_t>(new (std::nothrow) emu::Stream);
  return *s ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

EMU_EXPORT cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  return cudaStreamCreate(s);
}

EMU_EXPORT cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s) return fail(cudaErrorInvalidResourceHandle);
  delete reinterpret_cast<emu::Stream*>(s);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

EMU_EXPORT cudaError_t cudaStreamIsCapturing(cudaStream_t, enum cudaStreamCaptureStatus* st) {
  if (!st) return fail(cudaErrorInvalidValue);
  *st = cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

// ---- events ------------------------------------------------------------------------------

EMU_EXPORT cudaError_t cudaEventCreate(cudaEvent_t* e) {
  if (!e) return fail(cudaErrorInvalidValue);
  *e = reinterpret_cast<cudaEvent_t>(new (std::nothrow) emu::Event);
  return *e ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

EMU_EXPORT cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) {
  return cudaEventCreate(e);
}

EMU_EXPORT cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  delete reinterpret_cast<emu::Event*>(e);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  auto* ev = reinterpret_cast<emu::Event*>(e);
  ev->t = std::chrono::steady_clock::now();
  ev->recorded = true;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

EMU_EXPORT cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!ms) return fail(cudaErrorInvalidValue);
  if (!a || !b) return fail(cudaErrorInvalidResourceHandle);
  auto* ea = reinterpret_cast<emu::Event*>(a);
  auto* eb = reinterpret_cast<emu::Event*>(b);
  if (!ea->recorded || !eb->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(eb->t - ea->t).count();
  return cudaSuccess;
}

// ---- emulator controls (bnorm_emu.h) ---------------------------------------------------------

EMU_EXPORT void bnormEmuSetRandomSchedule(int enabled, unsigned long long seed) {
  emu::set_random_schedule(enabled != 0, seed);
}

EMU_EXPORT int bnormEmuHostThreads(void) { return emu::worker_threads(); }

}  // extern "C"

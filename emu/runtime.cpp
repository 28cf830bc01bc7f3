// The subset of the CUDA runtime API that bnorm and a typical caller use,
// served on the CPU with C linkage, so that a program written for the GPU
// links against bnorm_emu instead of cudart and runs unchanged.
//
// "Device" memory is host memory, allocated with the exact size asked for (so
// AddressSanitizer sees overruns). Every operation, asynchronous or not, runs
// to completion when it is issued, which satisfies any stream ordering.
// Events record the host clock.
//
// Stream capture and graphs: while a stream is being captured
// (cudaStreamBeginCapture), the work issued to it -- kernels, async copies
// and sets, host functions, event records, graph launches -- is recorded
// instead of run, in issue order; cudaGraphLaunch runs the recorded work in
// that order. A graph is what one stream captured (there are no
// cross-stream dependencies to record: the emulator has no
// cudaStreamWaitEvent). Calls that capture forbids on a GPU are refused the
// same way here: a synchronous copy, set, allocation or free, or a
// synchronization, while a capture in global mode (or this thread's in
// thread-local mode) is under way, returns cudaErrorStreamCaptureUnsupported;
// work on the legacy default stream while a blocking stream is captured
// returns cudaErrorStreamCaptureImplicit; either invalidates the capture, so
// cudaStreamEndCapture then fails with cudaErrorStreamCaptureInvalidated.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

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

using Nodes = std::vector<std::function<void()>>;

// Graphs, streams and events are small host objects; their handles are
// pointers.
struct Graph {
  Nodes nodes;
};
struct GraphExec {
  std::shared_ptr<const Nodes> nodes;  // shared with launches captured into other graphs
};
struct Stream {
  unsigned magic = 0x57a3u;
  unsigned flags = cudaStreamDefault;
  // Capture state (guarded by g_capture_m).
  bool capturing = false;
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id owner;
  Graph* graph = nullptr;
};

// Every capture under way, on any thread.
std::mutex g_capture_m;
std::vector<Stream*> g_captures;
std::atomic<int> g_capture_count{0};  // g_captures.size(), read without the lock
int g_global_captures = 0;             // of them, in cudaStreamCaptureModeGlobal
thread_local int t_strict_captures = 0;  // this thread's, in global or thread-local mode

bool is_special(cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread;
}
Stream* as_stream(cudaStream_t s) { return is_special(s) ? nullptr : reinterpret_cast<Stream*>(s); }

void invalidate_captures_locked() {
  for (Stream* s : g_captures) s->invalidated = true;
}

// A call that may synchronize or allocate ("potentially unsafe" in CUDA's
// terms), made while a capture forbids it: refused, and the capture is
// invalidated, as on a GPU.
cudaError_t check_unsafe_call() {
  if (g_capture_count.load() == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_capture_m);
  if (t_strict_captures == 0 && g_global_captures == 0) return cudaSuccess;
  invalidate_captures_locked();
  return fail(cudaErrorStreamCaptureUnsupported);
}

void end_capture_locked(Stream* s) {
  s->capturing = false;
  g_captures.erase(std::find(g_captures.begin(), g_captures.end(), s));
  g_capture_count.store(static_cast<int>(g_captures.size()));
  if (s->mode == cudaStreamCaptureModeGlobal) --g_global_captures;
  if (s->mode != cudaStreamCaptureModeRelaxed) --t_strict_captures;
}
struct Event {
  unsigned magic = 0xe7e7u;
  bool recorded = false;
  std::chrono::steady_clock::time_point t;
};

}  // namespace

cudaError_t submit(cudaStream_t stream, std::function<void()> op) {
  if (g_capture_count.load() != 0) {
    std::lock_guard<std::mutex> lock(g_capture_m);
    Stream* s = as_stream(stream);
    if (s && s->capturing) {
      if (s->invalidated) return cudaErrorStreamCaptureInvalidated;
      s->graph->nodes.push_back(std::move(op));
      return cudaSuccess;
    }
    if (stream == nullptr || stream == cudaStreamLegacy) {
      // The legacy stream waits for every blocking stream: a captured one
      // would gain an edge to work outside its graph.
      for (Stream* c : g_captures)
        if (!(c->flags & cudaStreamNonBlocking)) {
          invalidate_captures_locked();
          return cudaErrorStreamCaptureImplicit;
        }
    }
  }
  op();
  return cudaSuccess;
}

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
      /*shared_per_sm=*/228 * 1024,
      /*shared_reserved=*/1024,
  };
  return l;
}

namespace {
std::mutex g_attr_mutex;
std::unordered_map<const void*, size_t> g_dynamic_shared;
}  // namespace

size_t dynamic_shared_limit(const void* func) {
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  const auto it = g_dynamic_shared.find(func);
  return it == g_dynamic_shared.end() ? limits().shared_per_block : it->second;
}

void set_dynamic_shared_limit(const void* func, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  g_dynamic_shared[func] = bytes;
}

int resident_blocks_per_sm(uint64_t threads, size_t shared) {
  const Limits& l = limits();
  const uint64_t by_threads = threads ? l.max_threads_per_sm / threads : 0;
  const uint64_t by_shared = l.shared_per_sm / (shared + l.shared_reserved);
  const uint64_t by_grid = uint64_t(l.max_cooperative_blocks / l.sm_count);
  uint64_t v = by_threads < by_shared ? by_threads : by_shared;
  return int(v < by_grid ? v : by_grid);
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
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
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
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
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

EMU_EXPORT cudaError_t cudaDeviceSynchronize(void) { return emu::check_unsafe_call(); }
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
  p->sharedMemPerMultiprocessor = l.shared_per_sm;
  p->reservedSharedMemPerBlock = l.shared_reserved;
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
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = int(l.shared_per_sm); break;
    case cudaDevAttrReservedSharedMemoryPerBlock: *value = int(l.shared_reserved); break;
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

// Kernel attributes: the dynamic shared memory a kernel may launch with
// (above 48 KB only after it is raised here, as on a GPU, so that a missing
// opt-in fails under the emulator too); the carveout is accepted and has
// no effect.
EMU_EXPORT cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr,
                                            int value) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || size_t(value) > emu::limits().shared_per_block_optin)
      return fail(cudaErrorInvalidValue);
    emu::set_dynamic_shared_limit(func, size_t(value));
  } else if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {
    if (value < -1 || value > 100) return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

// What one emulated SM holds at once (resident_blocks_per_sm), within
// max_cooperative_blocks overall.
EMU_EXPORT cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void* func,
                                                                     int block_size,
                                                                     size_t shared) {
  if (!n || !func || block_size <= 0) return fail(cudaErrorInvalidValue);
  if (block_size > emu::limits().max_threads_per_block) return fail(cudaErrorInvalidValue);
  *n = emu::resident_blocks_per_sm(uint64_t(block_size), shared);
  return cudaSuccess;
}

// ---- memory ------------------------------------------------------------------------------

EMU_EXPORT cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  if (cudaError_t e = emu::check_unsafe_call()) return e;
  if (bytes == 0) return cudaSuccess;
  void* q = std::malloc(bytes);
  if (!q) return fail(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> lock(emu::g_alloc_m);
  emu::allocations()[q] = bytes;
  *p = q;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaFree(void* p) {
  if (cudaError_t e = emu::check_unsafe_call()) return e;
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
  if (cudaError_t e = emu::check_unsafe_call()) return e;
  *p = bytes ? std::malloc(bytes) : nullptr;
  return (bytes && !*p) ? fail(cudaErrorMemoryAllocation) : cudaSuccess;
}

EMU_EXPORT cudaError_t cudaFreeHost(void* p) {
  if (cudaError_t e = emu::check_unsafe_call()) return e;
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
  if (cudaError_t e = emu::check_unsafe_call()) return e;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes,
                                       enum cudaMemcpyKind, cudaStream_t stream) {
  if (bytes && (!dst || !src)) return fail(cudaErrorInvalidValue);
  if (!bytes) return cudaSuccess;
  const cudaError_t e = emu::submit(stream, [=] { std::memmove(dst, src, bytes); });
  return e ? fail(e) : cudaSuccess;
}

EMU_EXPORT cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes && !dst) return fail(cudaErrorInvalidValue);
  if (cudaError_t e = emu::check_unsafe_call()) return e;
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes && !dst) return fail(cudaErrorInvalidValue);
  if (!bytes) return cudaSuccess;
  const cudaError_t e = emu::submit(stream, [=] { std::memset(dst, value, bytes); });
  return e ? fail(e) : cudaSuccess;
}

EMU_EXPORT cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* user_data) {
  if (!fn) return fail(cudaErrorInvalidValue);
  const cudaError_t e = emu::submit(stream, [=] { fn(user_data); });
  return e ? fail(e) : cudaSuccess;
}

// ---- streams -----------------------------------------------------------------------------

EMU_EXPORT cudaError_t cudaStreamCreate(cudaStream_t* s) {
  if (!s) return fail(cudaErrorInvalidValue);
  *s = reinterpret_cast<cudaStream_t>(new (std::nothrow) emu::Stream);
  return *s ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

EMU_EXPORT cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  const cudaError_t e = cudaStreamCreate(s);
  if (e == cudaSuccess) reinterpret_cast<emu::Stream*>(*s)->flags = flags;
  return e;
}

EMU_EXPORT cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s || emu::is_special(s)) return fail(cudaErrorInvalidResourceHandle);
  auto* st = reinterpret_cast<emu::Stream*>(s);
  {
    std::lock_guard<std::mutex> lock(emu::g_capture_m);
    if (st->capturing) {  // the capture is abandoned with its stream
      emu::end_capture_locked(st);
      delete st->graph;
    }
  }
  delete st;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (emu::Stream* st = emu::as_stream(s)) {
    std::lock_guard<std::mutex> lock(emu::g_capture_m);
    if (st->capturing) {  // a captured stream cannot be waited for
      emu::invalidate_captures_locked();
      return fail(cudaErrorStreamCaptureUnsupported);
    }
  }
  return emu::check_unsafe_call();
}

EMU_EXPORT cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus* st) {
  if (!st) return fail(cudaErrorInvalidValue);
  *st = cudaStreamCaptureStatusNone;
  if (emu::Stream* c = emu::as_stream(s)) {
    std::lock_guard<std::mutex> lock(emu::g_capture_m);
    if (c->capturing)
      *st = c->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  }
  return cudaSuccess;
}

// ---- stream capture and graphs ---------------------------------------------------------------

EMU_EXPORT cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorInvalidValue);
  emu::Stream* st = emu::as_stream(s);
  if (!st) return fail(cudaErrorStreamCaptureUnsupported);  // the default streams cannot be
  std::lock_guard<std::mutex> lock(emu::g_capture_m);
  if (st->capturing) return fail(cudaErrorIllegalState);
  st->graph = new emu::Graph;
  st->capturing = true;
  st->invalidated = false;
  st->mode = mode;
  st->owner = std::this_thread::get_id();
  emu::g_captures.push_back(st);
  emu::g_capture_count.store(static_cast<int>(emu::g_captures.size()));
  if (mode == cudaStreamCaptureModeGlobal) ++emu::g_global_captures;
  if (mode != cudaStreamCaptureModeRelaxed) ++emu::t_strict_captures;
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  if (!graph) return fail(cudaErrorInvalidValue);
  *graph = nullptr;
  emu::Stream* st = emu::as_stream(s);
  if (!st) return fail(cudaErrorIllegalState);
  std::lock_guard<std::mutex> lock(emu::g_capture_m);
  if (!st->capturing) return fail(cudaErrorIllegalState);
  if (st->mode != cudaStreamCaptureModeRelaxed && st->owner != std::this_thread::get_id())
    return fail(cudaErrorStreamCaptureWrongThread);
  emu::end_capture_locked(st);
  emu::Graph* g = st->graph;
  st->graph = nullptr;
  if (st->invalidated) {
    delete g;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = reinterpret_cast<cudaGraph_t>(g);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes,
                                         size_t* count) {
  if (!graph || !count) return fail(cudaErrorInvalidValue);
  if (nodes) return fail(cudaErrorNotSupported);  // the emulator counts nodes, no more
  *count = reinterpret_cast<emu::Graph*>(graph)->nodes.size();
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                            unsigned long long) {
  if (!exec || !graph) return fail(cudaErrorInvalidValue);
  auto* x = new (std::nothrow) emu::GraphExec;
  if (!x) return fail(cudaErrorMemoryAllocation);
  x->nodes = std::make_shared<const emu::Nodes>(reinterpret_cast<emu::Graph*>(graph)->nodes);
  *exec = reinterpret_cast<cudaGraphExec_t>(x);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return fail(cudaErrorInvalidValue);
  std::shared_ptr<const emu::Nodes> nodes = reinterpret_cast<emu::GraphExec*>(exec)->nodes;
  const cudaError_t e = emu::submit(stream, [nodes] {
    for (const auto& node : *nodes) node();
  });
  return e ? fail(e) : cudaSuccess;
}

EMU_EXPORT cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  if (!exec) return fail(cudaErrorInvalidValue);
  delete reinterpret_cast<emu::GraphExec*>(exec);
  return cudaSuccess;
}

EMU_EXPORT cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  if (!graph) return fail(cudaErrorInvalidValue);
  delete reinterpret_cast<emu::Graph*>(graph);
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

EMU_EXPORT cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  auto* ev = reinterpret_cast<emu::Event*>(e);
  const cudaError_t err = emu::submit(stream, [ev] {
    ev->t = std::chrono::steady_clock::now();
    ev->recorded = true;
  });
  return err ? fail(err) : cudaSuccess;
}

EMU_EXPORT cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  return emu::check_unsafe_call();
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

EMU_EXPORT unsigned long long bnormEmuGridsRun(int cooperative_only) {
  return emu::grids_run(cooperative_only != 0);
}

}  // extern "C"

// Handle lifetime: a handle caches what planning needs to know about its
// device, so that no later call asks the driver anything.
#include <cstring>
#include <new>

#include <cuda_runtime_api.h>

#include "context.h"
#include "kernels/launch.h"
#include "nvtx.h"

using bnorm::host::clear_error;
using bnorm::host::fail;

extern "C" {

bnormStatus_t bnormCreate(bnormHandle_t* handle) {
  BNORM_NVTX_RANGE();
  static const char* kCall = "bnormCreate";
  clear_error();
  if (!handle) return fail(BNORM_STATUS_NULL_POINTER, kCall, "argument 'handle' is NULL");
  *handle = nullptr;
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  cudaDeviceProp prop;
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess)
    return fail(BNORM_STATUS_CUDA_ERROR, kCall, "querying the current device failed: %s",
                cudaGetErrorString(e));
  auto* ctx = new (std::nothrow) bnormContext;
  if (!ctx) return fail(BNORM_STATUS_ALLOC_FAILED, kCall, "no host memory for the handle");
  ctx->magic = bnorm::host::kHandleMagic;
  ctx->device = device;
  ctx->sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
  ctx->cc_major = prop.major;
  ctx->cc_minor = prop.minor;
  ctx->max_grid_y = prop.maxGridSize[1] > 0 ? prop.maxGridSize[1] : 65535;
  // Occupancy of the persistent kernels (their registers and shared memory
  // as compiled for this device), asked once here so that planning stays
  // host arithmetic.
  int coop = 0;
  if (cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device) != cudaSuccess) {
    cudaGetLastError();
    coop = 0;
  }
  ctx->cooperative = coop != 0;
  // A device that does not report its shared memory gets no persistent
  // path (persist_fit finds no room); one that does not report the
  // per-block reserve is taken to reserve what sm_80 and sm_90 do.
  auto attribute = [&](cudaDeviceAttr a) -> int64_t {
    int v = 0;
    if (cudaDeviceGetAttribute(&v, a, device) != cudaSuccess) {
      cudaGetLastError();
      return -1;
    }
    return v;
  };
  ctx->shared_per_sm = attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor);
  ctx->shared_per_block_optin = attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  ctx->shared_reserved = attribute(cudaDevAttrReservedSharedMemoryPerBlock);
  if (ctx->shared_per_sm < 0 || ctx->shared_per_block_optin < 0) {
    ctx->shared_per_sm = ctx->shared_per_block_optin = 0;
  }
  if (ctx->shared_reserved < 0) ctx->shared_reserved = 1024;
  const bnorm::kernels::PersistOccupancy occ =
      bnorm::kernels::persistent_occupancy(int(ctx->shared_per_block_optin));
  std::memcpy(ctx->persist_blocks, occ.blocks, sizeof occ.blocks);
  std::memcpy(ctx->name, prop.name, sizeof ctx->name);
  ctx->name[sizeof ctx->name - 1] = '\0';
  *handle = ctx;
  return BNORM_STATUS_SUCCESS;
}

bnormStatus_t bnormDestroy(bnormHandle_t handle) {
  BNORM_NVTX_RANGE();
  clear_error();
  if (!handle) return BNORM_STATUS_SUCCESS;
  if (handle->magic != bnorm::host::kHandleMagic)
    return fail(BNORM_STATUS_BAD_HANDLE, "bnormDestroy",
                "argument 'handle' was not made by bnormCreate");
  handle->magic = 0;
  delete handle;
  return BNORM_STATUS_SUCCESS;
}

}  // extern "C"

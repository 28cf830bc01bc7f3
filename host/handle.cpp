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
  // What the persistent kernels' planning needs (persist_fit): cooperative
  // launches, the shared memory of an SM, the reserve of a block and the
  // most a block may opt in to; then their occupancy (their registers and
  // shared memory as compiled for this device), asked once here so that
  // planning stays host arithmetic.
  ctx->cooperative = prop.cooperativeLaunch != 0;
  ctx->shared_per_sm = int64_t(prop.sharedMemPerMultiprocessor);
  ctx->shared_per_block_optin = int64_t(prop.sharedMemPerBlockOptin);
  ctx->shared_reserved = int64_t(prop.reservedSharedMemPerBlock);
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

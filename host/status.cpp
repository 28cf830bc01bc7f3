// Status strings and the per-thread message of the last call.
#include <cstdio>

#include "checks.h"
#include "nvtx.h"
#include "context.h"

namespace {
thread_local char t_message[512] = "";
}

namespace bnorm {
namespace host {

bnormStatus_t fail(bnormStatus_t s, const char* call, const char* fmt, ...) {
  int n = std::snprintf(t_message, sizeof t_message, "%s: ", call);
  if (n < 0 || size_t(n) >= sizeof t_message) return s;
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(t_message + n, sizeof t_message - size_t(n), fmt, ap);
  va_end(ap);
  return s;
}

void clear_error() { t_message[0] = '\0'; }

}  // namespace host
}  // namespace bnorm

extern "C" {

const char* bnormGetStatusString(bnormStatus_t s) {
  BNORM_NVTX_RANGE();
  switch (bnorm::host::enum_value(s)) {
    case BNORM_STATUS_SUCCESS: return "BNORM_STATUS_SUCCESS: the call succeeded";
    case BNORM_STATUS_NULL_POINTER: return "BNORM_STATUS_NULL_POINTER: a required pointer is NULL";
    case BNORM_STATUS_INVALID_VALUE:
      return "BNORM_STATUS_INVALID_VALUE: an enum, eps, factor or config field is invalid";
    case BNORM_STATUS_BAD_SHAPE:
      return "BNORM_STATUS_BAD_SHAPE: a dimension is out of range or their product overflows";
    case BNORM_STATUS_MISALIGNED:
      return "BNORM_STATUS_MISALIGNED: a pointer is not aligned as the call requires";
    case BNORM_STATUS_WORKSPACE_TOO_SMALL:
      return "BNORM_STATUS_WORKSPACE_TOO_SMALL: the workspace is smaller than the size query's "
             "answer";
    case BNORM_STATUS_BATCH_TOO_SMALL:
      return "BNORM_STATUS_BATCH_TOO_SMALL: training needs more than one value per channel";
    case BNORM_STATUS_BAD_ALIASING:
      return "BNORM_STATUS_BAD_ALIASING: tensors overlap in a way the call does not allow";
    case BNORM_STATUS_BAD_HANDLE:
      return "BNORM_STATUS_BAD_HANDLE: the handle is NULL or was not made by bnormCreate";
    case BNORM_STATUS_NOT_SUPPORTED:
      return "BNORM_STATUS_NOT_SUPPORTED: this build or device cannot carry out the request";
    case BNORM_STATUS_CUDA_ERROR: return "BNORM_STATUS_CUDA_ERROR: a CUDA runtime call failed";
    case BNORM_STATUS_ALLOC_FAILED:
      return "BNORM_STATUS_ALLOC_FAILED: host memory could not be allocated";
    case BNORM_STATUS_COMM_ERROR:
      return "BNORM_STATUS_COMM_ERROR: a collective across ranks (NCCL) failed";
    case BNORM_STATUS_INTERNAL_ERROR:
      return "BNORM_STATUS_INTERNAL_ERROR: a bug in bnorm; please report the message";
  }
  return "unknown status";
}

const char* bnormGetLastErrorMessage(void) {
  BNORM_NVTX_RANGE();
  return t_message;
}

int bnormGetVersion(void) {
  BNORM_NVTX_RANGE();
  return BNORM_VERSION;
}

}  // extern "C"

// The argument checks of forward training and of the full backward, shared
// by the local calls (forward.cpp, backward.cpp) and the synchronized phases
// that end the same way (sync.cpp): the same arguments meet the same rules,
// named the same way in the message.
#pragma once

#include <cuda_runtime_api.h>

#include "bnorm.h"
#include "checks.h"
#include "kernels/launch.h"
#include "plan.h"

namespace bnorm {
namespace host {

// What decides BNORM_STATUS_BATCH_TOO_SMALL: this call's own m (a local
// call), or the synchronized batch's global sample count (-1: unknown, the
// device then guards; see bnorm.h).
struct Batch {
  bool sync;
  int64_t global_n;
};

// Every argument of bnormForwardTraining, plus the gathered statistics of a
// synchronized forward (an input; NULL for a local call).
struct TrainingRequest {
  const bnormTensorDesc_t* desc;
  const bnormConfig_t* config;
  const void* x;
  void* y;
  const float* gamma;
  const float* beta;
  float* running_mean;
  float* running_var;
  int64_t* step_count;
  float* saved_mean;
  float* saved_rstd;
  void* workspace;
  size_t workspace_bytes;
  const void* gathered;
  size_t gathered_bytes;
  const char* gathered_name;  // as messages name it
  bool gathered_written;      // the built-in exchange writes it (part of the workspace)
};

// Checks everything, in the order the public header documents, and fills
// the launch arguments. False: `check` holds the failure.
bool check_training(Checker& check, bnormHandle_t handle, const TrainingRequest& r,
                    const Batch& batch, kernels::ForwardTrainingArgs* a);

// Every argument of bnormBackward / bnormBackwardFrozen, plus the reduced
// sums of a synchronized backward (an input; NULL for a local call).
struct BackwardRequest {
  const bnormTensorDesc_t* desc;
  const bnormConfig_t* config;
  const void* x;
  const void* dy;
  void* dx;
  const float* gamma;
  const float* mean;  // saved mean (full) or running mean (frozen)
  const float* stat;  // saved rstd (full) or running var (frozen)
  float* dgamma;
  float* dbeta;
  void* workspace;
  size_t workspace_bytes;
  const void* reduced;
  size_t reduced_bytes;
  const char* reduced_name;
  bool reduced_written;
};

bool check_backward(Checker& check, bnormHandle_t handle, const BackwardRequest& r, bool frozen,
                    const Batch& batch, kernels::BackwardArgs* a);

// The status of a call whose checks passed, from the CUDA error of what it
// enqueued.
inline bnormStatus_t enqueued(Checker& check, cudaError_t e) {
  if (e != cudaSuccess)
    return check.fail(BNORM_STATUS_CUDA_ERROR, "enqueueing failed: %s", cudaGetErrorString(e))
        .status();
  return BNORM_STATUS_SUCCESS;
}

// The synchronized batch's rule for BATCH_TOO_SMALL and global_n itself
// (desc already checked).
Checker& check_global_n(Checker& check, const bnormTensorDesc_t* desc, int64_t global_n);

}  // namespace host
}  // namespace bnorm

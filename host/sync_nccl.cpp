// The built-in NCCL path of synchronized batch norm: the phases of sync.cpp
// around exactly one collective each, on the caller's communicator and
// stream. Every argument is checked before the first kernel is enqueued, so
// a failed call enqueues nothing (and, since it never reaches its
// collective, leaves the other ranks waiting in theirs: bnorm.h says so).
//
// The exchanged buffers are the tail of the workspace (sync.cpp's layout),
// and both collectives run in place: the all-gather's send buffer is this
// rank's block of the gathered buffer, the all-reduce's is the packed sums.
// Without NCCL in the build, the calls say so (BNORM_STATUS_NOT_SUPPORTED).
#include <cuda_runtime_api.h>

#if BNORM_HAVE_NCCL
#include <nccl.h>
#endif

#include "checks.h"
#include "kernels/launch.h"
#include "nvtx.h"
#include "plan.h"
#include "requests.h"

using namespace bnorm::host;
namespace k = bnorm::kernels;

namespace {

// Where the exchanged buffer starts in the workspace of a call on `desc`.
size_t local_forward_bytes(const Plan& plan) { return k::align16(forward_workspace_bytes(plan)); }
size_t local_backward_bytes(const Plan& plan) {
  return k::align16(backward_workspace_bytes(plan, false));
}

// Checks handle, descriptor and config (the factor only for a call that
// uses it), and plans what the sizes need.
bool plan_call(Checker& check, bnormHandle_t handle, const bnormTensorDesc_t* desc,
               const bnormConfig_t* config, bool check_factor, Pass pass, Plan* plan) {
  size_t elem = 0;
  Config cfg;
  check.handle(handle).desc(desc, &elem).config(config, check_factor, &cfg);
  if (!check.ok()) return false;
  // The multi-pass kernels: the collective sits between two of their passes.
  *plan = make_plan(*handle, *desc, BNORM_PATH_MULTI_PASS, pass);
  return true;
}

#if BNORM_HAVE_NCCL
bool comm_ranks(Checker& check, ncclComm_t comm, int* nranks, int* rank) {
  check.required(comm, "comm");
  if (!check.ok()) return false;
  ncclResult_t r = ncclCommCount(comm, nranks);
  if (r == ncclSuccess) r = ncclCommUserRank(comm, rank);
  if (r != ncclSuccess) {
    check.fail(BNORM_STATUS_COMM_ERROR, "the communicator 'comm' cannot be queried: %s",
               ncclGetErrorString(r));
    return false;
  }
  return true;
}

bnormStatus_t collective(Checker& check, ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    return check.fail(BNORM_STATUS_COMM_ERROR, "%s failed: %s (%s)", what, ncclGetErrorString(r),
                      ncclGetLastError(nullptr))
        .status();
  return BNORM_STATUS_SUCCESS;
}
#endif

}  // namespace

extern "C" {

bnormStatus_t bnormGetSyncForwardTrainingWorkspaceSize(bnormHandle_t handle,
                                                       const bnormTensorDesc_t* desc,
                                                       const bnormConfig_t* config, int nranks,
                                                       size_t* workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormGetSyncForwardTrainingWorkspaceSize");
  Plan plan;
  if (!plan_call(check, handle, desc, config, false, Pass::Forward, &plan)) return check.status();
  check.required(workspace_bytes, "workspace_bytes");
  if (check.ok() && nranks < 1)
    check.fail(BNORM_STATUS_INVALID_VALUE, "argument 'nranks' (%d) must be at least 1", nranks);
  if (!check.ok()) return check.status();
  size_t gathered, total;
  if (__builtin_mul_overflow(k::SyncStatsLayout(desc->c).total, size_t(nranks), &gathered) ||
      __builtin_add_overflow(gathered, local_forward_bytes(plan), &total))
    return check.fail(BNORM_STATUS_BAD_SHAPE, "the workspace size overflows").status();
  *workspace_bytes = total;
  return BNORM_STATUS_SUCCESS;
}

bnormStatus_t bnormGetSyncBackwardWorkspaceSize(bnormHandle_t handle,
                                                const bnormTensorDesc_t* desc,
                                                const bnormConfig_t* config,
                                                size_t* workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormGetSyncBackwardWorkspaceSize");
  Plan plan;
  if (!plan_call(check, handle, desc, config, false, Pass::Backward, &plan)) return check.status();
  check.required(workspace_bytes, "workspace_bytes");
  if (!check.ok()) return check.status();
  *workspace_bytes = local_backward_bytes(plan) + k::sync_grads_bytes(desc->c);
  return BNORM_STATUS_SUCCESS;
}

bnormStatus_t bnormSyncForwardTraining(bnormHandle_t handle, cudaStream_t stream,
                                       struct ncclComm* comm, const bnormTensorDesc_t* desc,
                                       const bnormConfig_t* config, int64_t global_n,
                                       const void* x, void* y, const float* gamma,
                                       const float* beta, float* running_mean,
                                       float* running_var, int64_t* step_count,
                                       float* saved_mean, float* saved_rstd, void* workspace,
                                       size_t workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormSyncForwardTraining");
#if !BNORM_HAVE_NCCL
  (void)handle, (void)stream, (void)comm, (void)desc, (void)config, (void)global_n, (void)x;
  (void)y, (void)gamma, (void)beta, (void)running_mean, (void)running_var, (void)step_count;
  (void)saved_mean, (void)saved_rstd, (void)workspace, (void)workspace_bytes;
  return check.fail(BNORM_STATUS_NOT_SUPPORTED, "this build of bnorm has no NCCL").status();
#else
  int nranks = 0, rank = 0;
  Plan plan;
  if (!comm_ranks(check, comm, &nranks, &rank) ||
      !plan_call(check, handle, desc, config, true, Pass::Forward, &plan))
    return check.status();
  const size_t local = local_forward_bytes(plan);
  const size_t stats = k::SyncStatsLayout(desc->c).total;
  size_t need;
  if (__builtin_mul_overflow(stats, size_t(nranks), &need) ||
      __builtin_add_overflow(need, local, &need))
    return check.fail(BNORM_STATUS_BAD_SHAPE, "the workspace size overflows").status();
  check.workspace(workspace, workspace_bytes, need);
  if (!check.ok()) return check.status();
  char* gathered = static_cast<char*>(workspace) + local;
  const TrainingRequest r{desc,       config,       x,           y,          gamma,
                          beta,       running_mean, running_var, step_count, saved_mean,
                          saved_rstd, workspace,    local,       gathered,   need - local,
                          "workspace", true};
  k::SyncApplyArgs a;
  if (!check_training(check, handle, r, Batch{true, global_n}, &a.f)) return check.status();
  a.gathered = gathered;
  a.nranks = nranks;
  a.rank = rank;

  char* mine = gathered + size_t(rank) * stats;
  const k::SyncStatsArgs s{a.f.t, a.f.plan, x, mine, workspace};
  bnormStatus_t st = enqueued(check, k::sync_forward_stats(s, stream));
  if (st != BNORM_STATUS_SUCCESS) return st;
  st = collective(check, ncclAllGather(mine, gathered, stats, ncclUint8, comm, stream),
                  "ncclAllGather of the statistics");
  if (st != BNORM_STATUS_SUCCESS) return st;
  return enqueued(check, k::sync_forward_apply(a, stream));
#endif
}

bnormStatus_t bnormSyncBackward(bnormHandle_t handle, cudaStream_t stream, struct ncclComm* comm,
                                const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                                const void* x, const void* dy, void* dx, const float* gamma,
                                const float* saved_mean, const float* saved_rstd, float* dgamma,
                                float* dbeta, void* workspace, size_t workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormSyncBackward");
#if !BNORM_HAVE_NCCL
  (void)handle, (void)stream, (void)comm, (void)desc, (void)config, (void)x, (void)dy, (void)dx;
  (void)gamma, (void)saved_mean, (void)saved_rstd, (void)dgamma, (void)dbeta, (void)workspace;
  (void)workspace_bytes;
  return check.fail(BNORM_STATUS_NOT_SUPPORTED, "this build of bnorm has no NCCL").status();
#else
  int nranks = 0, rank = 0;
  Plan plan;
  if (!comm_ranks(check, comm, &nranks, &rank) ||
      !plan_call(check, handle, desc, config, false, Pass::Backward, &plan))
    return check.status();
  const size_t local = local_backward_bytes(plan);
  const size_t sums = k::sync_grads_bytes(desc->c);
  check.workspace(workspace, workspace_bytes, local + sums);
  if (!check.ok()) return check.status();
  double* reduced = reinterpret_cast<double*>(static_cast<char*>(workspace) + local);
  const BackwardRequest r{desc,       config, x,     dy,        dx,    gamma,   saved_mean,
                          saved_rstd, dgamma, dbeta, workspace, local, reduced, sums,
                          "workspace", true};
  k::SyncGradApplyArgs a;
  if (!check_backward(check, handle, r, false, Batch{true, -1}, &a.b)) return check.status();
  a.reduced = reduced;

  const k::SyncGradsArgs g{a.b.t, a.b.plan, a.b.ep, x, dy, saved_mean, reduced, workspace};
  bnormStatus_t st = enqueued(check, k::sync_backward_grads(g, stream));
  if (st != BNORM_STATUS_SUCCESS) return st;
  st = collective(check,
                  ncclAllReduce(reduced, reduced, sums / sizeof(double), ncclFloat64, ncclSum, comm,
                                stream),
                  "ncclAllReduce of the gradient sums");
  if (st != BNORM_STATUS_SUCCESS) return st;
  return enqueued(check, k::sync_backward_apply(a, stream));
#endif
}

}  // extern "C"

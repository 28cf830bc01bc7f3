// Synchronized batch norm: the split phases and, where the build has NCCL,
// the calls that run them around one collective each (bnorm.h says why the
// forward all-gathers and the backward all-reduces).
//
// The phases check their arguments with the rules of the local calls they
// end like (requests.h), so a synchronized forward or backward takes
// exactly the arguments its local counterpart takes, plus the exchanged
// buffer. With NCCL the exchanged buffers live at the end of the caller's
// workspace, after the local workspace:
//   forward:  [local workspace][nranks blocks of packed statistics]
//   backward: [local workspace][packed sums]
// and the collectives run in place (this rank's block is where its own
// statistics are packed; the sums are reduced where they are packed).
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

Checker& check_ranks(Checker& check, int nranks, int rank) {
  if (!check.ok()) return check;
  if (nranks < 1)
    return check.fail(BNORM_STATUS_INVALID_VALUE, "argument 'nranks' (%d) must be at least 1",
                      nranks);
  if (rank < 0 || rank >= nranks)
    return check.fail(BNORM_STATUS_INVALID_VALUE, "argument 'rank' (%d) is not in [0, nranks = %d)",
                      rank, nranks);
  return check;
}

// nranks blocks of packed statistics, as bytes; false if that overflows.
bool gathered_bytes(int64_t c, int nranks, size_t* bytes) {
  return !__builtin_mul_overflow(k::SyncStatsLayout(c).total, size_t(nranks), bytes);
}

// The local part of the forward's phase 1: checks, then the kernels.
bnormStatus_t forward_stats(Checker& check, bnormHandle_t handle, cudaStream_t stream,
                            const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                            const void* x, void* local_stats, void* workspace,
                            size_t workspace_bytes) {
  size_t elem = 0;
  Config cfg;
  // The factor is the apply phase's (a call ignores config fields not its own).
  check.handle(handle).desc(desc, &elem).config(config, false, &cfg);
  if (!check.ok()) return check.status();
  const size_t bytes = tensor_bytes(desc, elem);
  const Plan plan = make_plan(*handle, *desc, BNORM_PATH_MULTI_PASS);
  const size_t ws_total = forward_workspace_bytes(plan);
  const size_t stats_bytes = k::SyncStatsLayout(desc->c).total;
  const size_t ws_used = workspace_bytes < ws_total ? workspace_bytes : ws_total;
  if (bytes > 0) check.required(x, "x");
  check.required(local_stats, "local_stats")
      .aligned(x, elem, "x")
      .aligned(local_stats, 16, "local_stats")
      .no_overlap({{x, bytes, "x", false},
                   {local_stats, stats_bytes, "local_stats", true},
                   {workspace, ws_used, "workspace", true}})
      .workspace(workspace, workspace_bytes, ws_total);
  if (!check.ok()) return check.status();
  k::SyncStatsArgs a{plan.t, plan.reduce, x, local_stats, workspace};
  return enqueued(check, k::sync_forward_stats(a, stream));
}

bnormStatus_t forward_apply(Checker& check, bnormHandle_t handle, cudaStream_t stream,
                            const TrainingRequest& r, int nranks, int rank, int64_t global_n) {
  check_ranks(check, nranks, rank).required(r.gathered, "gathered_stats")
      .aligned(r.gathered, 16, "gathered_stats");
  if (!check.ok()) return check.status();
  k::SyncApplyArgs a;
  if (!check_training(check, handle, r, Batch{true, global_n}, &a.f)) return check.status();
  a.gathered = r.gathered;
  a.nranks = nranks;
  a.rank = rank;
  return enqueued(check, k::sync_forward_apply(a, stream));
}

bnormStatus_t backward_grads(Checker& check, bnormHandle_t handle, cudaStream_t stream,
                             const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                             const void* x, const void* dy, const float* saved_mean,
                             void* local_grads, void* workspace, size_t workspace_bytes) {
  size_t elem = 0;
  Config cfg;
  check.handle(handle).desc(desc, &elem).config(config, false, &cfg);
  if (!check.ok()) return check.status();
  const size_t bytes = tensor_bytes(desc, elem);
  const size_t cb = size_t(desc->c) * sizeof(float);
  const int64_t numel = desc->n * desc->c * desc->spatial;
  const Plan plan = make_plan(*handle, *desc, BNORM_PATH_MULTI_PASS, Pass::Backward);
  const size_t ws_total = backward_workspace_bytes(plan, false);
  const size_t ws_used = workspace_bytes < ws_total ? workspace_bytes : ws_total;
  const size_t grads_bytes = k::sync_grads_bytes(desc->c);
  if (bytes > 0) check.required(x, "x").required(dy, "dy");
  check.required(saved_mean, "saved_mean").required(local_grads, "local_grads")
      .aligned(x, elem, "x").aligned(dy, elem, "dy").aligned(saved_mean, 4, "saved_mean")
      .aligned(local_grads, 16, "local_grads");
  // Only the mask matters here (dz is written by the apply phase).
  check.epilogue(cfg, Checker::EpilogueRole::GradSums, bytes, numel, elem);
  check.no_overlap({{x, bytes, "x", false},
                    {dy, bytes, "dy", false},
                    {saved_mean, cb, "saved_mean", false},
                    {cfg.relu_mask, k::relu_mask_bytes(numel), "config->relu_mask", false},
                    {local_grads, grads_bytes, "local_grads", true},
                    {workspace, ws_used, "workspace", true}})
      .workspace(workspace, workspace_bytes, ws_total);
  if (!check.ok()) return check.status();
  k::SyncGradsArgs a{plan.t, plan.reduce, epilogue_args(cfg, numel), x, dy, saved_mean,
                     local_grads, workspace};
  return enqueued(check, k::sync_backward_grads(a, stream));
}

bnormStatus_t backward_apply(Checker& check, bnormHandle_t handle, cudaStream_t stream,
                             const BackwardRequest& r) {
  check.required(r.reduced, "reduced_grads").aligned(r.reduced, 16, "reduced_grads");
  if (!check.ok()) return check.status();
  k::SyncGradApplyArgs a;
  if (!check_backward(check, handle, r, false, Batch{true, -1}, &a.b)) return check.status();
  a.reduced = r.reduced;
  return enqueued(check, k::sync_backward_apply(a, stream));
}

}  // namespace

extern "C" {

bnormStatus_t bnormGetSyncBufferSizes(bnormHandle_t handle, int64_t c, size_t* stats_bytes,
                                      size_t* grads_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormGetSyncBufferSizes");
  check.handle(handle).channels(c).required(stats_bytes, "stats_bytes")
      .required(grads_bytes, "grads_bytes");
  if (!check.ok()) return check.status();
  *stats_bytes = k::SyncStatsLayout(c).total;
  *grads_bytes = k::sync_grads_bytes(c);
  return BNORM_STATUS_SUCCESS;
}

bnormStatus_t bnormSyncForwardStats(bnormHandle_t handle, cudaStream_t stream,
                                    const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                                    const void* x, void* local_stats, void* workspace,
                                    size_t workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormSyncForwardStats");
  return forward_stats(check, handle, stream, desc, config, x, local_stats, workspace,
                       workspace_bytes);
}

bnormStatus_t bnormSyncForwardApply(bnormHandle_t handle, cudaStream_t stream,
                                    const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                                    int nranks, int rank, int64_t global_n,
                                    const void* gathered_stats, const void* x, void* y,
                                    const float* gamma, const float* beta, float* running_mean,
                                    float* running_var, int64_t* step_count, float* saved_mean,
                                    float* saved_rstd, void* workspace, size_t workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormSyncForwardApply");
  size_t elem = 0, gbytes = 0;
  check.handle(handle).desc(desc, &elem);
  if (!check.ok()) return check.status();
  if (nranks >= 1 && !gathered_bytes(desc->c, nranks, &gbytes))
    return check.fail(BNORM_STATUS_BAD_SHAPE, "nranks * stats_bytes overflows").status();
  const TrainingRequest r{desc,         config,      x,          y,          gamma,
                          beta,         running_mean, running_var, step_count, saved_mean,
                          saved_rstd,   workspace,   workspace_bytes,        gathered_stats,
                          gbytes,       "gathered_stats",          false};
  return forward_apply(check, handle, stream, r, nranks, rank, global_n);
}

bnormStatus_t bnormSyncBackwardGrads(bnormHandle_t handle, cudaStream_t stream,
                                     const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                                     const void* x, const void* dy, const float* saved_mean,
                                     void* local_grads, void* workspace,
                                     size_t workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormSyncBackwardGrads");
  return backward_grads(check, handle, stream, desc, config, x, dy, saved_mean, local_grads,
                        workspace, workspace_bytes);
}

bnormStatus_t bnormSyncBackwardApply(bnormHandle_t handle, cudaStream_t stream,
                                     const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                                     const void* reduced_grads, const void* x, const void* dy,
                                     void* dx, const float* gamma, const float* saved_mean,
                                     const float* saved_rstd, float* dgamma, float* dbeta,
                                     void* workspace, size_t workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormSyncBackwardApply");
  const size_t rbytes = desc && desc->c >= 1 ? k::sync_grads_bytes(desc->c) : 0;
  const BackwardRequest r{desc,       config,          x,             dy,     dx,
                          gamma,      saved_mean,      saved_rstd,    dgamma, dbeta,
                          workspace,  workspace_bytes, reduced_grads, rbytes, "reduced_grads",
                          false};
  return backward_apply(check, handle, stream, r);
}

}  // extern "C"

// bnormForwardTraining and its workspace query.
#include <cuda_runtime_api.h>

#include "checks.h"
#include "nvtx.h"
#include "kernels/launch.h"
#include "plan.h"
#include "requests.h"

using namespace bnorm::host;
namespace k = bnorm::kernels;

namespace bnorm {
namespace host {

Checker& check_global_n(Checker& check, const bnormTensorDesc_t* desc, int64_t global_n) {
  if (!check.ok() || global_n == -1) return check;
  if (global_n < -1)
    return check.fail(BNORM_STATUS_INVALID_VALUE,
                      "argument 'global_n' (%lld) must be -1 (unknown) or the global sample count",
                      (long long)global_n);
  if (global_n < desc->n)
    return check.fail(BNORM_STATUS_BAD_SHAPE,
                      "argument 'global_n' (%lld) is smaller than this rank's desc->n (%lld)",
                      (long long)global_n, (long long)desc->n);
  int64_t m;
  if (__builtin_mul_overflow(global_n, desc->spatial, &m))
    return check.fail(BNORM_STATUS_BAD_SHAPE, "global_n * spatial (%lld * %lld) overflows int64",
                      (long long)global_n, (long long)desc->spatial);
  if (m == 1)
    return check.fail(BNORM_STATUS_BATCH_TOO_SMALL,
                      "global_n * spatial == 1: the variance of one value per channel is undefined");
  return check;
}

bool check_training(Checker& check, bnormHandle_t handle, const TrainingRequest& r,
                    const Batch& batch, k::ForwardTrainingArgs* a) {
  size_t elem = 0;
  Config cfg;
  const bnormTensorDesc_t* desc = r.desc;
  check.handle(handle).desc(desc, &elem).config(r.config, true, &cfg);
  if (!check.ok()) return false;

  const size_t bytes = tensor_bytes(desc, elem);
  const size_t cbytes = size_t(desc->c) * sizeof(float);
  // The synchronized phases run the multi-pass kernels: the exchange sits
  // between the statistics and the normalize.
  const Plan plan = make_plan(*handle, *desc, batch.sync ? BNORM_PATH_MULTI_PASS : cfg.path);
  const size_t ws_total = forward_workspace_bytes(plan);
  // The call writes the first ws_total bytes of the workspace, no more.
  const size_t ws_used = r.workspace_bytes < ws_total ? r.workspace_bytes : ws_total;
  const bool has_data = bytes > 0;
  const bool tracking = r.running_mean || r.running_var;
  const bool cumulative = cfg.average == BNORM_AVERAGE_CUMULATIVE;
  if (has_data) check.required(r.x, "x").required(r.y, "y");
  check.pair(r.running_mean, "running_mean", r.running_var, "running_var")
      .pair(r.saved_mean, "saved_mean", r.saved_rstd, "saved_rstd");
  if (tracking && cumulative) check.required(r.step_count, "step_count");
  check.aligned(r.x, elem, "x").aligned(r.y, elem, "y").aligned(r.gamma, 4, "gamma")
      .aligned(r.beta, 4, "beta").aligned(r.running_mean, 4, "running_mean")
      .aligned(r.running_var, 4, "running_var").aligned(r.saved_mean, 4, "saved_mean")
      .aligned(r.saved_rstd, 4, "saved_rstd");
  if (tracking && cumulative) check.aligned(r.step_count, 8, "step_count");
  const int64_t numel = desc->n * desc->c * desc->spatial;
  const size_t mask_bytes = k::relu_mask_bytes(numel);
  check.epilogue(cfg, Checker::EpilogueRole::Train, bytes, numel, elem);
  // No output may overlap anything else (y == x excepted); the workspace and
  // the mask are written too.
  check.no_overlap({{r.x, bytes, "x", false},
                    {r.y, bytes, "y", true},
                    {r.gamma, cbytes, "gamma", false},
                    {r.beta, cbytes, "beta", false},
                    {r.running_mean, cbytes, "running_mean", true},
                    {r.running_var, cbytes, "running_var", true},
                    {tracking && cumulative ? r.step_count : nullptr, sizeof(int64_t), "step_count", true},
                    {r.saved_mean, cbytes, "saved_mean", true},
                    {r.saved_rstd, cbytes, "saved_rstd", true},
                    {r.workspace, ws_used, "workspace", true},
                    {cfg.residual, bytes, "config->residual", false},
                    {cfg.relu_mask, mask_bytes, "config->relu_mask", true},
                    {r.gathered, r.gathered_bytes, r.gathered_name, r.gathered_written}},
                   {{"y", "x"}, {"y", "config->residual"}});
  if (!check.ok()) return false;

  const int64_t m = desc->n * desc->spatial;
  if (batch.sync) {
    check_global_n(check, desc, batch.global_n);
  } else if (m == 1) {
    check.fail(BNORM_STATUS_BATCH_TOO_SMALL,
               "n * spatial == 1: the variance of one value per channel is undefined");
  }
  check.workspace(r.workspace, r.workspace_bytes, ws_total);
  if (!check.ok()) return false;

  *a = k::ForwardTrainingArgs{};
  a->t = plan.t;
  a->plan = plan.reduce;
  a->x = r.x;
  a->y = r.y;
  a->gamma = r.gamma;
  a->beta = r.beta;
  a->running_mean = r.running_mean;
  a->running_var = r.running_var;
  a->step_count = tracking && cumulative ? r.step_count : nullptr;
  a->saved_mean = r.saved_mean;
  a->saved_rstd = r.saved_rstd;
  a->eps = cfg.eps;
  a->factor = cfg.factor;
  a->workspace = r.workspace;
  a->ep = epilogue_args(cfg, numel);
  return true;
}

}  // namespace host
}  // namespace bnorm

extern "C" {

bnormStatus_t bnormGetForwardTrainingWorkspaceSize(bnormHandle_t handle,
                                                   const bnormTensorDesc_t* desc,
                                                   const bnormConfig_t* config,
                                                   size_t* workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormGetForwardTrainingWorkspaceSize");
  size_t elem = 0;
  Config cfg;
  check.handle(handle).desc(desc, &elem).config(config, false, &cfg)
      .required(workspace_bytes, "workspace_bytes");
  if (!check.ok()) return check.status();
  const Plan plan = make_plan(*handle, *desc, cfg.path);
  *workspace_bytes = forward_workspace_bytes(plan);
  return BNORM_STATUS_SUCCESS;
}

bnormStatus_t bnormGetReluMaskSize(bnormHandle_t handle, const bnormTensorDesc_t* desc,
                                   size_t* mask_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormGetReluMaskSize");
  size_t elem = 0;
  check.handle(handle).desc(desc, &elem).required(mask_bytes, "mask_bytes");
  if (!check.ok()) return check.status();
  *mask_bytes = k::relu_mask_bytes(desc->n * desc->c * desc->spatial);
  return BNORM_STATUS_SUCCESS;
}

bnormStatus_t bnormForwardTraining(bnormHandle_t handle, cudaStream_t stream,
                                   const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                                   const void* x, void* y, const float* gamma, const float* beta,
                                   float* running_mean, float* running_var, int64_t* step_count,
                                   float* saved_mean, float* saved_rstd, void* workspace,
                                   size_t workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormForwardTraining");
  const TrainingRequest r{desc,       config,     x,         y,          gamma,
                          beta,       running_mean, running_var, step_count, saved_mean,
                          saved_rstd, workspace,  workspace_bytes, nullptr, 0, nullptr, false};
  k::ForwardTrainingArgs a;
  if (!check_training(check, handle, r, Batch{false, -1}, &a)) return check.status();
  if (a.t.m() == 0) return BNORM_STATUS_SUCCESS;
  const cudaError_t e = a.plan.single_block ? k::tiny_forward_training(a, stream)
                        : a.plan.persistent ? k::persistent_forward_training(a, stream)
                                            : k::forward_training(a, stream);
  return enqueued(check, e);
}

}  // extern "C"

// bnormForwardTraining and its workspace query.
#include <cuda_runtime_api.h>

#include "checks.h"
#include "nvtx.h"
#include "kernels/launch.h"
#include "plan.h"

using namespace bnorm::host;
namespace k = bnorm::kernels;

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
  size_t elem = 0;
  Config cfg;
  check.handle(handle).desc(desc, &elem).config(config, true, &cfg);
  if (!check.ok()) return check.status();

  const size_t bytes = tensor_bytes(desc, elem);
  const size_t cbytes = size_t(desc->c) * sizeof(float);
  const Plan plan = make_plan(*handle, *desc, cfg.path);
  const size_t ws_total = forward_workspace_bytes(plan);
  // The call writes the first ws_total bytes of the workspace, no more.
  const size_t ws_used = workspace_bytes < ws_total ? workspace_bytes : ws_total;
  const bool has_data = bytes > 0;
  const bool tracking = running_mean || running_var;
  const bool cumulative = cfg.average == BNORM_AVERAGE_CUMULATIVE;
  if (has_data) check.required(x, "x").required(y, "y");
  check.pair(running_mean, "running_mean", running_var, "running_var")
      .pair(saved_mean, "saved_mean", saved_rstd, "saved_rstd");
  if (tracking && cumulative) check.required(step_count, "step_count");
  check.aligned(x, elem, "x").aligned(y, elem, "y").aligned(gamma, 4, "gamma")
      .aligned(beta, 4, "beta").aligned(running_mean, 4, "running_mean")
      .aligned(running_var, 4, "running_var").aligned(saved_mean, 4, "saved_mean")
      .aligned(saved_rstd, 4, "saved_rstd");
  if (tracking && cumulative) check.aligned(step_count, 8, "step_count");
  const int64_t numel = desc->n * desc->c * desc->spatial;
  const size_t mask_bytes = k::relu_mask_bytes(numel);
  check.epilogue(cfg, Checker::EpilogueRole::Train, bytes, numel, elem);
  // No output may overlap anything else (y == x excepted); the workspace and
  // the mask are written too.
  check.no_overlap({{x, bytes, "x", false},
                    {y, bytes, "y", true},
                    {gamma, cbytes, "gamma", false},
                    {beta, cbytes, "beta", false},
                    {running_mean, cbytes, "running_mean", true},
                    {running_var, cbytes, "running_var", true},
                    {tracking && cumulative ? step_count : nullptr, sizeof(int64_t), "step_count", true},
                    {saved_mean, cbytes, "saved_mean", true},
                    {saved_rstd, cbytes, "saved_rstd", true},
                    {workspace, ws_used, "workspace", true},
                    {cfg.residual, bytes, "config->residual", false},
                    {cfg.relu_mask, mask_bytes, "config->relu_mask", true}},
                   {{"y", "x"}, {"y", "config->residual"}});
  if (!check.ok()) return check.status();

  const int64_t m = desc->n * desc->spatial;
  if (m == 1)
    return check.fail(BNORM_STATUS_BATCH_TOO_SMALL,
                      "n * spatial == 1: the variance of one value per channel is undefined")
        .status();
  check.workspace(workspace, workspace_bytes, ws_total);
  if (!check.ok()) return check.status();
  if (m == 0) return BNORM_STATUS_SUCCESS;

  k::ForwardTrainingArgs a{};
  a.t = plan.t;
  a.plan = plan.reduce;
  a.x = x;
  a.y = y;
  a.gamma = gamma;
  a.beta = beta;
  a.running_mean = running_mean;
  a.running_var = running_var;
  a.step_count = tracking && cumulative ? step_count : nullptr;
  a.saved_mean = saved_mean;
  a.saved_rstd = saved_rstd;
  a.eps = cfg.eps;
  a.factor = cfg.factor;
  a.workspace = workspace;
  a.ep = epilogue_args(cfg, numel);
  const cudaError_t e = plan.reduce.single_block ? k::tiny_forward_training(a, stream)
                        : plan.reduce.persistent ? k::persistent_forward_training(a, stream)
                                                 : k::forward_training(a, stream);
  if (e != cudaSuccess)
    return check.fail(BNORM_STATUS_CUDA_ERROR, "kernel launch failed: %s", cudaGetErrorString(e))
        .status();
  return BNORM_STATUS_SUCCESS;
}

}  // extern "C"

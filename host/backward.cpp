// bnormBackward, bnormBackwardFrozen and their workspace queries.
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

bool check_backward(Checker& check, bnormHandle_t handle, const BackwardRequest& r, bool frozen,
                    const Batch& batch, k::BackwardArgs* a) {
  size_t elem = 0;
  Config cfg;
  check.handle(handle).desc(r.desc, &elem).config(r.config, false, &cfg);
  if (!check.ok()) return false;
  const bnormTensorDesc_t* desc = r.desc;
  const size_t bytes = tensor_bytes(desc, elem);
  const size_t cb = size_t(desc->c) * sizeof(float);
  const bool grads = r.dgamma || r.dbeta;
  // The synchronized phases run the multi-pass kernels (the exchange sits
  // between the sums and dx).
  const Plan plan = make_plan(*handle, *desc, batch.sync ? BNORM_PATH_MULTI_PASS : cfg.path,
                              Pass::Backward);
  const size_t ws_total = backward_workspace_bytes(plan, frozen);
  // The call writes the first ws_total bytes of the workspace, no more.
  const size_t ws_used = r.workspace_bytes < ws_total ? r.workspace_bytes : ws_total;
  const char* mean_name = frozen ? "running_mean" : "saved_mean";
  const char* stat_name = frozen ? "running_var" : "saved_rstd";
  if (bytes > 0) {
    // The frozen dx needs only dy; x feeds dgamma and the full gradient.
    if (!frozen || grads) check.required(r.x, "x");
    check.required(r.dy, "dy").required(r.dx, "dx");
  }
  // The synchronized backward needs the global statistics its forward saved.
  if (frozen || batch.sync) check.required(r.mean, mean_name).required(r.stat, stat_name);
  check.pair(r.mean, mean_name, r.stat, stat_name).pair(r.dgamma, "dgamma", r.dbeta, "dbeta");
  check.aligned(r.x, elem, "x").aligned(r.dy, elem, "dy").aligned(r.dx, elem, "dx")
      .aligned(r.gamma, 4, "gamma").aligned(r.mean, 4, mean_name).aligned(r.stat, 4, stat_name)
      .aligned(r.dgamma, 4, "dgamma").aligned(r.dbeta, 4, "dbeta");
  const int64_t numel = desc->n * desc->c * desc->spatial;
  check.epilogue(cfg, Checker::EpilogueRole::Backward, bytes, numel, elem);
  check.no_overlap({{r.x, bytes, "x", false},
                    {r.dy, bytes, "dy", false},
                    {r.dx, bytes, "dx", true},
                    {r.gamma, cb, "gamma", false},
                    {r.mean, cb, mean_name, false},
                    {r.stat, cb, stat_name, false},
                    {r.dgamma, cb, "dgamma", true},
                    {r.dbeta, cb, "dbeta", true},
                    {r.workspace, ws_used, "workspace", true},
                    {cfg.relu_mask, k::relu_mask_bytes(numel), "config->relu_mask", false},
                    {cfg.residual_grad, bytes, "config->residual_grad", true},
                    {r.reduced, r.reduced_bytes, r.reduced_name, r.reduced_written}},
                   {{"dx", "dy"}, {"dx", "x"}, {"config->residual_grad", "dy"}});
  if (!check.ok()) return false;

  const int64_t m = desc->n * desc->spatial;
  if (m == 1 && !frozen && !batch.sync)
    check.fail(BNORM_STATUS_BATCH_TOO_SMALL,
               "n * spatial == 1: batch statistics of one value per channel are undefined");
  check.workspace(r.workspace, r.workspace_bytes, ws_total);
  if (!check.ok()) return false;

  *a = k::BackwardArgs{};
  a->t = plan.t;
  a->plan = plan.reduce;
  a->x = r.x;
  a->dy = r.dy;
  a->dx = r.dx;
  a->gamma = r.gamma;
  a->mean = r.mean;
  a->stat = r.stat;
  a->dgamma = r.dgamma;
  a->dbeta = r.dbeta;
  a->eps = cfg.eps;
  a->frozen = frozen;
  a->workspace = r.workspace;
  a->ep = epilogue_args(cfg, numel);
  return true;
}

}  // namespace host
}  // namespace bnorm

namespace {

bnormStatus_t run_backward(Checker& check, bnormHandle_t handle, cudaStream_t stream,
                           const BackwardRequest& r, bool frozen) {
  k::BackwardArgs a;
  if (!check_backward(check, handle, r, frozen, Batch{false, -1}, &a)) return check.status();
  cudaError_t e = cudaSuccess;
  if (a.t.m() == 0) {
    if (a.dgamma) {
      const size_t cb = size_t(a.t.c) * sizeof(float);
      e = cudaMemsetAsync(a.dgamma, 0, cb, stream);
      if (e == cudaSuccess) e = cudaMemsetAsync(a.dbeta, 0, cb, stream);
    }
  } else {
    e = a.plan.single_block ? k::tiny_backward(a, stream)
        : a.plan.persistent ? k::persistent_backward(a, stream)
                            : k::backward(a, stream);
  }
  return enqueued(check, e);
}

bnormStatus_t workspace_size(const char* call, bnormHandle_t handle,
                             const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                             size_t* workspace_bytes, bool frozen) {
  Checker check(call);
  size_t elem = 0;
  Config cfg;
  check.handle(handle).desc(desc, &elem).config(config, false, &cfg)
      .required(workspace_bytes, "workspace_bytes");
  if (!check.ok()) return check.status();
  const Plan plan = make_plan(*handle, *desc, cfg.path, Pass::Backward);
  *workspace_bytes = backward_workspace_bytes(plan, frozen);
  return BNORM_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

bnormStatus_t bnormGetBackwardWorkspaceSize(bnormHandle_t handle, const bnormTensorDesc_t* desc,
                                            const bnormConfig_t* config,
                                            size_t* workspace_bytes) {
  BNORM_NVTX_RANGE();
  return workspace_size("bnormGetBackwardWorkspaceSize", handle, desc, config, workspace_bytes,
                        false);
}

bnormStatus_t bnormGetBackwardFrozenWorkspaceSize(bnormHandle_t handle,
                                                  const bnormTensorDesc_t* desc,
                                                  const bnormConfig_t* config,
                                                  size_t* workspace_bytes) {
  BNORM_NVTX_RANGE();
  return workspace_size("bnormGetBackwardFrozenWorkspaceSize", handle, desc, config,
                        workspace_bytes, true);
}

bnormStatus_t bnormBackward(bnormHandle_t handle, cudaStream_t stream,
                            const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                            const void* x, const void* dy, void* dx, const float* gamma,
                            const float* saved_mean, const float* saved_rstd, float* dgamma,
                            float* dbeta, void* workspace, size_t workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormBackward");
  const BackwardRequest r{desc,      config,          x,          dy,      dx,
                          gamma,     saved_mean,      saved_rstd, dgamma,  dbeta,
                          workspace, workspace_bytes, nullptr,    0,       nullptr,
                          false};
  return run_backward(check, handle, stream, r, false);
}

bnormStatus_t bnormBackwardFrozen(bnormHandle_t handle, cudaStream_t stream,
                                  const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                                  const void* x, const void* dy, void* dx, const float* gamma,
                                  const float* running_mean, const float* running_var,
                                  float* dgamma, float* dbeta, void* workspace,
                                  size_t workspace_bytes) {
  BNORM_NVTX_RANGE();
  Checker check("bnormBackwardFrozen");
  const BackwardRequest r{desc,      config,          x,           dy,      dx,
                          gamma,     running_mean,    running_var, dgamma,  dbeta,
                          workspace, workspace_bytes, nullptr,     0,       nullptr,
                          false};
  return run_backward(check, handle, stream, r, true);
}

}  // extern "C"

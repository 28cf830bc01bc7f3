// bnormForwardInference and bnormGetInferenceScaleShift.
#include <cuda_runtime_api.h>

#include "checks.h"
#include "nvtx.h"
#include "kernels/launch.h"
#include "plan.h"

using namespace bnorm::host;
namespace k = bnorm::kernels;

extern "C" {

bnormStatus_t bnormForwardInference(bnormHandle_t handle, cudaStream_t stream,
                                    const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                                    const void* x, void* y, const float* gamma,
                                    const float* beta, const float* running_mean,
                                    const float* running_var) {
  BNORM_NVTX_RANGE();
  Checker check("bnormForwardInference");
  size_t elem = 0;
  Config cfg;
  check.handle(handle).desc(desc, &elem).config(config, false, &cfg);
  if (!check.ok()) return check.status();
  const size_t bytes = tensor_bytes(desc, elem);
  if (bytes > 0) check.required(x, "x").required(y, "y");
  check.required(running_mean, "running_mean").required(running_var, "running_var");
  check.aligned(x, elem, "x").aligned(y, elem, "y").aligned(gamma, 4, "gamma")
      .aligned(beta, 4, "beta").aligned(running_mean, 4, "running_mean")
      .aligned(running_var, 4, "running_var");
  const size_t cb = size_t(desc->c) * sizeof(float);
  check.no_overlap({{x, bytes, "x", false},
                    {y, bytes, "y", true},
                    {gamma, cb, "gamma", false},
                    {beta, cb, "beta", false},
                    {running_mean, cb, "running_mean", false},
                    {running_var, cb, "running_var", false}},
                   {{"y", "x"}});
  if (!check.ok()) return check.status();
  if (bytes == 0) return BNORM_STATUS_SUCCESS;

  const Plan plan = make_plan(*handle, *desc, cfg.path);
  k::InferenceArgs a{};
  a.t = plan.t;
  a.plan = plan.reduce;
  a.x = x;
  a.y = y;
  a.gamma = gamma;
  a.beta = beta;
  a.running_mean = running_mean;
  a.running_var = running_var;
  a.eps = cfg.eps;
  const cudaError_t e = k::forward_inference(a, stream);
  if (e != cudaSuccess)
    return check.fail(BNORM_STATUS_CUDA_ERROR, "kernel launch failed: %s", cudaGetErrorString(e))
        .status();
  return BNORM_STATUS_SUCCESS;
}

bnormStatus_t bnormGetInferenceScaleShift(bnormHandle_t handle, cudaStream_t stream, int64_t c,
                                          const bnormConfig_t* config, const float* gamma,
                                          const float* beta, const float* running_mean,
                                          const float* running_var, float* scale, float* shift) {
  BNORM_NVTX_RANGE();
  Checker check("bnormGetInferenceScaleShift");
  Config cfg;
  check.handle(handle).channels(c).config(config, false, &cfg);
  if (!check.ok()) return check.status();
  const size_t cb = size_t(c) * sizeof(float);
  check.required(running_mean, "running_mean").required(running_var, "running_var")
      .required(scale, "scale").required(shift, "shift");
  check.aligned(gamma, 4, "gamma").aligned(beta, 4, "beta")
      .aligned(running_mean, 4, "running_mean").aligned(running_var, 4, "running_var")
      .aligned(scale, 4, "scale").aligned(shift, 4, "shift");
  check.no_overlap({{gamma, cb, "gamma", false},
                    {beta, cb, "beta", false},
                    {running_mean, cb, "running_mean", false},
                    {running_var, cb, "running_var", false},
                    {scale, cb, "scale", true},
                    {shift, cb, "shift", true}});
  if (!check.ok()) return check.status();

  k::ScaleShiftArgs a{};
  a.c = c;
  a.gamma = gamma;
  a.beta = beta;
  a.running_mean = running_mean;
  a.running_var = running_var;
  a.eps = cfg.eps;
  a.scale = scale;
  a.shift = shift;
  const cudaError_t e = k::inference_scale_shift(a, stream);
  if (e != cudaSuccess)
    return check.fail(BNORM_STATUS_CUDA_ERROR, "kernel launch failed: %s", cudaGetErrorString(e))
        .status();
  return BNORM_STATUS_SUCCESS;
}

}  // extern "C"

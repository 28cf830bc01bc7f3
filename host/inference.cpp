// bnormForwardInference, bnormGetInferenceScaleShift and bnormFoldIntoLinear.
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
  const int64_t numel = desc->n * desc->c * desc->spatial;
  check.epilogue(cfg, Checker::EpilogueRole::Infer, bytes, numel, elem);
  check.no_overlap({{x, bytes, "x", false},
                    {y, bytes, "y", true},
                    {gamma, cb, "gamma", false},
                    {beta, cb, "beta", false},
                    {running_mean, cb, "running_mean", false},
                    {running_var, cb, "running_var", false},
                    {cfg.residual, bytes, "config->residual", false},
                    {cfg.relu_mask, k::relu_mask_bytes(numel), "config->relu_mask", true}},
                   {{"y", "x"}, {"y", "config->residual"}});
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
  a.ep = epilogue_args(cfg, numel);
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

bnormStatus_t bnormFoldIntoLinear(bnormHandle_t handle, cudaStream_t stream, int64_t out_features,
                                  int64_t in_features, const bnormConfig_t* config,
                                  const float* gamma, const float* beta,
                                  const float* running_mean, const float* running_var,
                                  float* weight, const float* bias_in, float* bias_out) {
  BNORM_NVTX_RANGE();
  Checker check("bnormFoldIntoLinear");
  Config cfg;
  check.handle(handle).channels(out_features).config(config, false, &cfg);
  if (!check.ok()) return check.status();
  int64_t wn;
  if (in_features < 1)
    return check.fail(BNORM_STATUS_BAD_SHAPE, "argument 'in_features' (%lld) must be at least 1",
                      (long long)in_features)
        .status();
  if (__builtin_mul_overflow(out_features, in_features, &wn) ||
      __builtin_mul_overflow(wn, int64_t(sizeof(float)), &wn))
    return check.fail(BNORM_STATUS_BAD_SHAPE,
                      "out_features * in_features * 4 (%lld * %lld * 4) overflows int64",
                      (long long)out_features, (long long)in_features)
        .status();
  const size_t cb = size_t(out_features) * sizeof(float), wb = size_t(wn);
  check.required(running_mean, "running_mean").required(running_var, "running_var")
      .required(weight, "weight").required(bias_out, "bias_out");
  check.aligned(gamma, 4, "gamma").aligned(beta, 4, "beta")
      .aligned(running_mean, 4, "running_mean").aligned(running_var, 4, "running_var")
      .aligned(weight, 4, "weight").aligned(bias_in, 4, "bias_in").aligned(bias_out, 4, "bias_out");
  check.no_overlap({{gamma, cb, "gamma", false},
                    {beta, cb, "beta", false},
                    {running_mean, cb, "running_mean", false},
                    {running_var, cb, "running_var", false},
                    {bias_in, cb, "bias_in", false},
                    {weight, wb, "weight", true},
                    {bias_out, cb, "bias_out", true}},
                   {{"bias_out", "bias_in"}});
  if (!check.ok()) return check.status();

  k::FoldArgs a{};
  a.out_features = out_features;
  a.in_features = in_features;
  a.gamma = gamma;
  a.beta = beta;
  a.running_mean = running_mean;
  a.running_var = running_var;
  a.eps = cfg.eps;
  a.weight = weight;
  a.bias_in = bias_in;
  a.bias_out = bias_out;
  const cudaError_t e = k::fold_into_linear(a, stream);
  if (e != cudaSuccess)
    return check.fail(BNORM_STATUS_CUDA_ERROR, "kernel launch failed: %s", cudaGetErrorString(e))
        .status();
  return BNORM_STATUS_SUCCESS;
}

}  // extern "C"

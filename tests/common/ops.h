// Each public operation run once on host data: upload, poison every output,
// call, download. Tests compare what comes back with the reference. A
// status other than success is returned, not asserted, so error tests can
// use the same path.
#pragma once

#include <cstdint>
#include <vector>

#include "harness.h"

namespace bt {

// Per-channel inputs; an empty vector means "pass NULL".
struct ChannelParams {
  std::vector<double> gamma, beta;
};

struct TrainRequest {
  std::vector<double> x;  // already rounded to the case's dtype
  ChannelParams p;
  std::vector<double> running_mean, running_var;  // empty: not tracked
  bool save_stats = true;
  bool in_place = false;      // y == x
  int64_t* step = nullptr;    // host value of the step counter, in and out
  // Fused epilogue: cfg.epilogue decides; z is the residual (ADD_RELU).
  std::vector<double> z;      // rounded to the case's dtype
};

struct TrainResult {
  bnormStatus_t status = BNORM_STATUS_SUCCESS;
  std::vector<double> y;
  std::vector<float> saved_mean, saved_rstd, running_mean, running_var;
  std::vector<uint32_t> mask;  // with an epilogue
};

TrainResult forward_training(bnormHandle_t h, const Case& k, const bnormConfig_t& cfg,
                             const TrainRequest& r);

struct InferenceResult {
  bnormStatus_t status = BNORM_STATUS_SUCCESS;
  std::vector<double> y;
};

InferenceResult forward_inference(bnormHandle_t h, const Case& k, const bnormConfig_t& cfg,
                                  const std::vector<double>& x, const ChannelParams& p,
                                  const std::vector<double>& running_mean,
                                  const std::vector<double>& running_var, bool in_place = false);

struct BackwardRequest {
  std::vector<double> x, dy;  // rounded to the case's dtype
  std::vector<double> gamma;  // empty: NULL
  // Full backward: saved mean and rstd (empty: NULL, recompute).
  // Frozen backward: running mean and variance.
  std::vector<double> mean, stat;
  bool want_param_grads = true;
  enum { kSeparate, kDxIsDy, kDxIsX } alias = kSeparate;
  std::vector<uint32_t> mask;  // with an epilogue (cfg.epilogue)
};

struct BackwardResult {
  bnormStatus_t status = BNORM_STATUS_SUCCESS;
  std::vector<double> dx;
  std::vector<double> dz;  // ADD_RELU
  std::vector<float> dgamma, dbeta;
};

BackwardResult backward(bnormHandle_t h, const Case& k, const bnormConfig_t& cfg,
                        const BackwardRequest& r, bool frozen);

// The double-precision reference's answers for the same requests.
struct RefTrain {
  std::vector<double> y, mean, var, rstd, running_mean, running_var;
};
RefTrain ref_forward_training(const Case& k, const bnormConfig_t& cfg, const TrainRequest& r);

struct RefBackward {
  std::vector<double> dx, dgamma, dbeta;
  // sums of |dy| and |dy * xhat| per channel: the scale of the rounding
  // error of dbeta and dgamma.
  std::vector<double> abs_dbeta, abs_dgamma;
  double dx_scale;  // max over channels of |gamma * rstd|
};
RefBackward ref_backward(const Case& k, const bnormConfig_t& cfg, const BackwardRequest& r,
                         bool frozen);

// Standard random parameters for a case.
ChannelParams random_params(int64_t c, uint64_t seed);

}  // namespace bt

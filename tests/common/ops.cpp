#include "ops.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace bt {

namespace {

DeviceBuffer optional_floats(const std::vector<double>& v) {
  return v.empty() ? DeviceBuffer() : upload_floats(v);
}

float* f32_or_null(const DeviceBuffer& b) { return b.bytes() ? b.f32() : nullptr; }

DeviceBuffer poisoned(size_t bytes) {
  DeviceBuffer b(bytes);
  b.poison();
  return b;
}

}  // namespace

ChannelParams random_params(int64_t c, uint64_t seed) {
  ChannelParams p;
  p.gamma = random_floats(size_t(c), seed, 0.5, 1.5);
  p.beta = random_floats(size_t(c), seed + 1, -1.0, 1.0);
  for (size_t i = 0; i < p.gamma.size(); i += 3) p.gamma[i] = -p.gamma[i];  // signs matter
  return p;
}

TrainResult forward_training(bnormHandle_t h, const Case& k, const bnormConfig_t& cfg,
                             const TrainRequest& r) {
  TrainResult out;
  const bnormTensorDesc_t d = k.desc();
  const size_t c = size_t(k.s.c), cb = c * sizeof(float);
  size_t ws_bytes = 0;
  out.status = bnormGetForwardTrainingWorkspaceSize(h, &d, &cfg, &ws_bytes);
  if (out.status != BNORM_STATUS_SUCCESS) return out;

  DeviceBuffer x = upload_tensor(r.x, k.dtype);
  DeviceBuffer y = r.in_place ? DeviceBuffer() : poisoned(x.bytes());
  DeviceBuffer gamma = optional_floats(r.p.gamma), beta = optional_floats(r.p.beta);
  DeviceBuffer rm = optional_floats(r.running_mean), rv = optional_floats(r.running_var);
  DeviceBuffer sm = r.save_stats ? poisoned(cb) : DeviceBuffer();
  DeviceBuffer sr = r.save_stats ? poisoned(cb) : DeviceBuffer();
  DeviceBuffer ws = poisoned(ws_bytes);
  DeviceBuffer step(sizeof(int64_t));
  if (r.step) step.upload(r.step, sizeof(int64_t));
  bnormConfig_t fcfg = cfg;
  DeviceBuffer z, mask;
  if (cfg.epilogue != BNORM_EPILOGUE_NONE) {
    size_t mask_bytes = 0;
    EXPECT_EQ(bnormGetReluMaskSize(h, &d, &mask_bytes), BNORM_STATUS_SUCCESS);
    mask = poisoned(mask_bytes);
    fcfg.relu_mask = mask.get();
    fcfg.relu_mask_bytes = mask_bytes;
    if (cfg.epilogue == BNORM_EPILOGUE_ADD_RELU) {
      z = upload_tensor(r.z, k.dtype);
      fcfg.residual = z.get();
    }
  }

  void* y_ptr = r.in_place ? x.get() : y.get();
  out.status = bnormForwardTraining(h, nullptr, &d, &fcfg, x.get(), y_ptr, f32_or_null(gamma),
                                    f32_or_null(beta), f32_or_null(rm), f32_or_null(rv),
                                    r.step ? static_cast<int64_t*>(step.get()) : nullptr,
                                    f32_or_null(sm), f32_or_null(sr), ws.get(), ws_bytes);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  out.y = decode(r.in_place ? x.download() : y.download(), k.dtype);
  if (sm.bytes()) out.saved_mean = sm.download_f32();
  if (sr.bytes()) out.saved_rstd = sr.download_f32();
  if (rm.bytes()) out.running_mean = rm.download_f32();
  if (rv.bytes()) out.running_var = rv.download_f32();
  if (mask.bytes()) {
    const std::vector<uint8_t> b = mask.download();
    out.mask.resize(b.size() / 4);
    std::memcpy(out.mask.data(), b.data(), b.size());
  }
  if (r.step) {
    std::vector<uint8_t> b = step.download();
    std::memcpy(r.step, b.data(), sizeof(int64_t));
  }
  return out;
}

InferenceResult forward_inference(bnormHandle_t h, const Case& k, const bnormConfig_t& cfg,
                                  const std::vector<double>& xv, const ChannelParams& p,
                                  const std::vector<double>& running_mean,
                                  const std::vector<double>& running_var, bool in_place) {
  InferenceResult out;
  const bnormTensorDesc_t d = k.desc();
  DeviceBuffer x = upload_tensor(xv, k.dtype);
  DeviceBuffer y = in_place ? DeviceBuffer() : poisoned(x.bytes());
  DeviceBuffer gamma = optional_floats(p.gamma), beta = optional_floats(p.beta);
  DeviceBuffer rm = upload_floats(running_mean), rv = upload_floats(running_var);
  void* y_ptr = in_place ? x.get() : y.get();
  out.status = bnormForwardInference(h, nullptr, &d, &cfg, x.get(), y_ptr, f32_or_null(gamma),
                                     f32_or_null(beta), rm.f32(), rv.f32());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  out.y = decode(in_place ? x.download() : y.download(), k.dtype);
  return out;
}

BackwardResult backward(bnormHandle_t h, const Case& k, const bnormConfig_t& cfg,
                        const BackwardRequest& r, bool frozen) {
  BackwardResult out;
  const bnormTensorDesc_t d = k.desc();
  const size_t cb = size_t(k.s.c) * sizeof(float);
  size_t ws_bytes = 0;
  out.status = frozen ? bnormGetBackwardFrozenWorkspaceSize(h, &d, &cfg, &ws_bytes)
                      : bnormGetBackwardWorkspaceSize(h, &d, &cfg, &ws_bytes);
  if (out.status != BNORM_STATUS_SUCCESS) return out;

  DeviceBuffer x = upload_tensor(r.x, k.dtype), dy = upload_tensor(r.dy, k.dtype);
  DeviceBuffer dx = r.alias == BackwardRequest::kSeparate ? poisoned(x.bytes()) : DeviceBuffer();
  DeviceBuffer gamma = optional_floats(r.gamma);
  DeviceBuffer mean = optional_floats(r.mean), stat = optional_floats(r.stat);
  DeviceBuffer dgamma = r.want_param_grads ? poisoned(cb) : DeviceBuffer();
  DeviceBuffer dbeta = r.want_param_grads ? poisoned(cb) : DeviceBuffer();
  DeviceBuffer ws = poisoned(ws_bytes);
  const DeviceBuffer& dx_buf = r.alias == BackwardRequest::kDxIsDy  ? dy
                               : r.alias == BackwardRequest::kDxIsX ? x
                                                                    : dx;
  bnormConfig_t c = cfg;
  DeviceBuffer mask, dz;
  if (cfg.epilogue != BNORM_EPILOGUE_NONE) {
    mask = DeviceBuffer(r.mask.size() * 4);
    mask.upload(r.mask.data(), r.mask.size() * 4);
    c.relu_mask = mask.get();
    c.relu_mask_bytes = mask.bytes();
    if (cfg.epilogue == BNORM_EPILOGUE_ADD_RELU) {
      dz = poisoned(x.bytes());
      c.residual_grad = dz.get();
    }
  }
  const auto call = frozen ? bnormBackwardFrozen : bnormBackward;
  out.status = call(h, nullptr, &d, &c, x.get(), dy.get(), dx_buf.get(), f32_or_null(gamma),
                    f32_or_null(mean), f32_or_null(stat), f32_or_null(dgamma),
                    f32_or_null(dbeta), ws.get(), ws_bytes);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  out.dx = decode(dx_buf.download(), k.dtype);
  if (dz.bytes()) out.dz = decode(dz.download(), k.dtype);
  if (dgamma.bytes()) out.dgamma = dgamma.download_f32();
  if (dbeta.bytes()) out.dbeta = dbeta.download_f32();
  return out;
}

RefTrain ref_forward_training(const Case& k, const bnormConfig_t& cfg, const TrainRequest& r) {
  RefTrain o;
  const bnref_shape sh = k.ref();
  const size_t c = size_t(k.s.c);
  o.y.resize(r.x.size());
  o.mean.resize(c);
  o.var.resize(c);
  o.rstd.resize(c);
  bnref_forward_training(&sh, r.x.data(), r.p.gamma.empty() ? nullptr : r.p.gamma.data(),
                         r.p.beta.empty() ? nullptr : r.p.beta.data(), cfg.eps, o.y.data(),
                         o.mean.data(), o.var.data(), o.rstd.data());
  if (!r.running_mean.empty()) {
    o.running_mean = r.running_mean;
    o.running_var = r.running_var;
    double f = cfg.exponential_average_factor;
    if (cfg.average == BNORM_AVERAGE_CUMULATIVE) f = 1.0 / (1.0 + double(r.step ? *r.step : 0));
    bnref_update_running(k.s.c, k.m(), f, o.mean.data(), o.var.data(), o.running_mean.data(),
                         o.running_var.data());
  }
  return o;
}

RefBackward ref_backward(const Case& k, const bnormConfig_t& cfg, const BackwardRequest& r,
                         bool frozen) {
  RefBackward o;
  const bnref_shape sh = k.ref();
  const size_t c = size_t(k.s.c);
  o.dx.resize(r.x.size());
  o.dgamma.resize(c);
  o.dbeta.resize(c);
  const double* gamma = r.gamma.empty() ? nullptr : r.gamma.data();
  std::vector<double> mean(c), rstd(c);
  if (frozen) {
    bnref_backward_frozen(&sh, r.x.data(), r.dy.data(), gamma, r.mean.data(), r.stat.data(),
                          cfg.eps, o.dx.data(), o.dgamma.data(), o.dbeta.data());
    for (size_t i = 0; i < c; ++i) {
      mean[i] = r.mean[i];
      rstd[i] = 1.0 / std::sqrt(r.stat[i] + cfg.eps);
    }
  } else {
    // The exact batch statistics: the library's saved ones differ from
    // them only by fp32 rounding, which the tolerances cover.
    bnref_batch_stats(&sh, r.x.data(), cfg.eps, mean.data(), nullptr, rstd.data());
    bnref_backward(&sh, r.x.data(), r.dy.data(), gamma, mean.data(), rstd.data(), o.dx.data(),
                   o.dgamma.data(), o.dbeta.data());
  }
  o.abs_dbeta.assign(c, 0.0);
  o.abs_dgamma.assign(c, 0.0);
  o.dx_scale = 0.0;
  for (int64_t i = 0; i < k.s.n; ++i)
    for (int64_t ch = 0; ch < k.s.c; ++ch)
      for (int64_t s = 0; s < k.s.spatial; ++s) {
        const int64_t off = bnref_offset(&sh, i, ch, s);
        o.abs_dbeta[ch] += std::fabs(r.dy[off]);
        o.abs_dgamma[ch] += std::fabs(r.dy[off] * (r.x[off] - mean[ch]) * rstd[ch]);
      }
  for (size_t ch = 0; ch < c; ++ch)
    o.dx_scale = std::max(o.dx_scale, std::fabs((gamma ? gamma[ch] : 1.0) * rstd[ch]));
  return o;
}

}  // namespace bt

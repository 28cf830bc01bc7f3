// What a channel's merged state turns into: the statistics, the running
// averages and the coefficients of the elementwise pass. Shared by the
// multi-block finalize kernels and the single-launch tiny path, so that both
// compute bitwise the same values. Per-channel arithmetic runs in double
// (negligible beside the tensor passes): 1/sqrt as rsqrt, 1/m and m/(m-1)
// from the host, so no device division (its slow path is a call, around
// which ptxas spills).
#pragma once

#include "launch.h"
#include "reduce.cuh"

namespace bnorm {
namespace kernels {

// The per-channel inputs and outputs of a statistics finalize. Fill with
// stats_params() so that the host-computed factors are never forgotten.
struct StatsParams {
  int64_t c, m, splits, pivot_stride;
  const Welford* partials;
  const float* gamma;
  const float* beta;
  float* running_mean;  // NULL: not tracked
  float* running_var;
  int64_t* step_count;  // cumulative mode with tracking, else NULL
  float* saved_mean;    // NULL: not saved
  float* saved_rstd;
  double eps, factor;
  double inv_m, bessel;  // 1/m and m/(m-1), computed on the host (no device division)
  // Workspace arrays for the normalize pass (NULL in the tiny path).
  float *ws_pivot, *ws_scale, *ws_shift, *ws_mean, *ws_rstd;
};

inline void set_counts(StatsParams& p, int64_t m) {
  p.m = m;
  p.inv_m = 1.0 / double(m);
  p.bessel = m > 1 ? double(m) / double(m - 1) : 0.0;
}

// The caller's side of a forward-training finalize; the kernel family fills
// in its partials, splits and workspace arrays.
inline StatsParams stats_params(const ForwardTrainingArgs& a) {
  StatsParams p{};
  p.c = a.t.c;
  set_counts(p, a.t.m());
  p.gamma = a.gamma;
  p.beta = a.beta;
  p.running_mean = a.running_mean;
  p.running_var = a.running_var;
  p.step_count = a.step_count;
  p.saved_mean = a.saved_mean;
  p.saved_rstd = a.saved_rstd;
  p.eps = a.eps;
  p.factor = a.factor;
  return p;
}

// Points p's arrays for the normalize pass at a ForwardWorkspace laid out
// from `base`.
inline void point_at_workspace(StatsParams& p, char* base, const ForwardWorkspace& ws) {
  p.ws_pivot = reinterpret_cast<float*>(base + ws.pivot);
  p.ws_scale = reinterpret_cast<float*>(base + ws.scale);
  p.ws_shift = reinterpret_cast<float*>(base + ws.shift);
  p.ws_mean = reinterpret_cast<float*>(base + ws.mean);
  p.ws_rstd = reinterpret_cast<float*>(base + ws.rstd);
}

// The running averages' factor: 1/(1 + t) in cumulative mode.
__device__ __forceinline__ double average_factor(const StatsParams& p) {
  return p.step_count ? 1.0 / (1.0 + double(*p.step_count)) : p.factor;
}

struct Affine {  // y = scale * (x - pivot) + shift
  float pivot, scale, shift;
};

// The outputs of a channel from its moments: the mean, dmean = mean - pivot
// (given, not recomputed, so that the statistics do not depend on the pivot:
// synchronized ranks normalize against different pivots), the biased
// variance `var` (normalizes) and the unbiased one (running variance).
// `track` false leaves the running statistics as they are (a synchronized
// batch whose global count is below two).
__device__ __forceinline__ Affine finish_moments(double mean, double dmean, double var,
                                                 double unbiased, bool track, float pivot,
                                                 int64_t ch, const StatsParams& p, double f) {
  const double rstd = rsqrt(var + p.eps);
  const double g = p.gamma ? double(p.gamma[ch]) : 1.0;
  const double b = p.beta ? double(p.beta[ch]) : 0.0;
  const float scale = float(g * rstd);
  const Affine a{pivot, scale, float(b - double(scale) * dmean)};
  if (p.ws_pivot) {
    p.ws_pivot[ch] = a.pivot;
    p.ws_scale[ch] = a.scale;
    p.ws_shift[ch] = a.shift;
    p.ws_mean[ch] = float(mean);
    p.ws_rstd[ch] = float(rstd);
  }
  if (p.saved_mean) {
    p.saved_mean[ch] = float(mean);
    p.saved_rstd[ch] = float(rstd);
  }
  if (p.running_mean && track) {
    if (f == 1.0) {  // replace, even if the old value is not finite
      p.running_mean[ch] = float(mean);
      p.running_var[ch] = float(unbiased);
    } else if (f != 0.0) {
      p.running_mean[ch] = float((1.0 - f) * double(p.running_mean[ch]) + f * mean);
      p.running_var[ch] = float((1.0 - f) * double(p.running_var[ch]) + f * unbiased);
    }
  }
  return a;
}

// s: the statistics of x - pivot over the channel's m values.
__device__ __forceinline__ Affine finish_channel(const Welford& s, float pivot, int64_t ch,
                                                 const StatsParams& p, double f) {
  // Never negative; a NaN M2 (a NaN or an infinity among the channel's
  // values) stays NaN, so that rstd, y and the running variance of that
  // channel are NaN, as in PyTorch; `m2 > 0 ? ... : 0` would have turned it
  // into var = 0 and a finite rstd.
  const double var = s.m2 < 0.0f ? 0.0 : double(s.m2) * p.inv_m;
  return finish_moments(double(pivot) + double(s.mean), double(s.mean), var, var * p.bessel, true,
                        pivot, ch, p, f);
}

// dx = a * ((g - mdy) - (x - mean) * k)
struct Coeffs {
  float a, mdy, k, mean;
};

struct GradParams {
  int64_t c, m, splits;
  const Sum2* partials;
  const float* gamma;
  const float* mean;
  const float* stat;  // rstd (full) or running variance (frozen)
  double eps;
  double inv_m;  // 1/m, computed on the host
  bool frozen;
  float* dgamma;  // NULL with dbeta: not returned
  float* dbeta;
  Coeffs* coeffs;
};

inline void set_counts(GradParams& p, int64_t m) {
  p.m = m;
  p.inv_m = 1.0 / double(m);
}

// From the channel's sums of g and g * (x - mean) over m values (inv_m =
// 1/m): writes dgamma and dbeta if asked, returns the coefficients of dx.
__device__ __forceinline__ Coeffs finish_grad_sums(double sum_g, double sum_gx, double inv_m,
                                                   int64_t ch, const GradParams& p) {
  const double rstd = p.frozen ? rsqrt(double(p.stat[ch]) + p.eps) : double(p.stat[ch]);
  const double dgamma = sum_gx * rstd;
  if (p.dgamma) {
    p.dgamma[ch] = float(dgamma);
    p.dbeta[ch] = float(sum_g);
  }
  const double g = p.gamma ? double(p.gamma[ch]) : 1.0;
  return Coeffs{float(g * rstd), float(sum_g * inv_m), float(rstd * dgamma * inv_m), p.mean[ch]};
}

// s: sum g and sum g * (x - mean) over the channel's m values.
__device__ __forceinline__ Coeffs finish_grads(const Sum2& s, int64_t ch, const GradParams& p) {
  return finish_grad_sums(double(s.a), double(s.b), p.inv_m, ch, p);
}

}  // namespace kernels
}  // namespace bnorm

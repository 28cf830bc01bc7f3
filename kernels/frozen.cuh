// The per-channel factor of frozen (running) statistics, shared by forward
// inference, the folding export and the frozen-statistics backward so that
// all three use bitwise the same value:
//   scale = gamma / sqrt(running_var + eps)
// computed in double with rsqrt (within an ulp of double, so the fp32 result
// is the correctly rounded one in all but rare ties): no division, whose
// slow path is a call that makes ptxas spill around it.
#pragma once

#include "portable.cuh"

namespace bnorm {
namespace kernels {

__device__ __forceinline__ double frozen_scale(const float* gamma, const float* running_var,
                                               int64_t ch, double eps) {
  const double g = gamma ? double(gamma[ch]) : 1.0;
  return g * rsqrt(double(running_var[ch]) + eps);
}

}  // namespace kernels
}  // namespace bnorm

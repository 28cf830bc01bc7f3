// The per-channel factor of frozen (running) statistics, shared by forward
// inference, the folding export and the frozen-statistics backward so that
// all three use bitwise the same value:
//   scale = gamma / sqrt(running_var + eps)
// computed in double, where division and sqrt are correctly rounded on the
// GPU and on the emulator alike.
#pragma once

#include "portable.cuh"

namespace bnorm {
namespace kernels {

__device__ __forceinline__ double frozen_scale(const float* gamma, const float* running_var,
                                               int64_t ch, double eps) {
  const double g = gamma ? double(gamma[ch]) : 1.0;
  return g * (1.0 / sqrt(double(running_var[ch]) + eps));
}

}  // namespace kernels
}  // namespace bnorm

// Grid shapes of the reduction and elementwise passes, shared by every
// kernel family so that all passes over a tensor walk it the same way.
#pragma once

#include "apply.cuh"
#include "channel_reduce.cuh"
#include "launch.h"

namespace bnorm {
namespace kernels {

template <int N, class Acc>
void launch_reduce(const Acc& acc, const Tensor& t, const ReducePlan& plan,
                   typename Acc::State* partials, cudaStream_t stream) {
  using S = typename Acc::State;
  const Geometry g = reduce_geometry(t, plan, N);
  if (t.order == Order::ChannelMajor) {
    BNORM_LAUNCH((reduce_channel_major<N, Acc>), dim3(g.grid_x, g.grid_y), g.block_x,
                 (kReduceThreads / 32) * sizeof(S), stream, acc, t.c, t.spatial, t.m(), partials);
  } else {
    BNORM_LAUNCH((reduce_channel_minor<N, Acc>), dim3(g.grid_x, g.grid_y),
                 dim3(g.block_x, g.block_y), size_t(kReduceThreads) * N * sizeof(S), stream, acc,
                 t.c, t.m(), partials);
  }
}

template <int N, class Op>
void launch_apply(const Op& op, const Tensor& t, const ReducePlan& plan, cudaStream_t stream) {
  static_assert(kApplyUnroll == kApplyUnrollVectors, "apply.cuh and launch.h disagree");
  const Geometry g = apply_geometry(t, plan, N);
  if (t.order == Order::ChannelMajor) {
    BNORM_LAUNCH((apply_channel_major<N, Op>), g.grid_x, g.block_x, 0, stream, op, t.numel(),
                 t.spatial, t.c);
  } else {
    BNORM_LAUNCH((apply_channel_minor<N, Op>), dim3(g.grid_x, g.grid_y),
                 dim3(g.block_x, g.block_y), 0, stream, op, t.c, t.m());
  }
}

}  // namespace kernels
}  // namespace bnorm

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
  const unsigned splits = static_cast<unsigned>(plan.splits);
  if (t.order == Order::ChannelMajor) {
    BNORM_LAUNCH((reduce_channel_major<N, Acc>), dim3(unsigned(t.c), splits), kReduceThreads,
                 (kReduceThreads / 32) * sizeof(S), stream, acc, t.c, t.spatial, t.m(), partials);
  } else {
    const MinorShape sh = minor_shape(t.c, N);
    BNORM_LAUNCH((reduce_channel_minor<N, Acc>), dim3(unsigned(sh.col_blocks), splits),
                 dim3(sh.tx, sh.ty), size_t(kReduceThreads) * N * sizeof(S), stream, acc, t.c,
                 t.m(), partials);
  }
}

template <int N, class Op>
void launch_apply(const Op& op, const Tensor& t, const ReducePlan& plan, cudaStream_t stream) {
  const int64_t per_block = int64_t(kApplyThreads) * kApplyUnroll;
  if (t.order == Order::ChannelMajor) {
    const int64_t want = (t.numel() / N + per_block - 1) / per_block;
    const int64_t blocks = want < plan.apply_blocks ? want : plan.apply_blocks;
    BNORM_LAUNCH((apply_channel_major<N, Op>), unsigned(blocks > 0 ? blocks : 1), kApplyThreads,
                 0, stream, op, t.numel(), t.spatial, t.c);
  } else {
    const MinorShape sh = minor_shape(t.c, N);
    const int64_t rows = t.m();
    int64_t row_blocks = (rows + int64_t(sh.ty) * kApplyUnroll - 1) / (int64_t(sh.ty) * kApplyUnroll);
    int64_t cap = plan.apply_blocks / sh.col_blocks;
    if (cap < 1) cap = 1;
    if (cap > 65535) cap = 65535;
    if (row_blocks > cap) row_blocks = cap;
    if (row_blocks < 1) row_blocks = 1;
    BNORM_LAUNCH((apply_channel_minor<N, Op>), dim3(unsigned(sh.col_blocks), unsigned(row_blocks)),
                 dim3(sh.tx, sh.ty), 0, stream, op, t.c, rows);
  }
}

}  // namespace kernels
}  // namespace bnorm

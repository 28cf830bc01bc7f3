#include "plan.h"

#include <algorithm>

namespace bnorm {
namespace host {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

kernels::DType dtype_of(bnormDataType_t d) {
  switch (d) {
    case BNORM_DATA_HALF: return kernels::DType::F16;
    case BNORM_DATA_BFLOAT16: return kernels::DType::BF16;
    default: return kernels::DType::F32;
  }
}

}  // namespace

kernels::EpilogueArgs epilogue_args(const Config& cfg, int64_t numel) {
  kernels::EpilogueArgs e{};
  e.kind = int(cfg.epilogue);
  if (cfg.epilogue == BNORM_EPILOGUE_NONE) return e;
  e.residual = cfg.epilogue == BNORM_EPILOGUE_ADD_RELU ? cfg.residual : nullptr;
  e.residual_grad = cfg.epilogue == BNORM_EPILOGUE_ADD_RELU ? cfg.residual_grad : nullptr;
  e.mask = static_cast<uint32_t*>(cfg.relu_mask);
  e.mask_bytes = kernels::relu_mask_bytes(numel);
  return e;
}

Plan make_plan(const bnormContext& ctx, const bnormTensorDesc_t& d, bnormPath_t path) {
  Plan p;
  p.t.dtype = dtype_of(d.dtype);
  p.t.n = d.n;
  p.t.c = d.c;
  p.t.spatial = d.spatial;
  // With spatial == 1 or c == 1 the two layouts are the same bytes; the
  // channel-minor kernels then read whole rows of channels contiguously.
  const bool major = d.layout == BNORM_LAYOUT_NCHW && d.spatial > 1 && d.c > 1;
  p.t.order = major ? kernels::Order::ChannelMajor : kernels::Order::ChannelMinor;

  // Reductions: about two 256-thread blocks per SM, about what is resident
  // at once, so that each thread runs long and the per-block merge (a tree in
  // shared memory) is paid rarely; eight per SM made NHWC statistics 3x
  // slower than the copy rate on an H100 (bench/NOTES.md). Each thread gets
  // at least one full register tile; splits stay on grid.y.
  const int64_t target_blocks = int64_t(ctx.sm_count) * 2;
  const int64_t m = p.t.m();
  int64_t channel_blocks, useful;
  if (major) {
    channel_blocks = d.c;
    useful = ceil_div(m, int64_t(kernels::kReduceThreads) * kernels::kTile);
  } else {
    const kernels::MinorShape sh = kernels::minor_shape(d.c, kernels::natural_width(p.t.dtype, d.c));
    channel_blocks = sh.col_blocks;
    useful = ceil_div(m, int64_t(sh.ty) * kernels::kTile);
  }
  const int64_t wanted = ceil_div(target_blocks, channel_blocks);
  p.reduce.splits = std::max<int64_t>(1, std::min({wanted, useful, int64_t(ctx.max_grid_y)}));

  // Elementwise passes: grid-stride, about four values per thread, capped at
  // sixteen blocks per SM (enough to cover memory latency).
  const int64_t numel = p.t.numel();
  const int64_t blocks = ceil_div(numel, int64_t(kernels::kApplyThreads) * 4);
  p.reduce.apply_blocks =
      int(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(ctx.sm_count) * 16)));

  // Tiny tensors: one launch instead of three or four saves more than the
  // whole tensor costs to move. A warp per channel walks m values, so m
  // stays small: one register chunk (8 values per lane) per pass.
  constexpr int64_t kTinyElements = 16384, kTinyM = 256;
  // The single-block kernels index a channel with 32-bit arithmetic: beyond
  // that the multi-pass kernels run even when asked for the single block.
  const bool fits32 = m < (int64_t(1) << 32);
  p.reduce.single_block =
      fits32 && (path == BNORM_PATH_SINGLE_BLOCK ||
                 (path == BNORM_PATH_AUTO && numel <= kTinyElements && m <= kTinyM));
  return p;
}

}  // namespace host
}  // namespace bnorm

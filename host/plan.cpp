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

Plan make_plan(const bnormContext& ctx, const bnormTensorDesc_t& d, bnormPath_t path,
               Pass pass) {
  Plan p{};
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

  // Persistent: one cooperative launch that reads x (and dy) once instead
  // of twice (forward: 2 bytes moved per element-byte instead of 3;
  // backward: 3 instead of 5), when the whole tensor fits on chip: in the
  // registers (launch.h: 32 values of x a thread forward, 16 each of x and
  // dy backward) and, past them, in a stage of raw activations in shared
  // memory, as few staged vectors as make the grid resident at once
  // (persist_fit: blocks per SM by registers, asked at bnormCreate, and by
  // the stage's shared memory). On an H100 (132 SMs, 228 KB of shared
  // memory an SM; the kernels are built for 2 resident blocks, 3 for the
  // register-only backward: persistent.cu) that is about 14.6 M values of
  // fp16 forward, 8.9 M of fp32, 7.6 M of fp16 backward, against 2.2 M and
  // 1.6 M in registers alone (bench/NOTES.md). Beyond that a block would
  // wait at the grid-wide barrier for one that cannot start: a cooperative
  // launch refuses such a grid, so the multi-pass kernels run.
  // Past that, the hybrid (launch.h): the grid keeps all it can on chip and
  // each thread re-reads the rest of its slice after the barrier, last read
  // first, so that part of the second read comes from L2. Against the
  // multi-pass kernels it saves the second read of what stays on chip and
  // two or three launches, and costs nothing in bytes; but a resident grid
  // of one or two blocks an SM streams with fewer warps than they have, so
  // AUTO takes it only while at least half of each slice stays on chip (up
  // to about 29 M values fp16 forward on an H100, twice the above), and
  // BNORM_PATH_PERSISTENT at any size (up to kPersistMaxVectors a thread).
  // Neither is measured yet (bench/NOTES.md, 2026-12-03, fourth session).
  // Never for tiny tensors in AUTO: one launch of one block (above) beats a
  // cooperative grid there. Planned at the natural vector width; the
  // launcher fits again at the width the pointers allow.
  const bool backward = pass == Pass::Backward;
  const int dt = int(p.t.dtype);
  kernels::PersistLimits& lim = p.reduce.persist;
  lim.sm_count = ctx.sm_count;
  lim.blocks = ctx.cooperative ? ctx.persist_blocks[backward][0][dt] : 0;
  lim.blocks_staged = ctx.cooperative ? ctx.persist_blocks[backward][1][dt] : 0;
  lim.shared_per_sm = ctx.shared_per_sm;
  lim.shared_reserved = ctx.shared_reserved;
  lim.shared_per_block = ctx.shared_per_block_optin;
  lim.stream = path == BNORM_PATH_PERSISTENT ? kernels::PersistStream::All
               : path == BNORM_PATH_AUTO     ? kernels::PersistStream::Half
                                             : kernels::PersistStream::None;
  const int width = kernels::natural_width(p.t.dtype, major ? d.spatial : d.c);
  const bool fits = kernels::persist_fit(p.t, width, backward, lim).fits;
  p.reduce.persistent = fits && !p.reduce.single_block &&
                        (path == BNORM_PATH_PERSISTENT || path == BNORM_PATH_AUTO);
  if (p.reduce.persistent) {
    const size_t state = (backward ? 2 : 3) * sizeof(float);  // Sum2 / Welford
    for (int w = width; w >= 1; w /= 2) {
      const kernels::PersistFit f = kernels::persist_fit(p.t, w, backward, lim);
      if (f.fits)
        p.persist_workspace =
            std::max(p.persist_workspace, kernels::persist_workspace(d.c, f.g.splits, state));
    }
  }
  return p;
}

size_t forward_workspace_bytes(const Plan& plan) {
  return std::max(kernels::ForwardWorkspace(plan.t.c, plan.reduce.splits).total,
                  plan.persist_workspace);
}

size_t backward_workspace_bytes(const Plan& plan, bool frozen) {
  const size_t multi = kernels::BackwardWorkspace(plan.t.c, plan.reduce.splits, !frozen).total;
  // Frozen statistics never take the persistent kernels.
  return frozen ? multi : std::max(multi, plan.persist_workspace);
}

}  // namespace host
}  // namespace bnorm

// Index and grid arithmetic at extents near and beyond 2^31 and 2^32,
// without allocating such tensors: the host's planning (host/plan.cpp), the
// launch geometry and workspace layouts (kernels/launch.h), and the cursors
// and per-value index the kernels walk tensors with (kernels/layout.cuh,
// compiled here for the CPU under the emulator's device header, the way the
// emulated build compiles every kernel), each against the plain 64-bit
// formula it replaces.
#include "emu_device.h"  // first: __device__ and friends, as in the emulated build

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "host/plan.h"
#include "kernels/launch.h"
#include "kernels/layout.cuh"

namespace {

namespace k = bnorm::kernels;
using bnorm::host::make_plan;

constexpr int64_t k2p31 = int64_t(1) << 31;
constexpr int64_t k2p32 = int64_t(1) << 32;
// CUDA's grid limits (every device since compute capability 3.0).
constexpr int64_t kMaxGridX = k2p31 - 1;
constexpr int64_t kMaxGridY = 65535;

bnormContext device(int sm_count) {
  bnormContext c{};
  c.sm_count = sm_count;
  c.cc_major = 9;
  c.max_grid_y = 65535;
  std::strcpy(c.name, "a planned device");
  return c;
}

std::string str(const bnormTensorDesc_t& d) {
  return std::string(d.layout == BNORM_LAYOUT_NHWC ? "NHWC" : "NCHW") + " dtype " +
         std::to_string(int(d.dtype)) + " n " + std::to_string(d.n) + " c " + std::to_string(d.c) +
         " spatial " + std::to_string(d.spatial);
}

// Valid descriptors whose products pass 2^31 and 2^32 (in elements, values
// per channel, or channels), up to the largest the API takes.
std::vector<bnormTensorDesc_t> huge_descs() {
  std::vector<bnormTensorDesc_t> out;
  const int64_t shapes[][3] = {
      {k2p31 + 5, 1, 1},          // m > 2^31, one channel
      {1, 1, k2p32 + 3},          // one sample of > 2^32 values
      {3, 2, k2p32 - 1},          // m just below 2^32 times 3
      {k2p32 + 1, 3, 1},          // spatial 1, m > 2^32
      {1 << 20, 1 << 11, 1},      // 2^31 elements, 2048 channels
      {256, 64, 147456},          // bench's largest: 2.4e9 elements
      {4, k2p31 - 1, 1},          // the most channels
      {2, k2p31 - 1, 3},
      {1, 70000, 40000},          // more channels than grid.y allows
      {int64_t(1) << 40, 3, 7},   // 2.3e13 elements
      {int64_t(1) << 58, 1, 7},   // near the 2^63-byte limit for 2-byte types
  };
  for (auto& s : shapes)
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC})
      for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF}) {
        const int64_t eb = t == BNORM_DATA_FLOAT ? 4 : 2;
        int64_t p;
        if (__builtin_mul_overflow(s[0], s[1], &p) || __builtin_mul_overflow(p, s[2], &p) ||
            __builtin_mul_overflow(p, eb, &p))
          continue;  // not a valid descriptor
        out.push_back({t, l, s[0], s[1], s[2]});
      }
  return out;
}

TEST(HugePlans, GridsStayWithinCudaLimitsAndCoverTheTensor) {
  const std::vector<bnormTensorDesc_t> descs = huge_descs();
  ASSERT_GE(descs.size(), 30u);
  for (int sms : {1, 8, 132, 1024}) {
    const bnormContext ctx = device(sms);
    for (const bnormTensorDesc_t& d : descs) {
      for (bnormPath_t path : {BNORM_PATH_AUTO, BNORM_PATH_MULTI_PASS}) {
        SCOPED_TRACE(str(d) + ", " + std::to_string(sms) + " SMs, path " + std::to_string(path));
        const bnorm::host::Plan p = make_plan(ctx, d, path);
        EXPECT_EQ(p.t.m(), d.n * d.spatial);
        EXPECT_EQ(p.t.numel(), d.n * d.c * d.spatial);
        EXPECT_FALSE(p.reduce.single_block) << "a huge tensor on the one-block path";
        ASSERT_GE(p.reduce.splits, 1);
        EXPECT_LE(p.reduce.splits, kMaxGridY);
        EXPECT_GE(p.reduce.apply_blocks, 1);
        EXPECT_LE(p.reduce.apply_blocks, sms * 16);
        const bool major = p.t.order == k::Order::ChannelMajor;
        EXPECT_EQ(major, d.layout == BNORM_LAYOUT_NCHW && d.spatial > 1 && d.c > 1);
        const int natural = k::natural_width(p.t.dtype, major ? d.spatial : d.c);
        for (int n : {1, natural}) {
          const k::Geometry r = k::reduce_geometry(p.t, p.reduce, n);
          const k::Geometry a = k::apply_geometry(p.t, p.reduce, n);
          for (const k::Geometry& g : {r, a}) {
            EXPECT_GE(g.grid_x, 1u);
            EXPECT_LE(int64_t(g.grid_x), kMaxGridX);
            EXPECT_GE(g.grid_y, 1u);
            EXPECT_LE(int64_t(g.grid_y), kMaxGridY);
            EXPECT_LE(g.block_x * g.block_y, 1024u);
          }
          EXPECT_EQ(r.block_x * r.block_y, unsigned(k::kReduceThreads));
          // Every channel has a reduction block: major, one per channel;
          // minor, blocks of block_x vectors of n channels.
          if (major) {
            EXPECT_EQ(int64_t(r.grid_x), d.c);
          } else {
            EXPECT_GE(int64_t(r.grid_x) * r.block_x * n, d.c);
            EXPECT_LT((int64_t(r.grid_x) - 1) * r.block_x * n, d.c);
          }
          // The elementwise minor pass covers the channels the same way.
          if (!major) {
            EXPECT_EQ(a.grid_x, r.grid_x);
          }
        }
        // The workspace holds every (split, channel) partial: no wrap-around.
        const k::ForwardWorkspace fw(d.c, p.reduce.splits);
        const k::BackwardWorkspace bw(d.c, p.reduce.splits, true);
        const double partials = double(p.reduce.splits) * double(d.c) * 12.0;
        EXPECT_GE(double(fw.total), partials + 5.0 * 4.0 * double(d.c));
        EXPECT_LT(double(fw.total), partials + 5.0 * 4.0 * double(d.c) + 6 * 16.0);
        EXPECT_GE(double(bw.total), double(p.reduce.splits) * double(d.c) * 8.0 + 16.0 * double(d.c) +
                                        double(fw.total));
        for (size_t off : {fw.pivot, fw.scale, fw.shift, fw.mean, fw.rstd, fw.total, bw.coeffs,
                           bw.forward, bw.total})
          EXPECT_EQ(off % 16, 0u);
      }
    }
  }
}

// An H100's persistent limits (132 SMs, 228 KB of shared memory an SM, 1 KB
// reserved a block, 227 KB a block at most) with the blocks an SM the
// kernels are built for (persistent.cu): forward 2 either way, backward 3
// with registers alone and 2 staging.
bnormContext persistent_device() {
  bnormContext ctx = device(132);
  ctx.cooperative = true;
  ctx.shared_per_sm = 228 * 1024;
  ctx.shared_reserved = 1024;
  ctx.shared_per_block_optin = 227 * 1024;
  for (int t = 0; t < 3; ++t) {
    ctx.persist_blocks[0][0][t] = ctx.persist_blocks[0][1][t] = 2;
    ctx.persist_blocks[1][0][t] = 3;
    ctx.persist_blocks[1][1][t] = 2;
  }
  return ctx;
}

k::Tensor tensor_of(const bnormTensorDesc_t& d) {
  const k::DType dt = d.dtype == BNORM_DATA_FLOAT  ? k::DType::F32
                      : d.dtype == BNORM_DATA_HALF ? k::DType::F16
                                                   : k::DType::BF16;
  const bool minor = d.layout == BNORM_LAYOUT_NHWC;
  return {dt, minor ? k::Order::ChannelMinor : k::Order::ChannelMajor, d.n, d.c, d.spatial};
}

// The persistent path is planned only where its grid fits what the device
// holds resident (blocks per SM x SMs, with the stage's shared memory and,
// past it, streamed vectors: in AUTO at most as many as stay on chip),
// never for tiny tensors in AUTO, never without cooperative launches, and
// never overflows on huge extents.
TEST(HugePlans, PersistentOnlyWhereTheGridIsResident) {
  const bnormContext ctx = persistent_device();
  using bnorm::host::Pass;
  // 2^17 x 8 fp16 (the bench's spatial-1 case): 1 M values, in registers
  // alone: 128 blocks of 8192 forward (<= 264), 256 of 4096 backward (<= 396).
  const bnormTensorDesc_t fits = {BNORM_DATA_HALF, BNORM_LAYOUT_NHWC, 131072, 8, 1};
  for (bnormPath_t path : {BNORM_PATH_AUTO, BNORM_PATH_PERSISTENT}) {
    const bnorm::host::Plan f = make_plan(ctx, fits, path, Pass::Forward);
    const bnorm::host::Plan b = make_plan(ctx, fits, path, Pass::Backward);
    EXPECT_TRUE(f.reduce.persistent && b.reduce.persistent) << path;
    const k::PersistFit ff = k::persist_fit(tensor_of(fits), 8, false, f.reduce.persist);
    const k::PersistFit bf = k::persist_fit(tensor_of(fits), 8, true, b.reduce.persist);
    EXPECT_EQ(ff.staged, 0);
    EXPECT_EQ(ff.g.grid, 128);
    EXPECT_EQ(bf.staged, 0);
    EXPECT_EQ(bf.g.grid, 256);
    EXPECT_GE(bnorm::host::forward_workspace_bytes(f), size_t(128) * 8 * 12);
    EXPECT_GE(bnorm::host::backward_workspace_bytes(b, false), size_t(256) * 8 * 8);
  }
  EXPECT_FALSE(make_plan(ctx, fits, BNORM_PATH_MULTI_PASS).reduce.persistent);
  // BatchNorm1d 8192 x 1024 fp16 (8.4 M values): past the registers (2.2 M
  // forward), held with a stage of shared memory forward; backward (two
  // tensors on chip, 7.6 M values at most) streams the rest (the hybrid).
  const bnormTensorDesc_t staged = {BNORM_DATA_HALF, BNORM_LAYOUT_NHWC, 8192, 1024, 1};
  const bnorm::host::Plan sf = make_plan(ctx, staged, BNORM_PATH_AUTO, Pass::Forward);
  EXPECT_TRUE(sf.reduce.persistent);
  const k::PersistFit sfit = k::persist_fit(tensor_of(staged), 8, false, sf.reduce.persist);
  EXPECT_TRUE(sfit.fits);
  EXPECT_GT(sfit.staged, 0);
  EXPECT_LE(sfit.g.grid, 2 * 132);
  EXPECT_LE(sfit.shared, size_t(227 * 1024));
  EXPECT_GE(bnorm::host::forward_workspace_bytes(sf), size_t(sfit.g.splits) * 1024 * 12);
  EXPECT_EQ(sfit.streamed, 0);
  const bnorm::host::Plan sb = make_plan(ctx, staged, BNORM_PATH_AUTO, Pass::Backward);
  EXPECT_TRUE(sb.reduce.persistent);
  const k::PersistFit sbfit = k::persist_fit(tensor_of(staged), 8, true, sb.reduce.persist);
  EXPECT_TRUE(sbfit.fits);
  EXPECT_GT(sbfit.staged, 0);
  EXPECT_GT(sbfit.streamed, 0);
  EXPECT_LE(sbfit.streamed, k::kPersistBackwardValues / 8 + sbfit.staged) << "half on chip";
  EXPECT_LE(sbfit.g.grid, 2 * 132);
  EXPECT_FALSE(make_plan(ctx, staged, BNORM_PATH_MULTI_PASS, Pass::Backward).reduce.persistent);
  // Without the shared memory attributes, registers alone.
  bnormContext no_shared = ctx;
  no_shared.shared_per_sm = no_shared.shared_per_block_optin = 0;
  EXPECT_FALSE(make_plan(no_shared, staged, BNORM_PATH_AUTO, Pass::Forward).reduce.persistent);
  EXPECT_TRUE(make_plan(no_shared, fits, BNORM_PATH_AUTO, Pass::Forward).reduce.persistent);
  // ResNet-50's 256 x 64 x 56x56 (51 M values), more than half off chip:
  // multi-pass in AUTO, the hybrid when asked for.
  const bnormTensorDesc_t big = {BNORM_DATA_HALF, BNORM_LAYOUT_NHWC, 256, 64, 3136};
  EXPECT_FALSE(make_plan(ctx, big, BNORM_PATH_AUTO).reduce.persistent);
  const bnorm::host::Plan bp = make_plan(ctx, big, BNORM_PATH_PERSISTENT);
  EXPECT_TRUE(bp.reduce.persistent);
  const k::PersistFit bpfit = k::persist_fit(tensor_of(big), 8, false, bp.reduce.persist);
  EXPECT_GT(bpfit.streamed, k::kPersistForwardValues / 8 + bpfit.staged);
  EXPECT_LE(bpfit.g.grid, 2 * 132);
  EXPECT_GE(bnorm::host::forward_workspace_bytes(bp), size_t(bpfit.g.splits) * 8 * 12);
  // Tiny: the single block in AUTO; persistent only when asked for.
  const bnormTensorDesc_t tiny = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 2, 16, 64};
  EXPECT_TRUE(make_plan(ctx, tiny, BNORM_PATH_AUTO).reduce.single_block);
  EXPECT_FALSE(make_plan(ctx, tiny, BNORM_PATH_AUTO).reduce.persistent);
  EXPECT_TRUE(make_plan(ctx, tiny, BNORM_PATH_PERSISTENT).reduce.persistent);
  // No cooperative launch, or no occupancy: never.
  bnormContext plain = ctx;
  plain.cooperative = false;
  EXPECT_FALSE(make_plan(plain, fits, BNORM_PATH_PERSISTENT).reduce.persistent);
  EXPECT_FALSE(make_plan(plain, staged, BNORM_PATH_PERSISTENT).reduce.persistent);
  plain = ctx;
  plain.persist_blocks[0][0][int(k::DType::F16)] = plain.persist_blocks[0][1][int(k::DType::F16)] = 0;
  EXPECT_FALSE(make_plan(plain, fits, BNORM_PATH_PERSISTENT).reduce.persistent);
  EXPECT_FALSE(make_plan(plain, staged, BNORM_PATH_PERSISTENT).reduce.persistent);
  // Huge extents: never in AUTO (far more than half off chip); asked for,
  // only with a resident grid whose slices cover the tensor, at most
  // kPersistMaxVectors a thread.
  int planned = 0;
  for (const bnormTensorDesc_t& d : huge_descs())
    for (Pass pass : {Pass::Forward, Pass::Backward}) {
      EXPECT_FALSE(make_plan(ctx, d, BNORM_PATH_AUTO, pass).reduce.persistent) << str(d);
      const bnorm::host::Plan p = make_plan(ctx, d, BNORM_PATH_PERSISTENT, pass);
      if (!p.reduce.persistent) continue;
      ++planned;
      const bool backward = pass == Pass::Backward;
      const k::Tensor t = p.t;  // the plan's memory order (NCHW with spatial 1 is channel-minor)
      const int n = k::natural_width(t.dtype, t.order == k::Order::ChannelMajor ? d.spatial : d.c);
      const k::PersistFit f = k::persist_fit(t, n, backward, p.reduce.persist);
      ASSERT_TRUE(f.fits) << str(d);
      EXPECT_LE(f.g.vectors, k::kPersistMaxVectors) << str(d);
      EXPECT_LE(f.g.grid, int64_t(2) * 132) << str(d);
      const int64_t m = t.m();
      if (t.order == k::Order::ChannelMajor)
        EXPECT_GE(f.g.splits * 32 * f.g.vectors, m / n) << str(d) << " covers the channel";
      else
        EXPECT_GE(f.g.splits * f.g.block_y * f.g.vectors, m) << str(d) << " covers the rows";
    }
  EXPECT_GT(planned, 0) << "some huge tensor fits the hybrid";
}

TEST(HugePlans, TinyPathOnlyForTinyTensors) {
  const bnormContext ctx = device(132);
  // The automatic choice takes the one-block path only for <= 16384
  // elements and <= 256 values per channel: never for a product that
  // overflows 32 bits in any factor.
  for (const bnormTensorDesc_t& d : huge_descs())
    EXPECT_FALSE(make_plan(ctx, d, BNORM_PATH_AUTO).reduce.single_block) << str(d);
  const bnormTensorDesc_t small = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 4, 16, 64};
  EXPECT_TRUE(make_plan(ctx, small, BNORM_PATH_AUTO).reduce.single_block);
  // Asked for, the one-block path is taken up to m = 2^32 - 1 values per
  // channel (see SingleBlockIsNeverPlannedPast2To32ValuesPerChannel).
  const bnormTensorDesc_t forced = {BNORM_DATA_HALF, BNORM_LAYOUT_NHWC, k2p32 - 1, 2, 1};
  EXPECT_TRUE(make_plan(ctx, forced, BNORM_PATH_SINGLE_BLOCK).reduce.single_block);
}

// ---- the cursors ---------------------------------------------------------------------------

// FlatCursor against (i / inner) % c and i % inner, stepping forward from i0
// and backward from the last index, at strides and extents past 2^32.
TEST(HugeCursors, FlatCursorMatchesDivision) {
  const int64_t inners[] = {1, 3, 49, k2p31 - 1, k2p31 + 7, k2p32 + 3, 5000000011};
  const int64_t cs[] = {1, 2, 37, 65536, k2p31 - 1};
  const int64_t strides[] = {1, 256 * 132 * 16, k2p31 + 1, k2p32 - 1, 3 * k2p32 + 5};
  int checked = 0;
  for (int64_t inner : inners)
    for (int64_t c : cs) {
      // A tensor of about 2^40..2^62 flat indices of this (inner, c).
      int64_t numel;
      if (__builtin_mul_overflow(inner, c, &numel) ||
          __builtin_mul_overflow(numel, int64_t(1000), &numel))
        numel = int64_t(1) << 62;
      for (int64_t stride : strides) {
        SCOPED_TRACE("inner " + std::to_string(inner) + " c " + std::to_string(c) + " stride " +
                     std::to_string(stride));
        for (int64_t i0 : {int64_t(0), int64_t(12345), numel / 2 + 17}) {
          k::FlatCursor cur(i0, stride, inner, c);
          for (int step = 0; step < 300 && cur.i < numel; ++step, cur.advance()) {
            ASSERT_EQ(cur.i, i0 + step * stride);
            ASSERT_EQ(cur.pos, cur.i % inner) << "step " << step;
            ASSERT_EQ(cur.ch, (cur.i / inner) % c) << "step " << step;
            ++checked;
          }
        }
        // Backwards from the last index, as the elementwise pass walks.
        k::FlatCursor cur(numel - 1, stride, inner, c);
        for (int step = 0; step < 300 && cur.i >= 0; ++step, cur.retreat()) {
          ASSERT_EQ(cur.pos, cur.i % inner) << "step " << step;
          ASSERT_EQ(cur.ch, (cur.i / inner) % c) << "step " << step;
          ++checked;
        }
      }
    }
  EXPECT_GT(checked, 50000);
}

// ChannelRunCursor: value j of channel ch of a ChannelMajor tensor is at
// (j / spatial) * c * spatial + ch * spatial + j % spatial.
TEST(HugeCursors, ChannelRunCursorMatchesDivision) {
  const int64_t spatials[] = {1, 7, 3136, k2p31 - 1, k2p31 + 1, k2p32 + 9};
  const int64_t cs[] = {1, 3, 2048, k2p31 - 1};
  int checked = 0;
  for (int64_t spatial : spatials)
    for (int64_t c : cs) {
      int64_t row;
      if (__builtin_mul_overflow(spatial, c, &row) || row > (int64_t(1) << 50)) continue;
      const int64_t n = (int64_t(1) << 52) / row;  // offsets up to 2^52
      const int64_t m = n * spatial;
      for (int64_t stride : {int64_t(256), int64_t(256) * 65535, k2p32 + 1}) {
        for (int64_t ch : {int64_t(0), c / 2, c - 1}) {
          for (int64_t j0 : {int64_t(0), int64_t(255), m / 3}) {
            k::ChannelRunCursor cur(j0, stride, spatial, c, ch);
            int64_t j = j0;
            for (int step = 0; step < 200 && j < m; ++step, j += stride, cur.advance()) {
              ASSERT_EQ(cur.offset(), (j / spatial) * c * spatial + ch * spatial + j % spatial)
                  << "spatial " << spatial << " c " << c << " ch " << ch << " j " << j;
              ++checked;
            }
            // Backwards from j0, as the persistent kernels re-read a
            // thread's streamed vectors.
            k::ChannelRunCursor back(j0, stride, spatial, c, ch);
            for (int64_t jb = j0, step = 0; step < 200 && jb >= 0;
                 ++step, jb -= stride, back.retreat()) {
              ASSERT_EQ(back.offset(), (jb / spatial) * c * spatial + ch * spatial + jb % spatial)
                  << "spatial " << spatial << " c " << c << " ch " << ch << " j " << jb;
              ++checked;
            }
          }
        }
      }
    }
  EXPECT_GT(checked, 10000);
}

// The single-block path's index is one 32-bit division, right up to
// m = 2^32 - 1; past that the planner never takes the single-block path,
// even when the caller asks for it.
TEST(HugeCursors, ChannelIndexUpTo2To32) {
  int checked = 0;
  for (int64_t m : {k2p32 - 1, k2p31 + 3, k2p31 - 1}) {
    for (int64_t spatial : {int64_t(1), int64_t(3), int64_t(65535), m}) {
      if (m % spatial) continue;
      const int64_t n = m / spatial;
      for (int64_t c : {int64_t(1), int64_t(5), int64_t(1000)}) {
        for (bool major : {true, false}) {
          k::Tensor t{k::DType::F16, major ? k::Order::ChannelMajor : k::Order::ChannelMinor,
                      n, c, spatial};
          const k::ChannelIndex at = k::channel_index(t);
          for (int64_t ch : {int64_t(0), c - 1}) {
            for (int64_t j : {int64_t(0), spatial - 1, spatial, m / 2, m - 2, m - 1}) {
              if (j < 0 || j >= m) continue;
              const int64_t want = major ? ((j / spatial) * c + ch) * spatial + j % spatial
                                         : j * c + ch;
              ASSERT_EQ(at(ch, j), want) << "m " << m << " spatial " << spatial << " c " << c
                                         << " ch " << ch << " j " << j;
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(HugePlans, SingleBlockIsNeverPlannedPast2To32ValuesPerChannel) {
  const bnormContext ctx = device(132);
  for (int64_t m : {k2p32 - 1, k2p32, k2p32 + 5}) {
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC}) {
      const bnormTensorDesc_t d{BNORM_DATA_HALF, l, m, 1, 1};
      const bnorm::host::Plan p = make_plan(ctx, d, BNORM_PATH_SINGLE_BLOCK);
      EXPECT_EQ(p.reduce.single_block, m < k2p32) << "m " << m;
    }
  }
}

}  // namespace

// persist_fit (kernels/launch.h): where the persistent kernels' grid is
// resident, and with how small a stage of shared memory. Checked against a
// brute force over every stage size, each judged by the occupancy rule a GPU
// applies to a launch (blocks an SM = the fewest of what the registers and
// threads allow and floor(shared_per_sm / (dynamic shared + reserve)),
// dynamic shared at most the opt-in limit), on an H100's limits and the
// emulator's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/launch.h"

namespace {

namespace k = bnorm::kernels;

struct Device {
  const char* name;
  k::PersistLimits forward, backward;
};

std::vector<Device> devices() {
  // An H100 SXM (132 SMs, 228 KB an SM, 1 KB reserved a block, 227 KB a
  // block) with the blocks an SM the kernels are built for; the emulator
  // (8 SMs, 8 blocks an SM); a device with a quarter of the shared memory.
  const k::PersistLimits h100f{132, 2, 2, 233472, 1024, 232448, k::PersistStream::None};
  k::PersistLimits h100b = h100f;
  h100b.blocks = 3;
  const k::PersistLimits emu{8, 8, 8, 233472, 1024, 232448, k::PersistStream::None};
  const k::PersistLimits small{20, 4, 3, 65536, 1024, 49152, k::PersistStream::None};
  return {{"H100", h100f, h100b}, {"emulator", emu, emu}, {"small", small, small}};
}

// Whether a grid with `staged` vectors a thread is resident at once.
bool resident(const k::Tensor& t, int n, bool backward, const k::PersistLimits& lim, int staged) {
  const int values = backward ? k::kPersistBackwardValues : k::kPersistForwardValues;
  const int64_t grid = k::persist_geometry(t, n, values, staged).grid;
  if (staged == 0) return lim.blocks > 0 && grid <= int64_t(lim.blocks) * lim.sm_count;
  const int64_t shared =
      int64_t(k::persist_scratch_bytes(t.order == k::Order::ChannelMajor, n, backward)) +
      int64_t(staged) * int64_t(k::persist_stage_bytes(t.dtype, n, backward));
  if (shared > lim.shared_per_block) return false;
  const int64_t per_sm =
      std::min<int64_t>(lim.blocks_staged, lim.shared_per_sm / (shared + lim.shared_reserved));
  return grid <= per_sm * lim.sm_count;
}

std::string name(const k::Tensor& t, int n, bool backward, const Device& d) {
  return std::string(d.name) + (backward ? " backward" : " forward") +
         (t.order == k::Order::ChannelMajor ? " major" : " minor") + " dtype " +
         std::to_string(int(t.dtype)) + " N " + std::to_string(n) + " n " + std::to_string(t.n) +
         " c " + std::to_string(t.c) + " spatial " + std::to_string(t.spatial);
}

TEST(PersistFit, SmallestResidentStageOverShapesDtypesAndWidths) {
  int fitted = 0, staged = 0, refused = 0;
  for (const Device& dev : devices()) {
    for (k::DType dt : {k::DType::F32, k::DType::F16, k::DType::BF16}) {
      for (k::Order order : {k::Order::ChannelMajor, k::Order::ChannelMinor}) {
        for (int n : {1, 2, 4, 8}) {
          if (n * k::dtype_bytes(dt) > 16) continue;
          for (int64_t c : {int64_t(1), int64_t(3), int64_t(64), int64_t(1000)}) {
            // m from 1 past every capacity here (~2^26 values), by ~1.37x.
            for (double mm = 1; mm * double(c) < 6.0e7; mm = mm * 1.37 + 1) {
              const int64_t m =
                  int64_t(mm) / n * n + n;  // a multiple of N (the vector width's rule)
              const k::Tensor t = order == k::Order::ChannelMajor
                                      ? k::Tensor{dt, order, 1, c, m}
                                      : k::Tensor{dt, order, m, c * n, 1};
              for (bool backward : {false, true}) {
                const k::PersistLimits& lim = backward ? dev.backward : dev.forward;
                const k::PersistFit f = k::persist_fit(t, n, backward, lim);
                const int most =
                    int(lim.shared_per_block / k::persist_stage_bytes(dt, n, backward)) + 1;
                int want = -1;
                for (int s = 0; s <= most && want < 0; ++s)
                  if (resident(t, n, backward, lim, s)) want = s;
                const std::string what = name(t, n, backward, dev);
                ASSERT_EQ(f.fits, want >= 0) << what;
                if (!f.fits) {
                  ++refused;
                  continue;
                }
                ++fitted;
                staged += want > 0;
                ASSERT_EQ(f.staged, want) << what;
                const int values = backward ? k::kPersistBackwardValues : k::kPersistForwardValues;
                const k::PersistGeometry g = k::persist_geometry(t, n, values, want);
                EXPECT_EQ(f.g.grid, g.grid) << what;
                EXPECT_EQ(f.g.splits, g.splits) << what;
                EXPECT_EQ(f.g.vectors, values / n + want) << what;
                EXPECT_EQ(f.shared,
                          k::persist_scratch_bytes(order == k::Order::ChannelMajor, n, backward) +
                              size_t(want) * k::persist_stage_bytes(dt, n, backward))
                    << what;
                EXPECT_LE(f.shared, size_t(lim.shared_per_block)) << what;
              }
            }
          }
        }
      }
    }
  }
  // The sweep reaches all three outcomes: registers alone, a stage, no fit.
  EXPECT_GT(fitted - staged, 100);
  EXPECT_GT(staged, 100);
  EXPECT_GT(refused, 100);
}

// The largest stage a block of b an SM takes, by the occupancy rule
// (resident's), found by search: 0 where none fits.
int64_t largest_stage(const k::Tensor& t, int n, bool backward, const k::PersistLimits& lim,
                      int b) {
  const int64_t scratch =
      int64_t(k::persist_scratch_bytes(t.order == k::Order::ChannelMajor, n, backward));
  const int64_t per = int64_t(k::persist_stage_bytes(t.dtype, n, backward));
  int64_t s = 0;
  while (scratch + (s + 1) * per <= lim.shared_per_block &&
         lim.shared_per_sm / (scratch + (s + 1) * per + lim.shared_reserved) >= b)
    ++s;
  return std::min<int64_t>(s, k::kPersistMaxVectors);
}

// Past the largest stage, the hybrid: the blocks an SM that hold the most
// values (the more blocks on a tie) with their largest stage, and the fewest
// streamed vectors that make the grid resident; for Half at most K + staged
// of them. Where the tensor fits on chip, streaming changes nothing.
TEST(PersistFit, StreamsTheFewestVectorsPastTheLargestStage) {
  int on_chip = 0, streamed = 0, refused_half = 0, refused_all = 0;
  for (const Device& dev : devices()) {
    for (k::DType dt : {k::DType::F32, k::DType::F16}) {
      for (k::Order order : {k::Order::ChannelMajor, k::Order::ChannelMinor}) {
        for (int n : {1, 2, 4, 8}) {
          if (n * k::dtype_bytes(dt) > 16) continue;
          for (int64_t c : {int64_t(1), int64_t(3), int64_t(64), int64_t(1000)}) {
            for (double mm = 1; mm * double(c) < 4.0e9; mm = mm * 1.9 + 1) {
              const int64_t m = int64_t(mm) / n * n + n;
              const k::Tensor t = order == k::Order::ChannelMajor
                                      ? k::Tensor{dt, order, 1, c, m}
                                      : k::Tensor{dt, order, m, c * n, 1};
              for (bool backward : {false, true}) {
                const k::PersistLimits& base = backward ? dev.backward : dev.forward;
                const k::PersistFit plain = k::persist_fit(t, n, backward, base);
                for (k::PersistStream policy : {k::PersistStream::Half, k::PersistStream::All}) {
                  k::PersistLimits lim = base;
                  lim.stream = policy;
                  const k::PersistFit f = k::persist_fit(t, n, backward, lim);
                  const std::string what = name(t, n, backward, dev) +
                                           (policy == k::PersistStream::Half ? " half" : " all");
                  if (plain.fits) {
                    ++on_chip;
                    ASSERT_TRUE(f.fits) << what;
                    EXPECT_EQ(f.streamed, 0) << what;
                    EXPECT_EQ(f.staged, plain.staged) << what;
                    EXPECT_EQ(f.g.grid, plain.g.grid) << what;
                    continue;
                  }
                  int best_b = 0;
                  int64_t best = 0;
                  const int values =
                      backward ? k::kPersistBackwardValues : k::kPersistForwardValues;
                  for (int b = 1; b <= lim.blocks_staged; ++b) {
                    const int64_t s = largest_stage(t, n, backward, lim, b);
                    if (s > 0 && b * (values / n + s) >= best) {
                      best = b * (values / n + s);
                      best_b = b;
                    }
                  }
                  const int staged = best_b ? int(largest_stage(t, n, backward, lim, best_b)) : 0;
                  const int held = values / n + staged;
                  const int most = policy == k::PersistStream::Half
                                       ? std::min(held, k::kPersistMaxVectors - held)
                                       : k::kPersistMaxVectors - held;
                  const int64_t capacity = int64_t(best_b) * lim.sm_count;
                  auto grid = [&](int s) {
                    return k::persist_geometry(t, n, values, staged + s).grid;
                  };
                  const bool can = best_b > 0 && most >= 1 && grid(most) <= capacity;
                  ASSERT_EQ(f.fits, can) << what;
                  if (!f.fits) {
                    ++(policy == k::PersistStream::Half ? refused_half : refused_all);
                    continue;
                  }
                  ++streamed;
                  EXPECT_EQ(f.staged, staged) << what;
                  ASSERT_GE(f.streamed, 1) << what;
                  ASSERT_LE(f.streamed, most) << what;
                  EXPECT_LE(grid(f.streamed), capacity) << what << " resident";
                  if (f.streamed > 1) {
                    EXPECT_GT(grid(f.streamed - 1), capacity) << what << " fewest";
                  }
                  EXPECT_EQ(f.g.vectors, held + f.streamed) << what;
                  EXPECT_EQ(f.g.grid, grid(f.streamed)) << what;
                  EXPECT_EQ(f.shared,
                            k::persist_scratch_bytes(order == k::Order::ChannelMajor, n, backward) +
                                size_t(staged) * k::persist_stage_bytes(dt, n, backward))
                      << what;
                  // A unit's count stays an exact float.
                  EXPECT_LE(int64_t(32) * f.g.vectors * n, int64_t(1) << 24) << what;
                }
              }
            }
          }
        }
      }
    }
  }
  // The sweep reaches every outcome: on chip, streamed, refused for Half
  // (more than half off chip) and for All (past kPersistMaxVectors, or too
  // many channels to be resident at any split).
  EXPECT_GT(on_chip, 100);
  EXPECT_GT(streamed, 100);
  EXPECT_GT(refused_half, 100);
  EXPECT_GT(refused_all, 10);
  std::printf("on chip %d, streamed %d, refused: half %d, all %d\n", on_chip, streamed,
              refused_half, refused_all);
}

// The emulated device's on-chip capacities that test_persistent.cpp's
// kOnChipValues bounds (any width and layout): a tensor above them that
// runs as one cooperative grid streamed.
TEST(PersistFit, EmulatorOnChipCapacities) {
  const k::PersistLimits emu = devices()[1].forward;
  for (bool backward : {false, true}) {
    for (k::DType dt : {k::DType::F32, k::DType::F16}) {
      const double bound = backward ? (dt == k::DType::F32 ? 0.48e6 : 0.71e6)
                                    : (dt == k::DType::F32 ? 0.97e6 : 1.43e6);
      for (k::Order order : {k::Order::ChannelMajor, k::Order::ChannelMinor}) {
        for (int n : {1, 2, 4, 8}) {
          if (n * k::dtype_bytes(dt) > 16) continue;
          for (int64_t c : {int64_t(1), int64_t(3), int64_t(8), int64_t(64), int64_t(150)}) {
            // The largest m that fits on chip, by bisection.
            int64_t lo = 0, hi = int64_t(1) << 26;
            while (lo < hi) {
              const int64_t mid = lo + (hi - lo + 1) / 2;
              const int64_t m = mid * n;
              const k::Tensor t = order == k::Order::ChannelMajor
                                      ? k::Tensor{dt, order, 1, c, m}
                                      : k::Tensor{dt, order, m, c * n, 1};
              if (k::persist_fit(t, n, backward, emu).fits)
                lo = mid;
              else
                hi = mid - 1;
            }
            const double values = double(lo) * n * c * (order == k::Order::ChannelMajor ? 1 : n);
            EXPECT_LT(values, bound) << (backward ? "backward" : "forward") << " dtype "
                                     << int(dt) << " N " << n << " c " << c;
          }
        }
      }
    }
  }
}

// The capacities bench/NOTES.md quotes for an H100 (values of one tensor
// the path holds on chip, NHWC with 64 channels at the natural width): the
// largest m that fits, found by bisection, within 1% of the arithmetic.
int64_t capacity(k::DType dt, int n, bool backward, const k::PersistLimits& lim) {
  int64_t lo = 1, hi = int64_t(1) << 30;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (k::persist_fit({dt, k::Order::ChannelMinor, mid, 64, 1}, n, backward, lim).fits)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo * 64;
}

TEST(PersistFit, H100Capacities) {
  const Device h100 = devices()[0];
  // Forward fp16, N = 8: one block an SM, 227 KB - 24 KB of merge scratch
  // = 50 staged vectors of 4 KB (256 threads x 8 x 2 bytes) past the 4 in
  // registers: 54 vectors x 2048 values x 132 blocks = 14.6 M.
  const double f16 = double(capacity(k::DType::F16, 8, false, h100.forward));
  EXPECT_NEAR(f16, 54.0 * 2048 * 132, 0.01 * f16);
  // Backward fp16: two tensors staged (8 KB a vector), 16 KB of scratch:
  // 26 staged + 2 = 28 vectors x 2048 x 132 = 7.6 M.
  const double b16 = double(capacity(k::DType::F16, 8, true, h100.backward));
  EXPECT_NEAR(b16, 28.0 * 2048 * 132, 0.01 * b16);
  // Forward fp32, N = 4: best at two blocks an SM, (114 KB - 1 KB
  // reserved - 12 KB of scratch) / 4 KB = 25 staged + 8 = 33 vectors x 1024
  // values x 264 blocks = 8.9 M (one block an SM: 61 x 1024 x 132 = 8.2 M).
  const double f32 = double(capacity(k::DType::F32, 4, false, h100.forward));
  EXPECT_NEAR(f32, 33.0 * 1024 * 264, 0.01 * f32);
  // Registers alone would hold 2.2 M forward, 1.6 M backward.
  EXPECT_GT(f16, 6 * 2.2e6);
  EXPECT_GT(b16, 4 * 1.6e6);
}

}  // namespace

// The CPU SIMT emulator itself: barriers, warp collectives, shared-memory
// poisoning, the index built-ins, atomics across host threads, cooperative
// grids, the randomized schedule, and the bugs it must refuse loudly.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "bnorm_emu.h"
#include "emu_test_kernels.h"

namespace {

class Emulator : public ::testing::Test {
 protected:
  void TearDown() override { bnormEmuSetRandomSchedule(0, 0); }
};

TEST_F(Emulator, BarrierOrdersSharedMemoryUnderAnySchedule) {
  const int n = 256;
  std::vector<int> in(n), out(n);
  std::iota(in.begin(), in.end(), 1000);
  for (unsigned seed = 0; seed < 10; ++seed) {
    bnormEmuSetRandomSchedule(seed != 0, seed);
    std::fill(out.begin(), out.end(), -1);
    ASSERT_EQ(emu_test::neighbour_exchange(in.data(), out.data(), n, true), cudaSuccess);
    for (int t = 0; t < n; ++t) ASSERT_EQ(out[t], in[(t + 1) % n]) << "seed " << seed;
  }
}

TEST_F(Emulator, RandomScheduleExposesAMissingBarrier) {
  // Without the barrier a thread may read its neighbour's slot before the
  // neighbour wrote it: the poison (-1) then shows through. In ascending
  // order every neighbour but thread 0's runs later, so nearly all reads
  // are wrong; under a random order about half are.
  const int n = 256;
  std::vector<int> in(n), out(n);
  std::iota(in.begin(), in.end(), 1000);
  bnormEmuSetRandomSchedule(1, 12345);
  ASSERT_EQ(emu_test::neighbour_exchange(in.data(), out.data(), n, false), cudaSuccess);
  int wrong = 0;
  for (int t = 0; t < n; ++t) wrong += out[t] != in[(t + 1) % n];
  EXPECT_GT(wrong, n / 8);
  EXPECT_LT(wrong, n - n / 8);  // random, not ascending
}

TEST_F(Emulator, SharedMemoryIsPoisonedAtBlockStart) {
  std::vector<int> out(64, 0);
  ASSERT_EQ(emu_test::read_unwritten_shared(out.data()), cudaSuccess);
  for (int v : out) EXPECT_EQ(v, -1);
}

// A copy_async lands when its thread waits, not before: a read ahead of
// the wait sees the poison, which is how a kernel that forgot the wait
// fails its tests here.
TEST_F(Emulator, AsyncCopyLandsAtTheWait) {
  const int n = 96;
  std::vector<int> in(n), before(n, 7), after(n, 7);
  for (int i = 0; i < n; ++i) in[size_t(i)] = 1000 + 3 * i;
  ASSERT_EQ(emu_test::async_copy_at_wait(in.data(), before.data(), after.data(), n), cudaSuccess);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(before[size_t(i)], -1) << i;
    EXPECT_EQ(after[size_t(i)], in[size_t(i)]) << i;
  }
}

class WarpCollectives : public ::testing::TestWithParam<int> {};

TEST_P(WarpCollectives, MatchCudaSemantics) {
  const int threads = GetParam();
  std::vector<int> out(size_t(8 * threads), -7);
  ASSERT_EQ(emu_test::warp_collectives(out.data(), threads), cudaSuccess);
  for (int t = 0; t < threads; ++t) {
    const int lane = t % 32;
    const int lanes = std::min(32, threads - (t - lane));
    const int* o = &out[size_t(8 * t)];
    SCOPED_TRACE(::testing::Message() << "thread " << t);
    // xor 1: the partner, when it exists in a partial warp; else poison.
    if ((lane ^ 1) < lanes) {
      EXPECT_EQ(o[0], 100 + (lane ^ 1));
    } else {
      EXPECT_EQ(o[0], -1);
    }
    // down 2: own value past the end of the warp.
    if (lane + 2 < 32) {
      if (lane + 2 < lanes) {
        EXPECT_EQ(o[1], 200 + lane + 2);
      }
    } else {
      EXPECT_EQ(o[1], 200 + lane);
    }
    EXPECT_EQ(o[2], lane >= 3 ? 300 + lane - 3 : 300 + lane);  // up 3
    if (5 < lanes) {
      EXPECT_EQ(o[3], 405);  // broadcast lane 5
    }
    if ((lane ^ 4) < lanes) {
      EXPECT_EQ(o[4], 500 + (lane ^ 4));  // width 8
    }
    unsigned want = 0;
    for (int l = 0; l < lanes; ++l)
      if (l % 3 == 0) want |= 1u << l;
    EXPECT_EQ(unsigned(o[5]), want);
    EXPECT_EQ(o[6], lanes > 7 ? 1 : 0);
    EXPECT_EQ(o[7], 1);
  }
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, WarpCollectives, ::testing::Values(32, 64, 256, 100));

TEST_F(Emulator, IndexBuiltinsCoverMultiDimensionalGrids) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int blocks = 12, threads = 24;
  std::vector<int> out(size_t(blocks * threads), -1);
  ASSERT_EQ(emu_test::index_builtins(out.data(), grid, block), cudaSuccess);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) EXPECT_EQ(out[size_t(b * threads + t)], b * 10000 + t);
}

TEST_F(Emulator, AtomicsAreAtomicAcrossHostThreads) {
  unsigned long long counter = 0;
  ASSERT_EQ(emu_test::atomic_count(&counter, 64, 128), cudaSuccess);
  EXPECT_EQ(counter, 64ull * 128ull);
  EXPECT_GE(bnormEmuHostThreads(), 1);
}

TEST_F(Emulator, CooperativeGridSyncSeesEveryBlock) {
  const int blocks = 12;
  std::vector<int> v(blocks, 0), sum(blocks, 0);
  ASSERT_EQ(emu_test::grid_exchange(v.data(), sum.data(), blocks, true), cudaSuccess);
  for (int b = 0; b < blocks; ++b) EXPECT_EQ(sum[size_t(b)], blocks * (blocks + 1) / 2);
}

TEST_F(Emulator, InvalidConfigurationIsALaunchError) {
  EXPECT_EQ(emu_test::oversized_block(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "cudaGetLastError resets the error";
}

TEST_F(Emulator, TooLargeCooperativeGridIsALaunchError) {
  std::vector<int> v(1000), sum(1000);
  EXPECT_EQ(emu_test::grid_exchange(v.data(), sum.data(), 1000, true),
            cudaErrorCooperativeLaunchTooLarge);
}

// As on a GPU: past 48 KB a launch needs its kernel's opt-in, and no
// opt-in passes the device's per-block limit (227 KB).
TEST_F(Emulator, DynamicSharedPast48KBNeedsTheOptIn) {
  EXPECT_EQ(emu_test::shared_launch(48 * 1024, false), cudaSuccess);
  EXPECT_EQ(emu_test::shared_launch(64 * 1024, false), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(emu_test::shared_launch(228 * 1024, true), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue) << "a failed runtime call is the last error";
  EXPECT_EQ(emu_test::shared_launch(227 * 1024, true), cudaSuccess);
  EXPECT_EQ(emu_test::shared_launch(64 * 1024, false), cudaErrorInvalidValue)
      << "the other kernel's opt-in is not this one's";
}

// A cooperative grid must be resident at once with its shared memory: 40 KB
// a block (+ 1 KB reserved) leaves 5 blocks of 228 KB an SM, 40 on the 8
// emulated SMs, which is also what the occupancy query says.
TEST_F(Emulator, CooperativeGridMustBeResidentWithItsSharedMemory) {
  const size_t shared = 40 * 1024;
  EXPECT_EQ(emu_test::grid_occupancy(shared), 5);
  EXPECT_EQ(emu_test::grid_occupancy(0), 8) << "threads allow 32, max_cooperative_blocks 8 an SM";
  std::vector<int> v(41, 0), sum(41, 0);
  ASSERT_EQ(emu_test::grid_exchange_shared(v.data(), sum.data(), 40, shared), cudaSuccess);
  for (int b = 0; b < 40; ++b) EXPECT_EQ(sum[size_t(b)], 40 * 41 / 2);
  EXPECT_EQ(emu_test::grid_exchange_shared(v.data(), sum.data(), 41, shared),
            cudaErrorCooperativeLaunchTooLarge);
}

// The bugs below hang or are undefined on a GPU; the emulator aborts and
// says what happened.
using EmulatorDeathTest = Emulator;

TEST_F(EmulatorDeathTest, BarrierAfterAnEarlyExitAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(emu_test::barrier_after_early_exit(), "have exited");
}

TEST_F(EmulatorDeathTest, DivergentBarriersAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(emu_test::divergent_barriers(), "divergent barrier");
}

TEST_F(EmulatorDeathTest, ShuffleMaskWithoutOwnLaneAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(emu_test::shuffle_without_own_lane(), "excludes its own lane");
}

TEST_F(EmulatorDeathTest, ShuffleWithAnExitedLaneAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(emu_test::shuffle_with_exited_lane(), "have exited");
}

TEST_F(EmulatorDeathTest, GridSyncOutsideACooperativeLaunchAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<int> v(4), sum(4);
  EXPECT_DEATH(emu_test::grid_exchange(v.data(), sum.data(), 4, false),
               "not launched cooperatively");
}

TEST_F(EmulatorDeathTest, AsyncCopyNotWaitedForAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(emu_test::bad_async_copy(0), "copy_async copies not waited for");
}

TEST_F(EmulatorDeathTest, MisalignedAsyncCopyAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(emu_test::bad_async_copy(1), "not aligned to its size");
}

TEST_F(EmulatorDeathTest, AsyncCopyOutsideSharedMemoryAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(emu_test::bad_async_copy(2), "outside the block's 128 bytes of shared memory");
}

#if defined(__SANITIZE_ADDRESS__)
// Emulated shared memory is an exact-size allocation: AddressSanitizer sees
// a kernel write past its end.
TEST_F(EmulatorDeathTest, AddressSanitizerSeesSharedMemoryOverruns) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(emu_test::shared_overrun(), "heap-buffer-overflow");
}
#endif

}  // namespace

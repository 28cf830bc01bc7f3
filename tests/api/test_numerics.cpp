// Numerical edge cases: a mean that dwarfs the spread, constant channels,
// fp16 values near the top of its range with long reductions, channels of
// wildly different scales, and eps = 0.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include "harness.h"
#include "ops.h"

namespace {

using bt::Case;

bnormConfig_t config(double eps, bnormPath_t path = BNORM_PATH_AUTO) {
  bnormConfig_t c = BNORM_CONFIG_INITIALIZER;
  c.eps = eps;
  c.path = path;
  return c;
}

// Values mean + N(0, sd) per channel, rounded to the case's dtype.
std::vector<double> gaussian(const Case& k, uint64_t seed, const std::vector<double>& mean,
                             const std::vector<double>& sd) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  const bnref_shape sh = k.ref();
  std::vector<double> x(size_t(k.numel()));
  for (int64_t i = 0; i < k.s.n; ++i)
    for (int64_t c = 0; c < k.s.c; ++c)
      for (int64_t s = 0; s < k.s.spatial; ++s)
        x[bnref_offset(&sh, i, c, s)] = mean[c] + sd[c] * nd(rng);
  return bt::round_to(x, k.dtype);
}

class LargeMean : public ::testing::TestWithParam<Case> {};

// The lecture's warning: add a very large number to a variable. With mean
// 1e6 and std 1, E[x^2] - E[x]^2 in fp32 loses every digit of the variance.
// Every kernel path keeps the pivot.
TEST_P(LargeMean, VarianceStaysAccurate) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  bt::TrainRequest r;
  r.x = gaussian(k, 3, std::vector<double>(size_t(k.s.c), 1e6), std::vector<double>(size_t(k.s.c), 1.0));
  r.running_mean.assign(size_t(k.s.c), 0.0);
  r.running_var.assign(size_t(k.s.c), 1.0);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    const bnormConfig_t cfg = config(1e-5, path);
    const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
    const double m = double(k.m());
    for (size_t ch = 0; ch < size_t(k.s.c); ++ch) {
      // Variance recovered from rstd and from the running (unbiased) variance
      // with factor 0.1: both must be within 1e-3 relative.
      const double var = 1.0 / (double(got.saved_rstd[ch]) * got.saved_rstd[ch]) - cfg.eps;
      const double rel = std::fabs(var - want.var[ch]) / want.var[ch];
      EXPECT_LE(rel, 1e-3) << "channel " << ch << ": variance " << var << " vs " << want.var[ch];
      const double unbiased = (got.running_var[ch] - 0.9) / 0.1 * (m - 1.0) / m;
      EXPECT_LE(std::fabs(unbiased - want.var[ch]) / want.var[ch], 1e-3) << "running_var";
      EXPECT_NEAR(got.saved_mean[ch], want.mean[ch], 0.07);  // half an fp32 ulp at 1e6 is 0.03
    }
    // The normalize pass keeps the pivot too: y is accurate, not just finite.
    EXPECT_TRUE(bt::all_close(got.y, want.y, {1e-3, 1e-3}, "y"));
  }
}

INSTANTIATE_TEST_SUITE_P(Fp32, LargeMean,
                         ::testing::Values(Case{{8, 4, 4096}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},
                                           Case{{8, 4, 4096}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT},
                                           Case{{5000, 3, 1}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},
                                           Case{{3, 37, 129}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT}),
                         bt::CaseName());

class ConstantChannels : public ::testing::TestWithParam<Case> {};

// On every kernel path: y = scale * (x - pivot) + shift with x == pivot.
TEST_P(ConstantChannels, GiveExactlyBetaNeverNaN) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const std::vector<double> values = {0.1, -3.0, 1e4, 0.0, 2.5, 7.0};
  std::vector<double> mean(size_t(k.s.c)), sd(size_t(k.s.c), 0.0);
  for (size_t ch = 0; ch < mean.size(); ++ch) mean[ch] = values[ch % values.size()];
  bt::TrainRequest r;
  r.x = gaussian(k, 1, mean, sd);
  r.p = bt::random_params(k.s.c, 2);
  r.running_mean.assign(size_t(k.s.c), 0.0);
  r.running_var.assign(size_t(k.s.c), 1.0);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    const bt::TrainResult got = bt::forward_training(h, k, config(1e-5, path), r);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const std::vector<double> beta = bt::round_to(r.p.beta, k.dtype);
    const bnref_shape sh = k.ref();
    for (int64_t i = 0; i < k.s.n; ++i)
      for (int64_t ch = 0; ch < k.s.c; ++ch)
        for (int64_t s = 0; s < k.s.spatial; ++s)
          ASSERT_EQ(got.y[size_t(bnref_offset(&sh, i, ch, s))], beta[size_t(ch)])
              << "sample " << i << " channel " << ch << " position " << s;
    const std::vector<double> x0 = bt::round_to(mean, k.dtype);
    for (size_t ch = 0; ch < size_t(k.s.c); ++ch) {
      EXPECT_EQ(got.saved_mean[ch], float(x0[ch]));
      EXPECT_FLOAT_EQ(got.saved_rstd[ch], float(1.0 / std::sqrt(1e-5)));
      EXPECT_FLOAT_EQ(got.running_var[ch], 0.9f);  // 0.9 * 1 + 0.1 * 0
    }
  }
}

std::vector<Case> constant_cases() {
  std::vector<Case> out;
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC})
      for (bt::Shape s : {bt::Shape{3, 6, 50}, bt::Shape{1000, 6, 1}, bt::Shape{2, 70, 3}})
        out.push_back({s, l, t});
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, ConstantChannels, ::testing::ValuesIn(constant_cases()),
                         bt::CaseName());

class Fp16NearMax : public ::testing::TestWithParam<Case> {};

// fp16 tops out at 65504: its sum over 65536 values, or its square, would
// overflow any fp16 accumulator. Statistics are accumulated in fp32.
TEST_P(Fp16NearMax, LongReductionsStayFinite) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(1e-5);
  bt::TrainRequest r;
  std::vector<double> mean(size_t(k.s.c)), sd(size_t(k.s.c));
  for (size_t ch = 0; ch < mean.size(); ++ch) {
    mean[ch] = 6.0e4 - 1000.0 * double(ch);
    sd[ch] = 800.0;
  }
  r.x = gaussian(k, 9, mean, sd);
  for (double& v : r.x) v = std::min(v, 65504.0);
  const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
  for (size_t ch = 0; ch < size_t(k.s.c); ++ch) {
    ASSERT_TRUE(std::isfinite(got.saved_mean[ch]) && std::isfinite(got.saved_rstd[ch]));
    EXPECT_NEAR(got.saved_mean[ch], want.mean[ch], 1e-5 * want.mean[ch]);
    EXPECT_NEAR(got.saved_rstd[ch], want.rstd[ch], 1e-5 * want.rstd[ch]);
  }
  EXPECT_TRUE(bt::all_close(got.y, want.y, bt::output_tolerance(k.dtype), "y"));
}

INSTANTIATE_TEST_SUITE_P(
    Fp16, Fp16NearMax,
    ::testing::Values(Case{{16, 3, 4096}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},
                      Case{{16, 3, 4096}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},
                      Case{{65536, 2, 1}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF}),
    bt::CaseName());

class MixedScales : public ::testing::TestWithParam<Case> {};

// Channels whose scales span twelve orders of magnitude do not disturb one
// another: each normalizes to unit variance.
TEST_P(MixedScales, ChannelsAreIndependent) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(0.0);
  const std::vector<double> mean = {1e-3, 1e3, 10.0, -5e5, 0.0};
  const std::vector<double> sd = {1e-4, 1e2, 1.0, 3e3, 1e-6};
  bt::TrainRequest r;
  r.x = gaussian(k, 17, mean, sd);
  const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
  for (size_t ch = 0; ch < mean.size(); ++ch)
    EXPECT_NEAR(got.saved_rstd[ch], want.rstd[ch], 1e-4 * want.rstd[ch]) << "channel " << ch;
  EXPECT_TRUE(bt::all_close(got.y, want.y, {1e-4, 1e-4}, "y"));
}

INSTANTIATE_TEST_SUITE_P(Fp32, MixedScales,
                         ::testing::Values(Case{{64, 5, 33}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},
                                           Case{{64, 5, 33}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT}),
                         bt::CaseName());

class EpsZero : public ::testing::TestWithParam<Case> {};

// Documented (bnorm.h): eps = 0 on a constant channel gives rstd = +inf and
// y = NaN in that channel only, as PyTorch does; the other channels and the
// running statistics stay exact and finite.
TEST_P(EpsZero, ConstantChannelIsNaNOthersUnharmed) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(0.0);
  std::vector<double> mean = {2.0, -1.0, 0.5}, sd = {1.0, 0.0, 2.0};  // channel 1 is constant
  bt::TrainRequest r;
  r.x = gaussian(k, 23, mean, sd);
  r.running_mean.assign(3, 0.0);
  r.running_var.assign(3, 1.0);
  const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
  EXPECT_TRUE(std::isinf(got.saved_rstd[1]) && got.saved_rstd[1] > 0);
  EXPECT_EQ(got.running_var[1], 0.9f);
  EXPECT_EQ(got.saved_mean[1], -1.0f);
  const bnref_shape sh = k.ref();
  for (int64_t i = 0; i < k.s.n; ++i)
    for (int64_t s = 0; s < k.s.spatial; ++s) {
      EXPECT_TRUE(std::isnan(got.y[size_t(bnref_offset(&sh, i, 1, s))]));
      for (int64_t ch : {0, 2}) {
        const size_t o = size_t(bnref_offset(&sh, i, ch, s));
        EXPECT_NEAR(got.y[o], want.y[o], 1e-4 * (1 + std::fabs(want.y[o])));
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Fp32, EpsZero,
                         ::testing::Values(Case{{4, 3, 10}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},
                                           Case{{4, 3, 10}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT}),
                         bt::CaseName());

class LongChannel : public ::testing::TestWithParam<Case> {};

// A million values per channel, split across many blocks and merged with
// Chan's rule: the statistics keep fp32 accuracy, far better than a naive
// running sum (whose error grows with m).
TEST_P(LongChannel, MillionValueReduction) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(1e-5);
  bt::TrainRequest r;
  r.x = gaussian(k, 29, {5.0, -20.0}, {1.0, 3.0});
  const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
  for (size_t ch = 0; ch < 2; ++ch) {
    EXPECT_NEAR(got.saved_mean[ch], want.mean[ch], 1e-6 * std::fabs(want.mean[ch]));
    EXPECT_NEAR(got.saved_rstd[ch], want.rstd[ch], 1e-5 * want.rstd[ch]);
  }
}

INSTANTIATE_TEST_SUITE_P(Fp32, LongChannel,
                         ::testing::Values(Case{{16, 2, 65536}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},
                                           Case{{1 << 20, 2, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT}),
                         bt::CaseName());

}  // namespace

// Running statistics: the exponential and cumulative averages, the unbiased
// variance, and the step counter that lives on the device.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "harness.h"
#include "ops.h"

namespace {

using bt::Case;

std::vector<Case> running_cases() {
  std::vector<Case> out;
  for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC})
    for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
      for (bt::Shape s : {bt::Shape{2, 2, 1}, bt::Shape{3, 5, 7}, bt::Shape{4, 3, 1500},
                          bt::Shape{300, 40, 1}})
        out.push_back({s, l, t});
  return out;
}

bnormConfig_t exponential(bnormPath_t path, double factor) {
  bnormConfig_t c = BNORM_CONFIG_INITIALIZER;
  c.path = path;
  c.exponential_average_factor = factor;
  return c;
}

bnormConfig_t cumulative(bnormPath_t path) {
  bnormConfig_t c = BNORM_CONFIG_INITIALIZER;
  c.path = path;
  c.average = BNORM_AVERAGE_CUMULATIVE;
  c.exponential_average_factor = 0.7;  // must be ignored
  return c;
}

bt::TrainRequest tracked(const Case& k, uint64_t seed) {
  bt::TrainRequest r;
  r.x = bt::random_activations(k, seed);
  r.p = bt::random_params(k.s.c, seed + 1);
  r.running_mean = bt::random_floats(size_t(k.s.c), seed + 2, -1.0, 1.0);
  r.running_var = bt::random_floats(size_t(k.s.c), seed + 3, 0.5, 2.0);
  return r;
}

// Every shape on every kernel path (bnormPath_t): each path updates the
// running statistics and the step counter itself.
struct RunningParam {
  Case k;
  bnormPath_t path;
};

std::vector<RunningParam> running_params() {
  std::vector<RunningParam> out;
  for (const Case& k : running_cases())
    for (bnormPath_t path : bt::all_paths()) out.push_back({k, path});
  return out;
}

class Running : public ::testing::TestWithParam<RunningParam> {
 protected:
  bnormPath_t path() const { return GetParam().path; }
};

TEST_P(Running, FactorZeroLeavesThemBitwiseUnchanged) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam().k;
  bt::Handle h;
  const bt::TrainRequest r = tracked(k, 11);
  const bt::TrainResult got = bt::forward_training(h, k, exponential(path(), 0.0), r);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  for (size_t ch = 0; ch < size_t(k.s.c); ++ch) {
    EXPECT_EQ(got.running_mean[ch], float(r.running_mean[ch])) << "channel " << ch;
    EXPECT_EQ(got.running_var[ch], float(r.running_var[ch])) << "channel " << ch;
  }
}

TEST_P(Running, FactorOneReplacesThemEvenIfNotFinite) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam().k;
  bt::Handle h;
  bt::TrainRequest r = tracked(k, 12);
  r.running_mean.assign(size_t(k.s.c), std::numeric_limits<double>::quiet_NaN());
  r.running_var.assign(size_t(k.s.c), std::numeric_limits<double>::infinity());
  const bt::TrainResult got = bt::forward_training(h, k, exponential(path(), 1.0), r);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  std::vector<double> mean(size_t(k.s.c)), var(size_t(k.s.c));
  const bnref_shape sh = k.ref();
  bnref_batch_stats(&sh, r.x.data(), 1e-5, mean.data(), var.data(), nullptr);
  const double m = double(k.m());
  for (size_t ch = 0; ch < size_t(k.s.c); ++ch) {
    EXPECT_NEAR(got.running_mean[ch], mean[ch], 2e-5 * (std::sqrt(var[ch]) + std::fabs(mean[ch])));
    // The unbiased variance: m / (m - 1) times the biased one.
    EXPECT_NEAR(got.running_var[ch], var[ch] * m / (m - 1.0), 2e-5 * var[ch] * m / (m - 1.0));
    // And it is the saved statistics that were folded in.
    EXPECT_EQ(got.running_mean[ch], got.saved_mean[ch]);
  }
}

TEST_P(Running, CumulativeAverageOfKStepsIsTheMeanOfTheBatchStatistics) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam().k;
  bt::Handle h;
  const size_t c = size_t(k.s.c);
  const int steps = 5;
  const double m = double(k.m());
  int64_t step = 0;
  std::vector<double> rm = bt::random_floats(c, 5, -1.0, 1.0);  // forgotten at step 0 (f = 1)
  std::vector<double> rv = bt::random_floats(c, 6, 0.5, 2.0);
  std::vector<double> sum_mean(c, 0.0), sum_var(c, 0.0);
  for (int t = 0; t < steps; ++t) {
    bt::TrainRequest r;
    r.x = bt::random_activations(k, 100 + uint64_t(t), -2.0 + t, 2.0 + t);
    r.running_mean = rm;
    r.running_var = rv;
    r.step = &step;
    const bt::TrainResult got = bt::forward_training(h, k, cumulative(path()), r);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    ASSERT_EQ(step, t + 1) << "the step counter advances once per call";
    rm = bt::to_double(got.running_mean);
    rv = bt::to_double(got.running_var);
    std::vector<double> mean(c), var(c);
    const bnref_shape sh = k.ref();
    bnref_batch_stats(&sh, r.x.data(), 1e-5, mean.data(), var.data(), nullptr);
    for (size_t ch = 0; ch < c; ++ch) {
      sum_mean[ch] += mean[ch];
      sum_var[ch] += var[ch] * m / (m - 1.0);
    }
  }
  for (size_t ch = 0; ch < c; ++ch) {
    const double want_mean = sum_mean[ch] / steps, want_var = sum_var[ch] / steps;
    EXPECT_NEAR(rm[ch], want_mean, 1e-5 * (1.0 + std::fabs(want_mean))) << "channel " << ch;
    EXPECT_NEAR(rv[ch], want_var, 1e-5 * want_var) << "channel " << ch;
  }
}

TEST_P(Running, CumulativeResumesFromTheStoredStep) {
  // With t = 3 already taken, the next factor is 1/4.
  BT_REQUIRE_DEVICE();
  const Case k = GetParam().k;
  bt::Handle h;
  int64_t step = 3;
  bt::TrainRequest r = tracked(k, 21);
  r.step = &step;
  const bt::TrainResult got = bt::forward_training(h, k, cumulative(path()), r);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  EXPECT_EQ(step, 4);
  int64_t three = 3;
  bt::TrainRequest before = r;
  before.step = &three;
  const bt::RefTrain want = bt::ref_forward_training(k, cumulative(path()), before);
  EXPECT_TRUE(bt::all_close(bt::to_double(got.running_mean), want.running_mean, {1e-6, 2e-5},
                            "running_mean"));
  EXPECT_TRUE(bt::all_close(bt::to_double(got.running_var), want.running_var, {1e-6, 2e-5},
                            "running_var"));
}

TEST_P(Running, UntrackedCumulativeLeavesTheStepAlone) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam().k;
  bt::Handle h;
  int64_t step = 41;
  bt::TrainRequest r;
  r.x = bt::random_activations(k, 31);
  r.step = &step;
  const bt::TrainResult got = bt::forward_training(h, k, cumulative(path()), r);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  EXPECT_EQ(step, 41);
}

TEST_P(Running, ExponentialIgnoresTheStepCounter) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam().k;
  bt::Handle h;
  int64_t step = 9;
  bt::TrainRequest r = tracked(k, 41);
  r.step = &step;
  const bt::TrainResult got = bt::forward_training(h, k, exponential(path(), 0.25), r);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  EXPECT_EQ(step, 9);
  const bt::RefTrain want = bt::ref_forward_training(k, exponential(path(), 0.25), r);
  EXPECT_TRUE(bt::all_close(bt::to_double(got.running_mean), want.running_mean, {1e-6, 2e-5},
                            "running_mean"));
  EXPECT_TRUE(bt::all_close(bt::to_double(got.running_var), want.running_var, {1e-6, 2e-5},
                            "running_var"));
}

std::string running_name(const ::testing::TestParamInfo<RunningParam>& info) {
  static const char* const kNames[] = {"Auto", "MultiPass", "SingleBlock", "Persistent"};
  return info.param.k.name() + "_" + kNames[int(info.param.path)];
}

INSTANTIATE_TEST_SUITE_P(Shapes, Running, ::testing::ValuesIn(running_params()), running_name);

}  // namespace

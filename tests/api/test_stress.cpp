// Numerical stress beyond test_numerics.cpp: non-finite inputs (NaN and
// infinities propagate per channel as PyTorch does, and never reach another
// channel), denormals, the extremes of fp16 and bf16, eps = 0 on constant
// channels on every path and type, and the accuracy of the variance for
// mean/std ratios from 1 to 1e7 (printed as a table; see README).
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>

#include "harness.h"
#include "ops.h"

namespace {

using bt::Case;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

bnormConfig_t config(double eps, bnormPath_t path, double factor = 0.1) {
  bnormConfig_t c = BNORM_CONFIG_INITIALIZER;
  c.eps = eps;
  c.path = path;
  c.exponential_average_factor = factor;
  return c;
}

// Values mean[c] + sd[c] * N(0, 1), rounded to the case's dtype.
std::vector<double> gaussian(const Case& k, uint64_t seed, const std::vector<double>& mean,
                             const std::vector<double>& sd) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  const bnref_shape sh = k.ref();
  std::vector<double> x(size_t(k.numel()));
  for (int64_t i = 0; i < k.s.n; ++i)
    for (int64_t c = 0; c < k.s.c; ++c)
      for (int64_t s = 0; s < k.s.spatial; ++s)
        x[size_t(bnref_offset(&sh, i, c, s))] = mean[size_t(c)] + sd[size_t(c)] * nd(rng);
  return bt::round_to(x, k.dtype);
}

// Flat offset of value j (0 <= j < m) of channel ch.
size_t at(const Case& k, int64_t ch, int64_t j) {
  const bnref_shape sh = k.ref();
  return size_t(bnref_offset(&sh, j / k.s.spatial, ch, j % k.s.spatial));
}

// The values of channel ch, in (sample, position) order.
std::vector<double> channel(const Case& k, const std::vector<double>& v, int64_t ch) {
  std::vector<double> out(size_t(k.m()));
  for (int64_t j = 0; j < k.m(); ++j) out[size_t(j)] = v[at(k, ch, j)];
  return out;
}

std::string trace(const Case& k, bnormPath_t path) {
  return k.name() + ", " + bt::path_name(path);
}

// Every combination of layout and dtype on one shape.
std::vector<Case> all_types(bt::Shape s) {
  std::vector<Case> out;
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC}) out.push_back({s, l, t});
  return out;
}

// ---- non-finite inputs ---------------------------------------------------------------------------

// Six channels: 0, 2 and 5 are ordinary; 1 holds one NaN, 3 one +inf, 4 a
// +inf and a -inf. PyTorch (and the double reference) give channel 1 NaN
// statistics and an all-NaN output, channels 3 and 4 a non-finite mean and a
// NaN variance (inf - inf), hence NaN rstd and an all-NaN output; running
// statistics of those channels become non-finite. The ordinary channels are
// bitwise what they are without the poisoned ones.
class NonFinite : public ::testing::TestWithParam<Case> {};

constexpr int64_t kNaNChannel = 1, kInfChannel = 3, kBothInfChannel = 4;
bool poisoned_channel(int64_t ch) {
  return ch == kNaNChannel || ch == kInfChannel || ch == kBothInfChannel;
}

std::vector<double> with_non_finite(const Case& k, std::vector<double> x) {
  const int64_t m = k.m();
  x[at(k, kNaNChannel, m / 2)] = kNaN;
  x[at(k, kInfChannel, m - 1)] = kInf;  // the last value: after every finite one
  x[at(k, kBothInfChannel, 0)] = kInf;  // the first value: the pivot
  x[at(k, kBothInfChannel, m / 3 + 1)] = -kInf;
  return x;
}

TEST_P(NonFinite, ForwardTrainingPoisonsOnlyItsChannel) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  bt::TrainRequest clean;
  clean.x = bt::random_activations(k, 41);
  clean.p = bt::random_params(k.s.c, 42);
  clean.running_mean = bt::random_floats(size_t(k.s.c), 43, -1.0, 1.0);
  clean.running_var = bt::random_floats(size_t(k.s.c), 44, 0.5, 2.0);
  bt::TrainRequest dirty = clean;
  dirty.x = with_non_finite(k, clean.x);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(trace(k, path));
    const bnormConfig_t cfg = config(1e-5, path);
    const bt::TrainResult base = bt::forward_training(h, k, cfg, clean);
    const bt::TrainResult got = bt::forward_training(h, k, cfg, dirty);
    ASSERT_EQ(base.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefTrain want = bt::ref_forward_training(k, cfg, dirty);
    for (int64_t ch = 0; ch < k.s.c; ++ch) {
      SCOPED_TRACE(::testing::Message() << "channel " << ch);
      const size_t c = size_t(ch);
      const std::vector<double> y = channel(k, got.y, ch);
      if (!poisoned_channel(ch)) {
        // Untouched by the poisoned neighbours: bitwise the clean run.
        EXPECT_EQ(y, channel(k, base.y, ch));
        EXPECT_EQ(got.saved_mean[c], base.saved_mean[c]);
        EXPECT_EQ(got.saved_rstd[c], base.saved_rstd[c]);
        EXPECT_EQ(got.running_mean[c], base.running_mean[c]);
        EXPECT_EQ(got.running_var[c], base.running_var[c]);
        EXPECT_TRUE(bt::all_close(y, channel(k, want.y, ch), bt::output_tolerance(k.dtype), "y"));
        continue;
      }
      // The reference agrees on what a poisoned channel is.
      ASSERT_TRUE(std::isnan(want.var[c]) && std::isnan(want.rstd[c]));
      EXPECT_FALSE(std::isfinite(got.saved_mean[c])) << got.saved_mean[c];
      EXPECT_TRUE(std::isnan(got.saved_rstd[c])) << got.saved_rstd[c];
      EXPECT_FALSE(std::isfinite(got.running_mean[c])) << got.running_mean[c];
      EXPECT_TRUE(std::isnan(got.running_var[c])) << got.running_var[c];
      for (size_t j = 0; j < y.size(); ++j) ASSERT_TRUE(std::isnan(y[j])) << "value " << j;
    }
  }
}

TEST_P(NonFinite, RecomputingBackwardPoisonsOnlyItsChannel) {
  // The full backward without saved statistics recomputes them from x.
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  bt::BackwardRequest clean;
  clean.x = bt::random_activations(k, 51);
  clean.dy = bt::random_activations(k, 52, -0.5, 0.5, 0.5, 1.5);
  clean.gamma = bt::random_params(k.s.c, 53).gamma;
  bt::BackwardRequest dirty = clean;
  dirty.x = with_non_finite(k, clean.x);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(trace(k, path));
    const bnormConfig_t cfg = config(1e-5, path);
    const bt::BackwardResult base = bt::backward(h, k, cfg, clean, false);
    const bt::BackwardResult got = bt::backward(h, k, cfg, dirty, false);
    ASSERT_EQ(base.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    for (int64_t ch = 0; ch < k.s.c; ++ch) {
      SCOPED_TRACE(::testing::Message() << "channel " << ch);
      const size_t c = size_t(ch);
      const std::vector<double> dx = channel(k, got.dx, ch);
      if (!poisoned_channel(ch)) {
        EXPECT_EQ(dx, channel(k, base.dx, ch));
        EXPECT_EQ(got.dgamma[c], base.dgamma[c]);
        EXPECT_EQ(got.dbeta[c], base.dbeta[c]);
        continue;
      }
      // rstd is NaN: dgamma and every dx of the channel are NaN (dbeta,
      // the sum of dy, is finite: dy is).
      EXPECT_TRUE(std::isnan(got.dgamma[c])) << got.dgamma[c];
      EXPECT_EQ(got.dbeta[c], base.dbeta[c]);
      for (size_t j = 0; j < dx.size(); ++j) ASSERT_TRUE(std::isnan(dx[j])) << "value " << j;
    }
  }
}

TEST_P(NonFinite, NonFiniteGradientPoisonsOnlyItsChannel) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  bt::BackwardRequest clean;
  clean.x = bt::random_activations(k, 61);
  clean.dy = bt::random_activations(k, 62, -0.5, 0.5, 0.5, 1.5);
  clean.gamma = bt::random_params(k.s.c, 63).gamma;
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(trace(k, path));
    const bnormConfig_t cfg = config(1e-5, path);
    bt::TrainRequest t;
    t.x = clean.x;
    const bt::TrainResult f = bt::forward_training(h, k, cfg, t);
    ASSERT_EQ(f.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    clean.mean = bt::to_double(f.saved_mean);
    clean.stat = bt::to_double(f.saved_rstd);
    bt::BackwardRequest dirty = clean;
    dirty.dy = with_non_finite(k, clean.dy);
    const bt::BackwardResult base = bt::backward(h, k, cfg, clean, false);
    const bt::BackwardResult got = bt::backward(h, k, cfg, dirty, false);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    for (int64_t ch = 0; ch < k.s.c; ++ch) {
      SCOPED_TRACE(::testing::Message() << "channel " << ch);
      const size_t c = size_t(ch);
      const std::vector<double> dx = channel(k, got.dx, ch);
      if (!poisoned_channel(ch)) {
        EXPECT_EQ(dx, channel(k, base.dx, ch));
        EXPECT_EQ(got.dgamma[c], base.dgamma[c]);
        EXPECT_EQ(got.dbeta[c], base.dbeta[c]);
        continue;
      }
      // dbeta = sum dy and dgamma are non-finite; every dx of the channel
      // is non-finite too (dbeta / m enters each of them).
      EXPECT_FALSE(std::isfinite(got.dbeta[c])) << got.dbeta[c];
      EXPECT_FALSE(std::isfinite(got.dgamma[c])) << got.dgamma[c];
      if (ch == kNaNChannel) {
        EXPECT_TRUE(std::isnan(got.dbeta[c]));
      }
      for (size_t j = 0; j < dx.size(); ++j) ASSERT_FALSE(std::isfinite(dx[j])) << "value " << j;
    }
  }
}

TEST_P(NonFinite, InferenceIsElementwise) {
  // Inference has no reduction: a NaN or inf in x touches only its own
  // output; a NaN running variance poisons only its channel.
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(1e-5, BNORM_PATH_AUTO);
  const std::vector<double> x0 = bt::random_activations(k, 71);
  const std::vector<double> x = with_non_finite(k, x0);
  const bt::ChannelParams p = bt::random_params(k.s.c, 72);
  std::vector<double> rm = bt::random_floats(size_t(k.s.c), 73, -1.0, 1.0);
  std::vector<double> rv = bt::random_floats(size_t(k.s.c), 74, 0.5, 2.0);
  const bt::InferenceResult base = bt::forward_inference(h, k, cfg, x0, p, rm, rv);
  const bt::InferenceResult got = bt::forward_inference(h, k, cfg, x, p, rm, rv);
  ASSERT_EQ(base.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isfinite(x[i])) {
      ASSERT_EQ(got.y[i], base.y[i]) << "element " << i;
    } else {
      ASSERT_FALSE(std::isfinite(got.y[i])) << "element " << i;
    }
  }
  rv[2] = kNaN;
  const bt::InferenceResult nan_var = bt::forward_inference(h, k, cfg, x0, p, rm, rv);
  ASSERT_EQ(nan_var.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  for (int64_t ch = 0; ch < k.s.c; ++ch) {
    const std::vector<double> y = channel(k, nan_var.y, ch), y0 = channel(k, base.y, ch);
    for (size_t j = 0; j < y.size(); ++j) {
      if (ch == 2) {
        ASSERT_TRUE(std::isnan(y[j])) << "channel 2 value " << j;
      } else {
        ASSERT_EQ(y[j], y0[j]) << "channel " << ch << " value " << j;
      }
    }
  }
}

std::vector<Case> non_finite_cases() {
  std::vector<Case> out;
  // One block per channel (tiny), and a reduction split across blocks.
  for (bt::Shape s : {bt::Shape{3, 6, 11}, bt::Shape{4, 6, 700}}) {
    for (const Case& k : all_types(s)) out.push_back(k);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, NonFinite, ::testing::ValuesIn(non_finite_cases()),
                         bt::CaseName());

// ---- denormals and the extremes of fp16 and bf16 --------------------------------------------------

class Extremes : public ::testing::TestWithParam<bnormLayout_t> {};

// Runs forward training on x (rounded to the dtype already) and checks each
// channel's statistics and output against the double reference, with an
// absolute tolerance on y of `y_atol` plus the dtype's rounding.
void expect_matches(const Case& k, const bt::TrainRequest& r, double eps, double y_atol) {
  bt::Handle h;
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(trace(k, path));
    const bnormConfig_t cfg = config(eps, path);
    const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
    for (size_t ch = 0; ch < size_t(k.s.c); ++ch) {
      SCOPED_TRACE(::testing::Message() << "channel " << ch);
      ASSERT_TRUE(std::isfinite(got.saved_mean[ch]) && std::isfinite(got.saved_rstd[ch]));
      EXPECT_NEAR(got.saved_mean[ch], want.mean[ch],
                  2e-5 * (std::fabs(want.mean[ch]) + std::sqrt(want.var[ch])) + 1e-44);
      EXPECT_NEAR(got.saved_rstd[ch], want.rstd[ch], 2e-5 * want.rstd[ch]);
    }
    bt::Tolerance tol = bt::output_tolerance(k.dtype);
    tol.atol += y_atol;
    EXPECT_TRUE(bt::all_close(got.y, want.y, tol, "y"));
  }
}

TEST_P(Extremes, Fp32Denormals) {
  // Channel 0: only denormals (about 1e-40), so its variance underflows
  // fp32 and eps dominates: y is beta to within a denormal. Channel 1:
  // ordinary values plus denormals. Channel 2: alternating +-1e-39.
  BT_REQUIRE_DEVICE();
  const Case k{{4, 3, 50}, GetParam(), BNORM_DATA_FLOAT};
  bt::TrainRequest r;
  r.x = gaussian(k, 81, {0.0, 1.0, 0.0}, {1.0, 1.0, 1.0});
  for (int64_t j = 0; j < k.m(); ++j) {
    r.x[at(k, 0, j)] = double(float(1e-40 * double(1 + j % 7)));
    r.x[at(k, 1, j)] += double(float(1e-41 * double(j % 3)));
    r.x[at(k, 2, j)] = double(float(j % 2 ? 1e-39 : -1e-39));
  }
  r.x = bt::round_to(r.x, k.dtype);
  r.p = bt::random_params(k.s.c, 82);
  expect_matches(k, r, 1e-5, 0.0);
}

TEST_P(Extremes, Fp16SubnormalsAndMaxima) {
  // Channel 0: fp16 subnormals only (multiples of 2^-24), normalized with
  // eps = 0, so their tiny spread must be resolved exactly (fp32 holds
  // them as normal numbers). Channel 1: +-65504 alternating. Channel 2:
  // 65504 everywhere (constant at the top of the range: y == beta).
  BT_REQUIRE_DEVICE();
  const Case k{{4, 3, 50}, GetParam(), BNORM_DATA_HALF};
  bt::TrainRequest r;
  r.x.assign(size_t(k.numel()), 0.0);
  for (int64_t j = 0; j < k.m(); ++j) {
    r.x[at(k, 0, j)] = std::ldexp(double(1 + (j * 37) % 900), -24);
    r.x[at(k, 1, j)] = j % 2 ? 65504.0 : -65504.0;
    r.x[at(k, 2, j)] = 65504.0;
  }
  r.p = bt::random_params(k.s.c, 83);
  expect_matches(k, r, 0.0 + 1e-30, 0.0);  // eps tiny but non-zero: channel 2 is constant
}

TEST_P(Extremes, Bf16SubnormalsAndLargeValues) {
  // Channel 0: bf16 subnormals (about 1e-39): variance underflows, y ==
  // beta to within rounding. Channel 1: values of about 1e18 with a spread
  // of 1e17 (the variance, 1e34, still fits fp32). Channel 2: the largest
  // bf16 everywhere (constant: y == beta).
  BT_REQUIRE_DEVICE();
  const Case k{{4, 3, 50}, GetParam(), BNORM_DATA_BFLOAT16};
  bt::TrainRequest r;
  r.x = gaussian(k, 84, {0.0, 1e18, 0.0}, {1.0, 1e17, 1.0});
  const double bf16_max = std::ldexp(255.0 / 128.0, 127);  // 3.39e38
  for (int64_t j = 0; j < k.m(); ++j) {
    r.x[at(k, 0, j)] = std::ldexp(double(1 + j % 5), -133);
    r.x[at(k, 2, j)] = bf16_max;
  }
  r.x = bt::round_to(r.x, k.dtype);
  r.p = bt::random_params(k.s.c, 85);
  expect_matches(k, r, 1e-5, 0.0);
}

TEST_P(Extremes, VarianceBeyondFp32IsInfiniteAndContained) {
  // A bf16 (or fp32) channel spread over +-1e30 has a variance of 1e60,
  // beyond fp32 (statistics are fp32): documented in bnorm.h, the channel's
  // var is +inf, rstd 0 and y == beta, as with PyTorch's fp32 statistics;
  // the other channels are unharmed.
  BT_REQUIRE_DEVICE();
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_BFLOAT16}) {
    const Case k{{4, 3, 50}, GetParam(), t};
    bt::Handle h;
    bt::TrainRequest r;
    r.x = gaussian(k, 86, {0.0, 5.0, -2.0}, {1.0, 2.0, 0.5});
    for (int64_t j = 0; j < k.m(); ++j) r.x[at(k, 1, j)] = j % 2 ? 1e30 : -1e30;
    r.x = bt::round_to(r.x, k.dtype);
    r.p = bt::random_params(k.s.c, 87);
    r.running_mean.assign(3, 0.0);
    r.running_var.assign(3, 1.0);
    const std::vector<double> beta = bt::round_to(r.p.beta, k.dtype);
    for (bnormPath_t path : bt::all_paths()) {
      SCOPED_TRACE(trace(k, path));
      const bnormConfig_t cfg = config(1e-5, path);
      const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
      ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
      const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
      EXPECT_EQ(got.saved_rstd[1], 0.0f);
      EXPECT_TRUE(std::isinf(got.running_var[1]) && got.running_var[1] > 0);
      EXPECT_NEAR(got.saved_mean[1], 0.0, 1e24);  // +-1e30 in equal numbers
      for (double v : channel(k, got.y, 1)) ASSERT_EQ(v, beta[1]);
      for (int64_t ch : {0, 2}) {
        EXPECT_NEAR(got.saved_rstd[size_t(ch)], want.rstd[size_t(ch)], 2e-5 * want.rstd[size_t(ch)]);
        EXPECT_TRUE(bt::all_close(channel(k, got.y, ch), channel(k, want.y, ch),
                                  bt::output_tolerance(k.dtype), "y"));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, Extremes,
                         ::testing::Values(BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC),
                         [](const ::testing::TestParamInfo<bnormLayout_t>& info) {
                           return std::string(bt::layout_name(info.param));
                         });

// ---- eps = 0 on constant channels, every path and type ---------------------------------------------

class EpsZeroConstant : public ::testing::TestWithParam<Case> {};

// Documented in bnorm.h: var = 0 and eps = 0 give rstd = +inf and y = NaN
// in that channel (0 * inf), as PyTorch does; nothing else is affected.
TEST_P(EpsZeroConstant, RstdInfinityOutputNaNOnlyThere) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  bt::TrainRequest r;
  r.x = gaussian(k, 91, {2.0, -1.0, 0.5, 0.0}, {1.0, 0.0, 2.0, 0.0});  // 1 and 3 constant
  r.p = bt::random_params(k.s.c, 92);
  r.running_mean.assign(4, 0.5);
  r.running_var.assign(4, 1.0);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(trace(k, path));
    const bnormConfig_t cfg = config(0.0, path);
    const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
    for (int64_t ch : {1, 3}) {
      const size_t c = size_t(ch);
      EXPECT_TRUE(std::isinf(got.saved_rstd[c]) && got.saved_rstd[c] > 0) << got.saved_rstd[c];
      EXPECT_EQ(got.saved_mean[c], float(ch == 1 ? -1.0 : 0.0));
      EXPECT_EQ(got.running_var[c], 0.9f);  // 0.9 * 1 + 0.1 * 0: finite
      EXPECT_FLOAT_EQ(got.running_mean[c], float(0.9 * 0.5 + 0.1 * (ch == 1 ? -1.0 : 0.0)));
      for (double v : channel(k, got.y, ch)) ASSERT_TRUE(std::isnan(v));
    }
    for (int64_t ch : {0, 2})
      EXPECT_TRUE(bt::all_close(channel(k, got.y, ch), channel(k, want.y, ch),
                                bt::output_tolerance(k.dtype), "y"));
  }
}

std::vector<Case> eps_zero_cases() {
  std::vector<Case> out;
  for (bt::Shape s : {bt::Shape{3, 4, 10}, bt::Shape{2, 4, 900}}) {
    for (const Case& k : all_types(s)) out.push_back(k);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, EpsZeroConstant, ::testing::ValuesIn(eps_zero_cases()),
                         bt::CaseName());

// ---- the variance's accuracy against mean / std ------------------------------------------------------

// fp32 data mean + std * N(0, 1) with std = 1 and mean = ratio, for ratios
// 1 to 1e7. The variance comes back as the running variance with factor 1
// (the unbiased batch variance, one fp32 rounding); its relative error
// against the double reference on the same fp32 values is printed (the
// README's table) and must stay below 1e-5 at every ratio, on every path.
// For contrast, the naive one-pass fp32 E[x^2] - E[x]^2 is printed too.
TEST(VarianceAccuracy, MeanOverStdFrom1To1e7) {
  BT_REQUIRE_DEVICE();
  bt::Handle h;
  std::printf("\n| mean/std | rel. error of var, worst of 2 layouts x %zu paths x 2 channels | "
              "naive fp32 E[x^2]-E[x]^2 |\n| --- | --- | --- |\n",
              bt::all_paths().size());
  for (int e = 0; e <= 7; ++e) {
    const double ratio = std::pow(10.0, e);
    double worst_all = 0.0, naive_worst = 0.0;
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC}) {
      const Case k{{16, 2, 512}, l, BNORM_DATA_FLOAT};
      bt::TrainRequest r;
      r.x = gaussian(k, 100 + uint64_t(e), {ratio, -ratio}, {1.0, 1.0});
      r.running_mean.assign(2, 0.0);
      r.running_var.assign(2, 0.0);
      const bnref_shape sh = k.ref();
      std::vector<double> mean(2), var(2);
      bnref_batch_stats(&sh, r.x.data(), 0.0, mean.data(), var.data(), nullptr);
      const double m = double(k.m());
      // Naive one-pass fp32, channel 0.
      float s1 = 0.0f, s2 = 0.0f;
      for (double v : channel(k, r.x, 0)) {
        s1 += float(v);
        s2 += float(v) * float(v);
      }
      const double naive = double(s2 / float(m) - (s1 / float(m)) * (s1 / float(m)));
      const double naive_err = std::fabs(naive - var[0]) / var[0];
      for (bnormPath_t path : bt::all_paths()) {
        SCOPED_TRACE(::testing::Message() << "mean/std " << ratio << " " << trace(k, path));
        const bt::TrainResult got = bt::forward_training(h, k, config(1e-5, path, 1.0), r);
        ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
        double worst = 0.0;
        for (size_t ch = 0; ch < 2; ++ch) {
          const double v = double(got.running_var[ch]) * (m - 1.0) / m;
          worst = std::max(worst, std::fabs(v - var[ch]) / var[ch]);
        }
        EXPECT_LE(worst, 1e-5);
        worst_all = std::max(worst_all, worst);
      }
      naive_worst = std::max(naive_worst, naive_err);
    }
    std::printf("| 1e%d | %.1e | %.1e |\n", e, worst_all, naive_worst);
  }
}

}  // namespace

// Forward training, forward inference and the folding export against the
// double-precision reference, on every standard shape x layout x dtype.
#include <cmath>

#include "harness.h"
#include "ops.h"

namespace {

using bt::Case;

// Saved statistics are fp32 whatever the activations: their error is fp32
// rounding of sums over m values, relative to the channel's spread.
constexpr double kStatRtol = 2e-5;

bnormConfig_t config(double eps, double factor) {
  bnormConfig_t c = BNORM_CONFIG_INITIALIZER;
  c.eps = eps;
  c.exponential_average_factor = factor;
  return c;
}

bt::TrainRequest standard_request(const Case& k, uint64_t seed) {
  bt::TrainRequest r;
  r.x = bt::random_activations(k, seed);
  r.p = bt::random_params(k.s.c, seed + 10);
  r.running_mean = bt::random_floats(size_t(k.s.c), seed + 20, -1.0, 1.0);
  r.running_var = bt::random_floats(size_t(k.s.c), seed + 30, 0.5, 2.0);
  return r;
}

void expect_stats(const Case& k, const bt::TrainResult& got, const bt::RefTrain& want) {
  std::vector<double> spread(want.var.size());
  for (size_t i = 0; i < spread.size(); ++i) spread[i] = std::sqrt(want.var[i]);
  for (size_t ch = 0; ch < want.mean.size(); ++ch) {
    SCOPED_TRACE(::testing::Message() << k.name() << " channel " << ch);
    ASSERT_TRUE(std::isfinite(got.saved_mean[ch]) && std::isfinite(got.saved_rstd[ch]));
    EXPECT_NEAR(got.saved_mean[ch], want.mean[ch], kStatRtol * (spread[ch] + std::fabs(want.mean[ch])));
    EXPECT_NEAR(got.saved_rstd[ch], want.rstd[ch], kStatRtol * want.rstd[ch]);
  }
}

class ForwardTraining : public ::testing::TestWithParam<Case> {};

// Every kernel path (bnormPath_t) on every shape: the automatic choice, the
// multi-pass kernels and the single-block kernel.
TEST_P(ForwardTraining, MatchesReferenceOnEveryPath) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bt::TrainRequest r = standard_request(k, 1000 + uint64_t(k.numel()));
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    bnormConfig_t cfg = config(1e-5, 0.1);
    cfg.path = path;
    const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
    EXPECT_TRUE(bt::all_close(got.y, want.y, bt::output_tolerance(k.dtype), "y"));
    expect_stats(k, got, want);
    EXPECT_TRUE(bt::all_close(bt::to_double(got.running_mean), want.running_mean,
                              {1e-6, kStatRtol}, "running_mean"));
    EXPECT_TRUE(bt::all_close(bt::to_double(got.running_var), want.running_var,
                              {1e-6, kStatRtol}, "running_var"));
  }
}

TEST_P(ForwardTraining, OptionalPointersNullInPlace) {
  // gamma/beta NULL (ones and zeros), nothing tracked, nothing saved, y == x.
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  bt::TrainRequest r;
  r.x = bt::random_activations(k, 77 + uint64_t(k.s.c));
  r.save_stats = false;
  r.in_place = true;
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    bnormConfig_t cfg = config(1e-3, 0.1);
    cfg.path = path;
    const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
    EXPECT_TRUE(bt::all_close(got.y, want.y, bt::output_tolerance(k.dtype), "y (in place)"));
  }
}

INSTANTIATE_TEST_SUITE_P(Standard, ForwardTraining, ::testing::ValuesIn(bt::standard_cases()),
                         bt::CaseName());

class ForwardInference : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardInference, MatchesReference) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(1e-4, 0.1);
  const std::vector<double> x = bt::random_activations(k, 31 + uint64_t(k.numel()));
  const bt::ChannelParams p = bt::random_params(k.s.c, 5);
  const std::vector<double> rm = bt::random_floats(size_t(k.s.c), 6, -3.0, 3.0);
  const std::vector<double> rv = bt::random_floats(size_t(k.s.c), 7, 0.25, 4.0);
  const bt::InferenceResult got = bt::forward_inference(h, k, cfg, x, p, rm, rv);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();

  std::vector<double> want(x.size());
  const bnref_shape sh = k.ref();
  bnref_forward_inference(&sh, x.data(), p.gamma.data(), p.beta.data(), rm.data(), rv.data(),
                          cfg.eps, want.data());
  EXPECT_TRUE(bt::all_close(got.y, want, bt::output_tolerance(k.dtype), "y"));
}

TEST_P(ForwardInference, NullGammaBetaInPlace) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(0.0, 0.1);  // eps = 0 is legal; the variances are positive
  const std::vector<double> x = bt::random_activations(k, 9 + uint64_t(k.s.spatial));
  const std::vector<double> rm = bt::random_floats(size_t(k.s.c), 16, -3.0, 3.0);
  const std::vector<double> rv = bt::random_floats(size_t(k.s.c), 17, 0.25, 4.0);
  const bt::InferenceResult got = bt::forward_inference(h, k, cfg, x, {}, rm, rv, true);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  std::vector<double> want(x.size());
  const bnref_shape sh = k.ref();
  bnref_forward_inference(&sh, x.data(), nullptr, nullptr, rm.data(), rv.data(), 0.0,
                          want.data());
  EXPECT_TRUE(bt::all_close(got.y, want, bt::output_tolerance(k.dtype), "y (in place)"));
}

INSTANTIATE_TEST_SUITE_P(Standard, ForwardInference, ::testing::ValuesIn(bt::standard_cases()),
                         bt::CaseName());

// The exported (scale, shift) reproduce inference as one multiply-add.
class ScaleShift : public ::testing::TestWithParam<int64_t> {};

TEST_P(ScaleShift, MatchesReferenceAndReproducesInference) {
  BT_REQUIRE_DEVICE();
  const int64_t c = GetParam();
  bt::Handle h;
  bnormConfig_t cfg = config(1e-5, 0.1);
  const bt::ChannelParams p = bt::random_params(c, 40);
  const std::vector<double> rm = bt::random_floats(size_t(c), 41, -5.0, 5.0);
  const std::vector<double> rv = bt::random_floats(size_t(c), 42, 0.01, 9.0);
  bt::DeviceBuffer g = bt::upload_floats(p.gamma), b = bt::upload_floats(p.beta);
  bt::DeviceBuffer m = bt::upload_floats(rm), v = bt::upload_floats(rv);
  bt::DeviceBuffer scale(size_t(c) * 4), shift(size_t(c) * 4);
  scale.poison();
  shift.poison();
  BT_OK(bnormGetInferenceScaleShift(h, nullptr, c, &cfg, g.f32(), b.f32(), m.f32(), v.f32(),
                                    scale.f32(), shift.f32()));
  BT_CUDA(cudaDeviceSynchronize());
  std::vector<double> want_scale(static_cast<size_t>(c)), want_shift(static_cast<size_t>(c));
  bnref_scale_shift(c, p.gamma.data(), p.beta.data(), rm.data(), rv.data(), cfg.eps,
                    want_scale.data(), want_shift.data());
  const std::vector<double> got_scale = bt::to_double(scale.download_f32());
  const std::vector<double> got_shift = bt::to_double(shift.download_f32());
  EXPECT_TRUE(bt::all_close(got_scale, want_scale, {1e-7, 1e-6}, "scale"));
  EXPECT_TRUE(bt::all_close(got_shift, want_shift, {1e-6, 1e-6}, "shift"));

  // Folding: x * scale + shift is inference, for a value per channel.
  for (int64_t ch = 0; ch < c; ++ch) {
    const double x = rm[size_t(ch)] + 1.5;
    const double inf = p.gamma[size_t(ch)] * (x - rm[size_t(ch)]) /
                           std::sqrt(rv[size_t(ch)] + cfg.eps) + p.beta[size_t(ch)];
    EXPECT_NEAR(x * got_scale[size_t(ch)] + got_shift[size_t(ch)], inf, 1e-5 * (1 + std::fabs(inf)));
  }
}

TEST_P(ScaleShift, NullGammaBetaMeanOnesAndZeros) {
  BT_REQUIRE_DEVICE();
  const int64_t c = GetParam();
  bt::Handle h;
  bnormConfig_t cfg = config(1e-2, 0.1);
  const std::vector<double> rm = bt::random_floats(size_t(c), 51, -5.0, 5.0);
  const std::vector<double> rv = bt::random_floats(size_t(c), 52, 0.01, 9.0);
  bt::DeviceBuffer m = bt::upload_floats(rm), v = bt::upload_floats(rv);
  bt::DeviceBuffer scale(size_t(c) * 4), shift(size_t(c) * 4);
  scale.poison();
  shift.poison();
  BT_OK(bnormGetInferenceScaleShift(h, nullptr, c, &cfg, nullptr, nullptr, m.f32(), v.f32(),
                                    scale.f32(), shift.f32()));
  BT_CUDA(cudaDeviceSynchronize());
  std::vector<double> want_scale(static_cast<size_t>(c)), want_shift(static_cast<size_t>(c));
  bnref_scale_shift(c, nullptr, nullptr, rm.data(), rv.data(), cfg.eps, want_scale.data(),
                    want_shift.data());
  EXPECT_TRUE(bt::all_close(bt::to_double(scale.download_f32()), want_scale, {1e-7, 1e-6}, "scale"));
  EXPECT_TRUE(bt::all_close(bt::to_double(shift.download_f32()), want_shift, {1e-6, 1e-6}, "shift"));
}

INSTANTIATE_TEST_SUITE_P(Channels, ScaleShift, ::testing::Values(1, 3, 64, 257, 5000));

}  // namespace

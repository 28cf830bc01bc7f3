// Tests of the double-precision reference itself: the library's kernels are
// judged against it, so it must be right first. Hand-worked cases pin the
// formulas; finite differences pin the backward to the forward it differentiates.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bn_reference.h"

namespace {

using Vec = std::vector<double>;

Vec Normal(std::mt19937_64& rng, int64_t count, double mean = 0.0, double stddev = 1.0) {
  std::normal_distribution<double> dist(mean, stddev);
  Vec v(static_cast<size_t>(count));
  for (double& e : v) e = dist(rng);
  return v;
}

// ---------------------------------------------------------------------------
// (a) Hand-computed cases

TEST(ReferenceLayout, OffsetsFollowNchwAndNhwc) {
  // n=2, c=3, spatial=4; element (i=1, ch=2, s=3):
  //   NCHW: (1*3 + 2)*4 + 3 = 23      NHWC: (1*4 + 3)*3 + 2 = 23 (the last element both ways)
  //   (i=1, ch=0, s=2): NCHW (3+0)*4+2 = 14, NHWC (4+2)*3+0 = 18
  const bnref_shape nchw = {BNREF_NCHW, 2, 3, 4}, nhwc = {BNREF_NHWC, 2, 3, 4};
  EXPECT_EQ(bnref_numel(&nchw), 24);
  EXPECT_EQ(bnref_offset(&nchw, 1, 2, 3), 23);
  EXPECT_EQ(bnref_offset(&nhwc, 1, 2, 3), 23);
  EXPECT_EQ(bnref_offset(&nchw, 1, 0, 2), 14);
  EXPECT_EQ(bnref_offset(&nhwc, 1, 0, 2), 18);
  EXPECT_EQ(bnref_offset(&nchw, 0, 1, 0), 4);
  EXPECT_EQ(bnref_offset(&nhwc, 0, 1, 0), 1);
}

TEST(ReferenceHand, OneChannelStatsAndForward) {
  // x = {1,2,3,4}: mean = 10/4 = 2.5; deviations -1.5,-0.5,0.5,1.5;
  // squares 2.25+0.25+0.25+2.25 = 5, var = 5/4 = 1.25 (biased).
  // eps = 2.75 makes var+eps = 4, so rstd = 0.5 and xhat = {-0.75,-0.25,0.25,0.75};
  // gamma = 2, beta = 1: y = 2*xhat + 1 = {-0.5, 0.5, 1.5, 2.5}. All exact in binary.
  const bnref_shape sh = {BNREF_NCHW, 1, 1, 4};
  const Vec x = {1, 2, 3, 4};
  const double gamma = 2, beta = 1;
  Vec y(4);
  double mean, var, rstd;
  bnref_forward_training(&sh, x.data(), &gamma, &beta, 2.75, y.data(), &mean, &var, &rstd);
  EXPECT_EQ(mean, 2.5);
  EXPECT_EQ(var, 1.25);
  EXPECT_EQ(rstd, 0.5);
  EXPECT_EQ(y, (Vec{-0.5, 0.5, 1.5, 2.5}));

  // eps = 0: rstd = 1/sqrt(1.25) = 0.894427190999916
  bnref_batch_stats(&sh, x.data(), 0.0, nullptr, nullptr, &rstd);
  EXPECT_NEAR(rstd, 0.894427190999916, 1e-15);
}

TEST(ReferenceHand, OneChannelBackward) {
  // Same x, eps = 2.75 (rstd 0.5, xhat = {-0.75,-0.25,0.25,0.75}), gamma = 1, dy = {1,0,0,0}:
  //   dbeta = 1, dgamma = 1*(-0.75) = -0.75, m = 4
  //   dx = 0.5*(dy - 1/4 - xhat*(-0.75)/4) = 0.5*(dy - 0.25 + 0.1875*xhat)
  //   dx0 = 0.5*(1 - 0.25 - 0.140625) = 0.3046875
  //   dx1 = 0.5*(0 - 0.25 - 0.046875) = -0.1484375
  //   dx2 = 0.5*(0 - 0.25 + 0.046875) = -0.1015625
  //   dx3 = 0.5*(0 - 0.25 + 0.140625) = -0.0546875      (sum 0: shifting x changes nothing)
  const bnref_shape sh = {BNREF_NCHW, 1, 1, 4};
  const Vec x = {1, 2, 3, 4}, dy = {1, 0, 0, 0};
  const double mean = 2.5, rstd = 0.5;
  Vec dx(4);
  double dgamma, dbeta;
  bnref_backward(&sh, x.data(), dy.data(), nullptr, &mean, &rstd, dx.data(), &dgamma, &dbeta);
  EXPECT_EQ(dbeta, 1.0);
  EXPECT_EQ(dgamma, -0.75);
  EXPECT_EQ(dx, (Vec{0.3046875, -0.1484375, -0.1015625, -0.0546875}));

  // Frozen, rm = 2.5, rv = 1.25, eps = 2.75 (same rstd): dx = 1*0.5*dy, same sums.
  const double rv = 1.25;
  bnref_backward_frozen(&sh, x.data(), dy.data(), nullptr, &mean, &rv, 2.75, dx.data(), &dgamma,
                        &dbeta);
  EXPECT_EQ(dbeta, 1.0);
  EXPECT_EQ(dgamma, -0.75);
  EXPECT_EQ(dx, (Vec{0.5, 0, 0, 0}));
}

TEST(ReferenceHand, TwoChannelsSameStatsInBothLayouts) {
  // n=2, c=2, spatial=2. Channel 0 holds {0,2,4,6}: mean 3, deviations -3,-1,1,3,
  // var (9+1+1+9)/4 = 5. Channel 1 holds {10,10,14,14}: mean 12, deviations +-2, var 4.
  //   NCHW order (i, ch, s): i0c0{0,2} i0c1{10,10} i1c0{4,6} i1c1{14,14}
  //   NHWC order (i, s, ch): i0s0{0,10} i0s1{2,10} i1s0{4,14} i1s1{6,14}
  // eps = 0: rstd = {1/sqrt(5), 1/2}; channel 1 normalizes to xhat = +-1, so with
  // gamma = {1, 3}, beta = {0, -1}: y(ch1) = 3*(+-1) - 1 = {-4,-4,2,2}.
  const Vec x_nchw = {0, 2, 10, 10, 4, 6, 14, 14};
  const Vec x_nhwc = {0, 10, 2, 10, 4, 14, 6, 14};
  const Vec gamma = {1, 3}, beta = {0, -1};
  const double r5 = 1.0 / std::sqrt(5.0);
  struct Case {
    bnref_layout layout;
    const Vec* x;
  };
  for (const Case& k : {Case{BNREF_NCHW, &x_nchw}, Case{BNREF_NHWC, &x_nhwc}}) {
    SCOPED_TRACE(k.layout == BNREF_NCHW ? "NCHW" : "NHWC");
    const bnref_shape sh = {k.layout, 2, 2, 2};
    Vec mean(2), var(2), rstd(2), y(8);
    bnref_forward_training(&sh, k.x->data(), gamma.data(), beta.data(), 0.0, y.data(),
                           mean.data(), var.data(), rstd.data());
    EXPECT_EQ(mean, (Vec{3, 12}));
    EXPECT_EQ(var, (Vec{5, 4}));
    EXPECT_NEAR(rstd[0], r5, 1e-15);
    EXPECT_EQ(rstd[1], 0.5);
    const Vec y0 = {-3 * r5, -1 * r5, 1 * r5, 3 * r5}, y1 = {-4, -4, 2, 2};
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t s = 0; s < 2; ++s) {
        const size_t j = static_cast<size_t>(i * 2 + s);
        EXPECT_NEAR(y[bnref_offset(&sh, i, 0, s)], y0[j], 1e-15);
        EXPECT_EQ(y[bnref_offset(&sh, i, 1, s)], y1[j]);
      }
  }
}

TEST(ReferenceHand, ScaleShiftMatchesInference) {
  // gamma 2, beta 1, rm 3, rv 3, eps 1: scale = 2/sqrt(4) = 1, shift = 1 - 3*1 = -2.
  // gamma/beta NULL (1, 0): scale = 1/2, shift = -3/2.
  const double gamma = 2, beta = 1, rm = 3, rv = 3;
  double scale, shift;
  bnref_scale_shift(1, &gamma, &beta, &rm, &rv, 1.0, &scale, &shift);
  EXPECT_EQ(scale, 1.0);
  EXPECT_EQ(shift, -2.0);
  bnref_scale_shift(1, nullptr, nullptr, &rm, &rv, 1.0, &scale, &shift);
  EXPECT_EQ(scale, 0.5);
  EXPECT_EQ(shift, -1.5);

  // Folded form agrees with forward_inference on random data, both layouts.
  std::mt19937_64 rng(7);
  for (bnref_layout layout : {BNREF_NCHW, BNREF_NHWC}) {
    const bnref_shape sh = {layout, 3, 4, 5};
    const Vec x = Normal(rng, bnref_numel(&sh)), g = Normal(rng, 4), b = Normal(rng, 4),
              m = Normal(rng, 4);
    Vec v = Normal(rng, 4);
    for (double& e : v) e = e * e + 0.1;
    Vec sc(4), sf(4), y(x.size());
    bnref_scale_shift(4, g.data(), b.data(), m.data(), v.data(), 1e-5, sc.data(), sf.data());
    bnref_forward_inference(&sh, x.data(), g.data(), b.data(), m.data(), v.data(), 1e-5,
                            y.data());
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t ch = 0; ch < 4; ++ch)
        for (int64_t s = 0; s < 5; ++s) {
          const int64_t o = bnref_offset(&sh, i, ch, s);
          EXPECT_NEAR(y[o], sc[ch] * x[o] + sf[ch], 1e-12 * (1 + std::fabs(y[o])));
        }
  }
}

TEST(ReferenceEdge, EmptyBatchGivesZeroGradientSums) {
  // m == 0: nothing to sum, so dgamma = dbeta = 0 (and no tensor is touched).
  const bnref_shape sh = {BNREF_NHWC, 0, 3, 4};
  const Vec mean = {1, 2, 3}, rstd = {1, 1, 1};
  Vec dgamma(3, 9.0), dbeta(3, 9.0);
  bnref_backward(&sh, nullptr, nullptr, nullptr, mean.data(), rstd.data(), nullptr,
                 dgamma.data(), dbeta.data());
  EXPECT_EQ(dgamma, Vec(3, 0.0));
  EXPECT_EQ(dbeta, Vec(3, 0.0));
}

TEST(ReferenceEdge, NullOutputsAreSkipped) {
  const bnref_shape sh = {BNREF_NCHW, 2, 2, 3};
  std::mt19937_64 rng(11);
  const Vec x = Normal(rng, 12), dy = Normal(rng, 12);
  Vec y(12), mean(2), rstd(2), dgamma(2), dx(12);
  bnref_forward_training(&sh, x.data(), nullptr, nullptr, 1e-5, y.data(), nullptr, nullptr,
                         nullptr);
  bnref_batch_stats(&sh, x.data(), 1e-5, mean.data(), nullptr, rstd.data());
  bnref_backward(&sh, x.data(), dy.data(), nullptr, mean.data(), rstd.data(), nullptr,
                 dgamma.data(), nullptr);
  bnref_backward(&sh, x.data(), dy.data(), nullptr, mean.data(), rstd.data(), dx.data(), nullptr,
                 nullptr);
  double dx_sum = 0;
  for (double e : dx) dx_sum += e;
  EXPECT_NEAR(dx_sum, 0.0, 1e-12);  // dx of a normalized channel sums to zero
}

// ---------------------------------------------------------------------------
// (b) Properties of y, (e) large mean, (f) constant channel

class ReferenceLayoutP : public ::testing::TestWithParam<bnref_layout> {};

TEST_P(ReferenceLayoutP, OutputHasMeanBetaAndStdAbsGamma) {
  // Per channel, mean(y) = beta and std(y) = |gamma| * sqrt(var/(var+eps)).
  const bnref_shape sh = {GetParam(), 4, 3, 25};
  std::mt19937_64 rng(1234);
  const Vec x = Normal(rng, bnref_numel(&sh), 5.0, 3.0);
  const Vec gamma = {2.0, -0.5, 0.0}, beta = {-1.0, 3.0, 0.25};
  const double eps = 1e-3;
  Vec y(x.size()), var(3), ymean(3), yvar(3);
  bnref_forward_training(&sh, x.data(), gamma.data(), beta.data(), eps, y.data(), nullptr,
                         var.data(), nullptr);
  bnref_batch_stats(&sh, y.data(), 0.0, ymean.data(), yvar.data(), nullptr);
  for (size_t ch = 0; ch < 3; ++ch) {
    EXPECT_NEAR(ymean[ch], beta[ch], 1e-13);
    EXPECT_NEAR(std::sqrt(yvar[ch]), std::fabs(gamma[ch]) * std::sqrt(var[ch] / (var[ch] + eps)),
                1e-13);
  }
}

TEST_P(ReferenceLayoutP, LargeMeanKeepsVarianceAccurate) {
  // x ~ N(1e6, 1): E[x^2] - E[x]^2 would lose ~12 digits here. Subtracting 1e6 is
  // exact for these values (Sterbenz), so the shifted data's statistics are the truth.
  const bnref_shape sh = {GetParam(), 8, 2, 625};  // m = 5000
  std::mt19937_64 rng(99);
  const Vec x = Normal(rng, bnref_numel(&sh), 1e6, 1.0);
  Vec shifted(x.size());
  for (size_t i = 0; i < x.size(); ++i) shifted[i] = x[i] - 1e6;
  Vec mean(2), var(2), smean(2), svar(2);
  bnref_batch_stats(&sh, x.data(), 0.0, mean.data(), var.data(), nullptr);
  bnref_batch_stats(&sh, shifted.data(), 0.0, smean.data(), svar.data(), nullptr);
  for (size_t ch = 0; ch < 2; ++ch) {
    EXPECT_NEAR(var[ch], svar[ch], 1e-12 * svar[ch]);
    EXPECT_NEAR(mean[ch], 1e6 + smean[ch], 1e-16 * 1e6);
    EXPECT_NEAR(var[ch], 1.0, 0.1);  // sanity: it is the unit variance drawn
  }
}

TEST_P(ReferenceLayoutP, ConstantChannelGivesBetaExactly) {
  // The compensated mean recovers the value exactly even where its plain sum rounds
  // (0.1 * 21), so x - mean = 0, var = 0 and y = gamma*0 + beta is beta bit for bit.
  // eps > 0: with eps = 0, rstd = inf and 0 * inf would be NaN.
  const bnref_shape sh = {GetParam(), 3, 2, 7};
  Vec x(static_cast<size_t>(bnref_numel(&sh)));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t s = 0; s < 7; ++s) {
      x[bnref_offset(&sh, i, 0, s)] = 0.1;
      x[bnref_offset(&sh, i, 1, s)] = -12345.678;
    }
  const Vec gamma = {3.0, -7.0}, beta = {0.3, 1e-7};
  Vec y(x.size()), mean(2), var(2);
  bnref_forward_training(&sh, x.data(), gamma.data(), beta.data(), 1e-5, y.data(), mean.data(),
                         var.data(), nullptr);
  EXPECT_EQ(mean, (Vec{0.1, -12345.678}));
  EXPECT_EQ(var, (Vec{0.0, 0.0}));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t s = 0; s < 7; ++s) {
      EXPECT_EQ(y[bnref_offset(&sh, i, 0, s)], 0.3);
      EXPECT_EQ(y[bnref_offset(&sh, i, 1, s)], 1e-7);
    }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ReferenceLayoutP, ::testing::Values(BNREF_NCHW, BNREF_NHWC),
                         [](const ::testing::TestParamInfo<bnref_layout>& info) {
                           return std::string(info.param == BNREF_NCHW ? "NCHW" : "NHWC");
                         });

// ---------------------------------------------------------------------------
// (c) Running statistics

TEST(ReferenceRunning, BlendsWithFactorAndBesselCorrection) {
  // rm = 1, rv = 2, batch mean 3, var 4, m = 5: unbiased var = 4 * 5/4 = 5.
  //   f = 0.25: rm = 0.75*1 + 0.25*3 = 1.5;  rv = 0.75*2 + 0.25*5 = 2.75
  double rm = 1, rv = 2;
  const double mean = 3, var = 4;
  bnref_update_running(1, 5, 0.25, &mean, &var, &rm, &rv);
  EXPECT_EQ(rm, 1.5);
  EXPECT_EQ(rv, 2.75);
}

TEST(ReferenceRunning, FactorZeroLeavesStatsUnchanged) {
  Vec rm = {1, -2}, rv = {3, 4};
  const Vec mean = {10, 20}, var = {30, 40};
  bnref_update_running(2, 8, 0.0, mean.data(), var.data(), rm.data(), rv.data());
  EXPECT_EQ(rm, (Vec{1, -2}));
  EXPECT_EQ(rv, (Vec{3, 4}));
}

TEST(ReferenceRunning, FactorOneReplacesWithUnbiasedBatchStats) {
  // m = 2: unbiased = var * 2/1; m = 4: var * 4/3 (12 * 4/3 = 16).
  Vec rm = {1, -2}, rv = {3, 4};
  const Vec mean = {10, 20}, var = {30, 12};
  bnref_update_running(2, 2, 1.0, mean.data(), var.data(), rm.data(), rv.data());
  EXPECT_EQ(rm, (Vec{10, 20}));
  EXPECT_EQ(rv, (Vec{60, 24}));
  bnref_update_running(2, 4, 1.0, mean.data(), var.data(), rm.data(), rv.data());
  EXPECT_EQ(rv[1], 16.0);
  EXPECT_NEAR(rv[0], 40.0, 1e-14);
}

// ---------------------------------------------------------------------------
// (d) Backward against central finite differences of L = sum_j w_j y_j

struct GradCase {
  bnref_layout layout;
  int64_t n, c, spatial;
};

std::string GradCaseName(const ::testing::TestParamInfo<GradCase>& info) {
  const GradCase& g = info.param;
  return std::string(g.layout == BNREF_NCHW ? "NCHW" : "NHWC") + "_n" + std::to_string(g.n) +
         "_c" + std::to_string(g.c) + "_s" + std::to_string(g.spatial);
}

// Compares an analytic gradient with a central difference of `loss` in each entry of `param`.
// Tolerance is relative to the gradient's largest entry, since single entries can be ~0.
void ExpectMatchesFiniteDifferences(const char* what, Vec& param, const Vec& analytic,
                                    const std::function<double()>& loss) {
  SCOPED_TRACE(what);
  double scale = 1e-3;
  for (double g : analytic) scale = std::max(scale, std::fabs(g));
  for (size_t j = 0; j < param.size(); ++j) {
    const double saved = param[j], h = 1e-5 * std::max(1.0, std::fabs(saved));
    param[j] = saved + h;
    const double up = loss();
    param[j] = saved - h;
    const double down = loss();
    param[j] = saved;
    const double numeric = (up - down) / (2 * h);
    EXPECT_NEAR(analytic[j], numeric, 1e-6 * scale) << "entry " << j;
  }
}

class ReferenceGradP : public ::testing::TestWithParam<GradCase> {
 protected:
  void SetUp() override {
    const GradCase& g = GetParam();
    sh_ = {g.layout, g.n, g.c, g.spatial};
    std::mt19937_64 rng(2024 + static_cast<uint64_t>(g.n * 100 + g.c * 10 + g.spatial));
    x_ = Normal(rng, bnref_numel(&sh_), 0.5, 2.0);
    w_ = Normal(rng, bnref_numel(&sh_));
    gamma_ = Normal(rng, g.c, 1.0, 0.5);
    beta_ = Normal(rng, g.c);
    rm_ = Normal(rng, g.c);
    rv_ = Normal(rng, g.c);
    for (double& v : rv_) v = v * v + 0.5;
  }

  double Dot(const Vec& y) const {
    double s = 0;
    for (size_t j = 0; j < y.size(); ++j) s += w_[j] * y[j];
    return s;
  }

  bnref_shape sh_{};
  Vec x_, w_, gamma_, beta_, rm_, rv_;
  const double eps_ = 1e-3;
};

TEST_P(ReferenceGradP, TrainingBackwardMatchesFiniteDifferences) {
  Vec y(x_.size());
  auto loss = [&] {
    bnref_forward_training(&sh_, x_.data(), gamma_.data(), beta_.data(), eps_, y.data(), nullptr,
                           nullptr, nullptr);
    return Dot(y);
  };
  // dL/dy = w, so the backward of L is bnref_backward with dy = w.
  Vec mean(gamma_.size()), rstd(gamma_.size()), dx(x_.size()), dgamma(gamma_.size()),
      dbeta(gamma_.size());
  bnref_batch_stats(&sh_, x_.data(), eps_, mean.data(), nullptr, rstd.data());
  bnref_backward(&sh_, x_.data(), w_.data(), gamma_.data(), mean.data(), rstd.data(), dx.data(),
                 dgamma.data(), dbeta.data());
  ExpectMatchesFiniteDifferences("dx", x_, dx, loss);
  ExpectMatchesFiniteDifferences("dgamma", gamma_, dgamma, loss);
  ExpectMatchesFiniteDifferences("dbeta", beta_, dbeta, loss);
}

TEST_P(ReferenceGradP, FrozenBackwardMatchesFiniteDifferences) {
  Vec y(x_.size());
  auto loss = [&] {
    bnref_forward_inference(&sh_, x_.data(), gamma_.data(), beta_.data(), rm_.data(), rv_.data(),
                            eps_, y.data());
    return Dot(y);
  };
  Vec dx(x_.size()), dgamma(gamma_.size()), dbeta(gamma_.size());
  bnref_backward_frozen(&sh_, x_.data(), w_.data(), gamma_.data(), rm_.data(), rv_.data(), eps_,
                        dx.data(), dgamma.data(), dbeta.data());
  ExpectMatchesFiniteDifferences("dx", x_, dx, loss);
  ExpectMatchesFiniteDifferences("dgamma", gamma_, dgamma, loss);
  ExpectMatchesFiniteDifferences("dbeta", beta_, dbeta, loss);
}

// Through the fused epilogue: L = sum w * relu(bn(x) + z). The gradient
// reaching bn is w where the pre-activation is positive (bnref_relu_backward),
// and dL/dz is that same masked gradient. z is nudged so that no
// pre-activation sits within 0.05 of the kink, where a finite difference of
// step 1e-5 would straddle it.
TEST_P(ReferenceGradP, AddReluEpilogueMatchesFiniteDifferences) {
  const int64_t n = bnref_numel(&sh_);
  std::mt19937_64 rng(77);
  Vec z = Normal(rng, n), y(x_.size()), pre(x_.size()), out(x_.size());
  bnref_forward_training(&sh_, x_.data(), gamma_.data(), beta_.data(), eps_, y.data(), nullptr,
                         nullptr, nullptr);
  for (int64_t i = 0; i < n; ++i) {
    const double v = y[i] + z[i];
    if (std::fabs(v) < 0.05) z[i] += v < 0 ? -0.1 : 0.1;
  }
  auto loss = [&] {
    bnref_forward_training(&sh_, x_.data(), gamma_.data(), beta_.data(), eps_, y.data(), nullptr,
                           nullptr, nullptr);
    bnref_add_relu(n, y.data(), z.data(), out.data(), nullptr);
    return Dot(out);
  };
  std::vector<unsigned char> positive(static_cast<size_t>(n));
  bnref_add_relu(n, y.data(), z.data(), out.data(), positive.data());
  size_t open = 0;
  for (unsigned char p : positive) open += p;
  ASSERT_GT(open, 0u);
  ASSERT_LT(open, positive.size()) << "the ReLU must close somewhere for the test to mean anything";
  Vec g(x_.size()), mean(gamma_.size()), rstd(gamma_.size()), dx(x_.size()),
      dgamma(gamma_.size()), dbeta(gamma_.size());
  bnref_relu_backward(n, w_.data(), positive.data(), g.data());
  bnref_batch_stats(&sh_, x_.data(), eps_, mean.data(), nullptr, rstd.data());
  bnref_backward(&sh_, x_.data(), g.data(), gamma_.data(), mean.data(), rstd.data(), dx.data(),
                 dgamma.data(), dbeta.data());
  ExpectMatchesFiniteDifferences("dx", x_, dx, loss);
  ExpectMatchesFiniteDifferences("dz", z, g, loss);
  ExpectMatchesFiniteDifferences("dgamma", gamma_, dgamma, loss);
  ExpectMatchesFiniteDifferences("dbeta", beta_, dbeta, loss);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ReferenceGradP,
                         ::testing::Values(GradCase{BNREF_NCHW, 3, 2, 5},
                                           GradCase{BNREF_NHWC, 3, 2, 5},
                                           GradCase{BNREF_NCHW, 2, 3, 1},
                                           GradCase{BNREF_NHWC, 2, 3, 1},
                                           GradCase{BNREF_NCHW, 1, 1, 7},
                                           GradCase{BNREF_NHWC, 1, 1, 7},
                                           GradCase{BNREF_NHWC, 4, 5, 3}),
                         GradCaseName);

}  // namespace

// Backward (through the batch statistics, with saved or recomputed
// statistics) and the frozen-statistics backward against the
// double-precision reference, on every standard shape x layout x dtype.
#include <cmath>

#include "harness.h"
#include "ops.h"

namespace {

using bt::Case;

bnormConfig_t config(double eps) {
  bnormConfig_t c = BNORM_CONFIG_INITIALIZER;
  c.eps = eps;
  return c;
}

// dgamma and dbeta are sums over m values: their rounding error scales with
// the sum of the magnitudes, not with the (possibly cancelling) result.
void expect_param_grads(const bt::BackwardResult& got, const bt::RefBackward& want) {
  ASSERT_EQ(got.dgamma.size(), want.dgamma.size());
  for (size_t ch = 0; ch < want.dgamma.size(); ++ch) {
    SCOPED_TRACE(::testing::Message() << "channel " << ch);
    ASSERT_TRUE(std::isfinite(got.dgamma[ch]) && std::isfinite(got.dbeta[ch]));
    EXPECT_NEAR(got.dbeta[ch], want.dbeta[ch], 1e-5 * want.abs_dbeta[ch] + 1e-6);
    EXPECT_NEAR(got.dgamma[ch], want.dgamma[ch], 1e-5 * want.abs_dgamma[ch] + 1e-6);
  }
}

// dx is gamma * rstd times a combination of unit-scale terms.
bt::Tolerance dx_tolerance(const Case& k, const bt::RefBackward& want) {
  bt::Tolerance t = bt::output_tolerance(k.dtype);
  t.atol *= 4.0 * std::max(1.0, want.dx_scale);
  return t;
}

bt::BackwardRequest request(const Case& k, uint64_t seed) {
  bt::BackwardRequest r;
  r.x = bt::random_activations(k, seed);
  r.dy = bt::random_activations(k, seed + 1, -0.5, 0.5, 0.5, 1.5);
  r.gamma = bt::random_params(k.s.c, seed + 2).gamma;
  return r;
}

// Runs forward training to obtain the saved statistics, as a user would.
void fill_saved_stats(bnormHandle_t h, const Case& k, const bnormConfig_t& cfg,
                      bt::BackwardRequest* r) {
  bt::TrainRequest t;
  t.x = r->x;
  const bt::TrainResult f = bt::forward_training(h, k, cfg, t);
  ASSERT_EQ(f.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  r->mean = bt::to_double(f.saved_mean);
  r->stat = bt::to_double(f.saved_rstd);
}

class Backward : public ::testing::TestWithParam<Case> {};

// Every kernel path (bnormPath_t) on every shape.
TEST_P(Backward, WithSavedStatisticsMatchesReference) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    bnormConfig_t cfg = config(1e-5);
    cfg.path = path;
    bt::BackwardRequest r = request(k, 500 + uint64_t(k.numel()));
    fill_saved_stats(h, k, cfg, &r);
    const bt::BackwardResult got = bt::backward(h, k, cfg, r, false);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefBackward want = bt::ref_backward(k, cfg, r, false);
    EXPECT_TRUE(bt::all_close(got.dx, want.dx, dx_tolerance(k, want), "dx"));
    expect_param_grads(got, want);
  }
}

TEST_P(Backward, RecomputedStatisticsMatchReference) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bt::BackwardRequest r = request(k, 900 + uint64_t(k.s.c));  // no saved statistics
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    bnormConfig_t cfg = config(1e-3);
    cfg.path = path;
    const bt::BackwardResult got = bt::backward(h, k, cfg, r, false);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefBackward want = bt::ref_backward(k, cfg, r, false);
    EXPECT_TRUE(bt::all_close(got.dx, want.dx, dx_tolerance(k, want), "dx"));
    expect_param_grads(got, want);
  }
}

TEST_P(Backward, InPlaceWithoutParamGrads) {
  // dx == dy, then dx == x; dgamma/dbeta NULL; gamma NULL (ones).
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(1e-5);
  bt::BackwardRequest r = request(k, 1300 + uint64_t(k.s.spatial));
  r.gamma.clear();
  r.want_param_grads = false;
  fill_saved_stats(h, k, cfg, &r);
  const bt::RefBackward want = bt::ref_backward(k, cfg, r, false);
  for (auto alias : {bt::BackwardRequest::kDxIsDy, bt::BackwardRequest::kDxIsX}) {
    r.alias = alias;
    const bt::BackwardResult got = bt::backward(h, k, cfg, r, false);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    EXPECT_TRUE(bt::all_close(got.dx, want.dx, dx_tolerance(k, want),
                              alias == bt::BackwardRequest::kDxIsDy ? "dx == dy" : "dx == x"));
  }
}

INSTANTIATE_TEST_SUITE_P(Standard, Backward, ::testing::ValuesIn(bt::standard_cases()),
                         bt::CaseName());

class BackwardFrozen : public ::testing::TestWithParam<Case> {};

TEST_P(BackwardFrozen, MatchesReference) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  bt::BackwardRequest r = request(k, 1700 + uint64_t(k.numel()));
  r.mean = bt::random_floats(size_t(k.s.c), 3, -3.0, 3.0);
  r.stat = bt::random_floats(size_t(k.s.c), 4, 0.25, 4.0);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    bnormConfig_t cfg = config(1e-4);
    cfg.path = path;
    const bt::BackwardResult got = bt::backward(h, k, cfg, r, true);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefBackward want = bt::ref_backward(k, cfg, r, true);
    EXPECT_TRUE(bt::all_close(got.dx, want.dx, dx_tolerance(k, want), "dx"));
    expect_param_grads(got, want);
  }
}

TEST_P(BackwardFrozen, DxOnlyNeedsNoX) {
  // Without dgamma/dbeta the frozen gradient is gamma * rstd * dy: x may be
  // NULL. The poisoned x buffer is still passed here; passing NULL is
  // covered by the error tests.
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(1e-4);
  bt::BackwardRequest r = request(k, 2100 + uint64_t(k.s.c));
  r.mean = bt::random_floats(size_t(k.s.c), 13, -3.0, 3.0);
  r.stat = bt::random_floats(size_t(k.s.c), 14, 0.25, 4.0);
  r.want_param_grads = false;
  r.alias = bt::BackwardRequest::kDxIsDy;
  const bt::BackwardResult got = bt::backward(h, k, cfg, r, true);
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  const bt::RefBackward want = bt::ref_backward(k, cfg, r, true);
  EXPECT_TRUE(bt::all_close(got.dx, want.dx, dx_tolerance(k, want), "dx (in place)"));
}

INSTANTIATE_TEST_SUITE_P(Standard, BackwardFrozen, ::testing::ValuesIn(bt::standard_cases()),
                         bt::CaseName());

}  // namespace

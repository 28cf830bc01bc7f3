// Determinism: the same inputs give bitwise the same outputs, run after
// run. Under the emulator the runs also vary the order in which every
// block's threads are scheduled between barriers (a randomized schedule):
// a result that depended on it would differ.
#include <cmath>
#include <cstring>

#include "harness.h"
#include "ops.h"

#if defined(BT_EMU)
#include "bnorm_emu.h"
#endif

namespace {

using bt::Case;

constexpr int kRuns = 20;

std::vector<Case> cases() {
  std::vector<Case> out;
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC})
      for (bt::Shape s : {bt::Shape{4, 3, 1500}, bt::Shape{1000, 3, 1}, bt::Shape{64, 35, 9},
                          bt::Shape{5, 37, 13}})
        out.push_back({s, l, t});
  return out;
}

// Every output of a run is finite (the inputs are), so that equal runs are
// equal in something other than poison.
::testing::AssertionResult all_finite(const std::vector<double>& a, const std::vector<float>& b) {
  for (double v : a)
    if (!std::isfinite(v)) return ::testing::AssertionFailure() << "non-finite tensor output";
  for (float v : b)
    if (!std::isfinite(v)) return ::testing::AssertionFailure() << "non-finite channel output";
  return ::testing::AssertionSuccess();
}

// Everything a run produces, as bytes.
std::vector<uint8_t> bytes_of(const std::vector<double>& a, const std::vector<float>& b,
                              const std::vector<float>& c, const std::vector<float>& d,
                              const std::vector<float>& e) {
  std::vector<uint8_t> out(a.size() * 8 + (b.size() + c.size() + d.size() + e.size()) * 4);
  size_t o = 0;
  auto put = [&](const void* p, size_t n) {
    if (n) std::memcpy(&out[o], p, n);
    o += n;
  };
  put(a.data(), a.size() * 8);
  for (const auto* v : {&b, &c, &d, &e}) put(v->data(), v->size() * 4);
  return out;
}

void set_schedule(int run) {
#if defined(BT_EMU)
  // Run 0 is the ascending schedule; the others are random, each its own.
  bnormEmuSetRandomSchedule(run != 0, 0x5eed0000ull + unsigned(run));
#else
  (void)run;
#endif
}

class Determinism : public ::testing::TestWithParam<Case> {
 protected:
  void TearDown() override { set_schedule(0); }
};

// Every kernel path (bnormPath_t), each against its own first run.
TEST_P(Determinism, ForwardTrainingIsBitwiseRepeatable) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  bt::TrainRequest r;
  r.x = bt::random_activations(k, 1);
  r.p = bt::random_params(k.s.c, 2);
  r.running_mean = bt::random_floats(size_t(k.s.c), 3, -1.0, 1.0);
  r.running_var = bt::random_floats(size_t(k.s.c), 4, 0.5, 2.0);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
    cfg.path = path;
    std::vector<uint8_t> first;
    for (int run = 0; run < kRuns; ++run) {
      set_schedule(run);
      const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
      ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
      ASSERT_TRUE(all_finite(got.y, got.saved_rstd));
      const std::vector<uint8_t> b =
          bytes_of(got.y, got.saved_mean, got.saved_rstd, got.running_mean, got.running_var);
      if (run == 0)
        first = b;
      else
        ASSERT_TRUE(b == first) << "run " << run << " differs from run 0";
    }
  }
}

// Every kernel path, with the statistics recomputed (the statistics and the
// gradient kernels both run) and with saved ones (the persistent kernel's
// case).
TEST_P(Determinism, BackwardIsBitwiseRepeatable) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  for (bnormPath_t path : bt::all_paths()) {
    for (bool saved : {false, true}) {
      SCOPED_TRACE(::testing::Message() << bt::path_name(path) << (saved ? " saved" : " recomputed"));
      bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
      cfg.path = path;
      bt::BackwardRequest r;
      r.x = bt::random_activations(k, 5);
      r.dy = bt::random_activations(k, 6, -0.5, 0.5);
      r.gamma = bt::random_params(k.s.c, 7).gamma;
      if (saved) {
        r.mean = bt::random_floats(size_t(k.s.c), 8, -1.0, 1.0);
        r.stat = bt::random_floats(size_t(k.s.c), 9, 0.5, 2.0);
      }
      std::vector<uint8_t> first;
      for (int run = 0; run < kRuns; ++run) {
        set_schedule(run);
        const bt::BackwardResult got = bt::backward(h, k, cfg, r, false);
        ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
        ASSERT_TRUE(all_finite(got.dx, got.dgamma));
        const std::vector<uint8_t> b = bytes_of(got.dx, got.dgamma, got.dbeta, {}, {});
        if (run == 0)
          first = b;
        else
          ASSERT_TRUE(b == first) << "run " << run << " differs from run 0";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Determinism, ::testing::ValuesIn(cases()), bt::CaseName());

}  // namespace

// The persistent path (BNORM_PATH_PERSISTENT, kernels/persistent.cu): which
// shapes the automatic choice sends to it, the fallback to the multi-pass
// kernels where a tensor does not fit on chip, its results against the
// reference at shapes that divide nothing (m == 2, c == 1, many channels,
// both layouts, every dtype, with the fused epilogues), the same at shapes
// past what the registers hold (the stage in shared memory), bitwise
// repeatability under the randomized schedule, and the cumulative step
// counter that one launch must read before it advances it.
//
// Under the emulator the grid counters (bnormEmuGridsRun) tell which
// kernels ran: the persistent path is one cooperative grid. The emulated
// device holds 64 cooperative blocks (8 SMs x 8, 228 KB of shared memory an
// SM), so registers alone hold 64 * 8192 values forward and 64 * 4096
// backward; past that the stage holds the rest, up to 0.96 M values fp32
// forward, 1.42 M 16-bit (0.47 M and 0.70 M backward); beyond that a
// thread reads the rest of its slice twice (the hybrid), in AUTO only while
// at least half stays on chip; the call falls back where no grid is
// resident.
#include <cmath>
#include <cstring>

#include "harness.h"
#include "ops.h"

#if defined(BT_EMU)
#include "bnorm_emu.h"
#endif

namespace {

using bt::Case;

bnormConfig_t config(bnormPath_t path) {
  bnormConfig_t c = BNORM_CONFIG_INITIALIZER;
  c.path = path;
  return c;
}

// Grids run so far (all, cooperative): {-1, -1} where they cannot be counted.
struct Grids {
  long long all, cooperative;
};
Grids grids() {
#if defined(BT_EMU)
  return {(long long)bnormEmuGridsRun(0), (long long)bnormEmuGridsRun(1)};
#else
  return {-1, -1};
#endif
}
#if defined(BT_EMU)
#define BT_REQUIRE_EMU() (void)0
#else
#define BT_REQUIRE_EMU() GTEST_SKIP() << "counts the emulator's grids"
#endif

bt::TrainRequest train_request(const Case& k, uint64_t seed) {
  bt::TrainRequest r;
  r.x = bt::random_activations(k, seed, -100.0, 100.0, 0.1, 3.0);
  r.p = bt::random_params(k.s.c, seed + 1);
  r.running_mean = bt::random_floats(size_t(k.s.c), seed + 2, -1.0, 1.0);
  r.running_var = bt::random_floats(size_t(k.s.c), seed + 3, 0.5, 2.0);
  return r;
}

// A backward request with the statistics a forward on `path` saved.
bt::BackwardRequest backward_request(bnormHandle_t h, const Case& k, bnormPath_t path,
                                     uint64_t seed) {
  bt::BackwardRequest r;
  r.x = bt::random_activations(k, seed);  // as test_backward: the gradient sums' own conditioning
  r.dy = bt::random_activations(k, seed + 1, -0.5, 0.5, 0.5, 1.5);
  r.gamma = bt::random_params(k.s.c, seed + 2).gamma;
  bt::TrainRequest t;
  t.x = r.x;
  const bt::TrainResult f = bt::forward_training(h, k, config(path), t);
  EXPECT_EQ(f.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  r.mean = bt::to_double(f.saved_mean);
  r.stat = bt::to_double(f.saved_rstd);
  return r;
}

void expect_forward_matches(const Case& k, const bnormConfig_t& cfg, const bt::TrainRequest& r,
                            const bt::TrainResult& got) {
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  bt::RefTrain want = bt::ref_forward_training(k, cfg, r);
  if (cfg.epilogue != BNORM_EPILOGUE_NONE) {  // the reference's batch norm, then the epilogue
    std::vector<double> bn = want.y;
    std::vector<unsigned char> positive(bn.size());
    bnref_add_relu(int64_t(bn.size()), bn.data(), r.z.empty() ? nullptr : r.z.data(),
                   want.y.data(), positive.data());
  }
  EXPECT_TRUE(bt::all_close(got.y, want.y, bt::output_tolerance(k.dtype), "y"));
  for (size_t ch = 0; ch < want.mean.size(); ++ch) {
    const double spread = std::sqrt(want.var[ch]);
    EXPECT_NEAR(got.saved_mean[ch], want.mean[ch], 2e-5 * (spread + std::fabs(want.mean[ch])))
        << "channel " << ch;
    EXPECT_NEAR(got.saved_rstd[ch], want.rstd[ch], 2e-5 * want.rstd[ch]) << "channel " << ch;
  }
  EXPECT_TRUE(bt::all_close(bt::to_double(got.running_mean), want.running_mean, {1e-6, 2e-5},
                            "running_mean"));
  EXPECT_TRUE(bt::all_close(bt::to_double(got.running_var), want.running_var, {1e-6, 2e-5},
                            "running_var"));
  if (cfg.epilogue != BNORM_EPILOGUE_NONE) {
    // The mask bit of every element is set exactly where y > 0.
    for (size_t i = 0; i < got.y.size(); ++i)
      ASSERT_EQ((got.mask[i / 32] >> (i % 32)) & 1u, got.y[i] > 0 ? 1u : 0u) << "element " << i;
  }
}

// With an epilogue the reference is batch norm's backward of the masked dy.
void expect_backward_matches(const Case& k, const bnormConfig_t& cfg,
                             const bt::BackwardRequest& r, const bt::BackwardResult& got) {
  ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  bt::BackwardRequest masked = r;
  if (cfg.epilogue != BNORM_EPILOGUE_NONE) {
    masked.mask.clear();
    for (size_t i = 0; i < masked.dy.size(); ++i)
      if (!((r.mask[i / 32] >> (i % 32)) & 1u)) masked.dy[i] = 0.0;
  }
  const bt::RefBackward want = bt::ref_backward(k, BNORM_CONFIG_INITIALIZER, masked, false);
  bt::Tolerance t = bt::output_tolerance(k.dtype);
  t.atol *= 4.0 * std::max(1.0, want.dx_scale);
  EXPECT_TRUE(bt::all_close(got.dx, want.dx, t, "dx"));
  for (size_t ch = 0; ch < want.dgamma.size(); ++ch) {
    EXPECT_NEAR(got.dbeta[ch], want.dbeta[ch], 1e-5 * want.abs_dbeta[ch] + 1e-6) << ch;
    EXPECT_NEAR(got.dgamma[ch], want.dgamma[ch], 1e-5 * want.abs_dgamma[ch] + 1e-6) << ch;
  }
}

// ---- the automatic choice -------------------------------------------------------------------

// Tensors past the tiny path's size that fit on chip: AUTO runs forward
// training and the backward with saved statistics as one cooperative grid.
TEST(PersistentChoice, AutoTakesItWhereTheTensorFits) {
  BT_REQUIRE_DEVICE();
  BT_REQUIRE_EMU();
  bt::Handle h;
  for (const Case& k : {Case{{8, 16, 200}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},
                        Case{{4096, 8, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},
                        Case{{50, 48, 9}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16}}) {
    SCOPED_TRACE(k.name());
    const bnormConfig_t cfg = config(BNORM_PATH_AUTO);
    const bt::TrainRequest r = train_request(k, 11);
    Grids before = grids();
    const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
    Grids after = grids();
    EXPECT_EQ(after.all - before.all, 1) << "one launch";
    EXPECT_EQ(after.cooperative - before.cooperative, 1) << "and it is the persistent kernel";
    expect_forward_matches(k, cfg, r, got);

    const bt::BackwardRequest b = backward_request(h, k, BNORM_PATH_AUTO, 21);
    before = grids();
    const bt::BackwardResult g = bt::backward(h, k, cfg, b, false);
    after = grids();
    EXPECT_EQ(after.all - before.all, 1);
    EXPECT_EQ(after.cooperative - before.cooperative, 1);
    expect_backward_matches(k, cfg, b, g);
  }
}

// Where the persistent kernels do not apply, AUTO (and PERSISTENT) run the
// others: tiny tensors, a backward without saved statistics, the frozen
// backward.
TEST(PersistentChoice, AutoLeavesItWhereOthersWin) {
  BT_REQUIRE_DEVICE();
  BT_REQUIRE_EMU();
  bt::Handle h;
  const Case tiny{{2, 16, 64}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT};
  Grids before = grids();
  const bt::TrainResult t = bt::forward_training(h, tiny, config(BNORM_PATH_AUTO),
                                                 train_request(tiny, 3));
  ASSERT_EQ(t.status, BNORM_STATUS_SUCCESS);
  EXPECT_EQ(grids().cooperative - before.cooperative, 0) << "tiny: the single-block kernel";

  const Case k{{8, 16, 200}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT};
  for (bnormPath_t path : {BNORM_PATH_AUTO, BNORM_PATH_PERSISTENT}) {
    SCOPED_TRACE(bt::path_name(path));
    bt::BackwardRequest b = backward_request(h, k, path, 5);
    b.mean.clear();  // recomputed: the multi-pass kernels
    b.stat.clear();
    before = grids();
    const bt::BackwardResult g = bt::backward(h, k, config(path), b, false);
    EXPECT_EQ(grids().cooperative - before.cooperative, 0);
    expect_backward_matches(k, config(path), b, g);

    bt::BackwardRequest fr = b;
    fr.mean = bt::random_floats(size_t(k.s.c), 7, -1.0, 1.0);
    fr.stat = bt::random_floats(size_t(k.s.c), 8, 0.5, 2.0);
    before = grids();
    EXPECT_EQ(bt::backward(h, k, config(path), fr, true).status, BNORM_STATUS_SUCCESS);
    EXPECT_EQ(grids().cooperative - before.cooperative, 0) << "frozen: the multi-pass kernels";
  }
}

// What the emulated device holds on chip at most, of any width and layout
// (test_persist_fit.cpp's PersistFit.EmulatorOnChipCapacities checks these
// against persist_fit): [backward][16-bit].
constexpr double kOnChipValues[2][2] = {{0.97e6, 1.43e6}, {0.48e6, 0.71e6}};

long long numel(const Case& k) { return k.s.n * k.s.c * k.s.spatial; }
bool wide(const Case& k) { return k.dtype != BNORM_DATA_FLOAT; }

// Runs forward training and the backward with saved statistics on `path`,
// checks both against the reference, and returns the launches and
// cooperative grids each took.
struct Launches {
  Grids forward, backward;
};
Launches run_and_check(bt::Handle& h, const Case& k, bnormPath_t path) {
  const bnormConfig_t cfg = config(path);
  const bt::TrainRequest r = train_request(k, 31);
  Grids before = grids();
  const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
  Launches l;
  l.forward = {grids().all - before.all, grids().cooperative - before.cooperative};
  expect_forward_matches(k, cfg, r, got);
  const bt::BackwardRequest b = backward_request(h, k, path, 37);
  before = grids();
  const bt::BackwardResult g = bt::backward(h, k, cfg, b, false);
  l.backward = {grids().all - before.all, grids().cooperative - before.cooperative};
  expect_backward_matches(k, cfg, b, g);
  return l;
}

// Both directions ran as one launch, a cooperative grid.
void expect_one_grid_each(const Launches& l) {
  EXPECT_EQ(l.forward.all, 1);
  EXPECT_EQ(l.forward.cooperative, 1);
  EXPECT_EQ(l.backward.all, 1);
  EXPECT_EQ(l.backward.cooperative, 1);
}

// Past what the chip holds, while at least half of it still fits: AUTO and
// PERSISTENT both run one cooperative grid that reads the rest twice.
// Forward 1.23 M fp32 (NCHW) and 1.44 M fp16 (NHWC); backward 0.74 M fp16
// (NHWC). In the other direction the first two hold less than half on chip
// and the third fits: AUTO runs the multi-pass kernels, PERSISTENT the
// hybrid, and the third's forward one cooperative grid either way.
TEST(PersistentChoice, AutoStreamsWhileHalfStaysOnChip) {
  BT_REQUIRE_DEVICE();
  BT_REQUIRE_EMU();
  bt::Handle h;
  struct Want {
    Case k;
    bool streams_forward;  // and the backward holds less than half on chip (else: the
                           // forward fits on chip, the backward streams)
  };
  for (const Want& w : {Want{Case{{64, 8, 2400}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT}, true},
                        Want{Case{{180001, 8, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF}, true},
                        Want{Case{{11503, 64, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF}, false}}) {
    const Case& k = w.k;
    SCOPED_TRACE(k.name());
    ASSERT_GT(numel(k), kOnChipValues[1][wide(k)]) << "the backward streams";
    if (w.streams_forward) {
      ASSERT_GT(numel(k), kOnChipValues[0][wide(k)]);
    }
    const Launches a = run_and_check(h, k, BNORM_PATH_AUTO);
    EXPECT_EQ(a.forward.all, 1);
    EXPECT_EQ(a.forward.cooperative, 1);
    EXPECT_EQ(a.backward.cooperative, w.streams_forward ? 0 : 1);
    EXPECT_EQ(a.backward.all > 1, w.streams_forward) << "several launches: multi-pass";
    expect_one_grid_each(run_and_check(h, k, BNORM_PATH_PERSISTENT));
  }
}

// More than twice what the chip holds (2.05 M fp32 forward, 1.47 M fp16
// backward): AUTO runs the multi-pass kernels, PERSISTENT the hybrid; both
// correctly.
TEST(PersistentChoice, AutoLeavesMostlyStreamedTensorsToMultiPass) {
  BT_REQUIRE_DEVICE();
  BT_REQUIRE_EMU();
  bt::Handle h;
  for (const Case& k : {Case{{64, 8, 4000}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},
                        Case{{23011, 64, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF}}) {
    const bool forward_too = numel(k) > 2 * kOnChipValues[0][wide(k)];
    ASSERT_GT(numel(k), 2 * kOnChipValues[1][wide(k)]);
    SCOPED_TRACE(k.name());
    const Launches a = run_and_check(h, k, BNORM_PATH_AUTO);
    EXPECT_EQ(a.backward.cooperative, 0);
    EXPECT_GT(a.backward.all, 1) << "several launches";
    if (forward_too) {
      EXPECT_EQ(a.forward.cooperative, 0);
      EXPECT_GT(a.forward.all, 1);
    }
    expect_one_grid_each(run_and_check(h, k, BNORM_PATH_PERSISTENT));
  }
}

// NCHW with more channels (600) than the emulated device holds resident
// warps (512): no split makes the grid resident, so AUTO and PERSISTENT
// both run the multi-pass kernels, correctly.
TEST(PersistentChoice, FallsBackToMultiPassWhereNoGridIsResident) {
  BT_REQUIRE_DEVICE();
  BT_REQUIRE_EMU();
  bt::Handle h;
  const Case k{{16, 600, 2}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT};
  for (bnormPath_t path : {BNORM_PATH_AUTO, BNORM_PATH_PERSISTENT}) {
    SCOPED_TRACE(bt::path_name(path));
    const Launches l = run_and_check(h, k, path);
    EXPECT_EQ(l.forward.cooperative, 0);
    EXPECT_GT(l.forward.all, 1) << "several launches";
    EXPECT_EQ(l.backward.cooperative, 0);
    EXPECT_GT(l.backward.all, 1);
  }
}

// Pointers narrower than the planned vectors make the launcher re-check the
// fit and possibly fall back: the persistent plan's workspace covers the
// multi-pass kernels' too.
TEST(PersistentChoice, WorkspaceCoversTheFallback) {
  BT_REQUIRE_DEVICE();
  bt::Handle h;
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF})
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC}) {
      const bnormTensorDesc_t d{t, l, 8, 16, 200};
      size_t multi = 0, persist = 0, bmulti = 0, bpersist = 0;
      bnormConfig_t cfg = config(BNORM_PATH_MULTI_PASS);
      BT_OK(bnormGetForwardTrainingWorkspaceSize(h, &d, &cfg, &multi));
      BT_OK(bnormGetBackwardWorkspaceSize(h, &d, &cfg, &bmulti));
      cfg.path = BNORM_PATH_PERSISTENT;
      BT_OK(bnormGetForwardTrainingWorkspaceSize(h, &d, &cfg, &persist));
      BT_OK(bnormGetBackwardWorkspaceSize(h, &d, &cfg, &bpersist));
      EXPECT_GE(persist, multi) << "the fallback's workspace is covered";
      EXPECT_GE(bpersist, bmulti);
    }
}

// ---- results -------------------------------------------------------------------------------

std::vector<Case> odd_cases() {
  std::vector<Case> out;
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC})
      for (bt::Shape s : {bt::Shape{2, 3, 1},      // m == 2
                          bt::Shape{1, 4, 2},      // m == 2, n == 1
                          bt::Shape{5, 1, 333},    // c == 1
                          bt::Shape{3, 7, 11},     // nothing divides anything
                          bt::Shape{2, 300, 3},    // many channels, spatial > 1
                          bt::Shape{3, 3000, 1},   // many channels, spatial 1
                          bt::Shape{33, 17, 65},   // several units per channel
                          bt::Shape{1031, 5, 1}})  // many rows, an odd channel count
        out.push_back({s, l, t});
  return out;
}

class PersistentResults : public ::testing::TestWithParam<Case> {};

// Forward training on the persistent path with each epilogue: one launch
// (the mask zeroed inside it), matching the reference.
void check_forward_every_epilogue(const Case& k) {
  bt::Handle h;
  for (bnormEpilogue_t ep : {BNORM_EPILOGUE_NONE, BNORM_EPILOGUE_RELU, BNORM_EPILOGUE_ADD_RELU}) {
    SCOPED_TRACE(::testing::Message() << "epilogue " << int(ep));
    bnormConfig_t cfg = config(BNORM_PATH_PERSISTENT);
    cfg.epilogue = ep;
    bt::TrainRequest r = train_request(k, 41 + uint64_t(ep));
    if (ep == BNORM_EPILOGUE_ADD_RELU) r.z = bt::random_activations(k, 47, -1.0, 1.0);
    const Grids before = grids();
    const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
    if (before.all >= 0) {
      EXPECT_EQ(grids().cooperative - before.cooperative, 1);
      EXPECT_EQ(grids().all - before.all, 1) << "one launch, the mask zeroed inside it";
    }
    expect_forward_matches(k, cfg, r, got);
  }
}

// The backward with saved statistics on the persistent path: one launch,
// separate and in place (dx == dy, dx == x), and through the fused ReLU and
// the add.
void check_backward_in_place_and_fused(const Case& k) {
  bt::Handle h;
  const bnormConfig_t cfg = config(BNORM_PATH_PERSISTENT);
  for (auto alias : {bt::BackwardRequest::kSeparate, bt::BackwardRequest::kDxIsDy,
                     bt::BackwardRequest::kDxIsX}) {
    SCOPED_TRACE(::testing::Message() << "alias " << int(alias));
    bt::BackwardRequest r = backward_request(h, k, BNORM_PATH_PERSISTENT, 51);
    r.alias = alias;
    const Grids before = grids();
    const bt::BackwardResult got = bt::backward(h, k, cfg, r, false);
    if (before.all >= 0) {
      EXPECT_EQ(grids().cooperative - before.cooperative, 1);
    }
    expect_backward_matches(k, cfg, r, got);
  }
  // Through the ReLU and the add: g is dy where the forward's bit is set,
  // dz = g, and dx is batch norm's backward of g.
  for (bnormEpilogue_t ep : {BNORM_EPILOGUE_RELU, BNORM_EPILOGUE_ADD_RELU}) {
    SCOPED_TRACE(::testing::Message() << "epilogue " << int(ep));
    bnormConfig_t fcfg = cfg;
    fcfg.epilogue = ep;
    bt::TrainRequest t;
    t.x = bt::random_activations(k, 61);
    if (ep == BNORM_EPILOGUE_ADD_RELU) t.z = bt::random_activations(k, 67, -1.0, 1.0);
    const bt::TrainResult f = bt::forward_training(h, k, fcfg, t);
    ASSERT_EQ(f.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    bt::BackwardRequest r;
    r.x = t.x;
    r.dy = bt::random_activations(k, 71, -0.5, 0.5, 0.5, 1.5);
    r.gamma = bt::random_params(k.s.c, 72).gamma;
    r.mean = bt::to_double(f.saved_mean);
    r.stat = bt::to_double(f.saved_rstd);
    r.mask = f.mask;
    const bt::BackwardResult got = bt::backward(h, k, fcfg, r, false);
    expect_backward_matches(k, fcfg, r, got);
    if (ep == BNORM_EPILOGUE_ADD_RELU) {
      ASSERT_EQ(got.dz.size(), r.dy.size());
      for (size_t i = 0; i < r.dy.size(); ++i)
        ASSERT_EQ(got.dz[i], (r.mask[i / 32] >> (i % 32)) & 1u ? r.dy[i] : 0.0) << i;
    }
  }
}

TEST_P(PersistentResults, ForwardMatchesReferenceWithEveryEpilogue) {
  BT_REQUIRE_DEVICE();
  check_forward_every_epilogue(GetParam());
}

TEST_P(PersistentResults, BackwardMatchesReferenceInPlaceAndFused) {
  BT_REQUIRE_DEVICE();
  check_backward_in_place_and_fused(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Odd, PersistentResults, ::testing::ValuesIn(odd_cases()),
                         bt::CaseName());

// Past the registers: more values than 64 blocks hold in registers (8192 a
// block forward, 4096 backward), so one cooperative grid means the stage in
// shared memory held the rest. Every dtype, both layouts, vector widths 1,
// 2, 4 and 8, odd extents (the last staged vector of a thread partly out of
// the tensor).
constexpr long long kRegisterValues[2] = {64LL * 8192, 64LL * 4096};  // forward, backward

std::vector<Case> staged_forward_cases() {
  return {Case{{67, 5, 1999}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},     // N = 1
          Case{{3, 5, 40004}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},     // N = 4
          Case{{3, 7, 30001}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},      // N = 1
          Case{{5, 3, 40000}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},      // N = 8
          Case{{2, 3, 100003}, BNORM_LAYOUT_NCHW, BNORM_DATA_BFLOAT16}, // N = 1
          Case{{9001, 64, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},      // N = 8
          Case{{80003, 8, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},      // N = 8, one column
          Case{{20011, 32, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT},    // N = 4
          Case{{4099, 150, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16}, // N = 2
          Case{{12007, 48, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16}};  // N = 8, a deep stage
}

std::vector<Case> staged_backward_cases() {
  return {Case{{37, 3, 3001}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},     // N = 1
          Case{{5, 9, 7001}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},       // N = 1
          Case{{5, 3, 40000}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},      // N = 8
          Case{{3, 2, 60007}, BNORM_LAYOUT_NCHW, BNORM_DATA_BFLOAT16},  // N = 1
          Case{{2, 3, 100003}, BNORM_LAYOUT_NCHW, BNORM_DATA_BFLOAT16}, // N = 1, a deep stage
          Case{{5003, 64, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},      // N = 8
          Case{{9999, 31, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT},     // N = 1
          Case{{2999, 96, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16}}; // N = 8
}

class PersistentStagedForward : public ::testing::TestWithParam<Case> {};
class PersistentStagedBackward : public ::testing::TestWithParam<Case> {};

TEST_P(PersistentStagedForward, MatchesReferenceWithEveryEpilogue) {
  BT_REQUIRE_DEVICE();
  BT_REQUIRE_EMU();  // the register capacity is the emulated device's
  ASSERT_GT(GetParam().s.n * GetParam().s.c * GetParam().s.spatial, kRegisterValues[0]);
  check_forward_every_epilogue(GetParam());
}

TEST_P(PersistentStagedBackward, MatchesReferenceInPlaceAndFused) {
  BT_REQUIRE_DEVICE();
  BT_REQUIRE_EMU();
  ASSERT_GT(GetParam().s.n * GetParam().s.c * GetParam().s.spatial, kRegisterValues[1]);
  check_backward_in_place_and_fused(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Staged, PersistentStagedForward,
                         ::testing::ValuesIn(staged_forward_cases()), bt::CaseName());
INSTANTIATE_TEST_SUITE_P(Staged, PersistentStagedBackward,
                         ::testing::ValuesIn(staged_backward_cases()), bt::CaseName());

// Past the stage (the hybrid): more values than the emulated chip holds, so
// one cooperative grid means each thread read the rest of its slice twice.
// Every dtype, both layouts, widths 1, 2, 4 and 8, a thread's last group of
// streamed vectors partly out of the tensor.
std::vector<Case> streamed_forward_cases() {
  return {Case{{67, 5, 3001}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},      // N = 1
          Case{{5, 3, 100000}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},      // N = 8
          Case{{2, 3, 250003}, BNORM_LAYOUT_NCHW, BNORM_DATA_BFLOAT16},  // N = 1
          Case{{32003, 32, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT},     // N = 4
          Case{{10007, 150, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16}, // N = 2
          Case{{23011, 64, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16}}; // N = 8
}

std::vector<Case> streamed_backward_cases() {
  return {Case{{37, 3, 5001}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},      // N = 1
          Case{{5, 3, 60000}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},       // N = 8
          Case{{3, 2, 150007}, BNORM_LAYOUT_NCHW, BNORM_DATA_BFLOAT16},  // N = 1
          Case{{19999, 31, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT},     // N = 1
          Case{{7507, 96, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16}};  // N = 8
}

class PersistentStreamedForward : public ::testing::TestWithParam<Case> {};
class PersistentStreamedBackward : public ::testing::TestWithParam<Case> {};

TEST_P(PersistentStreamedForward, MatchesReferenceWithEveryEpilogue) {
  BT_REQUIRE_DEVICE();
  BT_REQUIRE_EMU();  // the on-chip capacity is the emulated device's
  ASSERT_GT(numel(GetParam()), kOnChipValues[0][wide(GetParam())]);
  check_forward_every_epilogue(GetParam());
}

TEST_P(PersistentStreamedBackward, MatchesReferenceInPlaceAndFused) {
  BT_REQUIRE_DEVICE();
  BT_REQUIRE_EMU();
  ASSERT_GT(numel(GetParam()), kOnChipValues[1][wide(GetParam())]);
  check_backward_in_place_and_fused(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Streamed, PersistentStreamedForward,
                         ::testing::ValuesIn(streamed_forward_cases()), bt::CaseName());
INSTANTIATE_TEST_SUITE_P(Streamed, PersistentStreamedBackward,
                         ::testing::ValuesIn(streamed_backward_cases()), bt::CaseName());

// The same on a GPU, sized for an H100's or H200's registers (132 SMs: 2.2 M
// values forward, 1.6 M backward) and within what the stage adds (14.6 M
// fp16 / 8.9 M fp32 forward, 7.6 M fp16 backward; bench/NOTES.md): forward
// and backward staged, except where noted. A real GPU's grid cannot be
// counted, so these check results only; under the emulator (whose register
// capacity is 64 blocks) they would take minutes and prove nothing the
// Staged cases above do not, so they are built for a GPU alone.
#if !defined(BT_EMU)
std::vector<Case> staged_device_cases() {
  return {Case{{64, 33, 2001}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},     // N = 1
          Case{{16, 64, 3136}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},      // N = 8
          Case{{3, 5, 200003}, BNORM_LAYOUT_NCHW, BNORM_DATA_BFLOAT16},  // N = 1
          Case{{256, 512, 49}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16},  // ResNet-50's 7x7
          Case{{8192, 1024, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT},    // forward only: 24 staged
          Case{{30011, 96, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16},  // N = 8
          Case{{40009, 50, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF}};     // N = 2
}

class PersistentStagedOnDevice : public ::testing::TestWithParam<Case> {};

TEST_P(PersistentStagedOnDevice, MatchesReference) {
  BT_REQUIRE_DEVICE();
  check_forward_every_epilogue(GetParam());
  check_backward_in_place_and_fused(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Device, PersistentStagedOnDevice,
                         ::testing::ValuesIn(staged_device_cases()), bt::CaseName());

// Past what an H100's or H200's chip holds, so the hybrid (PERSISTENT):
// 16.8 M values fp16 (on chip: 14.6 M forward, 7.6 M backward) and 12.8 M
// fp32 (8.9 M forward, about 4.5 M backward).
class PersistentStreamedOnDevice : public ::testing::TestWithParam<Case> {};

TEST_P(PersistentStreamedOnDevice, MatchesReference) {
  BT_REQUIRE_DEVICE();
  check_forward_every_epilogue(GetParam());
  check_backward_in_place_and_fused(GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    Device, PersistentStreamedOnDevice,
    ::testing::Values(Case{{256, 64, 1024}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},
                      Case{{64, 64, 3136}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT}),
    bt::CaseName());
#endif

// ---- determinism and the step counter ---------------------------------------------------------

void set_schedule(int run) {
#if defined(BT_EMU)
  bnormEmuSetRandomSchedule(run != 0, 0xc0de0000ull + unsigned(run));
#else
  (void)run;
#endif
}

class PersistentDeterminism : public ::testing::TestWithParam<Case> {
 protected:
  void TearDown() override { set_schedule(0); }
};

// Every block merges the partials itself: every block must get bitwise the
// same statistics, and every run the same bits, whatever the schedule.
TEST_P(PersistentDeterminism, BitwiseRepeatableUnderRandomSchedules) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  bt::Handle h;
  const bnormConfig_t cfg = config(BNORM_PATH_PERSISTENT);
  const bt::TrainRequest r = train_request(k, 81);
  const bt::BackwardRequest b = backward_request(h, k, BNORM_PATH_PERSISTENT, 82);
  bt::TrainResult f0;
  bt::BackwardResult b0;
  for (int run = 0; run < 6; ++run) {
    set_schedule(run);
    const bt::TrainResult f = bt::forward_training(h, k, cfg, r);
    const bt::BackwardResult g = bt::backward(h, k, cfg, b, false);
    ASSERT_EQ(f.status, BNORM_STATUS_SUCCESS);
    ASSERT_EQ(g.status, BNORM_STATUS_SUCCESS);
    if (run == 0) {
      f0 = f;
      b0 = g;
      continue;
    }
    auto same = [](const auto& a, const auto& c) {
      return a.size() == c.size() &&
             (a.empty() || std::memcmp(a.data(), c.data(), a.size() * sizeof(a[0])) == 0);
    };
    EXPECT_TRUE(same(f.y, f0.y) && same(f.saved_mean, f0.saved_mean) &&
                same(f.saved_rstd, f0.saved_rstd) && same(f.running_mean, f0.running_mean) &&
                same(f.running_var, f0.running_var))
        << "forward run " << run;
    EXPECT_TRUE(same(g.dx, b0.dx) && same(g.dgamma, b0.dgamma) && same(g.dbeta, b0.dbeta))
        << "backward run " << run;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PersistentDeterminism,
    ::testing::Values(Case{{33, 17, 65}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},
                      Case{{1031, 40, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},
                      Case{{9, 24, 49}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16},
                      // streamed both ways under the emulator (kOnChipValues)
                      Case{{23011, 64, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF}),
    bt::CaseName());

// The cumulative average: one launch reads the counter (every block, before
// the grid-wide barrier) and advances it once (after it).
TEST(PersistentRunning, CumulativeCounterAdvancesOncePerCallAfterEveryRead) {
  BT_REQUIRE_DEVICE();
  const Case k{{33, 17, 65}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT};
  bt::Handle h;
  bnormConfig_t cfg = config(BNORM_PATH_PERSISTENT);
  cfg.average = BNORM_AVERAGE_CUMULATIVE;
  const size_t c = size_t(k.s.c);
  const double m = double(k.m());
  int64_t step = 0;
  std::vector<double> rm(c, 5.0), rv(c, 7.0), sum_mean(c, 0.0), sum_var(c, 0.0);
  const int steps = 4;
  for (int t = 0; t < steps; ++t) {
    bt::TrainRequest r;
    r.x = bt::random_activations(k, 90 + uint64_t(t), -2.0 + t, 2.0 + t);
    r.running_mean = rm;
    r.running_var = rv;
    r.step = &step;
    const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    ASSERT_EQ(step, t + 1);
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
    EXPECT_NEAR(rm[ch], sum_mean[ch] / steps, 1e-5 * (1.0 + std::fabs(sum_mean[ch] / steps)));
    EXPECT_NEAR(rv[ch], sum_var[ch] / steps, 1e-5 * sum_var[ch] / steps);
  }
}

}  // namespace

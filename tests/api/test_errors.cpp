// Every error path of the public API, and the valid edge cases next to them.
//
// After each failing call the test checks: the exact status; a message that
// starts with the call's name and names the offending argument; and, byte
// for byte, every buffer the call could have touched (outputs, running
// statistics, the step counter, the workspace, the inputs, and the slack
// around all of them) against a snapshot taken just before the call. Before
// each call the thread's message is set to another call's failure, so a
// stale message cannot pass for a fresh one; after a successful call the
// message must be empty.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace {

using bt::Case;
using bt::DeviceBuffer;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kMaxC = 2147483647;  // 2^31 - 1
constexpr uint64_t kSeed = 20240601;

// Sets an enum field to any int, including values outside the enum's range,
// without a cast whose result C++ leaves unspecified.
template <class E>
void set_raw(E& e, int v) {
  static_assert(sizeof(E) == sizeof(int), "enum is not int-sized");
  std::memcpy(&e, &v, sizeof v);
}

template <class T>
T* offset_by(T* p, ptrdiff_t bytes) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(p) + bytes);
}

// ---- the calls ------------------------------------------------------------------------------

enum class Call { kFwdWs, kFwd, kInf, kScaleShift, kBwdWs, kBwd, kFrzWs, kFrz };

const char* call_name(Call c) {
  switch (c) {
    case Call::kFwdWs:
      return "bnormGetForwardTrainingWorkspaceSize";
    case Call::kFwd:
      return "bnormForwardTraining";
    case Call::kInf:
      return "bnormForwardInference";
    case Call::kScaleShift:
      return "bnormGetInferenceScaleShift";
    case Call::kBwdWs:
      return "bnormGetBackwardWorkspaceSize";
    case Call::kBwd:
      return "bnormBackward";
    case Call::kFrzWs:
      return "bnormGetBackwardFrozenWorkspaceSize";
    case Call::kFrz:
      return "bnormBackwardFrozen";
  }
  return "?";
}

std::string CallParamName(const ::testing::TestParamInfo<Call>& info) {
  return std::string(call_name(info.param)).substr(5);  // drop "bnorm"
}

// Every argument of every call; each call reads the ones it takes.
struct Args {
  bnormHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
  bnormTensorDesc_t desc{};
  bool pass_desc = true;  // false: desc is NULL
  bnormConfig_t config = BNORM_CONFIG_INITIALIZER;
  bool pass_config = true;                    // false: config is NULL
  const bnormConfig_t* config_ptr = nullptr;  // set: passed instead of &config
  int64_t c = 0;                              // bnormGetInferenceScaleShift
  const void* x = nullptr;
  void* y = nullptr;
  const void* dy = nullptr;
  void* dx = nullptr;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float* running_mean = nullptr;
  float* running_var = nullptr;
  int64_t* step_count = nullptr;
  float* saved_mean = nullptr;
  float* saved_rstd = nullptr;
  float* dgamma = nullptr;
  float* dbeta = nullptr;
  float* scale = nullptr;
  float* shift = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  size_t* ws_out = nullptr;  // the size queries' output
};

bnormStatus_t invoke(Call call, const Args& a) {
  const bnormTensorDesc_t* d = a.pass_desc ? &a.desc : nullptr;
  const bnormConfig_t* cfg = a.config_ptr ? a.config_ptr : a.pass_config ? &a.config : nullptr;
  switch (call) {
    case Call::kFwdWs:
      return bnormGetForwardTrainingWorkspaceSize(a.handle, d, cfg, a.ws_out);
    case Call::kFwd:
      return bnormForwardTraining(a.handle, a.stream, d, cfg, a.x, a.y, a.gamma, a.beta,
                                  a.running_mean, a.running_var, a.step_count, a.saved_mean,
                                  a.saved_rstd, a.workspace, a.workspace_bytes);
    case Call::kInf:
      return bnormForwardInference(a.handle, a.stream, d, cfg, a.x, a.y, a.gamma, a.beta,
                                   a.running_mean, a.running_var);
    case Call::kScaleShift:
      return bnormGetInferenceScaleShift(a.handle, a.stream, a.c, cfg, a.gamma, a.beta,
                                         a.running_mean, a.running_var, a.scale, a.shift);
    case Call::kBwdWs:
      return bnormGetBackwardWorkspaceSize(a.handle, d, cfg, a.ws_out);
    case Call::kBwd:
      return bnormBackward(a.handle, a.stream, d, cfg, a.x, a.dy, a.dx, a.gamma, a.saved_mean,
                           a.saved_rstd, a.dgamma, a.dbeta, a.workspace, a.workspace_bytes);
    case Call::kFrzWs:
      return bnormGetBackwardFrozenWorkspaceSize(a.handle, d, cfg, a.ws_out);
    case Call::kFrz:
      return bnormBackwardFrozen(a.handle, a.stream, d, cfg, a.x, a.dy, a.dx, a.gamma,
                                 a.running_mean, a.running_var, a.dgamma, a.dbeta, a.workspace,
                                 a.workspace_bytes);
  }
  return BNORM_STATUS_INTERNAL_ERROR;
}

// ---- the buffers ----------------------------------------------------------------------------

enum Slot : int {
  kX,
  kY,
  kDy,
  kDx,
  kGamma,
  kBeta,
  kRunMean,
  kRunVar,
  kStep,
  kSavedMean,
  kSavedRstd,
  kDGamma,
  kDBeta,
  kScale,
  kShift,
  kWorkspace,
  kSlots
};

const char* slot_name(int s) {
  static const char* const names[kSlots] = {
      "x",           "y",          "dy",         "dx",         "gamma",  "beta",  "running_mean",
      "running_var", "step_count", "saved_mean", "saved_rstd", "dgamma", "dbeta", "scale",
      "shift",       "workspace"};
  return names[s];
}

constexpr size_t kLead = 64;    // bytes before each buffer's base (negative offsets stay inside)
constexpr size_t kAlign = 256;  // each base is this aligned, on every backend
constexpr size_t kSlack = 256;  // bytes after twice the used size

// One set of device buffers holding everything every call takes, for one
// shape, all filled with a seeded random pattern (inputs with values a call
// can use). Each buffer has room for twice its size plus slack, so shifted
// and overlapping pointers stay inside it.
class World {
 public:
  void Init(const Case& k, uint64_t seed) {
    k_ = k;
    handle_ = std::make_unique<bt::Handle>();
    ASSERT_NE(handle_->get(), nullptr);
    const bnormTensorDesc_t d = k.desc();
    BT_OK(bnormGetForwardTrainingWorkspaceSize(*handle_, &d, nullptr, &need_fwd_));
    BT_OK(bnormGetBackwardWorkspaceSize(*handle_, &d, nullptr, &need_bwd_));
    BT_OK(bnormGetBackwardFrozenWorkspaceSize(*handle_, &d, nullptr, &need_frz_));
    ASSERT_GT(need_fwd_, 0u);
    ASSERT_GT(need_bwd_, 0u);
    ASSERT_GT(need_frz_, 0u);
    const size_t tb = tensor_bytes();
    const size_t cb = channel_bytes();
    const size_t ws = std::max(need_fwd_, std::max(need_bwd_, need_frz_));
    used_ = {tb, tb, tb, tb, cb, cb, cb, cb, sizeof(int64_t), cb, cb, cb, cb, cb, cb, ws};

    std::mt19937_64 rng(seed);
    for (int s = 0; s < kSlots; ++s) {
      const size_t total = kLead + kAlign + 2 * used_[s] + kSlack;
      mem_[s] = DeviceBuffer(total);
      ASSERT_NE(mem_[s].get(), nullptr);
      const uintptr_t lo = reinterpret_cast<uintptr_t>(mem_[s].get()) + kLead;
      base_[s] = reinterpret_cast<uint8_t*>((lo + kAlign - 1) / kAlign * kAlign);
      // The pattern is laid out from the base (wrapping into the lead), so
      // equal seeds give equal bytes whatever the allocation's alignment.
      const size_t base_off = size_t(base_[s] - static_cast<uint8_t*>(mem_[s].get()));
      std::vector<uint8_t> noise(total);
      for (size_t i = 0; i < total; ++i) noise[(base_off + i) % total] = uint8_t(rng() >> 56);
      mem_[s].upload(noise);
    }
    const size_t c = size_t(k.s.c);
    write(kX, bt::encode(bt::random_activations(k, seed + 1), k.dtype));
    write(kDy, bt::encode(bt::random_activations(k, seed + 2, -1.0, 1.0, 0.5, 1.5), k.dtype));
    write(kGamma, bt::encode(bt::random_floats(c, seed + 3, 0.5, 1.5), BNORM_DATA_FLOAT));
    write(kBeta, bt::encode(bt::random_floats(c, seed + 4, -0.5, 0.5), BNORM_DATA_FLOAT));
    write(kRunMean, bt::encode(bt::random_floats(c, seed + 5, -1.0, 1.0), BNORM_DATA_FLOAT));
    write(kRunVar, bt::encode(bt::random_floats(c, seed + 6, 0.5, 2.0), BNORM_DATA_FLOAT));
    write(kSavedMean, bt::encode(bt::random_floats(c, seed + 7, -1.0, 1.0), BNORM_DATA_FLOAT));
    write(kSavedRstd, bt::encode(bt::random_floats(c, seed + 8, 0.5, 2.0), BNORM_DATA_FLOAT));
    set_step(7);
    ws_out_ = 0x5a5a5a5a5a5a5a5aull;
  }

  const Case& kase() const { return k_; }
  bnormHandle_t handle() const { return handle_->get(); }
  size_t elem() const { return bt::dtype_bytes(k_.dtype); }
  size_t tensor_bytes() const { return size_t(k_.numel()) * elem(); }
  size_t channel_bytes() const { return size_t(k_.s.c) * sizeof(float); }
  uint8_t* p(Slot s) const { return base_[s]; }
  float* f(Slot s) const { return reinterpret_cast<float*>(base_[s]); }
  size_t ws_out() const { return ws_out_; }

  // The workspace the world's own shape needs for `call` (0 for calls without one).
  size_t need(Call call) const {
    switch (call) {
      case Call::kFwd:
      case Call::kFwdWs:
        return need_fwd_;
      case Call::kBwd:
      case Call::kBwdWs:
        return need_bwd_;
      case Call::kFrz:
      case Call::kFrzWs:
        return need_frz_;
      default:
        return 0;
    }
  }

  // The workspace `call` needs for another descriptor; it must fit the world's buffer.
  size_t need_for(Call call, const bnormTensorDesc_t& d) const {
    size_t n = SIZE_MAX;
    bnormStatus_t s = BNORM_STATUS_INTERNAL_ERROR;
    switch (call) {
      case Call::kFwd:
        s = bnormGetForwardTrainingWorkspaceSize(handle(), &d, nullptr, &n);
        break;
      case Call::kBwd:
        s = bnormGetBackwardWorkspaceSize(handle(), &d, nullptr, &n);
        break;
      case Call::kFrz:
        s = bnormGetBackwardFrozenWorkspaceSize(handle(), &d, nullptr, &n);
        break;
      default:
        return 0;
    }
    EXPECT_EQ(s, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    EXPECT_LE(n, 2 * used_[kWorkspace]) << "the workspace buffer is too small for this test";
    return n;
  }

  // Valid arguments for `call` on the world's shape: every optional pointer set.
  Args args(Call call) {
    Args a;
    a.handle = handle();
    a.desc = k_.desc();
    a.c = k_.s.c;
    a.x = p(kX);
    a.y = p(kY);
    a.dy = p(kDy);
    a.dx = p(kDx);
    a.gamma = f(kGamma);
    a.beta = f(kBeta);
    a.running_mean = f(kRunMean);
    a.running_var = f(kRunVar);
    a.step_count = reinterpret_cast<int64_t*>(p(kStep));
    a.saved_mean = f(kSavedMean);
    a.saved_rstd = f(kSavedRstd);
    a.dgamma = f(kDGamma);
    a.dbeta = f(kDBeta);
    a.scale = f(kScale);
    a.shift = f(kShift);
    a.workspace = p(kWorkspace);
    a.workspace_bytes = need(call);
    a.ws_out = &ws_out_;
    return a;
  }

  void write(Slot s, const std::vector<uint8_t>& bytes) {
    ASSERT_LE(bytes.size(), used_[s]);
    BT_CUDA(cudaMemcpy(base_[s], bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  }
  void fill(Slot s, uint8_t byte) { BT_CUDA(cudaMemset(base_[s], byte, used_[s])); }
  void set_step(int64_t v) {
    BT_CUDA(cudaMemcpy(base_[kStep], &v, sizeof v, cudaMemcpyHostToDevice));
  }
  int64_t step() const {
    int64_t v = -1;
    EXPECT_EQ(cudaMemcpy(&v, base_[kStep], sizeof v, cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  // The used bytes of a buffer.
  std::vector<uint8_t> read(Slot s) const {
    std::vector<uint8_t> b(used_[s]);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(b.data(), base_[s], b.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    return b;
  }

  void snapshot() {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (int s = 0; s < kSlots; ++s) snap_[s] = mem_[s].download();
    ws_out_snap_ = ws_out_;
  }
  // Every byte of every buffer (slack included) as at snapshot(), except the
  // buffers in `except`.
  ::testing::AssertionResult unchanged(std::set<int> except = {}) const {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::ostringstream bad;
    for (int s = 0; s < kSlots; ++s) {
      if (except.count(s)) continue;
      const std::vector<uint8_t> now = mem_[s].download();
      if (now.size() != snap_[s].size()) {
        bad << " " << slot_name(s) << "(no snapshot)";
        continue;
      }
      const uint8_t* b = base_[s];
      const uint8_t* m = static_cast<const uint8_t*>(mem_[s].get());
      for (size_t i = 0; i < now.size(); ++i) {
        if (now[i] != snap_[s][i]) {
          bad << " " << slot_name(s) << "[byte " << (ptrdiff_t(i) - (b - m)) << " from base]";
          break;
        }
      }
    }
    if (ws_out_ != ws_out_snap_) bad << " *workspace_bytes";
    if (!bad.str().empty()) return ::testing::AssertionFailure() << "changed:" << bad.str();
    return ::testing::AssertionSuccess();
  }

 private:
  Case k_{};
  std::unique_ptr<bt::Handle> handle_;
  size_t need_fwd_ = 0, need_bwd_ = 0, need_frz_ = 0;
  std::array<DeviceBuffer, kSlots> mem_;
  std::array<uint8_t*, kSlots> base_{};
  std::array<size_t, kSlots> used_{};
  std::array<std::vector<uint8_t>, kSlots> snap_;
  size_t ws_out_ = 0, ws_out_snap_ = 0;
};

// ---- expectations ---------------------------------------------------------------------------

// Leaves another call's failure as the thread's message.
void prime_message() {
  EXPECT_EQ(bnormCreate(nullptr), BNORM_STATUS_NULL_POINTER);
  EXPECT_STRNE(bnormGetLastErrorMessage(), "");
}

void check_message(Call call, std::initializer_list<const char*> needles) {
  const std::string msg = bnormGetLastErrorMessage();
  const std::string prefix = std::string(call_name(call)) + ": ";
  EXPECT_GT(msg.size(), prefix.size()) << "message \"" << msg << "\"";
  EXPECT_EQ(msg.compare(0, prefix.size(), prefix), 0)
      << "message \"" << msg << "\" does not start with \"" << prefix << "\"";
  for (const char* n : needles)
    EXPECT_NE(msg.find(n), std::string::npos) << "message \"" << msg << "\" does not name " << n;
}

// The call fails with `want`, names every needle and changes nothing.
void expect_failure(World& w, Call call, const Args& a, bnormStatus_t want,
                    std::initializer_list<const char*> needles, const std::string& what) {
  SCOPED_TRACE(std::string(call_name(call)) + ", " + what);
  prime_message();
  w.snapshot();
  const bnormStatus_t got = invoke(call, a);
  EXPECT_EQ(got, want) << "returned " << bnormGetStatusString(got) << "; message \""
                       << bnormGetLastErrorMessage() << "\"";
  check_message(call, needles);
  EXPECT_TRUE(w.unchanged());
}

// The call succeeds and clears the message.
bool expect_success(Call call, const Args& a, const std::string& what) {
  SCOPED_TRACE(std::string(call_name(call)) + ", " + what);
  prime_message();
  const bnormStatus_t got = invoke(call, a);
  EXPECT_EQ(got, BNORM_STATUS_SUCCESS) << "returned " << bnormGetStatusString(got) << "; message \""
                                       << bnormGetLastErrorMessage() << "\"";
  EXPECT_STREQ(bnormGetLastErrorMessage(), "");
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return got == BNORM_STATUS_SUCCESS;
}

// Decoded values of a tensor or per-channel buffer are all finite.
::testing::AssertionResult all_finite(const std::vector<uint8_t>& bytes, bnormDataType_t t,
                                      const char* what) {
  const std::vector<double> v = bt::decode(bytes, t);
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      return ::testing::AssertionFailure() << what << "[" << i << "] = " << v[i];
  return ::testing::AssertionSuccess();
}

const Case kBase{{3, 5, 7}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT};

// ---- status strings, version, handles ------------------------------------------------------

TEST(Status, StringsAreDistinctAndUnknownIsNamed) {
  BT_REQUIRE_DEVICE();
  const bnormStatus_t all[] = {
      BNORM_STATUS_SUCCESS,         BNORM_STATUS_NULL_POINTER, BNORM_STATUS_INVALID_VALUE,
      BNORM_STATUS_BAD_SHAPE,       BNORM_STATUS_MISALIGNED,   BNORM_STATUS_WORKSPACE_TOO_SMALL,
      BNORM_STATUS_BATCH_TOO_SMALL, BNORM_STATUS_BAD_ALIASING, BNORM_STATUS_BAD_HANDLE,
      BNORM_STATUS_NOT_SUPPORTED,   BNORM_STATUS_CUDA_ERROR,   BNORM_STATUS_ALLOC_FAILED,
      BNORM_STATUS_COMM_ERROR,      BNORM_STATUS_INTERNAL_ERROR};
  std::set<std::string> seen;
  for (bnormStatus_t s : all) {
    const char* str = bnormGetStatusString(s);
    ASSERT_NE(str, nullptr) << int(s);
    EXPECT_STRNE(str, "") << int(s);
    EXPECT_STRNE(str, "unknown status") << int(s);
    EXPECT_TRUE(seen.insert(str).second) << "duplicate string for " << int(s) << ": " << str;
  }
  EXPECT_EQ(seen.size(), sizeof all / sizeof all[0]);
  // Values inside the enum's range of values (0..1023), so that no caller
  // code has undefined behaviour.
  for (int v : {1, 99, 108, 199, 201, 299, 303, 899, 901, 1023}) {
    bnormStatus_t s;
    set_raw(s, v);
    const char* str = bnormGetStatusString(s);
    ASSERT_NE(str, nullptr) << v;
    EXPECT_STREQ(str, "unknown status") << v;
  }
}

TEST(Status, VersionMatchesTheHeader) {
  BT_REQUIRE_DEVICE();
  EXPECT_EQ(bnormGetVersion(), BNORM_VERSION);
  EXPECT_EQ(BNORM_VERSION,
            BNORM_VERSION_MAJOR * 10000 + BNORM_VERSION_MINOR * 100 + BNORM_VERSION_PATCH);
}

TEST(HandleErrors, CreateWithNullOutput) {
  BT_REQUIRE_DEVICE();
  (void)bnormDestroy(reinterpret_cast<bnormHandle_t>(std::vector<uint64_t>(64, 0).data()));
  ASSERT_STRNE(bnormGetLastErrorMessage(), "");  // another call's message
  EXPECT_EQ(bnormCreate(nullptr), BNORM_STATUS_NULL_POINTER);
  const std::string msg = bnormGetLastErrorMessage();
  EXPECT_EQ(msg.rfind("bnormCreate: ", 0), 0u) << msg;
  EXPECT_NE(msg.find("'handle'"), std::string::npos) << msg;
}

TEST(HandleErrors, CreateAndDestroySucceedAndClearTheMessage) {
  BT_REQUIRE_DEVICE();
  bnormHandle_t h = reinterpret_cast<bnormHandle_t>(uintptr_t(0x10));  // garbage to overwrite
  prime_message();
  ASSERT_EQ(bnormCreate(&h), BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  EXPECT_STREQ(bnormGetLastErrorMessage(), "");
  ASSERT_NE(h, nullptr);
  ASSERT_NE(h, reinterpret_cast<bnormHandle_t>(uintptr_t(0x10)));
  prime_message();
  EXPECT_EQ(bnormDestroy(h), BNORM_STATUS_SUCCESS);
  EXPECT_STREQ(bnormGetLastErrorMessage(), "");
}

TEST(HandleErrors, DestroyNullIsANoOp) {
  BT_REQUIRE_DEVICE();
  prime_message();
  EXPECT_EQ(bnormDestroy(nullptr), BNORM_STATUS_SUCCESS);
  EXPECT_STREQ(bnormGetLastErrorMessage(), "");
}

TEST(HandleErrors, DestroyForeignMemory) {
  BT_REQUIRE_DEVICE();
  for (uint8_t fill : {uint8_t(0x00), uint8_t(0xff), uint8_t(0x6d)}) {
    SCOPED_TRACE(int(fill));
    std::vector<uint8_t> fake(512, fill);
    prime_message();
    EXPECT_EQ(bnormDestroy(reinterpret_cast<bnormHandle_t>(fake.data())), BNORM_STATUS_BAD_HANDLE);
    const std::string msg = bnormGetLastErrorMessage();
    EXPECT_EQ(msg.rfind("bnormDestroy: ", 0), 0u) << msg;
    EXPECT_NE(msg.find("'handle'"), std::string::npos) << msg;
    EXPECT_EQ(fake, std::vector<uint8_t>(512, fill)) << "bnormDestroy wrote to foreign memory";
  }
  // Real handles still work afterwards.
  bt::Handle h;
  size_t bytes = 0;
  const bnormTensorDesc_t d = kBase.desc();
  BT_OK(bnormGetForwardTrainingWorkspaceSize(h, &d, nullptr, &bytes));
  EXPECT_GT(bytes, 0u);
}

TEST(HandleErrors, MessageIsPerThread) {
  BT_REQUIRE_DEVICE();
  bt::Handle h;
  const bnormTensorDesc_t d = kBase.desc();
  size_t bytes = 0;
  BT_OK(bnormGetBackwardWorkspaceSize(h, &d, nullptr, &bytes));
  std::string other;
  std::thread t([&] {
    bnormTensorDesc_t bad = d;
    bad.n = -1;
    size_t b = 0;
    EXPECT_EQ(bnormGetBackwardWorkspaceSize(h, &bad, nullptr, &b), BNORM_STATUS_BAD_SHAPE);
    other = bnormGetLastErrorMessage();
  });
  t.join();
  EXPECT_EQ(other.rfind("bnormGetBackwardWorkspaceSize: ", 0), 0u) << other;
  EXPECT_NE(other.find("desc->n"), std::string::npos) << other;
  EXPECT_STREQ(bnormGetLastErrorMessage(), "") << "another thread's failure leaked into this one";
}

// ---- errors every call shares --------------------------------------------------------------

const Call kAllCalls[] = {Call::kFwdWs, Call::kFwd, Call::kInf,   Call::kScaleShift,
                          Call::kBwdWs, Call::kBwd, Call::kFrzWs, Call::kFrz};
const Call kTensorCalls[] = {Call::kFwdWs, Call::kFwd,   Call::kInf, Call::kBwdWs,
                             Call::kBwd,   Call::kFrzWs, Call::kFrz};
const Call kQueries[] = {Call::kFwdWs, Call::kBwdWs, Call::kFrzWs};

class EveryCall : public ::testing::TestWithParam<Call> {
 protected:
  void SetUp() override {
    BT_REQUIRE_DEVICE();
    ASSERT_NO_FATAL_FAILURE(w.Init(kBase, kSeed));
  }
  World w;
};

TEST_P(EveryCall, BadHandle) {
  const Call call = GetParam();
  Args a = w.args(call);
  a.handle = nullptr;
  expect_failure(w, call, a, BNORM_STATUS_BAD_HANDLE, {"'handle'", "NULL"}, "NULL handle");
  for (uint8_t fill : {uint8_t(0x00), uint8_t(0xa5)}) {
    // A context-sized block of memory bnormCreate never saw (the struct is opaque).
    std::vector<uint8_t> fake(512, fill);
    a.handle = reinterpret_cast<bnormHandle_t>(fake.data());
    expect_failure(w, call, a, BNORM_STATUS_BAD_HANDLE, {"'handle'", "bnormCreate"},
                   "foreign handle filled with " + std::to_string(fill));
    EXPECT_EQ(fake, std::vector<uint8_t>(512, fill)) << "the call wrote to the fake handle";
  }
}

TEST_P(EveryCall, NullConfigMeansTheInitializer) {
  const Call call = GetParam();
  World twin;  // same seed, same bytes
  ASSERT_NO_FATAL_FAILURE(twin.Init(kBase, kSeed));
  Args a = w.args(call);
  a.pass_config = false;
  ASSERT_TRUE(expect_success(call, a, "config NULL"));
  ASSERT_TRUE(expect_success(call, twin.args(call), "config = BNORM_CONFIG_INITIALIZER"));
  for (int s = 0; s < kSlots; ++s) {
    if (s == kWorkspace) continue;  // scratch
    EXPECT_EQ(w.read(Slot(s)), twin.read(Slot(s))) << slot_name(s);
  }
  EXPECT_EQ(w.ws_out(), twin.ws_out());
}

TEST_P(EveryCall, ConfigSizeAndMagic) {
  const Call call = GetParam();
  const Args good = w.args(call);
  const size_t v0 = offsetof(bnormConfig_t, average) + sizeof(bnormAverage_t);
  for (size_t size : {size_t(0), size_t(1), offsetof(bnormConfig_t, eps), v0 - 1}) {
    Args a = good;
    a.config.size = size;
    expect_failure(w, call, a, BNORM_STATUS_INVALID_VALUE, {"config->size"},
                   "config->size = " + std::to_string(size));
  }
  for (unsigned magic : {0u, BNORM_CONFIG_MAGIC ^ 1u, ~BNORM_CONFIG_MAGIC}) {
    Args a = good;
    a.config.magic = magic;
    expect_failure(w, call, a, BNORM_STATUS_INVALID_VALUE, {"config->magic"},
                   "config->magic = " + std::to_string(magic));
  }
  // A caller compiled against a newer header passes a bigger struct.
  struct Newer {
    bnormConfig_t v0;
    double appended[4];
  } newer{};
  newer.v0 = good.config;
  newer.v0.size = sizeof(Newer);
  newer.appended[0] = kNaN;
  Args a = good;
  a.config_ptr = &newer.v0;
  EXPECT_TRUE(expect_success(call, a, "config from a newer caller"));
}

TEST_P(EveryCall, EpsMustBeFiniteAndNonNegative) {
  const Call call = GetParam();
  const Args good = w.args(call);
  for (double eps : {-1e-5, -std::numeric_limits<double>::denorm_min(), -kInf, kInf, kNaN}) {
    Args a = good;
    a.config.eps = eps;
    std::ostringstream what;
    what << "eps = " << eps;
    expect_failure(w, call, a, BNORM_STATUS_INVALID_VALUE, {"config->eps"}, what.str());
  }
  Args a = good;
  a.config.eps = 0.0;
  EXPECT_TRUE(expect_success(call, a, "eps = 0"));
}

TEST_P(EveryCall, UnknownAverage) {
  const Call call = GetParam();
  for (int v : {2, -1, 0x7fffffff}) {
    Args a = w.args(call);
    set_raw(a.config.average, v);
    expect_failure(w, call, a, BNORM_STATUS_INVALID_VALUE, {"config->average"},
                   "average = " + std::to_string(v));
  }
}

TEST_P(EveryCall, UnknownPath) {
  const Call call = GetParam();
  for (int v : {4, -1, 0x7fffffff}) {
    Args a = w.args(call);
    set_raw(a.config.path, v);
    expect_failure(w, call, a, BNORM_STATUS_INVALID_VALUE, {"config->path"},
                   "path = " + std::to_string(v));
  }
}

// A caller compiled against the first version of bnormConfig_t (without
// `path`) is served, and the bytes past its struct are never read as a path.
TEST_P(EveryCall, FirstVersionConfigIsAccepted) {
  const Call call = GetParam();
  Args a = w.args(call);
  a.config.size = offsetof(bnormConfig_t, average) + sizeof(bnormAverage_t);
  set_raw(a.config.path, 0x7fffffff);  // beyond the caller's size: ignored
  EXPECT_TRUE(expect_success(call, a, "first-version config"));
}

INSTANTIATE_TEST_SUITE_P(Api, EveryCall, ::testing::ValuesIn(kAllCalls), CallParamName);

// ---- descriptors ---------------------------------------------------------------------------

class TensorCall : public EveryCall {};

TEST_P(TensorCall, NullDescAndUnknownEnums) {
  const Call call = GetParam();
  const Args good = w.args(call);
  {
    Args a = good;
    a.pass_desc = false;
    expect_failure(w, call, a, BNORM_STATUS_NULL_POINTER, {"'desc'"}, "desc NULL");
  }
  for (int v : {3, -1, 100}) {
    Args a = good;
    set_raw(a.desc.dtype, v);
    expect_failure(w, call, a, BNORM_STATUS_INVALID_VALUE, {"desc->dtype"},
                   "dtype " + std::to_string(v));
  }
  for (int v : {2, -1, 100}) {
    Args a = good;
    set_raw(a.desc.layout, v);
    expect_failure(w, call, a, BNORM_STATUS_INVALID_VALUE, {"desc->layout"},
                   "layout " + std::to_string(v));
  }
}

TEST_P(TensorCall, BadShape) {
  const Call call = GetParam();
  struct Bad {
    int64_t n, c, spatial;
    const char* needle;
  };
  const int64_t kMin = std::numeric_limits<int64_t>::min();
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  const Bad bad[] = {
      {-1, 5, 7, "desc->n"},
      {kMin, 5, 7, "desc->n"},
      {3, 0, 7, "desc->c"},
      {3, -5, 7, "desc->c"},
      {0, 0, 7, "desc->c"},
      {3, kMaxC + 1, 7, "desc->c"},
      {3, kMax, 7, "desc->c"},
      {3, 5, 0, "desc->spatial"},
      {3, 5, -7, "desc->spatial"},
      {0, 5, 0, "desc->spatial"},
      {int64_t(1) << 40, int64_t(1) << 30, 1, "overflows"},                 // n * c
      {int64_t(1) << 40, int64_t(1) << 20, int64_t(1) << 10, "overflows"},  // * spatial
      {int64_t(1) << 31, int64_t(1) << 30, 1, "overflows"},                 // * 4 bytes (fp32)
      {kMax, 1, 1, "overflows"},                                            // * 4 bytes
  };
  for (const Bad& b : bad) {
    Args a = w.args(call);
    a.desc.n = b.n;
    a.desc.c = b.c;
    a.desc.spatial = b.spatial;
    std::ostringstream what;
    what << "n=" << b.n << " c=" << b.c << " spatial=" << b.spatial;
    expect_failure(w, call, a, BNORM_STATUS_BAD_SHAPE, {b.needle}, what.str());
  }
  if (call == Call::kFwdWs || call == Call::kBwdWs || call == Call::kFrzWs) {
    // 2^61 two-byte elements is 2^62 bytes: valid (only a size is computed).
    Args a = w.args(call);
    a.desc = {BNORM_DATA_HALF, BNORM_LAYOUT_NHWC, int64_t(1) << 31, int64_t(1) << 30, 1};
    EXPECT_TRUE(expect_success(call, a, "2^62 bytes of fp16"));
    a.desc = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 0, kMaxC, 1};
    EXPECT_TRUE(expect_success(call, a, "c = 2^31 - 1, n = 0"));
  }
}

INSTANTIATE_TEST_SUITE_P(Api, TensorCall, ::testing::ValuesIn(kTensorCalls), CallParamName);

// ---- workspace queries and the workspace ---------------------------------------------------

class Query : public EveryCall {};

Call call_of(Call query) {
  switch (query) {
    case Call::kFwdWs:
      return Call::kFwd;
    case Call::kBwdWs:
      return Call::kBwd;
    default:
      return Call::kFrz;
  }
}

TEST_P(Query, NullOutput) {
  const Call call = GetParam();
  Args a = w.args(call);
  a.ws_out = nullptr;
  expect_failure(w, call, a, BNORM_STATUS_NULL_POINTER, {"'workspace_bytes'"}, "output NULL");
}

// The answer is exactly enough: one byte less fails, for a batch and for an
// empty one (whose pointers may all be NULL).
TEST_P(Query, AnswerIsExactlyEnough) {
  const Call query = GetParam();
  const Call call = call_of(query);
  for (int64_t n : {int64_t(3), int64_t(0)}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    Args a = w.args(call);
    a.desc.n = n;
    if (n == 0) {
      a.x = a.dy = nullptr;
      a.y = a.dx = nullptr;
    }
    Args q = w.args(query);
    q.desc = a.desc;
    ASSERT_TRUE(expect_success(query, q, "query"));
    const size_t need = w.ws_out();
    ASSERT_GT(need, 0u);
    ASSERT_EQ(need, w.need_for(call, a.desc));
    a.workspace_bytes = need - 1;
    expect_failure(w, call, a, BNORM_STATUS_WORKSPACE_TOO_SMALL, {"'workspace_bytes'"},
                   "one byte short");
    a.workspace_bytes = 0;
    expect_failure(w, call, a, BNORM_STATUS_WORKSPACE_TOO_SMALL, {"'workspace_bytes'"}, "no bytes");
    a.workspace = nullptr;
    expect_failure(w, call, a, BNORM_STATUS_WORKSPACE_TOO_SMALL, {"'workspace_bytes'"},
                   "NULL and no bytes");
    a.workspace_bytes = need;
    expect_failure(w, call, a, BNORM_STATUS_NULL_POINTER, {"'workspace'"},
                   "NULL with bytes claimed");
    a.workspace = w.p(kWorkspace);
    EXPECT_TRUE(expect_success(call, a, "exactly the answer"));
    a.workspace_bytes = need + 1000;
    EXPECT_TRUE(expect_success(call, a, "more than the answer"));
  }
}

INSTANTIATE_TEST_SUITE_P(Api, Query, ::testing::ValuesIn(kQueries), CallParamName);

// ---- per-call errors -----------------------------------------------------------------------

class FixedWorld : public ::testing::Test {
 protected:
  void SetUp() override {
    BT_REQUIRE_DEVICE();
    ASSERT_NO_FATAL_FAILURE(w.Init(kBase, kSeed));
  }
  // Runs `a` on an empty batch (all tensor pointers NULL) and checks that
  // nothing but the buffers in `written` changed.
  void expect_empty_batch(Call call, Args a, std::set<int> written, const std::string& what) {
    a.desc.n = 0;
    a.x = a.dy = nullptr;
    a.y = a.dx = nullptr;
    a.workspace_bytes = w.need_for(call, a.desc);
    w.snapshot();
    EXPECT_TRUE(expect_success(call, a, "n = 0, " + what));
    EXPECT_TRUE(w.unchanged(written)) << what;
  }
  World w;
};

using ForwardTrainingErrors = FixedWorld;
using InferenceErrors = FixedWorld;
using ScaleShiftErrors = FixedWorld;
using BackwardErrors = FixedWorld;
using FrozenBackwardErrors = FixedWorld;

TEST_F(ForwardTrainingErrors, RequiredTensors) {
  const Args good = w.args(Call::kFwd);
  Args a = good;
  a.x = nullptr;
  expect_failure(w, Call::kFwd, a, BNORM_STATUS_NULL_POINTER, {"'x'"}, "x NULL");
  a = good;
  a.y = nullptr;
  expect_failure(w, Call::kFwd, a, BNORM_STATUS_NULL_POINTER, {"'y'"}, "y NULL");
}

TEST_F(ForwardTrainingErrors, HalfAPair) {
  const Args good = w.args(Call::kFwd);
  struct PairCase {
    float* Args::*field;
    const char* null_name;
    const char* other;
  };
  const PairCase cases[] = {{&Args::running_mean, "'running_mean' is NULL", "'running_var'"},
                            {&Args::running_var, "'running_var' is NULL", "'running_mean'"},
                            {&Args::saved_mean, "'saved_mean' is NULL", "'saved_rstd'"},
                            {&Args::saved_rstd, "'saved_rstd' is NULL", "'saved_mean'"}};
  for (const PairCase& c : cases) {
    Args a = good;
    a.*c.field = nullptr;
    expect_failure(w, Call::kFwd, a, BNORM_STATUS_NULL_POINTER, {c.null_name, c.other},
                   c.null_name);
    a.config.average = BNORM_AVERAGE_CUMULATIVE;
    expect_failure(w, Call::kFwd, a, BNORM_STATUS_NULL_POINTER, {c.null_name, c.other},
                   std::string(c.null_name) + " (cumulative)");
  }
}

TEST_F(ForwardTrainingErrors, OptionalPointers) {
  const Args good = w.args(Call::kFwd);
  Args a = good;
  a.gamma = nullptr;
  EXPECT_TRUE(expect_success(Call::kFwd, a, "gamma NULL"));
  a = good;
  a.beta = nullptr;
  EXPECT_TRUE(expect_success(Call::kFwd, a, "beta NULL"));
  a = good;
  a.running_mean = a.running_var = nullptr;
  a.step_count = nullptr;
  a.config.average = BNORM_AVERAGE_CUMULATIVE;  // nothing tracked: no counter needed
  w.snapshot();
  EXPECT_TRUE(expect_success(Call::kFwd, a, "running statistics NULL"));
  EXPECT_TRUE(w.unchanged({kY, kSavedMean, kSavedRstd, kWorkspace}));
  a = good;
  a.saved_mean = a.saved_rstd = nullptr;
  w.snapshot();
  EXPECT_TRUE(expect_success(Call::kFwd, a, "saved statistics NULL"));
  EXPECT_TRUE(w.unchanged({kY, kRunMean, kRunVar, kWorkspace}));
}

TEST_F(ForwardTrainingErrors, StepCounter) {
  Args a = w.args(Call::kFwd);
  a.config.average = BNORM_AVERAGE_CUMULATIVE;
  a.step_count = nullptr;
  expect_failure(w, Call::kFwd, a, BNORM_STATUS_NULL_POINTER, {"'step_count'"},
                 "cumulative, tracked, no counter");
  // The counter really is read and incremented when required...
  a = w.args(Call::kFwd);
  a.config.average = BNORM_AVERAGE_CUMULATIVE;
  ASSERT_EQ(w.step(), 7);
  EXPECT_TRUE(expect_success(Call::kFwd, a, "cumulative with counter"));
  EXPECT_EQ(w.step(), 8);
  // ...and ignored in exponential mode, set or not.
  a = w.args(Call::kFwd);
  EXPECT_TRUE(expect_success(Call::kFwd, a, "exponential with counter"));
  EXPECT_EQ(w.step(), 8);
  a.step_count = nullptr;
  EXPECT_TRUE(expect_success(Call::kFwd, a, "exponential without counter"));
}

TEST_F(ForwardTrainingErrors, FactorOutOfRange) {
  for (double f :
       {-0.1, -std::numeric_limits<double>::denorm_min(), 1.0 + 1e-12, 2.0, kInf, -kInf, kNaN}) {
    Args a = w.args(Call::kFwd);
    a.config.exponential_average_factor = f;
    std::ostringstream what;
    what << "factor = " << f;
    expect_failure(w, Call::kFwd, a, BNORM_STATUS_INVALID_VALUE, {"exponential_average_factor"},
                   what.str());
  }
  for (double f : {0.0, 1.0}) {
    Args a = w.args(Call::kFwd);
    a.config.exponential_average_factor = f;
    EXPECT_TRUE(expect_success(Call::kFwd, a, "factor = " + std::to_string(f)));
  }
  // Factor 0 leaves the running statistics exactly as they were.
  Args a = w.args(Call::kFwd);
  a.config.exponential_average_factor = 0.0;
  const std::vector<uint8_t> mean = w.read(kRunMean), var = w.read(kRunVar);
  EXPECT_TRUE(expect_success(Call::kFwd, a, "factor = 0"));
  EXPECT_EQ(w.read(kRunMean), mean);
  EXPECT_EQ(w.read(kRunVar), var);
}

TEST_F(ForwardTrainingErrors, BatchOfOne) {
  for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC}) {
    for (int64_t c : {int64_t(1), int64_t(5)}) {
      Args a = w.args(Call::kFwd);
      a.desc = {BNORM_DATA_FLOAT, l, 1, c, 1};
      a.workspace_bytes = w.need_for(Call::kFwd, a.desc);
      expect_failure(w, Call::kFwd, a, BNORM_STATUS_BATCH_TOO_SMALL, {"n * spatial"},
                     std::string("m = 1, ") + bt::layout_name(l) + ", c = " + std::to_string(c));
      a.config.average = BNORM_AVERAGE_CUMULATIVE;
      expect_failure(w, Call::kFwd, a, BNORM_STATUS_BATCH_TOO_SMALL, {"n * spatial"},
                     "m = 1, cumulative");
    }
  }
  // m = 2 either way is enough.
  for (bnormTensorDesc_t d : {bnormTensorDesc_t{BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 2, 5, 1},
                              bnormTensorDesc_t{BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 1, 5, 2}}) {
    Args a = w.args(Call::kFwd);
    a.desc = d;
    a.workspace_bytes = w.need_for(Call::kFwd, a.desc);
    w.fill(kSavedRstd, 0xff);
    EXPECT_TRUE(expect_success(Call::kFwd, a, "m = 2"));
    EXPECT_TRUE(all_finite(w.read(kSavedRstd), BNORM_DATA_FLOAT, "saved_rstd"));
  }
}

TEST_F(ForwardTrainingErrors, EmptyBatchWritesNothing) {
  const Args good = w.args(Call::kFwd);
  expect_empty_batch(Call::kFwd, good, {}, "exponential");
  Args a = good;
  a.config.average = BNORM_AVERAGE_CUMULATIVE;
  expect_empty_batch(Call::kFwd, a, {}, "cumulative");
  EXPECT_EQ(w.step(), 7);
  a.saved_mean = a.saved_rstd = nullptr;
  a.gamma = a.beta = nullptr;
  expect_empty_batch(Call::kFwd, a, {}, "cumulative, nothing saved");
  a.running_mean = a.running_var = nullptr;
  a.step_count = nullptr;
  expect_empty_batch(Call::kFwd, a, {}, "nothing tracked");
}

TEST_F(InferenceErrors, RequiredPointers) {
  const Args good = w.args(Call::kInf);
  for (const char* which : {"x", "y", "running_mean", "running_var"}) {
    Args a = good;
    const std::string s = which;
    if (s == "x") a.x = nullptr;
    if (s == "y") a.y = nullptr;
    if (s == "running_mean") a.running_mean = nullptr;
    if (s == "running_var") a.running_var = nullptr;
    const std::string needle = "'" + s + "'";
    expect_failure(w, Call::kInf, a, BNORM_STATUS_NULL_POINTER, {needle.c_str()}, s + " NULL");
    if (s == "running_mean" || s == "running_var") {  // required even for an empty batch
      a.desc.n = 0;
      a.x = a.y = nullptr;
      expect_failure(w, Call::kInf, a, BNORM_STATUS_NULL_POINTER, {needle.c_str()},
                     s + " NULL, n = 0");
    }
  }
  Args a = good;
  a.gamma = a.beta = nullptr;
  EXPECT_TRUE(expect_success(Call::kInf, a, "gamma, beta NULL"));
}

TEST_F(InferenceErrors, BatchOfOneIsValid) {
  Args a = w.args(Call::kInf);
  a.desc = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 1, 5, 1};
  w.fill(kY, 0xff);
  EXPECT_TRUE(expect_success(Call::kInf, a, "m = 1"));
  std::vector<uint8_t> y = w.read(kY);
  y.resize(5 * sizeof(float));
  EXPECT_TRUE(all_finite(y, BNORM_DATA_FLOAT, "y"));
}

TEST_F(InferenceErrors, EmptyBatchWritesNothing) {
  const Args good = w.args(Call::kInf);
  expect_empty_batch(Call::kInf, good, {}, "all set");
  Args a = good;
  a.gamma = a.beta = nullptr;
  expect_empty_batch(Call::kInf, a, {}, "gamma, beta NULL");
}

TEST_F(ScaleShiftErrors, BadChannelCount) {
  for (int64_t c : {int64_t(0), int64_t(-1), kMaxC + 1, std::numeric_limits<int64_t>::min(),
                    std::numeric_limits<int64_t>::max()}) {
    Args a = w.args(Call::kScaleShift);
    a.c = c;
    expect_failure(w, Call::kScaleShift, a, BNORM_STATUS_BAD_SHAPE, {"'c'"},
                   "c = " + std::to_string(c));
  }
}

TEST_F(ScaleShiftErrors, RequiredPointers) {
  const Args good = w.args(Call::kScaleShift);
  struct R {
    float* Args::*field;
    const char* needle;
  };
  for (const R& r :
       {R{&Args::running_mean, "'running_mean'"}, R{&Args::running_var, "'running_var'"},
        R{&Args::scale, "'scale'"}, R{&Args::shift, "'shift'"}}) {
    Args a = good;
    a.*r.field = nullptr;
    expect_failure(w, Call::kScaleShift, a, BNORM_STATUS_NULL_POINTER, {r.needle}, r.needle);
  }
  Args a = good;
  a.gamma = a.beta = nullptr;
  w.fill(kScale, 0xff);
  w.fill(kShift, 0xff);
  EXPECT_TRUE(expect_success(Call::kScaleShift, a, "gamma, beta NULL"));
  EXPECT_TRUE(all_finite(w.read(kScale), BNORM_DATA_FLOAT, "scale"));
  EXPECT_TRUE(all_finite(w.read(kShift), BNORM_DATA_FLOAT, "shift"));
}

TEST_F(ScaleShiftErrors, Misaligned) {
  const Args good = w.args(Call::kScaleShift);
  struct M {
    const float* Args::*cfield;
    float* Args::*field;
    const char* needle;
  };
  const M ms[] = {{&Args::gamma, nullptr, "'gamma'"},
                  {&Args::beta, nullptr, "'beta'"},
                  {nullptr, &Args::running_mean, "'running_mean'"},
                  {nullptr, &Args::running_var, "'running_var'"},
                  {nullptr, &Args::scale, "'scale'"},
                  {nullptr, &Args::shift, "'shift'"}};
  for (const M& m : ms) {
    for (ptrdiff_t off : {1, 2, 3, 4}) {
      Args a = good;
      if (m.cfield) a.*m.cfield = offset_by(a.*m.cfield, off);
      if (m.field) a.*m.field = offset_by(a.*m.field, off);
      const std::string what = std::string(m.needle) + " + " + std::to_string(off);
      if (off % 4 == 0)
        EXPECT_TRUE(expect_success(Call::kScaleShift, a, what));
      else
        expect_failure(w, Call::kScaleShift, a, BNORM_STATUS_MISALIGNED, {m.needle, "aligned"},
                       what);
    }
  }
}

TEST_F(ScaleShiftErrors, Overlap) {
  const Args good = w.args(Call::kScaleShift);
  const ptrdiff_t cb = ptrdiff_t(w.channel_bytes());
  struct O {
    const char* what;
    void (*set)(Args&, ptrdiff_t);
    const char* a;
    const char* b;
  };
  const O os[] = {
      {"shift = scale + 4", [](Args& a, ptrdiff_t) { a.shift = offset_by(a.scale, 4); }, "'scale'",
       "'shift'"},
      {"shift = scale", [](Args& a, ptrdiff_t) { a.shift = a.scale; }, "'scale'", "'shift'"},
      {"scale = shift + cb - 4",
       [](Args& a, ptrdiff_t cb) { a.scale = offset_by(a.shift, cb - 4); }, "'scale'", "'shift'"},
      {"scale over gamma",
       [](Args& a, ptrdiff_t) { a.scale = const_cast<float*>(offset_by(a.gamma, 4)); }, "'scale'",
       "'gamma'"},
      {"scale = gamma", [](Args& a, ptrdiff_t) { a.scale = const_cast<float*>(a.gamma); },
       "'scale'", "'gamma'"},
      {"shift over beta",
       [](Args& a, ptrdiff_t) { a.shift = const_cast<float*>(offset_by(a.beta, -4)); }, "'shift'",
       "'beta'"},
      {"scale over running_mean",
       [](Args& a, ptrdiff_t) { a.scale = offset_by(a.running_mean, 8); }, "'scale'",
       "'running_mean'"},
      {"shift = running_var", [](Args& a, ptrdiff_t) { a.shift = a.running_var; }, "'shift'",
       "'running_var'"},
      {"shift over gamma",
       [](Args& a, ptrdiff_t cb) { a.shift = const_cast<float*>(offset_by(a.gamma, cb - 4)); },
       "'shift'", "'gamma'"},
  };
  for (const O& o : os) {
    Args a = good;
    o.set(a, cb);
    expect_failure(w, Call::kScaleShift, a, BNORM_STATUS_BAD_ALIASING, {o.a, o.b}, o.what);
  }
  // Adjacent is not overlapping.
  Args a = good;
  a.shift = offset_by(a.scale, cb);
  EXPECT_TRUE(expect_success(Call::kScaleShift, a, "shift = scale + c"));
  a = good;
  a.scale = const_cast<float*>(offset_by(a.gamma, cb));
  EXPECT_TRUE(expect_success(Call::kScaleShift, a, "scale right after gamma"));
}

TEST_F(BackwardErrors, RequiredTensors) {
  const Args good = w.args(Call::kBwd);
  Args a = good;
  a.x = nullptr;
  expect_failure(w, Call::kBwd, a, BNORM_STATUS_NULL_POINTER, {"'x'"}, "x NULL");
  a.dgamma = a.dbeta = nullptr;  // the full gradient needs x whatever is returned
  expect_failure(w, Call::kBwd, a, BNORM_STATUS_NULL_POINTER, {"'x'"}, "x NULL, no dgamma");
  a = good;
  a.dy = nullptr;
  expect_failure(w, Call::kBwd, a, BNORM_STATUS_NULL_POINTER, {"'dy'"}, "dy NULL");
  a = good;
  a.dx = nullptr;
  expect_failure(w, Call::kBwd, a, BNORM_STATUS_NULL_POINTER, {"'dx'"}, "dx NULL");
}

TEST_F(BackwardErrors, HalfAPair) {
  const Args good = w.args(Call::kBwd);
  struct P {
    float* Args::*field;
    const char* null_name;
    const char* other;
  };
  const P ps[] = {{&Args::saved_mean, "'saved_mean' is NULL", "'saved_rstd'"},
                  {&Args::saved_rstd, "'saved_rstd' is NULL", "'saved_mean'"},
                  {&Args::dgamma, "'dgamma' is NULL", "'dbeta'"},
                  {&Args::dbeta, "'dbeta' is NULL", "'dgamma'"}};
  for (const P& p : ps) {
    Args a = good;
    a.*p.field = nullptr;
    expect_failure(w, Call::kBwd, a, BNORM_STATUS_NULL_POINTER, {p.null_name, p.other},
                   p.null_name);
  }
}

TEST_F(BackwardErrors, OptionalPointers) {
  const Args good = w.args(Call::kBwd);
  Args a = good;
  a.gamma = nullptr;
  EXPECT_TRUE(expect_success(Call::kBwd, a, "gamma NULL"));
  a = good;
  a.saved_mean = a.saved_rstd = nullptr;
  EXPECT_TRUE(expect_success(Call::kBwd, a, "saved statistics NULL (recomputed)"));
  a = good;
  a.dgamma = a.dbeta = nullptr;
  w.snapshot();
  EXPECT_TRUE(expect_success(Call::kBwd, a, "dgamma, dbeta NULL"));
  EXPECT_TRUE(w.unchanged({kDx, kWorkspace}));
}

TEST_F(BackwardErrors, BatchOfOne) {
  for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC}) {
    Args a = w.args(Call::kBwd);
    a.desc = {BNORM_DATA_FLOAT, l, 1, 5, 1};
    a.workspace_bytes = w.need_for(Call::kBwd, a.desc);
    expect_failure(w, Call::kBwd, a, BNORM_STATUS_BATCH_TOO_SMALL, {"n * spatial"},
                   std::string("m = 1 ") + bt::layout_name(l));
    a.saved_mean = a.saved_rstd = nullptr;
    expect_failure(w, Call::kBwd, a, BNORM_STATUS_BATCH_TOO_SMALL, {"n * spatial"},
                   "m = 1, statistics recomputed");
  }
  Args a = w.args(Call::kBwd);
  a.desc = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 1, 5, 2};
  a.workspace_bytes = w.need_for(Call::kBwd, a.desc);
  w.fill(kDGamma, 0xff);
  EXPECT_TRUE(expect_success(Call::kBwd, a, "m = 2"));
  EXPECT_TRUE(all_finite(w.read(kDGamma), BNORM_DATA_FLOAT, "dgamma"));
}

TEST_F(BackwardErrors, EmptyBatchZeroesTheGradients) {
  const Args good = w.args(Call::kBwd);
  for (bool saved : {true, false}) {
    Args a = good;
    if (!saved) a.saved_mean = a.saved_rstd = nullptr;
    w.fill(kDGamma, 0xff);
    w.fill(kDBeta, 0xff);
    expect_empty_batch(Call::kBwd, a, {kDGamma, kDBeta},
                       saved ? "saved statistics" : "no saved statistics");
    EXPECT_EQ(w.read(kDGamma), std::vector<uint8_t>(w.channel_bytes(), 0)) << "dgamma";
    EXPECT_EQ(w.read(kDBeta), std::vector<uint8_t>(w.channel_bytes(), 0)) << "dbeta";
  }
  Args a = good;
  a.dgamma = a.dbeta = nullptr;
  expect_empty_batch(Call::kBwd, a, {}, "no gradients");
}

TEST_F(FrozenBackwardErrors, RequiredPointers) {
  const Args good = w.args(Call::kFrz);
  Args a = good;
  a.x = nullptr;  // needed for dgamma
  expect_failure(w, Call::kFrz, a, BNORM_STATUS_NULL_POINTER, {"'x'"}, "x NULL with dgamma");
  a = good;
  a.dy = nullptr;
  expect_failure(w, Call::kFrz, a, BNORM_STATUS_NULL_POINTER, {"'dy'"}, "dy NULL");
  a = good;
  a.dx = nullptr;
  expect_failure(w, Call::kFrz, a, BNORM_STATUS_NULL_POINTER, {"'dx'"}, "dx NULL");
  for (bool grads : {true, false}) {
    for (int64_t n : {int64_t(3), int64_t(0)}) {
      const std::string what =
          std::string(grads ? "with" : "without") + " gradients, n = " + std::to_string(n);
      a = good;
      a.desc.n = n;
      a.workspace_bytes = w.need_for(Call::kFrz, a.desc);
      if (n == 0) a.x = a.dy = a.dx = nullptr;
      if (!grads) a.dgamma = a.dbeta = nullptr;
      a.running_mean = nullptr;
      expect_failure(w, Call::kFrz, a, BNORM_STATUS_NULL_POINTER, {"'running_mean'"},
                     "running_mean NULL, " + what);
      a.running_mean = w.f(kRunMean);
      a.running_var = nullptr;
      expect_failure(w, Call::kFrz, a, BNORM_STATUS_NULL_POINTER, {"'running_var'"},
                     "running_var NULL, " + what);
    }
  }
}

TEST_F(FrozenBackwardErrors, HalfAPair) {
  const Args good = w.args(Call::kFrz);
  Args a = good;
  a.dgamma = nullptr;
  expect_failure(w, Call::kFrz, a, BNORM_STATUS_NULL_POINTER, {"'dgamma' is NULL", "'dbeta'"},
                 "dgamma NULL");
  a = good;
  a.dbeta = nullptr;
  expect_failure(w, Call::kFrz, a, BNORM_STATUS_NULL_POINTER, {"'dbeta' is NULL", "'dgamma'"},
                 "dbeta NULL");
}

TEST_F(FrozenBackwardErrors, XIsOptionalWithoutGradients) {
  World twin;
  ASSERT_NO_FATAL_FAILURE(twin.Init(kBase, kSeed));
  Args a = w.args(Call::kFrz);
  a.x = nullptr;
  a.dgamma = a.dbeta = nullptr;
  w.fill(kDx, 0xff);
  twin.fill(kDx, 0xff);
  ASSERT_TRUE(expect_success(Call::kFrz, a, "x NULL, no gradients"));
  Args b = twin.args(Call::kFrz);
  b.dgamma = b.dbeta = nullptr;
  ASSERT_TRUE(expect_success(Call::kFrz, b, "x set, no gradients"));
  EXPECT_TRUE(all_finite(w.read(kDx), BNORM_DATA_FLOAT, "dx"));
  EXPECT_EQ(w.read(kDx), twin.read(kDx)) << "dx depends on whether x was passed";
}

TEST_F(FrozenBackwardErrors, BatchOfOneIsValid) {
  for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC}) {
    Args a = w.args(Call::kFrz);
    a.desc = {BNORM_DATA_FLOAT, l, 1, 5, 1};
    a.workspace_bytes = w.need_for(Call::kFrz, a.desc);
    w.fill(kDx, 0xff);
    w.fill(kDGamma, 0xff);
    w.fill(kDBeta, 0xff);
    EXPECT_TRUE(expect_success(Call::kFrz, a, std::string("m = 1 ") + bt::layout_name(l)));
    std::vector<uint8_t> dx = w.read(kDx);
    dx.resize(5 * sizeof(float));
    EXPECT_TRUE(all_finite(dx, BNORM_DATA_FLOAT, "dx"));
    EXPECT_TRUE(all_finite(w.read(kDGamma), BNORM_DATA_FLOAT, "dgamma"));
    EXPECT_TRUE(all_finite(w.read(kDBeta), BNORM_DATA_FLOAT, "dbeta"));
  }
}

TEST_F(FrozenBackwardErrors, EmptyBatchZeroesTheGradients) {
  const Args good = w.args(Call::kFrz);
  w.fill(kDGamma, 0xff);
  w.fill(kDBeta, 0xff);
  expect_empty_batch(Call::kFrz, good, {kDGamma, kDBeta}, "with gradients");
  EXPECT_EQ(w.read(kDGamma), std::vector<uint8_t>(w.channel_bytes(), 0)) << "dgamma";
  EXPECT_EQ(w.read(kDBeta), std::vector<uint8_t>(w.channel_bytes(), 0)) << "dbeta";
  Args a = good;
  a.dgamma = a.dbeta = nullptr;
  a.gamma = nullptr;
  expect_empty_batch(Call::kFrz, a, {}, "no gradients");
}

// ---- overlaps the checks do not catch -------------------------------------------------------
//
// The header: "y == x (in place) is allowed; any other overlap is
// BNORM_STATUS_BAD_ALIASING" (training), "y == x allowed; other overlap is
// BAD_ALIASING" (inference), "dx == dy or dx == x allowed; other overlap is
// BNORM_STATUS_BAD_ALIASING" (backward); and host/forward.cpp's own comment:
// "Outputs may not overlap each other or the inputs (y == x excepted)".
// These overlap an output with a per-channel array or a per-channel output
// with a tensor.

using OtherOverlapsAreRejected = FixedWorld;

TEST_F(OtherOverlapsAreRejected, ForwardTraining) {
  const Call k = Call::kFwd;
  const Args good = w.args(k);
  Args a = good;
  a.gamma = reinterpret_cast<const float*>(w.p(kY));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'y'", "'gamma'"}, "gamma inside y");
  a = good;
  a.saved_mean = reinterpret_cast<float*>(offset_by(w.p(kY), 8));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'y'", "'saved_mean'"},
                 "saved_mean inside y");
  a = good;
  a.running_var = reinterpret_cast<float*>(offset_by(w.p(kX), 4));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'x'", "'running_var'"},
                 "running_var inside x");
  a = good;
  a.saved_rstd = const_cast<float*>(a.beta);
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'saved_rstd'", "'beta'"},
                 "saved_rstd = beta");
}

TEST_F(OtherOverlapsAreRejected, ForwardInference) {
  const Call k = Call::kInf;
  const Args good = w.args(k);
  Args a = good;
  a.running_var = reinterpret_cast<float*>(offset_by(w.p(kY), 4));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'y'", "'running_var'"},
                 "running_var inside y");
  a = good;
  a.gamma = reinterpret_cast<const float*>(w.p(kY));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'y'", "'gamma'"}, "gamma inside y");
}

TEST_F(OtherOverlapsAreRejected, Backward) {
  const Call k = Call::kBwd;
  const Args good = w.args(k);
  Args a = good;
  a.dgamma = reinterpret_cast<float*>(offset_by(w.p(kDx), 4));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'dx'", "'dgamma'"}, "dgamma inside dx");
  a = good;
  a.saved_rstd = reinterpret_cast<float*>(w.p(kDx));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'dx'", "'saved_rstd'"},
                 "saved_rstd inside dx");
  a = good;
  a.dbeta = reinterpret_cast<float*>(const_cast<void*>(a.dy));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'dbeta'", "'dy'"}, "dbeta inside dy");
}

TEST_F(OtherOverlapsAreRejected, BackwardFrozen) {
  const Call k = Call::kFrz;
  const Args good = w.args(k);
  Args a = good;
  a.running_mean = reinterpret_cast<float*>(offset_by(w.p(kDx), 4));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'dx'", "'running_mean'"},
                 "running_mean inside dx");
  a = good;
  a.dgamma = reinterpret_cast<float*>(const_cast<void*>(a.x));
  expect_failure(w, k, a, BNORM_STATUS_BAD_ALIASING, {"'dgamma'", "'x'"}, "dgamma inside x");
}

// ---- alignment and aliasing in every dtype and layout --------------------------------------

std::vector<Case> type_cases() {
  std::vector<Case> out;
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC}) out.push_back({{3, 5, 7}, l, t});
  return out;
}

std::string TypeName(const ::testing::TestParamInfo<Case>& info) {
  return std::string(bt::layout_name(info.param.layout)) + "_" + bt::dtype_name(info.param.dtype);
}

class PerType : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    BT_REQUIRE_DEVICE();
    ASSERT_NO_FATAL_FAILURE(w.Init(GetParam(), kSeed));
  }

  // Shifts one pointer argument by each offset: MISALIGNED naming it where
  // the offset breaks `alignment`, success where it keeps it.
  template <class T>
  void shift_one(Call call, const Args& good, T* Args::*field, const char* needle, size_t alignment,
                 std::initializer_list<ptrdiff_t> offsets) {
    for (ptrdiff_t off : offsets) {
      Args a = good;
      a.*field = offset_by(a.*field, off);
      const std::string what = std::string(needle) + " + " + std::to_string(off) + " bytes";
      if (size_t(off) % alignment == 0)
        EXPECT_TRUE(expect_success(call, a, what));
      else
        expect_failure(w, call, a, BNORM_STATUS_MISALIGNED, {needle, "aligned"}, what);
    }
  }
  void tensors(Call call, const Args& good, std::initializer_list<int> which) {
    const size_t e = w.elem();
    for (int s : which) {
      const ptrdiff_t offs_e = ptrdiff_t(e);
      if (s == kX) shift_one(call, good, &Args::x, "'x'", e, {1, 2, 3, offs_e});
      if (s == kY) shift_one(call, good, &Args::y, "'y'", e, {1, 2, 3, offs_e});
      if (s == kDy) shift_one(call, good, &Args::dy, "'dy'", e, {1, 2, 3, offs_e});
      if (s == kDx) shift_one(call, good, &Args::dx, "'dx'", e, {1, 2, 3, offs_e});
    }
  }
  void channels(Call call, const Args& good, const float* Args::*field, const char* needle) {
    shift_one(call, good, field, needle, 4, {1, 2, 3, 4});
  }
  void channels(Call call, const Args& good, float* Args::*field, const char* needle) {
    shift_one(call, good, field, needle, 4, {1, 2, 3, 4});
  }
  void workspace(Call call, const Args& good) {
    shift_one(call, good, &Args::workspace, "'workspace'", 16, {1, 2, 4, 8, 12, 16});
  }

  // The call fails with BAD_ALIASING naming both arguments.
  void overlap(Call call, const Args& a, const char* n1, const char* n2, const std::string& what) {
    expect_failure(w, call, a, BNORM_STATUS_BAD_ALIASING, {n1, n2, "overlap"}, what);
  }

  World w;
};

using MisalignedPointers = PerType;
using OverlappingPointers = PerType;

TEST_P(MisalignedPointers, ForwardTraining) {
  Args good = w.args(Call::kFwd);
  good.config.average = BNORM_AVERAGE_CUMULATIVE;  // the step counter is checked too
  tensors(Call::kFwd, good, {kX, kY});
  channels(Call::kFwd, good, &Args::gamma, "'gamma'");
  channels(Call::kFwd, good, &Args::beta, "'beta'");
  channels(Call::kFwd, good, &Args::running_mean, "'running_mean'");
  channels(Call::kFwd, good, &Args::running_var, "'running_var'");
  channels(Call::kFwd, good, &Args::saved_mean, "'saved_mean'");
  channels(Call::kFwd, good, &Args::saved_rstd, "'saved_rstd'");
  shift_one(Call::kFwd, good, &Args::step_count, "'step_count'", 8, {1, 2, 4, 8});
  workspace(Call::kFwd, good);
}

TEST_P(MisalignedPointers, ForwardInference) {
  const Args good = w.args(Call::kInf);
  tensors(Call::kInf, good, {kX, kY});
  channels(Call::kInf, good, &Args::gamma, "'gamma'");
  channels(Call::kInf, good, &Args::beta, "'beta'");
  channels(Call::kInf, good, &Args::running_mean, "'running_mean'");
  channels(Call::kInf, good, &Args::running_var, "'running_var'");
}

TEST_P(MisalignedPointers, Backward) {
  const Args good = w.args(Call::kBwd);
  tensors(Call::kBwd, good, {kX, kDy, kDx});
  channels(Call::kBwd, good, &Args::gamma, "'gamma'");
  channels(Call::kBwd, good, &Args::saved_mean, "'saved_mean'");
  channels(Call::kBwd, good, &Args::saved_rstd, "'saved_rstd'");
  channels(Call::kBwd, good, &Args::dgamma, "'dgamma'");
  channels(Call::kBwd, good, &Args::dbeta, "'dbeta'");
  workspace(Call::kBwd, good);
}

TEST_P(MisalignedPointers, BackwardFrozen) {
  const Args good = w.args(Call::kFrz);
  tensors(Call::kFrz, good, {kX, kDy, kDx});
  channels(Call::kFrz, good, &Args::gamma, "'gamma'");
  channels(Call::kFrz, good, &Args::running_mean, "'running_mean'");
  channels(Call::kFrz, good, &Args::running_var, "'running_var'");
  channels(Call::kFrz, good, &Args::dgamma, "'dgamma'");
  channels(Call::kFrz, good, &Args::dbeta, "'dbeta'");
  workspace(Call::kFrz, good);
}

TEST_P(OverlappingPointers, ForwardTraining) {
  const Call k = Call::kFwd;
  const ptrdiff_t e = ptrdiff_t(w.elem()), tb = ptrdiff_t(w.tensor_bytes());
  const ptrdiff_t cb = ptrdiff_t(w.channel_bytes());
  {
    // y == x computes exactly what y != x does.
    World ref, in_place;
    ASSERT_NO_FATAL_FAILURE(ref.Init(GetParam(), kSeed + 1));
    ASSERT_NO_FATAL_FAILURE(in_place.Init(GetParam(), kSeed + 1));
    Args b = in_place.args(k);
    b.y = in_place.p(kX);
    ASSERT_TRUE(expect_success(k, ref.args(k), "y != x"));
    ASSERT_TRUE(expect_success(k, b, "y == x"));
    EXPECT_EQ(in_place.read(kX), ref.read(kY)) << "y in place";
    for (Slot s : {kSavedMean, kSavedRstd, kRunMean, kRunVar})
      EXPECT_EQ(in_place.read(s), ref.read(s)) << slot_name(s);
  }
  const Args good = w.args(k);
  Args a = good;
  a.y = offset_by(w.p(kX), e);
  overlap(k, a, "'y'", "'x'", "y = x + 1 element");
  a.y = offset_by(w.p(kX), tb - e);
  overlap(k, a, "'y'", "'x'", "y over the last element of x");
  a.y = offset_by(w.p(kX), -e);
  overlap(k, a, "'y'", "'x'", "y = x - 1 element");
  a = good;
  a.x = offset_by(w.p(kX), e);
  a.y = w.p(kX);
  overlap(k, a, "'y'", "'x'", "x = y + 1 element");
  a = good;
  a.running_var = offset_by(a.running_mean, 4);
  overlap(k, a, "'running_mean'", "'running_var'", "running_var = running_mean + 1");
  a.running_var = a.running_mean;
  overlap(k, a, "'running_mean'", "'running_var'", "running_var = running_mean");
  a = good;
  a.saved_mean = offset_by(a.running_var, 4);
  overlap(k, a, "'saved_mean'", "'running_var'", "saved_mean = running_var + 1");
  a.saved_mean = offset_by(a.running_var, -cb + 4);
  overlap(k, a, "'saved_mean'", "'running_var'", "saved_mean ends in running_var");
  a = good;
  a.saved_rstd = a.saved_mean;
  overlap(k, a, "'saved_mean'", "'saved_rstd'", "saved_rstd = saved_mean");
  a = good;
  a.saved_rstd = offset_by(a.running_mean, cb - 4);
  overlap(k, a, "'saved_rstd'", "'running_mean'", "saved_rstd over running_mean's end");
  a = good;
  a.saved_mean = a.running_mean;
  overlap(k, a, "'saved_mean'", "'running_mean'", "saved_mean = running_mean");
  // Adjacent is not overlapping.
  a = good;
  a.y = offset_by(w.p(kX), tb);
  EXPECT_TRUE(expect_success(k, a, "y right after x"));
  a = good;
  a.saved_mean = offset_by(a.running_var, cb);
  a.saved_rstd = offset_by(a.running_var, 2 * cb);
  EXPECT_TRUE(expect_success(k, a, "saved statistics right after running_var"));
}

TEST_P(OverlappingPointers, ForwardInference) {
  const Call k = Call::kInf;
  const ptrdiff_t e = ptrdiff_t(w.elem()), tb = ptrdiff_t(w.tensor_bytes());
  {
    World ref, in_place;
    ASSERT_NO_FATAL_FAILURE(ref.Init(GetParam(), kSeed + 2));
    ASSERT_NO_FATAL_FAILURE(in_place.Init(GetParam(), kSeed + 2));
    Args b = in_place.args(k);
    b.y = in_place.p(kX);
    ASSERT_TRUE(expect_success(k, ref.args(k), "y != x"));
    ASSERT_TRUE(expect_success(k, b, "y == x"));
    EXPECT_EQ(in_place.read(kX), ref.read(kY)) << "y in place";
  }
  const Args good = w.args(k);
  Args a = good;
  a.y = offset_by(w.p(kX), e);
  overlap(k, a, "'y'", "'x'", "y = x + 1 element");
  a.y = offset_by(w.p(kX), tb - e);
  overlap(k, a, "'y'", "'x'", "y over the last element of x");
  a.y = offset_by(w.p(kX), -e);
  overlap(k, a, "'y'", "'x'", "y = x - 1 element");
  a.y = offset_by(w.p(kX), tb);
  EXPECT_TRUE(expect_success(k, a, "y right after x"));
}

TEST_P(OverlappingPointers, Backward) {
  const Call k = Call::kBwd;
  const ptrdiff_t e = ptrdiff_t(w.elem()), tb = ptrdiff_t(w.tensor_bytes());
  const ptrdiff_t cb = ptrdiff_t(w.channel_bytes());
  {
    // dx == dy and dx == x compute exactly what a separate dx does.
    World ref, on_dy, on_x;
    ASSERT_NO_FATAL_FAILURE(ref.Init(GetParam(), kSeed + 3));
    ASSERT_NO_FATAL_FAILURE(on_dy.Init(GetParam(), kSeed + 3));
    ASSERT_NO_FATAL_FAILURE(on_x.Init(GetParam(), kSeed + 3));
    Args b = on_dy.args(k);
    b.dx = on_dy.p(kDy);
    Args c = on_x.args(k);
    c.dx = on_x.p(kX);
    ASSERT_TRUE(expect_success(k, ref.args(k), "separate dx"));
    ASSERT_TRUE(expect_success(k, b, "dx == dy"));
    ASSERT_TRUE(expect_success(k, c, "dx == x"));
    EXPECT_EQ(on_dy.read(kDy), ref.read(kDx)) << "dx == dy";
    EXPECT_EQ(on_x.read(kX), ref.read(kDx)) << "dx == x";
    for (Slot s : {kDGamma, kDBeta}) {
      EXPECT_EQ(on_dy.read(s), ref.read(s)) << slot_name(s) << " with dx == dy";
      EXPECT_EQ(on_x.read(s), ref.read(s)) << slot_name(s) << " with dx == x";
    }
  }
  const Args good = w.args(k);
  Args a = good;
  a.dx = offset_by(w.p(kDy), e);
  overlap(k, a, "'dx'", "'dy'", "dx = dy + 1 element");
  a.dx = offset_by(w.p(kDy), -e);
  overlap(k, a, "'dx'", "'dy'", "dx = dy - 1 element");
  a.dx = offset_by(w.p(kDy), tb - e);
  overlap(k, a, "'dx'", "'dy'", "dx over the last element of dy");
  a = good;
  a.dx = offset_by(w.p(kX), e);
  overlap(k, a, "'dx'", "'x'", "dx = x + 1 element");
  a.dx = offset_by(w.p(kX), -e);
  overlap(k, a, "'dx'", "'x'", "dx = x - 1 element");
  a = good;
  a.dbeta = offset_by(a.dgamma, 4);
  overlap(k, a, "'dgamma'", "'dbeta'", "dbeta = dgamma + 1");
  a.dbeta = a.dgamma;
  overlap(k, a, "'dgamma'", "'dbeta'", "dbeta = dgamma");
  a = good;
  a.dgamma = const_cast<float*>(offset_by(a.gamma, 4));
  overlap(k, a, "'dgamma'", "'gamma'", "dgamma over gamma");
  a = good;
  a.dbeta = offset_by(a.saved_mean, -cb + 4);
  overlap(k, a, "'dbeta'", "'saved_mean'", "dbeta over saved_mean");
  a = good;
  a.dgamma = a.saved_rstd;
  overlap(k, a, "'dgamma'", "'saved_rstd'", "dgamma = saved_rstd");
  a = good;
  a.dx = offset_by(w.p(kDy), tb);
  EXPECT_TRUE(expect_success(k, a, "dx right after dy"));
  a = good;
  a.dbeta = offset_by(a.dgamma, cb);
  EXPECT_TRUE(expect_success(k, a, "dbeta right after dgamma"));
}

TEST_P(OverlappingPointers, BackwardFrozen) {
  const Call k = Call::kFrz;
  const ptrdiff_t e = ptrdiff_t(w.elem()), tb = ptrdiff_t(w.tensor_bytes());
  const ptrdiff_t cb = ptrdiff_t(w.channel_bytes());
  {
    World ref, on_dy, on_x;
    ASSERT_NO_FATAL_FAILURE(ref.Init(GetParam(), kSeed + 4));
    ASSERT_NO_FATAL_FAILURE(on_dy.Init(GetParam(), kSeed + 4));
    ASSERT_NO_FATAL_FAILURE(on_x.Init(GetParam(), kSeed + 4));
    Args b = on_dy.args(k);
    b.dx = on_dy.p(kDy);
    Args c = on_x.args(k);
    c.dx = on_x.p(kX);
    ASSERT_TRUE(expect_success(k, ref.args(k), "separate dx"));
    ASSERT_TRUE(expect_success(k, b, "dx == dy"));
    ASSERT_TRUE(expect_success(k, c, "dx == x"));
    EXPECT_EQ(on_dy.read(kDy), ref.read(kDx)) << "dx == dy";
    EXPECT_EQ(on_x.read(kX), ref.read(kDx)) << "dx == x";
    for (Slot s : {kDGamma, kDBeta}) {
      EXPECT_EQ(on_dy.read(s), ref.read(s)) << slot_name(s) << " with dx == dy";
      EXPECT_EQ(on_x.read(s), ref.read(s)) << slot_name(s) << " with dx == x";
    }
  }
  const Args good = w.args(k);
  Args a = good;
  a.dx = offset_by(w.p(kDy), e);
  overlap(k, a, "'dx'", "'dy'", "dx = dy + 1 element");
  a.dx = offset_by(w.p(kDy), -e);
  overlap(k, a, "'dx'", "'dy'", "dx = dy - 1 element");
  a = good;
  a.dx = offset_by(w.p(kX), tb - e);
  overlap(k, a, "'dx'", "'x'", "dx over the last element of x");
  a = good;
  a.dbeta = offset_by(a.dgamma, cb - 4);
  overlap(k, a, "'dgamma'", "'dbeta'", "dbeta over dgamma's end");
  a = good;
  a.dbeta = a.running_var;
  overlap(k, a, "'dbeta'", "'running_var'", "dbeta = running_var");
  a = good;
  a.dgamma = offset_by(a.running_mean, 4);
  overlap(k, a, "'dgamma'", "'running_mean'", "dgamma over running_mean");
  a = good;
  a.dx = offset_by(w.p(kX), tb);
  EXPECT_TRUE(expect_success(k, a, "dx right after x"));
}

INSTANTIATE_TEST_SUITE_P(Api, MisalignedPointers, ::testing::ValuesIn(type_cases()), TypeName);
INSTANTIATE_TEST_SUITE_P(Api, OverlappingPointers, ::testing::ValuesIn(type_cases()), TypeName);

}  // namespace

// Concurrent callers: many host threads, each with its own handle and
// stream, calling every operation at once; the per-thread last-error
// message; handles created and destroyed concurrently.
//
// The oracle is determinism: every call, made from any thread while the
// others run, must give bitwise the results the same call gave on the main
// thread with no one else running (and those are checked against the
// double-precision reference). Worker threads record what went wrong as
// text; the main thread asserts. A watchdog aborts the process if the
// threads do not finish (a deadlock must fail, not hang CI).
//
// Under the emulator, launches from different host threads take turns on its
// thread pool (emu/scheduler.cpp) and single-block launches run on the
// calling thread itself; the randomized fiber schedule is on throughout.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "threads.h"
#include "ops.h"
#ifdef BT_EMU
#include <bnorm_emu.h>
#endif

namespace {

using bt::Case;

constexpr int kThreads = 8;

// Runs `body(t)` on kThreads threads; one still running after `limit` is a
// deadlock: the process aborts with a message (threads.h).
void run_threads(const std::function<void(int)>& body,
                 std::chrono::seconds limit = std::chrono::seconds(600)) {
  bt::run_threads(kThreads, body, limit, "test_concurrency");
}

using bt::Barrier;

// Collects failures from any thread.
class Failures {
 public:
  void add(const std::string& s) {
    std::lock_guard<std::mutex> lock(m_);
    if (list_.size() < 20) list_.push_back(s);
    ++count_;
  }
  ::testing::AssertionResult none() const {
    if (count_ == 0) return ::testing::AssertionSuccess();
    auto r = ::testing::AssertionFailure() << count_ << " failure(s) in worker threads:";
    for (const auto& s : list_) r << "\n  " << s;
    return r;
  }

 private:
  mutable std::mutex m_;
  std::vector<std::string> list_;
  size_t count_ = 0;
};

// ---- one operation, with raw calls on a given handle and stream ----------------------------

enum class Kind {
  kTrain, kTrainCumulative, kInference, kScaleShift, kBackward, kBackwardRecompute, kFrozen,
  // The fused epilogues (config.epilogue, residual, relu_mask, residual_grad)
  // and the folding of BN into a linear layer.
  kTrainAddRelu, kInferenceAddRelu, kBackwardAddRelu, kBackwardRecomputeRelu, kFrozenAddRelu,
  kFold
};
constexpr int64_t kFoldIn = 6;  // in_features of the folded layer

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kTrain: return "forward training";
    case Kind::kTrainCumulative: return "forward training (cumulative)";
    case Kind::kInference: return "forward inference";
    case Kind::kScaleShift: return "scale/shift";
    case Kind::kBackward: return "backward";
    case Kind::kBackwardRecompute: return "backward (recomputed statistics)";
    case Kind::kFrozen: return "frozen backward";
    case Kind::kTrainAddRelu: return "forward training + add + ReLU";
    case Kind::kInferenceAddRelu: return "forward inference + add + ReLU (with mask)";
    case Kind::kBackwardAddRelu: return "backward through add + ReLU";
    case Kind::kBackwardRecomputeRelu: return "backward through ReLU (recomputed statistics)";
    case Kind::kFrozenAddRelu: return "frozen backward through add + ReLU";
    case Kind::kFold: return "fold into a linear layer";
  }
  return "?";
}

struct Job {
  Case k;
  Kind kind;
  bnormPath_t path;
  std::string name() const {
    return k.name() + " " + kind_name(kind) + " " + bt::path_name(path);
  }
};

// Inputs of a job, made once (deterministic).
struct Inputs {
  std::vector<uint8_t> x, dy, z, mask;
  std::vector<float> gamma, beta, rm, rv, mean, rstd, weight, bias;
};

std::vector<float> floats(size_t n, uint64_t seed, double lo, double hi) {
  const std::vector<double> d = bt::random_floats(n, seed, lo, hi);
  return std::vector<float>(d.begin(), d.end());
}

Inputs make_inputs(const Job& j, uint64_t seed) {
  Inputs in;
  const size_t c = size_t(j.k.s.c);
  in.x = bt::encode(bt::random_activations(j.k, seed), j.k.dtype);
  in.dy = bt::encode(bt::random_activations(j.k, seed + 1, -0.5, 0.5, 0.5, 1.5), j.k.dtype);
  in.gamma = floats(c, seed + 2, 0.5, 1.5);
  in.beta = floats(c, seed + 3, -1.0, 1.0);
  in.rm = floats(c, seed + 4, -1.0, 1.0);
  in.rv = floats(c, seed + 5, 0.5, 2.0);
  in.mean = floats(c, seed + 6, -3.0, 3.0);
  in.rstd = floats(c, seed + 7, 0.3, 2.0);
  in.z = bt::encode(bt::random_activations(j.k, seed + 8, -1.0, 1.0), j.k.dtype);
  // A ReLU mask for the backward calls: bits of a fixed pattern.
  in.mask.resize(size_t((j.k.numel() + 31) / 32) * 4);
  for (size_t i = 0; i < in.mask.size(); ++i) in.mask[i] = uint8_t((seed + i) * 0x9e3779b9u >> 24);
  in.weight = floats(c * size_t(kFoldIn), seed + 9, -1.0, 1.0);
  in.bias = floats(c, seed + 10, -1.0, 1.0);
  return in;
}

// The outcome of a job: status, message and every output's bytes, in order.
struct Outcome {
  bnormStatus_t status = BNORM_STATUS_INTERNAL_ERROR;
  std::string message;
  std::vector<uint8_t> bytes;
  std::string error;  // a CUDA runtime failure of the test itself
};

class Buf {
 public:
  Buf(size_t bytes, cudaStream_t s, std::string* err) : bytes_(bytes), s_(s), err_(err) {
    if (bytes && cudaMalloc(&p_, bytes) != cudaSuccess) *err_ += "cudaMalloc failed; ";
  }
  ~Buf() {
    if (p_) cudaFree(p_);
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  template <class T>
  void put(const std::vector<T>& v) {
    if (v.size() * sizeof(T) != bytes_) {
      *err_ += "size mismatch; ";
      return;
    }
    if (bytes_ && cudaMemcpyAsync(p_, v.data(), bytes_, cudaMemcpyHostToDevice, s_) != cudaSuccess)
      *err_ += "upload failed; ";
  }
  void poison() {
    if (bytes_ && cudaMemsetAsync(p_, 0xff, bytes_, s_) != cudaSuccess) *err_ += "memset failed; ";
  }
  void append_to(std::vector<uint8_t>& out) {
    const size_t at = out.size();
    out.resize(at + bytes_);
    if (bytes_ && cudaMemcpyAsync(out.data() + at, p_, bytes_, cudaMemcpyDeviceToHost, s_) != cudaSuccess)
      *err_ += "download failed; ";
  }
  void* get() const { return p_; }
  float* f() const { return static_cast<float*>(p_); }

 private:
  void* p_ = nullptr;
  size_t bytes_;
  cudaStream_t s_;
  std::string* err_;
};

Outcome run_job(const Job& j, const Inputs& in, bnormHandle_t h, cudaStream_t s) {
  Outcome o;
  const bnormTensorDesc_t d = j.k.desc();
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  cfg.path = j.path;
  if (j.kind == Kind::kTrainCumulative) cfg.average = BNORM_AVERAGE_CUMULATIVE;
  const size_t c = size_t(j.k.s.c), cb = c * sizeof(float), tb = in.x.size();
  size_t ws_bytes = 0;
  bnormStatus_t q = BNORM_STATUS_SUCCESS;
  const bool train = j.kind == Kind::kTrain || j.kind == Kind::kTrainCumulative ||
                     j.kind == Kind::kTrainAddRelu;
  const bool full_backward = j.kind == Kind::kBackward || j.kind == Kind::kBackwardRecompute ||
                             j.kind == Kind::kBackwardAddRelu ||
                             j.kind == Kind::kBackwardRecomputeRelu;
  const bool frozen = j.kind == Kind::kFrozen || j.kind == Kind::kFrozenAddRelu;
  if (train)
    q = bnormGetForwardTrainingWorkspaceSize(h, &d, &cfg, &ws_bytes);
  else if (full_backward)
    q = bnormGetBackwardWorkspaceSize(h, &d, &cfg, &ws_bytes);
  else if (frozen)
    q = bnormGetBackwardFrozenWorkspaceSize(h, &d, &cfg, &ws_bytes);
  if (q != BNORM_STATUS_SUCCESS) {
    o.status = q;
    o.message = bnormGetLastErrorMessage();
    return o;
  }
  Buf x(tb, s, &o.error), dy(tb, s, &o.error), out(tb, s, &o.error);
  Buf gamma(cb, s, &o.error), beta(cb, s, &o.error), rm(cb, s, &o.error), rv(cb, s, &o.error);
  Buf mean(cb, s, &o.error), rstd(cb, s, &o.error), o1(cb, s, &o.error), o2(cb, s, &o.error);
  Buf ws(ws_bytes, s, &o.error), step(sizeof(int64_t), s, &o.error);
  Buf z(tb, s, &o.error), dz(tb, s, &o.error), mask(in.mask.size(), s, &o.error);
  Buf weight(in.weight.size() * sizeof(float), s, &o.error), bias(cb, s, &o.error);
  x.put(in.x);
  z.put(in.z);
  weight.put(in.weight);
  bias.put(in.bias);
  // The mask is an input of the backward calls, an output of the forward ones.
  if (full_backward || frozen)
    mask.put(in.mask);
  else
    mask.poison();
  dz.poison();
  switch (j.kind) {
    case Kind::kTrainAddRelu:
    case Kind::kInferenceAddRelu:
    case Kind::kBackwardAddRelu:
    case Kind::kFrozenAddRelu:
      cfg.epilogue = BNORM_EPILOGUE_ADD_RELU;
      break;
    case Kind::kBackwardRecomputeRelu:
      cfg.epilogue = BNORM_EPILOGUE_RELU;
      break;
    default:
      break;
  }
  cfg.residual = z.get();
  cfg.residual_grad = dz.get();
  cfg.relu_mask = mask.get();
  cfg.relu_mask_bytes = in.mask.size();
  dy.put(in.dy);
  gamma.put(in.gamma);
  beta.put(in.beta);
  rm.put(in.rm);
  rv.put(in.rv);
  mean.put(in.mean);
  rstd.put(in.rstd);
  step.put(std::vector<int64_t>{3});
  out.poison();
  o1.poison();
  o2.poison();
  ws.poison();
  switch (j.kind) {
    case Kind::kTrain:
    case Kind::kTrainCumulative:
    case Kind::kTrainAddRelu:
      o.status = bnormForwardTraining(h, s, &d, &cfg, x.get(), out.get(), gamma.f(), beta.f(),
                                      rm.f(), rv.f(), static_cast<int64_t*>(step.get()), o1.f(),
                                      o2.f(), ws.get(), ws_bytes);
      break;
    case Kind::kInference:
    case Kind::kInferenceAddRelu:
      o.status = bnormForwardInference(h, s, &d, &cfg, x.get(), out.get(), gamma.f(), beta.f(),
                                       rm.f(), rv.f());
      break;
    case Kind::kScaleShift:
      o.status = bnormGetInferenceScaleShift(h, s, j.k.s.c, &cfg, gamma.f(), beta.f(), rm.f(),
                                             rv.f(), o1.f(), o2.f());
      break;
    case Kind::kBackward:
    case Kind::kBackwardRecompute:
    case Kind::kBackwardAddRelu:
    case Kind::kBackwardRecomputeRelu: {
      const bool saved = j.kind == Kind::kBackward || j.kind == Kind::kBackwardAddRelu;
      o.status = bnormBackward(h, s, &d, &cfg, x.get(), dy.get(), out.get(), gamma.f(),
                               saved ? mean.f() : nullptr, saved ? rstd.f() : nullptr, o1.f(),
                               o2.f(), ws.get(), ws_bytes);
      break;
    }
    case Kind::kFrozen:
    case Kind::kFrozenAddRelu:
      o.status = bnormBackwardFrozen(h, s, &d, &cfg, x.get(), dy.get(), out.get(), gamma.f(),
                                     rm.f(), rv.f(), o1.f(), o2.f(), ws.get(), ws_bytes);
      break;
    case Kind::kFold:  // weight in place, bias_out = o1
      o.status = bnormFoldIntoLinear(h, s, j.k.s.c, kFoldIn, &cfg, gamma.f(), beta.f(), rm.f(),
                                     rv.f(), weight.f(), bias.f(), o1.f());
      break;
  }
  o.message = bnormGetLastErrorMessage();
  if (j.kind != Kind::kScaleShift && j.kind != Kind::kFold) out.append_to(o.bytes);
  o1.append_to(o.bytes);
  o2.append_to(o.bytes);
  if (j.kind == Kind::kFold) weight.append_to(o.bytes);
  if (j.kind == Kind::kTrainAddRelu || j.kind == Kind::kInferenceAddRelu) mask.append_to(o.bytes);
  if (j.kind == Kind::kBackwardAddRelu || j.kind == Kind::kFrozenAddRelu) dz.append_to(o.bytes);
  if (train) {
    rm.append_to(o.bytes);
    rv.append_to(o.bytes);
    step.append_to(o.bytes);
  }
  if (cudaStreamSynchronize(s) != cudaSuccess) o.error += "cudaStreamSynchronize failed; ";
  return o;
}

std::vector<Job> jobs() {
  std::vector<Job> out;
  const std::vector<Case> cases = {
      {{2, 5, 7}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT},     // the single-block path
      {{4, 3, 300}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},    // split across blocks
      {{64, 37, 3}, BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16},
  };
  for (const Case& k : cases)
    for (Kind kind : {Kind::kTrain, Kind::kTrainCumulative, Kind::kInference, Kind::kScaleShift,
                      Kind::kBackward, Kind::kBackwardRecompute, Kind::kFrozen,
                      Kind::kTrainAddRelu, Kind::kInferenceAddRelu, Kind::kBackwardAddRelu,
                      Kind::kBackwardRecomputeRelu, Kind::kFrozenAddRelu, Kind::kFold})
      out.push_back({k, kind, k.numel() < 100 ? BNORM_PATH_AUTO : BNORM_PATH_MULTI_PASS});
  // One forced single-block run of a larger case too.
  out.push_back({cases[2], Kind::kTrain, BNORM_PATH_SINGLE_BLOCK});
  out.push_back({cases[2], Kind::kBackward, BNORM_PATH_SINGLE_BLOCK});
  // And the persistent (cooperative) kernels, whose grid-wide barrier runs
  // on threads of their own while the other jobs run.
  for (const Case& k : {cases[1], cases[2]})
    for (Kind kind : {Kind::kTrain, Kind::kTrainCumulative, Kind::kBackward})
      out.push_back({k, kind, BNORM_PATH_PERSISTENT});
  out.push_back({cases[2], Kind::kTrainAddRelu, BNORM_PATH_SINGLE_BLOCK});
  out.push_back({cases[2], Kind::kBackwardAddRelu, BNORM_PATH_SINGLE_BLOCK});
  return out;
}

class RandomSchedule {  // the emulator's randomized fiber order, for a scope
 public:
  RandomSchedule() {
#ifdef BT_EMU
    bnormEmuSetRandomSchedule(1, 20240611);
#endif
  }
  ~RandomSchedule() {
#ifdef BT_EMU
    bnormEmuSetRandomSchedule(0, 0);
#endif
  }
};

TEST(Concurrency, EveryOperationFromManyThreadsMatchesTheSerialRun) {
  BT_REQUIRE_DEVICE();
  const std::vector<Job> js = jobs();
  std::vector<Inputs> inputs;
  std::vector<Outcome> serial;
  {
    bt::Handle h;
    for (size_t i = 0; i < js.size(); ++i) {
      inputs.push_back(make_inputs(js[i], 7000 + 13 * i));
      serial.push_back(run_job(js[i], inputs.back(), h, nullptr));
      ASSERT_EQ(serial.back().status, BNORM_STATUS_SUCCESS) << js[i].name() << ": " << serial.back().message;
      ASSERT_EQ(serial.back().error, "") << js[i].name();
      ASSERT_EQ(serial.back().message, "") << js[i].name();
    }
  }
  // The serial results are right: y of each training job (plain, and with add + ReLU) against the reference.
  for (size_t i = 0; i < js.size(); ++i) {
    if (js[i].kind != Kind::kTrain && js[i].kind != Kind::kTrainAddRelu) continue;
    const Case& k = js[i].k;
    const std::vector<double> x = bt::decode(inputs[i].x, k.dtype);
    std::vector<double> want(x.size());
    const std::vector<double> g(inputs[i].gamma.begin(), inputs[i].gamma.end());
    const std::vector<double> b(inputs[i].beta.begin(), inputs[i].beta.end());
    const bnref_shape sh = k.ref();
    bnref_forward_training(&sh, x.data(), g.data(), b.data(), 1e-5, want.data(), nullptr, nullptr,
                           nullptr);
    if (js[i].kind == Kind::kTrainAddRelu) {
      const std::vector<double> z = bt::decode(inputs[i].z, k.dtype);
      bnref_add_relu(int64_t(want.size()), want.data(), z.data(), want.data(), nullptr);
    }
    const std::vector<uint8_t> y(serial[i].bytes.begin(), serial[i].bytes.begin() + long(inputs[i].x.size()));
    EXPECT_TRUE(bt::all_close(bt::decode(y, k.dtype), want, bt::output_tolerance(k.dtype), "y"))
        << js[i].name();
  }

  RandomSchedule random_schedule;
  Failures failures;
  std::atomic<int> calls{0};
  Barrier start(kThreads);
#if defined(__SANITIZE_THREAD__)
  constexpr int kRounds = 1;  // ThreadSanitizer (make test-tsan) is 100x slower
#else
  constexpr int kRounds = 4;
#endif
  run_threads([&](int t) {
    bnormHandle_t h = nullptr;
    cudaStream_t s = nullptr;
    if (bnormCreate(&h) != BNORM_STATUS_SUCCESS) failures.add("bnormCreate failed");
    if (cudaStreamCreate(&s) != cudaSuccess) failures.add("cudaStreamCreate failed");
    start.wait();  // everyone calls at once
    for (int r = 0; r < kRounds; ++r) {
      for (size_t n = 0; n < js.size(); ++n) {
        const size_t i = (n + size_t(t) * 3 + size_t(r)) % js.size();  // each thread its own order
        const Outcome o = run_job(js[i], inputs[i], h, s);
        ++calls;
        const std::string who = "thread " + std::to_string(t) + ", " + js[i].name() + ": ";
        if (o.status != BNORM_STATUS_SUCCESS) failures.add(who + "status " + std::to_string(o.status) + " " + o.message);
        if (!o.message.empty()) failures.add(who + "message after success: " + o.message);
        if (!o.error.empty()) failures.add(who + o.error);
        if (o.bytes != serial[i].bytes) failures.add(who + "results differ from the serial run");
      }
    }
    if (cudaStreamDestroy(s) != cudaSuccess) failures.add("cudaStreamDestroy failed");
    if (bnormDestroy(h) != BNORM_STATUS_SUCCESS) failures.add("bnormDestroy failed");
  });
  EXPECT_TRUE(failures.none());
  EXPECT_EQ(calls.load(), kThreads * kRounds * int(js.size()));
}

TEST(Concurrency, LastErrorMessageIsPerThread) {
  BT_REQUIRE_DEVICE();
  Failures failures;
  Barrier sync(kThreads);
  constexpr int kRounds = 50;
  run_threads([&](int t) {
    bnormHandle_t h = nullptr;
    if (bnormCreate(&h) != BNORM_STATUS_SUCCESS) failures.add("bnormCreate failed");
    const std::string mine = "(" + std::to_string(-1000 - t) + ")";
    for (int r = 0; r < kRounds; ++r) {
      // Odd threads fail on odd rounds, even threads on even ones: at every
      // barrier some threads hold an error and others none.
      const bool fail = (t + r) % 2 == 0;
      bnormTensorDesc_t d = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, fail ? -1000 - t : 2, 3, 4};
      size_t ws = 0;
      const bnormStatus_t st = bnormGetForwardTrainingWorkspaceSize(h, &d, nullptr, &ws);
      sync.wait();  // every thread has made its call
      const std::string msg = bnormGetLastErrorMessage();
      if (fail) {
        if (st != BNORM_STATUS_BAD_SHAPE)
          failures.add("thread " + std::to_string(t) + ": status " + std::to_string(st));
        if (msg.find(mine) == std::string::npos ||
            msg.rfind("bnormGetForwardTrainingWorkspaceSize: ", 0) != 0)
          failures.add("thread " + std::to_string(t) + " round " + std::to_string(r) +
                       ": its message is \"" + msg + "\", not its own failure " + mine);
      } else if (st != BNORM_STATUS_SUCCESS || !msg.empty()) {
        failures.add("thread " + std::to_string(t) + " round " + std::to_string(r) +
                     ": succeeded, but its message is \"" + msg + "\"");
      }
      sync.wait();  // nobody calls again before everyone has read its message
    }
    if (bnormDestroy(h) != BNORM_STATUS_SUCCESS) failures.add("bnormDestroy failed");
    // The message of a thread that has made no call: empty, never another's.
    std::thread fresh([&] {
      if (bnormGetLastErrorMessage()[0] != '\0') failures.add("a new thread sees a message");
    });
    fresh.join();
  });
  EXPECT_TRUE(failures.none());
}

TEST(Concurrency, HandlesCreatedAndDestroyedConcurrently) {
  BT_REQUIRE_DEVICE();
  Failures failures;
  Barrier sync(kThreads);
  constexpr int kPerThread = 200;
  std::vector<bnormHandle_t> made(size_t(kThreads) * kPerThread, nullptr);
  const bnormTensorDesc_t d = {BNORM_DATA_HALF, BNORM_LAYOUT_NHWC, 3, 5, 7};
  size_t want_ws = 0;
  {
    bt::Handle h;
    BT_OK(bnormGetBackwardWorkspaceSize(h, &d, nullptr, &want_ws));
  }
  run_threads([&](int t) {
    const std::string who = "thread " + std::to_string(t) + ": ";
    // Create, use and destroy in a loop, all threads at once.
    for (int i = 0; i < kPerThread; ++i) {
      bnormHandle_t h = nullptr;
      if (bnormCreate(&h) != BNORM_STATUS_SUCCESS || !h) {
        failures.add(who + "bnormCreate failed: " + bnormGetLastErrorMessage());
        continue;
      }
      size_t ws = 0;
      if (bnormGetBackwardWorkspaceSize(h, &d, nullptr, &ws) != BNORM_STATUS_SUCCESS || ws != want_ws)
        failures.add(who + "a fresh handle plans differently");
      if (bnormDestroy(h) != BNORM_STATUS_SUCCESS) failures.add(who + "bnormDestroy failed");
      if (bnormDestroy(nullptr) != BNORM_STATUS_SUCCESS) failures.add(who + "bnormDestroy(NULL) failed");
    }
    // Create many, then destroy another thread's: a handle is not tied to
    // the thread that made it.
    for (int i = 0; i < kPerThread; ++i)
      if (bnormCreate(&made[size_t(t) * kPerThread + size_t(i)]) != BNORM_STATUS_SUCCESS)
        failures.add(who + "bnormCreate failed");
    sync.wait();
    const int other = (t + 1) % kThreads;
    for (int i = 0; i < kPerThread; ++i) {
      bnormHandle_t h = made[size_t(other) * kPerThread + size_t(i)];
      size_t ws = 0;
      if (bnormGetBackwardWorkspaceSize(h, &d, nullptr, &ws) != BNORM_STATUS_SUCCESS || ws != want_ws)
        failures.add(who + "another thread's handle plans differently");
      if (bnormDestroy(h) != BNORM_STATUS_SUCCESS) failures.add(who + "bnormDestroy failed");
    }
  });
  EXPECT_TRUE(failures.none());
}

}  // namespace

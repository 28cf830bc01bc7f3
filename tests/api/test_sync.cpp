// Synchronized batch norm through the split phases: R ranks as host
// threads, each with its own handle, stream and slice of the global batch
// (uneven, and some empty), exchanging the packed buffers through the host
// as a communicator would (all-gather in rank order; fp64 sums added in rank
// order). The global batch is the ranks' slices concatenated along n, in
// both layouts; every rank's results are checked against the double
// reference on it, against each other (bitwise: statistics, running
// statistics, dgamma, dbeta) and against a second run (bitwise).
#include <bnorm.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>

#include "harness.h"
#include "ops.h"
#include "threads.h"

#if BT_HAVE_NCCL
#include <nccl.h>
#endif

namespace {

using bt::Case;
using bt::DeviceBuffer;

using bt::Barrier;

// The host-staged exchange of a job of `nranks` ranks.
class Exchange {
 public:
  explicit Exchange(int nranks) : n_(nranks), barrier_(nranks), staged_(size_t(nranks)) {}
  // Every rank's `bytes` at send, in rank order, into recv (n * bytes).
  void all_gather(int rank, cudaStream_t s, const DeviceBuffer& send, DeviceBuffer& recv,
                  size_t bytes) {
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    staged_[size_t(rank)] = send.download();
    staged_[size_t(rank)].resize(bytes);
    barrier_.wait();
    std::vector<uint8_t> all;
    for (int r = 0; r < n_; ++r) all.insert(all.end(), staged_[r].begin(), staged_[r].end());
    recv.upload(all);
    barrier_.wait();
  }
  // buf (fp64 values) summed element-wise over the ranks in rank order.
  void all_reduce(int rank, cudaStream_t s, DeviceBuffer& buf) {
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    staged_[size_t(rank)] = buf.download();
    barrier_.wait();
    const size_t count = buf.bytes() / sizeof(double);
    std::vector<double> sum(count, 0.0);
    for (int r = 0; r < n_; ++r) {
      std::vector<double> v(count);
      std::memcpy(v.data(), staged_[r].data(), count * sizeof(double));
      for (size_t i = 0; i < count; ++i) sum[i] += v[i];
    }
    buf.upload(sum.data(), count * sizeof(double));
    barrier_.wait();
  }
  void wait() { barrier_.wait(); }

 private:
  int n_;
  Barrier barrier_;
  std::vector<std::vector<uint8_t>> staged_;
};

// A job: the global batch's case (its n is the sum of the ranks') and the
// per-rank sample counts.
struct Job {
  bt::Shape s;  // s.n unused: the sum of ns
  bnormLayout_t layout;
  bnormDataType_t dtype;
  std::vector<int64_t> ns;
  Case global() const {
    return {{std::accumulate(ns.begin(), ns.end(), int64_t(0)), s.c, s.spatial}, layout, dtype};
  }
  Case rank_case(int r) const { return {{ns[size_t(r)], s.c, s.spatial}, layout, dtype}; }
  int64_t offset(int r) const {  // first element of rank r's slice
    return std::accumulate(ns.begin(), ns.begin() + r, int64_t(0)) * s.c * s.spatial;
  }
  std::string name() const {
    std::string out = global().name() + "_ranks";
    for (int64_t n : ns) out += "_" + std::to_string(n);
    return out;
  }
};

struct JobName {
  std::string operator()(const ::testing::TestParamInfo<Job>& info) const {
    return info.param.name();
  }
};

// What the global batch holds, on the host.
struct Inputs {
  std::vector<double> x, dy, z;
  bt::ChannelParams p;
  std::vector<double> running_mean, running_var;
};

Inputs make_inputs(const Job& j, uint64_t seed, double mean_lo = -3.0, double mean_hi = 3.0) {
  const Case g = j.global();
  Inputs in;
  in.x = bt::random_activations(g, seed, mean_lo, mean_hi);
  in.dy = bt::random_activations(g, seed + 1, -0.5, 0.5, 0.5, 1.5);
  in.z = bt::random_activations(g, seed + 2);
  in.p = bt::random_params(g.s.c, seed + 3);
  in.running_mean = bt::random_floats(size_t(g.s.c), seed + 4, -1.0, 1.0);
  in.running_var = bt::random_floats(size_t(g.s.c), seed + 5, 0.5, 2.0);
  return in;
}

// The whole batch as one device's forward training would take it.
bt::TrainRequest global_request(const Inputs& in) {
  bt::TrainRequest tr;
  tr.x = in.x;
  tr.p = in.p;
  tr.running_mean = in.running_mean;
  tr.running_var = in.running_var;
  return tr;
}

std::vector<double> slice(const std::vector<double>& v, const Job& j, int r) {
  const auto b = v.begin() + j.offset(r);
  return std::vector<double>(b, b + j.rank_case(r).numel());
}

// One rank's results.
struct RankResult {
  bnormStatus_t forward = BNORM_STATUS_SUCCESS, backward = BNORM_STATUS_SUCCESS;
  std::string message;
  std::vector<double> y, dx, dz;
  std::vector<float> saved_mean, saved_rstd, running_mean, running_var, dgamma, dbeta;
  std::vector<uint32_t> mask;
  int64_t step = -1;
};

struct Options {
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  int64_t global_n = -1;
  int steps = 1;  // forward steps before the backward (running statistics)
  bool backward = true;
};

DeviceBuffer poisoned(size_t bytes) {
  DeviceBuffer b(bytes);
  b.poison();
  return b;
}

// One rank's handle, stream and buffers, inputs uploaded, outputs poisoned.
struct RankState {
  RankState(const Job& j, const Inputs& in, const Options& opt, int r)
      : k(j.rank_case(r)), d(k.desc()), cfg(opt.cfg), nranks(int(j.ns.size())), rank(r) {
    EXPECT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    const size_t cb = size_t(k.s.c) * sizeof(float);
    size_t mask_bytes = 0;
    EXPECT_EQ(bnormGetSyncBufferSizes(h, k.s.c, &stats_bytes, &grads_bytes), BNORM_STATUS_SUCCESS);
    EXPECT_EQ(bnormGetForwardTrainingWorkspaceSize(h, &d, &cfg, &fws), BNORM_STATUS_SUCCESS);
    EXPECT_EQ(bnormGetBackwardWorkspaceSize(h, &d, &cfg, &bws), BNORM_STATUS_SUCCESS);
    EXPECT_EQ(bnormGetReluMaskSize(h, &d, &mask_bytes), BNORM_STATUS_SUCCESS);
    x = bt::upload_tensor(slice(in.x, j, r), k.dtype);
    dy = bt::upload_tensor(slice(in.dy, j, r), k.dtype);
    z = bt::upload_tensor(slice(in.z, j, r), k.dtype);
    y = poisoned(x.bytes()), dx = poisoned(x.bytes()), dz = poisoned(x.bytes());
    mask = poisoned(mask_bytes);
    gamma = bt::upload_floats(in.p.gamma), beta = bt::upload_floats(in.p.beta);
    rm = bt::upload_floats(in.running_mean), rv = bt::upload_floats(in.running_var);
    sm = poisoned(cb), sr = poisoned(cb), dg = poisoned(cb), db = poisoned(cb);
    step = DeviceBuffer(sizeof(int64_t));
    const int64_t zero = 0;
    step.upload(&zero, sizeof zero);
    local = poisoned(stats_bytes), gathered = poisoned(stats_bytes * size_t(nranks));
    grads = poisoned(grads_bytes);
    ws = poisoned(std::max(fws, bws));
    if (cfg.epilogue != BNORM_EPILOGUE_NONE) {
      cfg.relu_mask = mask.get();
      cfg.relu_mask_bytes = mask_bytes;
      cfg.residual = z.get();
      cfg.residual_grad = dz.get();
    }
  }
  ~RankState() { EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess); }

  RankResult results(RankResult out) const {
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    out.y = bt::decode(y.download(), k.dtype);
    out.dx = bt::decode(dx.download(), k.dtype);
    out.dz = bt::decode(dz.download(), k.dtype);
    out.saved_mean = sm.download_f32();
    out.saved_rstd = sr.download_f32();
    out.running_mean = rm.download_f32();
    out.running_var = rv.download_f32();
    out.dgamma = dg.download_f32();
    out.dbeta = db.download_f32();
    const std::vector<uint8_t> mb = mask.download();
    out.mask.resize(mb.size() / 4);
    if (!out.mask.empty()) std::memcpy(out.mask.data(), mb.data(), out.mask.size() * 4);
    std::memcpy(&out.step, step.download().data(), sizeof out.step);
    return out;
  }
  int64_t* step_ptr() const { return static_cast<int64_t*>(step.get()); }

  bt::Handle h;
  cudaStream_t s = nullptr;
  const Case k;
  const bnormTensorDesc_t d;
  bnormConfig_t cfg;
  const int nranks, rank;
  size_t stats_bytes = 0, grads_bytes = 0, fws = 0, bws = 0;
  DeviceBuffer x, dy, z, y, dx, dz, mask, gamma, beta, rm, rv, sm, sr, dg, db, step, local,
      gathered, grads, ws;
};

// Rank r's whole forward (opt.steps times) and backward through the phases.
RankResult run_rank(const Job& j, const Inputs& in, const Options& opt, int r, Exchange& ex) {
  RankState t(j, in, opt, r);
  RankResult out;
  for (int i = 0; i < opt.steps; ++i) {
    bnormStatus_t st = bnormSyncForwardStats(t.h, t.s, &t.d, &t.cfg, t.x.get(), t.local.get(),
                                             t.ws.get(), t.fws);
    if (st == BNORM_STATUS_SUCCESS) {
      ex.all_gather(r, t.s, t.local, t.gathered, t.stats_bytes);
      st = bnormSyncForwardApply(t.h, t.s, &t.d, &t.cfg, t.nranks, r, opt.global_n,
                                 t.gathered.get(), t.x.get(), t.y.get(), t.gamma.f32(),
                                 t.beta.f32(), t.rm.f32(), t.rv.f32(), t.step_ptr(), t.sm.f32(),
                                 t.sr.f32(), t.ws.get(), t.fws);
    }
    if (st != BNORM_STATUS_SUCCESS) {
      out.forward = st;
      out.message = bnormGetLastErrorMessage();
      return t.results(out);
    }
  }
  if (opt.backward) {
    bnormStatus_t st = bnormSyncBackwardGrads(t.h, t.s, &t.d, &t.cfg, t.x.get(), t.dy.get(),
                                              t.sm.f32(), t.grads.get(), t.ws.get(), t.bws);
    if (st == BNORM_STATUS_SUCCESS) {
      ex.all_reduce(r, t.s, t.grads);
      st = bnormSyncBackwardApply(t.h, t.s, &t.d, &t.cfg, t.grads.get(), t.x.get(), t.dy.get(),
                                  t.dx.get(), t.gamma.f32(), t.sm.f32(), t.sr.f32(), t.dg.f32(),
                                  t.db.f32(), t.ws.get(), t.bws);
    }
    out.backward = st;
    if (st != BNORM_STATUS_SUCCESS) out.message = bnormGetLastErrorMessage();
  }
  return t.results(out);
}

std::vector<RankResult> run_job(const Job& j, const Inputs& in, const Options& opt) {
  const int n = int(j.ns.size());
  Exchange ex(n);
  std::vector<RankResult> out(static_cast<size_t>(n));
  bt::run_threads(n, [&](int r) { out[size_t(r)] = run_rank(j, in, opt, r, ex); },
                  std::chrono::seconds(600), "test_sync");
  return out;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// The rounding of a statistic is relative to the channel's spread and mean.
void expect_near_stats(const std::vector<float>& got, const std::vector<double>& want,
                       const std::vector<double>& scale, double rtol, const char* what) {
  for (size_t ch = 0; ch < want.size(); ++ch)
    EXPECT_NEAR(got[ch], want[ch], rtol * scale[ch]) << what << " channel " << ch;
}

// Checks every rank of a successful job against the reference on the global
// batch, and the ranks against each other.
void expect_job_matches_reference(const Job& j, const Inputs& in, const Options& opt,
                                  const std::vector<RankResult>& got) {
  const Case g = j.global();
  const bt::TrainRequest tr = global_request(in);
  const bt::RefTrain want = bt::ref_forward_training(g, opt.cfg, tr);
  const size_t c = size_t(g.s.c);
  std::vector<double> mean_scale(c), rstd_scale(c), var_scale(c);
  for (size_t ch = 0; ch < c; ++ch) {
    mean_scale[ch] = std::sqrt(want.var[ch]) + std::fabs(want.mean[ch]);
    rstd_scale[ch] = want.rstd[ch];
    var_scale[ch] = want.running_var[ch] + 1e-30;
  }
  bt::BackwardRequest br;
  br.x = in.x;
  br.dy = in.dy;
  br.gamma = in.p.gamma;
  br.mean = want.mean;
  br.stat = want.rstd;
  const bt::RefBackward wantb = bt::ref_backward(g, opt.cfg, br, false);
  bt::Tolerance dx_tol = bt::output_tolerance(g.dtype);
  dx_tol.atol *= 4.0 * std::max(1.0, wantb.dx_scale);

  for (int r = 0; r < int(j.ns.size()); ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r << " of " << j.name());
    const RankResult& o = got[size_t(r)];
    ASSERT_EQ(o.forward, BNORM_STATUS_SUCCESS) << o.message;
    ASSERT_EQ(o.backward, BNORM_STATUS_SUCCESS) << o.message;
    expect_near_stats(o.saved_mean, want.mean, mean_scale, 2e-5, "saved_mean");
    expect_near_stats(o.saved_rstd, want.rstd, rstd_scale, 2e-5, "saved_rstd");
    expect_near_stats(o.running_mean, want.running_mean, mean_scale, 2e-5, "running_mean");
    expect_near_stats(o.running_var, want.running_var, var_scale, 2e-5, "running_var");
    if (j.ns[size_t(r)] > 0) {
      EXPECT_TRUE(bt::all_close(o.y, slice(want.y, j, r), bt::output_tolerance(g.dtype), "y"));
      EXPECT_TRUE(bt::all_close(o.dx, slice(wantb.dx, j, r), dx_tol, "dx"));
    }
    for (size_t ch = 0; ch < c; ++ch) {
      EXPECT_NEAR(o.dbeta[ch], wantb.dbeta[ch], 1e-5 * wantb.abs_dbeta[ch] + 1e-6) << ch;
      EXPECT_NEAR(o.dgamma[ch], wantb.dgamma[ch], 1e-5 * wantb.abs_dgamma[ch] + 1e-6) << ch;
    }
    // Every rank holds bitwise the same statistics and parameter gradients.
    EXPECT_TRUE(same_bits(o.saved_mean, got[0].saved_mean));
    EXPECT_TRUE(same_bits(o.saved_rstd, got[0].saved_rstd));
    EXPECT_TRUE(same_bits(o.running_mean, got[0].running_mean));
    EXPECT_TRUE(same_bits(o.running_var, got[0].running_var));
    EXPECT_TRUE(same_bits(o.dgamma, got[0].dgamma));
    EXPECT_TRUE(same_bits(o.dbeta, got[0].dbeta));
  }
}

std::vector<Job> jobs() {
  std::vector<Job> out;
  for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC})
    for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16}) {
      out.push_back({{0, 5, 7}, l, t, {3, 4}});
      out.push_back({{0, 3, 13}, l, t, {2, 0, 5}});                 // an empty rank
      out.push_back({{0, 40, 1}, l, t, {1, 0, 2, 1, 0, 3, 1, 1}});  // m == 1 on some ranks
      out.push_back({{0, 33, 9}, l, t, {1, 1, 1}});
    }
  // Long enough per rank for the statistics pass to split across blocks.
  out.push_back({{0, 3, 500}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT, {17, 6}});
  out.push_back({{0, 70, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF, {900, 1, 300}});
  return out;
}

void expect_same_results(const std::vector<RankResult>& a, const std::vector<RankResult>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t r = 0; r < a.size(); ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    ASSERT_EQ(a[r].forward, BNORM_STATUS_SUCCESS) << a[r].message;
    ASSERT_EQ(b[r].forward, BNORM_STATUS_SUCCESS) << b[r].message;
    EXPECT_TRUE(same_bits(a[r].y, b[r].y));
    EXPECT_TRUE(same_bits(a[r].dx, b[r].dx));
    EXPECT_TRUE(same_bits(a[r].saved_mean, b[r].saved_mean));
    EXPECT_TRUE(same_bits(a[r].saved_rstd, b[r].saved_rstd));
    EXPECT_TRUE(same_bits(a[r].running_mean, b[r].running_mean));
    EXPECT_TRUE(same_bits(a[r].running_var, b[r].running_var));
    EXPECT_TRUE(same_bits(a[r].dgamma, b[r].dgamma));
    EXPECT_TRUE(same_bits(a[r].dbeta, b[r].dbeta));
  }
}

class Sync : public ::testing::TestWithParam<Job> {};

TEST_P(Sync, MatchesTheReferenceOnTheConcatenatedBatch) {
  BT_REQUIRE_DEVICE();
  const Job j = GetParam();
  const Inputs in = make_inputs(j, 101);
  Options opt;
  opt.cfg.exponential_average_factor = 0.3;
  const std::vector<RankResult> got = run_job(j, in, opt);
  expect_job_matches_reference(j, in, opt, got);
  // And one device's batch norm on the concatenated batch, to rounding.
  bt::Handle h;
  const bt::TrainRequest tr = global_request(in);
  const Case g = j.global();
  const bt::TrainResult local = bt::forward_training(h, g, opt.cfg, tr);
  ASSERT_EQ(local.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  for (int r = 0; r < int(j.ns.size()); ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r << " against one device");
    if (j.ns[size_t(r)] > 0) {
      EXPECT_TRUE(bt::all_close(got[size_t(r)].y, slice(local.y, j, r),
                                bt::output_tolerance(g.dtype), "y"));
    }
    for (size_t ch = 0; ch < size_t(g.s.c); ++ch) {
      const double scale = std::fabs(local.saved_mean[ch]) + 1.0 / local.saved_rstd[ch];
      EXPECT_NEAR(got[size_t(r)].saved_mean[ch], local.saved_mean[ch], 2e-5 * scale) << ch;
      EXPECT_NEAR(got[size_t(r)].saved_rstd[ch], local.saved_rstd[ch],
                  2e-5 * local.saved_rstd[ch]) << ch;
      EXPECT_NEAR(got[size_t(r)].running_var[ch], local.running_var[ch],
                  2e-5 * local.running_var[ch]) << ch;
    }
  }
}

TEST_P(Sync, BitwiseRepeatable) {
  BT_REQUIRE_DEVICE();
  const Job j = GetParam();
  const Inputs in = make_inputs(j, 202);
  const Options opt;
  expect_same_results(run_job(j, in, opt), run_job(j, in, opt));
}

INSTANTIATE_TEST_SUITE_P(Jobs, Sync, ::testing::ValuesIn(jobs()), JobName());

// One rank is the local call: the same function as bnormForwardTraining and
// bnormBackward to rounding.
TEST(SyncEdges, OneRankAgreesWithTheLocalCalls) {
  BT_REQUIRE_DEVICE();
  const Job j{{0, 6, 11}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT, {9}};
  const Inputs in = make_inputs(j, 7);
  const Options opt;
  const std::vector<RankResult> got = run_job(j, in, opt);
  bt::Handle h;
  const bt::TrainRequest tr = global_request(in);
  const Case g = j.global();
  const bt::TrainResult local = bt::forward_training(h, g, opt.cfg, tr);
  ASSERT_EQ(local.status, BNORM_STATUS_SUCCESS);
  EXPECT_TRUE(bt::all_close(got[0].y, local.y, bt::output_tolerance(g.dtype), "y"));
  for (size_t ch = 0; ch < size_t(g.s.c); ++ch) {
    EXPECT_NEAR(got[0].saved_mean[ch], local.saved_mean[ch], 1e-5) << ch;
    EXPECT_NEAR(got[0].saved_rstd[ch], local.saved_rstd[ch], 1e-5 * local.saved_rstd[ch]) << ch;
    EXPECT_NEAR(got[0].running_var[ch], local.running_var[ch], 1e-5 * local.running_var[ch]) << ch;
  }
}

// A mean far beyond the spread (fp32 data around 1e5, std ~1, different on
// every rank): Chan's merge in fp64 keeps the variance accurate.
TEST(SyncEdges, MeanFarFromZeroKeepsTheVarianceAccurate) {
  BT_REQUIRE_DEVICE();
  const Job j{{0, 4, 64}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT, {5, 3, 8}};
  const Inputs in = make_inputs(j, 31, 1e5, 1.001e5);
  const Options opt;
  const std::vector<RankResult> got = run_job(j, in, opt);
  const Case g = j.global();
  std::vector<double> mean(4), var(4);
  const bnref_shape sh = g.ref();
  bnref_batch_stats(&sh, in.x.data(), 1e-5, mean.data(), var.data(), nullptr);
  for (size_t ch = 0; ch < 4; ++ch) {
    const double want_rstd = 1.0 / std::sqrt(var[ch] + 1e-5);
    EXPECT_NEAR(got[1].saved_rstd[ch], want_rstd, 1e-5 * want_rstd) << ch;
    EXPECT_NEAR(got[1].saved_mean[ch], mean[ch], 1e-6 * mean[ch]) << ch;
  }
}

// The cumulative average over several steps: the step counter advances once
// per step on every rank, and the running mean is the mean of the batch means.
TEST(SyncEdges, CumulativeAverageAdvancesEveryRanksCounter) {
  BT_REQUIRE_DEVICE();
  const Job j{{0, 3, 5}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT, {2, 0, 3}};
  const Inputs in = make_inputs(j, 41);
  Options opt;
  opt.cfg.average = BNORM_AVERAGE_CUMULATIVE;
  opt.steps = 3;
  opt.backward = false;
  const std::vector<RankResult> got = run_job(j, in, opt);
  std::vector<double> mean(3), var(3);
  const Case g = j.global();
  const bnref_shape sh = g.ref();
  bnref_batch_stats(&sh, in.x.data(), 1e-5, mean.data(), var.data(), nullptr);
  for (const RankResult& o : got) {
    ASSERT_EQ(o.forward, BNORM_STATUS_SUCCESS) << o.message;
    EXPECT_EQ(o.step, 3);
    // The same batch three times: its mean is the cumulative average.
    for (size_t ch = 0; ch < 3; ++ch) EXPECT_NEAR(o.running_mean[ch], mean[ch], 1e-5) << ch;
    EXPECT_TRUE(same_bits(o.running_var, got[0].running_var));
  }
}

// The fused ReLU: the mask of each rank is its own slice's, and the
// backward takes the ReLU's gradient before the reductions.
TEST(SyncEdges, ReluEpilogueMatchesTheReference) {
  BT_REQUIRE_DEVICE();
  const Job j{{0, 5, 9}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF, {3, 0, 4}};
  const Inputs in = make_inputs(j, 51);
  Options opt;
  opt.cfg.epilogue = BNORM_EPILOGUE_ADD_RELU;
  const std::vector<RankResult> got = run_job(j, in, opt);
  const Case g = j.global();
  bt::TrainRequest tr;
  tr.x = in.x;
  tr.p = in.p;
  const bt::RefTrain want = bt::ref_forward_training(g, opt.cfg, tr);
  std::vector<double> y(want.y.size());
  std::vector<unsigned char> positive(want.y.size());
  bnref_add_relu(int64_t(y.size()), want.y.data(), in.z.data(), y.data(), positive.data());
  std::vector<double> gdy(y.size());
  bnref_relu_backward(int64_t(y.size()), in.dy.data(), positive.data(), gdy.data());
  bt::BackwardRequest br;
  br.x = in.x;
  br.dy = gdy;
  br.gamma = in.p.gamma;
  br.mean = want.mean;
  br.stat = want.rstd;
  const bt::RefBackward wantb = bt::ref_backward(g, opt.cfg, br, false);
  bt::Tolerance dx_tol = bt::output_tolerance(g.dtype);
  dx_tol.atol *= 4.0 * std::max(1.0, wantb.dx_scale);
  for (int r = 0; r < 3; ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    const RankResult& o = got[size_t(r)];
    ASSERT_EQ(o.forward, BNORM_STATUS_SUCCESS) << o.message;
    ASSERT_EQ(o.backward, BNORM_STATUS_SUCCESS) << o.message;
    if (j.ns[size_t(r)] == 0) continue;
    EXPECT_TRUE(bt::all_close(o.y, slice(y, j, r), bt::output_tolerance(g.dtype), "y"));
    EXPECT_TRUE(bt::all_close(o.dz, slice(gdy, j, r), bt::output_tolerance(g.dtype), "dz"));
    EXPECT_TRUE(bt::all_close(o.dx, slice(wantb.dx, j, r), dx_tol, "dx"));
    const std::vector<double> pre = slice(want.y, j, r), zr = slice(in.z, j, r);
    for (size_t i = 0; i < pre.size(); ++i) {
      if (std::fabs(pre[i] + zr[i]) < 1e-2) continue;  // too close to 0 to call
      EXPECT_EQ((o.mask[i / 32] >> (i % 32)) & 1u, pre[i] + zr[i] > 0 ? 1u : 0u) << i;
    }
  }
  for (size_t ch = 0; ch < 5; ++ch)
    EXPECT_NEAR(got[0].dgamma[ch], wantb.dgamma[ch], 1e-5 * wantb.abs_dgamma[ch] + 1e-6) << ch;
}

// The synchronized calls always run the multi-pass kernels (the exchange
// sits between their passes): config->path changes nothing, bit for bit.
TEST(SyncEdges, TheConfigsKernelPathChangesNothing) {
  BT_REQUIRE_DEVICE();
  const Job j{{0, 4, 6}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT, {2, 3}};
  const Inputs in = make_inputs(j, 71);
  const Options automatic;
  const std::vector<RankResult> want = run_job(j, in, automatic);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    Options opt;
    opt.cfg.path = path;
    const std::vector<RankResult> got = run_job(j, in, opt);
    for (size_t r = 0; r < got.size(); ++r) {
      ASSERT_EQ(got[r].forward, BNORM_STATUS_SUCCESS) << got[r].message;
      EXPECT_TRUE(same_bits(got[r].y, want[r].y));
      EXPECT_TRUE(same_bits(got[r].dx, want[r].dx));
      EXPECT_TRUE(same_bits(got[r].saved_rstd, want[r].saved_rstd));
      EXPECT_TRUE(same_bits(got[r].dgamma, want[r].dgamma));
    }
  }
}

// ---- the built-in NCCL path ------------------------------------------------------------------
#if BT_HAVE_NCCL

// Ranks on distinct GPUs (NCCL takes one rank per device); under the
// emulator every rank shares its one device.
bool ranks_fit(int nranks) {
#if BT_EMU
  (void)nranks;
  return true;
#else
  int devices = 0;
  return cudaGetDeviceCount(&devices) == cudaSuccess && devices >= nranks;
#endif
}

// Rank r through bnormSyncForwardTraining and bnormSyncBackward on a
// communicator of the job's ranks; `capture` records both calls into a CUDA
// graph first and launches it.
RankResult run_rank_nccl(const Job& j, const Inputs& in, const Options& opt, int r,
                         const ncclUniqueId& id, bool capture) {
#if !BT_EMU
  EXPECT_EQ(cudaSetDevice(r), cudaSuccess);
#endif
  RankState t(j, in, opt, r);
  RankResult out;
  ncclComm_t comm = nullptr;
  if (ncclCommInitRank(&comm, t.nranks, id, r) != ncclSuccess) {
    ADD_FAILURE() << "ncclCommInitRank of rank " << r;
    return out;
  }
  size_t fws = 0, bws = 0;
  EXPECT_EQ(bnormGetSyncForwardTrainingWorkspaceSize(t.h, &t.d, &t.cfg, t.nranks, &fws),
            BNORM_STATUS_SUCCESS);
  EXPECT_EQ(bnormGetSyncBackwardWorkspaceSize(t.h, &t.d, &t.cfg, &bws), BNORM_STATUS_SUCCESS);
  DeviceBuffer ws = poisoned(std::max(fws, bws));
  auto* c = reinterpret_cast<struct ncclComm*>(comm);
  auto step = [&] {
    out.forward = bnormSyncForwardTraining(t.h, t.s, c, &t.d, &t.cfg, opt.global_n, t.x.get(),
                                           t.y.get(), t.gamma.f32(), t.beta.f32(), t.rm.f32(),
                                           t.rv.f32(), t.step_ptr(), t.sm.f32(), t.sr.f32(),
                                           ws.get(), fws);
    if (out.forward != BNORM_STATUS_SUCCESS) {
      out.message = bnormGetLastErrorMessage();
      return;
    }
    if (!opt.backward) return;
    out.backward = bnormSyncBackward(t.h, t.s, c, &t.d, &t.cfg, t.x.get(), t.dy.get(), t.dx.get(),
                                     t.gamma.f32(), t.sm.f32(), t.sr.f32(), t.dg.f32(),
                                     t.db.f32(), ws.get(), bws);
    if (out.backward != BNORM_STATUS_SUCCESS) out.message = bnormGetLastErrorMessage();
  };
  if (capture) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    EXPECT_EQ(cudaStreamBeginCapture(t.s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    step();
    EXPECT_EQ(cudaStreamEndCapture(t.s, &graph), cudaSuccess);
    // Captured, not run: the outputs still hold their poison.
    EXPECT_TRUE(std::isnan(t.sm.download_f32()[0]));
    EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    EXPECT_EQ(cudaGraphLaunch(exec, t.s), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(t.s), cudaSuccess);
    EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  } else {
    step();
  }
  out = t.results(out);
  EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
  return out;
}

std::vector<RankResult> run_job_nccl(const Job& j, const Inputs& in, const Options& opt,
                                     bool capture = false) {
  ncclUniqueId id;
  EXPECT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  const int n = int(j.ns.size());
  std::vector<RankResult> out(static_cast<size_t>(n));
  bt::run_threads(n, [&](int r) { out[size_t(r)] = run_rank_nccl(j, in, opt, r, id, capture); },
                  std::chrono::seconds(600), "test_sync");
  return out;
}


// The built-in path is the split phases around NCCL's collectives: on the
// emulated NCCL (rank-order sums) bitwise the same results; so it matches
// the reference too.
TEST_P(Sync, BuiltInNcclEqualsTheSplitPhases) {
  BT_REQUIRE_DEVICE();
  const Job j = GetParam();
  if (!ranks_fit(int(j.ns.size()))) GTEST_SKIP() << "fewer GPUs than ranks";
  const Inputs in = make_inputs(j, 303);
  Options opt;
  opt.cfg.exponential_average_factor = 0.3;
  const std::vector<RankResult> nccl = run_job_nccl(j, in, opt);
  expect_job_matches_reference(j, in, opt, nccl);
#if BT_EMU
  expect_same_results(nccl, run_job(j, in, opt));
#endif
}

TEST(SyncNccl, CapturedIntoAGraphEqualsEager) {
  BT_REQUIRE_DEVICE();
  for (const Job& j : {Job{{0, 5, 7}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF, {3, 0, 4}},
                       Job{{0, 3, 40}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT, {2}}}) {
    if (!ranks_fit(int(j.ns.size()))) continue;
    SCOPED_TRACE(j.name());
    const Inputs in = make_inputs(j, 404);
    Options opt;
    opt.cfg.average = BNORM_AVERAGE_CUMULATIVE;
    const std::vector<RankResult> graph = run_job_nccl(j, in, opt, true);
    expect_same_results(graph, run_job_nccl(j, in, opt));
    for (const RankResult& o : graph) EXPECT_EQ(o.step, 1);
  }
}

TEST(SyncNccl, NullCommIsRefusedBeforeAnything) {
  BT_REQUIRE_DEVICE();
  bt::Handle h;
  const bnormTensorDesc_t d{BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 2, 3, 4};
  EXPECT_EQ(bnormSyncForwardTraining(h, nullptr, nullptr, &d, nullptr, -1, nullptr, nullptr,
                                     nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                     nullptr, 0),
            BNORM_STATUS_NULL_POINTER);
  EXPECT_NE(std::string(bnormGetLastErrorMessage()).find("'comm'"), std::string::npos);
  EXPECT_EQ(bnormSyncBackward(h, nullptr, nullptr, &d, nullptr, nullptr, nullptr, nullptr, nullptr,
                              nullptr, nullptr, nullptr, nullptr, nullptr, 0),
            BNORM_STATUS_NULL_POINTER);
}

#if BT_EMU
// Ranks that disagree on the shape meet at the all-gather with different
// counts: the emulated NCCL fails it (a real NCCL would hang or corrupt),
// and bnorm says so; no output or running statistic is written.
TEST(SyncNccl, CommunicatorErrorsBecomeCommError) {
  const Job j{{0, 3, 5}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT, {2, 3}};
  const Inputs in = make_inputs(j, 505);
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  std::vector<RankResult> out(2);
  std::vector<Inputs> rank_in(2, in);
  bt::run_threads(
      2,
      [&](int r) {
        Job mine = j;
        if (r == 1) mine.s.c = 10;  // the disagreement: a larger packed block
        const Inputs my_in = make_inputs(mine, 505);
        Options opt;
        opt.backward = false;
        out[size_t(r)] = run_rank_nccl(mine, my_in, opt, r, id, false);
        rank_in[size_t(r)] = my_in;
      },
      std::chrono::seconds(600), "test_sync");
  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    const RankResult& o = out[size_t(r)];
    EXPECT_EQ(o.forward, BNORM_STATUS_COMM_ERROR);
    EXPECT_NE(o.message.find("ncclAllGather"), std::string::npos) << o.message;
    for (size_t ch = 0; ch < o.running_mean.size(); ++ch) {
      EXPECT_EQ(o.running_mean[ch], float(rank_in[size_t(r)].running_mean[ch]));
      EXPECT_TRUE(std::isnan(o.saved_mean[ch]));
    }
    for (double v : o.y) EXPECT_TRUE(std::isnan(v));
  }
}
#endif  // BT_EMU

#endif  // BT_HAVE_NCCL

// ---- a global batch of fewer than two values ----------------------------------------------

TEST(SyncEdges, GlobalBatchOfOneWithGlobalNIsAnErrorOnEveryRank) {
  BT_REQUIRE_DEVICE();
  const Job j{{0, 3, 1}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT, {0, 1, 0}};
  const Inputs in = make_inputs(j, 61);
  Options opt;
  opt.global_n = 1;
  const std::vector<RankResult> got = run_job(j, in, opt);
  for (const RankResult& o : got) {
    EXPECT_EQ(o.forward, BNORM_STATUS_BATCH_TOO_SMALL);
    EXPECT_NE(o.message.find("global_n"), std::string::npos) << o.message;
    for (size_t ch = 0; ch < 3; ++ch) {  // untouched
      EXPECT_EQ(o.running_mean[ch], float(in.running_mean[ch]));
      EXPECT_EQ(o.running_var[ch], float(in.running_var[ch]));
      EXPECT_TRUE(std::isnan(o.saved_mean[ch]));  // still the poison
    }
  }
}

TEST(SyncEdges, GlobalBatchOfOneWithoutGlobalNIsCaughtOnTheDevice) {
  BT_REQUIRE_DEVICE();
  const Job j{{0, 3, 1}, BNORM_LAYOUT_NHWC, BNORM_DATA_FLOAT, {0, 1}};
  const Inputs in = make_inputs(j, 62);
  Options opt;
  opt.cfg.average = BNORM_AVERAGE_CUMULATIVE;
  opt.backward = false;
  const std::vector<RankResult> got = run_job(j, in, opt);
  for (const RankResult& o : got) {
    ASSERT_EQ(o.forward, BNORM_STATUS_SUCCESS) << o.message;
    EXPECT_EQ(o.step, 0);  // not advanced
    for (size_t ch = 0; ch < 3; ++ch) {
      EXPECT_EQ(o.running_mean[ch], float(in.running_mean[ch]));
      EXPECT_EQ(o.running_var[ch], float(in.running_var[ch]));
      EXPECT_EQ(o.saved_mean[ch], float(in.x[ch]));  // the one value
      EXPECT_TRUE(std::isnan(o.saved_rstd[ch]));
    }
  }
  for (double v : got[1].y) EXPECT_TRUE(std::isnan(v));
}

TEST(SyncEdges, EmptyGlobalBatchWritesNothing) {
  BT_REQUIRE_DEVICE();
  const Job j{{0, 4, 3}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF, {0, 0}};
  const Inputs in = make_inputs(j, 63);
  Options opt;
  opt.cfg.average = BNORM_AVERAGE_CUMULATIVE;
  const std::vector<RankResult> got = run_job(j, in, opt);
  for (const RankResult& o : got) {
    ASSERT_EQ(o.forward, BNORM_STATUS_SUCCESS) << o.message;
    ASSERT_EQ(o.backward, BNORM_STATUS_SUCCESS) << o.message;
    EXPECT_EQ(o.step, 0);
    for (size_t ch = 0; ch < 4; ++ch) {
      EXPECT_EQ(o.running_mean[ch], float(in.running_mean[ch]));
      EXPECT_TRUE(std::isnan(o.saved_mean[ch]) && std::isnan(o.saved_rstd[ch]));
      EXPECT_EQ(o.dgamma[ch], 0.0f);  // as the local backward of m == 0
      EXPECT_EQ(o.dbeta[ch], 0.0f);
    }
  }
}

// ---- errors: a status naming the argument, nothing written -----------------------------------

struct SyncErrors : public ::testing::Test {
  void SetUp() override {
    if (!bt::have_device()) GTEST_SKIP() << "no CUDA device on this machine";
    handle.reset(new bt::Handle);
    h = handle->get();
    d = k.desc();
    ASSERT_EQ(bnormGetSyncBufferSizes(h, k.s.c, &stats_bytes, &grads_bytes), BNORM_STATUS_SUCCESS);
    ASSERT_EQ(bnormGetForwardTrainingWorkspaceSize(h, &d, nullptr, &fws), BNORM_STATUS_SUCCESS);
    ASSERT_EQ(bnormGetBackwardWorkspaceSize(h, &d, nullptr, &bws), BNORM_STATUS_SUCCESS);
    x = bt::upload_tensor(bt::random_activations(k, 1), k.dtype);
    y = poisoned(x.bytes());
    rm = bt::upload_floats(std::vector<double>(3, 0.25));
    rv = bt::upload_floats(std::vector<double>(3, 2.0));
    sm = poisoned(12);
    sr = poisoned(12);
    local = poisoned(stats_bytes);
    gathered = poisoned(2 * stats_bytes);
    grads = poisoned(grads_bytes);
    ws = poisoned(std::max(fws, bws));
  }
  // Everything the calls may write, as bytes.
  std::vector<std::vector<uint8_t>> snapshot() const {
    return {y.download(), rm.download(), rv.download(), sm.download(), sr.download(),
            local.download(), grads.download()};
  }
  bnormStatus_t apply(int nranks, int rank, int64_t global_n, const void* g) {
    return bnormSyncForwardApply(h, nullptr, &d, nullptr, nranks, rank, global_n, g, x.get(),
                                 y.get(), nullptr, nullptr, rm.f32(), rv.f32(), nullptr, sm.f32(),
                                 sr.f32(), ws.get(), fws);
  }
  void expect_failure(bnormStatus_t got, bnormStatus_t want, const char* names,
                      const std::vector<std::vector<uint8_t>>& before) {
    EXPECT_EQ(got, want) << bnormGetLastErrorMessage();
    EXPECT_NE(std::string(bnormGetLastErrorMessage()).find(names), std::string::npos)
        << bnormGetLastErrorMessage();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_TRUE(snapshot() == before) << "a failed call wrote something";
  }

  const Case k{{4, 3, 5}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT};
  std::unique_ptr<bt::Handle> handle;  // made once the device is known to be there
  bnormHandle_t h = nullptr;
  bnormTensorDesc_t d{};
  size_t stats_bytes = 0, grads_bytes = 0, fws = 0, bws = 0;
  DeviceBuffer x, y, rm, rv, sm, sr, local, gathered, grads, ws;
};

TEST_F(SyncErrors, ForwardApplyRejectsBadRanksAndBuffers) {
  if (IsSkipped()) return;
  const auto before = snapshot();
  expect_failure(apply(0, 0, -1, gathered.get()), BNORM_STATUS_INVALID_VALUE, "'nranks'", before);
  expect_failure(apply(2, 2, -1, gathered.get()), BNORM_STATUS_INVALID_VALUE, "'rank'", before);
  expect_failure(apply(2, -1, -1, gathered.get()), BNORM_STATUS_INVALID_VALUE, "'rank'", before);
  expect_failure(apply(2, 0, -1, nullptr), BNORM_STATUS_NULL_POINTER, "'gathered_stats'", before);
  expect_failure(apply(2, 0, -1, static_cast<char*>(gathered.get()) + 8), BNORM_STATUS_MISALIGNED,
                 "'gathered_stats'", before);
  expect_failure(apply(2, 0, 3, gathered.get()), BNORM_STATUS_BAD_SHAPE, "'global_n'", before);
  expect_failure(apply(2, 0, -2, gathered.get()), BNORM_STATUS_INVALID_VALUE, "'global_n'", before);
  // The gathered statistics may not overlap an output.
  expect_failure(apply(1, 0, -1, sm.get()), BNORM_STATUS_BAD_ALIASING, "gathered_stats", before);
  expect_failure(bnormSyncForwardApply(h, nullptr, &d, nullptr, 2, 0, -1, gathered.get(), x.get(),
                                       y.get(), nullptr, nullptr, rm.f32(), rv.f32(), nullptr,
                                       sm.f32(), sr.f32(), ws.get(), fws - 1),
                 BNORM_STATUS_WORKSPACE_TOO_SMALL, "workspace", before);
  expect_failure(bnormSyncForwardApply(h, nullptr, &d, nullptr, 2, 0, -1, gathered.get(), x.get(),
                                       y.get(), nullptr, nullptr, rm.f32(), nullptr, nullptr,
                                       sm.f32(), sr.f32(), ws.get(), fws),
                 BNORM_STATUS_NULL_POINTER, "running_var", before);
}

TEST_F(SyncErrors, ForwardStatsRejectsBadBuffers) {
  if (IsSkipped()) return;
  const auto before = snapshot();
  expect_failure(bnormSyncForwardStats(h, nullptr, &d, nullptr, x.get(), nullptr, ws.get(), fws),
                 BNORM_STATUS_NULL_POINTER, "'local_stats'", before);
  expect_failure(bnormSyncForwardStats(h, nullptr, &d, nullptr, x.get(),
                                       static_cast<char*>(local.get()) + 4, ws.get(), fws),
                 BNORM_STATUS_MISALIGNED, "'local_stats'", before);
  expect_failure(bnormSyncForwardStats(h, nullptr, &d, nullptr, nullptr, local.get(), ws.get(),
                                       fws),
                 BNORM_STATUS_NULL_POINTER, "'x'", before);
  expect_failure(bnormSyncForwardStats(h, nullptr, &d, nullptr, x.get(), local.get(), ws.get(),
                                       fws - 1),
                 BNORM_STATUS_WORKSPACE_TOO_SMALL, "workspace", before);
  expect_failure(bnormSyncForwardStats(h, nullptr, &d, nullptr, x.get(), x.get(), ws.get(), fws),
                 BNORM_STATUS_BAD_ALIASING, "local_stats", before);
  expect_failure(bnormSyncForwardStats(nullptr, nullptr, &d, nullptr, x.get(), local.get(),
                                       ws.get(), fws),
                 BNORM_STATUS_BAD_HANDLE, "'handle'", before);
  bnormTensorDesc_t bad = d;
  bad.c = 0;
  expect_failure(bnormSyncForwardStats(h, nullptr, &bad, nullptr, x.get(), local.get(), ws.get(),
                                       fws),
                 BNORM_STATUS_BAD_SHAPE, "desc->c", before);
  size_t a = 0, b = 0;
  EXPECT_EQ(bnormGetSyncBufferSizes(h, 0, &a, &b), BNORM_STATUS_BAD_SHAPE);
  EXPECT_EQ(bnormGetSyncBufferSizes(h, 3, nullptr, &b), BNORM_STATUS_NULL_POINTER);
}

TEST_F(SyncErrors, BackwardPhasesRejectBadBuffers) {
  if (IsSkipped()) return;
  DeviceBuffer dy = bt::upload_tensor(bt::random_activations(k, 2), k.dtype);
  DeviceBuffer dx = poisoned(x.bytes()), dg = poisoned(12), db = poisoned(12);
  const auto before = snapshot();
  const auto dx_before = dx.download();
  expect_failure(bnormSyncBackwardGrads(h, nullptr, &d, nullptr, x.get(), dy.get(), nullptr,
                                        grads.get(), ws.get(), bws),
                 BNORM_STATUS_NULL_POINTER, "'saved_mean'", before);
  expect_failure(bnormSyncBackwardGrads(h, nullptr, &d, nullptr, x.get(), dy.get(), rm.f32(),
                                        nullptr, ws.get(), bws),
                 BNORM_STATUS_NULL_POINTER, "'local_grads'", before);
  expect_failure(bnormSyncBackwardGrads(h, nullptr, &d, nullptr, x.get(), dy.get(), rm.f32(),
                                        static_cast<char*>(grads.get()) + 8, ws.get(), bws),
                 BNORM_STATUS_MISALIGNED, "'local_grads'", before);
  expect_failure(bnormSyncBackwardGrads(h, nullptr, &d, nullptr, x.get(), dy.get(), rm.f32(),
                                        grads.get(), ws.get(), bws - 1),
                 BNORM_STATUS_WORKSPACE_TOO_SMALL, "workspace", before);
  bnormConfig_t relu = BNORM_CONFIG_INITIALIZER;
  relu.epilogue = BNORM_EPILOGUE_RELU;
  expect_failure(bnormSyncBackwardGrads(h, nullptr, &d, &relu, x.get(), dy.get(), rm.f32(),
                                        grads.get(), ws.get(), bws),
                 BNORM_STATUS_NULL_POINTER, "config->relu_mask", before);
  expect_failure(bnormSyncBackwardApply(h, nullptr, &d, nullptr, nullptr, x.get(), dy.get(),
                                        dx.get(), nullptr, rm.f32(), rv.f32(), dg.f32(), db.f32(),
                                        ws.get(), bws),
                 BNORM_STATUS_NULL_POINTER, "'reduced_grads'", before);
  expect_failure(bnormSyncBackwardApply(h, nullptr, &d, nullptr, grads.get(), x.get(), dy.get(),
                                        dx.get(), nullptr, nullptr, nullptr, dg.f32(), db.f32(),
                                        ws.get(), bws),
                 BNORM_STATUS_NULL_POINTER, "'saved_mean'", before);
  expect_failure(bnormSyncBackwardApply(h, nullptr, &d, nullptr, dg.get(), x.get(), dy.get(),
                                        dx.get(), nullptr, rm.f32(), rv.f32(), dg.f32(), db.f32(),
                                        ws.get(), bws),
                 BNORM_STATUS_BAD_ALIASING, "reduced_grads", before);
  EXPECT_TRUE(dx.download() == dx_before);
}

}  // namespace

namespace {

// The average factor is the apply phase's alone: the statistics phase and
// the workspace queries ignore it (bnorm.h: a call ignores the config fields
// that are not its own); the apply phase refuses one outside [0, 1].
TEST_F(SyncErrors, OnlyTheApplyPhaseChecksTheAverageFactor) {
  if (IsSkipped()) return;
  bnormConfig_t bad = BNORM_CONFIG_INITIALIZER;
  bad.exponential_average_factor = 2.0;
  size_t bytes = 0;
  EXPECT_EQ(bnormSyncForwardStats(h, nullptr, &d, &bad, x.get(), local.get(), ws.get(), fws),
            BNORM_STATUS_SUCCESS)
      << bnormGetLastErrorMessage();
  EXPECT_EQ(bnormGetSyncForwardTrainingWorkspaceSize(h, &d, &bad, 2, &bytes), BNORM_STATUS_SUCCESS)
      << bnormGetLastErrorMessage();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto before = snapshot();
  expect_failure(bnormSyncForwardApply(h, nullptr, &d, &bad, 1, 0, -1, local.get(), x.get(),
                                       y.get(), nullptr, nullptr, rm.f32(), rv.f32(), nullptr,
                                       sm.f32(), sr.f32(), ws.get(), fws),
                 BNORM_STATUS_INVALID_VALUE, "exponential_average_factor", before);
}

}  // namespace

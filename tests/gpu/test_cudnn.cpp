// bnorm against cuDNN's legacy batch-norm API, on the same device inputs.
//
// For every case (layout x dtype x shape) the three public operations run
// next to their cuDNN counterparts (mode CUDNN_BATCHNORM_SPATIAL):
//   bnormForwardTraining   <-> cudnnBatchNormalizationForwardTraining
//   bnormForwardInference  <-> cudnnBatchNormalizationForwardInference
//   bnormBackward          <-> cudnnBatchNormalizationBackward
// and every output is compared between the two: tensors with
// bt::output_tolerance of the activation type, per-channel statistics to
// about 1e-4 relative, parameter gradients to a bound scaled by the sum of
// the magnitudes of their terms. In fp32 both are also compared with the
// double-precision reference (bn_reference.h).
//
// cuDNN conventions this relies on, checked by CudnnSemantics below: its
// resultSaveInvVariance is rstd = 1/sqrt(var + eps) (not 1/var), and its
// running variance gets the unbiased batch variance, var * m / (m - 1).
//
// Only combinations that cuDNN itself rejects are skipped, with its status;
// fp32 NCHW is always expected to be accepted.
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace {

using bt::Case;
using bt::DeviceBuffer;
using bt::Shape;
using bt::Tolerance;

// ---- cuDNN plumbing ------------------------------------------------------------------------

// One cuDNN handle for the whole program, made on first use (never in a
// static initializer: test discovery runs this program on machines without
// a GPU), destroyed by a test environment after the last test, while the
// CUDA context is still alive (not by a static destructor, when it may not
// be), so that a leak check sees nothing left behind.
cudnnHandle_t g_cudnn = nullptr;
bool g_cudnn_tried = false;

cudnnHandle_t cudnn_handle() {
  if (!g_cudnn_tried) {
    g_cudnn_tried = true;
    if (cudnnCreate(&g_cudnn) != CUDNN_STATUS_SUCCESS) g_cudnn = nullptr;
  }
  return g_cudnn;
}

class CudnnEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    if (g_cudnn) cudnnDestroy(g_cudnn);
    g_cudnn = nullptr;
  }
};
::testing::Environment* const g_cudnn_env =
    ::testing::AddGlobalTestEnvironment(new CudnnEnvironment);

std::string cudnn_error(cudnnStatus_t s) {
  char detail[1024] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  std::string out = cudnnGetErrorString(s);
  out += " (" + std::to_string(static_cast<int>(s)) + ")";
  if (detail[0]) out += std::string(": ") + detail;
  return out;
}

#define BT_CUDNN(call)                                                                \
  do {                                                                                \
    cudnnStatus_t bt_cs_ = (call);                                                    \
    ASSERT_EQ(bt_cs_, CUDNN_STATUS_SUCCESS) << #call << ": " << cudnn_error(bt_cs_); \
  } while (0)

cudnnDataType_t cudnn_type(bnormDataType_t t) {
  switch (t) {
    case BNORM_DATA_FLOAT: return CUDNN_DATA_FLOAT;
    case BNORM_DATA_HALF: return CUDNN_DATA_HALF;
    case BNORM_DATA_BFLOAT16: return CUDNN_DATA_BFLOAT16;
  }
  return CUDNN_DATA_FLOAT;
}

class TensorDesc {
 public:
  TensorDesc() { status_ = cudnnCreateTensorDescriptor(&d_); }
  ~TensorDesc() {
    if (d_) cudnnDestroyTensorDescriptor(d_);
  }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  cudnnTensorDescriptor_t get() const { return d_; }
  cudnnStatus_t created() const { return status_; }

 private:
  cudnnTensorDescriptor_t d_ = nullptr;
  cudnnStatus_t status_;
};

// The activation descriptor (NCHW: n, c, spatial, 1; NHWC: the same
// dimensions in channel-last order) and the derived per-channel descriptor.
struct CudnnDescs {
  TensorDesc x, bn;
  cudnnStatus_t status = CUDNN_STATUS_SUCCESS;  // of the first failing set-up call
  std::string what;                             // which call that was
};

void make_descs(const Case& k, CudnnDescs& d) {
  if ((d.status = d.x.created()) != CUDNN_STATUS_SUCCESS) {
    d.what = "cudnnCreateTensorDescriptor";
    return;
  }
  if ((d.status = d.bn.created()) != CUDNN_STATUS_SUCCESS) {
    d.what = "cudnnCreateTensorDescriptor";
    return;
  }
  const cudnnTensorFormat_t fmt =
      k.layout == BNORM_LAYOUT_NCHW ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC;
  d.status = cudnnSetTensor4dDescriptor(d.x.get(), fmt, cudnn_type(k.dtype),
                                        static_cast<int>(k.s.n), static_cast<int>(k.s.c),
                                        static_cast<int>(k.s.spatial), 1);
  if (d.status != CUDNN_STATUS_SUCCESS) {
    d.what = "cudnnSetTensor4dDescriptor";
    return;
  }
  d.status = cudnnDeriveBNTensorDescriptor(d.bn.get(), d.x.get(), CUDNN_BATCHNORM_SPATIAL);
  if (d.status != CUDNN_STATUS_SUCCESS) d.what = "cudnnDeriveBNTensorDescriptor";
}

// ---- the cases ---------------------------------------------------------------------------

std::vector<Shape> cudnn_shapes() {
  return {
      {2, 3, 5},       // small, odd
      {3, 7, 1},       // spatial = 1, m = 3 (Bessel's factor 1.5)
      {4, 1, 33},      // c = 1
      {5, 37, 13},     // nothing divides anything
      {1000, 3, 1},    // spatial = 1 with large n
      {4, 2000, 1},    // large c, spatial = 1
      {3, 40, 257},    // a prime spatial extent
      {2, 2, 8191},    // long channels, odd
      {32, 64, 3136},  // ResNet-like: n = 32, c = 64, 56x56
  };
}

std::vector<Case> cudnn_cases() {
  std::vector<Case> out;
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC})
      for (const Shape& s : cudnn_shapes()) out.push_back({s, l, t});
  return out;
}

// eps well above CUDNN_BN_MIN_EPSILON and large enough to matter at the 1e-4
// level (the variances are 0.25..4), so both must use it the same way.
constexpr double kEps = 1e-3;
constexpr double kFactor = 0.25;
static_assert(kEps >= CUDNN_BN_MIN_EPSILON, "eps below cuDNN's minimum");

bnormConfig_t test_config() {
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  cfg.eps = kEps;
  cfg.exponential_average_factor = kFactor;
  return cfg;
}

// ---- tolerances ----------------------------------------------------------------------------

// Per-channel statistics (fp32 in every activation type, computed from the
// same rounded inputs): about 1e-4 relative. Means can be near zero, so they
// get an absolute floor of the order of the fp32 rounding of the data.
constexpr Tolerance kMeanTol{2e-5, 1e-4};
constexpr Tolerance kRstdTol{1e-6, 1e-4};
constexpr Tolerance kRunningMeanTol{2e-5, 1e-4};
constexpr Tolerance kRunningVarTol{1e-6, 1e-4};

// dx = gamma * rstd * (...): the tensor tolerance, its absolute part scaled
// by the largest |gamma * rstd|.
Tolerance dx_tolerance(bnormDataType_t t, double dx_scale) {
  Tolerance tol = bt::output_tolerance(t);
  tol.atol *= std::max(1.0, dx_scale);
  return tol;
}

// Sums over m terms: 1e-5 of the sum of the terms' magnitudes (fp32
// accumulation in any order stays far inside it), plus 1e-4 relative.
::testing::AssertionResult sums_close(const std::vector<double>& got,
                                      const std::vector<double>& want,
                                      const std::vector<double>& abs_sum, const char* what) {
  if (got.size() != want.size() || got.size() != abs_sum.size())
    return ::testing::AssertionFailure() << what << ": size mismatch";
  size_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double lim = 1e-5 * abs_sum[i] + 1e-4 * std::fabs(want[i]) + 1e-6;
    if (!(std::isfinite(got[i]) && std::fabs(got[i] - want[i]) <= lim)) {
      if (bad < 5)
        first << "\n  [" << i << "] got " << got[i] << " expected " << want[i] << " (limit "
              << lim << ")";
      ++bad;
    }
  }
  if (bad)
    return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size()
                                         << " channels out of tolerance" << first.str();
  return ::testing::AssertionSuccess();
}

// ---- small helpers -------------------------------------------------------------------------

std::vector<double> download_tensor(const DeviceBuffer& b, bnormDataType_t t) {
  return bt::decode(b.download(), t);
}

std::vector<double> download_floats(const DeviceBuffer& b) {
  return bt::to_double(b.download_f32());
}

std::vector<double> as_float(const std::vector<double>& v) {
  return bt::round_to(v, BNORM_DATA_FLOAT);
}

// Gradients of unit scale in [-1, 1], rounded to the activation type.
std::vector<double> random_gradient(const Case& k, uint64_t seed) {
  return bt::round_to(bt::random_floats(static_cast<size_t>(k.numel()), seed, -1.0, 1.0),
                      k.dtype);
}

// Per-channel sums of |dy| and |dy * xhat| (the scale of dbeta's and
// dgamma's rounding), and max |gamma * rstd| (the scale of dx).
struct GradScales {
  std::vector<double> abs_dbeta, abs_dgamma;
  double dx_scale = 0.0;
};

GradScales grad_scales(const Case& k, const std::vector<double>& x, const std::vector<double>& dy,
                       const std::vector<double>& gamma, const std::vector<double>& mean,
                       const std::vector<double>& rstd) {
  GradScales g;
  g.abs_dbeta.assign(k.s.c, 0.0);
  g.abs_dgamma.assign(k.s.c, 0.0);
  const bnref_shape sh = k.ref();
  for (int64_t i = 0; i < k.s.n; ++i)
    for (int64_t c = 0; c < k.s.c; ++c)
      for (int64_t s = 0; s < k.s.spatial; ++s) {
        const int64_t o = bnref_offset(&sh, i, c, s);
        g.abs_dbeta[c] += std::fabs(dy[o]);
        g.abs_dgamma[c] += std::fabs(dy[o] * (x[o] - mean[c]) * rstd[c]);
      }
  for (int64_t c = 0; c < k.s.c; ++c) g.dx_scale = std::max(g.dx_scale, std::fabs(gamma[c] * rstd[c]));
  return g;
}

// Calls cuDNN; on rejection, skips the test (or fails it for fp32 NCHW,
// which cuDNN always supports) with cuDNN's status.
#define BT_CUDNN_OR_SKIP(k, call)                                                          \
  do {                                                                                     \
    const cudnnStatus_t bt_cs_ = (call);                                                   \
    if (bt_cs_ != CUDNN_STATUS_SUCCESS) {                                                  \
      if ((k).dtype == BNORM_DATA_FLOAT && (k).layout == BNORM_LAYOUT_NCHW)                \
        FAIL() << "cuDNN rejected fp32 NCHW: " << #call << ": " << cudnn_error(bt_cs_);    \
      GTEST_SKIP() << "cuDNN rejects " << (k).name() << ": " << #call << ": "              \
                   << cudnn_error(bt_cs_);                                                 \
    }                                                                                      \
  } while (0)

#define BT_DESCS_OR_SKIP(k, d)                                                             \
  do {                                                                                     \
    make_descs((k), (d));                                                                  \
    if ((d).status != CUDNN_STATUS_SUCCESS) {                                              \
      if ((k).dtype == BNORM_DATA_FLOAT && (k).layout == BNORM_LAYOUT_NCHW)                \
        FAIL() << "cuDNN rejected fp32 NCHW: " << (d).what << ": " << cudnn_error((d).status); \
      GTEST_SKIP() << "cuDNN rejects " << (k).name() << ": " << (d).what << ": "           \
                   << cudnn_error((d).status);                                             \
    }                                                                                      \
  } while (0)

#define BT_REQUIRE_CUDNN()                                                                 \
  do {                                                                                     \
    BT_REQUIRE_DEVICE();                                                                   \
    ASSERT_NE(cudnn_handle(), nullptr) << "cudnnCreate failed";                            \
  } while (0)

const float kOne = 1.0f, kZero = 0.0f;

// ---- forward training ----------------------------------------------------------------------

class CudnnCompare : public ::testing::TestWithParam<Case> {};

TEST_P(CudnnCompare, ForwardTraining) {
  BT_REQUIRE_CUDNN();
  const Case k = GetParam();
  const bnormConfig_t cfg = test_config();
  const bnormTensorDesc_t desc = k.desc();
  const size_t c = static_cast<size_t>(k.s.c);
  const size_t tensor_bytes = static_cast<size_t>(k.numel()) * bt::dtype_bytes(k.dtype);

  const std::vector<double> x = bt::random_activations(k, 11);
  const std::vector<double> gamma = bt::random_floats(c, 12, 0.5, 1.5);
  const std::vector<double> beta = bt::random_floats(c, 13, -0.5, 0.5);
  const std::vector<double> rm0 = bt::random_floats(c, 14, -1.0, 1.0);
  const std::vector<double> rv0 = bt::random_floats(c, 15, 0.5, 2.0);

  DeviceBuffer d_x = bt::upload_tensor(x, k.dtype);
  DeviceBuffer d_gamma = bt::upload_floats(gamma), d_beta = bt::upload_floats(beta);

  // cuDNN first: a combination it rejects skips the test before anything else.
  CudnnDescs cd;
  BT_DESCS_OR_SKIP(k, cd);
  DeviceBuffer c_y(tensor_bytes), c_mean(c * 4), c_rstd(c * 4);
  DeviceBuffer c_rm = bt::upload_floats(rm0), c_rv = bt::upload_floats(rv0);
  c_y.poison();
  c_mean.poison();
  c_rstd.poison();
  BT_CUDNN_OR_SKIP(k, cudnnBatchNormalizationForwardTraining(
                          cudnn_handle(), CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, cd.x.get(),
                          d_x.get(), cd.x.get(), c_y.get(), cd.bn.get(), d_gamma.get(),
                          d_beta.get(), kFactor, c_rm.get(), c_rv.get(), kEps, c_mean.get(),
                          c_rstd.get()));

  bt::Handle h;
  size_t ws_bytes = 0;
  BT_OK(bnormGetForwardTrainingWorkspaceSize(h, &desc, &cfg, &ws_bytes));
  DeviceBuffer ws(ws_bytes), b_y(tensor_bytes), b_mean(c * 4), b_rstd(c * 4);
  DeviceBuffer b_rm = bt::upload_floats(rm0), b_rv = bt::upload_floats(rv0);
  b_y.poison();
  b_mean.poison();
  b_rstd.poison();
  BT_OK(bnormForwardTraining(h, 0, &desc, &cfg, d_x.get(), b_y.get(), d_gamma.f32(),
                             d_beta.f32(), b_rm.f32(), b_rv.f32(), nullptr, b_mean.f32(),
                             b_rstd.f32(), ws.get(), ws_bytes));
  BT_CUDA(cudaDeviceSynchronize());

  const std::vector<double> by = download_tensor(b_y, k.dtype), cy = download_tensor(c_y, k.dtype);
  const std::vector<double> bmean = download_floats(b_mean), cmean = download_floats(c_mean);
  const std::vector<double> brstd = download_floats(b_rstd), crstd = download_floats(c_rstd);
  const std::vector<double> brm = download_floats(b_rm), crm = download_floats(c_rm);
  const std::vector<double> brv = download_floats(b_rv), crv = download_floats(c_rv);

  const Tolerance ytol = bt::output_tolerance(k.dtype);
  EXPECT_TRUE(bt::all_close(by, cy, ytol, "y: bnorm vs cuDNN"));
  EXPECT_TRUE(bt::all_close(bmean, cmean, kMeanTol, "saved mean: bnorm vs cuDNN"));
  EXPECT_TRUE(bt::all_close(brstd, crstd, kRstdTol, "saved rstd: bnorm vs cuDNN"));
  EXPECT_TRUE(bt::all_close(brm, crm, kRunningMeanTol, "running mean: bnorm vs cuDNN"));
  EXPECT_TRUE(bt::all_close(brv, crv, kRunningVarTol, "running var: bnorm vs cuDNN"));

  if (k.dtype == BNORM_DATA_FLOAT) {
    const bnref_shape sh = k.ref();
    std::vector<double> ry(x.size()), rmean(c), rvar(c), rrstd(c);
    bnref_forward_training(&sh, x.data(), gamma.data(), beta.data(), kEps, ry.data(),
                           rmean.data(), rvar.data(), rrstd.data());
    std::vector<double> rrm = rm0, rrv = rv0;
    bnref_update_running(k.s.c, k.m(), kFactor, rmean.data(), rvar.data(), rrm.data(),
                         rrv.data());
    EXPECT_TRUE(bt::all_close(by, ry, ytol, "y: bnorm vs reference"));
    EXPECT_TRUE(bt::all_close(cy, ry, ytol, "y: cuDNN vs reference"));
    EXPECT_TRUE(bt::all_close(bmean, rmean, kMeanTol, "saved mean: bnorm vs reference"));
    EXPECT_TRUE(bt::all_close(cmean, rmean, kMeanTol, "saved mean: cuDNN vs reference"));
    EXPECT_TRUE(bt::all_close(brstd, rrstd, kRstdTol, "saved rstd: bnorm vs reference"));
    EXPECT_TRUE(bt::all_close(crstd, rrstd, kRstdTol, "saved rstd: cuDNN vs reference"));
    EXPECT_TRUE(bt::all_close(brm, rrm, kRunningMeanTol, "running mean: bnorm vs reference"));
    EXPECT_TRUE(bt::all_close(crm, rrm, kRunningMeanTol, "running mean: cuDNN vs reference"));
    EXPECT_TRUE(bt::all_close(brv, rrv, kRunningVarTol, "running var: bnorm vs reference"));
    EXPECT_TRUE(bt::all_close(crv, rrv, kRunningVarTol, "running var: cuDNN vs reference"));
  }
}

// ---- forward inference ---------------------------------------------------------------------

TEST_P(CudnnCompare, ForwardInference) {
  BT_REQUIRE_CUDNN();
  const Case k = GetParam();
  const bnormConfig_t cfg = test_config();
  const bnormTensorDesc_t desc = k.desc();
  const size_t c = static_cast<size_t>(k.s.c);
  const size_t tensor_bytes = static_cast<size_t>(k.numel()) * bt::dtype_bytes(k.dtype);

  const std::vector<double> x = bt::random_activations(k, 21);
  const std::vector<double> gamma = bt::random_floats(c, 22, 0.5, 1.5);
  const std::vector<double> beta = bt::random_floats(c, 23, -0.5, 0.5);
  const std::vector<double> rm = bt::random_floats(c, 24, -3.0, 3.0);
  const std::vector<double> rv = bt::random_floats(c, 25, 0.25, 4.0);

  DeviceBuffer d_x = bt::upload_tensor(x, k.dtype);
  DeviceBuffer d_gamma = bt::upload_floats(gamma), d_beta = bt::upload_floats(beta);
  DeviceBuffer d_rm = bt::upload_floats(rm), d_rv = bt::upload_floats(rv);

  CudnnDescs cd;
  BT_DESCS_OR_SKIP(k, cd);
  DeviceBuffer c_y(tensor_bytes);
  c_y.poison();
  BT_CUDNN_OR_SKIP(k, cudnnBatchNormalizationForwardInference(
                          cudnn_handle(), CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, cd.x.get(),
                          d_x.get(), cd.x.get(), c_y.get(), cd.bn.get(), d_gamma.get(),
                          d_beta.get(), d_rm.get(), d_rv.get(), kEps));

  bt::Handle h;
  DeviceBuffer b_y(tensor_bytes);
  b_y.poison();
  BT_OK(bnormForwardInference(h, 0, &desc, &cfg, d_x.get(), b_y.get(), d_gamma.f32(),
                              d_beta.f32(), d_rm.f32(), d_rv.f32()));
  BT_CUDA(cudaDeviceSynchronize());

  const std::vector<double> by = download_tensor(b_y, k.dtype), cy = download_tensor(c_y, k.dtype);
  const Tolerance ytol = bt::output_tolerance(k.dtype);
  EXPECT_TRUE(bt::all_close(by, cy, ytol, "y: bnorm vs cuDNN"));

  if (k.dtype == BNORM_DATA_FLOAT) {
    const bnref_shape sh = k.ref();
    std::vector<double> ry(x.size());
    bnref_forward_inference(&sh, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), kEps,
                            ry.data());
    EXPECT_TRUE(bt::all_close(by, ry, ytol, "y: bnorm vs reference"));
    EXPECT_TRUE(bt::all_close(cy, ry, ytol, "y: cuDNN vs reference"));
  }
}

// ---- backward ------------------------------------------------------------------------------

TEST_P(CudnnCompare, Backward) {
  BT_REQUIRE_CUDNN();
  const Case k = GetParam();
  const bnormConfig_t cfg = test_config();
  const bnormTensorDesc_t desc = k.desc();
  const size_t c = static_cast<size_t>(k.s.c);
  const size_t tensor_bytes = static_cast<size_t>(k.numel()) * bt::dtype_bytes(k.dtype);

  const std::vector<double> x = bt::random_activations(k, 31);
  const std::vector<double> dy = random_gradient(k, 32);
  const std::vector<double> gamma = bt::random_floats(c, 33, 0.5, 1.5);
  const std::vector<double> beta = bt::random_floats(c, 34, -0.5, 0.5);

  // Both libraries get the same saved statistics: the reference's, in fp32.
  const bnref_shape sh = k.ref();
  std::vector<double> rmean(c), rvar(c), rrstd(c);
  bnref_batch_stats(&sh, x.data(), kEps, rmean.data(), rvar.data(), rrstd.data());
  const std::vector<double> smean = as_float(rmean), srstd = as_float(rrstd);

  DeviceBuffer d_x = bt::upload_tensor(x, k.dtype), d_dy = bt::upload_tensor(dy, k.dtype);
  DeviceBuffer d_gamma = bt::upload_floats(gamma), d_beta = bt::upload_floats(beta);
  DeviceBuffer d_mean = bt::upload_floats(smean), d_rstd = bt::upload_floats(srstd);

  CudnnDescs cd;
  BT_DESCS_OR_SKIP(k, cd);
  DeviceBuffer c_dx(tensor_bytes), c_dgamma(c * 4), c_dbeta(c * 4);
  c_dx.poison();
  c_dgamma.poison();
  c_dbeta.poison();
  BT_CUDNN_OR_SKIP(k, cudnnBatchNormalizationBackward(
                          cudnn_handle(), CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, &kOne, &kZero,
                          cd.x.get(), d_x.get(), cd.x.get(), d_dy.get(), cd.x.get(), c_dx.get(),
                          cd.bn.get(), d_gamma.get(), c_dgamma.get(), c_dbeta.get(), kEps,
                          d_mean.get(), d_rstd.get()));

  bt::Handle h;
  size_t ws_bytes = 0;
  BT_OK(bnormGetBackwardWorkspaceSize(h, &desc, &cfg, &ws_bytes));
  DeviceBuffer ws(ws_bytes), b_dx(tensor_bytes), b_dgamma(c * 4), b_dbeta(c * 4);
  b_dx.poison();
  b_dgamma.poison();
  b_dbeta.poison();
  BT_OK(bnormBackward(h, 0, &desc, &cfg, d_x.get(), d_dy.get(), b_dx.get(), d_gamma.f32(),
                      d_mean.f32(), d_rstd.f32(), b_dgamma.f32(), b_dbeta.f32(), ws.get(),
                      ws_bytes));
  BT_CUDA(cudaDeviceSynchronize());

  const std::vector<double> bdx = download_tensor(b_dx, k.dtype);
  const std::vector<double> cdx = download_tensor(c_dx, k.dtype);
  const std::vector<double> bdg = download_floats(b_dgamma), cdg = download_floats(c_dgamma);
  const std::vector<double> bdb = download_floats(b_dbeta), cdb = download_floats(c_dbeta);

  const GradScales g = grad_scales(k, x, dy, gamma, smean, srstd);
  const Tolerance dxtol = dx_tolerance(k.dtype, g.dx_scale);
  EXPECT_TRUE(bt::all_close(bdx, cdx, dxtol, "dx: bnorm vs cuDNN"));
  EXPECT_TRUE(sums_close(bdg, cdg, g.abs_dgamma, "dgamma: bnorm vs cuDNN"));
  EXPECT_TRUE(sums_close(bdb, cdb, g.abs_dbeta, "dbeta: bnorm vs cuDNN"));

  if (k.dtype == BNORM_DATA_FLOAT) {
    std::vector<double> rdx(x.size()), rdg(c), rdb(c);
    bnref_backward(&sh, x.data(), dy.data(), gamma.data(), smean.data(), srstd.data(),
                   rdx.data(), rdg.data(), rdb.data());
    EXPECT_TRUE(bt::all_close(bdx, rdx, dxtol, "dx: bnorm vs reference"));
    EXPECT_TRUE(bt::all_close(cdx, rdx, dxtol, "dx: cuDNN vs reference"));
    EXPECT_TRUE(sums_close(bdg, rdg, g.abs_dgamma, "dgamma: bnorm vs reference"));
    EXPECT_TRUE(sums_close(cdg, rdg, g.abs_dgamma, "dgamma: cuDNN vs reference"));
    EXPECT_TRUE(sums_close(bdb, rdb, g.abs_dbeta, "dbeta: bnorm vs reference"));
    EXPECT_TRUE(sums_close(cdb, rdb, g.abs_dbeta, "dbeta: cuDNN vs reference"));
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudnnCompare, ::testing::ValuesIn(cudnn_cases()), bt::CaseName());

// ---- cuDNN's conventions -------------------------------------------------------------------
// The comparisons above assume that cuDNN's saved "inverse variance" is
// rstd = 1/sqrt(var + eps) and that its running variance is updated with the
// unbiased batch variance. Checked here on a batch small enough (m = 4) that
// the alternatives differ by far more than rounding, with a message that says
// which convention cuDNN follows if it is not the expected one.
TEST(CudnnSemantics, SavedInvVarianceIsRstdAndRunningVarIsUnbiased) {
  BT_REQUIRE_CUDNN();
  const Case k{{2, 3, 2}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT};
  const size_t c = static_cast<size_t>(k.s.c);
  const std::vector<double> x = bt::random_activations(k, 41);
  const std::vector<double> gamma(c, 1.0), beta(c, 0.0);
  const std::vector<double> rm0 = bt::random_floats(c, 42, -1.0, 1.0);
  const std::vector<double> rv0 = bt::random_floats(c, 43, 0.5, 2.0);

  DeviceBuffer d_x = bt::upload_tensor(x, k.dtype), y(x.size() * 4);
  DeviceBuffer d_gamma = bt::upload_floats(gamma), d_beta = bt::upload_floats(beta);
  DeviceBuffer rm = bt::upload_floats(rm0), rv = bt::upload_floats(rv0);
  DeviceBuffer mean(c * 4), inv(c * 4);
  mean.poison();
  inv.poison();
  y.poison();
  CudnnDescs cd;
  make_descs(k, cd);
  ASSERT_EQ(cd.status, CUDNN_STATUS_SUCCESS) << cd.what << ": " << cudnn_error(cd.status);
  BT_CUDNN(cudnnBatchNormalizationForwardTraining(
      cudnn_handle(), CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, cd.x.get(), d_x.get(), cd.x.get(),
      y.get(), cd.bn.get(), d_gamma.get(), d_beta.get(), kFactor, rm.get(), rv.get(), kEps,
      mean.get(), inv.get()));
  BT_CUDA(cudaDeviceSynchronize());
  const std::vector<double> got_inv = download_floats(inv), got_rv = download_floats(rv);

  const bnref_shape sh = k.ref();
  std::vector<double> rmean(c), var(c), rstd(c);
  bnref_batch_stats(&sh, x.data(), kEps, rmean.data(), var.data(), rstd.data());
  const double m = static_cast<double>(k.m());
  for (size_t ch = 0; ch < c; ++ch) {
    const double as_rstd = rstd[ch], as_inv_var = 1.0 / (var[ch] + kEps);
    const double unbiased = (1 - kFactor) * rv0[ch] + kFactor * var[ch] * m / (m - 1);
    const double biased = (1 - kFactor) * rv0[ch] + kFactor * var[ch];
    EXPECT_NEAR(got_inv[ch], as_rstd, 1e-4 * as_rstd)
        << "channel " << ch << ": cuDNN saved " << got_inv[ch] << "; rstd = " << as_rstd
        << ", 1/(var+eps) = " << as_inv_var << ", var = " << var[ch];
    EXPECT_NEAR(got_rv[ch], unbiased, 1e-4 * unbiased)
        << "channel " << ch << ": cuDNN running var " << got_rv[ch] << "; unbiased update "
        << unbiased << ", biased update " << biased;
  }
}

}  // namespace

// libbnorm_cublas_emu: cublasSgemm on the CPU against a double-precision
// product written here, for every transpose combination, padded leading
// dimensions, alpha and beta (beta == 0 must not read C), device pointer
// mode, argument errors, and capture into a CUDA graph.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace {

// C = alpha op(A) op(B) + beta C, column-major, in double.
std::vector<double> reference(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              float alpha, const std::vector<float>& a, int lda,
                              const std::vector<float>& b, int ldb, float beta,
                              const std::vector<float>& c, int ldc) {
  std::vector<double> out(c.begin(), c.end());
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0;
      for (int p = 0; p < k; ++p) {
        const double av = ta == CUBLAS_OP_N ? a[size_t(i + p * lda)] : a[size_t(p + i * lda)];
        const double bv = tb == CUBLAS_OP_N ? b[size_t(p + j * ldb)] : b[size_t(j + p * ldb)];
        s += av * bv;
      }
      const double old = beta == 0.f ? 0.0 : double(beta) * c[size_t(i + j * ldc)];
      out[size_t(i + j * ldc)] = double(alpha) * s + old;
    }
  return out;
}

std::vector<float> random_vector(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct Case {
  cublasOperation_t ta, tb;
  int m, n, k, pad;
  float alpha, beta;
};

class Sgemm : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { ASSERT_EQ(cublasCreate(&h_), CUBLAS_STATUS_SUCCESS); }
  void TearDown() override { EXPECT_EQ(cublasDestroy(h_), CUBLAS_STATUS_SUCCESS); }
  cublasHandle_t h_ = nullptr;
};

TEST_P(Sgemm, MatchesADoubleReference) {
  const Case c = GetParam();
  std::mt19937 rng(uint32_t(c.m * 131 + c.n * 17 + c.k));
  const int a_rows = c.ta == CUBLAS_OP_N ? c.m : c.k, a_cols = c.ta == CUBLAS_OP_N ? c.k : c.m;
  const int b_rows = c.tb == CUBLAS_OP_N ? c.k : c.n, b_cols = c.tb == CUBLAS_OP_N ? c.n : c.k;
  const int lda = std::max(1, a_rows) + c.pad, ldb = std::max(1, b_rows) + c.pad;
  const int ldc = std::max(1, c.m) + c.pad;
  std::vector<float> a = random_vector(size_t(lda) * a_cols, rng);
  std::vector<float> b = random_vector(size_t(ldb) * b_cols, rng);
  std::vector<float> cm = random_vector(size_t(ldc) * c.n, rng);
  if (c.beta == 0.f)  // cuBLAS does not read C when beta is 0
    for (auto& x : cm) x = std::numeric_limits<float>::quiet_NaN();
  const std::vector<double> want =
      reference(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a, lda, b, ldb, c.beta, cm, ldc);
  ASSERT_EQ(cublasSgemm(h_, c.ta, c.tb, c.m, c.n, c.k, &c.alpha, a.data(), lda, b.data(), ldb,
                        &c.beta, cm.data(), ldc),
            CUBLAS_STATUS_SUCCESS);
  for (int j = 0; j < c.n; ++j)
    for (int i = 0; i < ldc; ++i) {
      const size_t at = size_t(i + j * ldc);
      if (i >= c.m) continue;  // padding rows are not ours to check
      ASSERT_NEAR(cm[at], want[at], 1e-5 * (1 + c.k)) << "C(" << i << "," << j << ")";
    }
}

INSTANTIATE_TEST_SUITE_P(
    Emulated, Sgemm,
    ::testing::Values(Case{CUBLAS_OP_N, CUBLAS_OP_N, 7, 5, 3, 0, 1.f, 0.f},
                      Case{CUBLAS_OP_N, CUBLAS_OP_T, 64, 12, 128, 0, 1.f, 0.f},
                      Case{CUBLAS_OP_T, CUBLAS_OP_N, 12, 128, 64, 0, 1.f, 0.f},
                      Case{CUBLAS_OP_T, CUBLAS_OP_T, 9, 11, 13, 3, -0.5f, 2.f},
                      Case{CUBLAS_OP_N, CUBLAS_OP_N, 33, 17, 65, 5, 0.25f, 1.f},
                      Case{CUBLAS_OP_C, CUBLAS_OP_N, 8, 8, 8, 1, 1.f, -1.f},
                      Case{CUBLAS_OP_N, CUBLAS_OP_N, 4, 6, 0, 0, 1.f, 0.5f}));

TEST(CublasEmu, DevicePointerModeReadsScalarsWhenItRuns) {
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE), CUBLAS_STATUS_SUCCESS);
  cublasPointerMode_t mode;
  ASSERT_EQ(cublasGetPointerMode(h, &mode), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(mode, CUBLAS_POINTER_MODE_DEVICE);
  float* scalars;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&scalars), 2 * sizeof(float)), cudaSuccess);
  const float host_scalars[2] = {3.f, 0.f};
  ASSERT_EQ(cudaMemcpy(scalars, host_scalars, sizeof host_scalars, cudaMemcpyHostToDevice),
            cudaSuccess);
  const float a[2] = {1.f, 2.f}, b[2] = {10.f, 100.f};  // 2x1 times 1x2
  float c[4] = {};
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 1, scalars, a, 2, b, 1, scalars + 1, c,
                        2),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(c[0], 30.f);
  EXPECT_EQ(c[1], 60.f);
  EXPECT_EQ(c[2], 300.f);
  EXPECT_EQ(c[3], 600.f);
  cudaFree(scalars);
  EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
}

TEST(CublasEmu, BadArgumentsAreRefusedAndWriteNothing) {
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const float one = 1.f, a[4] = {1, 2, 3, 4};
  float c[4] = {7, 7, 7, 7};
  EXPECT_EQ(cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, a, 2, &one, c, 2),
            CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 2, &one, a, 2, a, 2, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 1, a, 2, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);  // lda < m
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, 2, 2, 2, &one, a, 2, a, 1, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);  // ldb < n
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, a, 2, &one, c, 1),
            CUBLAS_STATUS_INVALID_VALUE);  // ldc < m
  EXPECT_EQ(cublasSgemm(h, static_cast<cublasOperation_t>(9), CUBLAS_OP_N, 2, 2, 2, &one, a, 2, a,
                        2, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, nullptr, a, 2, a, 2, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  for (float v : c) EXPECT_EQ(v, 7.f);
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
  EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
}

TEST(CublasEmu, CapturedProductsRunAtEachGraphLaunch) {
  cublasHandle_t h;
  cudaStream_t s;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
  cudaStream_t got = nullptr;
  ASSERT_EQ(cublasGetStream(h, &got), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(got, s);
  // c = 2 * a * c_old + 1 * c_old: a graph of one product, applied 3 times
  // to the 1x1 matrix c (captured alpha and beta are the call's values).
  float a = 1.5f, c = 1.f, alpha = 2.f, beta = 1.f;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  float tmp = 0.f;
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &alpha, &a, 1, &c, 1, &beta, &tmp, 1),
            CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaMemcpyAsync(&c, &tmp, sizeof c, cudaMemcpyDeviceToDevice, s), cudaSuccess);
  alpha = 100.f;  // too late: host pointer mode read it at the call
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT_EQ(tmp, 0.f);
  EXPECT_EQ(c, 1.f);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  // tmp = 3 c + 0 (beta applies to tmp, which held 0, then c's value each time).
  // Step: tmp <- 2*1.5*c + 1*tmp; c <- tmp.  c: 1 -> 3 -> 3*3+3=12 -> 36+12=48.
  EXPECT_EQ(c, 48.f);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
  EXPECT_EQ(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
}

}  // namespace

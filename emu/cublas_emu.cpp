// libbnorm_cublas_emu: the part of cuBLAS that bnorm's examples use, served on
// the CPU by OpenBLAS, for the emulated build. A C program written against
// <cublas_v2.h> links against this library (and bnorm_emu) instead of
// libcublas (and cudart) and runs unchanged on a machine with no GPU.
//
// Exported with C linkage under the toolkit's own declarations (this file
// includes <cublas_v2.h>, so the compiler checks every signature): handle
// lifetime, stream, workspace, pointer and math mode, version and status
// strings, and cublasSgemm. Matrices are column-major as in cuBLAS;
// "device" memory is host memory under the emulator.
//
// Streams: the product is issued to the handle's stream through
// cudaLaunchHostFunc, so it follows the emulated runtime's rules: it runs at
// once, or, while the stream is captured into a CUDA graph, becomes a node of
// the graph and runs at each launch of it (alpha and beta are read at the
// call in host pointer mode, at execution in device pointer mode, as cuBLAS
// does). Records of captured calls live as long as the handle.
//
// OpenBLAS runs single-threaded here: the products are small, it leaves the
// cores to the emulator's kernels, and it makes the result of a product
// depend only on its operands.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cblas.h>

#include <memory>
#include <mutex>
#include <new>
#include <vector>

#define CUBLAS_EMU_EXPORT __attribute__((visibility("default")))

namespace cublas_emu {
struct SgemmCall {
  CBLAS_TRANSPOSE ta, tb;
  int m, n, k;
  bool device_scalars;
  float alpha, beta;                   // host pointer mode: read at the call
  const float *alpha_p, *beta_p;       // device pointer mode: read when it runs
  const float *a, *b;
  float* c;
  int lda, ldb, ldc;
};
}  // namespace cublas_emu
using cublas_emu::SgemmCall;

struct cublasContext {
  unsigned magic = 0xc0b1a5e5u;
  cudaStream_t stream = nullptr;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
  cublasMath_t math_mode = CUBLAS_DEFAULT_MATH;
  std::mutex m;
  std::vector<std::unique_ptr<SgemmCall>> captured;  // calls captured into graphs
};

namespace {

constexpr unsigned kMagic = 0xc0b1a5e5u;

bool valid(cublasHandle_t h) { return h && h->magic == kMagic; }

void CUDART_CB run_sgemm(void* p) {
  const SgemmCall& g = *static_cast<const SgemmCall*>(p);
  const float alpha = g.device_scalars ? *g.alpha_p : g.alpha;
  const float beta = g.device_scalars ? *g.beta_p : g.beta;
  cblas_sgemm(CblasColMajor, g.ta, g.tb, g.m, g.n, g.k, alpha, g.a, g.lda, g.b, g.ldb, beta, g.c,
              g.ldc);
}

bool to_cblas(cublasOperation_t op, CBLAS_TRANSPOSE* out) {
  switch (op) {
    case CUBLAS_OP_N: *out = CblasNoTrans; return true;
    case CUBLAS_OP_T: *out = CblasTrans; return true;
    case CUBLAS_OP_C: *out = CblasConjTrans; return true;  // real data: the transpose
    default: return false;
  }
}

int at_least_one(int v) { return v > 1 ? v : 1; }

}  // namespace

extern "C" {

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new (std::nothrow) cublasContext;
  if (!*handle) return CUBLAS_STATUS_ALLOC_FAILED;
  openblas_set_num_threads(1);
  return CUBLAS_STATUS_SUCCESS;
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->magic = 0;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasGetVersion_v2(cublasHandle_t handle,
                                                                  int* version) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!version) return CUBLAS_STATUS_INVALID_VALUE;
  *version = CUBLAS_VERSION;  // the API these declarations describe
  return CUBLAS_STATUS_SUCCESS;
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void*,
                                                                    size_t) {
  // OpenBLAS needs no caller workspace; accepted so that GPU code runs as is.
  return valid(handle) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle,
                                                                 cudaStream_t stream) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasGetStream_v2(cublasHandle_t handle,
                                                                 cudaStream_t* stream) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasSetPointerMode_v2(cublasHandle_t handle,
                                                                      cublasPointerMode_t mode) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasGetPointerMode_v2(cublasHandle_t handle,
                                                                      cublasPointerMode_t* mode) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle,
                                                                cublasMath_t mode) {
  // Recorded only: OpenBLAS computes in fp32 whatever the mode allows.
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasGetMathMode(cublasHandle_t handle,
                                                                cublasMath_t* mode) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->math_mode;
  return CUBLAS_STATUS_SUCCESS;
}

CUBLAS_EMU_EXPORT const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

CUBLAS_EMU_EXPORT const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "unknown error (bnorm cuBLAS emulation)";
  }
}

CUBLAS_EMU_EXPORT cublasStatus_t CUBLASWINAPI cublasSgemm_v2(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
    float* C, int ldc) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  SgemmCall g{};
  if (!to_cblas(transa, &g.ta) || !to_cblas(transb, &g.tb) || m < 0 || n < 0 || k < 0 ||
      !alpha || !beta)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (lda < at_least_one(transa == CUBLAS_OP_N ? m : k) ||
      ldb < at_least_one(transb == CUBLAS_OP_N ? k : n) || ldc < at_least_one(m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  g.m = m;
  g.n = n;
  g.k = k;
  g.device_scalars = handle->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
  if (g.device_scalars) {
    g.alpha_p = alpha;
    g.beta_p = beta;
  } else {
    g.alpha = *alpha;
    g.beta = *beta;
  }
  g.a = A;
  g.b = B;
  g.c = C;
  g.lda = lda;
  g.ldb = ldb;
  g.ldc = ldc;

  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(handle->stream, &capture) != cudaSuccess)
    return CUBLAS_STATUS_EXECUTION_FAILED;
  SgemmCall* call = &g;  // runs at once unless captured
  if (capture == cudaStreamCaptureStatusActive) {
    std::lock_guard<std::mutex> lock(handle->m);
    std::unique_ptr<SgemmCall> kept(new (std::nothrow) SgemmCall(g));
    if (!kept) return CUBLAS_STATUS_ALLOC_FAILED;
    call = kept.get();
    handle->captured.push_back(std::move(kept));
  }
  if (cudaLaunchHostFunc(handle->stream, run_sgemm, call) != cudaSuccess)
    return CUBLAS_STATUS_EXECUTION_FAILED;
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"

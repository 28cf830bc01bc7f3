/*
 * train_mlp: bnorm in a real training loop, end to end, from C.
 *
 * A multilayer perceptron
 *     x (12 features) -> linear 64 -> BN -> ReLU -> linear 64 -> BN -> ReLU
 *                     -> linear 3 -> softmax cross-entropy
 * trained with SGD (momentum 0.9; the learning rate decays over the second
 * half) on synthetic data built like the classic conditioning exercise:
 * three interleaved spirals (3 classes) seen through 12 features whose
 * scales span six orders of magnitude (about 1e-3, 1e3 and 10) and whose
 * means sit far from zero (5 to 50 times the feature's scale: 14 to 122
 * standard deviations).
 *
 * The same network, from the same seed (same initial weights, same batches),
 * is trained twice: without batch norm (linear -> ReLU) and with bnorm in
 * training mode. The BN network is then evaluated in inference mode from its
 * running statistics, and again after recalibrating them (one forward pass
 * over the training set with the cumulative average); both sets are printed
 * beside the true statistics of the features they normalize (computed here
 * over the whole training set). Curves go to a CSV file and, through gnuplot,
 * to a PNG.
 *
 * Matrix products: cublasSgemm. Batch norm: bnorm. Everything else (gather
 * of a batch, bias, ReLU, softmax cross-entropy, bias gradients, the SGD
 * update) is in mlp_kernels.cu, CUDA kernels built like the library's.
 *
 * One training step -- gather, forward, backward, update -- is captured once
 * into a CUDA graph and replayed for every step. Before training, the demo
 * checks that k replays leave the weights, momenta, running statistics and
 * step counters bitwise equal to k eager steps from the same state, for
 * both running-average modes (the cumulative one keeps its step counter in
 * device memory, so the replayed graph advances it).
 *
 * Two builds of this one source:
 *   train_mlp_gpu  bnorm + cuBLAS + cudart on a GPU
 *   train_mlp_emu  bnorm_emu + libbnorm_cublas_emu (cuBLAS's calls served by
 *                  OpenBLAS): kernels run on the CPU under bnorm's emulator,
 *                  which also emulates stream capture and graph launch.
 *
 * Usage: train_mlp [--out DIR] [--epochs N] [--check]
 *   --out DIR   where train_mlp.csv, train_mlp_stats.csv, train_mlp.gp and
 *               train_mlp.png go (default: the current directory)
 *   --epochs N  epochs per run (default 12)
 *   --check     also fail (exit 1) unless the BN network learned (inference
 *               test accuracy >= 0.9 with either set of statistics), its
 *               recalibrated statistics match the true ones and those from
 *               training track them; used by the test suite
 * Exit status 0 when every check passed; 77 (TRAIN_MLP_EXIT_NO_DEVICE) when
 * there is no CUDA device or driver, so ctest (SKIP_RETURN_CODE) reports the
 * GPU build's test as skipped on such a machine; 2 for bad arguments; 1 for
 * any other failure.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, popen */

#include <bnorm.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRAIN_MLP_EXIT_NO_DEVICE 77
#include <time.h>

#include <errno.h>
#include <sys/stat.h>

#include "mlp_kernels.h"

/* ---- problem and network ------------------------------------------------- */

enum {
  D = 12,   /* input features */
  K = 3,    /* classes (spiral arms) */
  H1 = 64,  /* hidden widths */
  H2 = 64,
  BATCH = 128,
  N_TRAIN = 2048,
  N_TEST = 1024,
  STEPS_PER_EPOCH = N_TRAIN / BATCH,
  GRAPH_CHECK_STEPS = 6
};

static const float kLearningRate = 0.05f; /* then decayed over the second half */
static const float kMomentum = 0.9f;
static const uint64_t kSeed = 2024;

#if defined(TRAIN_MLP_EMU)
static const char* const kBlasBackend =
    "cuBLAS API served by libbnorm_cublas_emu (OpenBLAS cblas_sgemm, on the CPU)";
static const char* const kGraphBackend =
    "stream capture emulated by bnorm_emu (the step's work is recorded, then replayed in order)";
#else
static const char* const kBlasBackend = "cuBLAS";
static const char* const kGraphBackend = "CUDA graph (stream capture, cudaGraphLaunch)";
#endif

/* ---- error checking ------------------------------------------------------ */

static void die(const char* what, const char* call, int line, const char* detail) {
  fprintf(stderr, "train_mlp: %s failed (line %d): %s: %s\n", call, line, what, detail);
  exit(1);
}
#define CHECK_CUDA(call)                                                         \
  do {                                                                           \
    cudaError_t e_ = (call);                                                     \
    if (e_ != cudaSuccess) die(cudaGetErrorName(e_), #call, __LINE__, cudaGetErrorString(e_)); \
  } while (0)
#define CHECK_BNORM(call)                                                        \
  do {                                                                           \
    bnormStatus_t s_ = (call);                                                   \
    if (s_ != BNORM_STATUS_SUCCESS)                                              \
      die(bnormGetStatusString(s_), #call, __LINE__, bnormGetLastErrorMessage()); \
  } while (0)
#define CHECK_CUBLAS(call)                                                       \
  do {                                                                           \
    cublasStatus_t b_ = (call);                                                  \
    if (b_ != CUBLAS_STATUS_SUCCESS)                                             \
      die(cublasGetStatusName(b_), #call, __LINE__, cublasGetStatusString(b_));  \
  } while (0)

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- random numbers (one seeded stream per use) ------------------------- */

typedef struct {
  uint64_t s;
} Rng;
static Rng rng_make(uint64_t seed, uint64_t stream) {
  Rng r;
  r.s = (seed * 0x9E3779B97F4A7C15ull) ^ (stream * 0xD1B54A32D192ED03ull) ^ 0x2545F4914F6CDD1Dull;
  if (!r.s) r.s = 1;
  return r;
}
static double uniform01(Rng* r) { /* xorshift64*, [0, 1) */
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return (double)((r->s * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static double gaussian(Rng* r) { /* Box-Muller */
  const double u = uniform01(r) + 1e-12, v = uniform01(r);
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* ---- the data: spirals seen through badly conditioned features ---------- */

typedef struct {
  double scale[D], mean[D]; /* the generator's, per feature */
  double dir[D][2];         /* each feature: a direction in the spiral plane */
} Features;

static const char* scale_group(int f) { return f < 4 ? "~1e-3" : f < 8 ? "~1e3" : "~10"; }

static void make_features(Features* fs) {
  Rng r = rng_make(kSeed, 1);
  int f;
  for (f = 0; f < D; ++f) {
    const double base = f < 4 ? 1e-3 : f < 8 ? 1e3 : 10.0;
    const double angle = 6.283185307179586 * uniform01(&r);
    fs->scale[f] = base * (0.5 + 1.5 * uniform01(&r));
    fs->mean[f] = (uniform01(&r) < 0.5 ? -1.0 : 1.0) * (5.0 + 45.0 * uniform01(&r)) * fs->scale[f];
    fs->dir[f][0] = cos(angle);
    fs->dir[f][1] = sin(angle);
  }
}

/* n points, classes in turn; point on arm c at radius t: angle 4 c + 4 t
 * (+ noise), the classic three-arm spiral. Feature f = mean + scale *
 * (projection of the point on dir_f + a little noise). */
static void make_data(const Features* fs, int n, uint64_t stream, float* x, int* y) {
  Rng r = rng_make(kSeed, stream);
  int i, f;
  for (i = 0; i < n; ++i) {
    const int c = i % K;
    const double t = uniform01(&r);
    const double a = 4.0 * c + 4.0 * t + 0.2 * gaussian(&r);
    const double p0 = t * sin(a), p1 = t * cos(a);
    for (f = 0; f < D; ++f) {
      const double v = fs->dir[f][0] * p0 + fs->dir[f][1] * p1 + 0.02 * gaussian(&r);
      x[(size_t)i * D + f] = (float)(fs->mean[f] + fs->scale[f] * v);
    }
    y[i] = c;
  }
}

/* ---- device state -------------------------------------------------------- */

/* Parameter offsets (floats) in one flat array, each 16-byte aligned, so
 * that one SGD launch updates them all and a snapshot is one copy. */
typedef struct {
  size_t w1, b1, g1, be1, w2, b2, g2, be2, w3, b3, total;
} Layout;

static size_t up4(size_t n) { return (n + 3) & ~(size_t)3; }

static Layout make_layout(void) {
  Layout l;
  size_t o = 0;
  l.w1 = o, o += up4((size_t)H1 * D);
  l.b1 = o, o += up4(H1);
  l.g1 = o, o += up4(H1);
  l.be1 = o, o += up4(H1);
  l.w2 = o, o += up4((size_t)H2 * H1);
  l.b2 = o, o += up4(H2);
  l.g2 = o, o += up4(H2);
  l.be2 = o, o += up4(H2);
  l.w3 = o, o += up4((size_t)K * H2);
  l.b3 = o, o += up4(K);
  l.total = o;
  return l;
}

/* Everything a training step changes, in one allocation (the graph check
 * compares it byte for byte): parameters, momenta, running statistics, the
 * step counters and the per-step metrics. */
typedef struct {
  size_t params, velocity, rm1, rv1, rm2, rv2, bn_step, data_step, metrics, bytes;
} StateLayout;

static size_t up16(size_t b) { return (b + 15) & ~(size_t)15; }

static StateLayout make_state_layout(const Layout* l, int max_steps) {
  StateLayout s;
  size_t o = 0;
  s.params = o, o += up16(l->total * sizeof(float));
  s.velocity = o, o += up16(l->total * sizeof(float));
  s.rm1 = o, o += up16(H1 * sizeof(float));
  s.rv1 = o, o += up16(H1 * sizeof(float));
  s.rm2 = o, o += up16(H2 * sizeof(float));
  s.rv2 = o, o += up16(H2 * sizeof(float));
  s.bn_step = o, o += up16(2 * sizeof(int64_t)); /* one counter per BN layer */
  s.data_step = o, o += up16(sizeof(int64_t));
  s.metrics = o, o += up16((size_t)max_steps * 2 * sizeof(float));
  s.bytes = o;
  return s;
}

/* Activations of one forward/backward over `rows` samples. */
typedef struct {
  int rows;
  float *x, *h1, *z1, *a1, *h2, *z2, *a2, *logits, *dlogits;
  float *da2, *dz2, *dh2, *da1, *dz1, *dh1;
  float *saved_mean1, *saved_rstd1, *saved_mean2, *saved_rstd2;
  int* y;
} Acts;

typedef struct {
  /* backends */
  bnormHandle_t bn;
  cublasHandle_t blas;
  cudaStream_t stream;
  void* blas_ws;
  void* ws;
  size_t ws_bytes;
  /* data on the device */
  float *train_x, *test_x;
  int *train_y, *test_y, *perm;
  /* the network */
  Layout l;
  StateLayout sl;
  unsigned char* state;
  float* grads;
  float* eval_metrics;
  float* lr; /* the learning rate, in device memory: the captured step reads it */
  Acts batch, eval;
  int use_bn;
  bnormConfig_t cfg;
} Ctx;

/* Copies between host and device, in order on the demo's stream (which is
 * non-blocking: a plain cudaMemcpy on the legacy default stream would not
 * wait for the work queued on it), then waiting for the stream. */
static void upload(Ctx* c, void* dst, const void* src, size_t bytes) {
  CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
  CHECK_CUDA(cudaStreamSynchronize(c->stream));
}
static void download(Ctx* c, void* dst, const void* src, size_t bytes) {
  CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
  CHECK_CUDA(cudaStreamSynchronize(c->stream));
}

#define PARAM(c, field) ((float*)((c)->state + (c)->sl.params) + (c)->l.field)
#define GRAD(c, field) ((c)->grads + (c)->l.field)
#define STATE(c, type, field) ((type*)((c)->state + (c)->sl.field))

static float* dalloc_floats(size_t n) {
  void* p = NULL;
  CHECK_CUDA(cudaMalloc(&p, n * sizeof(float)));
  return (float*)p;
}

static void acts_alloc(Acts* a, int rows) {
  const size_t r = (size_t)rows;
  memset(a, 0, sizeof *a);
  a->rows = rows;
  a->x = dalloc_floats(r * D);
  a->h1 = dalloc_floats(r * H1);
  a->z1 = dalloc_floats(r * H1);
  a->a1 = dalloc_floats(r * H1);
  a->h2 = dalloc_floats(r * H2);
  a->z2 = dalloc_floats(r * H2);
  a->a2 = dalloc_floats(r * H2);
  a->logits = dalloc_floats(r * K);
  a->dlogits = dalloc_floats(r * K);
  a->da2 = dalloc_floats(r * H2);
  a->dz2 = dalloc_floats(r * H2);
  a->dh2 = dalloc_floats(r * H2);
  a->da1 = dalloc_floats(r * H1);
  a->dz1 = dalloc_floats(r * H1);
  a->dh1 = dalloc_floats(r * H1);
  a->saved_mean1 = dalloc_floats(H1);
  a->saved_rstd1 = dalloc_floats(H1);
  a->saved_mean2 = dalloc_floats(H2);
  a->saved_rstd2 = dalloc_floats(H2);
  CHECK_CUDA(cudaMalloc((void**)&a->y, r * sizeof(int)));
}

static void acts_free(Acts* a) {
  float** f[] = {&a->x,   &a->h1,  &a->z1,  &a->a1,  &a->h2,  &a->z2,          &a->a2,
                 &a->logits, &a->dlogits, &a->da2, &a->dz2, &a->dh2, &a->da1, &a->dz1,
                 &a->dh1, &a->saved_mean1, &a->saved_rstd1, &a->saved_mean2, &a->saved_rstd2};
  size_t i;
  for (i = 0; i < sizeof f / sizeof f[0]; ++i) CHECK_CUDA(cudaFree(*f[i]));
  CHECK_CUDA(cudaFree(a->y));
}

/* ---- the network's passes ------------------------------------------------ */

/* C (m x n) = op(A) op(B), column-major, through cuBLAS. */
static void gemm(Ctx* c, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                 const float* a, int lda, const float* b, int ldb, float* out, int ldc) {
  const float one = 1.0f, zero = 0.0f;
  CHECK_CUBLAS(cublasSgemm(c->blas, ta, tb, m, n, k, &one, a, lda, b, ldb, &zero, out, ldc));
}

static bnormTensorDesc_t desc_of(int rows, int features) {
  bnormTensorDesc_t d;
  d.dtype = BNORM_DATA_FLOAT;
  d.layout = BNORM_LAYOUT_NCHW; /* spatial = 1: (rows, features), row-major */
  d.n = rows;
  d.c = features;
  d.spatial = 1;
  return d;
}

/* linear -> [BN] -> ReLU for one hidden layer. mode: 0 training (batch
 * statistics, running ones updated), 1 inference (running statistics). */
static void hidden_layer(Ctx* c, int rows, int in, int out, const float* x,
                         const float* w, const float* b, const float* gamma, const float* beta,
                         float* rm, float* rv, int64_t* bn_step, float* saved_mean,
                         float* saved_rstd, float* h, float* z, float* act, int inference) {
  const bnormTensorDesc_t desc = desc_of(rows, out);
  gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, out, rows, in, w, out, x, in, h, out);
  if (!c->use_bn) {
    CHECK_CUDA(mlp_bias_act(h, b, act, rows, out, 1, c->stream));
    return;
  }
  CHECK_CUDA(mlp_bias_act(h, b, h, rows, out, 0, c->stream));
  if (inference)
    CHECK_BNORM(bnormForwardInference(c->bn, c->stream, &desc, &c->cfg, h, z, gamma, beta, rm, rv));
  else
    CHECK_BNORM(bnormForwardTraining(c->bn, c->stream, &desc, &c->cfg, h, z, gamma, beta, rm, rv,
                                     bn_step, saved_mean, saved_rstd, c->ws, c->ws_bytes));
  CHECK_CUDA(mlp_bias_act(z, NULL, act, rows, out, 1, c->stream));
}

/* Forward over a->rows samples of x with labels y; metrics to metrics[2 *
 * (*step)] (or metrics[0..1] when step is NULL). */
static void forward(Ctx* c, Acts* a, const float* x, const int* y, int inference,
                    float* metrics, const int64_t* step) {
  int64_t* bn_step = STATE(c, int64_t, bn_step);
  hidden_layer(c, a->rows, D, H1, x, PARAM(c, w1), PARAM(c, b1), PARAM(c, g1), PARAM(c, be1),
               STATE(c, float, rm1), STATE(c, float, rv1), bn_step, a->saved_mean1,
               a->saved_rstd1, a->h1, a->z1, a->a1, inference);
  hidden_layer(c, a->rows, H1, H2, a->a1, PARAM(c, w2), PARAM(c, b2), PARAM(c, g2),
               PARAM(c, be2), STATE(c, float, rm2), STATE(c, float, rv2), bn_step + 1,
               a->saved_mean2, a->saved_rstd2, a->h2, a->z2, a->a2, inference);
  gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, K, a->rows, H2, PARAM(c, w3), K, a->a2, H2, a->logits, K);
  CHECK_CUDA(mlp_bias_act(a->logits, PARAM(c, b3), a->logits, a->rows, K, 0, c->stream));
  CHECK_CUDA(mlp_softmax_xent(a->logits, y, a->rows, K, inference ? NULL : a->dlogits, metrics,
                              step, c->stream));
}

/* Gradients of every parameter from a training forward over a->x. */
static void backward(Ctx* c, Acts* a, const float* x) {
  const int B = a->rows;
  bnormTensorDesc_t d1 = desc_of(B, H1), d2 = desc_of(B, H2);
  gemm(c, CUBLAS_OP_N, CUBLAS_OP_T, K, H2, B, a->dlogits, K, a->a2, H2, GRAD(c, w3), K);
  CHECK_CUDA(mlp_column_sums(a->dlogits, B, K, GRAD(c, b3), c->stream));
  gemm(c, CUBLAS_OP_T, CUBLAS_OP_N, H2, B, K, PARAM(c, w3), K, a->dlogits, K, a->da2, H2);
  if (c->use_bn) {
    CHECK_CUDA(mlp_relu_backward(a->da2, a->a2, a->dz2, (int64_t)B * H2, c->stream));
    CHECK_BNORM(bnormBackward(c->bn, c->stream, &d2, &c->cfg, a->h2, a->dz2, a->dh2,
                              PARAM(c, g2), a->saved_mean2, a->saved_rstd2, GRAD(c, g2),
                              GRAD(c, be2), c->ws, c->ws_bytes));
  } else {
    CHECK_CUDA(mlp_relu_backward(a->da2, a->a2, a->dh2, (int64_t)B * H2, c->stream));
  }
  gemm(c, CUBLAS_OP_N, CUBLAS_OP_T, H2, H1, B, a->dh2, H2, a->a1, H1, GRAD(c, w2), H2);
  CHECK_CUDA(mlp_column_sums(a->dh2, B, H2, GRAD(c, b2), c->stream));
  gemm(c, CUBLAS_OP_T, CUBLAS_OP_N, H1, B, H2, PARAM(c, w2), H2, a->dh2, H2, a->da1, H1);
  if (c->use_bn) {
    CHECK_CUDA(mlp_relu_backward(a->da1, a->a1, a->dz1, (int64_t)B * H1, c->stream));
    CHECK_BNORM(bnormBackward(c->bn, c->stream, &d1, &c->cfg, a->h1, a->dz1, a->dh1,
                              PARAM(c, g1), a->saved_mean1, a->saved_rstd1, GRAD(c, g1),
                              GRAD(c, be1), c->ws, c->ws_bytes));
  } else {
    CHECK_CUDA(mlp_relu_backward(a->da1, a->a1, a->dh1, (int64_t)B * H1, c->stream));
  }
  gemm(c, CUBLAS_OP_N, CUBLAS_OP_T, H1, D, B, a->dh1, H1, x, D, GRAD(c, w1), H1);
  CHECK_CUDA(mlp_column_sums(a->dh1, B, H1, GRAD(c, b1), c->stream));
}

/* One training step, all on the stream, nothing read back: legal inside
 * stream capture. Which batch and where its metrics go come from the device
 * step counter, which the update advances. */
static void train_step(Ctx* c) {
  Acts* a = &c->batch;
  int64_t* step = STATE(c, int64_t, data_step);
  CHECK_CUDA(mlp_gather(c->train_x, c->train_y, c->perm, step, STEPS_PER_EPOCH, BATCH, D, a->x,
                        a->y, c->stream));
  forward(c, a, a->x, a->y, 0, STATE(c, float, metrics), step);
  backward(c, a, a->x);
  CHECK_CUDA(mlp_sgd(STATE(c, float, params), STATE(c, float, velocity), c->grads,
                     (int64_t)c->l.total, c->lr, kMomentum, step, c->stream));
}

/* Captures one step into an executable graph. */
static cudaGraphExec_t capture_step(Ctx* c, size_t* nodes) {
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  CHECK_CUDA(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeGlobal));
  train_step(c);
  CHECK_CUDA(cudaStreamEndCapture(c->stream, &graph));
  CHECK_CUDA(cudaGraphGetNodes(graph, NULL, nodes));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  CHECK_CUDA(cudaGraphDestroy(graph));
  return exec;
}

/* ---- initial state ------------------------------------------------------- */

/* He-normal weights, zero biases, gamma 1, beta 0, running mean 0 and
 * variance 1, zero momenta and counters: the same for every run. */
static void init_state(Ctx* c) {
  unsigned char* host = (unsigned char*)calloc(1, c->sl.bytes);
  float* p = (float*)(host + c->sl.params);
  Rng r = rng_make(kSeed, 7);
  size_t i;
  if (!host) die("out of memory", "calloc", __LINE__, "state");
  for (i = 0; i < (size_t)H1 * D; ++i) p[c->l.w1 + i] = (float)(gaussian(&r) * sqrt(2.0 / D));
  for (i = 0; i < (size_t)H2 * H1; ++i) p[c->l.w2 + i] = (float)(gaussian(&r) * sqrt(2.0 / H1));
  for (i = 0; i < (size_t)K * H2; ++i) p[c->l.w3 + i] = (float)(gaussian(&r) * sqrt(2.0 / H2));
  for (i = 0; i < H1; ++i) p[c->l.g1 + i] = 1.0f;
  for (i = 0; i < H2; ++i) p[c->l.g2 + i] = 1.0f;
  for (i = 0; i < H1; ++i) ((float*)(host + c->sl.rv1))[i] = 1.0f;
  for (i = 0; i < H2; ++i) ((float*)(host + c->sl.rv2))[i] = 1.0f;
  upload(c, c->state, host, c->sl.bytes);
  CHECK_CUDA(cudaMemsetAsync(c->grads, 0, c->l.total * sizeof(float), c->stream));
  upload(c, c->lr, &kLearningRate, sizeof(float));
  free(host);
}

/* The schedule: kLearningRate for the first half of the epochs, then a
 * linear decay to a twentieth of it at the last epoch, so that the weights
 * settle and the running statistics (which trail the moving weights) catch
 * up with the features they average. */
static float learning_rate(int epoch, int epochs) {
  const int half = epochs / 2;
  if (epoch < half || epochs - 1 == half) return kLearningRate;
  return kLearningRate *
         (1.0f - 0.95f * (float)(epoch - half) / (float)(epochs - 1 - half));
}

/* A fresh permutation of the training set for each epoch, from the run's
 * seeded stream: every run sees the same batches. */
static void shuffle_upload(Ctx* c, Rng* r) {
  static int perm[N_TRAIN];
  int i;
  for (i = 0; i < N_TRAIN; ++i) perm[i] = i;
  for (i = N_TRAIN - 1; i > 0; --i) {
    const int j = (int)(uniform01(r) * (i + 1));
    const int t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  upload(c, c->perm, perm, sizeof perm);
}

/* ---- the graph check ----------------------------------------------------- */

/* k eager steps and k replays of a captured step from the same state must
 * leave the same bytes: parameters, momenta, running statistics, counters,
 * per-step metrics. Returns 1 when they do. */
static int graph_check(Ctx* c, bnormAverage_t average, const char* name) {
  unsigned char* start = (unsigned char*)malloc(c->sl.bytes);
  unsigned char* eager = (unsigned char*)malloc(c->sl.bytes);
  unsigned char* replay = (unsigned char*)malloc(c->sl.bytes);
  static const struct {
    const char* what;
    int kind; /* 0 float, 1 int64 */
  } kParts[] = {{"parameters", 0},        {"momenta", 0},          {"running_mean (BN1)", 0},
                {"running_var (BN1)", 0}, {"running_mean (BN2)", 0}, {"running_var (BN2)", 0},
                {"BN step counters", 1},  {"data step counter", 1}, {"per-step loss/accuracy", 0}};
  size_t offsets[10], nodes = 0, part;
  int ok = 1, i;
  Rng r = rng_make(kSeed, 100);
  cudaGraphExec_t exec;
  int64_t counters[3];
  if (!start || !eager || !replay) die("out of memory", "malloc", __LINE__, "graph check");
  offsets[0] = c->sl.params;
  offsets[1] = c->sl.velocity;
  offsets[2] = c->sl.rm1;
  offsets[3] = c->sl.rv1;
  offsets[4] = c->sl.rm2;
  offsets[5] = c->sl.rv2;
  offsets[6] = c->sl.bn_step;
  offsets[7] = c->sl.data_step;
  offsets[8] = c->sl.metrics;
  offsets[9] = c->sl.bytes;

  c->use_bn = 1;
  c->cfg.average = average;
  init_state(c);
  shuffle_upload(c, &r);
  download(c, start, c->state, c->sl.bytes);

  for (i = 0; i < GRAPH_CHECK_STEPS; ++i) train_step(c);
  CHECK_CUDA(cudaStreamSynchronize(c->stream));
  download(c, eager, c->state, c->sl.bytes);

  upload(c, c->state, start, c->sl.bytes);
  exec = capture_step(c, &nodes);
  /* Capturing ran nothing: the state is still the starting one. */
  download(c, replay, c->state, c->sl.bytes);
  if (memcmp(replay, start, c->sl.bytes) != 0) {
    printf("  FAIL: capturing the step changed the state (work ran during capture)\n");
    ok = 0;
  }
  for (i = 0; i < GRAPH_CHECK_STEPS; ++i) CHECK_CUDA(cudaGraphLaunch(exec, c->stream));
  CHECK_CUDA(cudaStreamSynchronize(c->stream));
  download(c, replay, c->state, c->sl.bytes);
  CHECK_CUDA(cudaGraphExecDestroy(exec));

  memcpy(counters, eager + c->sl.bn_step, 2 * sizeof(int64_t));
  memcpy(counters + 2, eager + c->sl.data_step, sizeof(int64_t));
  printf("  %-11s (%zu graph nodes per step): %d eager steps vs %d replays; step counters "
         "after: BN1 %lld, BN2 %lld, data %lld\n",
         name, nodes, GRAPH_CHECK_STEPS, GRAPH_CHECK_STEPS, (long long)counters[0],
         (long long)counters[1], (long long)counters[2]);
  if (counters[2] != GRAPH_CHECK_STEPS ||
      (average == BNORM_AVERAGE_CUMULATIVE &&
       (counters[0] != GRAPH_CHECK_STEPS || counters[1] != GRAPH_CHECK_STEPS))) {
    printf("  FAIL: the eager steps did not advance the counters as expected\n");
    ok = 0;
  }
  for (part = 0; part < 9; ++part) {
    const size_t lo = offsets[part];
    const size_t hi = part == 8 ? lo + (size_t)GRAPH_CHECK_STEPS * 2 * sizeof(float)
                                : offsets[part + 1];
    const size_t bytes = hi - lo;
    if (memcmp(eager + lo, replay + lo, bytes) == 0) {
      printf("    %-24s bitwise identical (%zu bytes)\n", kParts[part].what, bytes);
    } else {
      size_t j, differ = 0;
      double worst = 0.0;
      ok = 0;
      if (kParts[part].kind == 0) {
        for (j = 0; j + 4 <= bytes; j += 4) {
          float x, y;
          memcpy(&x, eager + lo + j, 4);
          memcpy(&y, replay + lo + j, 4);
          if (memcmp(&x, &y, 4) != 0) {
            ++differ;
            if (fabs((double)x - (double)y) > worst) worst = fabs((double)x - (double)y);
          }
        }
        printf("    %-24s FAIL: %zu of %zu floats differ (largest difference %.3g)\n",
               kParts[part].what, differ, bytes / 4, worst);
      } else {
        printf("    %-24s FAIL: counters differ\n", kParts[part].what);
      }
    }
  }
  free(start);
  free(eager);
  free(replay);
  return ok;
}

/* ---- training and evaluation --------------------------------------------- */

typedef struct {
  double loss[64], acc[64], test_acc[64];
  double test_acc_batch[64]; /* BN only: test set normalized by its own statistics */
  int epochs;
  int diverged_epoch; /* first epoch with a non-finite loss, or -1 */
  double seconds;
  size_t nodes;
} Curve;

/* Evaluation over a whole set (test or training) in one forward:
 * inference mode (running statistics) or, for contrast, the set's own
 * batch statistics (bnormForwardTraining with no running statistics). */
static void evaluate(Ctx* c, const float* x, const int* y, int rows, int inference,
                     float out[2]) {
  Acts* a = &c->eval;
  const int saved_rows = a->rows;
  a->rows = rows;
  if (!inference) {
    /* batch statistics of this set, running statistics untouched */
    const bnormTensorDesc_t d1 = desc_of(rows, H1), d2 = desc_of(rows, H2);
    gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, H1, rows, D, PARAM(c, w1), H1, x, D, a->h1, H1);
    CHECK_CUDA(mlp_bias_act(a->h1, PARAM(c, b1), a->h1, rows, H1, 0, c->stream));
    CHECK_BNORM(bnormForwardTraining(c->bn, c->stream, &d1, &c->cfg, a->h1, a->z1, PARAM(c, g1),
                                     PARAM(c, be1), NULL, NULL, NULL, NULL, NULL, c->ws,
                                     c->ws_bytes));
    CHECK_CUDA(mlp_bias_act(a->z1, NULL, a->a1, rows, H1, 1, c->stream));
    gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, H2, rows, H1, PARAM(c, w2), H2, a->a1, H1, a->h2, H2);
    CHECK_CUDA(mlp_bias_act(a->h2, PARAM(c, b2), a->h2, rows, H2, 0, c->stream));
    CHECK_BNORM(bnormForwardTraining(c->bn, c->stream, &d2, &c->cfg, a->h2, a->z2, PARAM(c, g2),
                                     PARAM(c, be2), NULL, NULL, NULL, NULL, NULL, c->ws,
                                     c->ws_bytes));
    CHECK_CUDA(mlp_bias_act(a->z2, NULL, a->a2, rows, H2, 1, c->stream));
    gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, K, rows, H2, PARAM(c, w3), K, a->a2, H2, a->logits, K);
    CHECK_CUDA(mlp_bias_act(a->logits, PARAM(c, b3), a->logits, rows, K, 0, c->stream));
    CHECK_CUDA(mlp_softmax_xent(a->logits, y, rows, K, NULL, c->eval_metrics, NULL, c->stream));
  } else {
    forward(c, a, x, y, 1, c->eval_metrics, NULL);
  }
  download(c, out, c->eval_metrics, 2 * sizeof(float));
  a->rows = saved_rows;
}

static void train(Ctx* c, int use_bn, int epochs, const char* label, Curve* curve) {
  Rng r = rng_make(kSeed, 100); /* the batch order: the same for every run */
  static float metrics[2 * 64 * STEPS_PER_EPOCH];
  cudaGraphExec_t exec;
  double t0;
  int e, s;
  c->use_bn = use_bn;
  c->cfg.average = BNORM_AVERAGE_EXPONENTIAL;
  init_state(c);
  exec = capture_step(c, &curve->nodes);
  curve->epochs = epochs;
  curve->diverged_epoch = -1;
  printf("\n%s (%zu graph nodes per step)\n", label, curve->nodes);
  if (use_bn)
    printf("  epoch  learning rate   train loss  train acc   test acc: inference mode (running "
           "statistics) | batch statistics\n");
  else
    printf("  epoch  learning rate   train loss  train acc   test acc\n");
  t0 = now_seconds();
  for (e = 0; e < epochs; ++e) {
    double loss = 0.0, acc = 0.0;
    float test[2], test_batch[2] = {0.0f, 0.0f};
    const float lr = learning_rate(e, epochs);
    upload(c, c->lr, &lr, sizeof lr);
    shuffle_upload(c, &r);
    for (s = 0; s < STEPS_PER_EPOCH; ++s) CHECK_CUDA(cudaGraphLaunch(exec, c->stream));
    CHECK_CUDA(cudaStreamSynchronize(c->stream));
    download(c, metrics, STATE(c, float, metrics) + 2 * e * STEPS_PER_EPOCH,
                          2 * STEPS_PER_EPOCH * sizeof(float));
    for (s = 0; s < STEPS_PER_EPOCH; ++s) {
      loss += metrics[2 * s];
      acc += metrics[2 * s + 1];
    }
    loss /= STEPS_PER_EPOCH;
    acc /= STEPS_PER_EPOCH;
    evaluate(c, c->test_x, c->test_y, N_TEST, 1, test);
    if (use_bn) evaluate(c, c->test_x, c->test_y, N_TEST, 0, test_batch);
    curve->test_acc_batch[e] = test_batch[1];
    curve->loss[e] = loss;
    curve->acc[e] = acc;
    curve->test_acc[e] = test[1];
    if (!isfinite(loss) && curve->diverged_epoch < 0) curve->diverged_epoch = e + 1;
    if (use_bn)
      printf("  %5d  %13.4g  %11.4g  %9.3f  %9.3f | %.3f\n", e + 1, (double)lr, loss, acc,
             (double)test[1], (double)test_batch[1]);
    else
      printf("  %5d  %13.4g  %11.4g  %9.3f  %9.3f\n", e + 1, (double)lr, loss, acc,
             (double)test[1]);
  }
  curve->seconds = now_seconds() - t0;
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  printf("  %d steps in %.2f s (%.2f ms per step, with per-epoch evaluation)\n",
         epochs * STEPS_PER_EPOCH, curve->seconds,
         1e3 * curve->seconds / (epochs * STEPS_PER_EPOCH));
  if (curve->diverged_epoch > 0)
    printf("  diverged: the loss is not finite from epoch %d on\n", curve->diverged_epoch);
  if (use_bn)
    printf("  (inference-mode accuracy trails while the weights move fast: BN1's features have "
           "means tens\n  to a hundred std from zero, so each update shifts them by many std and "
           "the running average,\n  over about the last 10 steps, lags behind; it catches up as "
           "the learning rate decays)\n");
}

/* Per-channel mean and unbiased variance, in double, of a (rows x cols)
 * row-major matrix read back from the device. */
static void column_stats(Ctx* c, const float* dev, int rows, int cols, double* mean,
                         double* var) {
  float* h = (float*)malloc((size_t)rows * cols * sizeof(float));
  int r, j;
  if (!h) die("out of memory", "malloc", __LINE__, "statistics");
  download(c, h, dev, (size_t)rows * cols * sizeof(float));
  for (j = 0; j < cols; ++j) {
    double s = 0.0, q = 0.0;
    for (r = 0; r < rows; ++r) s += h[(size_t)r * cols + j];
    mean[j] = s / rows;
    for (r = 0; r < rows; ++r) {
      const double d = h[(size_t)r * cols + j] - mean[j];
      q += d * d;
    }
    var[j] = q / (rows - 1);
  }
  free(h);
}

/* The BN network's running statistics, the true statistics of the features
 * they stand for, and its accuracy in inference mode, at one moment. */
typedef struct {
  float rm[2][64], rv[2][64];    /* running mean, variance: BN1, BN2 */
  double mean[2][64], var[2][64]; /* true: over the training set */
  double worst_mean[2], worst_var[2]; /* per layer: max |rm - mean| / std, |rv / var - 1| */
  float test[2], train[2];        /* inference mode: loss, accuracy */
} StatsSnapshot;

/* True statistics: the pre-BN activations over the whole training set as
 * the network computes them in inference mode (for BN2 that depends on
 * BN1's running statistics), in double, variance unbiased. */
static void snapshot(Ctx* c, StatsSnapshot* s) {
  int layer, j;
  const int width[2] = {H1, H2};
  evaluate(c, c->test_x, c->test_y, N_TEST, 1, s->test);
  evaluate(c, c->train_x, c->train_y, N_TRAIN, 1, s->train); /* leaves h1, h2 in eval */
  column_stats(c, c->eval.h1, N_TRAIN, H1, s->mean[0], s->var[0]);
  column_stats(c, c->eval.h2, N_TRAIN, H2, s->mean[1], s->var[1]);
  download(c, s->rm[0], STATE(c, float, rm1), H1 * sizeof(float));
  download(c, s->rv[0], STATE(c, float, rv1), H1 * sizeof(float));
  download(c, s->rm[1], STATE(c, float, rm2), H2 * sizeof(float));
  download(c, s->rv[1], STATE(c, float, rv2), H2 * sizeof(float));
  for (layer = 0; layer < 2; ++layer) {
    s->worst_mean[layer] = s->worst_var[layer] = 0.0;
    for (j = 0; j < width[layer]; ++j) {
      const double dm = fabs(s->rm[layer][j] - s->mean[layer][j]) / sqrt(s->var[layer][j]);
      const double dv = fabs(s->rv[layer][j] / s->var[layer][j] - 1.0);
      if (!(dm <= s->worst_mean[layer])) s->worst_mean[layer] = dm; /* NaN counts as worst */
      if (!(dv <= s->worst_var[layer])) s->worst_var[layer] = dv;
    }
  }
}

/* After training: reset the BN step counters and run one pass over the
 * training set, forward only, in training mode with the cumulative average
 * (BNORM_AVERAGE_CUMULATIVE): the running statistics become the plain mean
 * of the epoch's batch statistics under the final weights (PyTorch's
 * momentum=None, SWA's BN update). No parameter changes. */
static void recalibrate(Ctx* c) {
  Acts* a = &c->batch;
  int64_t* step = STATE(c, int64_t, data_step);
  int s;
  c->cfg.average = BNORM_AVERAGE_CUMULATIVE;
  CHECK_CUDA(cudaMemsetAsync(STATE(c, int64_t, bn_step), 0, 2 * sizeof(int64_t), c->stream));
  for (s = 0; s < STEPS_PER_EPOCH; ++s) {
    CHECK_CUDA(mlp_gather(c->train_x, c->train_y, c->perm, step, STEPS_PER_EPOCH, BATCH, D, a->x,
                          a->y, c->stream));
    forward(c, a, a->x, a->y, 0, STATE(c, float, metrics), step);
    CHECK_CUDA(mlp_advance_step(step, c->stream));
  }
  CHECK_CUDA(cudaStreamSynchronize(c->stream));
  c->cfg.average = BNORM_AVERAGE_EXPONENTIAL;
}

static void print_stats(const StatsSnapshot* trained, const StatsSnapshot* recal, FILE* csv) {
  int layer, j;
  const int width[2] = {H1, H2};
  printf("  layer ch |   running mean   true mean | recalibrated   true mean |  running var    "
         "true var | recalibrated    true var\n");
  for (layer = 0; layer < 2; ++layer)
    for (j = 0; j < width[layer]; ++j) {
      if (j < 4)
        printf("  BN%d %4d | %14.7g %11.7g | %12.7g %11.7g | %11.6g %11.6g | %12.6g %11.6g\n",
               layer + 1, j, (double)trained->rm[layer][j], trained->mean[layer][j],
               (double)recal->rm[layer][j], recal->mean[layer][j], (double)trained->rv[layer][j],
               trained->var[layer][j], (double)recal->rv[layer][j], recal->var[layer][j]);
      if (csv)
        fprintf(csv, "BN%d,%d,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g\n", layer + 1, j,
                (double)trained->rm[layer][j], trained->mean[layer][j],
                (double)trained->rv[layer][j], trained->var[layer][j],
                (double)recal->rm[layer][j], recal->mean[layer][j], (double)recal->rv[layer][j],
                recal->var[layer][j]);
      if (j == 4) printf("  BN%d  ... | (%d channels; all in train_mlp_stats.csv)\n", layer + 1,
                         width[layer]);
    }
}

/* ---- output files ---------------------------------------------------------- */

/* One row per epoch; the last column (inference accuracy with the
 * statistics recalibrated after training) only on the last row. */
static void write_csv(const char* path, const Curve* nobn, const Curve* bn, double recal_acc) {
  FILE* f = fopen(path, "w");
  int e;
  if (!f) die("cannot write", "fopen", __LINE__, path);
  fprintf(f,
          "epoch,learning_rate,nobn_train_loss,nobn_train_acc,nobn_test_acc,bn_train_loss,"
          "bn_train_acc,bn_test_acc_inference,bn_test_acc_batch_stats,"
          "bn_test_acc_inference_recalibrated\n");
  for (e = 0; e < bn->epochs; ++e) {
    char nobn_loss[32];
    if (isfinite(nobn->loss[e]))
      snprintf(nobn_loss, sizeof nobn_loss, "%.9g", nobn->loss[e]);
    else
      snprintf(nobn_loss, sizeof nobn_loss, "nan"); /* gnuplot: missing */
    fprintf(f, "%d,%.6g,%s,%.6f,%.6f,%.9g,%.6f,%.6f,%.6f,", e + 1,
            (double)learning_rate(e, bn->epochs), nobn_loss, nobn->acc[e], nobn->test_acc[e],
            bn->loss[e], bn->acc[e], bn->test_acc[e], bn->test_acc_batch[e]);
    if (e == bn->epochs - 1)
      fprintf(f, "%.6f\n", recal_acc);
    else
      fprintf(f, "nan\n");
  }
  fclose(f);
}

static int plot(const char* dir, const char* backend, const Curve* nobn) {
  char gp[4096], png[4096], csv[4096], cmd[8400];
  FILE* f;
  snprintf(gp, sizeof gp, "%s/train_mlp.gp", dir);
  snprintf(png, sizeof png, "%s/train_mlp.png", dir);
  snprintf(csv, sizeof csv, "%s/train_mlp.csv", dir);
  f = fopen(gp, "w");
  if (!f) die("cannot write", "fopen", __LINE__, gp);
  fprintf(f,
          "# train_mlp's curves (written by train_mlp; run: gnuplot train_mlp.gp)\n"
          "set terminal pngcairo size 1200,480 font 'sans,10'\n"
          "set output '%s'\n"
          "set datafile separator ','\n"
          "set datafile missing 'nan'\n"
          "set key autotitle columnhead\n"
          "set multiplot layout 1,2 title 'MLP 12-64-64-3 on badly conditioned spirals: "
          "SGD with and without bnorm  [%s]'\n"
          "set xlabel 'epoch'\n"
          "set xrange [0.5:%d.5]\n"
          "set grid\n"
          "set title 'training loss (cross-entropy, log scale)'\n"
          "set logscale y\n"
          "set format y '10^{%%T}'\n"
          "set key top right\n"
          "plot '%s' using 1:3 with linespoints lw 2 pt 7 ps 0.6 lc rgb '#9400d3' title 'without BN%s', \\\n"
          "     '' using 1:6 with linespoints lw 2 pt 7 ps 0.6 lc rgb '#1f77b4' title 'with bnorm (training mode)'\n"
          "unset logscale y\n"
          "set format y '%%g'\n"
          "set title 'accuracy'\n"
          "set yrange [0:1.55]\n"
          "set ytics 0,0.2,1\n"
          "set key top left reverse Left\n"
          "plot '%s' using 1:4 with linespoints lw 2 pt 7 ps 0.6 lc rgb '#9400d3' title 'without BN: train', \\\n"
          "     '' using 1:5 with lines lw 1.5 dt 2 lc rgb '#9400d3' title 'without BN: test', \\\n"
          "     '' using 1:7 with linespoints lw 2 pt 7 ps 0.6 lc rgb '#1f77b4' title 'bnorm: train (batch statistics)', \\\n"
          "     '' using 1:9 with lines lw 1.5 dt 2 lc rgb '#ff7f0e' title 'bnorm: test (batch statistics)', \\\n"
          "     '' using 1:8 with linespoints lw 2 pt 5 ps 0.6 lc rgb '#d62728' title 'bnorm: test, inference (running statistics)', \\\n"
          "     '' using 1:10 with points pt 6 ps 2.5 lw 2 lc rgb 'black' title 'bnorm: test, inference (recalibrated statistics)'\n"
          "unset multiplot\n",
          png, backend, nobn->epochs, csv, nobn->diverged_epoch > 0 ? " (diverged: loss not finite)" : "",
          csv);
  fclose(f);
  snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>&1", gp);
  f = popen(cmd, "r");
  if (f) {
    char line[512];
    while (fgets(line, sizeof line, f)) printf("  gnuplot: %s", line);
    if (pclose(f) == 0) {
      printf("  wrote %s\n", png);
      return 1;
    }
  }
  printf("  gnuplot failed or is not installed (Debian: gnuplot-nox): no PNG; the curves are "
         "in %s\n",
         csv);
  return 0;
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char** argv) {
  const double t_start = now_seconds();
  const char* out_dir = ".";
  int epochs = 12, check = 0, device_count = 0, i, f, ok = 1;
  struct cudaDeviceProp prop;
  Ctx ctx;
  Ctx* c = &ctx;
  Features fs;
  float *host_train_x, *host_test_x;
  int *host_train_y, *host_test_y;
  Curve nobn, bn;
  size_t bytes;
  double t_check;
  char backend[300], path[4096];
  float batch_test[2];
  static StatsSnapshot trained, recal;
  FILE* stats_csv;
  bnormTensorDesc_t dmax;
  const bnormConfig_t default_cfg = BNORM_CONFIG_INITIALIZER;

  for (i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--out") && i + 1 < argc)
      out_dir = argv[++i];
    else if (!strcmp(argv[i], "--epochs") && i + 1 < argc)
      epochs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--check"))
      check = 1;
    else {
      fprintf(stderr, "usage: %s [--out DIR] [--epochs N (1..64)] [--check]\n", argv[0]);
      return 2;
    }
  }
  if (epochs < 1 || epochs > 64) {
    fprintf(stderr, "train_mlp: --epochs must be 1..64\n");
    return 2;
  }

  if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "train_mlp: cannot create the output folder %s\n", out_dir);
    return 1;
  }

  /* ---- backend ---- */
  {
    const cudaError_t e = cudaGetDeviceCount(&device_count);
    if (e != cudaSuccess || device_count < 1) {
      /* No device (or no driver at all): a distinct status, so a test
       * runner can report the run as skipped rather than passed or failed. */
      const int no_device = (e == cudaSuccess || e == cudaErrorNoDevice ||
                             e == cudaErrorInsufficientDriver);
      fprintf(stderr,
              "train_mlp: no CUDA device is available (%s). This binary runs on a GPU; run "
              "train_mlp_emu for the CPU emulator.\n",
              e == cudaSuccess ? "no device found" : cudaGetErrorString(e));
      return no_device ? TRAIN_MLP_EXIT_NO_DEVICE : 1;
    }
  }
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  snprintf(backend, sizeof backend, "%s", prop.name);
  printf("backend: %s (compute capability %d.%d, %d SMs)%s\n", prop.name, prop.major,
         prop.minor, prop.multiProcessorCount,
#if defined(TRAIN_MLP_EMU)
         " -- every kernel runs on the CPU"
#else
         ""
#endif
  );
  printf("matrix products: %s\nbatch norm: bnorm %d.%d.%d\nstep replay: %s\n", kBlasBackend,
         bnormGetVersion() / 10000, bnormGetVersion() / 100 % 100, bnormGetVersion() % 100,
         kGraphBackend);

  memset(&ctx, 0, sizeof ctx);
  c->cfg = default_cfg;
  CHECK_BNORM(bnormCreate(&c->bn));
  CHECK_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  CHECK_CUBLAS(cublasCreate(&c->blas));
  CHECK_CUBLAS(cublasSetStream(c->blas, c->stream));
  /* A workspace of our own, so that cuBLAS allocates nothing during capture
   * (32 MiB: NVIDIA's recommendation for Hopper). */
  CHECK_CUDA(cudaMalloc(&c->blas_ws, (size_t)32 << 20));
  CHECK_CUBLAS(cublasSetWorkspace(c->blas, c->blas_ws, (size_t)32 << 20));

  /* ---- data ---- */
  make_features(&fs);
  host_train_x = (float*)malloc((size_t)N_TRAIN * D * sizeof(float));
  host_test_x = (float*)malloc((size_t)N_TEST * D * sizeof(float));
  host_train_y = (int*)malloc((size_t)N_TRAIN * sizeof(int));
  host_test_y = (int*)malloc((size_t)N_TEST * sizeof(int));
  if (!host_train_x || !host_test_x || !host_train_y || !host_test_y)
    die("out of memory", "malloc", __LINE__, "data");
  make_data(&fs, N_TRAIN, 2, host_train_x, host_train_y);
  make_data(&fs, N_TEST, 3, host_test_x, host_test_y);
  printf("\ndata: %d training and %d test samples, %d classes (three interleaved spirals), "
         "%d features:\n",
         N_TRAIN, N_TEST, K, D);
  printf("  feature  scale        mean          std   |mean|/std\n");
  for (f = 0; f < D; ++f) {
    double s = 0.0, q = 0.0, m;
    for (i = 0; i < N_TRAIN; ++i) s += host_train_x[(size_t)i * D + f];
    m = s / N_TRAIN;
    for (i = 0; i < N_TRAIN; ++i) {
      const double d = host_train_x[(size_t)i * D + f] - m;
      q += d * d;
    }
    q = sqrt(q / (N_TRAIN - 1));
    printf("  %7d  %-6s %12.5g %12.5g %10.1f\n", f, scale_group(f), m, q, fabs(m) / q);
  }

  CHECK_CUDA(cudaMalloc((void**)&c->train_x, (size_t)N_TRAIN * D * sizeof(float)));
  CHECK_CUDA(cudaMalloc((void**)&c->test_x, (size_t)N_TEST * D * sizeof(float)));
  CHECK_CUDA(cudaMalloc((void**)&c->train_y, (size_t)N_TRAIN * sizeof(int)));
  CHECK_CUDA(cudaMalloc((void**)&c->test_y, (size_t)N_TEST * sizeof(int)));
  CHECK_CUDA(cudaMalloc((void**)&c->perm, (size_t)N_TRAIN * sizeof(int)));
  upload(c, c->train_x, host_train_x, (size_t)N_TRAIN * D * sizeof(float));
  upload(c, c->test_x, host_test_x, (size_t)N_TEST * D * sizeof(float));
  upload(c, c->train_y, host_train_y, (size_t)N_TRAIN * sizeof(int));
  upload(c, c->test_y, host_test_y, (size_t)N_TEST * sizeof(int));

  /* ---- network state and buffers ---- */
  c->l = make_layout();
  /* metrics for every training step and the recalibration pass */
  c->sl = make_state_layout(&c->l, (epochs + 1) * STEPS_PER_EPOCH);
  CHECK_CUDA(cudaMalloc((void**)&c->state, c->sl.bytes));
  c->grads = dalloc_floats(c->l.total);
  c->eval_metrics = dalloc_floats(2);
  c->lr = dalloc_floats(1);
  acts_alloc(&c->batch, BATCH);
  acts_alloc(&c->eval, N_TRAIN); /* the largest evaluation: the training set */
  /* One workspace for every bnorm call: the largest answer of the size
   * queries over every shape the demo normalizes. */
  {
    static const int kRows[3] = {BATCH, N_TEST, N_TRAIN};
    static const int kWidth[2] = {H1, H2};
    int r, w;
    bytes = 0;
    for (r = 0; r < 3; ++r)
      for (w = 0; w < 2; ++w) {
        size_t fwd = 0, bwd = 0;
        dmax = desc_of(kRows[r], kWidth[w]);
        CHECK_BNORM(bnormGetForwardTrainingWorkspaceSize(c->bn, &dmax, &c->cfg, &fwd));
        CHECK_BNORM(bnormGetBackwardWorkspaceSize(c->bn, &dmax, &c->cfg, &bwd));
        if (fwd > bytes) bytes = fwd;
        if (bwd > bytes) bytes = bwd;
      }
  }
  c->ws_bytes = bytes;
  if (bytes) CHECK_CUDA(cudaMalloc(&c->ws, bytes));

  /* ---- 1. graph replay == eager steps, bitwise ---- */
  printf("\ngraph check: one training step (with bnorm) captured once and replayed, against "
         "eager steps from the same state\n");
  t_check = now_seconds();
  ok &= graph_check(c, BNORM_AVERAGE_EXPONENTIAL, "exponential");
  ok &= graph_check(c, BNORM_AVERAGE_CUMULATIVE, "cumulative");
  t_check = now_seconds() - t_check;
  printf("  %s (%.2f s)\n", ok ? "passed: replays equal eager steps bitwise" : "FAILED", t_check);

  /* ---- 2. the two training runs ---- */
  train(c, 0, epochs, "without batch norm: linear -> ReLU, SGD with momentum 0.9", &nobn);
  train(c, 1, epochs, "with bnorm: linear -> BN (training mode) -> ReLU, same seed, same SGD",
        &bn);

  /* ---- 3. the trained BN network in inference mode ---- */
  snapshot(c, &trained);
  evaluate(c, c->test_x, c->test_y, N_TEST, 0, batch_test);
  recalibrate(c);
  snapshot(c, &recal);
  printf("\ninference mode (bnormForwardInference from the running statistics), trained BN "
         "network:\n");
  printf("  running statistics from training (exponential average, factor %.2g):\n"
         "      test accuracy %.4f (loss %.4f), training-set accuracy %.4f\n",
         c->cfg.exponential_average_factor, (double)trained.test[1], (double)trained.test[0],
         (double)trained.train[1]);
  printf("  recalibrated: one forward pass over the training set, cumulative average "
         "(%d batches):\n"
         "      test accuracy %.4f (loss %.4f), training-set accuracy %.4f\n",
         STEPS_PER_EPOCH, (double)recal.test[1], (double)recal.test[0], (double)recal.train[1]);
  printf("  for contrast: the test set normalized by its own batch statistics: accuracy %.4f;\n"
         "  the same network without batch norm: test accuracy %.4f%s\n",
         (double)batch_test[1], nobn.test_acc[epochs - 1],
         nobn.diverged_epoch > 0 ? " (its training diverged)" : "");

  printf("\nrunning statistics against the true statistics of the features they normalize (the "
         "pre-BN\nactivations over the whole training set in inference mode: mean, unbiased "
         "variance):\n");
  snprintf(path, sizeof path, "%s/train_mlp_stats.csv", out_dir);
  stats_csv = fopen(path, "w");
  if (stats_csv)
    fprintf(stats_csv,
            "layer,channel,running_mean,true_mean,running_var,true_var,recalibrated_mean,"
            "true_mean_after,recalibrated_var,true_var_after\n");
  print_stats(&trained, &recal, stats_csv);
  if (stats_csv) fclose(stats_csv);
  printf("  largest |running mean - true mean| / true std and |running var / true var - 1|:\n"
         "      from training:  BN1 %.3g, %.3g;  BN2 %.3g, %.3g\n"
         "      recalibrated:   BN1 %.3g, %.3g;  BN2 %.3g, %.3g\n"
         "  (BN1's recalibrated mean is the mean of the training set's activations up to "
         "rounding; BN2's\n  differs a little because its input was normalized by batch "
         "statistics during the pass and\n  by BN1's running statistics in the true one)\n",
         trained.worst_mean[0], trained.worst_var[0], trained.worst_mean[1], trained.worst_var[1],
         recal.worst_mean[0], recal.worst_var[0], recal.worst_mean[1], recal.worst_var[1]);

  /* ---- 4. files ---- */
  printf("\nfiles:\n");
  snprintf(path, sizeof path, "%s/train_mlp.csv", out_dir);
  write_csv(path, &nobn, &bn, recal.test[1]);
  printf("  wrote %s and %s/train_mlp_stats.csv\n", path, out_dir);
  plot(out_dir, backend, &nobn);

  if (check) {
    const int learned = trained.test[1] >= 0.9f && recal.test[1] >= 0.9f;
    const int exact = recal.worst_mean[0] < 1e-3 && recal.worst_var[0] < 0.05 &&
                      recal.worst_mean[1] < 0.05 && recal.worst_var[1] < 0.1;
    const int tracked = trained.worst_mean[0] < 2.0 && trained.worst_var[0] < 1.0 &&
                        trained.worst_mean[1] < 2.0 && trained.worst_var[1] < 1.0;
    printf("\ncheck: the BN network learned (inference test accuracy >= 0.9 with both sets of "
           "statistics): %s\n"
           "check: recalibrated statistics equal the true ones (BN1: mean within 1e-3 std, "
           "variance within 5%%; BN2: 0.05 std, 10%%): %s\n"
           "check: statistics from training track them (mean within 2 std, variance within a "
           "factor 2): %s\n",
           learned ? "yes" : "NO", exact ? "yes" : "NO", tracked ? "yes" : "NO");
    ok &= learned & exact & tracked;
  }

  acts_free(&c->batch);
  acts_free(&c->eval);
  CHECK_CUDA(cudaFree(c->state));
  CHECK_CUDA(cudaFree(c->grads));
  CHECK_CUDA(cudaFree(c->eval_metrics));
  CHECK_CUDA(cudaFree(c->lr));
  CHECK_CUDA(cudaFree(c->ws));
  CHECK_CUDA(cudaFree(c->blas_ws));
  CHECK_CUDA(cudaFree(c->train_x));
  CHECK_CUDA(cudaFree(c->test_x));
  CHECK_CUDA(cudaFree(c->train_y));
  CHECK_CUDA(cudaFree(c->test_y));
  CHECK_CUDA(cudaFree(c->perm));
  CHECK_CUBLAS(cublasDestroy(c->blas));
  CHECK_CUDA(cudaStreamDestroy(c->stream));
  CHECK_BNORM(bnormDestroy(c->bn));
  free(host_train_x);
  free(host_test_x);
  free(host_train_y);
  free(host_test_y);

  printf("\nbackend %s: graph check %.2f s, training without BN %.2f s, with bnorm %.2f s; "
         "whole run %.2f s\n",
         backend, t_check, nobn.seconds, bn.seconds, now_seconds() - t_start);
  printf("%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}

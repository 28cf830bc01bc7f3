/*
 * The public API driven from C99, as a user's C program drives it: only
 * <bnorm.h> and <cuda_runtime_api.h>, device memory from cudaMalloc, results
 * copied back with cudaMemcpy and compared with a double-precision reference
 * written here (the formulas of bnorm.h). Every output is poisoned with
 * 0xFF bytes (NaN in fp32 and fp16) before the call that must write it.
 *
 * Prints one line per check and ends with "N passed, M failed"; exits 0 only
 * when every check passed.
 */
#include <bnorm.h>
#include <cuda_runtime_api.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* ------------------------------------------------------------------------ */
/* Bookkeeping                                                               */

static int g_passed = 0;
static int g_failed = 0;

static void report(int ok, const char* what, const char* detail) {
  if (ok)
    ++g_passed;
  else
    ++g_failed;
  printf("%s  %s%s%s\n", ok ? "ok  " : "FAIL", what, detail[0] ? ": " : "", detail);
}

static void check_true(int ok, const char* what) { report(ok, what, ""); }

/* A bnorm call that must succeed is a check of its own. */
static void check_status(bnormStatus_t got, bnormStatus_t want, const char* what) {
  char detail[700];
  if (got == want)
    snprintf(detail, sizeof detail, "status %d", (int)got);
  else
    snprintf(detail, sizeof detail, "status %d, expected %d (%s) [%s]", (int)got, (int)want,
             bnormGetStatusString(got), bnormGetLastErrorMessage());
  report(got == want, what, detail);
}

/* Setup failures (allocation, copies) are not checks: they end the run. */
static void fatal_cuda(cudaError_t e, const char* what, int line) {
  printf("FAIL  setup: %s (line %d): %s\n", what, line, cudaGetErrorString(e));
  printf("%d passed, %d failed\n", g_passed, g_failed + 1);
  exit(1);
}
#define CUDA_OK(call)                                 \
  do {                                                \
    cudaError_t e_ = (call);                          \
    if (e_ != cudaSuccess) fatal_cuda(e_, #call, __LINE__); \
  } while (0)

/* Compares n floats with a double reference: |got - ref| <= atol + rtol |ref|,
 * NaN never passes. One check line: the largest error when all pass, else
 * the element that misses its tolerance by most. */
static void check_close(const char* what, const float* got, const double* ref, size_t n,
                        double atol, double rtol) {
  size_t i, worst = 0, largest = 0;
  double worst_excess = -1e300, max_err = 0.0;
  int ok = 1;
  char detail[300];
  for (i = 0; i < n; ++i) {
    const double err = fabs((double)got[i] - ref[i]);
    const double excess = err - (atol + rtol * fabs(ref[i]));
    if (!(excess <= 0.0)) ok = 0;
    if (!(excess <= worst_excess)) { /* NaN lands here too */
      worst_excess = excess;
      worst = i;
    }
    if (!(err <= max_err)) {
      max_err = err;
      largest = i;
    }
  }
  i = ok ? largest : worst;
  snprintf(detail, sizeof detail, "%lu values, max |err| %.3g, tol %.1e + %.1e|ref| (%s [%lu]: got %.9g, ref %.9g)",
           (unsigned long)n, max_err, atol, rtol, ok ? "largest at" : "worst miss at",
           (unsigned long)i, (double)got[i], ref[i]);
  report(ok, what, detail);
}

/* ------------------------------------------------------------------------ */
/* Deterministic inputs                                                      */

static uint32_t g_rng = 12345u;
static uint32_t rng_next(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 17;
  g_rng ^= g_rng << 5;
  return g_rng;
}
/* Uniform in [-1, 1). */
static double rng_uniform(void) { return (double)(rng_next() >> 8) / 8388608.0 - 1.0; }
/* An integer in [lo, hi]. */
static int rng_int(int lo, int hi) { return lo + (int)(rng_next() % (uint32_t)(hi - lo + 1)); }

/* ------------------------------------------------------------------------ */
/* fp16 by hand: C99 has no half type.                                       */

/* Encodes a float that fp16 represents exactly (zero or a normal fp16 value);
 * anything else is a bug in this test and ends the run. */
static uint16_t half_bits(float f) {
  uint16_t sign = 0;
  uint32_t fbits;
  double v = (double)f, mant;
  int e = 0;
  memcpy(&fbits, &f, sizeof fbits);
  if (fbits & 0x80000000u) {
    sign = 0x8000u;
    v = -v;
  }
  if (v == 0.0) return sign;
  while (v >= ldexp(1.0, e + 1) && e < 16) ++e;  /* 2^e <= v < 2^(e+1) */
  while (v < ldexp(1.0, e) && e > -15) --e;
  mant = (v / ldexp(1.0, e) - 1.0) * 1024.0;     /* v = (1 + mant/1024) * 2^e */
  if (e < -14 || e > 15 || mant < 0.0 || mant >= 1024.0 || mant != (double)(int)mant) {
    printf("FAIL  setup: %.9g is not an exact normal fp16 value\n", v);
    exit(1);
  }
  return (uint16_t)(sign | (uint16_t)((e + 15) << 10) | (uint16_t)mant);
}

/* Decodes any fp16 bit pattern (normals, subnormals, zero, inf, NaN). */
static float half_value(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  double v;
  if (e == 0)
    v = (double)m * ldexp(1.0, -24);
  else if (e == 31)
    v = m ? NAN : INFINITY;
  else
    v = (1024.0 + m) * ldexp(1.0, e - 25);
  return (float)(sign ? -v : v);
}

/* ------------------------------------------------------------------------ */
/* The double-precision reference (bnorm.h's formulas)                       */

typedef struct {
  int nhwc;
  int64_t n, c, s;
} Shape;

static size_t at(const Shape* sh, int64_t i, int64_t ch, int64_t p) {
  return sh->nhwc ? (size_t)((i * sh->s + p) * sh->c + ch) : (size_t)((i * sh->c + ch) * sh->s + p);
}
static size_t numel(const Shape* sh) { return (size_t)(sh->n * sh->c * sh->s); }

static void ref_stats(const Shape* sh, const double* x, double* mean, double* var) {
  const double m = (double)(sh->n * sh->s);
  int64_t ch, i, p;
  for (ch = 0; ch < sh->c; ++ch) {
    double sum = 0.0, sq = 0.0;
    for (i = 0; i < sh->n; ++i)
      for (p = 0; p < sh->s; ++p) sum += x[at(sh, i, ch, p)];
    mean[ch] = sum / m;
    for (i = 0; i < sh->n; ++i)
      for (p = 0; p < sh->s; ++p) {
        const double d = x[at(sh, i, ch, p)] - mean[ch];
        sq += d * d;
      }
    var[ch] = sq / m;
  }
}

/* y = gamma (x - mean) / sqrt(var + eps) + beta; gamma/beta NULL: 1/0. */
static void ref_normalize(const Shape* sh, const double* x, const double* mean,
                          const double* var, double eps, const double* gamma,
                          const double* beta, double* y) {
  int64_t ch, i, p;
  for (ch = 0; ch < sh->c; ++ch) {
    const double rstd = 1.0 / sqrt(var[ch] + eps);
    const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
    for (i = 0; i < sh->n; ++i)
      for (p = 0; p < sh->s; ++p) {
        const size_t k = at(sh, i, ch, p);
        y[k] = g * (x[k] - mean[ch]) * rstd + b;
      }
  }
}

/* Full backward: dbeta = sum g, dgamma = sum g xhat,
 * dx = gamma rstd (g - dbeta/m - xhat dgamma/m). */
static void ref_backward(const Shape* sh, const double* x, const double* dy,
                         const double* gamma, double eps, double* dx, double* dgamma,
                         double* dbeta) {
  const double m = (double)(sh->n * sh->s);
  double* mean = malloc(sizeof(double) * (size_t)sh->c);
  double* var = malloc(sizeof(double) * (size_t)sh->c);
  int64_t ch, i, p;
  ref_stats(sh, x, mean, var);
  for (ch = 0; ch < sh->c; ++ch) {
    const double rstd = 1.0 / sqrt(var[ch] + eps);
    double sg = 0.0, sgx = 0.0;
    for (i = 0; i < sh->n; ++i)
      for (p = 0; p < sh->s; ++p) {
        const size_t k = at(sh, i, ch, p);
        sg += dy[k];
        sgx += dy[k] * (x[k] - mean[ch]) * rstd;
      }
    dbeta[ch] = sg;
    dgamma[ch] = sgx;
    for (i = 0; i < sh->n; ++i)
      for (p = 0; p < sh->s; ++p) {
        const size_t k = at(sh, i, ch, p);
        const double xhat = (x[k] - mean[ch]) * rstd;
        dx[k] = (gamma ? gamma[ch] : 1.0) * rstd * (dy[k] - sg / m - xhat * sgx / m);
      }
  }
  free(mean);
  free(var);
}

/* Frozen backward: dx = gamma rstd dy, dgamma = sum dy xhat, dbeta = sum dy,
 * rstd and mean from the running statistics. */
static void ref_backward_frozen(const Shape* sh, const double* x, const double* dy,
                                const double* gamma, const double* rmean, const double* rvar,
                                double eps, double* dx, double* dgamma, double* dbeta) {
  int64_t ch, i, p;
  for (ch = 0; ch < sh->c; ++ch) {
    const double rstd = 1.0 / sqrt(rvar[ch] + eps);
    double sg = 0.0, sgx = 0.0;
    for (i = 0; i < sh->n; ++i)
      for (p = 0; p < sh->s; ++p) {
        const size_t k = at(sh, i, ch, p);
        sg += dy[k];
        sgx += dy[k] * (x[k] - rmean[ch]) * rstd;
        dx[k] = gamma[ch] * rstd * dy[k];
      }
    dbeta[ch] = sg;
    dgamma[ch] = sgx;
  }
}

/* ------------------------------------------------------------------------ */
/* Device helpers                                                            */

static void* dev_alloc(size_t bytes) {
  void* p = NULL;
  CUDA_OK(cudaMalloc(&p, bytes ? bytes : 1));
  return p;
}
static void* dev_upload(const void* host, size_t bytes) {
  void* p = dev_alloc(bytes);
  CUDA_OK(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice));
  return p;
}
static void poison(void* dev, size_t bytes) { CUDA_OK(cudaMemset(dev, 0xFF, bytes)); }
static void download(void* host, const void* dev, size_t bytes) {
  CUDA_OK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}
static double* to_double(const float* f, size_t n) {
  double* d = malloc(sizeof(double) * (n ? n : 1));
  size_t i;
  for (i = 0; i < n; ++i) d[i] = (double)f[i];
  return d;
}
/* Whether every byte of a device buffer is still 0xFF. */
static int still_poisoned(const void* dev, size_t bytes) {
  unsigned char* h = malloc(bytes);
  size_t i;
  int ok = 1;
  download(h, dev, bytes);
  for (i = 0; i < bytes; ++i) ok &= h[i] == 0xFF;
  free(h);
  return ok;
}

/* Tolerances. fp32 outputs: a few fp32 roundings of O(1) values. */
#define ATOL32 2e-5
#define RTOL32 2e-5
/* fp16 outputs: one rounding to fp16 (half an ulp, 2^-11 relative) on top. */
#define ATOL16 1e-3
#define RTOL16 1.5e-3

/* ------------------------------------------------------------------------ */
/* fp32: forward training (NCHW, then NHWC), inference, scale/shift,          */
/* backward, frozen backward                                                 */

static void test_fp32(bnormHandle_t handle, cudaStream_t stream) {
  const Shape sh = {0, 4, 3, 10}; /* NCHW, m = 40 */
  const bnormTensorDesc_t desc = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 4, 3, 10};
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  const size_t N = numel(&sh), C = (size_t)sh.c;
  const double m = (double)(sh.n * sh.s);
  float hx[120], hdy[120], hgamma[3], hbeta[3], hrm[3], hrv[3];
  float out[120], outc[3], outc2[3];
  double ref[120], refc[3], refc2[3], mean[3], var[3], rm_after[3], rv_after[3];
  double *dx_d, *dgamma_d, *dbeta_d;
  double *xd, *dyd, *gd, *bd;
  size_t ws_fwd = 0, ws_bwd = 0, ws_frz = 0, i, ch;
  void *x, *y, *dy, *dxp, *ws;
  float *gamma, *beta, *rmean, *rvar, *smean, *srstd, *dgamma, *dbeta, *scale, *shift;
  char name[200];

  cfg.eps = 1e-3;
  cfg.exponential_average_factor = 0.25;
  check_true(cfg.size == sizeof(bnormConfig_t) && cfg.magic == BNORM_CONFIG_MAGIC &&
                 cfg.version == BNORM_VERSION && cfg.average == BNORM_AVERAGE_EXPONENTIAL,
             "BNORM_CONFIG_INITIALIZER fills size, magic, version, average");

  for (ch = 0; ch < C; ++ch) {
    hgamma[ch] = 0.5f + 0.75f * (float)ch; /* 0.5, 1.25, 2.0 */
    hbeta[ch] = -0.25f + 0.5f * (float)ch;
    hrm[ch] = 0.125f * (float)ch;
    hrv[ch] = 1.0f + 0.5f * (float)ch;
  }
  for (i = 0; i < N; ++i) {
    const size_t c_of = (i / (size_t)sh.s) % C; /* NCHW */
    hx[i] = (float)(3.0 * (double)c_of - 1.0 + (1.0 + (double)c_of) * rng_uniform());
    hdy[i] = (float)rng_uniform();
  }
  xd = to_double(hx, N);
  dyd = to_double(hdy, N);
  gd = to_double(hgamma, C);
  bd = to_double(hbeta, C);

  check_status(bnormGetForwardTrainingWorkspaceSize(handle, &desc, &cfg, &ws_fwd),
               BNORM_STATUS_SUCCESS, "bnormGetForwardTrainingWorkspaceSize (NCHW fp32)");
  check_status(bnormGetBackwardWorkspaceSize(handle, &desc, &cfg, &ws_bwd), BNORM_STATUS_SUCCESS,
               "bnormGetBackwardWorkspaceSize (NCHW fp32)");
  check_status(bnormGetBackwardFrozenWorkspaceSize(handle, &desc, &cfg, &ws_frz),
               BNORM_STATUS_SUCCESS, "bnormGetBackwardFrozenWorkspaceSize (NCHW fp32)");
  printf("      workspace bytes: forward %lu, backward %lu, frozen backward %lu\n",
         (unsigned long)ws_fwd, (unsigned long)ws_bwd, (unsigned long)ws_frz);

  x = dev_upload(hx, N * 4);
  dy = dev_upload(hdy, N * 4);
  y = dev_alloc(N * 4);
  dxp = dev_alloc(N * 4);
  gamma = dev_upload(hgamma, C * 4);
  beta = dev_upload(hbeta, C * 4);
  rmean = dev_upload(hrm, C * 4);
  rvar = dev_upload(hrv, C * 4);
  smean = dev_alloc(C * 4);
  srstd = dev_alloc(C * 4);
  dgamma = dev_alloc(C * 4);
  dbeta = dev_alloc(C * 4);
  scale = dev_alloc(C * 4);
  shift = dev_alloc(C * 4);
  {
    size_t w = ws_fwd;
    if (ws_bwd > w) w = ws_bwd;
    if (ws_frz > w) w = ws_frz;
    ws = dev_alloc(w);
  }

  /* ---- the error path: NULL x; nothing may be written ---- */
  poison(y, N * 4);
  poison(smean, C * 4);
  poison(srstd, C * 4);
  check_status(bnormForwardTraining(handle, stream, &desc, &cfg, NULL, y, gamma, beta, rmean,
                                    rvar, NULL, smean, srstd, ws, ws_fwd),
               BNORM_STATUS_NULL_POINTER, "bnormForwardTraining(x = NULL) is refused");
  {
    const char* msg = bnormGetLastErrorMessage();
    snprintf(name, sizeof name, "error message names x: \"%s\"", msg ? msg : "(null)");
    check_true(msg != NULL && msg[0] != '\0' && strstr(msg, "'x'") != NULL, name);
  }
  CUDA_OK(cudaStreamSynchronize(stream));
  download(outc, rmean, C * 4);
  download(outc2, rvar, C * 4);
  check_true(still_poisoned(y, N * 4) && still_poisoned(smean, C * 4) &&
                 still_poisoned(srstd, C * 4) && memcmp(outc, hrm, C * 4) == 0 &&
                 memcmp(outc2, hrv, C * 4) == 0,
             "refused call left y, saved and running statistics untouched");

  /* ---- forward training, NCHW fp32 ---- */
  poison(y, N * 4);
  poison(smean, C * 4);
  poison(srstd, C * 4);
  poison(ws, ws_fwd);
  check_status(bnormForwardTraining(handle, stream, &desc, &cfg, x, y, gamma, beta, rmean, rvar,
                                    NULL, smean, srstd, ws, ws_fwd),
               BNORM_STATUS_SUCCESS, "bnormForwardTraining (NCHW fp32)");
  check_true(bnormGetLastErrorMessage()[0] == '\0', "success leaves an empty error message");
  CUDA_OK(cudaStreamSynchronize(stream));
  ref_stats(&sh, xd, mean, var);
  ref_normalize(&sh, xd, mean, var, cfg.eps, gd, bd, ref);
  download(out, y, N * 4);
  check_close("forward NCHW fp32: y", out, ref, N, ATOL32, RTOL32);
  download(outc, smean, C * 4);
  check_close("forward NCHW fp32: saved_mean", outc, mean, C, ATOL32, RTOL32);
  for (ch = 0; ch < C; ++ch) refc[ch] = 1.0 / sqrt(var[ch] + cfg.eps);
  download(outc, srstd, C * 4);
  check_close("forward NCHW fp32: saved_rstd", outc, refc, C, ATOL32, RTOL32);
  for (ch = 0; ch < C; ++ch) {
    const double f = cfg.exponential_average_factor;
    rm_after[ch] = (1.0 - f) * hrm[ch] + f * mean[ch];
    rv_after[ch] = (1.0 - f) * hrv[ch] + f * var[ch] * m / (m - 1.0);
  }
  download(outc, rmean, C * 4);
  check_close("forward NCHW fp32: running_mean (factor 0.25)", outc, rm_after, C, ATOL32,
              RTOL32);
  download(outc, rvar, C * 4);
  check_close("forward NCHW fp32: running_var (unbiased, factor 0.25)", outc, rv_after, C,
              ATOL32, RTOL32);

  /* ---- forward inference with the updated running statistics ---- */
  poison(y, N * 4);
  check_status(bnormForwardInference(handle, stream, &desc, &cfg, x, y, gamma, beta, rmean, rvar),
               BNORM_STATUS_SUCCESS, "bnormForwardInference (NCHW fp32)");
  CUDA_OK(cudaStreamSynchronize(stream));
  ref_normalize(&sh, xd, rm_after, rv_after, cfg.eps, gd, bd, ref);
  download(out, y, N * 4);
  check_close("inference NCHW fp32: y", out, ref, N, ATOL32, RTOL32);

  /* ---- the folded scale and shift ---- */
  poison(scale, C * 4);
  poison(shift, C * 4);
  check_status(bnormGetInferenceScaleShift(handle, stream, sh.c, &cfg, gamma, beta, rmean, rvar,
                                           scale, shift),
               BNORM_STATUS_SUCCESS, "bnormGetInferenceScaleShift");
  CUDA_OK(cudaStreamSynchronize(stream));
  for (ch = 0; ch < C; ++ch) {
    refc[ch] = gd[ch] / sqrt(rv_after[ch] + cfg.eps);
    refc2[ch] = bd[ch] - rm_after[ch] * refc[ch];
  }
  download(outc, scale, C * 4);
  check_close("scale = gamma / sqrt(running_var + eps)", outc, refc, C, ATOL32, RTOL32);
  download(outc2, shift, C * 4);
  check_close("shift = beta - running_mean * scale", outc2, refc2, C, ATOL32, RTOL32);
  {
    /* x * scale + shift reproduces inference's y. */
    float fused[120];
    for (i = 0; i < N; ++i) {
      const size_t c_of = (i / (size_t)sh.s) % C;
      fused[i] = hx[i] * outc[c_of] + outc2[c_of];
    }
    check_close("x * scale + shift == inference y", fused, ref, N, 1e-4, 1e-4);
  }

  /* ---- backward with the saved statistics, then recomputing them ---- */
  dx_d = malloc(sizeof(double) * N);
  dgamma_d = malloc(sizeof(double) * C);
  dbeta_d = malloc(sizeof(double) * C);
  ref_backward(&sh, xd, dyd, gd, cfg.eps, dx_d, dgamma_d, dbeta_d);
  for (i = 0; i < 2; ++i) {
    const int saved = i == 0;
    const char* how = saved ? "saved stats" : "recomputed stats";
    poison(dxp, N * 4);
    poison(dgamma, C * 4);
    poison(dbeta, C * 4);
    poison(ws, ws_bwd);
    snprintf(name, sizeof name, "bnormBackward (NCHW fp32, %s)", how);
    check_status(bnormBackward(handle, stream, &desc, &cfg, x, dy, dxp, gamma,
                               saved ? smean : NULL, saved ? srstd : NULL, dgamma, dbeta, ws,
                               ws_bwd),
                 BNORM_STATUS_SUCCESS, name);
    CUDA_OK(cudaStreamSynchronize(stream));
    download(out, dxp, N * 4);
    snprintf(name, sizeof name, "backward NCHW fp32 (%s): dx", how);
    check_close(name, out, dx_d, N, ATOL32, RTOL32);
    download(outc, dgamma, C * 4);
    snprintf(name, sizeof name, "backward NCHW fp32 (%s): dgamma", how);
    check_close(name, outc, dgamma_d, C, 1e-4, RTOL32);
    download(outc, dbeta, C * 4);
    snprintf(name, sizeof name, "backward NCHW fp32 (%s): dbeta", how);
    check_close(name, outc, dbeta_d, C, 1e-4, RTOL32);
  }

  /* ---- frozen backward with the running statistics ---- */
  ref_backward_frozen(&sh, xd, dyd, gd, rm_after, rv_after, cfg.eps, dx_d, dgamma_d, dbeta_d);
  poison(dxp, N * 4);
  poison(dgamma, C * 4);
  poison(dbeta, C * 4);
  poison(ws, ws_frz);
  check_status(bnormBackwardFrozen(handle, stream, &desc, &cfg, x, dy, dxp, gamma, rmean, rvar,
                                   dgamma, dbeta, ws, ws_frz),
               BNORM_STATUS_SUCCESS, "bnormBackwardFrozen (NCHW fp32)");
  CUDA_OK(cudaStreamSynchronize(stream));
  download(out, dxp, N * 4);
  check_close("frozen backward NCHW fp32: dx", out, dx_d, N, ATOL32, RTOL32);
  download(outc, dgamma, C * 4);
  check_close("frozen backward NCHW fp32: dgamma", outc, dgamma_d, C, 1e-4, RTOL32);
  download(outc, dbeta, C * 4);
  check_close("frozen backward NCHW fp32: dbeta", outc, dbeta_d, C, 1e-4, RTOL32);

  free(dx_d);
  free(dgamma_d);
  free(dbeta_d);
  free(xd);
  free(dyd);
  free(gd);
  free(bd);
  CUDA_OK(cudaFree(x));
  CUDA_OK(cudaFree(y));
  CUDA_OK(cudaFree(dy));
  CUDA_OK(cudaFree(dxp));
  CUDA_OK(cudaFree(gamma));
  CUDA_OK(cudaFree(beta));
  CUDA_OK(cudaFree(rmean));
  CUDA_OK(cudaFree(rvar));
  CUDA_OK(cudaFree(smean));
  CUDA_OK(cudaFree(srstd));
  CUDA_OK(cudaFree(dgamma));
  CUDA_OK(cudaFree(dbeta));
  CUDA_OK(cudaFree(scale));
  CUDA_OK(cudaFree(shift));
  CUDA_OK(cudaFree(ws));
}

/* NHWC fp32 forward training; gamma and beta NULL (ones / zeros); the
 * cumulative average with a device step counter. */
static void test_nhwc(bnormHandle_t handle, cudaStream_t stream) {
  const Shape sh = {1, 3, 5, 7}; /* NHWC, m = 21 */
  const bnormTensorDesc_t desc = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NHWC, 3, 5, 7};
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  const size_t N = numel(&sh), C = (size_t)sh.c;
  const double m = (double)(sh.n * sh.s);
  float hx[105], hrm[5], hrv[5], out[105], outc[5];
  double ref[105], mean[5], var[5], refc[5], *xd;
  int64_t hstep = 3, step_after = 0;
  size_t ws_bytes = 0, i, ch;
  void *x, *y, *ws;
  float *rmean, *rvar, *smean, *srstd;
  int64_t* step;

  cfg.eps = 0.5; /* large, so that using the wrong eps shows */
  cfg.average = BNORM_AVERAGE_CUMULATIVE;
  for (i = 0; i < N; ++i) {
    const size_t c_of = i % C; /* NHWC: channel fastest */
    hx[i] = (float)(10.0 * (double)c_of - 20.0 + 0.5 * (1.0 + (double)c_of) * rng_uniform());
  }
  for (ch = 0; ch < C; ++ch) {
    hrm[ch] = (float)ch;
    hrv[ch] = 2.0f;
  }
  xd = to_double(hx, N);

  check_status(bnormGetForwardTrainingWorkspaceSize(handle, &desc, &cfg, &ws_bytes),
               BNORM_STATUS_SUCCESS, "bnormGetForwardTrainingWorkspaceSize (NHWC fp32)");
  x = dev_upload(hx, N * 4);
  y = dev_alloc(N * 4);
  rmean = dev_upload(hrm, C * 4);
  rvar = dev_upload(hrv, C * 4);
  smean = dev_alloc(C * 4);
  srstd = dev_alloc(C * 4);
  step = dev_upload(&hstep, sizeof hstep);
  ws = dev_alloc(ws_bytes);

  poison(y, N * 4);
  poison(smean, C * 4);
  poison(srstd, C * 4);
  poison(ws, ws_bytes);
  check_status(bnormForwardTraining(handle, stream, &desc, &cfg, x, y, NULL, NULL, rmean, rvar,
                                    step, smean, srstd, ws, ws_bytes),
               BNORM_STATUS_SUCCESS, "bnormForwardTraining (NHWC fp32, cumulative average)");
  CUDA_OK(cudaStreamSynchronize(stream));
  ref_stats(&sh, xd, mean, var);
  ref_normalize(&sh, xd, mean, var, cfg.eps, NULL, NULL, ref);
  download(out, y, N * 4);
  check_close("forward NHWC fp32: y (gamma, beta NULL)", out, ref, N, ATOL32, RTOL32);
  download(outc, smean, C * 4);
  check_close("forward NHWC fp32: saved_mean", outc, mean, C, ATOL32, RTOL32);
  for (ch = 0; ch < C; ++ch) refc[ch] = 1.0 / sqrt(var[ch] + cfg.eps);
  download(outc, srstd, C * 4);
  check_close("forward NHWC fp32: saved_rstd", outc, refc, C, ATOL32, RTOL32);
  /* step 3: f = 1 / (1 + 3) */
  for (ch = 0; ch < C; ++ch) refc[ch] = 0.75 * hrm[ch] + 0.25 * mean[ch];
  download(outc, rmean, C * 4);
  check_close("forward NHWC fp32: running_mean (cumulative, f = 1/4)", outc, refc, C, ATOL32,
              RTOL32);
  for (ch = 0; ch < C; ++ch) refc[ch] = 0.75 * hrv[ch] + 0.25 * var[ch] * m / (m - 1.0);
  download(outc, rvar, C * 4);
  check_close("forward NHWC fp32: running_var (cumulative, f = 1/4)", outc, refc, C, ATOL32,
              RTOL32);
  download(&step_after, step, sizeof step_after);
  check_true(step_after == 4, "forward NHWC fp32: step counter incremented 3 -> 4");

  free(xd);
  CUDA_OK(cudaFree(x));
  CUDA_OK(cudaFree(y));
  CUDA_OK(cudaFree(rmean));
  CUDA_OK(cudaFree(rvar));
  CUDA_OK(cudaFree(smean));
  CUDA_OK(cudaFree(srstd));
  CUDA_OK(cudaFree(step));
  CUDA_OK(cudaFree(ws));
}

/* fp16 activations (NHWC): forward training, inference, backward. Inputs are
 * small multiples of 2^-k, exact in fp16; outputs are decoded by hand. */
static void test_fp16(bnormHandle_t handle, cudaStream_t stream) {
  enum { NN = 4, CC = 6, SS = 5, NUM = NN * CC * SS };
  const Shape sh = {1, NN, CC, SS}; /* m = 20 */
  const bnormTensorDesc_t desc = {BNORM_DATA_HALF, BNORM_LAYOUT_NHWC, NN, CC, SS};
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  const size_t N = NUM, C = CC;
  const double m = (double)(NN * SS);
  uint16_t hx[NUM], hdy[NUM], hout[NUM];
  float fx[NUM], fdy[NUM], out[NUM], hgamma[CC], hbeta[CC], hrm[CC], hrv[CC], outc[CC];
  double ref[NUM], mean[CC], var[CC], refc[CC], rm_after[CC], rv_after[CC];
  double dx_d[NUM], dgamma_d[CC], dbeta_d[CC];
  double *xd, *dyd, *gd, *bd;
  size_t ws_fwd = 0, ws_bwd = 0, i, ch;
  void *x, *y, *dy, *dxp, *ws;
  float *gamma, *beta, *rmean, *rvar, *smean, *srstd, *dgamma, *dbeta;

  cfg.eps = 1.0 / 64.0;
  cfg.exponential_average_factor = 0.5;
  for (i = 0; i < N; ++i) {
    const int c_of = (int)(i % C);
    fx[i] = (float)(rng_int(-40, 40) + 8 * c_of) / 4.0f; /* k/4, |k| < 2048 */
    fdy[i] = (float)rng_int(-16, 16) / 8.0f;
    hx[i] = half_bits(fx[i]);
    hdy[i] = half_bits(fdy[i]);
  }
  check_true(half_bits(1.0f) == 0x3C00u && half_bits(-2.5f) == 0xC100u &&
                 half_value(0x3C00u) == 1.0f && half_value(0x3555u) == 1365.0f / 4096.0f &&
                 half_value(0x0001u) == (float)ldexp(1.0, -24),
             "the test's fp16 encoder/decoder round-trips known bit patterns");
  for (ch = 0; ch < C; ++ch) {
    hgamma[ch] = 1.0f + 0.25f * (float)ch;
    hbeta[ch] = 0.5f - 0.25f * (float)ch;
    hrm[ch] = 0.0f;
    hrv[ch] = 1.0f;
  }
  xd = to_double(fx, N);
  dyd = to_double(fdy, N);
  gd = to_double(hgamma, C);
  bd = to_double(hbeta, C);

  check_status(bnormGetForwardTrainingWorkspaceSize(handle, &desc, &cfg, &ws_fwd),
               BNORM_STATUS_SUCCESS, "bnormGetForwardTrainingWorkspaceSize (NHWC fp16)");
  check_status(bnormGetBackwardWorkspaceSize(handle, &desc, &cfg, &ws_bwd), BNORM_STATUS_SUCCESS,
               "bnormGetBackwardWorkspaceSize (NHWC fp16)");
  x = dev_upload(hx, N * 2);
  dy = dev_upload(hdy, N * 2);
  y = dev_alloc(N * 2);
  dxp = dev_alloc(N * 2);
  gamma = dev_upload(hgamma, C * 4);
  beta = dev_upload(hbeta, C * 4);
  rmean = dev_upload(hrm, C * 4);
  rvar = dev_upload(hrv, C * 4);
  smean = dev_alloc(C * 4);
  srstd = dev_alloc(C * 4);
  dgamma = dev_alloc(C * 4);
  dbeta = dev_alloc(C * 4);
  ws = dev_alloc(ws_fwd > ws_bwd ? ws_fwd : ws_bwd);

  /* forward training */
  poison(y, N * 2);
  poison(smean, C * 4);
  poison(srstd, C * 4);
  poison(ws, ws_fwd);
  check_status(bnormForwardTraining(handle, stream, &desc, &cfg, x, y, gamma, beta, rmean, rvar,
                                    NULL, smean, srstd, ws, ws_fwd),
               BNORM_STATUS_SUCCESS, "bnormForwardTraining (NHWC fp16)");
  CUDA_OK(cudaStreamSynchronize(stream));
  ref_stats(&sh, xd, mean, var);
  ref_normalize(&sh, xd, mean, var, cfg.eps, gd, bd, ref);
  download(hout, y, N * 2);
  for (i = 0; i < N; ++i) out[i] = half_value(hout[i]);
  check_close("forward NHWC fp16: y (decoded)", out, ref, N, ATOL16, RTOL16);
  download(outc, smean, C * 4);
  check_close("forward NHWC fp16: saved_mean (fp32)", outc, mean, C, ATOL32, RTOL32);
  for (ch = 0; ch < C; ++ch) refc[ch] = 1.0 / sqrt(var[ch] + cfg.eps);
  download(outc, srstd, C * 4);
  check_close("forward NHWC fp16: saved_rstd (fp32)", outc, refc, C, ATOL32, RTOL32);
  for (ch = 0; ch < C; ++ch) {
    rm_after[ch] = 0.5 * hrm[ch] + 0.5 * mean[ch];
    rv_after[ch] = 0.5 * hrv[ch] + 0.5 * var[ch] * m / (m - 1.0);
  }
  download(outc, rmean, C * 4);
  check_close("forward NHWC fp16: running_mean", outc, rm_after, C, ATOL32, RTOL32);
  download(outc, rvar, C * 4);
  check_close("forward NHWC fp16: running_var", outc, rv_after, C, ATOL32, RTOL32);

  /* inference */
  poison(y, N * 2);
  check_status(bnormForwardInference(handle, stream, &desc, &cfg, x, y, gamma, beta, rmean, rvar),
               BNORM_STATUS_SUCCESS, "bnormForwardInference (NHWC fp16)");
  CUDA_OK(cudaStreamSynchronize(stream));
  ref_normalize(&sh, xd, rm_after, rv_after, cfg.eps, gd, bd, ref);
  download(hout, y, N * 2);
  for (i = 0; i < N; ++i) out[i] = half_value(hout[i]);
  check_close("inference NHWC fp16: y (decoded)", out, ref, N, ATOL16, RTOL16);

  /* backward with the saved statistics */
  poison(dxp, N * 2);
  poison(dgamma, C * 4);
  poison(dbeta, C * 4);
  poison(ws, ws_bwd);
  check_status(bnormBackward(handle, stream, &desc, &cfg, x, dy, dxp, gamma, smean, srstd, dgamma,
                             dbeta, ws, ws_bwd),
               BNORM_STATUS_SUCCESS, "bnormBackward (NHWC fp16)");
  CUDA_OK(cudaStreamSynchronize(stream));
  ref_backward(&sh, xd, dyd, gd, cfg.eps, dx_d, dgamma_d, dbeta_d);
  download(hout, dxp, N * 2);
  for (i = 0; i < N; ++i) out[i] = half_value(hout[i]);
  check_close("backward NHWC fp16: dx (decoded)", out, dx_d, N, ATOL16, RTOL16);
  download(outc, dgamma, C * 4);
  check_close("backward NHWC fp16: dgamma (fp32)", outc, dgamma_d, C, 1e-4, RTOL32);
  download(outc, dbeta, C * 4);
  check_close("backward NHWC fp16: dbeta (fp32, exact inputs)", outc, dbeta_d, C, 1e-5, 0.0);

  free(xd);
  free(dyd);
  free(gd);
  free(bd);
  CUDA_OK(cudaFree(x));
  CUDA_OK(cudaFree(y));
  CUDA_OK(cudaFree(dy));
  CUDA_OK(cudaFree(dxp));
  CUDA_OK(cudaFree(gamma));
  CUDA_OK(cudaFree(beta));
  CUDA_OK(cudaFree(rmean));
  CUDA_OK(cudaFree(rvar));
  CUDA_OK(cudaFree(smean));
  CUDA_OK(cudaFree(srstd));
  CUDA_OK(cudaFree(dgamma));
  CUDA_OK(cudaFree(dbeta));
  CUDA_OK(cudaFree(ws));
}

int main(void) {
  bnormHandle_t handle = NULL;
  cudaStream_t stream = NULL;
  struct cudaDeviceProp prop;
  int count = 0;
  char line[400];

  check_true(bnormGetVersion() == BNORM_VERSION, "bnormGetVersion() == BNORM_VERSION");
  check_true(strncmp(bnormGetStatusString(BNORM_STATUS_NULL_POINTER), "BNORM_STATUS_NULL_POINTER",
                     25) == 0 &&
                 bnormGetStatusString((bnormStatus_t)12345) != NULL,
             "bnormGetStatusString names statuses, never NULL");
  CUDA_OK(cudaGetDeviceCount(&count));
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  snprintf(line, sizeof line, "device: %d, \"%s\"", count, prop.name);
  check_true(count >= 1 && prop.name[0] != '\0', line);

  check_status(bnormCreate(&handle), BNORM_STATUS_SUCCESS, "bnormCreate");
  if (!handle) {
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return 1;
  }
  CUDA_OK(cudaStreamCreate(&stream));

  test_fp32(handle, stream);
  test_nhwc(handle, stream);
  test_fp16(handle, stream);

  CUDA_OK(cudaStreamDestroy(stream));
  check_status(bnormDestroy(handle), BNORM_STATUS_SUCCESS, "bnormDestroy");
  check_status(bnormDestroy(NULL), BNORM_STATUS_SUCCESS, "bnormDestroy(NULL) is a no-op");
  check_true(cudaGetLastError() == cudaSuccess, "no CUDA error left pending");

  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}

/*
 * normalize_demo: batch normalization of a batch of images, end to end, from C.
 *
 * Builds 8 synthetic 32x32 RGB images (NCHW, fp32, pixel values 0..255) that
 * look statistically like photographs: smooth illumination gradients, blobs,
 * fine texture and sensor noise, channels correlated through a shared
 * luminance, channel means near 0.45 / 0.50 / 0.40 of full scale with
 * different spreads. It then
 *   1. prints per-channel statistics of the input,
 *   2. runs bnormForwardTraining (gamma = 1, beta = 0, running statistics
 *      with the cumulative average, so one step makes them the batch's),
 *      prints per-channel statistics of y (mean ~0, std ~1) and the running
 *      statistics,
 *   3. runs bnormForwardInference on a held-out batch from the same
 *      generator and on the training batch, and prints the statistics.
 *
 * The same source builds against the real library (normalize_demo_gpu) and
 * against the CPU emulator (normalize_demo_emu); the first lines say which
 * backend ran. Every bnorm and CUDA call is checked.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */

#include <bnorm.h>
#include <cuda_runtime_api.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BATCH = 8, CHANNELS = 3, HEIGHT = 32, WIDTH = 32 };
#define SPATIAL (HEIGHT * WIDTH)
#define NUMEL (BATCH * CHANNELS * SPATIAL)

static const char* const kChannelName[CHANNELS] = {"R", "G", "B"};

/* ---- error checking ------------------------------------------------------ */

static void die_cuda(cudaError_t e, const char* call, int line) {
  fprintf(stderr, "normalize_demo: %s failed (line %d): %s (%s)\n", call, line,
          cudaGetErrorString(e), cudaGetErrorName(e));
  fprintf(stderr, "normalize_demo: last bnorm message: \"%s\"\n", bnormGetLastErrorMessage());
  exit(1);
}
static void die_bnorm(bnormStatus_t s, const char* call, int line) {
  fprintf(stderr, "normalize_demo: %s failed (line %d): %s\n", call, line,
          bnormGetStatusString(s));
  fprintf(stderr, "normalize_demo: %s\n", bnormGetLastErrorMessage());
  exit(1);
}
#define CHECK_CUDA(call)                                    \
  do {                                                      \
    cudaError_t e_ = (call);                                \
    if (e_ != cudaSuccess) die_cuda(e_, #call, __LINE__);   \
  } while (0)
#define CHECK_BNORM(call)                                            \
  do {                                                               \
    bnormStatus_t s_ = (call);                                       \
    if (s_ != BNORM_STATUS_SUCCESS) die_bnorm(s_, #call, __LINE__);  \
  } while (0)

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- synthetic "natural" images ------------------------------------------ */

static uint64_t g_state;
static double uniform01(void) { /* xorshift64*, [0, 1) */
  g_state ^= g_state >> 12;
  g_state ^= g_state << 25;
  g_state ^= g_state >> 27;
  return (double)((g_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static double gaussian(void) { /* Box-Muller */
  const double u = uniform01() + 1e-12, v = uniform01();
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Fills x (NCHW) with `batch` images. Each image: a shared luminance field
 * (a lighting gradient in a random direction, two soft blobs, a texture of
 * two oriented sinusoids), a smooth per-channel colour cast, and per-pixel
 * noise, mapped around the channel's mean with its own spread and clipped
 * to 0..255 like an 8-bit sensor. */
static void make_images(float* x, int batch, uint64_t seed) {
  static const double mean[CHANNELS] = {0.45 * 255, 0.50 * 255, 0.40 * 255};
  static const double spread[CHANNELS] = {52.0, 44.0, 60.0};
  int b, c, h, w, k;
  g_state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (b = 0; b < batch; ++b) {
    const double angle = 6.283185307179586 * uniform01();
    const double gx = cos(angle), gy = sin(angle), contrast = 0.6 + 0.6 * uniform01();
    double bx[2], by[2], br[2], bs[2], tf[2], ta[2], tp[2], cast[CHANNELS][2];
    for (k = 0; k < 2; ++k) {
      bx[k] = WIDTH * uniform01();
      by[k] = HEIGHT * uniform01();
      br[k] = 4.0 + 8.0 * uniform01();
      bs[k] = uniform01() < 0.5 ? -1.0 : 1.0;
      tf[k] = 0.3 + 0.9 * uniform01();
      ta[k] = 3.14159265358979 * uniform01();
      tp[k] = 6.283185307179586 * uniform01();
    }
    for (c = 0; c < CHANNELS; ++c) {
      cast[c][0] = 0.25 * gaussian();
      cast[c][1] = 0.25 * gaussian();
    }
    for (h = 0; h < HEIGHT; ++h)
      for (w = 0; w < WIDTH; ++w) {
        const double u = (w - WIDTH / 2.0) / WIDTH, v = (h - HEIGHT / 2.0) / HEIGHT;
        double lum = 1.6 * (gx * u + gy * v);
        for (k = 0; k < 2; ++k) {
          const double dx = w - bx[k], dy = h - by[k];
          lum += 0.9 * bs[k] * exp(-(dx * dx + dy * dy) / (2.0 * br[k] * br[k]));
          lum += 0.25 * sin(tf[k] * (w * cos(ta[k]) + h * sin(ta[k])) + tp[k]);
        }
        lum *= contrast;
        for (c = 0; c < CHANNELS; ++c) {
          const double chroma = cast[c][0] + cast[c][1] * (u + v);
          double p = mean[c] + spread[c] * (lum + chroma) + 6.0 * gaussian();
          if (p < 0.0) p = 0.0;
          if (p > 255.0) p = 255.0;
          x[((size_t)b * CHANNELS + c) * SPATIAL + (size_t)h * WIDTH + w] = (float)p;
        }
      }
  }
}

/* ---- statistics ---------------------------------------------------------- */

static void print_stats(const char* title, const float* x, int batch) {
  int b, c, i;
  printf("%s\n", title);
  printf("    ch        mean         std         min         max\n");
  for (c = 0; c < CHANNELS; ++c) {
    double sum = 0.0, sq = 0.0, lo = INFINITY, hi = -INFINITY, mean;
    const double m = (double)batch * SPATIAL;
    for (b = 0; b < batch; ++b)
      for (i = 0; i < SPATIAL; ++i) {
        const double v = x[((size_t)b * CHANNELS + c) * SPATIAL + i];
        sum += v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    mean = sum / m;
    for (b = 0; b < batch; ++b)
      for (i = 0; i < SPATIAL; ++i) {
        const double d = x[((size_t)b * CHANNELS + c) * SPATIAL + i] - mean;
        sq += d * d;
      }
    printf("    %-2s %11.4f %11.4f %11.4f %11.4f\n", kChannelName[c], mean, sqrt(sq / m), lo,
           hi);
  }
}

int main(void) {
  const double t_start = now_seconds();
  const size_t tensor_bytes = (size_t)NUMEL * sizeof(float);
  const size_t channel_bytes = CHANNELS * sizeof(float);
  const bnormTensorDesc_t desc = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, BATCH, CHANNELS, SPATIAL};
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  static float host_x[NUMEL], host_y[NUMEL], host_val[NUMEL], host_check[NUMEL];
  float ones[CHANNELS], zeros[CHANNELS], rmean[CHANNELS], rvar[CHANNELS];
  float smean[CHANNELS], srstd[CHANNELS];
  int64_t step = 0;
  int device_count = 0, c, i;
  struct cudaDeviceProp prop;
  bnormHandle_t handle = NULL;
  cudaStream_t stream = NULL;
  void *d_x, *d_y, *d_ws = NULL;
  float *d_gamma, *d_beta, *d_rmean, *d_rvar, *d_smean, *d_srstd;
  int64_t* d_step;
  size_t ws_bytes = 0;
  double t0, t_train, t_infer, max_diff = 0.0;

  /* ---- which backend ---- */
  {
    const cudaError_t e = cudaGetDeviceCount(&device_count);
    if (e != cudaSuccess || device_count < 1) {
      fprintf(stderr,
              "normalize_demo: no CUDA device is available (%s). This binary runs on a GPU; "
              "run normalize_demo_emu for the CPU emulator.\n",
              e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
      return 1;
    }
  }
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  printf("backend: %s (compute capability %d.%d, %d SMs)%s\n", prop.name, prop.major,
         prop.minor, prop.multiProcessorCount,
         strncmp(prop.name, "bnorm CPU emulator", 18) == 0 ? " -- kernels run on the CPU" : "");
  printf("bnorm %d (header %d)\n", bnormGetVersion(), BNORM_VERSION);
  printf("batch: %d synthetic RGB images %dx%d, NCHW fp32, pixel values 0..255\n\n", BATCH,
         HEIGHT, WIDTH);

  CHECK_BNORM(bnormCreate(&handle));
  CHECK_CUDA(cudaStreamCreate(&stream));

  /* ---- data ---- */
  make_images(host_x, BATCH, 1);
  make_images(host_val, BATCH, 2);
  print_stats("input (training batch; generator targets: means 0.45/0.50/0.40 x 255 = "
              "114.8/127.5/102.0):",
              host_x, BATCH);

  /* Running statistics: the cumulative average (PyTorch's momentum=None),
   * so after this one step they equal the batch statistics (variance
   * unbiased). */
  cfg.average = BNORM_AVERAGE_CUMULATIVE;
  for (c = 0; c < CHANNELS; ++c) {
    ones[c] = 1.0f;
    zeros[c] = 0.0f;
  }
  CHECK_BNORM(bnormGetForwardTrainingWorkspaceSize(handle, &desc, &cfg, &ws_bytes));

  CHECK_CUDA(cudaMalloc(&d_x, tensor_bytes));
  CHECK_CUDA(cudaMalloc(&d_y, tensor_bytes));
  CHECK_CUDA(cudaMalloc((void**)&d_gamma, channel_bytes));
  CHECK_CUDA(cudaMalloc((void**)&d_beta, channel_bytes));
  CHECK_CUDA(cudaMalloc((void**)&d_rmean, channel_bytes));
  CHECK_CUDA(cudaMalloc((void**)&d_rvar, channel_bytes));
  CHECK_CUDA(cudaMalloc((void**)&d_smean, channel_bytes));
  CHECK_CUDA(cudaMalloc((void**)&d_srstd, channel_bytes));
  CHECK_CUDA(cudaMalloc((void**)&d_step, sizeof(int64_t)));
  if (ws_bytes) CHECK_CUDA(cudaMalloc(&d_ws, ws_bytes));

  CHECK_CUDA(cudaMemcpy(d_x, host_x, tensor_bytes, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_gamma, ones, channel_bytes, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_beta, zeros, channel_bytes, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_rmean, zeros, channel_bytes, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_rvar, ones, channel_bytes, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(d_step, 0, sizeof(int64_t)));

  /* ---- training step ---- */
  t0 = now_seconds();
  CHECK_BNORM(bnormForwardTraining(handle, stream, &desc, &cfg, d_x, d_y, d_gamma, d_beta,
                                   d_rmean, d_rvar, d_step, d_smean, d_srstd, d_ws, ws_bytes));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  t_train = now_seconds() - t0;
  CHECK_CUDA(cudaGetLastError());

  CHECK_CUDA(cudaMemcpy(host_y, d_y, tensor_bytes, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(rmean, d_rmean, channel_bytes, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(rvar, d_rvar, channel_bytes, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(smean, d_smean, channel_bytes, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(srstd, d_srstd, channel_bytes, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(&step, d_step, sizeof step, cudaMemcpyDeviceToHost));

  printf("\n");
  print_stats("bnormForwardTraining, y = (x - batch mean) / sqrt(batch var + eps):", host_y,
             BATCH);
  printf("\nstatistics after the step (step counter now %lld):\n", (long long)step);
  printf("    ch  saved_mean  saved_rstd  running_mean  running_var  sqrt(running_var)\n");
  for (c = 0; c < CHANNELS; ++c)
    printf("    %-2s %11.4f %11.6f %13.4f %12.4f %18.4f\n", kChannelName[c], smean[c], srstd[c],
           rmean[c], rvar[c], sqrt((double)rvar[c]));

  /* ---- inference ---- */
  t0 = now_seconds();
  CHECK_CUDA(cudaMemcpy(d_x, host_val, tensor_bytes, cudaMemcpyHostToDevice));
  CHECK_BNORM(bnormForwardInference(handle, stream, &desc, &cfg, d_x, d_y, d_gamma, d_beta,
                                    d_rmean, d_rvar));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  t_infer = now_seconds() - t0;
  CHECK_CUDA(cudaMemcpy(host_val, d_y, tensor_bytes, cudaMemcpyDeviceToHost));
  printf("\n");
  print_stats("bnormForwardInference on a held-out batch (same generator, new seed):",
             host_val, BATCH);

  /* On the training batch, inference reproduces training's y up to the
   * unbiased variance, m / (m - 1). */
  CHECK_CUDA(cudaMemcpy(d_x, host_x, tensor_bytes, cudaMemcpyHostToDevice));
  CHECK_BNORM(bnormForwardInference(handle, stream, &desc, &cfg, d_x, d_y, d_gamma, d_beta,
                                    d_rmean, d_rvar));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaMemcpy(host_check, d_y, tensor_bytes, cudaMemcpyDeviceToHost));
  for (i = 0; i < NUMEL; ++i) {
    const double d = fabs((double)host_check[i] - (double)host_y[i]);
    if (d > max_diff) max_diff = d;
  }
  printf("\ninference on the training batch vs. training y: max |difference| %.3g "
         "(running_var is unbiased: factor m/(m-1), m = %d)\n",
         max_diff, BATCH * SPATIAL);

  CHECK_CUDA(cudaFree(d_x));
  CHECK_CUDA(cudaFree(d_y));
  CHECK_CUDA(cudaFree(d_gamma));
  CHECK_CUDA(cudaFree(d_beta));
  CHECK_CUDA(cudaFree(d_rmean));
  CHECK_CUDA(cudaFree(d_rvar));
  CHECK_CUDA(cudaFree(d_smean));
  CHECK_CUDA(cudaFree(d_srstd));
  CHECK_CUDA(cudaFree(d_step));
  CHECK_CUDA(cudaFree(d_ws));
  CHECK_CUDA(cudaStreamDestroy(stream));
  CHECK_BNORM(bnormDestroy(handle));

  printf("\nwall time: training step %.3f ms, inference (with upload) %.3f ms, whole run %.3f ms\n",
         1e3 * t_train, 1e3 * t_infer, 1e3 * (now_seconds() - t_start));
  return 0;
}

/* bnorm in a C program: normalize a batch in training mode, then use the
 * running statistics. The README shows this file; tests build and run it. */
#include <bnorm.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>

#define N 8  /* samples */
#define C 3  /* channels */
#define S 16 /* spatial: h * w */
#define CHECK(x) if ((x) != 0) { fprintf(stderr, "%s: %s\n", #x, bnormGetLastErrorMessage()); return 1; }

int main(void) {
  static float x[N * C * S], y[N * C * S];
  for (int i = 0; i < N * C * S; ++i) x[i] = 1000.0f + (float)((i * 7919) % 101); /* far from 0 */

  bnormHandle_t h;
  CHECK(bnormCreate(&h)); /* once per device */
  bnormTensorDesc_t desc = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, N, C, S};
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER; /* eps 1e-5, average factor 0.1 */
  size_t ws_bytes;
  CHECK(bnormGetForwardTrainingWorkspaceSize(h, &desc, &cfg, &ws_bytes));

  float *dx, *dy, *run_mean, *run_var;
  void* ws = NULL;
  const float zeros[C] = {0, 0, 0}, ones[C] = {1, 1, 1};
  CHECK(cudaMalloc((void**)&dx, sizeof x));
  CHECK(cudaMalloc((void**)&dy, sizeof y));
  CHECK(cudaMalloc((void**)&run_mean, sizeof zeros));
  CHECK(cudaMalloc((void**)&run_var, sizeof ones));
  if (ws_bytes) CHECK(cudaMalloc(&ws, ws_bytes));
  CHECK(cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(run_mean, zeros, sizeof zeros, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(run_var, ones, sizeof ones, cudaMemcpyHostToDevice));

  /* y = (x - batch mean) / sqrt(batch var + eps); gamma, beta NULL: 1, 0.
   * Enqueued on the stream (0 here); the running statistics move towards
   * the batch's; no saved statistics (NULL) since no backward follows. */
  CHECK(bnormForwardTraining(h, 0, &desc, &cfg, dx, dy, NULL, NULL, run_mean, run_var, NULL,
                             NULL, NULL, ws, ws_bytes));
  CHECK(cudaMemcpy(y, dy, sizeof y, cudaMemcpyDeviceToHost)); /* waits for the stream */

  int bad = 0;
  for (int c = 0; c < C; ++c) { /* each channel of y: mean 0, variance 1 */
    double sum = 0, sq = 0;
    for (int n = 0; n < N; ++n)
      for (int s = 0; s < S; ++s) sum += y[(n * C + c) * S + s], sq += y[(n * C + c) * S + s] * y[(n * C + c) * S + s];
    const double mean = sum / (N * S), var = sq / (N * S) - mean * mean;
    printf("channel %d: mean %+.2e, variance %.6f\n", c, mean, var);
    bad |= fabs(mean) > 1e-5 || fabs(var - 1) > 1e-3;
  }

  /* Inference from the running statistics, in place. */
  CHECK(bnormForwardInference(h, 0, &desc, &cfg, dx, dx, NULL, NULL, run_mean, run_var));
  CHECK(cudaDeviceSynchronize());

  cudaFree(dx), cudaFree(dy), cudaFree(run_mean), cudaFree(run_var), cudaFree(ws);
  CHECK(bnormDestroy(h));
  printf("%s\n", bad ? "FAILED" : "ok");
  return bad;
}

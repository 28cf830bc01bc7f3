/*
 * libbnorm_emu.so calls its own CUDA-runtime subset, never another cudart
 * that happens to be in the global symbol scope (PyTorch with CUDA puts one
 * there before the Python binding loads the emulator for CPU tensors).
 *
 * This program is linked against fake_cudart (a failing, counting cudart)
 * before bnorm_emu, so without -Bsymbolic-functions the emulator's internal
 * calls (cudaGetDevice in bnormCreate, cudaMemsetAsync for an empty batch's
 * dgamma, cudaGetLastError after a launch) would bind to the fake. Memory is
 * plain malloc: the emulator takes any host memory.
 *
 * Prints one line per check; exits 0 only when every check passed.
 */
#include <bnorm.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int fake_cudart_calls(void);

static int g_failed = 0;

static void check(int ok, const char* what) {
  printf("%s  %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) g_failed++;
}

static void check_status(bnormStatus_t s, const char* what) {
  if (s != BNORM_STATUS_SUCCESS) printf("      status %d: %s\n", (int)s, bnormGetLastErrorMessage());
  check(s == BNORM_STATUS_SUCCESS, what);
}

int main(void) {
  enum { N = 4, C = 3, S = 5 };
  float x[N * C * S], y[N * C * S], mean[C], rstd[C], dgamma[C], dbeta[C];
  bnormHandle_t h = NULL;
  bnormTensorDesc_t d = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, N, C, S};
  bnormTensorDesc_t empty = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, 0, C, S};
  size_t ws_bytes = 0;
  void* ws = NULL;
  int i, c, worst_ok = 1;

  for (i = 0; i < N * C * S; ++i) x[i] = (float)((i * 37) % 11) - 3.0f + 0.25f * (float)(i % 3);

  check_status(bnormCreate(&h), "bnormCreate uses the emulator's cudaGetDevice");
  if (!h) return 1;
  check_status(bnormGetForwardTrainingWorkspaceSize(h, &d, NULL, &ws_bytes), "workspace size");
  if (ws_bytes && posix_memalign(&ws, 16, ws_bytes) != 0) return 1;
  check_status(bnormForwardTraining(h, NULL, &d, NULL, x, y, NULL, NULL, NULL, NULL, NULL, mean,
                                    rstd, ws, ws_bytes),
               "bnormForwardTraining launches on the emulator");
  /* y has zero mean and unit variance per channel (to eps). */
  for (c = 0; c < C; ++c) {
    double s = 0.0, s2 = 0.0;
    int n, k;
    for (n = 0; n < N; ++n)
      for (k = 0; k < S; ++k) {
        double v = y[(n * C + c) * S + k];
        s += v;
        s2 += v * v;
      }
    s /= N * S;
    s2 /= N * S;
    if (!(fabs(s) < 1e-5 && fabs(s2 - 1.0) < 1e-3)) worst_ok = 0;
  }
  check(worst_ok, "y is normalized per channel");
  dgamma[0] = dbeta[0] = 1.0f;
  free(ws);
  ws = NULL;
  check_status(bnormGetBackwardWorkspaceSize(h, &empty, NULL, &ws_bytes), "workspace size");
  if (ws_bytes && posix_memalign(&ws, 16, ws_bytes) != 0) return 1;
  check_status(bnormBackward(h, NULL, &empty, NULL, NULL, NULL, NULL, NULL, NULL, NULL, dgamma,
                             dbeta, ws, ws_bytes),
               "an empty batch's backward zeroes dgamma with the emulator's cudaMemsetAsync");
  check(dgamma[0] == 0.0f && dbeta[0] == 0.0f, "dgamma and dbeta are zero");
  check_status(bnormDestroy(h), "bnormDestroy");
  check(fake_cudart_calls() == 0, "the global (fake) CUDA runtime was never called");
  free(ws);
  printf("%s\n", g_failed ? "FAILED" : "all passed");
  return g_failed ? 1 : 0;
}

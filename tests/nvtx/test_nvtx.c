/*
 * Every public bnorm call opens one NVTX range named after itself, in the
 * "bnorm" domain, and closes it on every return path (failures included).
 *
 * Run with NVTX_INJECTION64_PATH naming the nvtx_recorder library: NVTX 3
 * loads it at bnorm's first NVTX call, and it records every push and pop.
 * After each bnorm call this program checks that exactly one push of that
 * call's name and one pop, both in domain "bnorm", were added. Built with
 * BNORM_TEST_NVTX_EXPECTED=0 (a BNORM_NVTX=OFF build), it checks instead
 * that no call made an NVTX call at all.
 */
#include <bnorm.h>
#include <cuda_runtime_api.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvtx_recorder.h"

#ifndef BNORM_TEST_NVTX_EXPECTED
#define BNORM_TEST_NVTX_EXPECTED 1
#endif

static int g_failed = 0, g_passed = 0, g_seen = 0;

static const NvtxRecorderEvent* events(int* count) {
  static NvtxRecorderEventsFn fn = NULL;
  if (!fn) {
    const char* path = getenv("NVTX_INJECTION64_PATH");
    void* lib = path ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : NULL;
    if (lib) fn = (NvtxRecorderEventsFn)dlsym(lib, "nvtx_recorder_events");
  }
  if (!fn) { /* not loaded: no NVTX call was made yet */
    *count = 0;
    return NULL;
  }
  return fn(count);
}

/* The events since the last check must be exactly push(name), pop. */
static void check_range(const char* name, bnormStatus_t got, bnormStatus_t want) {
  int count = 0, ok = 1;
  const NvtxRecorderEvent* e = events(&count);
  char why[256] = "";
  const int added = count - g_seen;
  if (got != want) {
    ok = 0;
    snprintf(why, sizeof why, "returned %d, expected %d (%s)", (int)got, (int)want,
             bnormGetLastErrorMessage());
  } else if (!BNORM_TEST_NVTX_EXPECTED) {
    if (added != 0) {
      ok = 0;
      snprintf(why, sizeof why, "%d NVTX events in a build without NVTX", added);
    }
  } else if (added != 2) {
    ok = 0;
    snprintf(why, sizeof why, "%d NVTX events, expected a push and a pop", added);
  } else {
    const NvtxRecorderEvent* push = &e[g_seen];
    const NvtxRecorderEvent* pop = &e[g_seen + 1];
    if (push->kind != NVTX_RECORDER_PUSH || strcmp(push->name, name) != 0 ||
        strcmp(push->domain, "bnorm") != 0) {
      ok = 0;
      snprintf(why, sizeof why, "first event: kind %d, domain \"%s\", name \"%s\"", push->kind,
               push->domain, push->name);
    } else if (pop->kind != NVTX_RECORDER_POP || strcmp(pop->domain, "bnorm") != 0) {
      ok = 0;
      snprintf(why, sizeof why, "second event: kind %d, domain \"%s\"", pop->kind, pop->domain);
    }
  }
  g_seen = count;
  if (ok)
    ++g_passed;
  else
    ++g_failed;
  printf("%s  %s%s%s\n", ok ? "ok  " : "FAIL", name, ok ? "" : ": ", why);
}

#define CUDA_OK(call)                                                            \
  do {                                                                           \
    if ((call) != cudaSuccess) {                                                 \
      printf("FAIL  setup: %s\n", #call);                                        \
      return 1;                                                                  \
    }                                                                            \
  } while (0)

int main(void) {
  enum { N = 4, C = 3, S = 5 };
  const bnormTensorDesc_t desc = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, N, C, S};
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  float hx[N * C * S], ones[C] = {1, 1, 1}, zeros[C] = {0, 0, 0};
  float *x, *y, *dx, *gamma, *beta, *rm, *rv, *sm, *sr, *dg, *db;
  void* ws = NULL;
  size_t fwd_ws = 0, bwd_ws = 0, frz_ws = 0, big, stats_bytes = 0, grads_bytes = 0, sync_ws = 0;
  void *sync_buf = NULL, *grads = NULL;
  bnormStatus_t s_sync;
  bnormHandle_t h = NULL;
  static unsigned long long not_a_handle[64]; /* zeros: no magic */
  int i, count = 0;
  const char* s;
  size_t mask_bytes = 0;

  if (!getenv("NVTX_INJECTION64_PATH")) {
    printf("FAIL  NVTX_INJECTION64_PATH is not set: run this test through ctest\n");
    return 1;
  }
  for (i = 0; i < N * C * S; ++i) hx[i] = (float)((i * 37) % 11) - 3.0f;
  CUDA_OK(cudaMalloc((void**)&x, sizeof hx));
  CUDA_OK(cudaMalloc((void**)&y, sizeof hx));
  CUDA_OK(cudaMalloc((void**)&dx, sizeof hx));
  CUDA_OK(cudaMalloc((void**)&gamma, sizeof ones));
  CUDA_OK(cudaMalloc((void**)&beta, sizeof ones));
  CUDA_OK(cudaMalloc((void**)&rm, sizeof ones));
  CUDA_OK(cudaMalloc((void**)&rv, sizeof ones));
  CUDA_OK(cudaMalloc((void**)&sm, sizeof ones));
  CUDA_OK(cudaMalloc((void**)&sr, sizeof ones));
  CUDA_OK(cudaMalloc((void**)&dg, sizeof ones));
  CUDA_OK(cudaMalloc((void**)&db, sizeof ones));
  CUDA_OK(cudaMemcpy(x, hx, sizeof hx, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(gamma, ones, sizeof ones, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(beta, zeros, sizeof ones, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(rm, zeros, sizeof ones, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(rv, ones, sizeof ones, cudaMemcpyHostToDevice));

  check_range("bnormGetVersion", bnormGetVersion() == BNORM_VERSION ? BNORM_STATUS_SUCCESS
                                                                      : BNORM_STATUS_INTERNAL_ERROR,
              BNORM_STATUS_SUCCESS);
  s = bnormGetStatusString(BNORM_STATUS_SUCCESS);
  check_range("bnormGetStatusString", s && s[0] ? BNORM_STATUS_SUCCESS : BNORM_STATUS_INTERNAL_ERROR,
              BNORM_STATUS_SUCCESS);
  check_range("bnormCreate", bnormCreate(&h), BNORM_STATUS_SUCCESS);
  check_range("bnormGetForwardTrainingWorkspaceSize",
              bnormGetForwardTrainingWorkspaceSize(h, &desc, &cfg, &fwd_ws), BNORM_STATUS_SUCCESS);
  check_range("bnormGetBackwardWorkspaceSize", bnormGetBackwardWorkspaceSize(h, &desc, &cfg, &bwd_ws),
              BNORM_STATUS_SUCCESS);
  check_range("bnormGetBackwardFrozenWorkspaceSize",
              bnormGetBackwardFrozenWorkspaceSize(h, &desc, &cfg, &frz_ws), BNORM_STATUS_SUCCESS);
  big = fwd_ws > bwd_ws ? fwd_ws : bwd_ws;
  big = big > frz_ws ? big : frz_ws;
  if (big) CUDA_OK(cudaMalloc(&ws, big));

  check_range("bnormForwardTraining",
              bnormForwardTraining(h, NULL, &desc, &cfg, x, y, gamma, beta, rm, rv, NULL, sm, sr,
                                   ws, fwd_ws),
              BNORM_STATUS_SUCCESS);
  /* A failed call pops its range too. */
  check_range("bnormForwardTraining",
              bnormForwardTraining(h, NULL, &desc, &cfg, NULL, y, gamma, beta, rm, rv, NULL, sm,
                                   sr, ws, fwd_ws),
              BNORM_STATUS_NULL_POINTER);
  s = bnormGetLastErrorMessage();
  check_range("bnormGetLastErrorMessage",
              s && strstr(s, "bnormForwardTraining") ? BNORM_STATUS_SUCCESS
                                                     : BNORM_STATUS_INTERNAL_ERROR,
              BNORM_STATUS_SUCCESS);
  check_range("bnormForwardInference",
              bnormForwardInference(h, NULL, &desc, &cfg, x, y, gamma, beta, rm, rv),
              BNORM_STATUS_SUCCESS);
  check_range("bnormGetInferenceScaleShift",
              bnormGetInferenceScaleShift(h, NULL, C, &cfg, gamma, beta, rm, rv, dg, db),
              BNORM_STATUS_SUCCESS);
  check_range("bnormBackward",
              bnormBackward(h, NULL, &desc, &cfg, x, y, dx, gamma, sm, sr, dg, db, ws, bwd_ws),
              BNORM_STATUS_SUCCESS);
  check_range("bnormGetReluMaskSize", bnormGetReluMaskSize(h, &desc, &mask_bytes),
              BNORM_STATUS_SUCCESS);
  /* dx as a C x 1 layer's weights, sm as its bias: folded in place. */
  check_range("bnormFoldIntoLinear",
              bnormFoldIntoLinear(h, NULL, C, 1, &cfg, gamma, beta, rm, rv, dx, NULL, sm),
              BNORM_STATUS_SUCCESS);
  check_range("bnormBackwardFrozen",
              bnormBackwardFrozen(h, NULL, &desc, &cfg, x, y, dx, gamma, rm, rv, dg, db, ws,
                                  frz_ws),
              BNORM_STATUS_SUCCESS);
  /* Synchronized batch norm, one rank: the split phases, the exchange being
   * the identity (the gathered statistics are the rank's own). */
  check_range("bnormGetSyncBufferSizes",
              bnormGetSyncBufferSizes(h, C, &stats_bytes, &grads_bytes), BNORM_STATUS_SUCCESS);
  CUDA_OK(cudaMalloc(&sync_buf, stats_bytes + grads_bytes));
  grads = (char*)sync_buf + stats_bytes; /* stats_bytes is a multiple of 16 */
  check_range("bnormSyncForwardStats",
              bnormSyncForwardStats(h, NULL, &desc, &cfg, x, sync_buf, ws, fwd_ws),
              BNORM_STATUS_SUCCESS);
  check_range("bnormSyncForwardApply",
              bnormSyncForwardApply(h, NULL, &desc, &cfg, 1, 0, N, sync_buf, x, y, gamma, beta,
                                    rm, rv, NULL, sm, sr, ws, fwd_ws),
              BNORM_STATUS_SUCCESS);
  check_range("bnormSyncBackwardGrads",
              bnormSyncBackwardGrads(h, NULL, &desc, &cfg, x, y, sm, grads, ws, bwd_ws),
              BNORM_STATUS_SUCCESS);
  check_range("bnormSyncBackwardApply",
              bnormSyncBackwardApply(h, NULL, &desc, &cfg, grads, x, y, dx, gamma, sm, sr, dg, db,
                                     ws, bwd_ws),
              BNORM_STATUS_SUCCESS);
  check_range("bnormGetSyncForwardTrainingWorkspaceSize",
              bnormGetSyncForwardTrainingWorkspaceSize(h, &desc, &cfg, 2, &sync_ws),
              BNORM_STATUS_SUCCESS);
  check_range("bnormGetSyncBackwardWorkspaceSize",
              bnormGetSyncBackwardWorkspaceSize(h, &desc, &cfg, &sync_ws), BNORM_STATUS_SUCCESS);
  /* The built-in NCCL calls without a communicator: refused (or not in this
   * build), and the range is still balanced. */
  s_sync = bnormSyncForwardTraining(h, NULL, NULL, &desc, &cfg, -1, x, y, gamma, beta, rm, rv,
                                    NULL, sm, sr, ws, fwd_ws);
  check_range("bnormSyncForwardTraining", s_sync,
              s_sync == BNORM_STATUS_NOT_SUPPORTED ? s_sync : BNORM_STATUS_NULL_POINTER);
  s_sync = bnormSyncBackward(h, NULL, NULL, &desc, &cfg, x, y, dx, gamma, sm, sr, dg, db, ws,
                             bwd_ws);
  check_range("bnormSyncBackward", s_sync,
              s_sync == BNORM_STATUS_NOT_SUPPORTED ? s_sync : BNORM_STATUS_NULL_POINTER);
  cudaFree(sync_buf);

  check_range("bnormDestroy", bnormDestroy(h), BNORM_STATUS_SUCCESS);
  /* A bad handle: the range is still balanced. */
  check_range("bnormDestroy", bnormDestroy((bnormHandle_t)(void*)not_a_handle), BNORM_STATUS_BAD_HANDLE);

  events(&count);
  printf("%d NVTX events recorded; %d passed, %d failed\n", count, g_passed, g_failed);
  cudaFree(x);
  cudaFree(y);
  cudaFree(dx);
  cudaFree(gamma);
  cudaFree(beta);
  cudaFree(rm);
  cudaFree(rv);
  cudaFree(sm);
  cudaFree(sr);
  cudaFree(dg);
  cudaFree(db);
  cudaFree(ws);
  return g_failed ? 1 : 0;
}

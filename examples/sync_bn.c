/*
 * sync_bn: synchronized batch norm across ranks over NCCL, from C.
 *
 * One rank per visible GPU (ncclCommInitAll), each driven by a host thread of
 * its own (one thread calling the collectives of several ranks would need
 * ncclGroupStart/End, and bnorm's calls enqueue kernels around their
 * collective, so each rank gets a thread). Under the emulated build the
 * ranks are threads on the CPU and the communicator is the emulated NCCL's
 * (--ranks N, default 4). Every rank holds an uneven slice of one global
 * batch (rank r holds 2 r + 1 samples; with --empty-rank, the last rank
 * holds none), runs bnormSyncForwardTraining and bnormSyncBackward, and the
 * program checks that
 *   - every rank's saved mean and rstd are bitwise the same, and match the
 *     statistics of the concatenated batch computed here in double;
 *   - every rank's running statistics and dgamma / dbeta are bitwise the same.
 * It exits 0 when all hold and prints what it saw; 77 when there is no CUDA
 * device (ctest's "skipped"), 2 on bad arguments, 1 otherwise.
 *
 * A multi-node job creates the communicator the same way on every process:
 * rank 0 calls ncclGetUniqueId and the launcher (MPI_Bcast, a file, a TCP
 * store) hands the id to every process, each of which calls
 * ncclCommInitRank(&comm, world_size, id, its_rank) after cudaSetDevice;
 * the comm is then passed to bnorm exactly as here.
 */
#define _POSIX_C_SOURCE 200809L /* pthreads */

#include <bnorm.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define C 6  /* channels */
#define S 10 /* spatial values per (sample, channel) */
#define MAX_RANKS 64

#define CHECK_CUDA(x)                                                      \
  do {                                                                     \
    cudaError_t e_ = (x);                                                  \
    if (e_ != cudaSuccess) {                                               \
      fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));             \
      return 1;                                                            \
    }                                                                      \
  } while (0)
#define CHECK_BN(x)                                                        \
  do {                                                                     \
    if ((x) != BNORM_STATUS_SUCCESS) {                                     \
      fprintf(stderr, "%s: %s\n", #x, bnormGetLastErrorMessage());         \
      return 1;                                                            \
    }                                                                      \
  } while (0)

typedef struct {
  int rank, device;
  int64_t n, first; /* samples, index of the first in the global batch */
  int64_t global_n; /* samples over all ranks */
  ncclComm_t comm;
  float mean[C], rstd[C], running_mean[C], running_var[C], dgamma[C], dbeta[C];
  int failed;
} Rank;

/* The value of channel ch of global sample i at position s: means far from
 * zero and different per channel, so the merge has something to get wrong. */
static float value(int64_t i, int ch, int s) {
  const unsigned h = (unsigned)(i * 7919 + ch * 104729 + s * 1299709) * 2654435761u;
  return 100.0f * (float)(ch + 1) + (float)(h >> 8) / (float)(1u << 24) * (float)(ch + 1);
}

static int run_rank(Rank* r) {
  CHECK_CUDA(cudaSetDevice(r->device));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  bnormHandle_t h;
  CHECK_BN(bnormCreate(&h));
  const bnormTensorDesc_t desc = {BNORM_DATA_FLOAT, BNORM_LAYOUT_NCHW, r->n, C, S};
  const bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  int nranks = 0;
  if (ncclCommCount(r->comm, &nranks) != ncclSuccess) return 1;

  const size_t count = (size_t)(r->n * C * S), bytes = count * sizeof(float);
  float* host = (float*)malloc(bytes ? bytes : 1);
  for (int64_t i = 0; i < r->n; ++i)
    for (int ch = 0; ch < C; ++ch)
      for (int s = 0; s < S; ++s) host[(i * C + ch) * S + s] = value(r->first + i, ch, s);
  size_t fws = 0, bws = 0;
  CHECK_BN(bnormGetSyncForwardTrainingWorkspaceSize(h, &desc, &cfg, nranks, &fws));
  CHECK_BN(bnormGetSyncBackwardWorkspaceSize(h, &desc, &cfg, &bws));
  float *x = NULL, *y = NULL, *dx = NULL, *chan = NULL;
  void* ws = NULL;
  if (bytes) {
    CHECK_CUDA(cudaMalloc((void**)&x, bytes));
    CHECK_CUDA(cudaMalloc((void**)&y, bytes));
    CHECK_CUDA(cudaMalloc((void**)&dx, bytes));
    CHECK_CUDA(cudaMemcpy(x, host, bytes, cudaMemcpyHostToDevice));
  }
  CHECK_CUDA(cudaMalloc((void**)&chan, 6 * C * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&ws, fws > bws ? fws : bws));
  float init[6 * C];
  for (int i = 0; i < 6 * C; ++i) init[i] = i / C == 1 ? 1.0f : 0.0f; /* running var 1 */
  CHECK_CUDA(cudaMemcpy(chan, init, sizeof init, cudaMemcpyHostToDevice));
  float *rm = chan, *rv = chan + C, *sm = chan + 2 * C, *sr = chan + 3 * C;
  float *dg = chan + 4 * C, *db = chan + 5 * C;

  /* The global sample count is known here, so a global batch of one value
   * would be refused on every rank before anything runs (-1: unknown). */
  CHECK_BN(bnormSyncForwardTraining(h, stream, r->comm, &desc, &cfg, r->global_n, x, y, NULL,
                                    NULL, rm, rv, NULL, sm, sr, ws, fws));
  /* dy = y: the gradient of 0.5 * sum y^2. */
  CHECK_BN(bnormSyncBackward(h, stream, r->comm, &desc, &cfg, x, y, dx, NULL, sm, sr, dg, db, ws,
                             bws));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaMemcpy(r->running_mean, rm, sizeof r->running_mean, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(r->running_var, rv, sizeof r->running_var, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(r->mean, sm, sizeof r->mean, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(r->rstd, sr, sizeof r->rstd, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(r->dgamma, dg, sizeof r->dgamma, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(r->dbeta, db, sizeof r->dbeta, cudaMemcpyDeviceToHost));
  cudaFree(x), cudaFree(y), cudaFree(dx), cudaFree(chan), cudaFree(ws), free(host);
  CHECK_BN(bnormDestroy(h));
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}

static void* rank_thread(void* arg) {
  Rank* r = (Rank*)arg;
  r->failed = run_rank(r);
  return NULL;
}

int main(int argc, char** argv) {
  int devices = 0, nranks = 0, empty_last = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    fprintf(stderr, "sync_bn: no CUDA device\n");
    return 77; /* "skipped" for ctest */
  }
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--ranks") == 0 && i + 1 < argc) nranks = atoi(argv[++i]);
    else if (strcmp(argv[i], "--empty-rank") == 0) empty_last = 1;
    else {
      fprintf(stderr, "usage: %s [--ranks N] [--empty-rank]\n", argv[0]);
      return 2;
    }
  }
#if BNORM_EXAMPLE_EMU
  const int emulated = 1;
  if (nranks == 0) nranks = 4;
#else
  const int emulated = 0;
  if (nranks == 0) nranks = devices; /* one rank per GPU */
#endif
  if (nranks < 1 || nranks > MAX_RANKS || (!emulated && nranks > devices)) {
    fprintf(stderr, "sync_bn: %d ranks asked, %d devices seen (at most one rank per GPU)\n",
            nranks, devices);
    return 2;
  }
  printf("sync_bn: %d ranks (%s), C = %d, spatial = %d\n", nranks,
         emulated ? "threads on the CPU emulator, emulated NCCL" : "one per GPU, NCCL", C, S);

  ncclComm_t comms[MAX_RANKS];
  int devlist[MAX_RANKS];
  for (int r = 0; r < nranks; ++r) devlist[r] = emulated ? 0 : r;
  if (ncclCommInitAll(comms, nranks, devlist) != ncclSuccess) {
    fprintf(stderr, "ncclCommInitAll failed\n");
    return 1;
  }
  static Rank ranks[MAX_RANKS];
  pthread_t threads[MAX_RANKS];
  int64_t first = 0;
  for (int r = 0; r < nranks; ++r) {
    ranks[r].rank = r;
    ranks[r].device = devlist[r];
    ranks[r].n = empty_last && r == nranks - 1 ? 0 : 2 * r + 1;
    ranks[r].first = first;
    ranks[r].comm = comms[r];
    first += ranks[r].n;
  }
  for (int r = 0; r < nranks; ++r) {
    ranks[r].global_n = first;
    pthread_create(&threads[r], NULL, rank_thread, &ranks[r]);
  }
  int bad = 0;
  for (int r = 0; r < nranks; ++r) {
    pthread_join(threads[r], NULL);
    bad |= ranks[r].failed;
  }
  for (int r = 0; r < nranks; ++r) ncclCommDestroy(comms[r]);
  if (bad) {
    fprintf(stderr, "sync_bn: a rank failed\n");
    return 1;
  }

  /* The statistics of the concatenated batch, in double. */
  const int64_t n = first;
  for (int ch = 0; ch < C; ++ch) {
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int s = 0; s < S; ++s) sum += value(i, ch, s);
    const double mean = sum / (double)(n * S);
    for (int64_t i = 0; i < n; ++i)
      for (int s = 0; s < S; ++s) sq += (value(i, ch, s) - mean) * (value(i, ch, s) - mean);
    const double var = sq / (double)(n * S), rstd = 1.0 / sqrt(var + 1e-5);
    printf("channel %d: mean %.6f (bnorm %.6f)  rstd %.6f (bnorm %.6f)\n", ch, mean,
           ranks[0].mean[ch], rstd, ranks[0].rstd[ch]);
    bad |= fabs(ranks[0].mean[ch] - mean) > 1e-5 * fabs(mean);
    bad |= fabs(ranks[0].rstd[ch] - rstd) > 1e-4 * rstd;
  }
  for (int r = 1; r < nranks; ++r) {
    const Rank *a = &ranks[r], *b = &ranks[0];
    const int same = !memcmp(a->mean, b->mean, sizeof a->mean) &&
                     !memcmp(a->rstd, b->rstd, sizeof a->rstd) &&
                     !memcmp(a->running_mean, b->running_mean, sizeof a->running_mean) &&
                     !memcmp(a->running_var, b->running_var, sizeof a->running_var) &&
                     !memcmp(a->dgamma, b->dgamma, sizeof a->dgamma) &&
                     !memcmp(a->dbeta, b->dbeta, sizeof a->dbeta);
    if (!same) printf("rank %d differs from rank 0\n", r);
    bad |= !same;
  }
  printf("%s\n", bad ? "FAILED" : "ok: every rank holds the global statistics, bitwise the same");
  return bad;
}

// bnorm-bench-sync: what synchronized batch norm costs over the local one,
// on one GPU, through the real library and the real NCCL.
//
// A single-rank communicator (ncclCommInitAll over device 0) runs
// bnormSyncForwardTraining / bnormSyncBackward against bnormForwardTraining /
// bnormBackward on the same shapes: the difference is the sync path's own
// work (packing, the collective on one rank, the fp64 merge; a second
// reduction pass is not needed, the statistics pass is the same) with no
// network in the way, i.e. the floor of the sync path's overhead. (What the
// collective costs across GPUs and nodes is NCCL's: README, "Synchronized
// batch norm", works it out.)
//
//  1. check: the sync outputs (y, saved mean and rstd, dx, dgamma, dbeta)
//     against the local call's on the same inputs, within fp32 rounding; a
//     disagreement is a MISMATCH (exit 1).
//  2. time: CUDA events around each call, warm-up first, the median of
//     --reps runs; inputs rotate over buffer sets whose footprint exceeds
//     twice the L2 cache.
//
// Output: a table (case, op, local us, sync us, overhead us and ratio) and,
// with --csv PATH, a CSV: op,layout,dtype,n,c,spatial,ranks,local_us,sync_us.
// Exit status: 0, 1 (a MISMATCH or an error), 2 (no GPU or no NCCL, bad
// arguments).
#include <bnorm.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Case {
  bnormLayout_t layout;
  int64_t n, c, spatial;
};

// ResNet-50 layers at a per-GPU batch of 32 (where sync BN is used), a
// BatchNorm1d and a video case: NCHW fp32 (the layout does not change the
// sync path's extra work).
const Case kCases[] = {
    {BNORM_LAYOUT_NHWC, 32, 64, 112 * 112}, {BNORM_LAYOUT_NHWC, 32, 256, 56 * 56},
    {BNORM_LAYOUT_NHWC, 32, 512, 28 * 28},  {BNORM_LAYOUT_NHWC, 32, 1024, 14 * 14},
    {BNORM_LAYOUT_NHWC, 32, 2048, 7 * 7},   {BNORM_LAYOUT_NCHW, 32, 256, 56 * 56},
    {BNORM_LAYOUT_NCHW, 1024, 4096, 1},     {BNORM_LAYOUT_NCHW, 2, 64, 32 * 56 * 56},
};

#define CUDA_OK(x)                                                              \
  do {                                                                          \
    cudaError_t e_ = (x);                                                       \
    if (e_ != cudaSuccess) {                                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x,            \
                   cudaGetErrorString(e_));                                     \
      std::exit(1);                                                             \
    }                                                                           \
  } while (0)
#define BN_OK(x)                                                                \
  do {                                                                          \
    if ((x) != BNORM_STATUS_SUCCESS) {                                          \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x,            \
                   bnormGetLastErrorMessage());                                 \
      std::exit(1);                                                             \
    }                                                                           \
  } while (0)

// One set of buffers of a case.
struct Set {
  float *x, *y, *dy, *dx;
};

struct Bufs {
  std::vector<Set> sets;
  float *chan;  // gamma, beta, rm, rv, sm, sr, dg, db: 8 x c
  void* ws;
  size_t ws_bytes;
};

float* chan_at(const Bufs& b, int64_t c, int i) { return b.chan + i * c; }

Bufs make_bufs(const Case& k, size_t ws_bytes, size_t l2) {
  Bufs b{};
  const size_t bytes = size_t(k.n * k.c * k.spatial) * sizeof(float);
  const size_t sets = std::max<size_t>(1, (2 * l2) / (3 * bytes) + 1);
  std::vector<float> host(bytes / sizeof(float));
  uint32_t h = 12345;
  for (float& v : host) {
    h = h * 1664525u + 1013904223u;
    v = 3.0f + float(h >> 8) / float(1u << 24);
  }
  for (size_t i = 0; i < sets; ++i) {
    Set s{};
    CUDA_OK(cudaMalloc(&s.x, bytes));
    CUDA_OK(cudaMalloc(&s.y, bytes));
    CUDA_OK(cudaMalloc(&s.dy, bytes));
    CUDA_OK(cudaMalloc(&s.dx, bytes));
    CUDA_OK(cudaMemcpy(s.x, host.data(), bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(s.dy, host.data(), bytes, cudaMemcpyHostToDevice));
    b.sets.push_back(s);
  }
  CUDA_OK(cudaMalloc(&b.chan, 8 * size_t(k.c) * sizeof(float)));
  std::vector<float> init(8 * size_t(k.c), 1.0f);
  CUDA_OK(cudaMemcpy(b.chan, init.data(), init.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMalloc(&b.ws, ws_bytes));
  b.ws_bytes = ws_bytes;
  return b;
}

void free_bufs(Bufs& b) {
  for (Set& s : b.sets) cudaFree(s.x), cudaFree(s.y), cudaFree(s.dy), cudaFree(s.dx);
  cudaFree(b.chan), cudaFree(b.ws);
}

enum class Op { Forward, Backward };

bnormStatus_t call(bnormHandle_t h, cudaStream_t st, ncclComm_t comm, const bnormTensorDesc_t& d,
                   const Bufs& b, const Set& s, Op op) {
  const int64_t c = d.c;
  if (op == Op::Forward) {
    if (!comm)
      return bnormForwardTraining(h, st, &d, nullptr, s.x, s.y, chan_at(b, c, 0), chan_at(b, c, 1),
                                  chan_at(b, c, 2), chan_at(b, c, 3), nullptr, chan_at(b, c, 4),
                                  chan_at(b, c, 5), b.ws, b.ws_bytes);
    return bnormSyncForwardTraining(h, st, reinterpret_cast<struct ncclComm*>(comm), &d, nullptr,
                                    -1, s.x, s.y, chan_at(b, c, 0), chan_at(b, c, 1),
                                    chan_at(b, c, 2), chan_at(b, c, 3), nullptr, chan_at(b, c, 4),
                                    chan_at(b, c, 5), b.ws, b.ws_bytes);
  }
  if (!comm)
    return bnormBackward(h, st, &d, nullptr, s.x, s.dy, s.dx, chan_at(b, c, 0), chan_at(b, c, 4),
                         chan_at(b, c, 5), chan_at(b, c, 6), chan_at(b, c, 7), b.ws, b.ws_bytes);
  return bnormSyncBackward(h, st, reinterpret_cast<struct ncclComm*>(comm), &d, nullptr, s.x, s.dy,
                           s.dx, chan_at(b, c, 0), chan_at(b, c, 4), chan_at(b, c, 5),
                           chan_at(b, c, 6), chan_at(b, c, 7), b.ws, b.ws_bytes);
}

double median_us(bnormHandle_t h, cudaStream_t st, ncclComm_t comm, const bnormTensorDesc_t& d,
                 const Bufs& b, Op op, int reps) {
  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) BN_OK(call(h, st, comm, d, b, b.sets[i % b.sets.size()], op));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const Set& s = b.sets[size_t(i) % b.sets.size()];
    CUDA_OK(cudaEventRecord(e0, st));
    BN_OK(call(h, st, comm, d, b, s, op));
    CUDA_OK(cudaEventRecord(e1, st));
    CUDA_OK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(double(ms) * 1e3);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<float> download(const float* p, size_t n) {
  std::vector<float> v(n);
  CUDA_OK(cudaMemcpy(v.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

// Largest |a - b| / (atol + rtol |b|) over the elements.
double worst(const std::vector<float>& a, const std::vector<float>& b, double atol, double rtol) {
  double w = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(double(a[i]) - b[i]) / (atol + rtol * std::fabs(double(b[i])));
    w = std::max(w, std::isfinite(e) ? e : 1e30);
  }
  return w;
}

// The sync path's outputs against the local call's, on set 0.
bool check(bnormHandle_t h, cudaStream_t st, ncclComm_t comm, const bnormTensorDesc_t& d,
           const Bufs& local, const Bufs& sync) {
  const size_t numel = size_t(d.n * d.c * d.spatial), c = size_t(d.c);
  BN_OK(call(h, st, nullptr, d, local, local.sets[0], Op::Forward));
  BN_OK(call(h, st, nullptr, d, local, local.sets[0], Op::Backward));
  BN_OK(call(h, st, comm, d, sync, sync.sets[0], Op::Forward));
  BN_OK(call(h, st, comm, d, sync, sync.sets[0], Op::Backward));
  CUDA_OK(cudaStreamSynchronize(st));
  double w = 0;
  const Set &s = sync.sets[0], &l = local.sets[0];
  w = std::max(w, worst(download(s.y, numel), download(l.y, numel), 1e-4, 1e-4));
  w = std::max(w, worst(download(s.dx, numel), download(l.dx, numel), 1e-4, 1e-3));
  for (int i = 4; i < 8; ++i)
    w = std::max(w, worst(download(chan_at(sync, d.c, i), c), download(chan_at(local, d.c, i), c),
                          1e-4, 1e-4));
  return w <= 1.0;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 30;
  const char* csv = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--reps N] [--csv PATH]\n", argv[0]);
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "bnorm-bench-sync needs a CUDA GPU; none was found\n");
    return 2;
  }
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  ncclComm_t comm;
  int dev0 = 0;
  if (ncclCommInitAll(&comm, 1, &dev0) != ncclSuccess) {
    std::fprintf(stderr, "bnorm-bench-sync: ncclCommInitAll failed\n");
    return 2;
  }
  bnormHandle_t h;
  BN_OK(bnormCreate(&h));
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  FILE* out = csv ? std::fopen(csv, "w") : nullptr;
  if (out) std::fprintf(out, "op,layout,dtype,n,c,spatial,ranks,local_us,sync_us\n");
  std::printf("bnorm-bench-sync on %s: one NCCL rank, median of %d runs\n", prop.name, reps);
  std::printf("%-6s %6s %6s %8s  %-9s %10s %10s %10s %7s\n", "layout", "n", "c", "spatial", "op",
              "local us", "sync us", "extra us", "ratio");
  bool bad = false;
  for (const Case& k : kCases) {
    const bnormTensorDesc_t d{BNORM_DATA_FLOAT, k.layout, k.n, k.c, k.spatial};
    size_t f = 0, bw = 0, sf = 0, sb = 0;
    BN_OK(bnormGetForwardTrainingWorkspaceSize(h, &d, nullptr, &f));
    BN_OK(bnormGetBackwardWorkspaceSize(h, &d, nullptr, &bw));
    BN_OK(bnormGetSyncForwardTrainingWorkspaceSize(h, &d, nullptr, 1, &sf));
    BN_OK(bnormGetSyncBackwardWorkspaceSize(h, &d, nullptr, &sb));
    Bufs local = make_bufs(k, std::max(f, bw), size_t(prop.l2CacheSize));
    Bufs sync = make_bufs(k, std::max(sf, sb), size_t(prop.l2CacheSize));
    const bool ok = check(h, st, comm, d, local, sync);
    if (!ok) std::printf("MISMATCH: sync and local disagree on n=%lld c=%lld spatial=%lld\n",
                         (long long)k.n, (long long)k.c, (long long)k.spatial);
    bad |= !ok;
    for (Op op : {Op::Forward, Op::Backward}) {
      const double lu = median_us(h, st, nullptr, d, local, op, reps);
      const double su = median_us(h, st, comm, d, sync, op, reps);
      const char* name = op == Op::Forward ? "fwd_train" : "bwd";
      std::printf("%-6s %6lld %6lld %8lld  %-9s %10.1f %10.1f %10.1f %7.2f\n",
                  k.layout == BNORM_LAYOUT_NCHW ? "NCHW" : "NHWC", (long long)k.n,
                  (long long)k.c, (long long)k.spatial, name, lu, su, su - lu, su / lu);
      if (out)
        std::fprintf(out, "%s,%s,f32,%lld,%lld,%lld,1,%.2f,%.2f\n", name,
                     k.layout == BNORM_LAYOUT_NCHW ? "NCHW" : "NHWC", (long long)k.n,
                     (long long)k.c, (long long)k.spatial, lu, su);
    }
    free_bufs(local);
    free_bufs(sync);
  }
  if (out) std::fclose(out);
  BN_OK(bnormDestroy(h));
  ncclCommDestroy(comm);
  return bad ? 1 : 0;
}

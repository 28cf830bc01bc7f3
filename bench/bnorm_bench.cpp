// bnorm-bench: bnorm's batch norm against cuDNN's, and both against a copy.
//
// For each case of the suite (ResNet-50's batch-norm layers at N = 256 in
// NHWC fp16, NHWC bf16 and NCHW fp32; BatchNorm1d; 3-D video; a tiny batch;
// spatial 1 with a long batch; one tensor of more than 2^31 elements) and each
// operation (fwd_train, fwd_infer, bwd):
//
//  1. check: bnorm and every cuDNN variant run once on the same random,
//     non-zero inputs; each is compared with a double-precision host
//     reference, and bnorm with cuDNN. bnorm disagreeing with either beyond
//     tolerance is a MISMATCH (a non-zero exit). A cuDNN variant that
//     disagrees with the reference (bnorm agreeing) is dropped from timing and
//     reported as "cudnn-bad", not as bnorm's failure.
//  2. time: CUDA events around each run, warm-up first, the median of many
//     runs. Runs rotate over enough buffer sets (x, dy, output) that their
//     footprint exceeds twice the L2 cache, so no run finds its data in L2.
//     cuDNN: the Ex calls (training, backward) and ForwardInference, in modes
//     SPATIAL and SPATIAL_PERSISTENT (and, where spatial == 1, PER_ACTIVATION,
//     the same operation there, and both tensor formats, which coincide in
//     memory); the fastest variant that agrees with the reference is kept.
//  3. roofline: a cudaMemcpyAsync device-to-device moving the op's compulsory
//     bytes (fwd: read x + write y; bwd: read x, dy + write dx), counted as
//     bytes read plus bytes written.
//
// Output: a table on stdout, geometric-mean speedups (cuDNN time / bnorm
// time) per op, and with --csv PATH a CSV for the reports.
#include <bnorm.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---- errors ---------------------------------------------------------------------------------

[[noreturn]] void fatal(const std::string& msg) {
  std::fflush(stdout);
  std::fprintf(stderr, "bnorm-bench: fatal: %s\n", msg.c_str());
  std::exit(1);
}

#define CK(call)                                                                      \
  do {                                                                                \
    const cudaError_t ck_e_ = (call);                                                 \
    if (ck_e_ != cudaSuccess)                                                         \
      fatal(std::string(#call) + ": " + cudaGetErrorString(ck_e_) + " (line " +      \
            std::to_string(__LINE__) + ")");                                          \
  } while (0)

std::string cudnn_error(cudnnStatus_t s) {
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  std::string out = cudnnGetErrorString(s);
  if (detail[0]) out += std::string(": ") + detail;
  for (char& ch : out)
    if (ch == '\n' || ch == ',') ch = ' ';
  return out;
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return buf;
}

// ---- activation types -------------------------------------------------------------------------

size_t esize(bnormDataType_t t) { return t == BNORM_DATA_FLOAT ? 4 : 2; }
const char* dtype_str(bnormDataType_t t) {
  return t == BNORM_DATA_FLOAT ? "f32" : t == BNORM_DATA_HALF ? "f16" : "bf16";
}
const char* layout_str(bnormLayout_t l) { return l == BNORM_LAYOUT_NCHW ? "NCHW" : "NHWC"; }
cudnnDataType_t cudnn_type(bnormDataType_t t) {
  return t == BNORM_DATA_FLOAT ? CUDNN_DATA_FLOAT
         : t == BNORM_DATA_HALF ? CUDNN_DATA_HALF
                                : CUDNN_DATA_BFLOAT16;
}

float g_half[65536];  // fp16 bits -> float

void init_half_table() {
  for (uint32_t u = 0; u < 65536; ++u) {
    __half_raw r;
    r.x = static_cast<unsigned short>(u);
    g_half[u] = __half2float(__half(r));
  }
}

inline float load_elem(const uint8_t* p, bnormDataType_t t, int64_t i) {
  if (t == BNORM_DATA_FLOAT) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t u;
  std::memcpy(&u, p + 2 * i, 2);
  if (t == BNORM_DATA_HALF) return g_half[u];
  const uint32_t w = uint32_t(u) << 16;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

inline void store_elem(uint8_t* p, bnormDataType_t t, int64_t i, float v) {
  if (t == BNORM_DATA_FLOAT) {
    std::memcpy(p + 4 * i, &v, 4);
  } else if (t == BNORM_DATA_HALF) {
    const __half h = __float2half_rn(v);
    std::memcpy(p + 2 * i, &h, 2);
  } else {
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    std::memcpy(p + 2 * i, &h, 2);
  }
}

// ---- host threads -----------------------------------------------------------------------------

unsigned g_threads = 1;

// f(thread, lo, hi) over [0, n) cut into one contiguous range per thread;
// no thread gets fewer than min_items items.
template <class F>
void parallel_ranges(int64_t n, F&& f, int64_t min_items = 4096) {
  const int64_t t =
      std::max<int64_t>(1, std::min<int64_t>(g_threads, n / std::max<int64_t>(1, min_items) + 1));
  if (t == 1) {
    f(0u, int64_t(0), n);
    return;
  }
  std::vector<std::thread> th;
  for (int64_t i = 0; i < t; ++i) {
    const int64_t lo = n / t * i + std::min(i, n % t);
    const int64_t hi = lo + n / t + (i < n % t ? 1 : 0);
    th.emplace_back([&f, i, lo, hi] { f(static_cast<unsigned>(i), lo, hi); });
  }
  for (auto& x : th) x.join();
}

// ---- the suite --------------------------------------------------------------------------------

enum Op { FWD_TRAIN = 0, FWD_INFER = 1, BWD = 2 };
const char* const kOpName[3] = {"fwd_train", "fwd_infer", "bwd"};

struct BenchCase {
  std::string name;
  bnormLayout_t layout;
  bnormDataType_t dtype;
  int64_t n, c, spatial;
  bool quick;
};

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

std::vector<BenchCase> suite() {
  std::vector<BenchCase> v;
  auto add = [&](std::string name, bnormLayout_t l, bnormDataType_t t, int64_t n, int64_t c,
                 int64_t s, bool quick) { v.push_back({std::move(name), l, t, n, c, s, quick}); };
  // ResNet-50: the distinct (C, H x W) of its batch-norm layers, N = 256.
  struct RN {
    int64_t c, hw;
  };
  const RN rn[] = {{64, 112},  {64, 56},  {256, 56},  {128, 56},  {128, 28}, {512, 28},
                   {256, 28},  {256, 14}, {1024, 14}, {512, 14},  {512, 7},  {2048, 7}};
  struct Variant {
    bnormLayout_t l;
    bnormDataType_t t;
  };
  const Variant rv[] = {{BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},
                        {BNORM_LAYOUT_NHWC, BNORM_DATA_BFLOAT16},
                        {BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT}};
  for (const Variant& var : rv)
    for (const RN& r : rn) {
      const bool quick = (r.c == 256 && r.hw == 56 && var.t == BNORM_DATA_HALF) ||
                         (r.c == 64 && r.hw == 112 && var.t == BNORM_DATA_FLOAT) ||
                         (r.c == 2048 && r.hw == 7 && var.t == BNORM_DATA_BFLOAT16);
      add(fmt("rn50-c%" PRId64 "-%" PRId64 "x%" PRId64 "-%s-%s", r.c, r.hw, r.hw,
              lower(layout_str(var.l)).c_str(), dtype_str(var.t)),
          var.l, var.t, 256, r.c, r.hw * r.hw, quick);
    }
  // BatchNorm1d: (N, C) batches, spatial 1.
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF})
    for (int64_t n : {8192, 65536})
      for (int64_t c : {1024, 4096})
        add(fmt("bn1d-n%" PRId64 "-c%" PRId64 "-%s", n, c, dtype_str(t)), BNORM_LAYOUT_NCHW, t,
            n, c, 1, n == 8192 && c == 1024 && t == BNORM_DATA_FLOAT);
  // 3-D video: N = 8, C = 64, 32 x 56 x 56.
  add("video-n8-c64-32x56x56-nchw-f32", BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT, 8, 64, 32 * 56 * 56,
      false);
  add("video-n8-c64-32x56x56-nhwc-f16", BNORM_LAYOUT_NHWC, BNORM_DATA_HALF, 8, 64, 32 * 56 * 56,
      true);
  // Tiny: launch overhead.
  add("tiny-n2-c16-8x8-nchw-f32", BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT, 2, 16, 64, true);
  // Spatial 1 with a long batch and few channels.
  add("s1-n131072-c8-f32", BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT, int64_t(1) << 17, 8, 1, true);
  // More than 2^31 elements: 256 * 64 * 384 * 384 = 2.42e9 (4.8 GB per fp16
  // tensor; x, dy, dx and a second output fit in 80 GB).
  add("huge-n256-c64-384x384-nhwc-f16", BNORM_LAYOUT_NHWC, BNORM_DATA_HALF, 256, 64, 384 * 384,
      false);
  return v;
}

// ---- options ----------------------------------------------------------------------------------

struct Options {
  bool quick = false;
  bool list = false;
  std::vector<std::string> cases;  // substrings; a case runs if any matches
  bool ops[3] = {true, true, true};
  std::string csv;
  int reps = 30;
  bool verbose = false;
  // bnorm's path (bnormConfig_t::path): AUTO unless asked, so that one
  // choice of AUTO's can be timed against another on the same card.
  bnormPath_t path = BNORM_PATH_AUTO;
};

constexpr const char* kPathName[] = {"auto", "multi_pass", "single_block", "persistent"};

void usage(FILE* f) {
  std::fprintf(f,
               "usage: bnorm-bench [--quick] [--case SUBSTRING]... [--op fwd_train,fwd_infer,bwd]\n"
               "                   [--reps N] [--csv PATH] [--path P] [--list] [--verbose]\n"
               "  --quick       a handful of cases\n"
               "  --case S      only cases whose name contains S (repeatable)\n"
               "  --op LIST     only these operations (comma-separated)\n"
               "  --reps N      timed runs per measurement (default 30; fewer for huge cases)\n"
               "  --csv PATH    also write the results as CSV\n"
               "  --path P      bnorm's path: auto (default), multi_pass, single_block, persistent\n"
               "  --list        print the case names and exit\n"
               "  --verbose     where each case's wall time goes (on stderr)\n");
}

Options parse(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "bnorm-bench: %s needs a value\n", argv[i]);
      usage(stderr);
      std::exit(2);
    }
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--list") {
      o.list = true;
    } else if (a == "--verbose" || a == "-v") {
      o.verbose = true;
    } else if (a == "--case") {
      o.cases.push_back(need(i));
    } else if (a == "--csv") {
      o.csv = need(i);
    } else if (a == "--reps") {
      o.reps = std::atoi(need(i).c_str());
      if (o.reps < 1) {
        std::fprintf(stderr, "bnorm-bench: --reps must be >= 1\n");
        std::exit(2);
      }
    } else if (a == "--op") {
      const std::string v = need(i) + ",";
      o.ops[0] = o.ops[1] = o.ops[2] = false;
      size_t start = 0;
      for (size_t p; (p = v.find(',', start)) != std::string::npos; start = p + 1) {
        const std::string w = v.substr(start, p - start);
        if (w.empty()) continue;
        bool known = false;
        for (int k = 0; k < 3; ++k)
          if (w == kOpName[k]) o.ops[k] = known = true;
        if (!known) {
          std::fprintf(stderr, "bnorm-bench: unknown op '%s'\n", w.c_str());
          std::exit(2);
        }
      }
    } else if (a == "--path") {
      const std::string v = need(i);
      bool known = false;
      for (int k = 0; k < 4; ++k)
        if (v == kPathName[k]) {
          o.path = bnormPath_t(k);
          known = true;
        }
      if (!known) {
        std::fprintf(stderr, "bnorm-bench: unknown path '%s'\n", v.c_str());
        std::exit(2);
      }
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "bnorm-bench: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      std::exit(2);
    }
  }
  return o;
}

// ---- device memory ----------------------------------------------------------------------------

class DevMem {
 public:
  DevMem() = default;
  ~DevMem() { reset(); }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  // false (and the error cleared) when the device has not that much memory.
  bool alloc(size_t bytes) {
    reset();
    if (bytes == 0) return true;
    if (cudaMalloc(&p_, bytes) != cudaSuccess) {
      cudaGetLastError();
      p_ = nullptr;
      return false;
    }
    n_ = bytes;
    return true;
  }
  void reset() {
    if (p_) CK(cudaFree(p_));
    p_ = nullptr;
    n_ = 0;
  }
  uint8_t* get() const { return static_cast<uint8_t*>(p_); }
  size_t bytes() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

size_t align256(size_t b) { return (b + 255) & ~size_t(255); }

// ---- geometry, data and the reference ---------------------------------------------------------

// Element (o, ch, i) of a tensor viewed as outer x c x inner, at (o*c + ch)*inner + i:
// NCHW is n x c x spatial, NHWC is (n*spatial) x c x 1. "Blocks" are the
// outer*c runs of `inner` contiguous elements of one channel.
struct Geom {
  int64_t n, c, spatial, outer, inner;
  int64_t numel() const { return n * c * spatial; }
  int64_t m() const { return n * spatial; }
  int64_t blocks() const { return outer * c; }
};

Geom geom_of(const BenchCase& b) {
  if (b.layout == BNORM_LAYOUT_NCHW) return {b.n, b.c, b.spatial, b.n, b.spatial};
  return {b.n, b.c, b.spatial, b.n * b.spatial, 1};
}

inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Visits every element as f(element index, channel) over block ranges, in parallel.
template <class F>
void for_each_block(const Geom& g, F&& f) {
  parallel_ranges(g.blocks(), [&](unsigned tid, int64_t lo, int64_t hi) {
    int64_t ch = lo % g.c;
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t base = b * g.inner;
      for (int64_t i = 0; i < g.inner; ++i) f(tid, base + i, ch);
      if (++ch == g.c) ch = 0;
    }
  }, std::max<int64_t>(1, 65536 / g.inner));
}

struct HostTensor {
  std::unique_ptr<uint8_t[]> p;
  size_t bytes = 0;
  void alloc(size_t b) {
    if (b != bytes) {
      p.reset(new uint8_t[b]);
      bytes = b;
    }
  }
  uint8_t* get() const { return p.get(); }
};

// x: per-channel mean in [-1, 1] and standard deviation in [0.5, 2], uniform
// noise; dy (if set): uniform in [-1, 1). Both rounded to the activation
// type, both from one hash of (seed, index). Returns the channel means (the
// shift of the reference's sums).
std::vector<double> make_inputs(const Geom& g, bnormDataType_t t, uint64_t seed, HostTensor& x,
                                HostTensor* dy) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> um(-1.0, 1.0), us(0.5, 2.0);
  std::vector<double> mu(g.c), sd(g.c);
  for (int64_t ch = 0; ch < g.c; ++ch) {
    mu[ch] = um(rng);
    sd[ch] = us(rng) * std::sqrt(3.0);  // uniform [-1,1) has variance 1/3
  }
  const uint64_t key = mix64(seed);
  uint8_t* px = x.get();
  uint8_t* pdy = dy ? dy->get() : nullptr;
  for_each_block(g, [&](unsigned, int64_t i, int64_t ch) {
    const uint64_t h = mix64(key ^ uint64_t(i));
    const double ux = double(h >> 40) * 0x1.0p-23 - 1.0;               // 24 bits
    const double ud = double((h >> 8) & 0xffffffu) * 0x1.0p-23 - 1.0;  // 24 more
    store_elem(px, t, i, static_cast<float>(mu[ch] + sd[ch] * ux));
    if (pdy) store_elem(pdy, t, i, static_cast<float>(ud));
  });
  return mu;
}

std::vector<float> random_floats(size_t n, uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = static_cast<float>(u(rng));
  return v;
}

// Per-channel sums of K terms, each thread with its own accumulators,
// merged in thread order.
template <int K, class F>
std::vector<double> channel_sums(const Geom& g, F&& term) {
  std::vector<std::vector<double>> part(g_threads);
  parallel_ranges(g.blocks(), [&](unsigned tid, int64_t lo, int64_t hi) {
    std::vector<double> acc(size_t(g.c) * K, 0.0);
    int64_t ch = lo % g.c;
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t base = b * g.inner;
      double* a = &acc[size_t(ch) * K];
      for (int64_t i = base; i < base + g.inner; ++i) term(i, ch, a);
      if (++ch == g.c) ch = 0;
    }
    part[tid] = std::move(acc);
  }, std::max<int64_t>(1, 65536 / g.inner));
  std::vector<double> out(size_t(g.c) * K, 0.0);
  for (const auto& p : part)
    for (size_t j = 0; j < p.size(); ++j) out[j] += p[j];
  return out;
}

struct RefStats {
  std::vector<double> mean, var, rstd;
};

RefStats ref_stats(const Geom& g, bnormDataType_t t, const HostTensor& x,
                   const std::vector<double>& shift, double eps) {
  const uint8_t* p = x.get();
  const std::vector<double> s = channel_sums<2>(g, [&](int64_t i, int64_t ch, double* acc) {
    const double d = double(load_elem(p, t, i)) - shift[ch];
    acc[0] += d;
    acc[1] += d * d;
  });
  RefStats r;
  const double m = static_cast<double>(g.m());
  r.mean.resize(g.c);
  r.var.resize(g.c);
  r.rstd.resize(g.c);
  for (int64_t ch = 0; ch < g.c; ++ch) {
    const double d = s[2 * ch] / m;
    r.mean[ch] = shift[ch] + d;
    r.var[ch] = std::max(0.0, s[2 * ch + 1] / m - d * d);
    r.rstd[ch] = 1.0 / std::sqrt(r.var[ch] + eps);
  }
  return r;
}

// ---- comparison -------------------------------------------------------------------------------

struct Tol {
  double atol, rtol;
};

struct Agree {
  int64_t bad = 0, count = 0, first = -1;
  double worst = 0.0, first_got = 0.0, first_want = 0.0;
  void add(int64_t i, double got, double want, double lim) {
    ++count;
    check(i, got, want, lim);
  }
  // add() without the count (the caller knows it).
  void check(int64_t i, double got, double want, double lim) {
    const double err = std::fabs(got - want);
    if (err <= lim) {  // false for NaN and infinity too
      if (err > worst * lim) worst = err / lim;
      return;
    }
    worst = INFINITY;
    if (bad++ == 0) {
      first = i;
      first_got = got;
      first_want = want;
    }
  }
  void merge(const Agree& o) {  // o covers later indices
    if (o.bad && !bad) {
      first = o.first;
      first_got = o.first_got;
      first_want = o.first_want;
    }
    bad += o.bad;
    count += o.count;
    worst = std::max(worst, o.worst);
  }
  bool ok() const { return bad == 0; }
  std::string describe(const std::string& what) const {
    if (ok()) return what + fmt(": ok (worst %.3g of the limit)", worst);
    return what + fmt(": %" PRId64 " of %" PRId64 " out of tolerance, first [%" PRId64
                      "] got %.9g want %.9g",
                      bad, count, first, first_got, first_want);
  }
};

Tol tensor_tol(bnormDataType_t t) {
  switch (t) {
    case BNORM_DATA_FLOAT: return {1e-4, 1e-4};
    case BNORM_DATA_HALF: return {4e-3, 4e-3};       // an ulp is 2^-10 relative
    case BNORM_DATA_BFLOAT16: return {3.2e-2, 2e-2};  // an ulp is 2^-7 relative
  }
  return {0, 0};
}
constexpr Tol kMeanTol{1e-4, 1e-4};
constexpr Tol kRstdTol{1e-6, 2e-4};
constexpr Tol kRunMeanTol{1e-4, 1e-4};
constexpr Tol kRunVarTol{1e-6, 2e-4};

// Compares every outs[k] with want(i, ch) (vs_ref[k]) and outs[0] with every
// outs[k] (vs_first[k]; vs_first[0] is empty), element by element, in one
// pass. Each thread keeps its own tallies (no shared cache lines).
template <class Want>
void compare_tensors(const Geom& g, bnormDataType_t t, const std::vector<const uint8_t*>& outs,
                     Tol tol, Want&& want, std::vector<Agree>& vs_ref,
                     std::vector<Agree>& vs_first) {
  const size_t k = outs.size();
  std::vector<std::vector<Agree>> part(g_threads, std::vector<Agree>(2 * k));
  parallel_ranges(g.blocks(), [&](unsigned tid, int64_t lo, int64_t hi) {
    std::vector<Agree> acc(2 * k);
    int64_t ch = lo % g.c;
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t base = b * g.inner;
      for (int64_t i = base; i < base + g.inner; ++i) {
        const double w = want(i, ch);
        const double lim = tol.atol + tol.rtol * std::fabs(w);
        const double g0 = load_elem(outs[0], t, i);
        acc[0].check(i, g0, w, lim);
        for (size_t j = 1; j < k; ++j) {
          const double gj = load_elem(outs[j], t, i);
          acc[j].check(i, gj, w, lim);
          acc[k + j].check(i, g0, gj, tol.atol + tol.rtol * std::fabs(gj));
        }
      }
      if (++ch == g.c) ch = 0;
    }
    part[tid] = std::move(acc);
  }, std::max<int64_t>(1, 65536 / g.inner));
  vs_ref.assign(k, Agree());
  vs_first.assign(k, Agree());
  for (unsigned th = 0; th < g_threads; ++th)
    for (size_t j = 0; j < k; ++j) {
      vs_ref[j].merge(part[th][j]);
      vs_first[j].merge(part[th][k + j]);
    }
  for (size_t j = 0; j < k; ++j) {
    vs_ref[j].count = g.numel();
    vs_first[j].count = j ? g.numel() : 0;
  }
}

Agree compare_vec(const std::vector<float>& got, const std::vector<double>& want, Tol tol) {
  Agree a;
  for (size_t i = 0; i < got.size(); ++i)
    a.add(int64_t(i), got[i], want[i], tol.atol + tol.rtol * std::fabs(want[i]));
  return a;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Sums over m terms: 1e-5 of the sum of the terms' magnitudes, plus 1e-4 relative.
Agree compare_sums(const std::vector<float>& got, const std::vector<double>& want,
                   const std::vector<double>& abs_sum) {
  Agree a;
  for (size_t i = 0; i < got.size(); ++i)
    a.add(int64_t(i), got[i], want[i], 1e-5 * abs_sum[i] + 1e-4 * std::fabs(want[i]) + 1e-6);
  return a;
}

// ---- cuDNN variants ---------------------------------------------------------------------------

const float kOne = 1.0f, kZero = 0.0f;
constexpr double kEps = 1e-5;
constexpr double kFactor = 0.1;
static_assert(kEps >= CUDNN_BN_MIN_EPSILON, "eps below cuDNN's minimum");

struct Candidate {
  cudnnBatchNormMode_t mode;
  cudnnTensorFormat_t fmt;
  std::string label;
  cudnnTensorDescriptor_t xd = nullptr, bnd = nullptr;
  size_t fwd_ws = 0, bwd_ws = 0, reserve = 0;
  bool usable[3] = {false, false, false};
  std::string why[3];  // why not usable
  ~Candidate() {
    if (xd) cudnnDestroyTensorDescriptor(xd);
    if (bnd) cudnnDestroyTensorDescriptor(bnd);
  }
};

cudnnHandle_t g_cudnn = nullptr;
bnormHandle_t g_bnorm = nullptr;
cudaStream_t g_stream = nullptr;
size_t g_l2 = 50u << 20;

void setup_candidate(Candidate& c, const BenchCase& b) {
  auto fail_all = [&](const std::string& why) {
    for (int k = 0; k < 3; ++k) {
      c.usable[k] = false;
      c.why[k] = why;
    }
  };
  if (b.n > INT32_MAX || b.c > INT32_MAX || b.spatial > INT32_MAX)
    return fail_all("a dimension exceeds cuDNN's int");
  cudnnStatus_t s;
  if ((s = cudnnCreateTensorDescriptor(&c.xd)) != CUDNN_STATUS_SUCCESS ||
      (s = cudnnCreateTensorDescriptor(&c.bnd)) != CUDNN_STATUS_SUCCESS)
    return fail_all("cudnnCreateTensorDescriptor: " + cudnn_error(s));
  s = cudnnSetTensor4dDescriptor(c.xd, c.fmt, cudnn_type(b.dtype), int(b.n), int(b.c),
                                 int(b.spatial), 1);
  if (s != CUDNN_STATUS_SUCCESS) return fail_all("cudnnSetTensor4dDescriptor: " + cudnn_error(s));
  s = cudnnDeriveBNTensorDescriptor(c.bnd, c.xd, c.mode);
  if (s != CUDNN_STATUS_SUCCESS)
    return fail_all("cudnnDeriveBNTensorDescriptor: " + cudnn_error(s));
  for (int k = 0; k < 3; ++k) c.usable[k] = true;
  // The queries as PyTorch makes them (z and y descriptors = x's).
  s = cudnnGetBatchNormalizationTrainingExReserveSpaceSize(g_cudnn, c.mode, CUDNN_BATCHNORM_OPS_BN,
                                                           nullptr, c.xd, &c.reserve);
  if (s != CUDNN_STATUS_SUCCESS)
    return fail_all("cudnnGetBatchNormalizationTrainingExReserveSpaceSize: " + cudnn_error(s));
  s = cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
      g_cudnn, c.mode, CUDNN_BATCHNORM_OPS_BN, c.xd, c.xd, c.xd, c.bnd, nullptr, &c.fwd_ws);
  if (s != CUDNN_STATUS_SUCCESS) {
    // the backward needs the forward's reserve space: both go
    c.usable[FWD_TRAIN] = c.usable[BWD] = false;
    c.why[FWD_TRAIN] = c.why[BWD] =
        "cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize: " + cudnn_error(s);
  }
  s = cudnnGetBatchNormalizationBackwardExWorkspaceSize(g_cudnn, c.mode, CUDNN_BATCHNORM_OPS_BN,
                                                        c.xd, c.xd, c.xd, nullptr, c.xd, c.bnd,
                                                        nullptr, &c.bwd_ws);
  if (s != CUDNN_STATUS_SUCCESS && c.usable[BWD]) {
    c.usable[BWD] = false;
    c.why[BWD] = "cudnnGetBatchNormalizationBackwardExWorkspaceSize: " + cudnn_error(s);
  }
}

// ---- one case ---------------------------------------------------------------------------------

struct OpResult {
  Op op;
  bool ran = false;
  double bnorm_us = -1, cudnn_us = -1, copy_gbps = -1;
  std::string mode = "n/a";
  std::string check = "ok";
  bool failed = false;   // bnorm wrong or in error: non-zero exit
  bool warning = false;  // cuDNN variant wrong, or nothing to compare with
  std::vector<std::string> notes;
};

struct CaseRun {
  const BenchCase& bc;
  const Options& opt;
  Geom g;
  bnormTensorDesc_t desc;
  bnormConfig_t cfg;
  size_t tbytes = 0, tal = 0, stride = 0;
  int nsets = 1;
  DevMem pool, cbuf, chan, bws, cws, creserve;
  size_t bws_bytes = 0, cws_bytes = 0, creserve_bytes = 0;
  // per-channel device arrays
  float *gamma, *beta, *rm0, *rv0, *b_sm, *b_sr, *b_rm, *b_rv, *c_sm, *c_sr, *c_rm, *c_rv,
      *s_mean, *s_rstd, *b_dg, *b_db, *c_dg, *c_db;
  // host
  HostTensor hx, hdy;
  std::vector<HostTensor> hout;  // [0] bnorm's output, then one per cuDNN variant
  std::vector<double> shift;
  std::vector<float> h_gamma, h_beta, h_rm0, h_rv0;
  RefStats ref;
  bool have_ref = false;
  std::vector<std::unique_ptr<Candidate>> cands;

  CaseRun(const BenchCase& b, const Options& o) : bc(b), opt(o), g(geom_of(b)) {
    desc = {b.dtype, b.layout, b.n, b.c, b.spatial};
    cfg = BNORM_CONFIG_INITIALIZER;
    cfg.path = o.path;
    cfg.eps = kEps;
    cfg.exponential_average_factor = kFactor;
    tbytes = size_t(g.numel()) * esize(b.dtype);
    tal = align256(tbytes);
    stride = 3 * tal;
  }

  uint8_t* x(int s) const { return pool.get() + size_t(s) * stride; }
  uint8_t* dy(int s) const { return pool.get() + size_t(s) * stride + tal; }
  uint8_t* out(int s) const { return pool.get() + size_t(s) * stride + 2 * tal; }
};

// Buffer sets so that the runs' footprint exceeds 2x L2: one when a single
// run streams through 4x L2 or more.
int sets_for(size_t footprint) {
  if (footprint >= 4 * g_l2) return 1;
  return int((2 * g_l2 + footprint - 1) / footprint) + 1;
}

void reps_for(size_t footprint, int want, int* warm, int* reps) {
  if (footprint > (size_t(4) << 30)) {
    *warm = 1;
    *reps = std::min(want, 10);
  } else if (footprint > (size_t(1) << 30)) {
    *warm = 2;
    *reps = std::min(want, 20);
  } else {
    *warm = 3;
    *reps = want;
  }
}

std::vector<cudaEvent_t> g_ev;

// Median time in microseconds of launch(set) (true: enqueued), or -1 if a launch failed.
template <class Launch>
double time_us(int nsets, size_t footprint, int want_reps, Launch&& launch) {
  int warm, reps;
  reps_for(footprint, want_reps, &warm, &reps);
  while (g_ev.size() < size_t(2 * reps)) {
    cudaEvent_t e;
    CK(cudaEventCreate(&e));
    g_ev.push_back(e);
  }
  int s = 0;
  for (int i = 0; i < warm; ++i) {
    if (!launch(s)) {
      CK(cudaStreamSynchronize(g_stream));
      return -1;
    }
    s = (s + 1) % nsets;
  }
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(g_ev[2 * i], g_stream));
    if (!launch(s)) {
      CK(cudaStreamSynchronize(g_stream));
      return -1;
    }
    CK(cudaEventRecord(g_ev[2 * i + 1], g_stream));
    s = (s + 1) % nsets;
  }
  CK(cudaStreamSynchronize(g_stream));
  CK(cudaGetLastError());
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) CK(cudaEventElapsedTime(&ms[i], g_ev[2 * i], g_ev[2 * i + 1]));
  std::sort(ms.begin(), ms.end());
  const double med = reps % 2 ? ms[reps / 2] : 0.5 * (double(ms[reps / 2 - 1]) + ms[reps / 2]);
  return med * 1000.0;
}

void poison(void* p, size_t bytes) { CK(cudaMemsetAsync(p, 0xff, bytes, g_stream)); }
void upload(void* d, const void* h, size_t bytes) {
  CK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, g_stream));
  CK(cudaStreamSynchronize(g_stream));
}
void download(void* h, const void* d, size_t bytes) {
  CK(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, g_stream));
  CK(cudaStreamSynchronize(g_stream));
}
std::vector<float> download_floats(const float* d, size_t n) {
  std::vector<float> v(n);
  download(v.data(), d, n * sizeof(float));
  return v;
}

// ---- the cuDNN calls ----------------------------------------------------------------------------

cudnnStatus_t cudnn_fwd_train(CaseRun& r, Candidate& c, const void* x, void* y, float* sm,
                              float* sr, float* rm, float* rv) {
  return cudnnBatchNormalizationForwardTrainingEx(
      g_cudnn, c.mode, CUDNN_BATCHNORM_OPS_BN, &kOne, &kZero, c.xd, x, nullptr, nullptr, c.xd, y,
      c.bnd, r.gamma, r.beta, kFactor, rm, rv, kEps, sm, sr, nullptr, r.cws.get(), r.cws_bytes,
      c.reserve ? r.creserve.get() : nullptr, c.reserve);
}

cudnnStatus_t cudnn_fwd_infer(CaseRun& r, Candidate& c, const void* x, void* y) {
  return cudnnBatchNormalizationForwardInference(g_cudnn, c.mode, &kOne, &kZero, c.xd, x, c.xd, y,
                                                 c.bnd, r.gamma, r.beta, r.rm0, r.rv0, kEps);
}

cudnnStatus_t cudnn_bwd(CaseRun& r, Candidate& c, const void* x, const void* dy, void* dx) {
  return cudnnBatchNormalizationBackwardEx(
      g_cudnn, c.mode, CUDNN_BATCHNORM_OPS_BN, &kOne, &kZero, &kOne, &kZero, c.xd, x, nullptr,
      nullptr, c.xd, dy, nullptr, nullptr, c.xd, dx, c.bnd, r.gamma, nullptr, r.c_dg, r.c_db, kEps,
      r.s_mean, r.s_rstd, nullptr, r.cws.get(), r.cws_bytes,
      c.reserve ? r.creserve.get() : nullptr, c.reserve);
}

// ---- checks -----------------------------------------------------------------------------------

void note_mismatch(OpResult& res, const Agree& a, const std::string& what) {
  if (a.ok()) return;
  res.failed = true;
  res.check = "MISMATCH";
  res.notes.push_back(a.describe(what));
}

// A cuDNN variant that disagrees with the reference is not timed.
bool cand_agrees(OpResult& res, Candidate& c, Op op,
                 const std::vector<std::pair<std::string, Agree>>& checks) {
  for (const auto& ck : checks)
    if (!ck.second.ok()) {
      c.usable[op] = false;
      c.why[op] = "disagrees with the reference";
      res.warning = true;
      res.notes.push_back("cuDNN " + c.label + " dropped: " + ck.second.describe(ck.first));
      return false;
    }
  return true;
}

void finish_check(OpResult& res, bool compared_with_cudnn) {
  if (res.failed) return;
  if (!compared_with_cudnn) {
    res.check = "ok-ref";  // checked against the host reference only
    bool dropped = false;
    for (const auto& n : res.notes) dropped |= n.find("dropped") != std::string::npos;
    if (dropped) res.check = "cudnn-bad";
  }
}

// What the variants that ran gave: tensor output in r.hout[1 + k], and
// per-channel outputs.
struct CandRun {
  Candidate* cd;
  std::vector<std::vector<float>> chan;
};

// Downloads the tensor output at d into r.hout[slot] and returns its host copy.
const uint8_t* keep_output(CaseRun& r, size_t slot, const void* d) {
  if (r.hout.size() <= slot) r.hout.resize(slot + 1);
  r.hout[slot].alloc(r.tbytes);
  download(r.hout[slot].get(), d, r.tbytes);
  return r.hout[slot].get();
}

void bnorm_failed(OpResult& res, const char* call, bnormStatus_t st) {
  res.failed = true;
  res.check = "bnorm-error";
  res.notes.push_back(std::string(call) + ": " + bnormGetStatusString(st) + ": " +
                      bnormGetLastErrorMessage());
}

// Judges the variants (each against the reference: tensor vs_ref[1 + k], and
// per-channel outputs by chan_vs_ref) and returns the index of the first that
// agrees, or -1.
template <class ChanVsRef>
int judge_candidates(OpResult& res, Op op, std::vector<CandRun>& runs,
                     const std::vector<Agree>& vs_ref, const char* tensor_name,
                     ChanVsRef&& chan_vs_ref) {
  int primary = -1;
  for (size_t k = 0; k < runs.size(); ++k) {
    std::vector<std::pair<std::string, Agree>> checks = {{tensor_name, vs_ref[1 + k]}};
    for (auto& ck : chan_vs_ref(runs[k])) checks.push_back(ck);
    if (cand_agrees(res, *runs[k].cd, op, checks) && primary < 0) primary = int(k);
  }
  return primary;
}

void check_fwd_train(CaseRun& r, OpResult& res) {
  const Geom& g = r.g;
  const size_t c = size_t(g.c);
  const double m = double(g.m());
  std::vector<double> want_rm(c), want_rv(c);
  for (size_t ch = 0; ch < c; ++ch) {
    want_rm[ch] = (1 - kFactor) * r.h_rm0[ch] + kFactor * r.ref.mean[ch];
    want_rv[ch] = (1 - kFactor) * r.h_rv0[ch] + kFactor * r.ref.var[ch] * m / (m - 1);
  }
  const uint8_t* hx = r.hx.get();
  const bnormDataType_t t = r.bc.dtype;
  auto want = [&](int64_t i, int64_t ch) {
    return double(r.h_gamma[ch]) *
               ((double(load_elem(hx, t, i)) - r.ref.mean[ch]) * r.ref.rstd[ch]) +
           double(r.h_beta[ch]);
  };

  upload(r.b_rm, r.h_rm0.data(), c * 4);
  upload(r.b_rv, r.h_rv0.data(), c * 4);
  poison(r.out(0), r.tbytes);
  poison(r.b_sm, c * 4);
  poison(r.b_sr, c * 4);
  const bnormStatus_t st =
      bnormForwardTraining(g_bnorm, g_stream, &r.desc, &r.cfg, r.x(0), r.out(0), r.gamma, r.beta,
                           r.b_rm, r.b_rv, nullptr, r.b_sm, r.b_sr, r.bws.get(), r.bws_bytes);
  if (st != BNORM_STATUS_SUCCESS) return bnorm_failed(res, "bnormForwardTraining", st);
  std::vector<const uint8_t*> outs = {keep_output(r, 0, r.out(0))};
  const auto bsm = download_floats(r.b_sm, c), bsr = download_floats(r.b_sr, c);
  const auto brm = download_floats(r.b_rm, c), brv = download_floats(r.b_rv, c);

  std::vector<CandRun> runs;
  for (auto& cp : r.cands) {
    Candidate& cd = *cp;
    if (!cd.usable[FWD_TRAIN]) continue;
    upload(r.c_rm, r.h_rm0.data(), c * 4);
    upload(r.c_rv, r.h_rv0.data(), c * 4);
    poison(r.cbuf.get(), r.tbytes);
    poison(r.c_sm, c * 4);
    poison(r.c_sr, c * 4);
    const cudnnStatus_t s =
        cudnn_fwd_train(r, cd, r.x(0), r.cbuf.get(), r.c_sm, r.c_sr, r.c_rm, r.c_rv);
    CK(cudaStreamSynchronize(g_stream));
    if (s != CUDNN_STATUS_SUCCESS) {
      cd.usable[FWD_TRAIN] = false;
      cd.why[FWD_TRAIN] = cudnn_error(s);
      continue;
    }
    outs.push_back(keep_output(r, outs.size(), r.cbuf.get()));
    runs.push_back({&cd, {download_floats(r.c_sm, c), download_floats(r.c_sr, c),
                          download_floats(r.c_rm, c), download_floats(r.c_rv, c)}});
  }

  std::vector<Agree> vs_ref, vs_first;
  compare_tensors(g, t, outs, tensor_tol(t), want, vs_ref, vs_first);
  const int p = judge_candidates(res, FWD_TRAIN, runs, vs_ref, "y", [&](const CandRun& cr) {
    return std::vector<std::pair<std::string, Agree>>{
        {"saved mean", compare_vec(cr.chan[0], r.ref.mean, kMeanTol)},
        {"saved rstd", compare_vec(cr.chan[1], r.ref.rstd, kRstdTol)},
        {"running mean", compare_vec(cr.chan[2], want_rm, kRunMeanTol)},
        {"running var", compare_vec(cr.chan[3], want_rv, kRunVarTol)}};
  });

  note_mismatch(res, vs_ref[0], "y: bnorm vs reference");
  note_mismatch(res, compare_vec(bsm, r.ref.mean, kMeanTol), "saved mean: bnorm vs reference");
  note_mismatch(res, compare_vec(bsr, r.ref.rstd, kRstdTol), "saved rstd: bnorm vs reference");
  note_mismatch(res, compare_vec(brm, want_rm, kRunMeanTol), "running mean: bnorm vs reference");
  note_mismatch(res, compare_vec(brv, want_rv, kRunVarTol), "running var: bnorm vs reference");
  if (p >= 0) {
    const std::string who = " (" + runs[p].cd->label + ")";
    const auto& ch = runs[p].chan;
    note_mismatch(res, vs_first[1 + p], "y: bnorm vs cuDNN" + who);
    note_mismatch(res, compare_vec(bsm, to_double(ch[0]), kMeanTol), "saved mean: bnorm vs cuDNN" + who);
    note_mismatch(res, compare_vec(bsr, to_double(ch[1]), kRstdTol), "saved rstd: bnorm vs cuDNN" + who);
    note_mismatch(res, compare_vec(brm, to_double(ch[2]), kRunMeanTol),
                  "running mean: bnorm vs cuDNN" + who);
    note_mismatch(res, compare_vec(brv, to_double(ch[3]), kRunVarTol),
                  "running var: bnorm vs cuDNN" + who);
  }
  finish_check(res, p >= 0);
}

void check_fwd_infer(CaseRun& r, OpResult& res) {
  const Geom& g = r.g;
  const size_t c = size_t(g.c);
  std::vector<double> rinf(c);
  for (size_t ch = 0; ch < c; ++ch) rinf[ch] = 1.0 / std::sqrt(double(r.h_rv0[ch]) + kEps);
  const uint8_t* hx = r.hx.get();
  const bnormDataType_t t = r.bc.dtype;
  auto want = [&](int64_t i, int64_t ch) {
    return double(r.h_gamma[ch]) *
               ((double(load_elem(hx, t, i)) - double(r.h_rm0[ch])) * rinf[ch]) +
           double(r.h_beta[ch]);
  };

  poison(r.out(0), r.tbytes);
  const bnormStatus_t st = bnormForwardInference(g_bnorm, g_stream, &r.desc, &r.cfg, r.x(0),
                                                 r.out(0), r.gamma, r.beta, r.rm0, r.rv0);
  if (st != BNORM_STATUS_SUCCESS) return bnorm_failed(res, "bnormForwardInference", st);
  std::vector<const uint8_t*> outs = {keep_output(r, 0, r.out(0))};

  std::vector<CandRun> runs;
  for (auto& cp : r.cands) {
    Candidate& cd = *cp;
    if (!cd.usable[FWD_INFER]) continue;
    poison(r.cbuf.get(), r.tbytes);
    const cudnnStatus_t s = cudnn_fwd_infer(r, cd, r.x(0), r.cbuf.get());
    CK(cudaStreamSynchronize(g_stream));
    if (s != CUDNN_STATUS_SUCCESS) {
      cd.usable[FWD_INFER] = false;
      cd.why[FWD_INFER] = cudnn_error(s);
      continue;
    }
    outs.push_back(keep_output(r, outs.size(), r.cbuf.get()));
    runs.push_back({&cd, {}});
  }

  std::vector<Agree> vs_ref, vs_first;
  compare_tensors(g, t, outs, tensor_tol(t), want, vs_ref, vs_first);
  const int p = judge_candidates(res, FWD_INFER, runs, vs_ref, "y", [](const CandRun&) {
    return std::vector<std::pair<std::string, Agree>>{};
  });
  note_mismatch(res, vs_ref[0], "y: bnorm vs reference");
  if (p >= 0) note_mismatch(res, vs_first[1 + p], "y: bnorm vs cuDNN (" + runs[p].cd->label + ")");
  finish_check(res, p >= 0);
}

void check_bwd(CaseRun& r, OpResult& res) {
  const Geom& g = r.g;
  const size_t c = size_t(g.c);
  const double m = double(g.m());
  const uint8_t* hx = r.hx.get();
  const uint8_t* hdy = r.hdy.get();
  const bnormDataType_t t = r.bc.dtype;

  // Both libraries get the same saved statistics: the reference's, in fp32.
  std::vector<float> smean(c), srstd(c);
  for (size_t ch = 0; ch < c; ++ch) {
    smean[ch] = float(r.ref.mean[ch]);
    srstd[ch] = float(r.ref.rstd[ch]);
  }
  upload(r.s_mean, smean.data(), c * 4);
  upload(r.s_rstd, srstd.data(), c * 4);
  const std::vector<double> sums = channel_sums<4>(g, [&](int64_t i, int64_t ch, double* acc) {
    const double d = load_elem(hdy, t, i);
    const double xhat = (double(load_elem(hx, t, i)) - smean[ch]) * double(srstd[ch]);
    acc[0] += d;
    acc[1] += d * xhat;
    acc[2] += std::fabs(d);
    acc[3] += std::fabs(d * xhat);
  });
  std::vector<double> want_db(c), want_dg(c), abs_db(c), abs_dg(c), coef(c);
  double dx_scale = 1.0;
  for (size_t ch = 0; ch < c; ++ch) {
    want_db[ch] = sums[4 * ch];
    want_dg[ch] = sums[4 * ch + 1];
    abs_db[ch] = sums[4 * ch + 2];
    abs_dg[ch] = sums[4 * ch + 3];
    coef[ch] = double(r.h_gamma[ch]) * double(srstd[ch]);
    dx_scale = std::max(dx_scale, std::fabs(coef[ch]));
  }
  auto want = [&](int64_t i, int64_t ch) {
    const double xhat = (double(load_elem(hx, t, i)) - smean[ch]) * double(srstd[ch]);
    return coef[ch] * (double(load_elem(hdy, t, i)) - want_db[ch] / m - xhat * want_dg[ch] / m);
  };
  Tol tol = tensor_tol(t);
  tol.atol *= dx_scale;

  poison(r.out(0), r.tbytes);
  poison(r.b_dg, c * 4);
  poison(r.b_db, c * 4);
  const bnormStatus_t st =
      bnormBackward(g_bnorm, g_stream, &r.desc, &r.cfg, r.x(0), r.dy(0), r.out(0), r.gamma,
                    r.s_mean, r.s_rstd, r.b_dg, r.b_db, r.bws.get(), r.bws_bytes);
  if (st != BNORM_STATUS_SUCCESS) return bnorm_failed(res, "bnormBackward", st);
  std::vector<const uint8_t*> outs = {keep_output(r, 0, r.out(0))};
  const auto bdg = download_floats(r.b_dg, c), bdb = download_floats(r.b_db, c);

  std::vector<CandRun> runs;
  for (auto& cp : r.cands) {
    Candidate& cd = *cp;
    if (!cd.usable[BWD]) continue;
    // The forward first, for the reserve space the backward may read.
    cudnnStatus_t s =
        cudnn_fwd_train(r, cd, r.x(0), r.cbuf.get(), r.c_sm, r.c_sr, r.c_rm, r.c_rv);
    if (s == CUDNN_STATUS_SUCCESS) {
      poison(r.cbuf.get(), r.tbytes);
      poison(r.c_dg, c * 4);
      poison(r.c_db, c * 4);
      s = cudnn_bwd(r, cd, r.x(0), r.dy(0), r.cbuf.get());
    }
    CK(cudaStreamSynchronize(g_stream));
    if (s != CUDNN_STATUS_SUCCESS) {
      cd.usable[BWD] = false;
      cd.why[BWD] = cudnn_error(s);
      continue;
    }
    outs.push_back(keep_output(r, outs.size(), r.cbuf.get()));
    runs.push_back({&cd, {download_floats(r.c_dg, c), download_floats(r.c_db, c)}});
  }

  std::vector<Agree> vs_ref, vs_first;
  compare_tensors(g, t, outs, tol, want, vs_ref, vs_first);
  const int p = judge_candidates(res, BWD, runs, vs_ref, "dx", [&](const CandRun& cr) {
    return std::vector<std::pair<std::string, Agree>>{
        {"dgamma", compare_sums(cr.chan[0], want_dg, abs_dg)},
        {"dbeta", compare_sums(cr.chan[1], want_db, abs_db)}};
  });
  note_mismatch(res, vs_ref[0], "dx: bnorm vs reference");
  note_mismatch(res, compare_sums(bdg, want_dg, abs_dg), "dgamma: bnorm vs reference");
  note_mismatch(res, compare_sums(bdb, want_db, abs_db), "dbeta: bnorm vs reference");
  if (p >= 0) {
    const std::string who = " (" + runs[p].cd->label + ")";
    note_mismatch(res, vs_first[1 + p], "dx: bnorm vs cuDNN" + who);
    note_mismatch(res, compare_sums(bdg, to_double(runs[p].chan[0]), abs_dg),
                  "dgamma: bnorm vs cuDNN" + who);
    note_mismatch(res, compare_sums(bdb, to_double(runs[p].chan[1]), abs_db),
                  "dbeta: bnorm vs cuDNN" + who);
  }
  finish_check(res, p >= 0);
}

// ---- timing -------------------------------------------------------------------------------------

size_t compulsory_bytes(const CaseRun& r, Op op) { return (op == BWD ? 3 : 2) * r.tbytes; }

void time_op(CaseRun& r, OpResult& res) {
  const Op op = res.op;
  const size_t fp = compulsory_bytes(r, op);
  auto bnorm_launch = [&](int s) {
    bnormStatus_t st = BNORM_STATUS_SUCCESS;
    switch (op) {
      case FWD_TRAIN:
        st = bnormForwardTraining(g_bnorm, g_stream, &r.desc, &r.cfg, r.x(s), r.out(s), r.gamma,
                                  r.beta, r.b_rm, r.b_rv, nullptr, r.b_sm, r.b_sr, r.bws.get(),
                                  r.bws_bytes);
        break;
      case FWD_INFER:
        st = bnormForwardInference(g_bnorm, g_stream, &r.desc, &r.cfg, r.x(s), r.out(s), r.gamma,
                                   r.beta, r.rm0, r.rv0);
        break;
      case BWD:
        st = bnormBackward(g_bnorm, g_stream, &r.desc, &r.cfg, r.x(s), r.dy(s), r.out(s), r.gamma,
                           r.s_mean, r.s_rstd, r.b_dg, r.b_db, r.bws.get(), r.bws_bytes);
        break;
    }
    return st == BNORM_STATUS_SUCCESS;
  };
  res.bnorm_us = time_us(r.nsets, fp, r.opt.reps, bnorm_launch);
  if (res.bnorm_us < 0) {
    res.failed = true;
    res.check = "bnorm-error";
    res.notes.push_back(std::string("timing: ") + bnormGetLastErrorMessage());
  }

  for (auto& cp : r.cands) {
    Candidate& cd = *cp;
    if (!cd.usable[op]) continue;
    if (op == BWD) {
      // fill the reserve space once, from set 0
      if (cudnn_fwd_train(r, cd, r.x(0), r.cbuf.get(), r.c_sm, r.c_sr, r.c_rm, r.c_rv) !=
          CUDNN_STATUS_SUCCESS)
        continue;
    }
    auto launch = [&](int s) {
      cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
      switch (op) {
        case FWD_TRAIN:
          st = cudnn_fwd_train(r, cd, r.x(s), r.out(s), r.c_sm, r.c_sr, r.c_rm, r.c_rv);
          break;
        case FWD_INFER: st = cudnn_fwd_infer(r, cd, r.x(s), r.out(s)); break;
        case BWD: st = cudnn_bwd(r, cd, r.x(s), r.dy(s), r.out(s)); break;
      }
      return st == CUDNN_STATUS_SUCCESS;
    };
    const double us = time_us(r.nsets, fp, r.opt.reps, launch);
    if (us >= 0 && (res.cudnn_us < 0 || us < res.cudnn_us)) {
      res.cudnn_us = us;
      res.mode = cd.label;
    }
  }
}

// GB/s of a device-to-device copy of bytes/2 (bytes read + written), or -1.
double copy_gbps(size_t bytes, int want_reps) {
  const size_t half = bytes / 2;
  const size_t hal = align256(half);
  const int nsets = sets_for(2 * half);
  DevMem pool;
  if (!pool.alloc(size_t(nsets) * 2 * hal)) return -1;
  CK(cudaMemsetAsync(pool.get(), 0, pool.bytes(), g_stream));
  const double us = time_us(nsets, 2 * half, want_reps, [&](int s) {
    uint8_t* base = pool.get() + size_t(s) * 2 * hal;
    return cudaMemcpyAsync(base + hal, base, half, cudaMemcpyDeviceToDevice, g_stream) ==
           cudaSuccess;
  });
  return us > 0 ? double(2 * half) / (us * 1e3) : -1;
}

// ---- a whole case -------------------------------------------------------------------------------

std::vector<OpResult> run_case(const BenchCase& bc, const Options& opt) {
  std::vector<OpResult> results;
  for (int k = 0; k < 3; ++k)
    if (opt.ops[k]) {
      OpResult res;
      res.op = Op(k);
      results.push_back(res);
    }
  auto skip_all = [&](const std::string& why) {
    for (auto& res : results) {
      res.check = "skipped";
      res.warning = true;
      res.notes.push_back(why);
    }
    return results;
  };

  auto t_last = std::chrono::steady_clock::now();
  std::string profile;
  auto lap = [&](const char* what) {
    const auto now = std::chrono::steady_clock::now();
    profile += fmt(" %s %.2fs", what, std::chrono::duration<double>(now - t_last).count());
    t_last = now;
  };

  CaseRun r(bc, opt);
  const Geom& g = r.g;
  const size_t c = size_t(g.c);
  const bool need_dy = opt.ops[BWD];

  // Device memory: the buffer sets, cuDNN's output for the check, workspaces.
  r.nsets = sets_for(2 * r.tbytes);
  {
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    const size_t need = size_t(r.nsets) * r.stride + r.tal + (size_t(256) << 20);
    if (need > free_b)
      return skip_all(fmt("needs %.1f GiB of device memory, %.1f GiB free", need / 1073741824.0,
                          free_b / 1073741824.0));
  }
  if (!r.pool.alloc(size_t(r.nsets) * r.stride) || !r.cbuf.alloc(r.tal))
    return skip_all("device memory allocation failed");
  const size_t cal = align256(c * 4);
  if (!r.chan.alloc(18 * cal)) return skip_all("device memory allocation failed");
  float** arrays[18] = {&r.gamma, &r.beta, &r.rm0,  &r.rv0,    &r.b_sm,   &r.b_sr,
                        &r.b_rm,  &r.b_rv, &r.c_sm, &r.c_sr,   &r.c_rm,   &r.c_rv,
                        &r.s_mean, &r.s_rstd, &r.b_dg, &r.b_db, &r.c_dg, &r.c_db};
  for (int i = 0; i < 18; ++i) *arrays[i] = reinterpret_cast<float*>(r.chan.get() + i * cal);

  // bnorm's workspace: the larger of training's and backward's.
  {
    size_t a = 0, b = 0;
    bnormStatus_t s1 = bnormGetForwardTrainingWorkspaceSize(g_bnorm, &r.desc, &r.cfg, &a);
    bnormStatus_t s2 = bnormGetBackwardWorkspaceSize(g_bnorm, &r.desc, &r.cfg, &b);
    if (s1 != BNORM_STATUS_SUCCESS || s2 != BNORM_STATUS_SUCCESS) {
      for (auto& res : results) {
        res.failed = true;
        res.check = "bnorm-error";
        res.notes.push_back(std::string("workspace query: ") + bnormGetLastErrorMessage());
      }
      return results;
    }
    r.bws_bytes = std::max(a, b);
    if (!r.bws.alloc(r.bws_bytes)) return skip_all("device memory allocation failed");
  }

  // cuDNN variants: both modes; both tensor formats when spatial == 1.
  {
    std::vector<cudnnTensorFormat_t> fmts = {bc.layout == BNORM_LAYOUT_NCHW ? CUDNN_TENSOR_NCHW
                                                                            : CUDNN_TENSOR_NHWC};
    if (bc.spatial == 1)
      fmts.push_back(bc.layout == BNORM_LAYOUT_NCHW ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW);
    // With spatial == 1, per-activation normalization is the same operation
    // (PyTorch uses it for 2-D input), so it competes too.
    std::vector<cudnnBatchNormMode_t> modes = {CUDNN_BATCHNORM_SPATIAL,
                                               CUDNN_BATCHNORM_SPATIAL_PERSISTENT};
    if (bc.spatial == 1) modes.push_back(CUDNN_BATCHNORM_PER_ACTIVATION);
    for (size_t f = 0; f < fmts.size(); ++f)
      for (cudnnBatchNormMode_t mode : modes) {
        auto cd = std::make_unique<Candidate>();
        cd->mode = mode;
        cd->fmt = fmts[f];
        cd->label = mode == CUDNN_BATCHNORM_SPATIAL              ? "spatial"
                    : mode == CUDNN_BATCHNORM_SPATIAL_PERSISTENT ? "persistent"
                                                                 : "per-activation";
        if (f > 0) cd->label += fmts[f] == CUDNN_TENSOR_NHWC ? "/nhwc" : "/nchw";
        setup_candidate(*cd, bc);
        r.cws_bytes = std::max({r.cws_bytes, cd->fwd_ws, cd->bwd_ws});
        r.creserve_bytes = std::max(r.creserve_bytes, cd->reserve);
        r.cands.push_back(std::move(cd));
      }
    if (!r.cws.alloc(r.cws_bytes) || !r.creserve.alloc(r.creserve_bytes))
      for (auto& cd : r.cands)
        for (int k = 0; k < 3; ++k) {
          cd->usable[k] = false;
          cd->why[k] = "no device memory for cuDNN's workspace";
        }
  }

  // Inputs: generated on the host, uploaded to set 0, copied to the others.
  r.hx.alloc(r.tbytes);
  const uint64_t seed = mix64(std::hash<std::string>()(bc.name));
  if (need_dy) r.hdy.alloc(r.tbytes);
  r.shift = make_inputs(g, bc.dtype, seed, r.hx, need_dy ? &r.hdy : nullptr);
  upload(r.x(0), r.hx.get(), r.tbytes);
  if (need_dy) upload(r.dy(0), r.hdy.get(), r.tbytes);
  for (int done = 1; done < r.nsets;) {
    const int n = std::min(done, r.nsets - done);
    CK(cudaMemcpyAsync(r.pool.get() + size_t(done) * r.stride, r.pool.get(), size_t(n) * r.stride,
                       cudaMemcpyDeviceToDevice, g_stream));
    done += n;
  }
  r.h_gamma = random_floats(c, seed + 2, 0.5, 1.5);
  r.h_beta = random_floats(c, seed + 3, -0.5, 0.5);
  r.h_rm0 = random_floats(c, seed + 4, -1.0, 1.0);
  r.h_rv0 = random_floats(c, seed + 5, 0.5, 2.0);
  upload(r.gamma, r.h_gamma.data(), c * 4);
  upload(r.beta, r.h_beta.data(), c * 4);
  upload(r.rm0, r.h_rm0.data(), c * 4);
  upload(r.rv0, r.h_rv0.data(), c * 4);
  upload(r.b_rm, r.h_rm0.data(), c * 4);
  upload(r.b_rv, r.h_rv0.data(), c * 4);
  upload(r.c_rm, r.h_rm0.data(), c * 4);
  upload(r.c_rv, r.h_rv0.data(), c * 4);
  lap("setup+inputs");
  if (opt.ops[FWD_TRAIN] || opt.ops[BWD]) r.ref = ref_stats(g, bc.dtype, r.hx, r.shift, kEps);
  lap("ref");

  for (auto& res : results) {
    res.ran = true;
    switch (res.op) {
      case FWD_TRAIN: check_fwd_train(r, res); break;
      case FWD_INFER: check_fwd_infer(r, res); break;
      case BWD: check_bwd(r, res); break;
    }
    if (res.check != "bnorm-error") time_op(r, res);
    if (res.cudnn_us < 0) {
      // "label, label: reason; label: reason"
      std::vector<std::pair<std::string, std::string>> groups;  // reason, labels
      for (auto& cd : r.cands) {
        const std::string& w = cd->why[res.op].empty() ? std::string("timing failed") : cd->why[res.op];
        auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& gr) { return gr.first == w; });
        if (it == groups.end()) groups.push_back({w, cd->label});
        else it->second += ", " + cd->label;
      }
      std::string why;
      for (const auto& gr : groups) why += (why.empty() ? "" : "; ") + gr.second + ": " + gr.first;
      res.notes.push_back("cuDNN n/a: " + why);
    }
    lap(kOpName[res.op]);
  }
  // Free the case before the copies need the memory.
  r.pool.reset();
  r.cbuf.reset();
  r.cws.reset();
  r.creserve.reset();
  double fwd_copy = -2;
  for (auto& res : results) {
    const size_t bytes = compulsory_bytes(r, res.op);
    if (res.op != BWD && fwd_copy > -2) {
      res.copy_gbps = fwd_copy;
      continue;
    }
    res.copy_gbps = copy_gbps(bytes, opt.reps);
    if (res.op != BWD) fwd_copy = res.copy_gbps;
  }
  lap("copy");
  if (opt.verbose) std::fprintf(stderr, "[%s]%s\n", bc.name.c_str(), profile.c_str());
  return results;
}

// ---- output -------------------------------------------------------------------------------------

std::string num(double v, const char* f) { return v < 0 ? std::string("n/a") : fmt(f, v); }

void print_header() {
  std::printf("%-32s %-9s %10s %10s %-20s %8s %9s %6s  %s\n", "case", "op", "bnorm_us",
              "cudnn_us", "cudnn_mode", "speedup", "bnorm_GB/s", "%copy", "check");
  std::printf("%s\n", std::string(124, '-').c_str());
}

void print_row(const BenchCase& bc, const OpResult& r, size_t bytes) {
  const double gbps = r.bnorm_us > 0 ? double(bytes) / (r.bnorm_us * 1e3) : -1;
  const double speedup = r.bnorm_us > 0 && r.cudnn_us > 0 ? r.cudnn_us / r.bnorm_us : -1;
  const double pct = gbps > 0 && r.copy_gbps > 0 ? 100.0 * gbps / r.copy_gbps : -1;
  std::printf("%-32s %-9s %10s %10s %-20s %8s %9s %6s  %s\n", bc.name.c_str(), kOpName[r.op],
              num(r.bnorm_us, "%.1f").c_str(), num(r.cudnn_us, "%.1f").c_str(), r.mode.c_str(),
              num(speedup, "%.2fx").c_str(), num(gbps, "%.0f").c_str(), num(pct, "%.0f%%").c_str(),
              r.check.c_str());
  for (const auto& n : r.notes)
    if (r.failed || r.warning || n.rfind("cuDNN n/a", 0) == 0)
      std::printf("    %s %s\n", r.failed ? "!!" : "--", n.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  std::vector<BenchCase> cases;
  for (const BenchCase& bc : suite()) {
    if (opt.quick && !bc.quick) continue;
    if (!opt.cases.empty()) {
      bool any = false;
      for (const auto& s : opt.cases) any |= bc.name.find(s) != std::string::npos;
      if (!any) continue;
    }
    cases.push_back(bc);
  }
  if (opt.list) {
    for (const auto& bc : cases)
      std::printf("%s\t%s\t%s\tn=%" PRId64 "\tc=%" PRId64 "\tspatial=%" PRId64 "\n",
                  bc.name.c_str(), layout_str(bc.layout), dtype_str(bc.dtype), bc.n, bc.c,
                  bc.spatial);
    return 0;
  }

  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::fprintf(stderr, "bnorm-bench needs a CUDA GPU; none found\n");
    return 2;
  }
  if (cases.empty()) {
    std::fprintf(stderr, "bnorm-bench: no case matches\n");
    return 2;
  }

  init_half_table();
  g_threads = std::max(1u, std::min(64u, std::thread::hardware_concurrency()));
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  if (prop.l2CacheSize > 0) g_l2 = size_t(prop.l2CacheSize);
  CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  {
    const cudnnStatus_t s = cudnnCreate(&g_cudnn);
    if (s != CUDNN_STATUS_SUCCESS) fatal("cudnnCreate: " + cudnn_error(s));
    if (cudnnSetStream(g_cudnn, g_stream) != CUDNN_STATUS_SUCCESS) fatal("cudnnSetStream");
  }
  if (bnormCreate(&g_bnorm) != BNORM_STATUS_SUCCESS)
    fatal(std::string("bnormCreate: ") + bnormGetLastErrorMessage());

  char date[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  const size_t cudnn_v = cudnnGetVersion();
  std::printf("bnorm-bench  %s\n", date);
  std::printf("device: %s (sm_%d%d, %d SMs, L2 %.0f MiB, %.0f GiB)  cuDNN %zu.%zu.%zu  bnorm %d\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, g_l2 / 1048576.0,
              prop.totalGlobalMem / 1073741824.0, cudnn_v / 10000, cudnn_v / 100 % 100,
              cudnn_v % 100, bnormGetVersion());
  std::printf("eps %g, factor %g; median of %d runs (fewer above 1 GB) after warm-up; buffers "
              "rotate over > 2x L2; GB/s on compulsory bytes (fwd: x + y, bwd: x + dy + dx);\n"
              "speedup = cuDNN time / bnorm time; %%copy = bnorm GB/s / device-to-device copy "
              "GB/s; bnorm path: %s.\n\n",
              kEps, kFactor, opt.reps, kPathName[opt.path]);

  FILE* csv = nullptr;
  if (!opt.csv.empty()) {
    csv = std::fopen(opt.csv.c_str(), "w");
    if (!csv) fatal("cannot write " + opt.csv);
    std::fprintf(csv, "op,layout,dtype,n,c,spatial,bnorm_us,cudnn_us,cudnn_mode,torch_us,copy_gbps,bnorm_gbps\n");
  }

  const auto t_start = std::chrono::steady_clock::now();
  print_header();
  int failures = 0, warnings = 0;
  std::vector<std::string> failed_rows;
  double log_sum[3] = {0, 0, 0};
  int log_n[3] = {0, 0, 0};
  for (const BenchCase& bc : cases) {
    const std::vector<OpResult> results = run_case(bc, opt);
    for (const OpResult& res : results) {
      const size_t bytes = (res.op == BWD ? 3 : 2) * size_t(bc.n * bc.c * bc.spatial) * esize(bc.dtype);
      print_row(bc, res, bytes);
      if (res.failed) {
        ++failures;
        failed_rows.push_back(bc.name + " " + kOpName[res.op] + ": " + res.check);
      }
      if (res.warning) ++warnings;
      const double gbps = res.bnorm_us > 0 ? double(bytes) / (res.bnorm_us * 1e3) : -1;
      if (!res.failed && res.bnorm_us > 0 && res.cudnn_us > 0) {
        log_sum[res.op] += std::log(res.cudnn_us / res.bnorm_us);
        ++log_n[res.op];
      }
      if (csv) {
        std::fprintf(csv, "%s,%s,%s,%" PRId64 ",%" PRId64 ",%" PRId64 ",%s,%s,%s,,%s,%s\n",
                     kOpName[res.op], layout_str(bc.layout), dtype_str(bc.dtype), bc.n, bc.c,
                     bc.spatial, res.bnorm_us > 0 ? fmt("%.3f", res.bnorm_us).c_str() : "",
                     res.cudnn_us > 0 ? fmt("%.3f", res.cudnn_us).c_str() : "",
                     res.mode.c_str(), res.copy_gbps > 0 ? fmt("%.1f", res.copy_gbps).c_str() : "",
                     gbps > 0 ? fmt("%.1f", gbps).c_str() : "");
        std::fflush(csv);
      }
    }
  }
  if (csv) std::fclose(csv);

  std::printf("\ngeometric-mean speedup (cuDNN time / bnorm time, cases with both):\n");
  double all_sum = 0;
  int all_n = 0;
  for (int k = 0; k < 3; ++k) {
    if (!opt.ops[k]) continue;
    if (log_n[k])
      std::printf("  %-9s %.3fx over %d cases\n", kOpName[k], std::exp(log_sum[k] / log_n[k]),
                  log_n[k]);
    else
      std::printf("  %-9s n/a\n", kOpName[k]);
    all_sum += log_sum[k];
    all_n += log_n[k];
  }
  if (all_n) std::printf("  %-9s %.3fx over %d measurements\n", "all", std::exp(all_sum / all_n), all_n);
  if (warnings) std::printf("\n%d row(s) with warnings (see the -- lines)\n", warnings);
  if (failures) {
    std::printf("\nFAILED: %d row(s) where bnorm is wrong or in error:\n", failures);
    for (const auto& f : failed_rows) std::printf("  %s\n", f.c_str());
  }
  if (!opt.csv.empty()) std::printf("\nCSV: %s\n", opt.csv.c_str());
  std::printf("wall time: %.0f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  bnormDestroy(g_bnorm);
  cudnnDestroy(g_cudnn);
  for (cudaEvent_t e : g_ev) cudaEventDestroy(e);
  cudaStreamDestroy(g_stream);
  return failures ? 1 : 0;
}

// bnorm-bench-fused: batch norm + residual add + ReLU, fused, against the
// same work unfused and against cuDNN's fused batch norm.
//
// Cases: the last batch norm of each ResNet-50 bottleneck block, where
// y = ReLU(BN(x) + z) with z the block's shortcut, at N = 256 in NHWC fp16
// (bf16 too with --bf16): C x HxW = 256 x 56x56, 512 x 28x28, 1024 x 14x14,
// 2048 x 7x7.
//
// Three contenders per case and direction:
//   forward training
//     bnorm fused     bnormForwardTraining with epilogue ADD_RELU (residual
//                     = z; it writes the 1-bit ReLU mask)
//     bnorm unfused   bnormForwardTraining, then this file's add+ReLU kernel
//                     (16-byte vectors, y = max(y + z, 0) in place): what a
//                     user without fusion runs
//     cuDNN fused     cudnnBatchNormalizationForwardTrainingEx, bnOps
//                     BN_ADD_ACTIVATION, mode SPATIAL_PERSISTENT, ReLU
//   backward
//     bnorm fused     bnormBackward with ADD_RELU (the forward's mask;
//                     residual_grad = dz)
//     bnorm unfused   this file's masked-gradient kernel (g = y > 0 ? dy : 0,
//                     written as dz = g), then bnormBackward on g
//     cuDNN fused     cudnnBatchNormalizationBackwardEx, BN_ADD_ACTIVATION
//                     (y, dz, and the reserve space of its own forward)
//
//  1. check: every contender runs once on the same random, non-zero x, z,
//     dy. Each output is compared with a double-precision host reference and
//     bnorm fused's with cuDNN's and bnorm unfused's: y, dz, dx, dgamma,
//     dbeta (and bnorm's mask, saved and running statistics). bnorm fused
//     disagreeing with the reference, with bnorm unfused or with cuDNN fused
//     is a MISMATCH (exit 1 at the end); cuDNN disagreeing with the
//     reference is printed beside it, to say which side is wrong.
//     Near the ReLU's kink (|pre-activation| <= the type's absolute
//     tolerance) either ReLU decision is right, so there each library's dz
//     must be dy or 0 and its dx must follow its own decision; elements where
//     two libraries decided differently are counted, not compared.
//  2. time: CUDA events around each run, warm-up first, the median of
//     --reps runs. Runs rotate over enough buffer sets that their footprint
//     exceeds twice the L2 cache. Each backward runs on the outputs (mask,
//     y, reserve space) of its own forward.
//  3. roofline: a device-to-device cudaMemcpyAsync moving the compulsory
//     bytes, counted as bytes read + written: forward reads x, z and writes
//     y (3 tensors); backward reads x, dy and writes dx, dz (4 tensors). The
//     ReLU mask (1 bit per element, 1/16 of an fp16 tensor) and cuDNN's
//     reserve space are not counted.
//
// Output: a table, geometric-mean speedups per direction, and with
// --csv PATH a CSV. Exit status: 0, 1 (a MISMATCH or a bnorm error), 2 (no
// GPU, bad arguments).
#include <bnorm.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
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
  std::fprintf(stderr, "bnorm-bench-fused: fatal: %s\n", msg.c_str());
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

// ---- the benchmark's own kernels ------------------------------------------------------------
// Both stream 16-byte vectors (8 values of 2 bytes) with a grid-stride loop;
// arithmetic in fp32. The pointers must be 16-byte aligned (the launchers
// check); a tail of n % 8 elements is done one element per thread.

template <class T2>
__device__ __forceinline__ float2 to_float2(T2 v);
template <>
__device__ __forceinline__ float2 to_float2<__half2>(__half2 v) {
  return __half22float2(v);
}
template <>
__device__ __forceinline__ float2 to_float2<__nv_bfloat162>(__nv_bfloat162 v) {
  return __bfloat1622float2(v);
}
template <class T2>
__device__ __forceinline__ T2 from_float2(float2 f);
template <>
__device__ __forceinline__ __half2 from_float2<__half2>(float2 f) {
  return __float22half2_rn(f);
}
template <>
__device__ __forceinline__ __nv_bfloat162 from_float2<__nv_bfloat162>(float2 f) {
  return __float22bfloat162_rn(f);
}

// Two packed values (the first in the low 16 bits) to float2 and back.
template <class T2>
__device__ __forceinline__ float2 unpack2(uint32_t u) {
  T2 v;
  memcpy(&v, &u, sizeof(v));
  return to_float2<T2>(v);
}
template <class T2>
__device__ __forceinline__ uint32_t pack2(float2 f) {
  const T2 v = from_float2<T2>(f);
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  return u;
}

// ReLU that lets NaN through (as PyTorch's and bnorm's do); max(v, 0) otherwise.
__device__ __forceinline__ float relu(float v) { return v < 0.0f ? 0.0f : v; }

template <class T2>
__device__ __forceinline__ uint32_t add_relu2(uint32_t y, uint32_t z) {
  float2 a = unpack2<T2>(y);
  const float2 b = unpack2<T2>(z);
  a.x = relu(a.x + b.x);
  a.y = relu(a.y + b.y);
  return pack2<T2>(a);
}

// dy where y > 0, else 0 (bit operations on dy: no rounding).
template <class T2>
__device__ __forceinline__ uint32_t masked2(uint32_t y, uint32_t dy) {
  const float2 f = unpack2<T2>(y);
  return (f.x > 0.0f ? dy & 0x0000ffffu : 0u) | (f.y > 0.0f ? dy & 0xffff0000u : 0u);
}

// y = max(y + z, 0), in place.
template <class T2>
__global__ void __launch_bounds__(256)
    add_relu_kernel(uint16_t* __restrict__ y, const uint16_t* __restrict__ z, int64_t n) {
  const int64_t nvec = n >> 3;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  uint4* yv = reinterpret_cast<uint4*>(y);
  const uint4* zv = reinterpret_cast<const uint4*>(z);
  for (int64_t i = first; i < nvec; i += stride) {
    uint4 a = yv[i];
    const uint4 b = __ldg(zv + i);
    a.x = add_relu2<T2>(a.x, b.x);
    a.y = add_relu2<T2>(a.y, b.y);
    a.z = add_relu2<T2>(a.z, b.z);
    a.w = add_relu2<T2>(a.w, b.w);
    yv[i] = a;
  }
  for (int64_t i = (nvec << 3) + first; i < n; i += stride)
    y[i] = uint16_t(add_relu2<T2>(y[i], z[i]) & 0xffffu);
}

// g = y > 0 ? dy : 0, written to g (the residual's gradient dz, and what
// bnormBackward then reads as its dy).
template <class T2>
__global__ void __launch_bounds__(256)
    masked_grad_kernel(const uint16_t* __restrict__ y, const uint16_t* __restrict__ dy,
                       uint16_t* __restrict__ g, int64_t n) {
  const int64_t nvec = n >> 3;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint4* yv = reinterpret_cast<const uint4*>(y);
  const uint4* dv = reinterpret_cast<const uint4*>(dy);
  uint4* gv = reinterpret_cast<uint4*>(g);
  for (int64_t i = first; i < nvec; i += stride) {
    const uint4 a = __ldg(yv + i);
    const uint4 d = __ldg(dv + i);
    uint4 o;
    o.x = masked2<T2>(a.x, d.x);
    o.y = masked2<T2>(a.y, d.y);
    o.z = masked2<T2>(a.z, d.z);
    o.w = masked2<T2>(a.w, d.w);
    gv[i] = o;
  }
  for (int64_t i = (nvec << 3) + first; i < n; i += stride)
    g[i] = uint16_t(masked2<T2>(y[i], dy[i]) & 0xffffu);
}

int g_sms = 132;

// Enough 256-thread blocks for 8 per SM (2048 threads: full occupancy), fewer
// when there is less work.
int grid_for(int64_t n) {
  const int64_t items = std::max<int64_t>(1, n / 8);
  return int(std::min<int64_t>((items + 255) / 256, int64_t(g_sms) * 8));
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

cudaError_t launch_add_relu(bnormDataType_t t, void* y, const void* z, int64_t n,
                            cudaStream_t s) {
  if (!aligned16(y) || !aligned16(z)) return cudaErrorMisalignedAddress;
  uint16_t* py = static_cast<uint16_t*>(y);
  const uint16_t* pz = static_cast<const uint16_t*>(z);
  if (t == BNORM_DATA_HALF)
    add_relu_kernel<__half2><<<grid_for(n), 256, 0, s>>>(py, pz, n);
  else
    add_relu_kernel<__nv_bfloat162><<<grid_for(n), 256, 0, s>>>(py, pz, n);
  return cudaGetLastError();
}

cudaError_t launch_masked_grad(bnormDataType_t t, const void* y, const void* dy, void* g,
                               int64_t n, cudaStream_t s) {
  if (!aligned16(y) || !aligned16(dy) || !aligned16(g)) return cudaErrorMisalignedAddress;
  const uint16_t* py = static_cast<const uint16_t*>(y);
  const uint16_t* pd = static_cast<const uint16_t*>(dy);
  uint16_t* pg = static_cast<uint16_t*>(g);
  if (t == BNORM_DATA_HALF)
    masked_grad_kernel<__half2><<<grid_for(n), 256, 0, s>>>(py, pd, pg, n);
  else
    masked_grad_kernel<__nv_bfloat162><<<grid_for(n), 256, 0, s>>>(py, pd, pg, n);
  return cudaGetLastError();
}

// ---- activation types (2-byte only) ---------------------------------------------------------

const char* dtype_str(bnormDataType_t t) { return t == BNORM_DATA_HALF ? "f16" : "bf16"; }
cudnnDataType_t cudnn_type(bnormDataType_t t) {
  return t == BNORM_DATA_HALF ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
}

float g_half[65536];  // fp16 bits -> float

void init_half_table() {
  for (uint32_t u = 0; u < 65536; ++u) {
    __half_raw r;
    r.x = static_cast<unsigned short>(u);
    g_half[u] = __half2float(__half(r));
  }
}

inline double load_elem(const uint8_t* p, bnormDataType_t t, int64_t i) {
  uint16_t u;
  std::memcpy(&u, p + 2 * i, 2);
  if (t == BNORM_DATA_HALF) return g_half[u];
  const uint32_t w = uint32_t(u) << 16;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

inline void store_elem(uint8_t* p, bnormDataType_t t, int64_t i, float v) {
  if (t == BNORM_DATA_HALF) {
    const __half h = __float2half_rn(v);
    std::memcpy(p + 2 * i, &h, 2);
  } else {
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    std::memcpy(p + 2 * i, &h, 2);
  }
}

// ---- host threads ---------------------------------------------------------------------------

unsigned g_threads = 1;

// f(thread, lo, hi) over [0, n) cut into one contiguous range per thread.
template <class F>
void parallel_ranges(int64_t n, F&& f, int64_t min_items = 65536) {
  const int64_t t = std::max<int64_t>(1, std::min<int64_t>(g_threads, n / min_items + 1));
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

// ---- the suite ------------------------------------------------------------------------------

enum Dir { FWD = 0, BWD = 1 };
const char* const kDirName[2] = {"fwd_train", "bwd"};

// The three contenders.
enum Lib { FUSED = 0, UNFUSED = 1, CUDNN = 2 };
const char* const kLibName[3] = {"bnorm fused", "bnorm unfused", "cuDNN fused"};

struct BenchCase {
  std::string name;
  bnormDataType_t dtype;
  int64_t n, c, h, w;
  bool quick;
  bool optional;  // bf16: only with --bf16 or a --case naming bf16
  int64_t spatial() const { return h * w; }
  int64_t numel() const { return n * c * h * w; }
};

std::vector<BenchCase> suite() {
  struct RN {
    int64_t c, hw;
  };
  const RN rn[] = {{256, 56}, {512, 28}, {1024, 14}, {2048, 7}};
  std::vector<BenchCase> v;
  for (bnormDataType_t t : {BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
    for (const RN& r : rn) {
      BenchCase b;
      b.name = fmt("rn50-c%" PRId64 "-%" PRId64 "x%" PRId64 "-nhwc-%s", r.c, r.hw, r.hw,
                   t == BNORM_DATA_HALF ? "fp16" : "bf16");
      b.dtype = t;
      b.n = 256;
      b.c = r.c;
      b.h = b.w = r.hw;
      b.quick = r.c == 256;
      b.optional = t != BNORM_DATA_HALF;
      v.push_back(b);
    }
  return v;
}

// ---- options --------------------------------------------------------------------------------

struct Options {
  bool quick = false;
  bool bf16 = false;
  bool list = false;
  std::vector<std::string> cases;  // substrings; a case runs if any matches
  std::string csv;
  int reps = 30;
};

void usage(FILE* f) {
  std::fprintf(f,
               "usage: bnorm-bench-fused [--quick] [--bf16] [--case SUBSTRING]... [--reps N]\n"
               "                         [--csv PATH] [--list]\n"
               "  --quick       one case (C=256, 56x56)\n"
               "  --bf16        the bf16 cases too (fp16 only by default)\n"
               "  --case S      only cases whose name contains S (repeatable; bf16 cases\n"
               "                are included when S contains \"bf16\")\n"
               "  --reps N      timed runs per measurement (default 30)\n"
               "  --csv PATH    also write the results as CSV\n"
               "  --list        print the selected case names and exit\n"
               "Exit status: 0 ok, 1 a MISMATCH or a bnorm error, 2 no GPU or bad arguments.\n");
}

Options parse(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "bnorm-bench-fused: %s needs a value\n", argv[i]);
      usage(stderr);
      std::exit(2);
    }
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--bf16") {
      o.bf16 = true;
    } else if (a == "--list") {
      o.list = true;
    } else if (a == "--case") {
      o.cases.push_back(need(i));
    } else if (a == "--csv") {
      o.csv = need(i);
    } else if (a == "--reps") {
      const std::string v = need(i);
      char* end = nullptr;
      const long r = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || r < 1 || r > 100000) {
        std::fprintf(stderr, "bnorm-bench-fused: --reps needs an integer in [1, 100000]\n");
        std::exit(2);
      }
      o.reps = int(r);
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "bnorm-bench-fused: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      std::exit(2);
    }
  }
  return o;
}

// ---- memory ---------------------------------------------------------------------------------

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

cudnnHandle_t g_cudnn = nullptr;
bnormHandle_t g_bnorm = nullptr;
cudaStream_t g_stream = nullptr;
size_t g_l2 = 50u << 20;

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

// ---- inputs and the reference ---------------------------------------------------------------

inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Visits the elements of an NHWC tensor of c channels as f(thread, index,
// channel), in parallel.
template <class F>
void for_each_elem(int64_t numel, int64_t c, F&& f) {
  parallel_ranges(numel, [&](unsigned tid, int64_t lo, int64_t hi) {
    int64_t ch = lo % c;
    for (int64_t i = lo; i < hi; ++i) {
      f(tid, i, ch);
      if (++ch == c) ch = 0;
    }
  });
}

// Per-channel sums of K terms: each thread its own accumulators, merged in
// thread order.
template <int K, class F>
std::vector<double> channel_sums(int64_t numel, int64_t c, F&& term) {
  std::vector<std::vector<double>> part(g_threads);
  parallel_ranges(numel, [&](unsigned tid, int64_t lo, int64_t hi) {
    std::vector<double> acc(size_t(c) * K, 0.0);
    int64_t ch = lo % c;
    for (int64_t i = lo; i < hi; ++i) {
      term(i, ch, &acc[size_t(ch) * K]);
      if (++ch == c) ch = 0;
    }
    part[tid] = std::move(acc);
  });
  std::vector<double> out(size_t(c) * K, 0.0);
  for (const auto& p : part)
    for (size_t j = 0; j < p.size(); ++j) out[j] += p[j];
  return out;
}

// x: per channel a mean in [-1, 1] and a standard deviation in [0.5, 2]
// (uniform noise); z and dy: uniform in [-1, 1). All rounded to the
// activation type. Returns the channel means (the shift of the reference's
// sums).
std::vector<double> make_inputs(const BenchCase& bc, uint64_t seed, HostTensor& x, HostTensor& z,
                                HostTensor& dy) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> um(-1.0, 1.0), us(0.5, 2.0);
  std::vector<double> mu(bc.c), sd(bc.c);
  for (int64_t ch = 0; ch < bc.c; ++ch) {
    mu[ch] = um(rng);
    sd[ch] = us(rng) * std::sqrt(3.0);  // uniform [-1,1) has variance 1/3
  }
  const uint64_t k1 = mix64(seed), k2 = mix64(seed ^ 0x5bd1e9955bd1e995ULL);
  const bnormDataType_t t = bc.dtype;
  uint8_t* px = x.get();
  uint8_t* pz = z.get();
  uint8_t* pd = dy.get();
  for_each_elem(bc.numel(), bc.c, [&](unsigned, int64_t i, int64_t ch) {
    const uint64_t h1 = mix64(k1 ^ uint64_t(i)), h2 = mix64(k2 ^ uint64_t(i));
    const double ux = double(h1 >> 40) * 0x1.0p-23 - 1.0;               // 24 bits
    const double ud = double((h1 >> 8) & 0xffffffu) * 0x1.0p-23 - 1.0;  // 24 more
    const double uz = double(h2 >> 40) * 0x1.0p-23 - 1.0;
    store_elem(px, t, i, static_cast<float>(mu[ch] + sd[ch] * ux));
    store_elem(pz, t, i, static_cast<float>(uz));
    store_elem(pd, t, i, static_cast<float>(ud));
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

// ---- comparison -----------------------------------------------------------------------------

struct Tol {
  double atol, rtol;
};

Tol tensor_tol(bnormDataType_t t) {
  return t == BNORM_DATA_HALF ? Tol{4e-3, 4e-3}  // an ulp is 2^-10 relative
                              : Tol{3.2e-2, 2e-2};  // an ulp is 2^-7 relative
}
constexpr Tol kMeanTol{1e-4, 1e-4};
constexpr Tol kRstdTol{1e-6, 2e-4};
constexpr Tol kRunMeanTol{1e-4, 1e-4};
constexpr Tol kRunVarTol{1e-6, 2e-4};

struct Agree {
  int64_t bad = 0, count = 0, first = -1;
  double worst = 0.0, first_got = 0.0, first_want = 0.0;
  void add(int64_t i, double got, double want, double lim) {
    ++count;
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

// The gradient a library let through the ReLU at one element: the
// reference's decision (gref), except near the kink (amb), where either is
// right and the library's own counts: the nearer of dy and 0 to its dz
// (*ok false if dz is near neither). Nearer, not "within tolerance": with a
// small dy both are, and the wrong pick would bias the reference's sums.
inline double lib_grad(double dz, double dy, double gref, bool amb, Tol tol, bool* ok) {
  *ok = true;
  if (!amb) return gref;
  if (std::fabs(dz - dy) < std::fabs(dz)) {
    if (std::fabs(dz - dy) <= tol.atol + tol.rtol * std::fabs(dy)) return dy;
  } else if (std::fabs(dz) <= tol.atol) {
    return 0.0;
  }
  *ok = false;
  return gref;
}

// ---- cuDNN ----------------------------------------------------------------------------------

const float kOne = 1.0f, kZero = 0.0f;
constexpr double kEps = 1e-5;
constexpr double kFactor = 0.1;
static_assert(kEps >= CUDNN_BN_MIN_EPSILON, "eps below cuDNN's minimum");
constexpr cudnnBatchNormMode_t kMode = CUDNN_BATCHNORM_SPATIAL_PERSISTENT;
constexpr cudnnBatchNormOps_t kOps = CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION;

// ---- one case -------------------------------------------------------------------------------

struct OpResult {
  Dir dir;
  double us[3] = {-1, -1, -1};  // per Lib
  double copy_gbps = -1;
  size_t bytes = 0;  // compulsory
  std::string check = "ok";
  bool failed = false;  // bnorm wrong or in error: exit 1
  std::vector<std::string> notes;
};

// Everything a case keeps on the device, and its cuDNN descriptors.
struct Run {
  const BenchCase& bc;
  const Options& opt;
  bnormTensorDesc_t desc{};
  bnormConfig_t plain{};
  int64_t numel = 0;
  size_t tbytes = 0, tal = 0, mask_bytes = 0, mal = 0, reserve_bytes = 0, ral = 0, stride = 0;
  int nsets = 1;
  DevMem pool, chan, bws, cws;
  size_t bws_bytes = 0, cws_bytes = 0;
  float *gamma = nullptr, *beta = nullptr;
  float *rm[3] = {}, *rv[3] = {}, *sm[3] = {}, *sr[3] = {}, *dg[3] = {}, *db[3] = {};
  // cuDNN
  cudnnTensorDescriptor_t xd = nullptr, bnd = nullptr;
  cudnnActivationDescriptor_t act = nullptr;
  bool cudnn_setup = false;
  std::string cudnn_why;  // why not set up
  std::string err;        // the last failed enqueue

  Run(const BenchCase& b, const Options& o) : bc(b), opt(o) {
    desc = {b.dtype, BNORM_LAYOUT_NHWC, b.n, b.c, b.spatial()};
    plain = BNORM_CONFIG_INITIALIZER;
    plain.eps = kEps;
    plain.exponential_average_factor = kFactor;
    numel = b.numel();
    tbytes = size_t(numel) * 2;
    tal = align256(tbytes);
  }
  ~Run() {
    if (xd) cudnnDestroyTensorDescriptor(xd);
    if (bnd) cudnnDestroyTensorDescriptor(bnd);
    if (act) cudnnDestroyActivationDescriptor(act);
  }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  // A buffer set: x, z, dy, y, dx, dz, the ReLU mask, cuDNN's reserve space.
  uint8_t* tensor(int s, int k) const { return pool.get() + size_t(s) * stride + size_t(k) * tal; }
  uint8_t* x(int s) const { return tensor(s, 0); }
  uint8_t* z(int s) const { return tensor(s, 1); }
  uint8_t* dy(int s) const { return tensor(s, 2); }
  uint8_t* y(int s) const { return tensor(s, 3); }
  uint8_t* dx(int s) const { return tensor(s, 4); }
  uint8_t* dz(int s) const { return tensor(s, 5); }
  uint8_t* mask(int s) const { return tensor(s, 6); }
  uint8_t* reserve(int s) const { return reserve_bytes ? tensor(s, 6) + mal : nullptr; }

  // One configuration for both directions, as a user would keep it: the
  // forward reads residual and writes the mask, the backward reads the mask
  // and writes residual_grad.
  bnormConfig_t fused(int s) const {
    bnormConfig_t c = plain;
    c.epilogue = BNORM_EPILOGUE_ADD_RELU;
    c.residual = z(s);
    c.residual_grad = dz(s);
    c.relu_mask = mask(s);
    c.relu_mask_bytes = mask_bytes;
    return c;
  }
};

bool bnorm_ok(Run& r, bnormStatus_t st, const char* call) {
  if (st == BNORM_STATUS_SUCCESS) return true;
  r.err = fmt("%s: %s: %s", call, bnormGetStatusString(st), bnormGetLastErrorMessage());
  return false;
}
bool cuda_ok(Run& r, cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  r.err = fmt("%s: %s", what, cudaGetErrorString(e));
  return false;
}
bool cudnn_ok(Run& r, cudnnStatus_t st, const char* call) {
  if (st == CUDNN_STATUS_SUCCESS) return true;
  r.err = std::string(call) + ": " + cudnn_error(st);
  return false;
}

// Enqueues library `lib`'s forward training on buffer set s; false (r.err
// says why) if a call refused.
bool enqueue_fwd(Run& r, int lib, int s) {
  if (lib == FUSED) {
    const bnormConfig_t cfg = r.fused(s);
    return bnorm_ok(r,
                    bnormForwardTraining(g_bnorm, g_stream, &r.desc, &cfg, r.x(s), r.y(s), r.gamma,
                                         r.beta, r.rm[FUSED], r.rv[FUSED], nullptr, r.sm[FUSED],
                                         r.sr[FUSED], r.bws.get(), r.bws_bytes),
                    "bnormForwardTraining (ADD_RELU)");
  }
  if (lib == UNFUSED)
    return bnorm_ok(r,
                    bnormForwardTraining(g_bnorm, g_stream, &r.desc, &r.plain, r.x(s), r.y(s),
                                         r.gamma, r.beta, r.rm[UNFUSED], r.rv[UNFUSED], nullptr,
                                         r.sm[UNFUSED], r.sr[UNFUSED], r.bws.get(), r.bws_bytes),
                    "bnormForwardTraining") &&
           cuda_ok(r, launch_add_relu(r.bc.dtype, r.y(s), r.z(s), r.numel, g_stream),
                   "add+ReLU kernel");
  return cudnn_ok(
      r,
      cudnnBatchNormalizationForwardTrainingEx(
          g_cudnn, kMode, kOps, &kOne, &kZero, r.xd, r.x(s), r.xd, r.z(s), r.xd, r.y(s), r.bnd,
          r.gamma, r.beta, kFactor, r.rm[CUDNN], r.rv[CUDNN], kEps, r.sm[CUDNN], r.sr[CUDNN],
          r.act, r.cws.get(), r.cws_bytes, r.reserve(s), r.reserve_bytes),
      "cudnnBatchNormalizationForwardTrainingEx");
}

// Enqueues library `lib`'s backward on buffer set s, which must hold that
// library's forward outputs (mask, y, reserve space, saved statistics).
bool enqueue_bwd(Run& r, int lib, int s) {
  if (lib == FUSED) {
    const bnormConfig_t cfg = r.fused(s);
    return bnorm_ok(r,
                    bnormBackward(g_bnorm, g_stream, &r.desc, &cfg, r.x(s), r.dy(s), r.dx(s),
                                  r.gamma, r.sm[FUSED], r.sr[FUSED], r.dg[FUSED], r.db[FUSED],
                                  r.bws.get(), r.bws_bytes),
                    "bnormBackward (ADD_RELU)");
  }
  if (lib == UNFUSED)
    return cuda_ok(r, launch_masked_grad(r.bc.dtype, r.y(s), r.dy(s), r.dz(s), r.numel, g_stream),
                   "masked-gradient kernel") &&
           bnorm_ok(r,
                    bnormBackward(g_bnorm, g_stream, &r.desc, &r.plain, r.x(s), r.dz(s), r.dx(s),
                                  r.gamma, r.sm[UNFUSED], r.sr[UNFUSED], r.dg[UNFUSED],
                                  r.db[UNFUSED], r.bws.get(), r.bws_bytes),
                    "bnormBackward");
  return cudnn_ok(r,
                  cudnnBatchNormalizationBackwardEx(
                      g_cudnn, kMode, kOps, &kOne, &kZero, &kOne, &kZero, r.xd, r.x(s), r.xd,
                      r.y(s), r.xd, r.dy(s), r.xd, r.dz(s), r.xd, r.dx(s), r.bnd, r.gamma, r.beta,
                      r.dg[CUDNN], r.db[CUDNN], kEps, r.sm[CUDNN], r.sr[CUDNN], r.act,
                      r.cws.get(), r.cws_bytes, r.reserve(s), r.reserve_bytes),
                  "cudnnBatchNormalizationBackwardEx");
}

// cuDNN's descriptors and size queries; false (r.cudnn_why) if cuDNN refuses.
bool setup_cudnn(Run& r, size_t* fwd_ws, size_t* bwd_ws, size_t* reserve) {
  const BenchCase& b = r.bc;
  auto fail = [&](const char* call, cudnnStatus_t s) {
    r.cudnn_why = std::string(call) + ": " + cudnn_error(s);
    return false;
  };
  if (b.n > INT32_MAX || b.c > INT32_MAX || b.h > INT32_MAX || b.w > INT32_MAX) {
    r.cudnn_why = "a dimension exceeds cuDNN's int";
    return false;
  }
  cudnnStatus_t s;
  if ((s = cudnnCreateTensorDescriptor(&r.xd)) != CUDNN_STATUS_SUCCESS ||
      (s = cudnnCreateTensorDescriptor(&r.bnd)) != CUDNN_STATUS_SUCCESS)
    return fail("cudnnCreateTensorDescriptor", s);
  if ((s = cudnnCreateActivationDescriptor(&r.act)) != CUDNN_STATUS_SUCCESS)
    return fail("cudnnCreateActivationDescriptor", s);
  s = cudnnSetActivationDescriptor(r.act, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0.0);
  if (s != CUDNN_STATUS_SUCCESS) return fail("cudnnSetActivationDescriptor", s);
  s = cudnnSetTensor4dDescriptor(r.xd, CUDNN_TENSOR_NHWC, cudnn_type(b.dtype), int(b.n),
                                 int(b.c), int(b.h), int(b.w));
  if (s != CUDNN_STATUS_SUCCESS) return fail("cudnnSetTensor4dDescriptor", s);
  s = cudnnDeriveBNTensorDescriptor(r.bnd, r.xd, kMode);
  if (s != CUDNN_STATUS_SUCCESS) return fail("cudnnDeriveBNTensorDescriptor", s);
  s = cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(g_cudnn, kMode, kOps, r.xd, r.xd,
                                                               r.xd, r.bnd, r.act, fwd_ws);
  if (s != CUDNN_STATUS_SUCCESS)
    return fail("cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize", s);
  s = cudnnGetBatchNormalizationBackwardExWorkspaceSize(g_cudnn, kMode, kOps, r.xd, r.xd, r.xd,
                                                        r.xd, r.xd, r.bnd, r.act, bwd_ws);
  if (s != CUDNN_STATUS_SUCCESS) return fail("cudnnGetBatchNormalizationBackwardExWorkspaceSize", s);
  s = cudnnGetBatchNormalizationTrainingExReserveSpaceSize(g_cudnn, kMode, kOps, r.act, r.xd,
                                                           reserve);
  if (s != CUDNN_STATUS_SUCCESS)
    return fail("cudnnGetBatchNormalizationTrainingExReserveSpaceSize", s);
  return true;
}

// Buffer sets so that the runs' footprint exceeds 2x L2: one when a single
// run streams through 4x L2 or more.
int sets_for(size_t footprint) {
  if (footprint >= 4 * g_l2) return 1;
  return int((2 * g_l2 + footprint - 1) / footprint) + 1;
}

std::vector<cudaEvent_t> g_ev;

// Median time in microseconds of launch(set) (true: enqueued), 3 warm-up
// runs first; -1 if a launch failed.
double time_us(int nsets, int reps, const std::function<bool(int)>& launch) {
  const int warm = 3;
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

// GB/s of a device-to-device copy of bytes/2 (bytes read + written), or -1.
double copy_gbps(size_t bytes, int reps) {
  const size_t half = bytes / 2;
  const size_t hal = align256(half);
  const int nsets = sets_for(2 * half);
  DevMem pool;
  if (!pool.alloc(size_t(nsets) * 2 * hal)) return -1;
  CK(cudaMemsetAsync(pool.get(), 0, pool.bytes(), g_stream));
  const double us = time_us(nsets, reps, [&](int s) {
    uint8_t* base = pool.get() + size_t(s) * 2 * hal;
    return cudaMemcpyAsync(base + hal, base, half, cudaMemcpyDeviceToDevice, g_stream) ==
           cudaSuccess;
  });
  return us > 0 ? double(2 * half) / (us * 1e3) : -1;
}

// ---- the check ------------------------------------------------------------------------------

// What each library produced on buffer set 0.
struct Outputs {
  bool fwd[3] = {false, false, false}, bwd[3] = {false, false, false};
  std::string fwd_err[3], bwd_err[3];
  HostTensor y[3], dx[3], dz[3];
  std::vector<uint32_t> mask;  // bnorm fused's
  std::vector<float> sm[3], sr[3], rm, rv, dg[3], db[3];
};

void fail_note(OpResult& res, const std::string& check, const std::string& note) {
  res.failed = true;
  if (res.check != "bnorm-error") res.check = check;
  res.notes.push_back(note);
}

// Runs each library once (forward, then its backward) on set 0 and keeps
// what it wrote. Outputs are poisoned (NaN) first, so anything left
// unwritten fails the comparison.
void run_once(Run& r, Outputs& o, const std::vector<float>& rm0, const std::vector<float>& rv0) {
  const size_t cb = size_t(r.bc.c) * 4;
  for (int lib = 0; lib < 3; ++lib) {
    if (lib == CUDNN && !r.cudnn_setup) {
      o.fwd_err[lib] = o.bwd_err[lib] = r.cudnn_why;
      continue;
    }
    upload(r.rm[lib], rm0.data(), cb);
    upload(r.rv[lib], rv0.data(), cb);
    poison(r.y(0), r.tbytes);
    poison(r.sm[lib], cb);
    poison(r.sr[lib], cb);
    if (lib == FUSED) poison(r.mask(0), r.mask_bytes);
    bool ok = enqueue_fwd(r, lib, 0);
    CK(cudaStreamSynchronize(g_stream));
    if (!ok) {
      o.fwd_err[lib] = r.err;
      o.bwd_err[lib] = "its forward failed";
      continue;
    }
    o.fwd[lib] = true;
    o.y[lib].alloc(r.tbytes);
    download(o.y[lib].get(), r.y(0), r.tbytes);
    o.sm[lib] = download_floats(r.sm[lib], r.bc.c);
    o.sr[lib] = download_floats(r.sr[lib], r.bc.c);
    if (lib == FUSED) {
      o.rm = download_floats(r.rm[lib], r.bc.c);
      o.rv = download_floats(r.rv[lib], r.bc.c);
      o.mask.assign(r.mask_bytes / 4, 0);
      download(o.mask.data(), r.mask(0), o.mask.size() * 4);
    }

    poison(r.dx(0), r.tbytes);
    poison(r.dz(0), r.tbytes);
    poison(r.dg[lib], cb);
    poison(r.db[lib], cb);
    ok = enqueue_bwd(r, lib, 0);
    CK(cudaStreamSynchronize(g_stream));
    if (!ok) {
      o.bwd_err[lib] = r.err;
      continue;
    }
    o.bwd[lib] = true;
    o.dx[lib].alloc(r.tbytes);
    o.dz[lib].alloc(r.tbytes);
    download(o.dx[lib].get(), r.dx(0), r.tbytes);
    download(o.dz[lib].get(), r.dz(0), r.tbytes);
    o.dg[lib] = download_floats(r.dg[lib], r.bc.c);
    o.db[lib] = download_floats(r.db[lib], r.bc.c);
  }
}

// Element-wise tallies of one host thread. p*[k]: bnorm fused vs library k.
struct Tally {
  Agree y[3], dz[3], dx[3], py[3], pdz[3], pdx[3], mask;
  int64_t flips[3] = {0, 0, 0}, amb = 0;
  void merge(const Tally& o) {
    for (int k = 0; k < 3; ++k) {
      y[k].merge(o.y[k]);
      dz[k].merge(o.dz[k]);
      dx[k].merge(o.dx[k]);
      py[k].merge(o.py[k]);
      pdz[k].merge(o.pdz[k]);
      pdx[k].merge(o.pdx[k]);
      flips[k] += o.flips[k];
    }
    mask.merge(o.mask);
    amb += o.amb;
  }
};

// Compares everything run_once kept with the reference and with each other;
// the verdicts go to the two rows.
void compare(const Run& r, const Outputs& o, const HostTensor& hx, const HostTensor& hz,
             const HostTensor& hdy, const std::vector<double>& shift,
             const std::vector<float>& h_gamma, const std::vector<float>& h_beta,
             const std::vector<float>& rm0, const std::vector<float>& rv0, OpResult& F,
             OpResult& B) {
  const BenchCase& bc = r.bc;
  const int64_t c = bc.c, numel = bc.numel();
  const double m = double(bc.n * bc.spatial());
  const bnormDataType_t t = bc.dtype;
  const Tol tol = tensor_tol(t);
  // Within this of 0 a pre-activation's ReLU decision may go either way: it
  // covers fp32 rounding (fused) and bn(x) rounded to the type before the
  // add (unfused).
  const double amb_tol = tol.atol;
  const uint8_t *px = hx.get(), *pz = hz.get(), *pdy = hdy.get();

  // The batch statistics.
  const std::vector<double> s1 = channel_sums<2>(numel, c, [&](int64_t i, int64_t ch, double* a) {
    const double d = load_elem(px, t, i) - shift[ch];
    a[0] += d;
    a[1] += d * d;
  });
  std::vector<double> mean(c), var(c), rstd(c), gam(c), bet(c), coef(c);
  double dx_scale = 1.0;
  for (int64_t ch = 0; ch < c; ++ch) {
    const double d = s1[2 * ch] / m;
    mean[ch] = shift[ch] + d;
    var[ch] = std::max(0.0, s1[2 * ch + 1] / m - d * d);
    rstd[ch] = 1.0 / std::sqrt(var[ch] + kEps);
    gam[ch] = h_gamma[ch];
    bet[ch] = h_beta[ch];
    coef[ch] = gam[ch] * rstd[ch];
    dx_scale = std::max(dx_scale, std::fabs(coef[ch]));
  }
  auto pre_act = [&](int64_t i, int64_t ch, double* xhat) {
    *xhat = (load_elem(px, t, i) - mean[ch]) * rstd[ch];
    return gam[ch] * *xhat + bet[ch] + load_elem(pz, t, i);
  };

  // The gradient sums per library, each with its own decisions near the
  // kink: [0] sum |g|, [1] sum |g xhat| (the reference's, for tolerances),
  // [2 + 2k] sum g, [3 + 2k] sum g xhat of library k.
  const std::vector<double> s2 = channel_sums<8>(numel, c, [&](int64_t i, int64_t ch, double* a) {
    double xhat;
    const double pre = pre_act(i, ch, &xhat);
    const bool amb = std::fabs(pre) <= amb_tol;
    const double dy = load_elem(pdy, t, i);
    const double gref = pre > 0 ? dy : 0.0;
    a[0] += std::fabs(gref);
    a[1] += std::fabs(gref * xhat);
    for (int k = 0; k < 3; ++k)
      if (o.bwd[k]) {
        bool ok;
        const double g = lib_grad(load_elem(o.dz[k].get(), t, i), dy, gref, amb, tol, &ok);
        a[2 + 2 * k] += g;
        a[3 + 2 * k] += g * xhat;
      }
  });
  std::vector<double> abs_db(c), abs_dg(c), S[3], G[3];
  for (int k = 0; k < 3; ++k) {
    S[k].resize(c);
    G[k].resize(c);
  }
  for (int64_t ch = 0; ch < c; ++ch) {
    abs_db[ch] = s2[8 * ch];
    abs_dg[ch] = s2[8 * ch + 1];
    for (int k = 0; k < 3; ++k) {
      S[k][ch] = s2[8 * ch + 2 + 2 * k];
      G[k][ch] = s2[8 * ch + 3 + 2 * k];
    }
  }

  // Element by element.
  std::vector<Tally> part(g_threads);
  parallel_ranges(numel, [&](unsigned tid, int64_t lo, int64_t hi) {
    Tally tl;
    int64_t ch = lo % c;
    for (int64_t i = lo; i < hi; ++i, ch = ch + 1 == c ? 0 : ch + 1) {
      double xhat;
      const double pre = pre_act(i, ch, &xhat);
      const bool amb = std::fabs(pre) <= amb_tol;
      const double dy = load_elem(pdy, t, i);
      const double yref = pre > 0 ? pre : 0.0;
      const double gref = pre > 0 ? dy : 0.0;
      const double ylim = tol.atol + tol.rtol * std::fabs(yref);
      const double zlim = tol.atol + tol.rtol * std::fabs(gref);
      tl.amb += amb;
      double yv[3] = {0, 0, 0}, dzv[3] = {0, 0, 0}, dxv[3] = {0, 0, 0};
      for (int k = 0; k < 3; ++k) {
        if (o.fwd[k]) {
          yv[k] = load_elem(o.y[k].get(), t, i);
          tl.y[k].add(i, yv[k], yref, ylim);
        }
        if (o.bwd[k]) {
          dzv[k] = load_elem(o.dz[k].get(), t, i);
          dxv[k] = load_elem(o.dx[k].get(), t, i);
          bool ok;
          const double g = lib_grad(dzv[k], dy, gref, amb, tol, &ok);
          tl.dz[k].add(i, dzv[k], amb && ok ? dzv[k] : gref, zlim);
          const double want = coef[ch] * (g - S[k][ch] / m - xhat * G[k][ch] / m);
          tl.dx[k].add(i, dxv[k], want, tol.atol * dx_scale + tol.rtol * std::fabs(want));
        }
      }
      if (o.fwd[FUSED] && !amb) {
        const double bit = double((o.mask[size_t(i >> 5)] >> unsigned(i & 31)) & 1u);
        tl.mask.add(i, bit, pre > 0 ? 1.0 : 0.0, 0.5);
      }
      for (int k = UNFUSED; k <= CUDNN; ++k) {
        if (o.fwd[FUSED] && o.fwd[k])
          tl.py[k].add(i, yv[FUSED], yv[k], tol.atol + tol.rtol * std::fabs(yv[k]));
        if (o.bwd[FUSED] && o.bwd[k]) {
          const double lim = tol.atol + tol.rtol * std::fabs(dzv[k]);
          if (std::fabs(dzv[FUSED] - dzv[k]) <= lim) {
            tl.pdz[k].add(i, dzv[FUSED], dzv[k], lim);
            tl.pdx[k].add(i, dxv[FUSED], dxv[k], tol.atol * dx_scale + tol.rtol * std::fabs(dxv[k]));
          } else if (amb) {
            ++tl.flips[k];  // both decisions right (each checked against the reference above)
          } else {
            tl.pdz[k].add(i, dzv[FUSED], dzv[k], lim);  // a mismatch
          }
        }
      }
    }
    part[tid] = tl;
  });
  Tally all;
  for (unsigned th = 0; th < g_threads; ++th) all.merge(part[th]);

  auto need = [](OpResult& res, const Agree& a, const std::string& what) {
    if (!a.ok()) fail_note(res, "MISMATCH", a.describe(what));
  };
  auto diag = [](OpResult& res, const Agree& a, const std::string& what) {
    if (!a.ok()) res.notes.push_back("(cuDNN vs reference) " + a.describe(what));
  };

  // Forward.
  std::vector<double> want_rm(c), want_rv(c);
  for (int64_t ch = 0; ch < c; ++ch) {
    want_rm[ch] = (1 - kFactor) * rm0[ch] + kFactor * mean[ch];
    want_rv[ch] = (1 - kFactor) * rv0[ch] + kFactor * var[ch] * m / (m - 1);
  }
  for (int k = 0; k < 2; ++k)
    if (!o.fwd[k]) fail_note(F, "bnorm-error", o.fwd_err[k]);
  if (o.fwd[FUSED]) {
    need(F, all.y[FUSED], "y: bnorm fused vs reference");
    need(F, all.mask, "relu_mask: bnorm fused vs reference (bit i%32 of word i/32: pre-activation > 0)");
    need(F, compare_vec(o.sm[FUSED], mean, kMeanTol), "saved mean: bnorm fused vs reference");
    need(F, compare_vec(o.sr[FUSED], rstd, kRstdTol), "saved rstd: bnorm fused vs reference");
    need(F, compare_vec(o.rm, want_rm, kRunMeanTol), "running mean: bnorm fused vs reference");
    need(F, compare_vec(o.rv, want_rv, kRunVarTol), "running var: bnorm fused vs reference");
  }
  if (o.fwd[UNFUSED]) need(F, all.y[UNFUSED], "y: bnorm unfused vs reference");
  if (o.fwd[FUSED] && o.fwd[UNFUSED]) need(F, all.py[UNFUSED], "y: bnorm fused vs bnorm unfused");
  if (o.fwd[CUDNN]) {
    diag(F, all.y[CUDNN], "y");
    diag(F, compare_vec(o.sm[CUDNN], mean, kMeanTol), "saved mean");
    diag(F, compare_vec(o.sr[CUDNN], rstd, kRstdTol), "saved inverse std");
  }
  if (o.fwd[FUSED] && o.fwd[CUDNN]) {
    need(F, all.py[CUDNN], "y: bnorm fused vs cuDNN fused");
    need(F, compare_vec(o.sm[FUSED], to_double(o.sm[CUDNN]), kMeanTol),
         "saved mean: bnorm fused vs cuDNN fused");
    need(F, compare_vec(o.sr[FUSED], to_double(o.sr[CUDNN]), kRstdTol),
         "saved rstd: bnorm fused vs cuDNN fused");
  }
  if (!o.fwd[CUDNN]) F.notes.push_back("cuDNN n/a: " + o.fwd_err[CUDNN]);

  // Backward.
  for (int k = 0; k < 2; ++k)
    if (o.fwd[k] && !o.bwd[k]) fail_note(B, "bnorm-error", o.bwd_err[k]);
    else if (!o.fwd[k]) fail_note(B, "bnorm-error", std::string(kLibName[k]) + ": " + o.bwd_err[k]);
  // dgamma, dbeta of library a against library b's, up to the difference
  // their decisions near the kink explain.
  auto pair_sums = [&](const std::vector<float>& got, const std::vector<float>& other,
                       const std::vector<double>& mine, const std::vector<double>& theirs,
                       const std::vector<double>& abs_sum) {
    std::vector<double> want(c);
    for (int64_t ch = 0; ch < c; ++ch) want[ch] = other[ch] + (mine[ch] - theirs[ch]);
    return compare_sums(got, want, abs_sum);
  };
  for (int k = 0; k < 3; ++k) {
    if (!o.bwd[k]) continue;
    const std::string who = kLibName[k];
    if (k == CUDNN) {
      diag(B, all.dz[k], "dz");
      diag(B, all.dx[k], "dx");
      diag(B, compare_sums(o.dg[k], G[k], abs_dg), "dgamma");
      diag(B, compare_sums(o.db[k], S[k], abs_db), "dbeta");
      continue;
    }
    need(B, all.dz[k], "dz: " + who + " vs reference");
    need(B, all.dx[k], "dx: " + who + " vs reference");
    need(B, compare_sums(o.dg[k], G[k], abs_dg), "dgamma: " + who + " vs reference");
    need(B, compare_sums(o.db[k], S[k], abs_db), "dbeta: " + who + " vs reference");
  }
  for (int k = UNFUSED; k <= CUDNN; ++k) {
    if (!o.bwd[FUSED] || !o.bwd[k]) continue;
    const std::string who = std::string("bnorm fused vs ") + kLibName[k];
    need(B, all.pdz[k], "dz: " + who);
    need(B, all.pdx[k], "dx: " + who);
    need(B, pair_sums(o.dg[FUSED], o.dg[k], G[FUSED], G[k], abs_dg), "dgamma: " + who);
    need(B, pair_sums(o.db[FUSED], o.db[k], S[FUSED], S[k], abs_db), "dbeta: " + who);
    if (all.flips[k])
      B.notes.push_back(fmt("%s: %" PRId64 " ReLU decisions differ, all within %.3g of the kink "
                            "(%" PRId64 " elements there); dz, dx not compared at them",
                            who.c_str(), all.flips[k], amb_tol, all.amb));
  }
  if (!o.bwd[CUDNN]) B.notes.push_back("cuDNN n/a: " + o.bwd_err[CUDNN]);

  if (!F.failed && !o.fwd[CUDNN]) F.check = "ok-ref";  // not compared with cuDNN
  if (!B.failed && !o.bwd[CUDNN]) B.check = "ok-ref";
}

// ---- a whole case ---------------------------------------------------------------------------

std::vector<OpResult> run_case(const BenchCase& bc, const Options& opt) {
  std::vector<OpResult> res(2);
  res[FWD].dir = FWD;
  res[BWD].dir = BWD;
  auto skip_all = [&](const std::string& why) {
    for (auto& x : res) {
      x.check = "skipped";
      x.notes.push_back(why);
    }
    return res;
  };
  Run r(bc, opt);
  res[FWD].bytes = 3 * r.tbytes;
  res[BWD].bytes = 4 * r.tbytes;
  const size_t c = size_t(bc.c);

  // Sizes: bnorm's mask and workspace, cuDNN's workspaces and reserve space.
  {
    const bnormConfig_t probe = r.fused(0);  // pointers unused by the queries
    size_t a = 0, b = 0, pa = 0, pb = 0;
    bnormStatus_t st = bnormGetReluMaskSize(g_bnorm, &r.desc, &r.mask_bytes);
    if (st == BNORM_STATUS_SUCCESS)
      st = bnormGetForwardTrainingWorkspaceSize(g_bnorm, &r.desc, &probe, &a);
    if (st == BNORM_STATUS_SUCCESS) st = bnormGetBackwardWorkspaceSize(g_bnorm, &r.desc, &probe, &b);
    if (st == BNORM_STATUS_SUCCESS)
      st = bnormGetForwardTrainingWorkspaceSize(g_bnorm, &r.desc, &r.plain, &pa);
    if (st == BNORM_STATUS_SUCCESS) st = bnormGetBackwardWorkspaceSize(g_bnorm, &r.desc, &r.plain, &pb);
    if (st != BNORM_STATUS_SUCCESS) {
      for (auto& x : res)
        fail_note(x, "bnorm-error",
                  std::string("size query: ") + bnormGetStatusString(st) + ": " +
                      bnormGetLastErrorMessage());
      return res;
    }
    r.bws_bytes = std::max({a, b, pa, pb});
  }
  size_t cfwd = 0, cbwd = 0;
  r.cudnn_setup = setup_cudnn(r, &cfwd, &cbwd, &r.reserve_bytes);
  if (!r.cudnn_setup) r.reserve_bytes = 0;
  r.cws_bytes = std::max(cfwd, cbwd);
  r.mal = align256(r.mask_bytes);
  r.ral = align256(r.reserve_bytes);
  r.stride = 6 * r.tal + r.mal + r.ral;
  r.nsets = sets_for(3 * r.tbytes);  // the smallest footprint of a run (forward: x, z, y)
  {
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    const size_t need = size_t(r.nsets) * r.stride + r.bws_bytes + r.cws_bytes + (size_t(256) << 20);
    if (need > free_b)
      return skip_all(fmt("needs %.1f GiB of device memory, %.1f GiB free", need / 1073741824.0,
                          free_b / 1073741824.0));
  }
  const size_t cal = align256(c * 4);
  if (!r.pool.alloc(size_t(r.nsets) * r.stride) || !r.chan.alloc(20 * cal) ||
      !r.bws.alloc(r.bws_bytes) || !r.cws.alloc(r.cws_bytes))
    return skip_all("device memory allocation failed");
  {
    int k = 0;
    auto next = [&]() { return reinterpret_cast<float*>(r.chan.get() + size_t(k++) * cal); };
    r.gamma = next();
    r.beta = next();
    for (int lib = 0; lib < 3; ++lib) {
      r.rm[lib] = next();
      r.rv[lib] = next();
      r.sm[lib] = next();
      r.sr[lib] = next();
      r.dg[lib] = next();
      r.db[lib] = next();
    }
  }

  // Inputs: generated on the host, uploaded to set 0, copied to the others.
  HostTensor hx, hz, hdy;
  hx.alloc(r.tbytes);
  hz.alloc(r.tbytes);
  hdy.alloc(r.tbytes);
  const uint64_t seed = mix64(std::hash<std::string>()(bc.name));
  const std::vector<double> shift = make_inputs(bc, seed, hx, hz, hdy);
  const std::vector<float> h_gamma = random_floats(c, seed + 2, 0.5, 1.5);
  const std::vector<float> h_beta = random_floats(c, seed + 3, -0.5, 0.5);
  const std::vector<float> h_rm0 = random_floats(c, seed + 4, -1.0, 1.0);
  const std::vector<float> h_rv0 = random_floats(c, seed + 5, 0.5, 2.0);
  CK(cudaMemsetAsync(r.pool.get(), 0, r.pool.bytes(), g_stream));
  upload(r.x(0), hx.get(), r.tbytes);
  upload(r.z(0), hz.get(), r.tbytes);
  upload(r.dy(0), hdy.get(), r.tbytes);
  for (int s = 1; s < r.nsets; ++s)
    for (int k = 0; k < 3; ++k)
      CK(cudaMemcpyAsync(r.tensor(s, k), r.tensor(0, k), r.tbytes, cudaMemcpyDeviceToDevice,
                         g_stream));
  upload(r.gamma, h_gamma.data(), c * 4);
  upload(r.beta, h_beta.data(), c * 4);

  // 1. Check.
  {
    Outputs o;
    run_once(r, o, h_rm0, h_rv0);
    compare(r, o, hx, hz, hdy, shift, h_gamma, h_beta, h_rm0, h_rv0, res[FWD], res[BWD]);
    for (int k = 0; k < 3; ++k) {
      if (!o.fwd[k]) res[FWD].us[k] = -2;  // -2: do not time (it failed or is n/a)
      if (!o.bwd[k]) res[BWD].us[k] = -2;
    }
  }

  // 2. Time: the forwards, then each backward after its own forward has
  // filled every set (mask, y, reserve space, saved statistics).
  for (int dir = 0; dir < 2; ++dir)
    for (int lib = 0; lib < 3; ++lib) {
      OpResult& x = res[dir];
      if (x.us[lib] == -2) {
        x.us[lib] = -1;
        continue;
      }
      bool ok = true;
      if (dir == BWD)
        for (int s = 0; s < r.nsets && ok; ++s) ok = enqueue_fwd(r, lib, s);
      if (ok)
        x.us[lib] = time_us(r.nsets, opt.reps, [&](int s) {
          return dir == FWD ? enqueue_fwd(r, lib, s) : enqueue_bwd(r, lib, s);
        });
      CK(cudaStreamSynchronize(g_stream));
      if (!ok || x.us[lib] < 0) {
        x.us[lib] = -1;
        const std::string note = std::string(kLibName[lib]) + " timing: " + r.err;
        if (lib == CUDNN)
          x.notes.push_back("cuDNN n/a: " + note);
        else
          fail_note(x, "bnorm-error", note);
      }
    }

  // 3. The copy roofline, with the case's memory given back first.
  r.pool.reset();
  r.cws.reset();
  r.bws.reset();
  for (auto& x : res) x.copy_gbps = copy_gbps(x.bytes, opt.reps);
  return res;
}

// ---- output ---------------------------------------------------------------------------------

std::string num(double v, const char* f) { return v < 0 ? std::string("n/a") : fmt(f, v); }

double gbps_of(size_t bytes, double us) { return us > 0 ? double(bytes) / (us * 1e3) : -1; }

void print_header() {
  std::printf("%-27s %-9s %9s %9s %9s %8s %8s %8s %6s  %s\n", "case", "op", "fused_us",
              "unfus_us", "cudnn_us", "fus/unf", "cudnn/bn", "bn_GB/s", "%copy", "check");
  std::printf("%s\n", std::string(118, '-').c_str());
}

void print_row(const BenchCase& bc, const OpResult& r) {
  const double f = r.us[FUSED], u = r.us[UNFUSED], cd = r.us[CUDNN];
  const double gbps = gbps_of(r.bytes, f);
  std::printf("%-27s %-9s %9s %9s %9s %8s %8s %8s %6s  %s\n", bc.name.c_str(), kDirName[r.dir],
              num(f, "%.1f").c_str(), num(u, "%.1f").c_str(), num(cd, "%.1f").c_str(),
              num(f > 0 && u > 0 ? u / f : -1, "%.2fx").c_str(),
              num(f > 0 && cd > 0 ? cd / f : -1, "%.2fx").c_str(), num(gbps, "%.0f").c_str(),
              num(gbps > 0 && r.copy_gbps > 0 ? 100.0 * gbps / r.copy_gbps : -1, "%.0f%%").c_str(),
              r.check.c_str());
  for (const auto& n : r.notes) std::printf("    %s %s\n", r.failed ? "!!" : "--", n.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  bool want_bf16 = opt.bf16;
  for (const auto& s : opt.cases) want_bf16 |= s.find("bf16") != std::string::npos;
  std::vector<BenchCase> cases;
  for (const BenchCase& bc : suite()) {
    if (bc.optional && !want_bf16) continue;
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
      std::printf("%s\tNHWC\t%s\tn=%" PRId64 "\tc=%" PRId64 "\tspatial=%" PRId64 "\n",
                  bc.name.c_str(), dtype_str(bc.dtype), bc.n, bc.c, bc.spatial());
    return 0;
  }
  if (cases.empty()) {
    std::fprintf(stderr, "bnorm-bench-fused: no case matches\n");
    return 2;
  }

  int ndev = 0;
  const cudaError_t de = cudaGetDeviceCount(&ndev);
  if (de != cudaSuccess || ndev == 0) {
    std::fprintf(stderr, "bnorm-bench-fused needs a CUDA GPU; none found (%s)\n",
                 de != cudaSuccess ? cudaGetErrorString(de) : "no devices");
    return 2;
  }

  init_half_table();
  g_threads = std::max(1u, std::min(64u, std::thread::hardware_concurrency()));
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  if (prop.l2CacheSize > 0) g_l2 = size_t(prop.l2CacheSize);
  if (prop.multiProcessorCount > 0) g_sms = prop.multiProcessorCount;
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
  std::printf("bnorm-bench-fused  %s\n", date);
  std::printf("device: %s (sm_%d%d, %d SMs, L2 %.0f MiB, %.0f GiB)  cuDNN %zu.%zu.%zu  bnorm %d\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, g_l2 / 1048576.0,
              prop.totalGlobalMem / 1073741824.0, cudnn_v / 10000, cudnn_v / 100 % 100,
              cudnn_v % 100, bnormGetVersion());
  std::printf(
      "y = ReLU(BN(x) + z), training. eps %g, factor %g; median of %d runs after warm-up; buffers\n"
      "rotate over > 2x L2. fused = bnorm with epilogue ADD_RELU; unfus = bnorm, then an\n"
      "add+ReLU kernel (fwd) / a masked-gradient kernel, then bnorm (bwd); cudnn = cuDNN\n"
      "BN_ADD_ACTIVATION, SPATIAL_PERSISTENT. fus/unf = unfused time / fused time; cudnn/bn =\n"
      "cuDNN time / bnorm fused time. GB/s of bnorm fused on compulsory bytes (fwd: x + z + y,\n"
      "bwd: x + dy + dx + dz; the 1-bit mask not counted); %%copy = that / a device-to-device\n"
      "copy's GB/s.\n\n",
      kEps, kFactor, opt.reps);

  FILE* csv = nullptr;
  if (!opt.csv.empty()) {
    csv = std::fopen(opt.csv.c_str(), "w");
    if (!csv) fatal("cannot write " + opt.csv);
    std::fprintf(csv, "op,layout,dtype,n,c,spatial,bnorm_fused_us,bnorm_unfused_us,"
                      "cudnn_fused_us,copy_gbps,bnorm_gbps\n");
  }

  const auto t_start = std::chrono::steady_clock::now();
  print_header();
  int failures = 0;
  std::vector<std::string> failed_rows;
  double log_unf[2] = {0, 0}, log_cd[2] = {0, 0};
  int n_unf[2] = {0, 0}, n_cd[2] = {0, 0};
  for (const BenchCase& bc : cases) {
    const std::vector<OpResult> results = run_case(bc, opt);
    for (const OpResult& res : results) {
      print_row(bc, res);
      if (res.failed) {
        ++failures;
        failed_rows.push_back(bc.name + " " + kDirName[res.dir] + ": " + res.check);
      }
      const double f = res.us[FUSED], u = res.us[UNFUSED], cd = res.us[CUDNN];
      if (!res.failed && f > 0 && u > 0) {
        log_unf[res.dir] += std::log(u / f);
        ++n_unf[res.dir];
      }
      if (!res.failed && f > 0 && cd > 0) {
        log_cd[res.dir] += std::log(cd / f);
        ++n_cd[res.dir];
      }
      if (csv) {
        auto us = [](double v) { return v > 0 ? fmt("%.3f", v) : std::string(); };
        const double gbps = gbps_of(res.bytes, f);
        std::fprintf(csv, "%s,NHWC,%s,%" PRId64 ",%" PRId64 ",%" PRId64 ",%s,%s,%s,%s,%s\n",
                     kDirName[res.dir], dtype_str(bc.dtype), bc.n, bc.c, bc.spatial(),
                     us(f).c_str(), us(u).c_str(), us(cd).c_str(),
                     res.copy_gbps > 0 ? fmt("%.1f", res.copy_gbps).c_str() : "",
                     gbps > 0 ? fmt("%.1f", gbps).c_str() : "");
        std::fflush(csv);
      }
    }
  }
  if (csv) std::fclose(csv);

  std::printf("\ngeometric-mean speedups of bnorm fused (cases with both):\n");
  for (int d = 0; d < 2; ++d) {
    const std::string a =
        n_unf[d] ? fmt("%.3fx over %d", std::exp(log_unf[d] / n_unf[d]), n_unf[d]) : "n/a";
    const std::string b =
        n_cd[d] ? fmt("%.3fx over %d", std::exp(log_cd[d] / n_cd[d]), n_cd[d]) : "n/a";
    std::printf("  %-9s vs bnorm unfused %s, vs cuDNN fused %s\n", kDirName[d], a.c_str(),
                b.c_str());
  }
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

#include "harness.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>

namespace bt {

bool have_device() {
  static const bool present = [] {
    int n = 0;
    const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    cudaGetLastError();  // a failed query must not leak into the tests
    return ok;
  }();
  return present;
}

std::string device_name() {
  cudaDeviceProp p;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess)
    return "unknown";
  return p.name;
}

size_t dtype_bytes(bnormDataType_t t) { return t == BNORM_DATA_FLOAT ? 4 : 2; }

const char* dtype_name(bnormDataType_t t) {
  switch (t) {
    case BNORM_DATA_FLOAT: return "f32";
    case BNORM_DATA_HALF: return "f16";
    case BNORM_DATA_BFLOAT16: return "bf16";
  }
  return "unknown";
}

const char* layout_name(bnormLayout_t l) { return l == BNORM_LAYOUT_NCHW ? "NCHW" : "NHWC"; }

std::vector<uint8_t> encode(const std::vector<double>& v, bnormDataType_t t) {
  std::vector<uint8_t> b(v.size() * dtype_bytes(t));
  for (size_t i = 0; i < v.size(); ++i) {
    const float f = static_cast<float>(v[i]);
    switch (t) {
      case BNORM_DATA_FLOAT: std::memcpy(&b[i * 4], &f, 4); break;
      case BNORM_DATA_HALF: {
        const __half h = __float2half_rn(f);
        std::memcpy(&b[i * 2], &h, 2);
        break;
      }
      case BNORM_DATA_BFLOAT16: {
        const __nv_bfloat16 h = __float2bfloat16_rn(f);
        std::memcpy(&b[i * 2], &h, 2);
        break;
      }
    }
  }
  return b;
}

std::vector<double> decode(const std::vector<uint8_t>& b, bnormDataType_t t) {
  const size_t n = b.size() / dtype_bytes(t);
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) {
    switch (t) {
      case BNORM_DATA_FLOAT: {
        float f;
        std::memcpy(&f, &b[i * 4], 4);
        v[i] = f;
        break;
      }
      case BNORM_DATA_HALF: {
        __half h;
        std::memcpy(&h, &b[i * 2], 2);
        v[i] = __half2float(h);
        break;
      }
      case BNORM_DATA_BFLOAT16: {
        __nv_bfloat16 h;
        std::memcpy(&h, &b[i * 2], 2);
        v[i] = __bfloat162float(h);
        break;
      }
    }
  }
  return v;
}

std::vector<double> round_to(const std::vector<double>& v, bnormDataType_t t) {
  return decode(encode(v, t), t);
}

// ---- DeviceBuffer ------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes && cudaMalloc(&p_, bytes) != cudaSuccess) {
    p_ = nullptr;
    bytes_ = 0;
    ADD_FAILURE() << "cudaMalloc(" << bytes << ") failed";
  }
}

DeviceBuffer::~DeviceBuffer() {
  if (p_) cudaFree(p_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) {
  o.p_ = nullptr;
  o.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_;
    bytes_ = o.bytes_;
    o.p_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::upload(const void* host, size_t n) {
  if (n > bytes_) {
    ADD_FAILURE() << "upload of " << n << " bytes into " << bytes_;
    return;
  }
  if (n) {
    EXPECT_EQ(cudaMemcpy(p_, host, n, cudaMemcpyHostToDevice), cudaSuccess);
  }
}

std::vector<uint8_t> DeviceBuffer::download() const {
  std::vector<uint8_t> b(bytes_);
  if (bytes_) {
    EXPECT_EQ(cudaMemcpy(b.data(), p_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
  }
  return b;
}

std::vector<float> DeviceBuffer::download_f32() const {
  std::vector<float> v(bytes_ / sizeof(float));
  if (bytes_) {
    EXPECT_EQ(cudaMemcpy(v.data(), p_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
  }
  return v;
}

void DeviceBuffer::poison() {
  if (bytes_) {
    EXPECT_EQ(cudaMemset(p_, 0xff, bytes_), cudaSuccess);
  }
}

DeviceBuffer upload_floats(const std::vector<double>& v) {
  DeviceBuffer b(v.size() * sizeof(float));
  b.upload(encode(v, BNORM_DATA_FLOAT));
  return b;
}

DeviceBuffer upload_tensor(const std::vector<double>& v, bnormDataType_t t) {
  DeviceBuffer b(v.size() * dtype_bytes(t));
  b.upload(encode(v, t));
  return b;
}

// ---- shapes ---------------------------------------------------------------------------------

std::string Case::name() const {
  std::ostringstream o;
  o << layout_name(layout) << "_" << dtype_name(dtype) << "_n" << s.n << "_c" << s.c << "_s"
    << s.spatial;
  return o.str();
}

std::vector<Shape> standard_shapes() {
  return {
      {2, 3, 5},      // small, odd
      {2, 2, 1},      // the smallest trainable batch: m = 2
      {1, 1, 7},      // c = 1, n = 1
      {4, 1, 33},     // c = 1, long rows
      {3, 7, 1},      // spatial = 1
      {1, 5, 49},     // n = 1 with spatial > 1 (7x7)
      {5, 37, 13},    // nothing divides anything
      {2, 64, 9},     // two full channel tiles
      {1, 33, 2},     // one channel past a 32-channel tile
      {7, 3, 100},    // 10x10 images
      {1000, 3, 1},   // spatial = 1 with large n: many splits
      {4, 2000, 1},   // large c with spatial = 1
      {3, 40, 257},   // a prime spatial extent
      {4, 3, 1500},   // long channels: split across blocks
      {2, 2, 8191},   // longer still, odd
      {64, 35, 9},    // many rows, channels past a tile
  };
}

std::vector<Case> standard_cases() {
  std::vector<Case> out;
  for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC})
      for (const Shape& s : standard_shapes()) out.push_back({s, l, t});
  return out;
}

// ---- data -------------------------------------------------------------------------------------

std::vector<double> random_activations(const Case& k, uint64_t seed, double mean_lo,
                                       double mean_hi, double std_lo, double std_hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> um(mean_lo, mean_hi), us(std_lo, std_hi);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> mean(k.s.c), sd(k.s.c);
  for (int64_t c = 0; c < k.s.c; ++c) {
    mean[c] = um(rng);
    sd[c] = us(rng);
  }
  const bnref_shape sh = k.ref();
  std::vector<double> x(k.numel());
  for (int64_t i = 0; i < k.s.n; ++i)
    for (int64_t c = 0; c < k.s.c; ++c)
      for (int64_t s = 0; s < k.s.spatial; ++s)
        x[bnref_offset(&sh, i, c, s)] = mean[c] + sd[c] * nd(rng);
  return round_to(x, k.dtype);
}

std::vector<double> random_floats(size_t n, uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (double& d : v) d = u(rng);
  return round_to(v, BNORM_DATA_FLOAT);
}

std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ---- kernel paths -----------------------------------------------------------------------------

std::vector<bnormPath_t> all_paths() {
  return {BNORM_PATH_AUTO, BNORM_PATH_MULTI_PASS, BNORM_PATH_SINGLE_BLOCK, BNORM_PATH_PERSISTENT};
}

const char* path_name(bnormPath_t p) {
  switch (p) {
    case BNORM_PATH_AUTO: return "path AUTO";
    case BNORM_PATH_MULTI_PASS: return "path MULTI_PASS";
    case BNORM_PATH_SINGLE_BLOCK: return "path SINGLE_BLOCK";
    case BNORM_PATH_PERSISTENT: return "path PERSISTENT";
  }
  return "path ?";
}

// ---- tolerances -----------------------------------------------------------------------------

Tolerance output_tolerance(bnormDataType_t t) {
  switch (t) {
    case BNORM_DATA_FLOAT: return {2e-5, 2e-5};
    case BNORM_DATA_HALF: return {2e-3, 2e-3};      // half an ulp is 2^-11 relative
    case BNORM_DATA_BFLOAT16: return {1.6e-2, 1e-2};  // half an ulp is 2^-8 relative
  }
  return {0, 0};
}

::testing::AssertionResult all_close(const std::vector<double>& got,
                                     const std::vector<double>& want, Tolerance tol,
                                     const char* what) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure()
           << what << ": size " << got.size() << " != expected " << want.size();
  size_t bad = 0;
  double worst = 0.0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    const double lim = tol.atol + tol.rtol * std::fabs(want[i]);
    const bool ok = std::isfinite(got[i]) && err <= lim;
    if (std::isfinite(err)) worst = std::max(worst, err / lim);
    if (!ok) {
      if (bad < 5)
        first << "\n  [" << i << "] got " << got[i] << " expected " << want[i] << " (limit "
              << lim << ")";
      ++bad;
    }
  }
  if (bad)
    return ::testing::AssertionFailure()
           << what << ": " << bad << " of " << got.size() << " elements out of tolerance"
           << first.str();
  return ::testing::AssertionSuccess() << what << ": worst error " << worst << " of the limit";
}

// ---- handles ----------------------------------------------------------------------------------

Handle::Handle() {
  const bnormStatus_t s = bnormCreate(&h_);
  if (s != BNORM_STATUS_SUCCESS) ADD_FAILURE() << "bnormCreate: " << bnormGetLastErrorMessage();
}

Handle::~Handle() { bnormDestroy(h_); }

}  // namespace bt

// Shared test harness: device buffers, data in every activation type, the
// standard shape list, tolerances, and comparisons against the
// double-precision reference. The same test sources link against bnorm_emu
// (label emu: kernels run on the CPU emulator) and against the real bnorm
// (label gpu: they need a device and skip themselves, saying so, without).
#pragma once

#include <bnorm.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bn_reference.h"

namespace bt {

// ---- the device --------------------------------------------------------------------------
bool have_device();
std::string device_name();
#define BT_REQUIRE_DEVICE()                                                     \
  do {                                                                          \
    if (!::bt::have_device()) GTEST_SKIP() << "no CUDA device on this machine"; \
  } while (0)

#define BT_CUDA(call)                                                                   \
  do {                                                                                  \
    cudaError_t bt_e_ = (call);                                                         \
    ASSERT_EQ(bt_e_, cudaSuccess) << #call << ": " << cudaGetErrorString(bt_e_);       \
  } while (0)

#define BT_OK(call)                                                                            \
  do {                                                                                         \
    bnormStatus_t bt_s_ = (call);                                                              \
    ASSERT_EQ(bt_s_, BNORM_STATUS_SUCCESS) << #call << ": " << bnormGetLastErrorMessage(); \
  } while (0)

// ---- activation types ------------------------------------------------------------------
size_t dtype_bytes(bnormDataType_t t);
const char* dtype_name(bnormDataType_t t);
const char* layout_name(bnormLayout_t l);
// Rounds each value to t (round to nearest even) and returns the bytes.
std::vector<uint8_t> encode(const std::vector<double>& v, bnormDataType_t t);
std::vector<double> decode(const std::vector<uint8_t>& bytes, bnormDataType_t t);
// The values as t holds them (encode then decode).
std::vector<double> round_to(const std::vector<double>& v, bnormDataType_t t);

// ---- device memory ---------------------------------------------------------------------
// Owns a device allocation of exactly `bytes` bytes.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;

  void* get() const { return p_; }
  float* f32() const { return static_cast<float*>(p_); }
  size_t bytes() const { return bytes_; }
  void upload(const void* host, size_t n);
  void upload(const std::vector<uint8_t>& b) { upload(b.data(), b.size()); }
  void upload(const std::vector<float>& v) { upload(v.data(), v.size() * sizeof(float)); }
  std::vector<uint8_t> download() const;
  std::vector<float> download_f32() const;
  // 0xFF bytes: NaN in every float type, so an unwritten output fails.
  void poison();

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

DeviceBuffer upload_floats(const std::vector<double>& v);  // as fp32
DeviceBuffer upload_tensor(const std::vector<double>& v, bnormDataType_t t);

// ---- shapes ----------------------------------------------------------------------------
struct Shape {
  int64_t n, c, spatial;
};
struct Case {
  Shape s;
  bnormLayout_t layout;
  bnormDataType_t dtype;
  bnormTensorDesc_t desc() const { return {dtype, layout, s.n, s.c, s.spatial}; }
  bnref_shape ref() const {
    return {layout == BNORM_LAYOUT_NCHW ? BNREF_NCHW : BNREF_NHWC, s.n, s.c, s.spatial};
  }
  int64_t m() const { return s.n * s.spatial; }
  int64_t numel() const { return s.n * s.c * s.spatial; }
  std::string name() const;
};
// Shapes every operation is tested on: odd sizes, sizes that are no multiple
// of any tile, c = 1, n = 1, spatial = 1 with large n, large c with spatial
// = 1, and reductions long enough to be split across many blocks. All have
// m >= 2 (training needs it).
std::vector<Shape> standard_shapes();
// standard_shapes() x {NCHW, NHWC} x {fp32, fp16, bf16}.
std::vector<Case> standard_cases();
struct CaseName {
  std::string operator()(const ::testing::TestParamInfo<Case>& info) const {
    return info.param.name();
  }
};

// ---- data ------------------------------------------------------------------------------
// Activations whose channels have means in [mean_lo, mean_hi] and standard
// deviations in [std_lo, std_hi], rounded to the case's dtype (the reference
// sees exactly the values the kernels see). Never all zeros.
std::vector<double> random_activations(const Case& k, uint64_t seed, double mean_lo = -3.0,
                                       double mean_hi = 3.0, double std_lo = 0.5,
                                       double std_hi = 2.0);
// n values uniform in [lo, hi], rounded to fp32.
std::vector<double> random_floats(size_t n, uint64_t seed, double lo, double hi);
std::vector<double> to_double(const std::vector<float>& v);

// ---- kernel paths ----------------------------------------------------------------------
// AUTO, MULTI_PASS, SINGLE_BLOCK, PERSISTENT: tests run each shape on every path.
std::vector<bnormPath_t> all_paths();
const char* path_name(bnormPath_t p);

// ---- tolerances and comparison ---------------------------------------------------------
struct Tolerance {
  double atol, rtol;
};
// For a tensor output of unit scale stored as t: the rounding of t plus
// fp32 arithmetic.
Tolerance output_tolerance(bnormDataType_t t);

// |got - want| <= atol + rtol * |want| element by element; NaN or infinity
// in got (an unwritten, poisoned element) always fails. Reports the first
// mismatches with their index.
::testing::AssertionResult all_close(const std::vector<double>& got,
                                     const std::vector<double>& want, Tolerance tol,
                                     const char* what);

// ---- handles ---------------------------------------------------------------------------
class Handle {
 public:
  Handle();
  ~Handle();
  bnormHandle_t get() const { return h_; }
  operator bnormHandle_t() const { return h_; }

 private:
  bnormHandle_t h_ = nullptr;
};

}  // namespace bt

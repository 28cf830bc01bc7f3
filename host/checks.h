// Argument checks shared by every public call. A Checker runs checks in the
// order they are chained and stops at the first failure, which it records as
// the thread's message (naming the call and the argument). No check touches
// device memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "bnorm.h"
#include "context.h"

namespace bnorm {
namespace host {

// The configuration a call runs with: the caller's fields where `size`
// covers them, defaults elsewhere.
// A memory range an argument covers. Outputs are written by the call.
struct Region {
  const void* p;
  size_t bytes;
  const char* name;
  bool output;
};

struct Config {
  double eps;
  double factor;
  bnormAverage_t average;
  bnormPath_t path;
  bnormEpilogue_t epilogue;  // NONE when the caller's struct predates it
  const void* residual;
  void* residual_grad;
  void* relu_mask;
  size_t relu_mask_bytes;
};

class Checker {
 public:
  explicit Checker(const char* call) : call_(call) { clear_error(); }
  bool ok() const { return status_ == BNORM_STATUS_SUCCESS; }
  bnormStatus_t status() const { return status_; }
  const char* call() const { return call_; }

  Checker& handle(bnormHandle_t h);
  // Validates a descriptor; on success sets *elem_bytes.
  Checker& desc(const bnormTensorDesc_t* d, size_t* elem_bytes);
  // Validates a channel count on its own (calls without a tensor).
  Checker& channels(int64_t c);
  // Reads the config (NULL: defaults). `factor` is checked only if asked.
  Checker& config(const bnormConfig_t* in, bool check_factor, Config* out);
  Checker& required(const void* p, const char* name);
  // Both NULL or both set.
  Checker& pair(const void* a, const char* a_name, const void* b, const char* b_name);
  Checker& aligned(const void* p, size_t alignment, const char* name);
  // No output may overlap any other region (input or output), except the
  // exact in-place pairs named in `in_place` (same pointer, same size).
  // Inputs may overlap each other. NULL and empty regions are skipped.
  Checker& no_overlap(std::initializer_list<Region> regions,
                      std::initializer_list<std::pair<const char*, const char*>> in_place = {});
  Checker& workspace(const void* p, size_t have, size_t need);
  // The epilogue's pointers for a call on a tensor of `bytes` bytes and
  // `numel` elements: `role` says what the call does with them.
  // GradSums: the sums of a synchronized backward, which read the mask only.
  enum class EpilogueRole { Train, Infer, Backward, GradSums };
  Checker& epilogue(const Config& cfg, EpilogueRole role, size_t bytes, int64_t numel,
                    size_t elem_bytes);
  Checker& fail(bnormStatus_t s, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

 private:
  const char* call_;
  bnormStatus_t status_ = BNORM_STATUS_SUCCESS;
};

// The value of an enum field as the caller stored it. A C caller may store
// any int there; in C++ reading an out-of-range value through the enum type
// is undefined (and UBSan says so), so read the bytes.
template <class E>
inline int enum_value(const E& e) {
  static_assert(sizeof(E) == sizeof(int), "bnorm enums are int-sized");
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// Bytes of a tensor that passed Checker::desc.
inline size_t tensor_bytes(const bnormTensorDesc_t* d, size_t elem_bytes) {
  return size_t(d->n) * size_t(d->c) * size_t(d->spatial) * elem_bytes;
}

}  // namespace host
}  // namespace bnorm

// Argument checks shared by every public call. A Checker runs checks in the
// order they are chained and stops at the first failure, which it records as
// the thread's message (naming the call and the argument). No check touches
// device memory.
#pragma once

#include <cstddef>
#include <cstdint>

#include "bnorm.h"
#include "context.h"

namespace bnorm {
namespace host {

// The configuration a call runs with: the caller's fields where `size`
// covers them, defaults elsewhere.
struct Config {
  double eps;
  double factor;
  bnormAverage_t average;
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
  // [a, a + a_bytes) and [b, b + b_bytes) must not overlap, except that
  // a == b is allowed when allow_same is set (in-place).
  Checker& disjoint(const void* a, size_t a_bytes, const char* a_name, const void* b,
                    size_t b_bytes, const char* b_name, bool allow_same);
  Checker& workspace(const void* p, size_t have, size_t need);
  Checker& fail(bnormStatus_t s, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

 private:
  const char* call_;
  bnormStatus_t status_ = BNORM_STATUS_SUCCESS;
};

// Bytes of a tensor that passed Checker::desc.
inline size_t tensor_bytes(const bnormTensorDesc_t* d, size_t elem_bytes) {
  return size_t(d->n) * size_t(d->c) * size_t(d->spatial) * elem_bytes;
}

}  // namespace host
}  // namespace bnorm

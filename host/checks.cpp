#include "checks.h"

#include <cmath>
#include <cstdio>
#include <cstring>

namespace bnorm {
namespace host {

namespace {
// Largest channel count: a ChannelMajor reduction puts channels on grid.x.
constexpr int64_t kMaxChannels = 2147483647;
}  // namespace

Checker& Checker::fail(bnormStatus_t s, const char* fmt, ...) {
  if (!ok()) return *this;
  status_ = s;
  char buf[400];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  host::fail(s, call_, "%s", buf);
  return *this;
}

Checker& Checker::handle(bnormHandle_t h) {
  if (!ok()) return *this;
  if (!h) return fail(BNORM_STATUS_BAD_HANDLE, "argument 'handle' is NULL");
  if (h->magic != kHandleMagic)
    return fail(BNORM_STATUS_BAD_HANDLE, "argument 'handle' was not made by bnormCreate");
  return *this;
}

Checker& Checker::desc(const bnormTensorDesc_t* d, size_t* elem_bytes) {
  if (!ok()) return *this;
  if (!d) return fail(BNORM_STATUS_NULL_POINTER, "argument 'desc' is NULL");
  const int dtype = enum_value(d->dtype), layout = enum_value(d->layout);
  switch (dtype) {
    case BNORM_DATA_FLOAT: *elem_bytes = 4; break;
    case BNORM_DATA_HALF:
    case BNORM_DATA_BFLOAT16: *elem_bytes = 2; break;
    default:
      return fail(BNORM_STATUS_INVALID_VALUE, "desc->dtype (%d) is not a bnormDataType_t", dtype);
  }
  if (layout != BNORM_LAYOUT_NCHW && layout != BNORM_LAYOUT_NHWC)
    return fail(BNORM_STATUS_INVALID_VALUE, "desc->layout (%d) is not a bnormLayout_t", layout);
  if (d->n < 0)
    return fail(BNORM_STATUS_BAD_SHAPE, "desc->n (%lld) is negative", (long long)d->n);
  if (d->c < 1)
    return fail(BNORM_STATUS_BAD_SHAPE, "desc->c (%lld) must be at least 1", (long long)d->c);
  if (d->c > kMaxChannels)
    return fail(BNORM_STATUS_BAD_SHAPE, "desc->c (%lld) exceeds 2^31 - 1", (long long)d->c);
  if (d->spatial < 1)
    return fail(BNORM_STATUS_BAD_SHAPE, "desc->spatial (%lld) must be at least 1",
                (long long)d->spatial);
  int64_t prod;
  if (__builtin_mul_overflow(d->n, d->c, &prod) ||
      __builtin_mul_overflow(prod, d->spatial, &prod) ||
      __builtin_mul_overflow(prod, int64_t(*elem_bytes), &prod))
    return fail(BNORM_STATUS_BAD_SHAPE,
                "desc: n * c * spatial * element size (%lld * %lld * %lld * %zu) overflows "
                "int64",
                (long long)d->n, (long long)d->c, (long long)d->spatial, *elem_bytes);
  return *this;
}

Checker& Checker::channels(int64_t c) {
  if (!ok()) return *this;
  if (c < 1) return fail(BNORM_STATUS_BAD_SHAPE, "argument 'c' (%lld) must be at least 1", (long long)c);
  if (c > kMaxChannels)
    return fail(BNORM_STATUS_BAD_SHAPE, "argument 'c' (%lld) exceeds 2^31 - 1", (long long)c);
  return *this;
}

Checker& Checker::config(const bnormConfig_t* in, bool check_factor, Config* out) {
  if (!ok()) return *this;
  const bnormConfig_t defaults = BNORM_CONFIG_INITIALIZER;
  const bnormConfig_t* c = in ? in : &defaults;
  const size_t v0_end = offsetof(bnormConfig_t, average) + sizeof(c->average);
  if (c->size < v0_end)
    return fail(BNORM_STATUS_INVALID_VALUE,
                "config->size (%zu) is smaller than any bnormConfig_t (%zu); initialize it with "
                "BNORM_CONFIG_INITIALIZER",
                c->size, v0_end);
  if (c->magic != BNORM_CONFIG_MAGIC)
    return fail(BNORM_STATUS_INVALID_VALUE,
                "config->magic (0x%08x) is wrong; initialize it with BNORM_CONFIG_INITIALIZER",
                c->magic);
  if (!(c->eps >= 0.0) || !std::isfinite(c->eps))
    return fail(BNORM_STATUS_INVALID_VALUE, "config->eps (%g) must be finite and >= 0", c->eps);
  const int average = enum_value(c->average);
  if (average != BNORM_AVERAGE_EXPONENTIAL && average != BNORM_AVERAGE_CUMULATIVE)
    return fail(BNORM_STATUS_INVALID_VALUE, "config->average (%d) is not a bnormAverage_t",
                average);
  if (check_factor && c->average == BNORM_AVERAGE_EXPONENTIAL &&
      !(c->exponential_average_factor >= 0.0 && c->exponential_average_factor <= 1.0))
    return fail(BNORM_STATUS_INVALID_VALUE,
                "config->exponential_average_factor (%g) must be in [0, 1]",
                c->exponential_average_factor);
  out->eps = c->eps;
  out->factor = c->exponential_average_factor;
  out->average = c->average;
  // Fields after the first version: read only what the caller's size covers.
  out->path = BNORM_PATH_AUTO;
  if (c->size >= offsetof(bnormConfig_t, path) + sizeof(c->path)) {
    const int path = enum_value(c->path);
    if (path != BNORM_PATH_AUTO && path != BNORM_PATH_MULTI_PASS &&
        path != BNORM_PATH_SINGLE_BLOCK && path != BNORM_PATH_PERSISTENT)
      return fail(BNORM_STATUS_INVALID_VALUE, "config->path (%d) is not a bnormPath_t", path);
    out->path = c->path;
  }
  out->epilogue = BNORM_EPILOGUE_NONE;
  out->residual = nullptr;
  out->residual_grad = nullptr;
  out->relu_mask = nullptr;
  out->relu_mask_bytes = 0;
  if (c->size >= offsetof(bnormConfig_t, relu_mask_bytes) + sizeof(c->relu_mask_bytes)) {
    const int epilogue = enum_value(c->epilogue);
    if (epilogue != BNORM_EPILOGUE_NONE && epilogue != BNORM_EPILOGUE_RELU &&
        epilogue != BNORM_EPILOGUE_ADD_RELU)
      return fail(BNORM_STATUS_INVALID_VALUE, "config->epilogue (%d) is not a bnormEpilogue_t",
                  epilogue);
    out->epilogue = c->epilogue;
    if (epilogue != BNORM_EPILOGUE_NONE) {
      // z and dz belong to the add: a ReLU alone ignores them, as bnorm.h
      // says, and so does every check that follows.
      if (epilogue == BNORM_EPILOGUE_ADD_RELU) {
        out->residual = c->residual;
        out->residual_grad = c->residual_grad;
      }
      out->relu_mask = c->relu_mask;
      out->relu_mask_bytes = c->relu_mask_bytes;
    }
  }
  return *this;
}

Checker& Checker::required(const void* p, const char* name) {
  if (!ok() || p) return *this;
  return fail(BNORM_STATUS_NULL_POINTER, "argument '%s' is NULL", name);
}

Checker& Checker::pair(const void* a, const char* a_name, const void* b, const char* b_name) {
  if (!ok() || (a == nullptr) == (b == nullptr)) return *this;
  return fail(BNORM_STATUS_NULL_POINTER, "argument '%s' is NULL but '%s' is not; pass both or neither",
              a ? b_name : a_name, a ? a_name : b_name);
}

Checker& Checker::aligned(const void* p, size_t alignment, const char* name) {
  if (!ok() || !p || reinterpret_cast<uintptr_t>(p) % alignment == 0) return *this;
  return fail(BNORM_STATUS_MISALIGNED, "argument '%s' (%p) is not aligned to %zu bytes", name, p,
              alignment);
}

Checker& Checker::no_overlap(std::initializer_list<Region> regions,
                             std::initializer_list<std::pair<const char*, const char*>> in_place) {
  if (!ok()) return *this;
  const Region* r = regions.begin();
  const size_t n = regions.size();
  for (size_t i = 0; i < n; ++i) {
    if (!r[i].output || !r[i].p || r[i].bytes == 0) continue;
    const uintptr_t a0 = reinterpret_cast<uintptr_t>(r[i].p);
    for (size_t j = 0; j < n; ++j) {
      if (j == i || !r[j].p || r[j].bytes == 0) continue;
      if (r[j].output && j < i) continue;  // each pair of outputs once
      const uintptr_t b0 = reinterpret_cast<uintptr_t>(r[j].p);
      if (!(a0 < b0 + r[j].bytes && b0 < a0 + r[i].bytes)) continue;
      bool allowed = false;
      for (const auto& pair : in_place) {
        const bool names_match =
            (std::strcmp(pair.first, r[i].name) == 0 && std::strcmp(pair.second, r[j].name) == 0) ||
            (std::strcmp(pair.first, r[j].name) == 0 && std::strcmp(pair.second, r[i].name) == 0);
        allowed |= names_match && a0 == b0 && r[i].bytes == r[j].bytes;
      }
      if (!allowed)
        return fail(BNORM_STATUS_BAD_ALIASING, "arguments '%s' and '%s' overlap%s", r[i].name,
                    r[j].name,
                    in_place.size() ? " (only the documented exact in-place aliasing is allowed)"
                                    : "");
    }
  }
  return *this;
}

Checker& Checker::epilogue(const Config& cfg, EpilogueRole role, size_t bytes, int64_t numel,
                           size_t elem_bytes) {
  if (!ok() || cfg.epilogue == BNORM_EPILOGUE_NONE || numel == 0) return *this;
  const bool add = cfg.epilogue == BNORM_EPILOGUE_ADD_RELU;
  const size_t mask_need = size_t((numel + 31) / 32) * 4;
  (void)bytes;
  if ((role == EpilogueRole::Train || role == EpilogueRole::Infer) && add) {
    required(cfg.residual, "config->residual").aligned(cfg.residual, elem_bytes, "config->residual");
  }
  if (role == EpilogueRole::Backward && add) {
    required(cfg.residual_grad, "config->residual_grad")
        .aligned(cfg.residual_grad, elem_bytes, "config->residual_grad");
  }
  if (role != EpilogueRole::Infer) required(cfg.relu_mask, "config->relu_mask");
  if (cfg.relu_mask) {
    aligned(cfg.relu_mask, 4, "config->relu_mask");
    if (ok() && cfg.relu_mask_bytes < mask_need)
      fail(BNORM_STATUS_WORKSPACE_TOO_SMALL,
           "config->relu_mask_bytes (%zu) is smaller than the %zu bytes of the mask "
           "(bnormGetReluMaskSize)",
           cfg.relu_mask_bytes, mask_need);
  }
  return *this;
}

Checker& Checker::workspace(const void* p, size_t have, size_t need) {
  if (!ok()) return *this;
  if (have < need)
    return fail(BNORM_STATUS_WORKSPACE_TOO_SMALL,
                "argument 'workspace_bytes' (%zu) is smaller than the %zu bytes this call needs",
                have, need);
  if (need > 0 && !p) return fail(BNORM_STATUS_NULL_POINTER, "argument 'workspace' is NULL");
  return aligned(p, 16, "workspace");
}

}  // namespace host
}  // namespace bnorm

// NVTX ranges: every public call opens a range named after itself (its
// __func__) in the "bnorm" domain, so Nsight Systems shows bnorm's host-side
// work in a training timeline. Header-only NVTX 3 from the CUDA toolkit: with
// no tool attached each push or pop is a call through a no-op pointer, and
// nothing needs linking (the loader of a tool uses dlopen, in libc).
// Built out with the CMake option BNORM_NVTX=OFF (BNORM_NVTX=0).
#pragma once

#ifndef BNORM_NVTX
#define BNORM_NVTX 1
#endif

#if BNORM_NVTX
#include <nvtx3/nvToolsExt.h>

namespace bnorm {
namespace host {

inline nvtxDomainHandle_t nvtx_domain() {
  static const nvtxDomainHandle_t d = nvtxDomainCreateA("bnorm");
  return d;
}

// A range for the lifetime of the object: every return path pops it.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) {
    nvtxEventAttributes_t a{};
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.messageType = NVTX_MESSAGE_TYPE_ASCII;
    a.message.ascii = name;
    nvtxDomainRangePushEx(nvtx_domain(), &a);
  }
  ~NvtxRange() { nvtxDomainRangePop(nvtx_domain()); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace host
}  // namespace bnorm

// First statement of every public call.
#define BNORM_NVTX_RANGE() const ::bnorm::host::NvtxRange bnorm_nvtx_range_(__func__)
#else
#define BNORM_NVTX_RANGE() static_cast<void>(0)
#endif

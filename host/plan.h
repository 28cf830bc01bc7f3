// Kernel choice and grid sizing for a shape on a device. Pure host
// arithmetic over the handle's cached properties: the workspace-size queries
// and the calls share it, so they always agree.
#pragma once

#include "bnorm.h"
#include "checks.h"
#include "context.h"
#include "kernels/launch.h"

namespace bnorm {
namespace host {

struct Plan {
  kernels::Tensor t;
  kernels::ReducePlan reduce;
};

// The epilogue's kernel arguments from a checked config.
kernels::EpilogueArgs epilogue_args(const Config& cfg, int64_t numel);

// desc must have passed Checker::desc.
Plan make_plan(const bnormContext& ctx, const bnormTensorDesc_t& desc, bnormPath_t path);

}  // namespace host
}  // namespace bnorm

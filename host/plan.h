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
  // Bytes of the persistent kernels' partials at the widest grid any vector
  // width can give (0 when the persistent path is not planned).
  size_t persist_workspace;
};

// Which call plans: the persistent forward and backward kernels differ in
// what a thread keeps on chip, hence in grid and occupancy.
enum class Pass { Forward, Backward };

// The epilogue's kernel arguments from a checked config.
kernels::EpilogueArgs epilogue_args(const Config& cfg, int64_t numel);

// desc must have passed Checker::desc.
Plan make_plan(const bnormContext& ctx, const bnormTensorDesc_t& desc, bnormPath_t path,
               Pass pass = Pass::Forward);

// The workspace a call needs for its plan: the query and the call share
// these, so they always agree, whichever kernels the launcher ends up
// running (the persistent ones fall back to the multi-pass kernels when the
// pointers' alignment gives a grid that does not fit).
size_t forward_workspace_bytes(const Plan& plan);
size_t backward_workspace_bytes(const Plan& plan, bool frozen);

}  // namespace host
}  // namespace bnorm

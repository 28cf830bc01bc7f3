// The handle's contents and the host layer's internal helpers.
#pragma once

#include <cstdarg>
#include <cstdint>

#include "bnorm.h"

// Device facts cached at bnormCreate; planning reads only these, so every
// call is host-only until it enqueues.
struct bnormContext {
  uint32_t magic;
  int device;
  int sm_count;
  int cc_major, cc_minor;
  int max_grid_y;
  // The persistent kernels: whether the device launches cooperatively, and
  // how many blocks of them an SM holds (per dtype, the fewest over their
  // vector widths and layouts; 0: unavailable).
  bool cooperative;
  // Resident blocks an SM of the persistent kernels (launch.h:
  // PersistOccupancy): [forward, backward][register-only, staging][dtype].
  int persist_blocks[2][2][3];
  // Shared memory: an SM's, the system's reserve per resident block, and
  // the most one block may ask for (the persistent kernels' stage).
  int64_t shared_per_sm, shared_reserved, shared_per_block_optin;
  char name[256];
};

namespace bnorm {
namespace host {

constexpr uint32_t kHandleMagic = 0x6e6f726du;  // "morn"

// Records the message of the current call on this thread. `call` names the
// public function; the rest is printf-style. Returns `s` for chaining.
bnormStatus_t fail(bnormStatus_t s, const char* call, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Clears this thread's message at the start of a call.
void clear_error();

}  // namespace host
}  // namespace bnorm

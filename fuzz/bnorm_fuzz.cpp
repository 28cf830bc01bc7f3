// libFuzzer harness: drives the public calls of the emulated build that take
// arguments — the three workspace queries, forward training and inference,
// the scale/shift export, bnormFoldIntoLinear, the two backward calls,
// bnormGetReluMaskSize, bnormCreate and bnormDestroy — with whatever the
// input says: descriptors, dtypes, layouts and enums in and out of range,
// sizes up to overflowing products, config fields (size, magic, eps and
// factor NaN, inf, negative, the fused epilogue and its residual, residual
// gradient and ReLU mask), workspace and mask sizes, NULL, shifted,
// misaligned and aliased pointers — over real allocations.
// Since the sync calls: bnormGetSyncBufferSizes, the built-in calls' two
// workspace queries, bnormSyncForwardTraining / bnormSyncBackward with comm
// NULL, and the split phases over 1 to 3 simulated ranks (see "synchronized
// batch norm" below; no communicator is ever made).
// bnormGetLastErrorMessage is checked after every call; bnormGetStatusString
// and bnormGetVersion (no pointer argument) are not driven.
//
// Input compatibility: everything added for 0.2 (the epilogue fields, the
// calls above beyond the first eight) is decoded after what the first
// version decoded, so the committed corpus decodes as it did; an input that
// ends early reads zeros, which mean "no epilogue, the first eight calls".
//
// The oracle, for every call:
//  - An independent model of the contract in include/bnorm.h lists the rules
//    the arguments break. None: the call must succeed. Some: it must fail,
//    with one of those rules' statuses and a message that names the call.
//  - All pointers point into one arena allocated at its exact size (ASan
//    sees any access outside it). The arena is compared byte for byte after
//    the call: a failed call changed nothing at all; a successful one changed
//    only its outputs (the workspace only in the bytes the size query asked
//    for; m == 0 nothing, or dgamma/dbeta zeroed).
//  - Outputs of a successful call match the double-precision reference
//    (tests/reference) within error bounds derived from the inputs'
//    magnitudes, on every channel whose inputs are finite and moderate
//    (aliased inputs of different types give arbitrary values; channels
//    with non-finite values are checked for NaN propagation instead).
// A violation aborts with a description (libFuzzer then saves the input).
//
// Shapes are kept small when they are real (the emulator runs every CUDA
// thread as a fiber); huge and invalid extents are passed with the pointers
// that such a call would need replaced by NULL (or a too-small workspace),
// so that the call must fail before it touches memory.
#include <bnorm.h>
#include <bnorm_emu.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bn_reference.h"

namespace {

// ---- failure reporting -----------------------------------------------------------------

std::string g_story;  // what this input asked for, printed with any failure

[[noreturn]] void violation(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void violation(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "\nbnorm_fuzz: CONTRACT VIOLATION: ");
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n  input: %s\n  last message: \"%s\"\n", g_story.c_str(),
               bnormGetLastErrorMessage());
  std::fflush(stderr);
  std::abort();
}

void story(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void story(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g_story += buf;
}

// ---- the calls and their arguments ------------------------------------------------------

enum class Op {
  kFwdWs, kFwd, kInf, kScaleShift, kBwdWs, kBwd, kFrzWs, kFrz,
  // Added with 0.2 (chosen by a byte decoded after the first version's).
  kFold, kMaskSize, kCreate,
  // Synchronized batch norm (chosen by a 2-byte tag decoded after everything
  // above, so older inputs decode as they did): the buffer-size and the two
  // built-in workspace queries, the built-in NCCL calls with comm NULL, and
  // the split phases over 1 to 3 ranks simulated in one thread.
  kSyncSizes, kSyncFwdWs, kSyncBwdWs, kSyncFwdNccl, kSyncBwdNccl, kSyncFwd, kSyncBwd, kCount
};
constexpr uint16_t kSyncTag = 0x5359;  // "SY"
bool is_sync(Op op) { return op >= Op::kSyncSizes && op < Op::kCount; }
constexpr int kOpsV1 = 8;  // the first version's op range: decode() keeps it

const char* op_name(Op op) {
  switch (op) {
    case Op::kFwdWs: return "bnormGetForwardTrainingWorkspaceSize";
    case Op::kFwd: return "bnormForwardTraining";
    case Op::kInf: return "bnormForwardInference";
    case Op::kScaleShift: return "bnormGetInferenceScaleShift";
    case Op::kBwdWs: return "bnormGetBackwardWorkspaceSize";
    case Op::kBwd: return "bnormBackward";
    case Op::kFrzWs: return "bnormGetBackwardFrozenWorkspaceSize";
    case Op::kFrz: return "bnormBackwardFrozen";
    case Op::kFold: return "bnormFoldIntoLinear";
    case Op::kMaskSize: return "bnormGetReluMaskSize";
    case Op::kCreate: return "bnormCreate";
    case Op::kSyncSizes: return "bnormGetSyncBufferSizes";
    case Op::kSyncFwdWs: return "bnormGetSyncForwardTrainingWorkspaceSize";
    case Op::kSyncBwdWs: return "bnormGetSyncBackwardWorkspaceSize";
    case Op::kSyncFwdNccl: return "bnormSyncForwardTraining";
    case Op::kSyncBwdNccl: return "bnormSyncBackward";
    case Op::kSyncFwd: return "bnormSyncForward{Stats,Apply}";
    case Op::kSyncBwd: return "bnormSyncBackward{Grads,Apply}";
    default: return "?";
  }
}

enum Slot {
  kX, kY, kDy, kDx, kGamma, kBeta, kRunMean, kRunVar, kStep, kSavedMean, kSavedRstd,
  kDGamma, kDBeta, kScale, kShift, kWorkspace,
  // 0.2: the epilogue's config pointers, and bnormFoldIntoLinear's layer.
  kResidual, kResidualGrad, kMask, kWeight, kBiasIn, kBiasOut, kSlots
};
constexpr int kSlotsV1 = int(kWorkspace) + 1;  // the first version's slots: decode() keeps them
const char* const kSlotName[kSlots] = {
    "x",           "y",          "dy",         "dx",         "gamma",  "beta",  "running_mean",
    "running_var", "step_count", "saved_mean", "saved_rstd", "dgamma", "dbeta", "scale",
    "shift",       "workspace",  "config->residual", "config->residual_grad", "config->relu_mask",
    "weight",      "bias_in",    "bias_out"};

std::vector<Slot> slots_of(Op op) {
  switch (op) {
    case Op::kFwd:
      return {kX, kY, kGamma, kBeta, kRunMean, kRunVar, kStep, kSavedMean, kSavedRstd, kWorkspace};
    case Op::kInf: return {kX, kY, kGamma, kBeta, kRunMean, kRunVar};
    case Op::kScaleShift: return {kGamma, kBeta, kRunMean, kRunVar, kScale, kShift};
    case Op::kBwd:
      return {kX, kDy, kDx, kGamma, kSavedMean, kSavedRstd, kDGamma, kDBeta, kWorkspace};
    case Op::kFrz: return {kX, kDy, kDx, kGamma, kRunMean, kRunVar, kDGamma, kDBeta, kWorkspace};
    case Op::kFold: return {kGamma, kBeta, kRunMean, kRunVar, kWeight, kBiasIn, kBiasOut};
    default: return {};
  }
}

bool has_epilogue_args(Op op) {
  return op == Op::kFwd || op == Op::kInf || op == Op::kBwd || op == Op::kFrz;
}
// The config's epilogue pointers: every call with a config that has them is
// passed all three (each call ignores the ones that are not its own).
std::vector<Slot> epilogue_slots(Op op) {
  if (!has_epilogue_args(op)) return {};
  return {kResidual, kResidualGrad, kMask};
}

// Whether the call reads or writes an epilogue pointer, by bnorm.h: the mask
// with any epilogue (written by the forward calls, read by the backward
// ones), z by the forward calls with ADD_RELU, dz by the backward ones with
// ADD_RELU. The others are ignored.
bool epilogue_active(Op op, int epilogue, Slot k) {
  if (epilogue == BNORM_EPILOGUE_NONE || !has_epilogue_args(op)) return false;
  const bool forward = op == Op::kFwd || op == Op::kInf;
  switch (k) {
    case kMask: return true;
    case kResidual: return forward && epilogue == BNORM_EPILOGUE_ADD_RELU;
    case kResidualGrad: return !forward && epilogue == BNORM_EPILOGUE_ADD_RELU;
    default: return false;
  }
}

// Outputs of each call (written on success); everything else is read only.
bool is_output(Op op, Slot s, int epilogue = BNORM_EPILOGUE_NONE) {
  switch (s) {
    case kMask: return (op == Op::kFwd || op == Op::kInf) && epilogue_active(op, epilogue, s);
    case kResidualGrad: return epilogue_active(op, epilogue, s);
    case kWeight: case kBiasOut: return op == Op::kFold;
    case kY: case kDx: case kSavedMean: case kSavedRstd: case kDGamma: case kDBeta: case kScale:
    case kShift: case kWorkspace:
      return !(op == Op::kBwd && (s == kSavedMean || s == kSavedRstd));
    case kRunMean: case kRunVar: case kStep: return op == Op::kFwd;
    default: return false;
  }
}

// ---- interesting values -------------------------------------------------------------------

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

double interesting_double(FuzzedDataProvider& f) {
  static const double v[] = {0.0,   -0.0,  1e-5,  1e-3,   0.1,     0.5,  1.0,
                             std::nextafter(1.0, 2.0),    2.0,     -1e-300, -1.0, kNaN,
                             -kNaN, kInf,  -kInf, 4.9e-324, 1.7976931348623157e308, 1e300,
                             1e-12, 0.999};
  const size_t i = f.ConsumeIntegralInRange<size_t>(0, sizeof v / sizeof v[0]);
  return i < sizeof v / sizeof v[0] ? v[i] : f.ConsumeFloatingPoint<double>();
}

int64_t wild_extent(FuzzedDataProvider& f) {
  static const int64_t v[] = {-1,
                              0,
                              1,
                              2,
                              3,
                              (int64_t(1) << 31) - 1,
                              int64_t(1) << 31,
                              (int64_t(1) << 32) - 1,
                              int64_t(1) << 32,
                              (int64_t(1) << 32) + 1,
                              int64_t(1) << 40,
                              int64_t(1) << 61,
                              int64_t(1) << 62,
                              std::numeric_limits<int64_t>::max(),
                              std::numeric_limits<int64_t>::min(),
                              -(int64_t(1) << 32)};
  const size_t i = f.ConsumeIntegralInRange<size_t>(0, sizeof v / sizeof v[0]);
  return i < sizeof v / sizeof v[0] ? v[i] : f.ConsumeIntegral<int64_t>();
}

int raw_enum(FuzzedDataProvider& f, int valid) {
  const int i = f.ConsumeIntegralInRange<int>(0, valid + 1);
  if (i < valid) return i;
  return i == valid ? -1 : f.ConsumeIntegral<int>();
}

template <class E>
void set_raw(E& e, int v) {
  static_assert(sizeof(E) == sizeof(int), "int-sized enum");
  std::memcpy(&e, &v, sizeof v);
}
template <class E>
int get_raw(const E& e) {
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// ---- values in the three activation types ----------------------------------------------------

size_t elem_size(int dtype) { return dtype == BNORM_DATA_FLOAT ? 4 : 2; }

double load(const uint8_t* p, int dtype) {
  switch (dtype) {
    case BNORM_DATA_HALF: {
      __half h;
      std::memcpy(&h, p, 2);
      return __half2float(h);
    }
    case BNORM_DATA_BFLOAT16: {
      __nv_bfloat16 h;
      std::memcpy(&h, p, 2);
      return __bfloat162float(h);
    }
    default: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
  }
}

void store(uint8_t* p, int dtype, double v) {
  const float f = float(v);
  switch (dtype) {
    case BNORM_DATA_HALF: {
      const __half h = __float2half_rn(f);
      std::memcpy(p, &h, 2);
      break;
    }
    case BNORM_DATA_BFLOAT16: {
      const __nv_bfloat16 h = __float2bfloat16_rn(f);
      std::memcpy(p, &h, 2);
      break;
    }
    default: std::memcpy(p, &f, 4);
  }
}

// The largest finite output magnitude we compare in each type (beyond it a
// value may round to infinity in the output type).
double output_limit(int dtype) {
  switch (dtype) {
    case BNORM_DATA_HALF: return 30000.0;
    case BNORM_DATA_BFLOAT16: return 1e37;
    default: return 1e37;
  }
}

struct Tol {
  double atol, rtol;
};
Tol output_tol(int dtype) {
  switch (dtype) {
    case BNORM_DATA_HALF: return {2e-3, 2e-3};
    case BNORM_DATA_BFLOAT16: return {1.6e-2, 1e-2};
    default: return {2e-5, 2e-5};
  }
}

// ---- the scenario --------------------------------------------------------------------------

constexpr size_t kBudget = size_t(1) << 20;   // bytes of one region we are willing to allocate
constexpr int64_t kMaxRealElems = 3000;      // elements of a "real" tensor (fibers are slow)
constexpr size_t kLead = 64;                  // arena bytes before the first region
constexpr size_t kTail = 64;                  // and after the last

struct Placement {
  bool present = false;  // false: NULL
  size_t pos = 0;        // offset in the arena (from an aligned base)
  size_t bytes = 0;      // the size the contract requires of it
};

bool overlaps(const Placement& a, const Placement& b) {
  return a.present && b.present && a.bytes && b.bytes && a.pos < b.pos + b.bytes &&
         b.pos < a.pos + a.bytes;
}

struct Scenario {
  Op op;
  int handle_kind;  // 0 the shared one, 1 NULL, 2 not made by bnormCreate, 3 a fresh one
  bool pass_desc;
  bnormTensorDesc_t desc;
  bool pass_config;
  bnormConfig_t config;
  int64_t c_arg;  // bnormGetInferenceScaleShift's c
  size_t workspace_bytes;  // set at run time from ws_kind and the size query
  int ws_kind;
  uint64_t ws_random;
  bool pass_ws_out;
  // Where each pointer goes: kind 0 NULL, 1 a region of its own, `gap`
  // bytes after the previous one, misaligned by `misalign` bytes; 7 `delta`
  // bytes from the region of an earlier slot `target` (aliasing, partial
  // overlap). A region larger than kBudget is NULL whatever the kind.
  struct Spec {
    int kind, target, delta, misalign, gap;
  } spec[kSlots];
  Placement place[kSlots];  // computed at run time from spec and the sizes
  uint64_t data_seed;
  int special;  // 0 none; else how many special values to plant
  bool consistent_saved;
  int64_t step0;
  bool random_schedule;
  uint64_t schedule_seed;
  // 0.2. config.epilogue holds the raw value; the epilogue pointers and
  // relu_mask_bytes are set at run time from spec[] and mask_kind.
  int mask_kind;          // relu_mask_bytes: 0 exact, else too small or larger
  uint64_t mask_random;
  int64_t in_features;    // bnormFoldIntoLinear (out_features is c_arg)
  size_t v1_left;         // input bytes left after the first version's fields (verbose story)
  size_t left = 0;        // and after the 0.2 ones (where the sync tag is read)
  // Synchronized batch norm (decoded after everything above; see Op).
  struct SyncArgs {
    int nranks = 1;              // ranks simulated (1 to 3)
    int64_t n[3] = {0, 0, 0};    // each rank's n (rank 0's is desc.n)
    int victim_rank = 0, victim_phase = 0;  // the call passed the fuzzed pointers below
    int nranks_kind = 0, rank_kind = 0, gn_kind = 0, xbuf_kind = 0;
    bool gamma = true, running = true, saved = true, grads = true;
    Spec spec[16] = {};          // the victim's pointer arguments, in the order of its call
  } sy;
};

// The model's view of the descriptor and config (none of the library's code).
struct Model {
  bool desc_ok = false, config_ok = false;
  int dtype = 0;
  size_t elem = 4;
  int64_t n = 0, c = 0, spatial = 0, numel = 0, m = 0;
  size_t bytes = 0;   // tensor bytes (valid desc)
  size_t cbytes = 0;  // per-channel bytes
  double eps = 1e-5, factor = 0.1;
  int average = 0;
  int epilogue = 0;        // the epilogue the call sees (NONE if size does not cover it)
  size_t mask_need = 0;    // bytes of the ReLU mask: 4 * ceil(numel / 32)
  size_t weight_bytes = 0; // bnormFoldIntoLinear's weight: out * in * 4
  std::set<int> violated;  // statuses of the rules broken
  bool factor_bad = false;  // exponential average with a factor outside [0, 1]
};

bool uses_desc(Op op) {
  return op != Op::kScaleShift && op != Op::kFold && op != Op::kCreate && op != Op::kSyncSizes;
}
bool uses_config(Op op) { return op != Op::kMaskSize && op != Op::kCreate && op != Op::kSyncSizes; }
// Calls that use the exponential average factor (bnorm.h: a call ignores
// the config fields that are not its own).
bool uses_factor(Op op) { return op == Op::kFwd || op == Op::kSyncFwdNccl; }

Model model_header(const Scenario& s) {
  Model md;
  auto bad = [&](bnormStatus_t st) { md.violated.insert(int(st)); };
  // config
  const bnormConfig_t defaults = BNORM_CONFIG_INITIALIZER;
  const bnormConfig_t& cfg = s.pass_config ? s.config : defaults;
  const size_t v0_end = offsetof(bnormConfig_t, average) + sizeof(int);
  const size_t path_end = offsetof(bnormConfig_t, path) + sizeof(int);
  md.config_ok = true;
  const size_t epilogue_end = offsetof(bnormConfig_t, relu_mask_bytes) + sizeof(size_t);
  if (cfg.size >= epilogue_end) {  // the 0.2 fields are read only when size covers them all
    const int e = get_raw(cfg.epilogue);
    if (e < 0 || e > 2) md.config_ok = false;
    else md.epilogue = e;
  }
  if (cfg.size < v0_end || cfg.magic != BNORM_CONFIG_MAGIC || !(cfg.eps >= 0.0) ||
      !std::isfinite(cfg.eps))
    md.config_ok = false;
  md.average = get_raw(cfg.average);
  if (md.average != 0 && md.average != 1) md.config_ok = false;
  if (uses_factor(s.op) && md.average == BNORM_AVERAGE_EXPONENTIAL &&
      !(cfg.exponential_average_factor >= 0.0 && cfg.exponential_average_factor <= 1.0))
    md.config_ok = false;
  if (cfg.size >= path_end) {
    const int path = get_raw(cfg.path);
    if (path < 0 || path > 3) md.config_ok = false;
  }
  md.eps = cfg.eps;
  md.factor = cfg.exponential_average_factor;
  md.factor_bad = md.average == BNORM_AVERAGE_EXPONENTIAL &&
                  !(cfg.exponential_average_factor >= 0.0 && cfg.exponential_average_factor <= 1.0);
  if (!uses_config(s.op)) {
    md.config_ok = true;
    md.epilogue = 0;
  }
  if (!md.config_ok) bad(BNORM_STATUS_INVALID_VALUE);

  if (s.op == Op::kCreate) return md;  // bnormCreate takes no handle
  if (s.handle_kind == 1 || s.handle_kind == 2) bad(BNORM_STATUS_BAD_HANDLE);

  if (!uses_desc(s.op)) {
    md.c = s.c_arg;
    md.desc_ok = s.c_arg >= 1 && s.c_arg <= 2147483647;
    // bnormFoldIntoLinear: in_features >= 1 and the weight's bytes in int64.
    int64_t w = 0;
    if (s.op == Op::kFold && md.desc_ok &&
        (s.in_features < 1 || __builtin_mul_overflow(md.c, s.in_features, &w) ||
         __builtin_mul_overflow(w, int64_t(4), &w)))
      md.desc_ok = false;
    if (!md.desc_ok) bad(BNORM_STATUS_BAD_SHAPE);
    if (md.desc_ok) md.cbytes = size_t(md.c) * 4;
    if (md.desc_ok && s.op == Op::kFold) md.weight_bytes = size_t(w);
    return md;
  }
  if (!s.pass_desc) {
    bad(BNORM_STATUS_NULL_POINTER);
    return md;
  }
  const bnormTensorDesc_t& d = s.desc;
  md.dtype = get_raw(d.dtype);
  const int layout = get_raw(d.layout);
  bool ok = true;
  if (md.dtype < 0 || md.dtype > 2 || layout < 0 || layout > 1) {
    bad(BNORM_STATUS_INVALID_VALUE);
    ok = false;
  }
  md.elem = (md.dtype >= 0 && md.dtype <= 2) ? elem_size(md.dtype) : 4;
  int64_t p1, p2, p3;
  if (d.n < 0 || d.c < 1 || d.c > 2147483647 || d.spatial < 1 ||
      __builtin_mul_overflow(d.n, d.c, &p1) || __builtin_mul_overflow(p1, d.spatial, &p2) ||
      __builtin_mul_overflow(p2, int64_t(md.elem), &p3)) {
    bad(BNORM_STATUS_BAD_SHAPE);
    ok = false;
  }
  md.desc_ok = ok;
  if (ok) {
    md.n = d.n;
    md.c = d.c;
    md.spatial = d.spatial;
    md.numel = p2;
    md.m = d.n * d.spatial;
    md.bytes = size_t(p3);
    md.cbytes = size_t(d.c) * 4;
    md.mask_need = size_t((p2 + 31) / 32) * 4;
  }
  return md;
}

// The rules on pointers, alignment, aliasing, batch and workspace, for a
// call whose handle, descriptor and config are valid.
void model_pointers(const Scenario& s, const uint8_t* base, size_t need, Model& md) {
  auto bad = [&](bnormStatus_t st) { md.violated.insert(int(st)); };
  const Placement* pl = s.place;
  auto ptr = [&](Slot k) -> uintptr_t {
    return pl[k].present ? reinterpret_cast<uintptr_t>(base + pl[k].pos) : 0;
  };
  auto req = [&](Slot k) {
    if (!pl[k].present) bad(BNORM_STATUS_NULL_POINTER);
  };
  auto pair = [&](Slot a, Slot b) {
    if (pl[a].present != pl[b].present) bad(BNORM_STATUS_NULL_POINTER);
  };
  auto align = [&](Slot k, size_t a) {
    if (pl[k].present && ptr(k) % a) bad(BNORM_STATUS_MISALIGNED);
  };
  // Which regions the overlap rule treats as outputs: the call's outputs,
  // and (see `ep` below) residual_grad with any epilogue.
  auto overlap_output = [&](Slot k) {
    return is_output(s.op, k, md.epilogue) ||
           (k == kResidualGrad && md.epilogue != BNORM_EPILOGUE_NONE);
  };
  // Overlap: any output against any other region, except same-pointer
  // in-place pairs.
  auto no_overlap = [&](const std::vector<Slot>& regions,
                        const std::vector<std::pair<Slot, Slot>>& in_place, const Placement* eff) {
    for (size_t i = 0; i < regions.size(); ++i)
      for (size_t j = i + 1; j < regions.size(); ++j) {
        const Slot a = regions[i], b = regions[j];
        if (!overlap_output(a) && !overlap_output(b)) continue;
        if (!overlaps(eff[a], eff[b])) continue;
        bool allowed = false;
        for (auto [p, q] : in_place)
          if (((p == a && q == b) || (p == b && q == a)) && eff[a].pos == eff[b].pos &&
              eff[a].bytes == eff[b].bytes)
            allowed = true;
        if (!allowed) bad(BNORM_STATUS_BAD_ALIASING);
      }
  };
  auto workspace = [&]() {
    if (s.workspace_bytes < need) bad(BNORM_STATUS_WORKSPACE_TOO_SMALL);
    if (need > 0 && !pl[kWorkspace].present) bad(BNORM_STATUS_NULL_POINTER);
    align(kWorkspace, 16);
  };
  // Regions as the rules see them: the workspace covers what the call writes.
  Placement eff[kSlots];
  for (int k = 0; k < kSlots; ++k) eff[k] = pl[k];
  eff[kWorkspace].bytes = std::min(s.workspace_bytes, need);

  const bool has_data = md.bytes > 0;
  // The epilogue (bnorm.h, bnormConfig_t): the call's own epilogue pointers
  // join its regions; z and dz are tensors (element-aligned), the mask is
  // 4-byte aligned and relu_mask_bytes must cover 4 * ceil(numel / 32). An
  // empty tensor (numel == 0) needs none of them: the library then checks
  // none of them at all, alignment included (unlike x and y).
  const bool ep = md.epilogue != BNORM_EPILOGUE_NONE && md.numel > 0;
  std::vector<Slot> regions = slots_of(s.op);
  std::vector<std::pair<Slot, Slot>> ep_in_place;
  if (ep) {
    const bool forward = s.op == Op::kFwd || s.op == Op::kInf;
    // bnorm.h: a call ignores the fields that are not its own (z and dz
    // with a ReLU alone), in its checks too.
    for (Slot k : epilogue_slots(s.op))
      if (epilogue_active(s.op, md.epilogue, k)) regions.push_back(k);
    if (epilogue_active(s.op, md.epilogue, kResidual)) req(kResidual), align(kResidual, md.elem);
    if (epilogue_active(s.op, md.epilogue, kResidualGrad))
      req(kResidualGrad), align(kResidualGrad, md.elem);
    if (s.op != Op::kInf) req(kMask);  // inference: the mask is optional
    if (pl[kMask].present) {
      align(kMask, 4);
      if (s.config.relu_mask_bytes < md.mask_need) bad(BNORM_STATUS_WORKSPACE_TOO_SMALL);
    }
    if (forward) ep_in_place.push_back({kY, kResidual});  // y == z
    else ep_in_place.push_back({kResidualGrad, kDy});     // dz == dy
  }
  auto with = [&](std::vector<std::pair<Slot, Slot>> v) {
    v.insert(v.end(), ep_in_place.begin(), ep_in_place.end());
    return v;
  };
  switch (s.op) {
    case Op::kFwd: {
      const bool tracking = pl[kRunMean].present || pl[kRunVar].present;
      const bool cumulative = md.average == BNORM_AVERAGE_CUMULATIVE;
      if (has_data) req(kX), req(kY);
      pair(kRunMean, kRunVar);
      pair(kSavedMean, kSavedRstd);
      if (tracking && cumulative) req(kStep), align(kStep, 8);
      align(kX, md.elem), align(kY, md.elem);
      for (Slot k : {kGamma, kBeta, kRunMean, kRunVar, kSavedMean, kSavedRstd}) align(k, 4);
      if (!(tracking && cumulative)) eff[kStep].present = false;  // ignored
      no_overlap(regions, with({{kY, kX}}), eff);
      if (md.m == 1) bad(BNORM_STATUS_BATCH_TOO_SMALL);
      workspace();
      break;
    }
    case Op::kInf:
      if (has_data) req(kX), req(kY);
      req(kRunMean), req(kRunVar);
      align(kX, md.elem), align(kY, md.elem);
      for (Slot k : {kGamma, kBeta, kRunMean, kRunVar}) align(k, 4);
      no_overlap(regions, with({{kY, kX}}), eff);
      break;
    case Op::kScaleShift:
      for (Slot k : {kRunMean, kRunVar, kScale, kShift}) req(k);
      for (Slot k : {kGamma, kBeta, kRunMean, kRunVar, kScale, kShift}) align(k, 4);
      no_overlap(slots_of(s.op), {}, eff);
      break;
    case Op::kFold:  // bias_out may be bias_in; gamma, beta and bias_in may be NULL
      for (Slot k : {kRunMean, kRunVar, kWeight, kBiasOut}) req(k);
      for (Slot k : {kGamma, kBeta, kRunMean, kRunVar, kWeight, kBiasIn, kBiasOut}) align(k, 4);
      no_overlap(slots_of(s.op), {{kBiasOut, kBiasIn}}, eff);
      break;
    case Op::kBwd:
    case Op::kFrz: {
      const bool frozen = s.op == Op::kFrz;
      const bool grads = pl[kDGamma].present || pl[kDBeta].present;
      const Slot mean = frozen ? kRunMean : kSavedMean, stat = frozen ? kRunVar : kSavedRstd;
      if (has_data) {
        if (!frozen || grads) req(kX);
        req(kDy), req(kDx);
      }
      if (frozen) req(mean), req(stat);
      pair(mean, stat);
      pair(kDGamma, kDBeta);
      align(kX, md.elem), align(kDy, md.elem), align(kDx, md.elem);
      for (Slot k : {kGamma, mean, stat, kDGamma, kDBeta}) align(k, 4);
      no_overlap(regions, with({{kDx, kDy}, {kDx, kX}}), eff);
      if (md.m == 1 && !frozen) bad(BNORM_STATUS_BATCH_TOO_SMALL);
      workspace();
      break;
    }
    default: break;
  }
}

// ---- decoding an input into a scenario ------------------------------------------------------

bool optional_slot(Slot k) {
  return k == kGamma || k == kBeta || k == kRunMean || k == kRunVar || k == kStep ||
         k == kSavedMean || k == kSavedRstd || k == kDGamma || k == kDBeta || k == kBiasIn;
}

// An input that runs out of bytes reads zeros: every choice below is
// arranged so that 0 means the common, valid case, and rare(f, n) is true
// with probability 1/n only where the input says so.
bool rare(FuzzedDataProvider& f, int n) { return f.ConsumeIntegralInRange<int>(0, n - 1) == n - 1; }

Scenario decode(FuzzedDataProvider& f) {
  Scenario s{};
  s.op = Op(f.ConsumeIntegralInRange<int>(0, kOpsV1 - 1));
  const int hk = f.ConsumeIntegralInRange<int>(0, 15);
  s.handle_kind = hk < 13 ? 0 : hk - 12;  // mostly the shared handle
  s.pass_desc = !rare(f, 32);

  // The descriptor: a real small shape, or wild extents.
  set_raw(s.desc.dtype, rare(f, 16) ? raw_enum(f, 3) : f.ConsumeIntegralInRange<int>(0, 2));
  set_raw(s.desc.layout, rare(f, 16) ? raw_enum(f, 2) : f.ConsumeIntegralInRange<int>(0, 1));
  const int shape_kind = f.ConsumeIntegralInRange<int>(0, 7);
  if (shape_kind < 6) {
    s.desc.n = f.ConsumeIntegralInRange<int64_t>(0, shape_kind == 1 ? 2 : 9) + (shape_kind == 0 ? 2 : 0);
    s.desc.c = f.ConsumeIntegralInRange<int64_t>(1, shape_kind == 2 ? 80 : 40);
    s.desc.spatial = f.ConsumeIntegralInRange<int64_t>(1, shape_kind == 3 ? 400 : 40);
    while (s.desc.n * s.desc.c * s.desc.spatial > kMaxRealElems) {
      if (s.desc.spatial > 1) {
        s.desc.spatial /= 2;
      } else {
        s.desc.n /= 2;
      }
    }
  } else {
    // Each extent wild or small, independently.
    s.desc.n = f.ConsumeBool() ? wild_extent(f) : f.ConsumeIntegralInRange<int64_t>(0, 4);
    s.desc.c = f.ConsumeBool() ? wild_extent(f) : f.ConsumeIntegralInRange<int64_t>(1, 8);
    s.desc.spatial = f.ConsumeBool() ? wild_extent(f) : f.ConsumeIntegralInRange<int64_t>(1, 8);
  }
  s.c_arg = rare(f, 8) ? wild_extent(f) : f.ConsumeIntegralInRange<int64_t>(1, 200);

  // The config.
  s.pass_config = !rare(f, 16);
  s.config = BNORM_CONFIG_INITIALIZER;
  if (rare(f, 8)) {
    const size_t v0_end = offsetof(bnormConfig_t, average) + sizeof(int);
    const size_t sizes[] = {sizeof(bnormConfig_t) + 8, v0_end, v0_end - 1, 0,
                            offsetof(bnormConfig_t, path) + 3, sizeof(bnormConfig_t)};
    s.config.size = sizes[f.ConsumeIntegralInRange<size_t>(0, 5)];
  }
  if (rare(f, 16)) s.config.magic = f.ConsumeIntegral<unsigned>();
  if (rare(f, 8)) s.config.version = f.ConsumeIntegral<unsigned>();
  if (rare(f, 4)) s.config.eps = interesting_double(f);
  if (rare(f, 4)) s.config.exponential_average_factor = interesting_double(f);
  set_raw(s.config.average, rare(f, 8) ? raw_enum(f, 2) : f.ConsumeIntegralInRange<int>(0, 1));
  set_raw(s.config.path, rare(f, 8) ? raw_enum(f, 4) : f.ConsumeIntegralInRange<int>(0, 3));

  // Data.
  s.data_seed = f.ConsumeIntegral<uint64_t>();
  s.special = rare(f, 8) ? f.ConsumeIntegralInRange<int>(1, 4) : 0;
  s.consistent_saved = !rare(f, 2);
  s.step0 = rare(f, 16) ? f.ConsumeIntegralInRange<int64_t>(0, int64_t(1) << 50)
                        : f.ConsumeIntegralInRange<int64_t>(0, 100);
  s.random_schedule = rare(f, 4);
  s.schedule_seed = f.ConsumeIntegral<uint32_t>();
  s.pass_ws_out = !rare(f, 32);
  // Pointers (last: they take the most bytes; the call's own slots only).
  auto decode_spec = [&](Slot k, int targets) {
    Scenario::Spec& p = s.spec[k];
    const int r = f.ConsumeIntegralInRange<int>(0, 15);
    if (optional_slot(Slot(k))) {
      p.kind = r < 9 ? 1 : r < 11 ? 7 : 0;
    } else {
      p.kind = r < 13 ? 1 : r < 15 ? 7 : 0;
    }
    p.target = f.ConsumeIntegralInRange<int>(0, targets - 1);
    static const int units[] = {1, 2, 4, 16, 64};
    p.delta = f.ConsumeBool() ? f.ConsumeIntegralInRange<int>(-8, 8) *
                                    units[f.ConsumeIntegralInRange<int>(0, 4)]
                              : 0;
    p.misalign = rare(f, 16) ? 1 << f.ConsumeIntegralInRange<int>(0, 3) : 0;
    p.gap = rare(f, 4) ? f.ConsumeIntegralInRange<int>(0, 300) : 0;
  };
  for (Slot k : slots_of(s.op)) decode_spec(k, kSlotsV1);
  // Pairs that the contract wants both-or-neither mostly follow each other.
  for (auto [a, b] : {std::pair<Slot, Slot>{kRunMean, kRunVar}, {kSavedMean, kSavedRstd},
                      {kDGamma, kDBeta}, {kGamma, kBeta}}) {
    if (!rare(f, 16) && (s.spec[a].kind == 0) != (s.spec[b].kind == 0))
      s.spec[b].kind = s.spec[a].kind == 0 ? 0 : 1;
  }
  s.ws_kind = rare(f, 3) ? f.ConsumeIntegralInRange<int>(1, 6) : 0;
  s.ws_random = f.ConsumeIntegral<uint64_t>();

  // ---- 0.2, after everything the first version decoded (see the top) ----
  s.v1_left = f.remaining_bytes();
  set_raw(s.config.epilogue, rare(f, 16) ? raw_enum(f, 3) : f.ConsumeIntegralInRange<int>(0, 2));
  s.mask_kind = rare(f, 3) ? f.ConsumeIntegralInRange<int>(1, 5) : 0;
  s.mask_random = f.ConsumeIntegral<uint64_t>();
  s.in_features = rare(f, 8) ? wild_extent(f) : f.ConsumeIntegralInRange<int64_t>(1, 16);
  const int ext = f.ConsumeIntegralInRange<int>(0, 15);  // mostly the call decoded above
  if (ext >= 13) {
    s.op = ext == 13 ? Op::kFold : ext == 14 ? Op::kMaskSize : Op::kCreate;
    for (Slot k : slots_of(s.op)) decode_spec(k, kSlots);
  }
  for (Slot k : epilogue_slots(s.op)) decode_spec(k, kSlots);

  // ---- synchronized batch norm: a 2-byte tag, then its own fields ----
  s.left = f.remaining_bytes();
  if (f.remaining_bytes() >= 2 && f.ConsumeIntegral<uint16_t>() == kSyncTag) {
    Scenario::SyncArgs& y = s.sy;
    s.op = Op(int(Op::kSyncSizes) + f.ConsumeIntegralInRange<int>(0, 6));
    y.nranks = f.ConsumeIntegralInRange<int>(1, 3);
    for (int r = 1; r < 3; ++r) y.n[r] = f.ConsumeIntegralInRange<int64_t>(0, 5);
    y.victim_rank = f.ConsumeIntegralInRange<int>(0, 2);
    y.victim_phase = f.ConsumeIntegralInRange<int>(0, 1);
    y.nranks_kind = rare(f, 8) ? f.ConsumeIntegralInRange<int>(1, 4) : 0;
    y.rank_kind = rare(f, 8) ? f.ConsumeIntegralInRange<int>(1, 4) : 0;
    const int g = f.ConsumeIntegralInRange<int>(0, 15);
    y.gn_kind = g < 10 ? 0 : g < 13 ? 1 : f.ConsumeIntegralInRange<int>(2, 6);
    y.xbuf_kind = rare(f, 6) ? f.ConsumeIntegralInRange<int>(1, 4) : 0;
    y.gamma = !rare(f, 4);
    y.running = !rare(f, 4);
    y.saved = !rare(f, 4);
    y.grads = !rare(f, 4);
    for (Scenario::Spec& p : y.spec) {
      const int r = f.ConsumeIntegralInRange<int>(0, 31);
      p.kind = r < 28 ? 1 : r < 30 ? 7 : 0;
      p.target = f.ConsumeIntegralInRange<int>(0, 15);
      static const int units[] = {1, 2, 4, 16, 64};
      p.delta = rare(f, 2) ? f.ConsumeIntegralInRange<int>(-8, 8) *
                                 units[f.ConsumeIntegralInRange<int>(0, 4)]
                           : 0;
      p.misalign = rare(f, 24) ? 1 << f.ConsumeIntegralInRange<int>(0, 3) : 0;
    }
  }
  return s;
}

size_t choose_workspace_bytes(const Scenario& s, size_t need) {
  switch (s.ws_kind) {
    case 1: return need ? need - 1 : 0;
    case 2: return need >= 16 ? need - 16 : 0;
    case 3: return need + 1 + s.ws_random % 64;
    case 4: return s.ws_random % (2 * need + 64);
    case 5: return std::numeric_limits<size_t>::max();
    case 6: return 0;
    default: return need;
  }
}

size_t choose_mask_bytes(const Scenario& s, size_t need) {
  switch (s.mask_kind) {
    case 1: return need ? need - 1 : 0;
    case 2: return need >= 4 ? need - 4 : 0;
    case 3: return 0;
    case 4: return need + 1 + s.mask_random % 64;
    case 5: return std::numeric_limits<size_t>::max();
    default: return need;
  }
}

// ---- statistics, printed at exit (how much of what ran was checked) -----------------------

struct Stats {
  uint64_t calls[int(Op::kCount)] = {}, ok[int(Op::kCount)] = {}, computed[int(Op::kCount)] = {};
  uint64_t checked_values = 0, checked_channels = 0, skipped_channels = 0, nan_channels = 0;
  uint64_t epilogue_calls[3] = {}, epilogue_ok[3] = {};  // data calls by the epilogue they saw
} g_stats;

void print_stats() {
  std::fprintf(stderr, "bnorm_fuzz: %-40s %10s %10s %12s\n", "call", "calls", "succeeded",
               "computed");
  for (int i = 0; i < int(Op::kCount); ++i)
    std::fprintf(stderr, "bnorm_fuzz: %-40s %10llu %10llu %12llu\n", op_name(Op(i)),
                 (unsigned long long)g_stats.calls[i], (unsigned long long)g_stats.ok[i],
                 (unsigned long long)g_stats.computed[i]);
  std::fprintf(stderr,
               "bnorm_fuzz: outputs checked against the reference: %llu values in %llu channels; "
               "%llu channels with non-finite or extreme inputs skipped, %llu NaN channels checked "
               "for propagation\n",
               (unsigned long long)g_stats.checked_values,
               (unsigned long long)g_stats.checked_channels,
               (unsigned long long)g_stats.skipped_channels,
               (unsigned long long)g_stats.nan_channels);
  std::fprintf(stderr,
               "bnorm_fuzz: data calls with epilogue NONE / RELU / ADD_RELU: %llu / %llu / %llu, "
               "succeeded %llu / %llu / %llu\n",
               (unsigned long long)g_stats.epilogue_calls[0], (unsigned long long)g_stats.epilogue_calls[1],
               (unsigned long long)g_stats.epilogue_calls[2], (unsigned long long)g_stats.epilogue_ok[0],
               (unsigned long long)g_stats.epilogue_ok[1], (unsigned long long)g_stats.epilogue_ok[2]);
}

// ---- one call ----------------------------------------------------------------------------

bnormHandle_t g_handle = nullptr;
cudaStream_t g_stream = nullptr;

bnormStatus_t ws_query(Op op, bnormHandle_t h, const bnormTensorDesc_t* d, const bnormConfig_t* c,
                       size_t* out) {
  switch (op) {
    case Op::kFwd: case Op::kFwdWs: return bnormGetForwardTrainingWorkspaceSize(h, d, c, out);
    case Op::kBwd: case Op::kBwdWs: return bnormGetBackwardWorkspaceSize(h, d, c, out);
    case Op::kFrz: case Op::kFrzWs: return bnormGetBackwardFrozenWorkspaceSize(h, d, c, out);
    default: return BNORM_STATUS_INTERNAL_ERROR;
  }
}

void expect_message(Op op, bnormStatus_t st) {
  const char* msg = bnormGetLastErrorMessage();
  if (st == BNORM_STATUS_SUCCESS) {
    if (msg[0] != '\0') violation("%s succeeded but left the message \"%s\"", op_name(op), msg);
    return;
  }
  const std::string want = std::string(op_name(op)) + ": ";
  if (std::strncmp(msg, want.c_str(), want.size()) != 0 || std::strlen(msg) <= want.size())
    violation("%s failed with %d but its message does not name the call", op_name(op), int(st));
}

void expect_status(Op op, bnormStatus_t st, const Model& md) {
  if (md.violated.empty()) {
    if (st != BNORM_STATUS_SUCCESS)
      violation("%s rejected a valid call with %d (%s)", op_name(op), int(st),
                bnormGetStatusString(st));
    return;
  }
  if (st == BNORM_STATUS_SUCCESS || !md.violated.count(int(st))) {
    std::string set;
    for (int v : md.violated) set += std::to_string(v) + " ";
    violation("%s returned %d; the arguments break rules with statuses { %s}", op_name(op),
              int(st), set.c_str());
  }
}

bool moderate(double v) { return std::isfinite(v) && std::fabs(v) <= 1e6; }

void near(const char* what, double got, double want, double tol, int64_t ch, int64_t j) {
  ++g_stats.checked_values;
  if (!(std::fabs(got - want) <= tol))
    violation("%s[channel %lld, value %lld] = %.9g, reference %.9g (tolerance %.3g)", what,
              (long long)ch, (long long)j, got, want, tol);
}

// The arena of one call: every region at its place, a snapshot before the
// call, and typed access to either.
struct Arena {
  const Scenario* s = nullptr;
  const Model* md = nullptr;
  void* raw = nullptr;
  uint8_t* base = nullptr;
  size_t total = 0;
  std::vector<uint8_t> before, after;
  int layout = 0;

  void* ptr(Slot k) const { return s->place[k].present ? base + s->place[k].pos : nullptr; }
  bool has(Slot k) const { return s->place[k].present; }
  const uint8_t* at(const std::vector<uint8_t>& v, Slot k) const { return v.data() + s->place[k].pos; }
  float f32(const std::vector<uint8_t>& v, Slot k, int64_t i) const {
    float x;
    std::memcpy(&x, at(v, k) + 4 * i, 4);
    return x;
  }
  // Channel parameter i of slot k (NULL: `dflt`), from the snapshot.
  double param(Slot k, int64_t i, double dflt) const { return has(k) ? f32(before, k, i) : dflt; }
  int64_t off(int64_t ch, int64_t j) const {
    const int64_t i = j / md->spatial, sp = j % md->spatial;
    return layout == BNORM_LAYOUT_NHWC ? (i * md->spatial + sp) * md->c + ch
                                       : (i * md->c + ch) * md->spatial + sp;
  }
  std::vector<double> tensor(const std::vector<uint8_t>& v, Slot k) const {
    std::vector<double> t(size_t(md->numel), 0.0);
    if (!has(k)) return t;
    for (int64_t i = 0; i < md->numel; ++i) t[size_t(i)] = load(at(v, k) + i * md->elem, md->dtype);
    return t;
  }
  // Bit o of the mask (the element at memory offset o), in snapshot v.
  bool bit(const std::vector<uint8_t>& v, int64_t o) const {
    return (at(v, kMask)[o / 8] >> (o % 8)) & 1;
  }
  bnref_shape shape() const {
    return {layout == BNORM_LAYOUT_NHWC ? BNREF_NHWC : BNREF_NCHW, md->n, md->c, md->spatial};
  }
};

const char* slot_at(const Scenario& s, const std::vector<Slot>& used, size_t pos) {
  for (Slot k : used)
    if (s.place[k].present && pos >= s.place[k].pos && pos < s.place[k].pos + s.place[k].bytes)
      return kSlotName[k];
  return "no argument's region";
}

void fill(Arena& a, const std::vector<Slot>& used) {
  const Scenario& s = *a.s;
  const Model& md = *a.md;
  uint8_t* b = a.base;
  for (size_t i = 0; i < a.total; ++i) b[i] = uint8_t(i * 131 + 7);
  // Pure outputs first (poisoned: NaN), then inputs (so y == x holds x).
  for (Slot k : used)
    if (a.has(k) && is_output(s.op, k) && k != kWeight &&
        !(s.op == Op::kFwd && (k == kRunMean || k == kRunVar || k == kStep)))
      std::memset(b + s.place[k].pos, 0xff, s.place[k].bytes);
  for (Slot k : epilogue_slots(s.op))  // the mask of the forward calls, dz
    if (a.has(k) && is_output(s.op, k, md.epilogue))
      std::memset(b + s.place[k].pos, 0xff, s.place[k].bytes);
  std::mt19937_64 rng(s.data_seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto floats = [&](Slot k, double lo, double hi, bool signs) {
    if (!a.has(k) || !md.desc_ok) return;
    for (int64_t i = 0; i < md.c; ++i) {
      float v = float(lo + (hi - lo) * u(rng));
      if (signs && i % 3 == 0) v = -v;
      std::memcpy(b + s.place[k].pos + 4 * i, &v, 4);
    }
  };
  auto activations = [&](Slot k, double mlo, double mhi, double slo, double shi) {
    if (!a.has(k) || !md.desc_ok || !md.numel) return;
    for (int64_t ch = 0; ch < md.c; ++ch) {
      const double mean = mlo + (mhi - mlo) * u(rng), sd = slo + (shi - slo) * u(rng);
      for (int64_t j = 0; j < md.m; ++j)
        store(b + s.place[k].pos + a.off(ch, j) * md.elem, md.dtype, mean + sd * nd(rng));
    }
  };
  const bool tensors = md.desc_ok && uses_desc(s.op);
  if (tensors) {
    activations(kX, -3.0, 3.0, 0.5, 2.0);
    if (s.op == Op::kBwd || s.op == Op::kFrz) activations(kDy, -0.5, 0.5, 0.5, 1.5);
  }
  floats(kGamma, 0.5, 1.5, true);
  floats(kBeta, -1.0, 1.0, false);
  floats(kRunMean, -1.0, 1.0, false);
  floats(kRunVar, 0.5, 2.0, false);
  if (s.op == Op::kBwd) {
    if (s.consistent_saved && tensors && md.m > 0 && a.has(kX) && a.has(kSavedMean) &&
        a.has(kSavedRstd)) {
      // The statistics a forward call would have saved.
      std::vector<uint8_t> now(b, b + a.total);
      const std::vector<double> x = a.tensor(now, kX);
      std::vector<double> mean(size_t(md.c)), rstd(size_t(md.c));
      const bnref_shape sh = a.shape();
      bnref_batch_stats(&sh, x.data(), md.eps, mean.data(), nullptr, rstd.data());
      for (int64_t i = 0; i < md.c; ++i) {
        const float mv = float(mean[size_t(i)]), rv = float(rstd[size_t(i)]);
        std::memcpy(b + s.place[kSavedMean].pos + 4 * i, &mv, 4);
        std::memcpy(b + s.place[kSavedRstd].pos + 4 * i, &rv, 4);
      }
    } else {
      floats(kSavedMean, -3.0, 3.0, false);
      floats(kSavedRstd, 0.3, 2.0, false);
    }
  }
  if (a.has(kStep) && s.op == Op::kFwd) std::memcpy(b + s.place[kStep].pos, &s.step0, 8);
  // Special values at fuzzed places.
  static const double specials[] = {kNaN, kInf, -kInf, 1e-40, 0.0, -0.0, 65504.0, 1e30, 5.96e-8};
  for (int i = 0; i < s.special && md.desc_ok; ++i) {
    std::vector<Slot> in;
    for (Slot k : used)
      if (k < kSlotsV1 && a.has(k) && s.place[k].bytes && !(k == kStep || k == kWorkspace) &&
          (!is_output(s.op, k) || k == kRunMean || k == kRunVar))
        in.push_back(k);
    if (in.empty()) break;
    const Slot k = in[rng() % in.size()];
    const double v = specials[rng() % (sizeof specials / sizeof specials[0])];
    const bool tensor = k == kX || k == kDy;
    const size_t count = tensor ? size_t(md.numel) : size_t(md.c);
    if (!count) continue;
    const size_t i_el = rng() % count;
    if (tensor) {
      store(b + s.place[k].pos + i_el * md.elem, md.dtype, v);
    } else {
      const float fv = float(v);
      std::memcpy(b + s.place[k].pos + 4 * i_el, &fv, 4);
    }
  }

  // 0.2, after everything above (which draws from rng as it did): z, a mask
  // for the backward calls to read, bnormFoldIntoLinear's layer, and special
  // values in z.
  if (tensors && a.has(kResidual) && epilogue_active(s.op, md.epilogue, kResidual)) {
    activations(kResidual, -1.0, 1.0, 0.5, 1.5);
    for (int i = 0; i < s.special && md.numel; ++i)
      store(b + s.place[kResidual].pos + (rng() % size_t(md.numel)) * md.elem, md.dtype,
            specials[rng() % (sizeof specials / sizeof specials[0])]);
  }
  if (a.has(kMask) && !is_output(s.op, kMask, md.epilogue))
    for (size_t i = 0; i < s.place[kMask].bytes; ++i) b[s.place[kMask].pos + i] = uint8_t(rng());
  if (s.op == Op::kFold && md.desc_ok) {
    if (a.has(kWeight))
      for (size_t i = 0; i < md.weight_bytes / 4; ++i) {
        const float v = float(-1.0 + 2.0 * u(rng));
        std::memcpy(b + s.place[kWeight].pos + 4 * i, &v, 4);
      }
    floats(kBiasIn, -1.0, 1.0, false);
  }
}

// ---- the checks of a successful data call ----------------------------------------------------

// The epilogue of a forward call, element (ch, j): y and its mask bit
// against the reference pre-activation `pre` (batch norm plus z). The bit is
// set where the kernel's fp32 pre-activation was > 0, and a tiny positive
// one may still round to a zero y in fp16, so: y > 0 needs the bit, and the
// bit needs a y that is >= 0 and not NaN. Where the reference is clear of
// zero by more than the tolerance, the bit is its sign.
void check_epilogue_element(const Arena& a, double got, double pre, double tol,
                            bool compare, int64_t ch, int64_t j) {
  const int64_t o = a.off(ch, j);
  const bool masked = a.has(kMask);
  const bool b = masked && a.bit(a.after, o);
  if (masked && got > 0 && !b)
    violation("y[channel %lld, value %lld] = %g > 0 but its mask bit is clear", (long long)ch,
              (long long)j, got);
  if (masked && b && !(got >= 0))
    violation("the mask bit of y[channel %lld, value %lld] = %g is set", (long long)ch,
              (long long)j, got);
  if (!compare) return;
  const double want = pre > 0 ? pre : 0.0;
  near("y (epilogue)", got, want, tol, ch, j);
  if (masked && std::fabs(pre) > tol && b != (pre > 0))
    violation("mask bit of [channel %lld, value %lld] is %d, the pre-activation %g", (long long)ch,
              (long long)j, int(b), pre);
}

// Bits of the mask past the last element are zero.
void check_mask_padding(const Arena& a, const Model& md) {
  if (!a.has(kMask)) return;
  for (int64_t i = md.numel; i < int64_t(md.mask_need) * 8; ++i)
    if (a.bit(a.after, i)) violation("mask padding bit %lld is set", (long long)i);
}

void check_forward(const Arena& a, const Model& md) {
  const std::vector<double> x = a.tensor(a.before, kX), y = a.tensor(a.after, kY);
  const bool ep = md.epilogue != BNORM_EPILOGUE_NONE;
  const std::vector<double> z = epilogue_active(Op::kFwd, md.epilogue, kResidual)
                                    ? a.tensor(a.before, kResidual)
                                    : std::vector<double>();
  if (ep) check_mask_padding(a, md);
  std::vector<double> mean(size_t(md.c)), var(size_t(md.c)), rstd(size_t(md.c));
  const bnref_shape sh = a.shape();
  bnref_batch_stats(&sh, x.data(), md.eps, mean.data(), var.data(), rstd.data());
  const Tol ot = output_tol(md.dtype);
  const bool tracking = a.has(kRunMean);
  const bool cumulative = md.average == BNORM_AVERAGE_CUMULATIVE;
  int64_t step = 0;
  if (tracking && cumulative) {
    std::memcpy(&step, a.at(a.before, kStep), 8);
    int64_t now;
    std::memcpy(&now, a.at(a.after, kStep), 8);
    if (now != step + 1) violation("step_count went from %lld to %lld", (long long)step, (long long)now);
  }
  const double f = cumulative ? 1.0 / (1.0 + double(step)) : md.factor;
  const double m = double(md.m);
  for (int64_t ch = 0; ch < md.c; ++ch) {
    const size_t c = size_t(ch);
    const double g = a.param(kGamma, ch, 1.0), b = a.param(kBeta, ch, 0.0);
    bool nice = moderate(g) && moderate(b) && std::isfinite(rstd[c]) && rstd[c] <= 1e30;
    bool has_nan = false;
    double maxabs = 0.0;
    for (int64_t j = 0; j < md.m; ++j) {
      const double v = x[size_t(a.off(ch, j))];
      nice = nice && moderate(v);
      has_nan = has_nan || std::isnan(v);
      maxabs = std::max(maxabs, std::fabs(v));
    }
    // Running statistics: factor 0 leaves them bitwise alone, whatever they hold.
    if (tracking && f == 0.0) {
      for (Slot k : {kRunMean, kRunVar})
        if (a.f32(a.after, k, ch) != a.f32(a.before, k, ch) &&
            !(std::isnan(a.f32(a.after, k, ch)) && std::isnan(a.f32(a.before, k, ch))))
          violation("%s[%lld] changed with an average factor of 0", kSlotName[k], (long long)ch);
    }
    if (has_nan && moderate(g) && moderate(b)) {
      ++g_stats.nan_channels;
      // PyTorch's propagation: a NaN makes the channel's statistics and output NaN.
      if (a.has(kSavedRstd) && !std::isnan(a.f32(a.after, kSavedRstd, ch)))
        violation("channel %lld holds a NaN but its saved rstd is %g", (long long)ch,
                  a.f32(a.after, kSavedRstd, ch));
      for (int64_t j = 0; j < md.m; ++j)
        if (!std::isnan(y[size_t(a.off(ch, j))]))
          violation("channel %lld holds a NaN but y[%lld] = %g", (long long)ch, (long long)j,
                    y[size_t(a.off(ch, j))]);
      if (tracking && f != 0.0 && !std::isnan(a.f32(a.after, kRunVar, ch)))
        violation("channel %lld holds a NaN but its running variance is %g", (long long)ch,
                  a.f32(a.after, kRunVar, ch));
    }
    if (!nice) {
      ++g_stats.skipped_channels;
      continue;
    }
    ++g_stats.checked_channels;
    const double sd = std::sqrt(var[c]);
    const double y_scale = 2e-5 * (std::fabs(g) * rstd[c] * (maxabs + std::fabs(mean[c])) +
                                   std::fabs(g) + std::fabs(b));
    for (int64_t j = 0; j < md.m; ++j) {
      const size_t o = size_t(a.off(ch, j));
      const double want = g * ((x[o] - mean[c]) * rstd[c]) + b;
      if (ep) {
        const double zo = z.empty() ? 0.0 : z[o], pre = want + zo;
        check_epilogue_element(a, y[o], pre,
                               ot.atol + ot.rtol * (std::fabs(want) + std::fabs(zo)) + y_scale,
                               moderate(zo) && std::fabs(pre) <= output_limit(md.dtype), ch, j);
        continue;
      }
      if (!(std::fabs(want) <= output_limit(md.dtype))) continue;
      near("y", y[o], want, ot.atol + ot.rtol * std::fabs(want) + y_scale, ch, j);
    }
    if (a.has(kSavedMean)) {
      near("saved_mean", a.f32(a.after, kSavedMean, ch), mean[c],
           2e-5 * (std::fabs(mean[c]) + sd) + 1e-37, ch, -1);
      near("saved_rstd", a.f32(a.after, kSavedRstd, ch), rstd[c], 1e-4 * rstd[c] + 1e-37, ch, -1);
    }
    if (tracking && f != 0.0) {
      const double rm0 = a.f32(a.before, kRunMean, ch), rv0 = a.f32(a.before, kRunVar, ch);
      const double unbiased = var[c] * m / (m - 1.0);
      if (f == 1.0) {  // replaced, even where the old values are not finite
        near("running_mean", a.f32(a.after, kRunMean, ch), mean[c],
             2e-5 * (std::fabs(mean[c]) + sd) + 1e-37, ch, -1);
        near("running_var", a.f32(a.after, kRunVar, ch), unbiased, 1e-4 * unbiased + 1e-37, ch,
             -1);
      } else if (moderate(rm0) && moderate(rv0)) {
        const double keep = 1.0 - f;
        near("running_mean", a.f32(a.after, kRunMean, ch), keep * rm0 + f * mean[c],
             2e-5 * (keep * std::fabs(rm0) + f * (std::fabs(mean[c]) + sd)) + 1e-37, ch, -1);
        near("running_var", a.f32(a.after, kRunVar, ch), keep * rv0 + f * unbiased,
             2e-5 * keep * std::fabs(rv0) + 1e-4 * f * unbiased + 1e-37, ch, -1);
      }
    }
  }
}

void check_inference(const Arena& a, const Model& md) {
  const std::vector<double> x = a.tensor(a.before, kX), y = a.tensor(a.after, kY);
  const Tol ot = output_tol(md.dtype);
  const bool ep = md.epilogue != BNORM_EPILOGUE_NONE;
  const std::vector<double> z = epilogue_active(Op::kInf, md.epilogue, kResidual)
                                    ? a.tensor(a.before, kResidual)
                                    : std::vector<double>();
  if (ep) check_mask_padding(a, md);
  for (int64_t ch = 0; ch < md.c; ++ch) {
    const double g = a.param(kGamma, ch, 1.0), b = a.param(kBeta, ch, 0.0);
    const double rm = a.param(kRunMean, ch, 0.0), rv = a.param(kRunVar, ch, 1.0);
    const double scale = g / std::sqrt(rv + md.eps);
    if (!(moderate(g) && moderate(b) && moderate(rm) && moderate(rv) && rv + md.eps > 0 &&
          std::fabs(scale) <= 1e30)) {
      ++g_stats.skipped_channels;
      continue;
    }
    ++g_stats.checked_channels;
    for (int64_t j = 0; j < md.m; ++j) {
      const size_t o = size_t(a.off(ch, j));
      if (!moderate(x[o])) {
        if (!ep && std::isfinite(y[o]) && !std::isfinite(x[o]))  // (a ReLU may clip -inf to 0)
          violation("inference: non-finite x[channel %lld, value %lld] gave finite y %g",
                    (long long)ch, (long long)j, y[o]);
        continue;
      }
      const double want = (x[o] - rm) * scale + b;
      const double extra = 1e-5 * (std::fabs(scale) * (std::fabs(x[o]) + std::fabs(rm)) + std::fabs(b));
      if (ep) {
        const double zo = z.empty() ? 0.0 : z[o], pre = want + zo;
        check_epilogue_element(a, y[o], pre,
                               ot.atol + ot.rtol * (std::fabs(want) + std::fabs(zo)) + extra,
                               moderate(zo) && std::fabs(pre) <= output_limit(md.dtype), ch, j);
        continue;
      }
      if (!(std::fabs(want) <= output_limit(md.dtype))) continue;
      near("y", y[o], want, ot.atol + ot.rtol * std::fabs(want) + extra, ch, j);
    }
  }
}

void check_scale_shift(const Arena& a, const Model& md) {
  for (int64_t ch = 0; ch < md.c; ++ch) {
    const double g = a.param(kGamma, ch, 1.0), b = a.param(kBeta, ch, 0.0);
    const double rm = a.param(kRunMean, ch, 0.0), rv = a.param(kRunVar, ch, 1.0);
    if (!(moderate(g) && moderate(b) && moderate(rm) && moderate(rv) && rv + md.eps > 0)) continue;
    const double scale = g / std::sqrt(rv + md.eps), shift = b - rm * scale;
    if (!(std::fabs(scale) <= 1e30 && std::fabs(shift) <= 1e30)) continue;
    near("scale", a.f32(a.after, kScale, ch), scale, 1e-6 * std::fabs(scale) + 1e-37, ch, -1);
    near("shift", a.f32(a.after, kShift, ch), shift,
         1e-6 * (std::fabs(b) + std::fabs(rm * scale)) + 1e-37, ch, -1);
  }
}

void check_backward(const Arena& a, const Model& md, bool frozen) {
  const std::vector<double> x = a.tensor(a.before, kX);
  std::vector<double> dy = a.tensor(a.before, kDy);
  const std::vector<double> dx = a.tensor(a.after, kDx);
  const size_t c = size_t(md.c);
  if (md.epilogue != BNORM_EPILOGUE_NONE) {
    // The gradient that reaches batch norm: dy where the mask's bit is set,
    // 0 elsewhere; with ADD_RELU it is also dz, exactly (dy's bytes, or 0).
    // `g` below is dy's bytes before the call (dz may be written over dy).
    const bool add = md.epilogue == BNORM_EPILOGUE_ADD_RELU;
    for (int64_t o = 0; o < md.numel; ++o) {
      const bool b = a.bit(a.before, o);
      if (!b) dy[size_t(o)] = 0.0;
      if (!add) continue;
      // (A NaN may come back with another payload: it went through fp32.)
      const uint8_t* dz = a.at(a.after, kResidualGrad) + o * int64_t(md.elem);
      const uint8_t* g = a.at(a.before, kDy) + o * int64_t(md.elem);
      const bool both_nan = std::isnan(load(dz, md.dtype)) && std::isnan(load(g, md.dtype));
      if (b ? !both_nan && std::memcmp(dz, g, md.elem) != 0 : load(dz, md.dtype) != 0.0)
        violation("dz[%lld] = %g is not the masked dy (bit %d, dy %g)", (long long)o,
                  load(dz, md.dtype), int(b), load(a.at(a.before, kDy) + o * int64_t(md.elem), md.dtype));
    }
  }
  std::vector<double> mean(c), rstd(c), gamma(c);
  for (size_t i = 0; i < c; ++i) gamma[i] = a.param(kGamma, int64_t(i), 1.0);
  const bnref_shape sh = a.shape();
  if (frozen) {
    for (size_t i = 0; i < c; ++i) {
      mean[i] = a.param(kRunMean, int64_t(i), 0.0);
      rstd[i] = 1.0 / std::sqrt(a.param(kRunVar, int64_t(i), 1.0) + md.eps);
    }
  } else if (a.has(kSavedMean)) {
    for (size_t i = 0; i < c; ++i) {
      mean[i] = a.param(kSavedMean, int64_t(i), 0.0);
      rstd[i] = a.param(kSavedRstd, int64_t(i), 1.0);
    }
  } else {
    bnref_batch_stats(&sh, x.data(), md.eps, mean.data(), nullptr, rstd.data());
  }
  std::vector<double> want_dx(x.size()), dgamma(c), dbeta(c);
  if (frozen) {
    std::vector<double> rv(c);
    for (size_t i = 0; i < c; ++i) rv[i] = a.param(kRunVar, int64_t(i), 1.0);
    bnref_backward_frozen(&sh, x.data(), dy.data(), gamma.data(), mean.data(), rv.data(), md.eps,
                          want_dx.data(), dgamma.data(), dbeta.data());
  } else {
    bnref_backward(&sh, x.data(), dy.data(), gamma.data(), mean.data(), rstd.data(),
                   want_dx.data(), dgamma.data(), dbeta.data());
  }
  const Tol ot = output_tol(md.dtype);
  const bool grads = a.has(kDGamma);
  const bool uses_x = !frozen || grads;
  const double m = double(md.m);
  for (int64_t ch = 0; ch < md.c; ++ch) {
    const size_t i = size_t(ch);
    bool nice = moderate(gamma[i]) && moderate(mean[i]) && std::isfinite(rstd[i]) &&
                std::fabs(rstd[i]) <= 1e30;
    double g_max = 0.0, s1 = 0.0, s2 = 0.0, xm = 0.0;
    for (int64_t j = 0; j < md.m; ++j) {
      const size_t o = size_t(a.off(ch, j));
      nice = nice && moderate(dy[o]) && (!uses_x || moderate(x[o]));
      g_max = std::max(g_max, std::fabs(dy[o]));
      s1 += std::fabs(dy[o]);
      const double xa = uses_x ? std::fabs(x[o]) + std::fabs(mean[i]) : 0.0;
      s2 += std::fabs(dy[o]) * xa;
      xm = std::max(xm, xa);
    }
    if (!nice) {
      ++g_stats.skipped_channels;
      continue;
    }
    ++g_stats.checked_channels;
    const double A = std::fabs(gamma[i] * rstd[i]);
    const double r2 = rstd[i] * rstd[i];
    const double B = frozen ? A * g_max : A * (g_max + s1 / m + xm * r2 * s2 / m);
    for (int64_t j = 0; j < md.m; ++j) {
      const size_t o = size_t(a.off(ch, j));
      const double want = want_dx[o];
      if (!(std::fabs(want) <= output_limit(md.dtype))) continue;
      near("dx", dx[o], want, ot.atol + ot.rtol * std::fabs(want) + 4e-5 * B, ch, j);
    }
    if (grads) {
      if (std::fabs(dbeta[i]) <= 1e30)
        near("dbeta", a.f32(a.after, kDBeta, ch), dbeta[i], 1e-5 * s1 + 1e-37, ch, -1);
      if (std::fabs(dgamma[i]) <= 1e30)
        near("dgamma", a.f32(a.after, kDGamma, ch), dgamma[i], 4e-5 * std::fabs(rstd[i]) * s2 + 1e-37,
             ch, -1);
    }
  }
}

// bnormFoldIntoLinear: weight[o][i] *= scale[o], bias_out[o] = bias_in[o] * scale[o] + shift[o].
void check_fold(const Arena& a, const Model& md, int64_t in) {
  for (int64_t ch = 0; ch < md.c; ++ch) {
    const double g = a.param(kGamma, ch, 1.0), b = a.param(kBeta, ch, 0.0);
    const double rm = a.param(kRunMean, ch, 0.0), rv = a.param(kRunVar, ch, 1.0);
    const double bi = a.param(kBiasIn, ch, 0.0);
    if (!(moderate(g) && moderate(b) && moderate(rm) && moderate(rv) && moderate(bi) &&
          rv + md.eps > 0)) {
      ++g_stats.skipped_channels;
      continue;
    }
    const double scale = g / std::sqrt(rv + md.eps), shift = b - rm * scale;
    if (!(std::fabs(scale) <= 1e30 && std::fabs(shift) <= 1e30)) continue;
    ++g_stats.checked_channels;
    for (int64_t i = 0; i < in; ++i) {
      const double w = a.f32(a.before, kWeight, ch * in + i), want = w * scale;
      near("weight", a.f32(a.after, kWeight, ch * in + i), want, 1e-6 * std::fabs(want) + 1e-37, ch, i);
    }
    const double want = bi * scale + shift;
    near("bias_out", a.f32(a.after, kBiasOut, ch), want,
         2e-6 * (std::fabs(bi * scale) + std::fabs(b) + std::fabs(rm * scale)) + 1e-37, ch, -1);
  }
}

// ---- running the scenario ---------------------------------------------------------------------

void run_data_call(Scenario& s) {
  const Op op = s.op;
  Model md = model_header(s);
  bnormHandle_t fresh = nullptr;
  alignas(16) static unsigned char fake_handle[1024];
  bnormHandle_t h = g_handle;
  if (s.handle_kind == 1) h = nullptr;
  if (s.handle_kind == 2) {
    std::memset(fake_handle, 0x5a, sizeof fake_handle);
    h = reinterpret_cast<bnormHandle_t>(fake_handle);
  }
  if (s.handle_kind == 3 && bnormCreate(&fresh) != BNORM_STATUS_SUCCESS)
    violation("bnormCreate failed");
  if (s.handle_kind == 3) h = fresh;
  const bnormTensorDesc_t* dp = s.pass_desc ? &s.desc : nullptr;
  const bnormConfig_t* cp = s.pass_config ? &s.config : nullptr;
  const bool header_ok = md.violated.empty();

  // The workspace the call needs, by the library's own query (whose
  // contract run_ws_query checks).
  size_t need = 0;
  if (header_ok && (op == Op::kFwd || op == Op::kBwd || op == Op::kFrz)) {
    const bnormStatus_t qs = ws_query(op, g_handle, dp, cp, &need);
    if (qs != BNORM_STATUS_SUCCESS) violation("the workspace query failed on valid arguments");
  }
  s.workspace_bytes = choose_workspace_bytes(s, need);

  // Sizes the contract requires of each region, and their places: the
  // first version's slots first (where they always were), then the 0.2 ones.
  std::vector<Slot> used = slots_of(op);
  for (Slot k : epilogue_slots(op)) used.push_back(k);
  size_t cursor = kLead;
  for (Slot k : used) {
    size_t bytes = 0;
    switch (k) {
      case kX: case kY: case kDy: case kDx: case kResidual: case kResidualGrad:
        bytes = md.desc_ok ? md.bytes : 0;
        break;
      case kMask: bytes = md.desc_ok ? md.mask_need : 0; break;
      case kWeight: bytes = md.desc_ok ? md.weight_bytes : 0; break;
      case kStep: bytes = 8; break;
      case kWorkspace: bytes = s.workspace_bytes; break;
      default: bytes = md.desc_ok ? md.cbytes : 0;
    }
    Placement& p = s.place[k];
    const Scenario::Spec& sp = s.spec[k];
    p = Placement{};
    p.bytes = bytes;
    if (sp.kind == 0 || bytes > kBudget) continue;  // NULL
    const size_t n_v1 = slots_of(op).size();  // a first-version slot aliases one of those
    const Slot t = k < kSlotsV1 && op < Op(kOpsV1) ? used[size_t(sp.target) % n_v1]
                                                   : used[size_t(sp.target) % used.size()];
    if (sp.kind == 7 && t != k && s.place[t].present && &s.place[t] < &p) {
      const int64_t pos = int64_t(s.place[t].pos) + sp.delta;
      p.pos = size_t(std::max<int64_t>(0, pos));
    } else {
      p.pos = (cursor + size_t(sp.gap) + 255) / 256 * 256 + size_t(sp.misalign);
      cursor = p.pos + bytes;
    }
    p.present = true;
  }
  Arena a;
  a.s = &s;
  a.md = &md;
  a.layout = get_raw(s.desc.layout);
  a.total = kTail;
  for (Slot k : used)
    if (s.place[k].present) a.total = std::max(a.total, s.place[k].pos + s.place[k].bytes + kTail);
  // An arena of exactly the bytes used, from a 256-aligned base: the
  // allocation starts up to 255 bytes before the base.
  const size_t total_alloc = a.total + 256;
  if (cudaMalloc(&a.raw, total_alloc) != cudaSuccess) violation("cudaMalloc failed");
  a.base = static_cast<uint8_t*>(a.raw) + (256 - reinterpret_cast<uintptr_t>(a.raw) % 256) % 256;
  a.total = total_alloc - size_t(a.base - static_cast<uint8_t*>(a.raw));
  // The config's epilogue pointers into the arena, and the mask's size.
  s.config.residual = s.place[kResidual].present ? a.base + s.place[kResidual].pos : nullptr;
  s.config.residual_grad =
      s.place[kResidualGrad].present ? a.base + s.place[kResidualGrad].pos : nullptr;
  s.config.relu_mask = s.place[kMask].present ? a.base + s.place[kMask].pos : nullptr;
  s.config.relu_mask_bytes = choose_mask_bytes(s, md.mask_need);
  if (header_ok) model_pointers(s, a.base, need, md);

  for (Slot k : used)
    story(" %s=%s", kSlotName[k],
          s.place[k].present
              ? (std::to_string(s.place[k].pos) + "+" + std::to_string(s.place[k].bytes)).c_str()
              : "NULL");
  story(" workspace_bytes=%zu need=%zu", s.workspace_bytes, need);
  if (has_epilogue_args(op))
    story(" epilogue=%d (sees %d) relu_mask_bytes=%zu need=%zu", get_raw(s.config.epilogue),
          md.epilogue, s.config.relu_mask_bytes, md.mask_need);
  if (op == Op::kFold) story(" out_features=%lld in_features=%lld", (long long)s.c_arg, (long long)s.in_features);

  fill(a, used);
  a.before.assign(a.base, a.base + a.total);
  if (s.random_schedule) bnormEmuSetRandomSchedule(1, s.schedule_seed);
  bnormStatus_t st = BNORM_STATUS_INTERNAL_ERROR;
  auto P = [&](Slot k) { return a.ptr(k); };
  auto F = [&](Slot k) { return static_cast<float*>(a.ptr(k)); };
  switch (op) {
    case Op::kFwd:
      st = bnormForwardTraining(h, g_stream, dp, cp, P(kX), P(kY), F(kGamma), F(kBeta),
                                F(kRunMean), F(kRunVar), static_cast<int64_t*>(P(kStep)),
                                F(kSavedMean), F(kSavedRstd), P(kWorkspace), s.workspace_bytes);
      break;
    case Op::kInf:
      st = bnormForwardInference(h, g_stream, dp, cp, P(kX), P(kY), F(kGamma), F(kBeta),
                                 F(kRunMean), F(kRunVar));
      break;
    case Op::kScaleShift:
      st = bnormGetInferenceScaleShift(h, g_stream, s.c_arg, cp, F(kGamma), F(kBeta), F(kRunMean),
                                       F(kRunVar), F(kScale), F(kShift));
      break;
    case Op::kBwd:
      st = bnormBackward(h, g_stream, dp, cp, P(kX), P(kDy), P(kDx), F(kGamma), F(kSavedMean),
                         F(kSavedRstd), F(kDGamma), F(kDBeta), P(kWorkspace), s.workspace_bytes);
      break;
    case Op::kFrz:
      st = bnormBackwardFrozen(h, g_stream, dp, cp, P(kX), P(kDy), P(kDx), F(kGamma),
                               F(kRunMean), F(kRunVar), F(kDGamma), F(kDBeta), P(kWorkspace),
                               s.workspace_bytes);
      break;
    case Op::kFold:
      st = bnormFoldIntoLinear(h, g_stream, s.c_arg, s.in_features, cp, F(kGamma), F(kBeta),
                               F(kRunMean), F(kRunVar), F(kWeight), F(kBiasIn), F(kBiasOut));
      break;
    default: break;
  }
  if (cudaDeviceSynchronize() != cudaSuccess) violation("cudaDeviceSynchronize failed");
  if (s.random_schedule) bnormEmuSetRandomSchedule(0, 0);
  story(" -> status %d", int(st));
  ++g_stats.calls[int(op)];
  if (st == BNORM_STATUS_SUCCESS) ++g_stats.ok[int(op)];
  if (st == BNORM_STATUS_SUCCESS && (!uses_desc(op) || md.m > 0)) ++g_stats.computed[int(op)];
  if (has_epilogue_args(op)) {
    ++g_stats.epilogue_calls[md.epilogue];
    if (st == BNORM_STATUS_SUCCESS) ++g_stats.epilogue_ok[md.epilogue];
  }
  expect_message(op, st);
  expect_status(op, st, md);
  a.after.assign(a.base, a.base + a.total);

  // Which bytes the call may have changed.
  std::vector<uint8_t> may(a.total, 0);
  if (st == BNORM_STATUS_SUCCESS) {
    const bool empty = uses_desc(op) && md.m == 0;
    for (Slot k : used) {
      if (!s.place[k].present || !is_output(op, k, md.epilogue)) continue;
      if (empty && !(k == kDGamma || k == kDBeta)) continue;
      if (op == Op::kFwd && k == kStep &&
          !(a.has(kRunMean) && md.average == BNORM_AVERAGE_CUMULATIVE))
        continue;  // ignored unless cumulative with tracking
      const size_t len = k == kWorkspace ? std::min(s.workspace_bytes, need) : s.place[k].bytes;
      std::fill(may.begin() + long(s.place[k].pos), may.begin() + long(s.place[k].pos + len), 1);
    }
  }
  for (size_t i = 0; i < a.total; ++i)
    if (!may[i] && a.before[i] != a.after[i])
      violation("%s (status %d) changed byte %zu of the arena (in %s): 0x%02x -> 0x%02x",
                op_name(op), int(st), i, slot_at(s, used, i), a.before[i], a.after[i]);

  if (st == BNORM_STATUS_SUCCESS) {
    if (op == Op::kScaleShift) {
      check_scale_shift(a, md);
    } else if (op == Op::kFold) {
      check_fold(a, md, s.in_features);
    } else if (md.m == 0) {
      for (Slot k : {kDGamma, kDBeta})
        if ((op == Op::kBwd || op == Op::kFrz) && a.has(k))
          for (size_t i = 0; i < s.place[k].bytes; ++i)
            if (a.after[s.place[k].pos + i] != 0)
              violation("m == 0: %s is not zeroed (byte %zu)", kSlotName[k], i);
    } else if (op == Op::kFwd) {
      check_forward(a, md);
    } else if (op == Op::kInf) {
      check_inference(a, md);
    } else {
      check_backward(a, md, op == Op::kFrz);
    }
  }
  cudaFree(a.raw);
  if (fresh && bnormDestroy(fresh) != BNORM_STATUS_SUCCESS) violation("bnormDestroy failed");
  if (s.handle_kind == 2 && bnormDestroy(h) != BNORM_STATUS_BAD_HANDLE)
    violation("bnormDestroy accepted a handle it did not make");
}

void run_ws_query(Scenario& s) {
  Model md = model_header(s);
  if (!s.pass_ws_out) md.violated.insert(BNORM_STATUS_NULL_POINTER);
  bnormHandle_t h = g_handle;
  alignas(16) static unsigned char fake_handle[1024];
  if (s.handle_kind == 1) h = nullptr;
  if (s.handle_kind == 2) {
    std::memset(fake_handle, 0xa5, sizeof fake_handle);
    h = reinterpret_cast<bnormHandle_t>(fake_handle);
  }
  const size_t kSentinel = 0x5eed5eed5eedull;
  size_t out = kSentinel;
  const bnormTensorDesc_t* dp = s.pass_desc ? &s.desc : nullptr;
  const bnormConfig_t* cp = s.pass_config ? &s.config : nullptr;
  const bnormStatus_t st = ws_query(s.op, h, dp, cp, s.pass_ws_out ? &out : nullptr);
  story(" -> status %d, %zu bytes", int(st), out);
  ++g_stats.calls[int(s.op)];
  if (st == BNORM_STATUS_SUCCESS) ++g_stats.ok[int(s.op)], ++g_stats.computed[int(s.op)];
  expect_message(s.op, st);
  expect_status(s.op, st, md);
  if (st != BNORM_STATUS_SUCCESS) {
    if (out != kSentinel) violation("a failed workspace query wrote its output");
    return;
  }
  // Room for at least the per-channel arrays the calls keep there, and the
  // same answer every time.
  const size_t floor = (s.op == Op::kFwdWs ? 5 : 4) * md.cbytes;
  if (out < floor) violation("workspace of %zu bytes for c = %lld", out, (long long)md.c);
  size_t again = 0;
  if (ws_query(s.op, h, dp, cp, &again) != BNORM_STATUS_SUCCESS || again != out)
    violation("the workspace query is not repeatable");
}

// bnormGetReluMaskSize: 4 * ceil(n * c * spatial / 32) for a valid
// descriptor; on failure the output keeps its bytes.
void run_mask_size(Scenario& s) {
  Model md = model_header(s);
  if (!s.pass_ws_out) md.violated.insert(BNORM_STATUS_NULL_POINTER);
  bnormHandle_t h = g_handle;
  alignas(16) static unsigned char fake_handle[1024];
  if (s.handle_kind == 1) h = nullptr;
  if (s.handle_kind == 2) {
    std::memset(fake_handle, 0x3c, sizeof fake_handle);
    h = reinterpret_cast<bnormHandle_t>(fake_handle);
  }
  const size_t kSentinel = 0x5eed5eed5eedull;
  size_t out = kSentinel;
  const bnormStatus_t st =
      bnormGetReluMaskSize(h, s.pass_desc ? &s.desc : nullptr, s.pass_ws_out ? &out : nullptr);
  story(" -> status %d, %zu bytes", int(st), out);
  ++g_stats.calls[int(s.op)];
  if (st == BNORM_STATUS_SUCCESS) ++g_stats.ok[int(s.op)], ++g_stats.computed[int(s.op)];
  expect_message(s.op, st);
  expect_status(s.op, st, md);
  if (st != BNORM_STATUS_SUCCESS) {
    if (out != kSentinel) violation("a failed bnormGetReluMaskSize wrote its output");
    return;
  }
  if (out != md.mask_need)
    violation("bnormGetReluMaskSize says %zu bytes for %lld elements, not %zu", out,
              (long long)md.numel, md.mask_need);
}

// bnormCreate (NULL: NULL_POINTER, nothing else), a call on the new handle
// that must plan as the shared one, bnormDestroy of it, of NULL, and of
// memory bnormCreate did not make (BAD_HANDLE, with a message).
void run_create(Scenario& s) {
  ++g_stats.calls[int(s.op)];
  if (!s.pass_ws_out) {
    const bnormStatus_t st = bnormCreate(nullptr);
    story(" bnormCreate(NULL) -> status %d", int(st));
    expect_message(Op::kCreate, st);
    if (st != BNORM_STATUS_NULL_POINTER) violation("bnormCreate(NULL) returned %d", int(st));
    return;
  }
  bnormHandle_t h = reinterpret_cast<bnormHandle_t>(uintptr_t(0x1234));
  const bnormStatus_t st = bnormCreate(&h);
  story(" bnormCreate -> status %d", int(st));
  expect_message(Op::kCreate, st);
  if (st != BNORM_STATUS_SUCCESS || !h) violation("bnormCreate failed with %d", int(st));
  ++g_stats.ok[int(s.op)], ++g_stats.computed[int(s.op)];
  const bnormConfig_t* cp = s.pass_config ? &s.config : nullptr;
  size_t a = 1, b = 2;
  const bnormStatus_t sa = bnormGetForwardTrainingWorkspaceSize(h, &s.desc, cp, &a);
  const bnormStatus_t sb = bnormGetForwardTrainingWorkspaceSize(g_handle, &s.desc, cp, &b);
  if (sa != sb || (sa == BNORM_STATUS_SUCCESS && a != b))
    violation("a new handle answers the workspace query with %d, %zu; the shared one %d, %zu",
              int(sa), a, int(sb), b);
  if (bnormDestroy(h) != BNORM_STATUS_SUCCESS || bnormGetLastErrorMessage()[0] != '\0')
    violation("bnormDestroy of a new handle failed");
  if (bnormDestroy(nullptr) != BNORM_STATUS_SUCCESS) violation("bnormDestroy(NULL) failed");
  if (s.handle_kind == 2) {
    alignas(16) static unsigned char fake_handle[1024];
    std::memset(fake_handle, int(s.data_seed & 0xff), sizeof fake_handle);
    const bnormStatus_t sd = bnormDestroy(reinterpret_cast<bnormHandle_t>(fake_handle));
    if (sd != BNORM_STATUS_BAD_HANDLE || std::strncmp(bnormGetLastErrorMessage(), "bnormDestroy: ", 14))
      violation("bnormDestroy of memory bnormCreate did not make returned %d, \"%s\"", int(sd),
                bnormGetLastErrorMessage());
  }
}

// ---- synchronized batch norm ----------------------------------------------------------------
//
// The split phases over R = 1 to 3 ranks simulated one after the other in
// this thread, all in one exact-size arena: each rank's tensors, statistics
// and workspace, shared gamma and beta, and the exchanged buffer. Forward:
// bnormSyncForwardStats of every rank into its block of the gathered buffer
// (the all-gather done in place: with R = 1 the gathered buffer is the
// rank's own block), then bnormSyncForwardApply of every rank. Backward:
// bnormSyncBackwardGrads of every rank into its own packed sums, the host
// sums them in rank order into the reduced buffer (R = 1: the rank's own
// sums are passed, the all-reduce being the identity), then
// bnormSyncBackwardApply of every rank. One call (victim rank and phase)
// gets the fuzzed pointers (NULL, aliased, misaligned), nranks, rank,
// global_n and exchanged buffer; every call's status is checked against the
// model, a failed call must change no byte and the sequence stops there;
// after a complete sequence the outputs are checked against the reference
// on the concatenated batch (n is outermost in both layouts, so it is the
// ranks' tensors end to end) and the statistics, running statistics, step
// counter, dgamma and dbeta must be bitwise the same on every rank.

enum SyncSlot {
  sX, sY, sDy, sDx, sRunMean, sRunVar, sStep, sSavedMean, sSavedRstd, sDGamma, sDBeta, sWs, sLocal,
  kPerRank
};
const char* const kSyncSlotName[kPerRank] = {
    "x", "y", "dy", "dx", "running_mean", "running_var", "step_count", "saved_mean",
    "saved_rstd", "dgamma", "dbeta", "workspace", "local_grads"};
constexpr int gGamma = 3 * kPerRank, gBeta = gGamma + 1, gXchg = gGamma + 2, kSyncRegions = gXchg + 1;

struct SyncArg {
  const char* name;
  int region;        // index of its region; -1: none (the gathered block of a rank)
  size_t bytes;      // what the rules say it spans
  size_t align;
  bool output, required;
  Placement eff;     // where the call gets it
};

// Sets where every argument of one call points: its own region, or (the
// victim) what the input says.
void place_args(std::vector<SyncArg>& args, const Placement* reg, const Scenario::Spec* spec,
                bool victim) {
  for (size_t i = 0; i < args.size(); ++i) {
    SyncArg& g = args[i];
    if (g.region >= 0) {
      g.eff = reg[g.region];
      g.eff.bytes = g.bytes;
    }
    if (!victim || !g.eff.present) continue;
    const Scenario::Spec& sp = spec[i % 16];
    if (sp.kind == 0) g.eff.present = false;
    if (sp.kind == 7) {
      const SyncArg& t = args[size_t(sp.target) % args.size()];
      if (&t != &g && t.eff.present)
        g.eff.pos = size_t(std::max<int64_t>(0, int64_t(t.eff.pos) + sp.delta));
    }
    g.eff.pos += size_t(sp.misalign);
  }
}

// The rules on one call's pointers (bnorm.h): required, alignment, no
// output overlapping another argument (in-place pairs excepted).
void model_args(const std::vector<SyncArg>& args, const std::vector<std::pair<int, int>>& in_place,
                std::set<int>& v) {
  for (const SyncArg& g : args) {
    if (g.required && !g.eff.present) v.insert(BNORM_STATUS_NULL_POINTER);
    if (g.eff.present && g.align > 1 && g.eff.pos % g.align) v.insert(BNORM_STATUS_MISALIGNED);
  }
  for (size_t i = 0; i < args.size(); ++i)
    for (size_t j = i + 1; j < args.size(); ++j) {
      if (!args[i].output && !args[j].output) continue;
      if (!overlaps(args[i].eff, args[j].eff)) continue;
      bool ok = false;
      for (auto [p, q] : in_place)
        if (((int(i) == p && int(j) == q) || (int(i) == q && int(j) == p)) &&
            args[i].eff.pos == args[j].eff.pos && args[i].eff.bytes == args[j].eff.bytes)
          ok = true;
      if (!ok) v.insert(BNORM_STATUS_BAD_ALIASING);
    }
}

size_t sync_stats_bytes(int64_t c) {
  size_t a = 0, b = 0;
  if (bnormGetSyncBufferSizes(g_handle, c, &a, &b) != BNORM_STATUS_SUCCESS)
    violation("bnormGetSyncBufferSizes failed for c = %lld", (long long)c);
  return a;
}
size_t sync_grads_bytes(int64_t c) {
  size_t a = 0, b = 0;
  if (bnormGetSyncBufferSizes(g_handle, c, &a, &b) != BNORM_STATUS_SUCCESS)
    violation("bnormGetSyncBufferSizes failed for c = %lld", (long long)c);
  return b;
}

bnormHandle_t sync_handle(const Scenario& s) {
  alignas(16) static unsigned char fake_handle[1024];
  if (s.handle_kind == 1) return nullptr;
  if (s.handle_kind == 2) {
    std::memset(fake_handle, 0x6b, sizeof fake_handle);
    return reinterpret_cast<bnormHandle_t>(fake_handle);
  }
  return g_handle;  // (kind 3, a fresh handle, is the shared one here)
}

int sync_nranks_arg(const Scenario& s, int real) {
  static const int v[] = {0, 0, -1, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()};
  return s.sy.nranks_kind ? v[s.sy.nranks_kind] : real;
}
int sync_rank_arg(const Scenario& s, int real, int nranks_arg) {
  switch (s.sy.rank_kind) {
    case 1: return -1;
    case 2: return nranks_arg;
    case 3: return std::numeric_limits<int>::max();
    case 4: return std::numeric_limits<int>::min();
    default:
      // A huge nranks with a valid rank would make the call read nranks
      // blocks: keep that call out of the arena's range (rank out of range).
      return nranks_arg == std::numeric_limits<int>::max() ? -1 : real;
  }
}

// The size queries: bnormGetSyncBufferSizes and the built-in calls' two
// workspace queries.
void run_sync_query(Scenario& s) {
  const Op op = s.op;
  Model md = model_header(s);
  if (!s.pass_ws_out) md.violated.insert(BNORM_STATUS_NULL_POINTER);
  const bnormHandle_t h = sync_handle(s);
  const bnormTensorDesc_t* dp = s.pass_desc ? &s.desc : nullptr;
  const bnormConfig_t* cp = s.pass_config ? &s.config : nullptr;
  const size_t kSentinel = 0x5eed5eed5eedull;
  size_t out = kSentinel, out2 = kSentinel;
  bnormStatus_t st;
  const int nranks = sync_nranks_arg(s, s.sy.nranks);
  if (op == Op::kSyncSizes) {
    const bool second = s.sy.xbuf_kind != 1;  // which output is NULL when one is
    st = bnormGetSyncBufferSizes(h, s.c_arg, s.pass_ws_out || !second ? &out : nullptr,
                                 s.pass_ws_out || second ? &out2 : nullptr);
  } else if (op == Op::kSyncFwdWs) {
    if (md.violated.empty() && nranks < 1) md.violated.insert(BNORM_STATUS_INVALID_VALUE);
    size_t g;
    if (md.violated.empty() &&
        (__builtin_mul_overflow(sync_stats_bytes(md.c), size_t(nranks), &g) ||
         g > std::numeric_limits<size_t>::max() / 2))
      md.violated.insert(BNORM_STATUS_BAD_SHAPE);  // (the local workspace comes on top)
    st = bnormGetSyncForwardTrainingWorkspaceSize(h, dp, cp, nranks, s.pass_ws_out ? &out : nullptr);
  } else {
    st = bnormGetSyncBackwardWorkspaceSize(h, dp, cp, s.pass_ws_out ? &out : nullptr);
  }
  story(" nranks=%d -> status %d, %zu %zu bytes", nranks, int(st), out, out2);
  ++g_stats.calls[int(op)];
  if (st == BNORM_STATUS_SUCCESS) ++g_stats.ok[int(op)], ++g_stats.computed[int(op)];
  expect_message(op, st);
  expect_status(op, st, md);
  if (st != BNORM_STATUS_SUCCESS) {
    if (out != kSentinel || out2 != kSentinel) violation("a failed %s wrote its output", op_name(op));
    return;
  }
  if (op == Op::kSyncSizes) {
    // bnorm.h: multiples of 16; count, pivot, mean, M2 (fp32) per rank; fp64
    // count and two sums per channel.
    if (out % 16 || out2 % 16) violation("buffer sizes %zu, %zu are not multiples of 16", out, out2);
    if (out < 12 * size_t(md.c) + 8 || out2 < 16 * size_t(md.c) + 8)
      violation("buffer sizes %zu, %zu too small for c = %lld", out, out2, (long long)md.c);
    return;
  }
  // The built-in calls' workspace holds the exchanged buffers besides the
  // local workspace.
  size_t local = 0;
  const bool fwd = op == Op::kSyncFwdWs;
  const bnormStatus_t ls = fwd ? bnormGetForwardTrainingWorkspaceSize(g_handle, dp, cp, &local)
                               : bnormGetBackwardWorkspaceSize(g_handle, dp, cp, &local);
  const size_t xchg = fwd ? sync_stats_bytes(md.c) * size_t(nranks) : sync_grads_bytes(md.c);
  if (ls == BNORM_STATUS_SUCCESS && out < xchg)
    violation("%s: %zu bytes, less than the %zu exchanged", op_name(op), out, xchg);
  size_t again = 0;
  const bnormStatus_t st2 = fwd ? bnormGetSyncForwardTrainingWorkspaceSize(h, dp, cp, nranks, &again)
                                : bnormGetSyncBackwardWorkspaceSize(h, dp, cp, &again);
  if (st2 != BNORM_STATUS_SUCCESS || again != out) violation("%s is not repeatable", op_name(op));
}

// The built-in NCCL calls with comm NULL: NULL_POINTER, nothing written.
void run_sync_nccl_null(Scenario& s) {
  const Op op = s.op;
  std::vector<uint8_t> shadow;
  const size_t total = 4096;
  void* raw = nullptr;
  if (cudaMalloc(&raw, total) != cudaSuccess) violation("cudaMalloc failed");
  uint8_t* b = static_cast<uint8_t*>(raw);
  for (size_t i = 0; i < total; ++i) b[i] = uint8_t(i * 77 + 3);
  shadow.assign(b, b + total);
  float* f = reinterpret_cast<float*>(b);
  const bnormHandle_t h = sync_handle(s);
  const bnormTensorDesc_t* dp = s.pass_desc ? &s.desc : nullptr;
  const bnormConfig_t* cp = s.pass_config ? &s.config : nullptr;
  bnormStatus_t st;
  if (op == Op::kSyncFwdNccl)
    st = bnormSyncForwardTraining(h, g_stream, nullptr, dp, cp, -1, b, b + 1024, f + 512, f + 520,
                                  f + 528, f + 536, reinterpret_cast<int64_t*>(b + 2304), f + 600,
                                  f + 608, b + 3072, 1024);
  else
    st = bnormSyncBackward(h, g_stream, nullptr, dp, cp, b, b + 512, b + 1024, f + 512, f + 520,
                           f + 528, f + 536, f + 544, b + 3072, 1024);
  if (cudaDeviceSynchronize() != cudaSuccess) violation("cudaDeviceSynchronize failed");
  story(" comm=NULL -> status %d", int(st));
  ++g_stats.calls[int(op)];
  expect_message(op, st);
  if (st != BNORM_STATUS_NULL_POINTER) violation("%s with comm NULL returned %d", op_name(op), int(st));
  for (size_t i = 0; i < total; ++i)
    if (b[i] != shadow[i]) violation("%s with comm NULL changed byte %zu", op_name(op), i);
  cudaFree(raw);
}

void run_sync_phases(Scenario& s) {
  const Op op = s.op;
  const bool fwd = op == Op::kSyncFwd;
  Scenario::SyncArgs& sy = s.sy;
  // The epilogue is not driven here: NONE, or an invalid value (the config rule).
  if (get_raw(s.config.epilogue) >= 1 && get_raw(s.config.epilogue) <= 2)
    set_raw(s.config.epilogue, BNORM_EPILOGUE_NONE);
  Model md = model_header(s);
  const bool header_ok = md.violated.empty();
  const bnormHandle_t h = sync_handle(s);
  const bnormConfig_t* cp = s.pass_config ? &s.config : nullptr;
  // Ranks: real shapes only when rank 0's is real and small; else one call.
  int R = sy.nranks;
  int64_t n[3] = {s.desc.n, sy.n[1], sy.n[2]};
  // (c too: the fill below loops over the channels.)
  const bool real = header_ok && md.bytes <= kBudget && md.numel <= kMaxRealElems && md.c <= 4096;
  if (!real) R = 1;
  for (int r = 1; r < R; ++r)
    while (n[r] > 0 && n[r] * md.c * md.spatial > kMaxRealElems / 2) n[r] /= 2;
  int64_t N = 0;
  for (int r = 0; r < R; ++r) N += n[r];
  const int vr = header_ok ? sy.victim_rank % R : 0, vp = header_ok ? sy.victim_phase : 0;
  bnormTensorDesc_t desc[3];
  for (int r = 0; r < 3; ++r) desc[r] = s.desc, desc[r].n = n[r < R ? r : 0];
  const bnormTensorDesc_t* dp[3];
  for (int r = 0; r < 3; ++r) dp[r] = s.pass_desc ? &desc[r] : nullptr;
  // The workspace each phase needs, by bnorm.h the local call's.
  size_t need[3] = {0, 0, 0};
  if (header_ok)
    for (int r = 0; r < R; ++r) {
      const bnormStatus_t q = fwd ? bnormGetForwardTrainingWorkspaceSize(g_handle, dp[r], cp, &need[r])
                                  : bnormGetBackwardWorkspaceSize(g_handle, dp[r], cp, &need[r]);
      if (q != BNORM_STATUS_SUCCESS) violation("the workspace query failed on valid arguments");
    }
  const size_t wsb_v = choose_workspace_bytes(s, need[vr]);
  const size_t stats = header_ok ? sync_stats_bytes(md.c) : 0;
  const size_t gbytes = header_ok ? sync_grads_bytes(md.c) : 0;
  // Regions.
  Placement reg[kSyncRegions];
  size_t cursor = kLead;
  auto put = [&](int k, size_t bytes, bool want) {
    reg[k] = Placement{};
    reg[k].bytes = bytes;
    if (!want || bytes > kBudget) return;
    reg[k].pos = (cursor + 255) / 256 * 256;
    cursor = reg[k].pos + bytes;
    reg[k].present = true;
  };
  const bool cumulative = md.average == BNORM_AVERAGE_CUMULATIVE;
  for (int r = 0; r < R; ++r) {
    const size_t tb = size_t(n[r]) * size_t(md.c) * size_t(md.spatial) * md.elem;
    const int b = r * kPerRank;
    put(b + sX, tb, true);
    put(b + sY, tb, fwd);
    put(b + sDy, tb, !fwd);
    put(b + sDx, tb, !fwd);
    put(b + sRunMean, md.cbytes, fwd && sy.running);
    put(b + sRunVar, md.cbytes, fwd && sy.running);
    put(b + sStep, 8, fwd && sy.running && cumulative);
    put(b + sSavedMean, md.cbytes, !fwd || sy.saved);
    put(b + sSavedRstd, md.cbytes, !fwd || sy.saved);
    put(b + sDGamma, md.cbytes, !fwd && sy.grads);
    put(b + sDBeta, md.cbytes, !fwd && sy.grads);
    put(b + sWs, std::max(need[r], r == vr ? std::min(wsb_v, size_t(4096) + need[r]) : 0), true);
    put(b + sLocal, gbytes, !fwd);
  }
  put(gGamma, md.cbytes, sy.gamma);
  put(gBeta, md.cbytes, sy.gamma);
  put(gXchg, fwd ? stats * size_t(R) : gbytes, true);
  const size_t total_alloc = cursor + kTail + 256;
  void* raw = nullptr;
  if (cudaMalloc(&raw, total_alloc) != cudaSuccess) violation("cudaMalloc failed");
  uint8_t* base = static_cast<uint8_t*>(raw) + (256 - reinterpret_cast<uintptr_t>(raw) % 256) % 256;
  const size_t total = total_alloc - size_t(base - static_cast<uint8_t*>(raw));

  // Data: every rank's slice of one batch (per-channel mean and spread
  // shared), the same running statistics and step counter on every rank.
  for (size_t i = 0; i < total; ++i) base[i] = uint8_t(i * 131 + 7);
  std::mt19937_64 rng(s.data_seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto at = [&](int k) { return base + reg[k].pos; };
  auto put_f = [&](int k, int64_t i, float v) { std::memcpy(at(k) + 4 * i, &v, 4); };
  auto get_f = [&](const uint8_t* b, int k, int64_t i) {
    float v;
    std::memcpy(&v, b + reg[k].pos + 4 * i, 4);
    return v;
  };
  const int layout = get_raw(s.desc.layout);
  auto off = [&](int64_t nr, int64_t ch, int64_t j) {
    const int64_t i = j / md.spatial, sp = j % md.spatial;
    return layout == BNORM_LAYOUT_NHWC ? (i * md.spatial + sp) * md.c + ch
                                       : (i * md.c + ch) * md.spatial + sp;
    (void)nr;
  };
  static const double specials[] = {kNaN, kInf, -kInf, 1e-40, 0.0, 65504.0, 1e30};
  if (real) {
    for (int t = 0; t < 2; ++t) {  // x, then dy
      if (t == 1 && fwd) break;
      const double mlo = t ? -0.5 : -3.0, mhi = t ? 0.5 : 3.0, slo = 0.5, shi = t ? 1.5 : 2.0;
      for (int64_t ch = 0; ch < md.c; ++ch) {
        const double mean = mlo + (mhi - mlo) * u(rng), sd = slo + (shi - slo) * u(rng);
        for (int r = 0; r < R; ++r) {
          const int k = r * kPerRank + (t ? sDy : sX);
          if (!reg[k].present) continue;
          for (int64_t j = 0; j < n[r] * md.spatial; ++j)
            store(at(k) + off(n[r], ch, j) * md.elem, md.dtype, mean + sd * nd(rng));
        }
      }
    }
    for (int i = 0; i < s.special; ++i) {
      const int r = int(rng() % unsigned(R));
      const int k = r * kPerRank + (fwd || rng() % 2 ? sX : sDy);
      const size_t cnt = size_t(n[r] * md.c * md.spatial);
      if (reg[k].present && cnt)
        store(at(k) + (rng() % cnt) * md.elem, md.dtype, specials[rng() % 7]);
    }
    for (int64_t i = 0; i < md.c && reg[gGamma].present; ++i) {
      put_f(gGamma, i, float((0.5 + u(rng)) * (i % 3 ? 1 : -1)));
      put_f(gBeta, i, float(-1.0 + 2.0 * u(rng)));
    }
    for (int64_t i = 0; i < md.c; ++i) {
      const float rm = float(-1.0 + 2.0 * u(rng)), rv = float(0.5 + 1.5 * u(rng));
      for (int r = 0; r < R; ++r) {
        const int b = r * kPerRank;
        if (reg[b + sRunMean].present) put_f(b + sRunMean, i, rm), put_f(b + sRunVar, i, rv);
      }
    }
    for (int r = 0; r < R; ++r)
      if (reg[r * kPerRank + sStep].present) std::memcpy(at(r * kPerRank + sStep), &s.step0, 8);
    if (!fwd) {  // the saved statistics: of the global batch (or arbitrary)
      std::vector<double> x, mean(size_t(md.c)), rstd(size_t(md.c));
      for (int r = 0; r < R; ++r)
        for (int64_t i = 0; i < n[r] * md.c * md.spatial; ++i)
          x.push_back(load(at(r * kPerRank + sX) + i * md.elem, md.dtype));
      const bnref_shape sh{layout == BNORM_LAYOUT_NHWC ? BNREF_NHWC : BNREF_NCHW, N, md.c, md.spatial};
      if (N * md.spatial > 0) bnref_batch_stats(&sh, x.data(), md.eps, mean.data(), nullptr, rstd.data());
      for (int64_t i = 0; i < md.c; ++i) {
        float mv = float(mean[size_t(i)]), rv = float(rstd[size_t(i)]);
        if (!s.consistent_saved || N * md.spatial == 0)
          mv = float(-3.0 + 6.0 * u(rng)), rv = float(0.3 + 1.7 * u(rng));
        for (int r = 0; r < R; ++r)
          put_f(r * kPerRank + sSavedMean, i, mv), put_f(r * kPerRank + sSavedRstd, i, rv);
      }
    }
    // Outputs poisoned.
    for (int r = 0; r < R; ++r)
      for (int k : {sY, sDx, sDGamma, sDBeta, fwd ? sSavedMean : sY, fwd ? sSavedRstd : sY}) {
        const int q = r * kPerRank + k;
        if (reg[q].present) std::memset(at(q), 0xff, reg[q].bytes);
      }
  }
  const std::vector<uint8_t> start(base, base + total);

  // One call: its arguments, the model, the call, the checks. False: the
  // sequence stops (the call failed, as it had to).
  bool perturbed = false;
  auto one = [&](int phase, int r) -> bool {
    const bool victim = r == vr && phase == vp;
    const int b = r * kPerRank;
    const Op cop = op;  // for the message: the phase's own name below
    const char* name = fwd ? (phase ? "bnormSyncForwardApply" : "bnormSyncForwardStats")
                           : (phase ? "bnormSyncBackwardApply" : "bnormSyncBackwardGrads");
    const size_t tb = size_t(n[r]) * size_t(md.c) * size_t(md.spatial) * md.elem;
    const size_t wsb = victim ? wsb_v : need[r];
    std::vector<SyncArg> args;
    auto arg = [&](const char* nm, int region, size_t bytes, size_t al, bool out, bool req) {
      args.push_back(SyncArg{nm, region, bytes, al, out, req, Placement{}});
      return int(args.size() - 1);
    };
    const bool has_data = tb > 0;
    std::set<int> v = md.violated;
    std::vector<std::pair<int, int>> in_place;
    const int nranks_arg = victim ? sync_nranks_arg(s, R) : R;
    const int rank_arg = victim ? sync_rank_arg(s, r, nranks_arg) : r;
    int64_t global_n = sy.gn_kind == 1 ? -1 : N;
    if (victim) {
      switch (sy.gn_kind) {
        case 2: global_n = -2; break;
        case 3: global_n = std::numeric_limits<int64_t>::min(); break;
        case 4: global_n = n[r] > 0 ? n[r] - 1 : -2; break;
        case 5: global_n = std::numeric_limits<int64_t>::max(); break;
        case 6: global_n = int64_t(1) << 62; break;
        default: break;
      }
    }
    int ix = -1, iy = -1, idy = -1, idx = -1, iws = -1, ixb = -1;
    Placement xb{};  // the exchanged buffer the call gets
    if (fwd && phase == 0) {
      ix = arg("x", b + sX, tb, md.elem, false, has_data);
      ixb = arg("local_stats", -1, stats, 16, true, true);
      args[size_t(ixb)].eff = reg[gXchg];
      args[size_t(ixb)].eff.pos += size_t(r) * stats;
      args[size_t(ixb)].eff.bytes = stats;
      iws = arg("workspace", b + sWs, std::min(wsb, need[r]), 16, true, need[r] > 0);
    } else if (fwd) {
      size_t gb = 0;
      const bool ovf = nranks_arg >= 1 && header_ok && __builtin_mul_overflow(stats, size_t(nranks_arg), &gb);
      ixb = arg("gathered_stats", -1, ovf ? 0 : gb, 16, false, true);
      args[size_t(ixb)].eff = reg[gXchg];
      args[size_t(ixb)].eff.bytes = ovf ? 0 : gb;
      ix = arg("x", b + sX, tb, md.elem, false, has_data);
      iy = arg("y", b + sY, tb, md.elem, true, has_data);
      arg("gamma", gGamma, md.cbytes, 4, false, false);
      arg("beta", gBeta, md.cbytes, 4, false, false);
      arg("running_mean", b + sRunMean, md.cbytes, 4, true, false);
      arg("running_var", b + sRunVar, md.cbytes, 4, true, false);
      arg("step_count", b + sStep, 8, 8, true, false);
      arg("saved_mean", b + sSavedMean, md.cbytes, 4, true, false);
      arg("saved_rstd", b + sSavedRstd, md.cbytes, 4, true, false);
      iws = arg("workspace", b + sWs, std::min(wsb, need[r]), 16, true, need[r] > 0);
      in_place.push_back({iy, ix});
      if (header_ok && ovf) v.insert(BNORM_STATUS_BAD_SHAPE);
    } else if (phase == 0) {
      ix = arg("x", b + sX, tb, md.elem, false, has_data);
      idy = arg("dy", b + sDy, tb, md.elem, false, has_data);
      arg("saved_mean", b + sSavedMean, md.cbytes, 4, false, true);
      ixb = arg("local_grads", b + sLocal, gbytes, 16, true, true);
      iws = arg("workspace", b + sWs, std::min(wsb, need[r]), 16, true, need[r] > 0);
    } else {
      ixb = arg("reduced_grads", R == 1 ? b + sLocal : gXchg, gbytes, 16, false, true);
      ix = arg("x", b + sX, tb, md.elem, false, has_data);
      idy = arg("dy", b + sDy, tb, md.elem, false, has_data);
      idx = arg("dx", b + sDx, tb, md.elem, true, has_data);
      arg("gamma", gGamma, md.cbytes, 4, false, false);
      arg("saved_mean", b + sSavedMean, md.cbytes, 4, false, true);
      arg("saved_rstd", b + sSavedRstd, md.cbytes, 4, false, true);
      arg("dgamma", b + sDGamma, md.cbytes, 4, true, false);
      arg("dbeta", b + sDBeta, md.cbytes, 4, true, false);
      iws = arg("workspace", b + sWs, std::min(wsb, need[r]), 16, true, need[r] > 0);
      in_place.push_back({idx, idy});
      in_place.push_back({idx, ix});
    }
    place_args(args, reg, sy.spec, victim);
    if (victim && sy.xbuf_kind && args[size_t(ixb)].eff.present) {
      Placement& p = args[size_t(ixb)].eff;
      if (sy.xbuf_kind == 1) p.present = false;
      else p.pos += sy.xbuf_kind == 2 ? 8 : sy.xbuf_kind == 3 ? 4 : 1;
    }
    xb = args[size_t(ixb)].eff;
    // An argument moved off its own region (aliased in place, or onto
    // another input) or made NULL makes a call whose outputs the oracle below does not
    // predict: the sequence is then checked for status and bytes only.
    for (const SyncArg& g : args)
      if (g.region >= 0 && (g.eff.present != reg[g.region].present ||
                            (g.eff.present && g.eff.pos != reg[g.region].pos)))
        perturbed = true;
    auto find = [&](const char* nm) -> const SyncArg* {
      for (const SyncArg& g : args)
        if (!std::strcmp(g.name, nm)) return &g;
      return nullptr;
    };
    const bool cumul = md.average == BNORM_AVERAGE_CUMULATIVE;
    if (header_ok) {
      // bnorm.h's rules for this phase (the local call's, plus its own).
      if (fwd && phase == 1) {
        if (nranks_arg < 1 || rank_arg < 0 || rank_arg >= nranks_arg) v.insert(BNORM_STATUS_INVALID_VALUE);
        if (md.factor_bad) v.insert(BNORM_STATUS_INVALID_VALUE);
        const SyncArg *rm = find("running_mean"), *rv = find("running_var"), *st = find("step_count"),
                      *sm = find("saved_mean"), *sr = find("saved_rstd");
        if (rm->eff.present != rv->eff.present || sm->eff.present != sr->eff.present)
          v.insert(BNORM_STATUS_NULL_POINTER);
        const bool tracking = rm->eff.present || rv->eff.present;
        if (tracking && cumul && !st->eff.present) v.insert(BNORM_STATUS_NULL_POINTER);
        if (!(tracking && cumul))  // ignored: no rule, no region
          for (SyncArg& g : args)
            if (&g == st) g.eff.present = false, g.align = 1;
        if (global_n < -1) v.insert(BNORM_STATUS_INVALID_VALUE);
        else if (global_n != -1) {
          int64_t m;
          if (global_n < n[r] || __builtin_mul_overflow(global_n, md.spatial, &m))
            v.insert(BNORM_STATUS_BAD_SHAPE);
          else if (m == 1) v.insert(BNORM_STATUS_BATCH_TOO_SMALL);
        }
      }
      if (!fwd && phase == 1) {
        const SyncArg *dg = find("dgamma"), *db = find("dbeta");
        if (dg->eff.present != db->eff.present) v.insert(BNORM_STATUS_NULL_POINTER);
      }
      model_args(args, in_place, v);
      if (wsb < need[r]) v.insert(BNORM_STATUS_WORKSPACE_TOO_SMALL);
    }
    // The call.
    std::vector<uint8_t> before(base, base + total);
    auto P = [&](const char* nm) -> void* {
      const SyncArg* g = find(nm);
      return g && g->eff.present ? base + g->eff.pos : nullptr;
    };
    auto F = [&](const char* nm) { return static_cast<float*>(P(nm)); };
    void* xbp = xb.present ? base + xb.pos : nullptr;
    if (s.random_schedule) bnormEmuSetRandomSchedule(1, s.schedule_seed + unsigned(r));
    bnormStatus_t st;
    if (fwd && phase == 0)
      st = bnormSyncForwardStats(h, g_stream, dp[r], cp, P("x"), xbp, P("workspace"), wsb);
    else if (fwd)
      st = bnormSyncForwardApply(h, g_stream, dp[r], cp, nranks_arg, rank_arg, global_n, xbp, P("x"),
                                 P("y"), F("gamma"), F("beta"), F("running_mean"), F("running_var"),
                                 static_cast<int64_t*>(P("step_count")), F("saved_mean"),
                                 F("saved_rstd"), P("workspace"), wsb);
    else if (phase == 0)
      st = bnormSyncBackwardGrads(h, g_stream, dp[r], cp, P("x"), P("dy"), F("saved_mean"), xbp,
                                  P("workspace"), wsb);
    else
      st = bnormSyncBackwardApply(h, g_stream, dp[r], cp, xbp, P("x"), P("dy"), P("dx"), F("gamma"),
                                  F("saved_mean"), F("saved_rstd"), F("dgamma"), F("dbeta"),
                                  P("workspace"), wsb);
    if (cudaDeviceSynchronize() != cudaSuccess) violation("cudaDeviceSynchronize failed");
    if (s.random_schedule) bnormEmuSetRandomSchedule(0, 0);
    story(" | %s rank %d%s (nranks %d rank %d global_n %lld n %lld ws %zu/%zu)", name, r,
          victim ? " [fuzzed]" : "", nranks_arg, rank_arg, (long long)global_n, (long long)n[r], wsb,
          need[r]);
    for (const SyncArg& g : args)
      if (victim) story(" %s=%s", g.name, g.eff.present ? std::to_string(g.eff.pos).c_str() : "NULL");
    story(" -> %d", int(st));
    (void)cop;
    // The message names the phase; the status is one the rules allow.
    const char* msg = bnormGetLastErrorMessage();
    if (st == BNORM_STATUS_SUCCESS ? msg[0] != '\0'
                                   : std::strncmp(msg, name, std::strlen(name)) != 0 ||
                                         std::strncmp(msg + std::strlen(name), ": ", 2) != 0)
      violation("%s returned %d with the message \"%s\"", name, int(st), msg);
    if (v.empty() ? st != BNORM_STATUS_SUCCESS : (st == BNORM_STATUS_SUCCESS || !v.count(int(st)))) {
      std::string set;
      for (int x : v) set += std::to_string(x) + " ";
      violation("%s returned %d; the arguments break rules with statuses { %s}", name, int(st),
                set.c_str());
    }
    // Bytes it may change: its outputs (the workspace up to what it needs).
    std::vector<uint8_t> may(total, 0);
    const int64_t gm = N * md.spatial;
    if (st == BNORM_STATUS_SUCCESS)
      for (const SyncArg& g : args) {
        if (!g.output || !g.eff.present) continue;
        if (fwd && phase == 1 && gm < 2 &&
            (!std::strcmp(g.name, "running_mean") || !std::strcmp(g.name, "running_var") ||
             !std::strcmp(g.name, "step_count")))
          continue;  // fewer than two values in all: untouched
        if (fwd && phase == 1 && gm == 0 && std::strcmp(g.name, "workspace")) continue;
        std::fill(may.begin() + long(g.eff.pos), may.begin() + long(std::min(total, g.eff.pos + g.bytes)), 1);
      }
    const uint8_t* after = base;
    for (size_t i = 0; i < total; ++i)
      if (!may[i] && before[i] != after[i])
        violation("%s rank %d (status %d) changed byte %zu of the arena: 0x%02x -> 0x%02x", name, r,
                  int(st), i, before[i], after[i]);
    if (st != BNORM_STATUS_SUCCESS) return false;
    (void)iws; (void)iy; (void)idx; (void)idy; (void)ix;
    return true;
  };

  ++g_stats.calls[int(op)];
  bool ok = true;
  for (int r = 0; r < R && ok; ++r) ok = one(0, r);
  if (ok && !fwd && R > 1) {  // the all-reduce: fp64 sums in rank order
    const size_t cnt = gbytes / 8;
    std::vector<double> sum(cnt, 0.0);
    for (int r = 0; r < R; ++r)
      for (size_t i = 0; i < cnt; ++i) {
        double d;
        std::memcpy(&d, at(r * kPerRank + sLocal) + 8 * i, 8);
        sum[i] += d;
      }
    std::memcpy(at(gXchg), sum.data(), gbytes);
  }
  for (int r = 0; r < R && ok; ++r) ok = one(1, r);
  if (ok) ++g_stats.ok[int(op)];
  if (ok && real && !perturbed && N * md.spatial > 0) {
    ++g_stats.computed[int(op)];
    const uint8_t* end = base;
    // Every rank the same statistics, bitwise.
    const std::vector<int> same = fwd ? std::vector<int>{sSavedMean, sSavedRstd, sRunMean, sRunVar, sStep}
                                      : std::vector<int>{sDGamma, sDBeta};
    for (int k : same)
      for (int r = 1; r < R; ++r)
        if (reg[k].present &&
            std::memcmp(end + reg[r * kPerRank + k].pos, end + reg[k].pos, reg[k].bytes) != 0)
          violation("rank %d's %s differs from rank 0's", r, kSyncSlotName[k]);
    if (fwd && N * md.spatial == 1) {  // global_n -1: caught on the device
      for (int r = 0; r < R; ++r)
        for (int64_t i = 0; i < md.c && reg[r * kPerRank + sSavedRstd].present; ++i)
          if (!std::isnan(get_f(end, r * kPerRank + sSavedRstd, i)))
            violation("one value in all: rank %d's saved_rstd[%lld] = %g, not NaN", r, (long long)i,
                      get_f(end, r * kPerRank + sSavedRstd, i));
      for (int r = 0; r < R; ++r)
        for (int64_t i = 0; i < n[r] * md.c * md.spatial; ++i)
          if (!std::isnan(load(end + reg[r * kPerRank + sY].pos + i * md.elem, md.dtype)))
            violation("one value in all: rank %d's y[%lld] is not NaN", r, (long long)i);
    } else {
      // The concatenated batch, as one local call would see it.
      Scenario cs{};
      cs.op = fwd ? Op::kFwd : Op::kBwd;
      Model cm = md;
      cm.n = N, cm.m = N * md.spatial, cm.numel = N * md.c * md.spatial;
      cm.bytes = size_t(cm.numel) * md.elem, cm.epilogue = 0;
      std::vector<uint8_t> cb, ca;
      auto add = [&](Slot k, const std::vector<int>& regions) {
        cs.place[k].present = true;
        cs.place[k].pos = cb.size();
        for (int q : regions) {
          if (!reg[q].present) {
            cs.place[k].present = false;
            continue;
          }
          cb.insert(cb.end(), start.begin() + long(reg[q].pos), start.begin() + long(reg[q].pos + reg[q].bytes));
          ca.insert(ca.end(), end + reg[q].pos, end + reg[q].pos + reg[q].bytes);
        }
        cs.place[k].bytes = cb.size() - cs.place[k].pos;
        cb.resize((cb.size() + 15) / 16 * 16 + 16), ca.resize(cb.size());
      };
      auto ranks = [&](int k) {
        std::vector<int> v;
        for (int r = 0; r < R; ++r) v.push_back(r * kPerRank + k);
        return v;
      };
      add(kX, ranks(sX));
      add(kGamma, {gGamma});
      add(kBeta, {gBeta});
      if (fwd) {
        add(kY, ranks(sY));
        add(kRunMean, {sRunMean});
        add(kRunVar, {sRunVar});
        add(kStep, {sStep});
        add(kSavedMean, {sSavedMean});
        add(kSavedRstd, {sSavedRstd});
      } else {
        add(kDy, ranks(sDy));
        add(kDx, ranks(sDx));
        add(kSavedMean, {sSavedMean});
        add(kSavedRstd, {sSavedRstd});
        add(kDGamma, {sDGamma});
        add(kDBeta, {sDBeta});
      }
      Arena a;
      a.s = &cs;
      a.md = &cm;
      a.before = cb;
      a.after = ca;
      a.layout = layout;
      if (fwd) check_forward(a, cm);
      else check_backward(a, cm, false);
    }
  } else if (ok && real && !perturbed && !fwd) {  // no value anywhere: dgamma, dbeta zero
    for (int r = 0; r < R; ++r)
      for (int k : {sDGamma, sDBeta})
        for (size_t i = 0; reg[r * kPerRank + k].present && i < md.cbytes; ++i)
          if (base[reg[r * kPerRank + k].pos + i] != 0) violation("m == 0: rank %d's %s is not zeroed", r, kSyncSlotName[k]);
  }
  cudaFree(raw);
}

void run_sync(Scenario& s) {
  story(" sync{nranks %d n %lld %lld victim %d/%d kinds %d %d %d %d}", s.sy.nranks,
        (long long)s.sy.n[1], (long long)s.sy.n[2], s.sy.victim_rank, s.sy.victim_phase,
        s.sy.nranks_kind, s.sy.rank_kind, s.sy.gn_kind, s.sy.xbuf_kind);
  switch (s.op) {
    case Op::kSyncSizes: case Op::kSyncFwdWs: case Op::kSyncBwdWs: run_sync_query(s); break;
    case Op::kSyncFwdNccl: case Op::kSyncBwdNccl: run_sync_nccl_null(s); break;
    default: run_sync_phases(s);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // One emulator thread: deterministic, and the fuzzer shares a small machine.
  setenv("BNORM_EMU_THREADS", "1", 0);
  if (bnormCreate(&g_handle) != BNORM_STATUS_SUCCESS) violation("bnormCreate failed");
  if (cudaStreamCreate(&g_stream) != cudaSuccess) violation("cudaStreamCreate failed");
  std::atexit(print_stats);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider f(data, size);
  Scenario s = decode(f);
  g_story.clear();
  story("%s handle=%d desc=%s{dtype %d layout %d n %lld c %lld spatial %lld} c_arg=%lld config=%s",
        op_name(s.op), s.handle_kind, s.pass_desc ? "" : "NULL", get_raw(s.desc.dtype),
        get_raw(s.desc.layout), (long long)s.desc.n, (long long)s.desc.c,
        (long long)s.desc.spatial, (long long)s.c_arg, s.pass_config ? "" : "NULL");
  if (s.pass_config)
    story("{size %zu magic %08x eps %g factor %g average %d path %d epilogue %d}", s.config.size,
          s.config.magic, s.config.eps, s.config.exponential_average_factor,
          get_raw(s.config.average), get_raw(s.config.path), get_raw(s.config.epilogue));
  story(" special=%d random_schedule=%d v1_left=%zu left=%zu", s.special, int(s.random_schedule),
        s.v1_left, s.left);
  if (is_sync(s.op)) {
    run_sync(s);
  } else if (s.op == Op::kFwdWs || s.op == Op::kBwdWs || s.op == Op::kFrzWs) {
    run_ws_query(s);
  } else if (s.op == Op::kMaskSize) {
    run_mask_size(s);
  } else if (s.op == Op::kCreate) {
    run_create(s);
  } else {
    run_data_call(s);
  }
  static const bool verbose = std::getenv("BNORM_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s\n", g_story.c_str());
  return 0;
}

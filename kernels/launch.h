// The launchers of bnorm's kernel families: the one interface between host/
// (which validates, plans and owns the public API) and kernels/ (which owns
// launch setup). Plain C++: no CUDA syntax, so host/ compiles without nvcc.
//
// Every launcher enqueues on the given stream and returns the CUDA error of
// its launches (cudaSuccess when all were accepted). Arguments arrive
// validated; a launcher never checks what host/ already checked.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace bnorm {
namespace kernels {

enum class DType { F32, F16, BF16 };

// How the channel of an element is found. host/ maps the public layouts onto
// these: NCHW with spatial > 1 is ChannelMajor, NHWC (and any tensor with
// spatial == 1 or c == 1, whose two layouts coincide in memory) is
// ChannelMinor.
enum class Order {
  ChannelMajor,  // element (i, ch, s) at (i*c + ch)*spatial + s
  ChannelMinor   // element (i, ch) at i*c + ch, i over the n*spatial rows
};

struct Tensor {
  DType dtype;
  Order order;
  int64_t n;        // samples
  int64_t c;        // channels
  int64_t spatial;  // values per (sample, channel); ChannelMinor folds it into rows
  int64_t m() const { return n * spatial; }
  int64_t numel() const { return n * c * spatial; }
};

// Kernel geometry, shared with host/'s planning.
constexpr int kReduceThreads = 256;  // threads of a reduction block
constexpr int kMinorCols = 32;       // ChannelMinor reduction block: 32 channels...
constexpr int kMinorRows = 8;        // ...by 8 rows
constexpr int kTile = 8;             // values per thread per register tile
constexpr int kApplyThreads = 256;   // threads of an elementwise block

// Block shape of the ChannelMinor passes: each thread covers n channels
// (one vector); the block is tx vector-columns by ty rows, tx the smallest
// power of two covering the columns, at most 32 (a warp spans 32 vectors of
// one row, or several whole rows when the channels are few).
struct MinorShape {
  unsigned tx, ty;
  int64_t col_blocks;
};
inline MinorShape minor_shape(int64_t c, int n) {
  const int64_t cols = (c + n - 1) / n;
  unsigned tx = 1;
  while (tx < 32 && int64_t(tx) < cols) tx *= 2;
  return MinorShape{tx, unsigned(kReduceThreads) / tx, (cols + tx - 1) / tx};
}
// The vector width (elements) a tensor gets when its pointers are 16-byte
// aligned: planning assumes it, the launchers check it.
inline int natural_width(DType d, int64_t row) {
  const int n = d == DType::F32 ? 4 : 8;
  for (int w = n; w > 1; w /= 2)
    if (row % w == 0) return w;
  return 1;
}

// How much of a tensor the persistent kernels may leave off chip and read
// twice (persist_fit): none; at most as much as they hold (the automatic
// choice: at least half of the second read saved); any amount (asked for
// by name: BNORM_PATH_PERSISTENT).
enum class PersistStream { None = 0, Half, All };

// What the device holds resident of one dtype's persistent kernels of one
// direction: asked once at bnormCreate (persistent_occupancy, the device
// attributes), so that fitting a shape is host arithmetic.
struct PersistLimits {
  int64_t sm_count;
  // Resident blocks an SM by registers, threads and the merge scratch, of
  // the register-only kernel and of the staging one (before its stage);
  // 0: unavailable.
  int blocks, blocks_staged;
  int64_t shared_per_sm;      // cudaDevAttrMaxSharedMemoryPerMultiprocessor
  int64_t shared_reserved;    // cudaDevAttrReservedSharedMemoryPerBlock
  int64_t shared_per_block;   // cudaDevAttrMaxSharedMemoryPerBlockOptin
  // Past what fits on chip, whether a thread may re-read the rest of its
  // slice from memory (persist_fit).
  PersistStream stream;
};

// How a per-channel reduction is cut: `splits` blocks share each channel
// (ChannelMajor) or each 32-channel tile (ChannelMinor).
struct ReducePlan {
  int64_t splits;
  int apply_blocks;   // grid of the elementwise pass (grid-stride)
  bool single_block;  // the whole call in one launch (tiny.cu)
  // The single-pass cooperative kernels (persistent.cu), and what the
  // device holds resident of them (their grid must not pass it). The
  // launcher fits the vector width the pointers allow again (persist_fit)
  // and falls back to the multi-pass kernels when it does not fit.
  bool persistent;
  PersistLimits persist;
};

// ---- launch geometry --------------------------------------------------------------
// The grids and blocks of the reduction and elementwise passes over a
// tensor, for vectors of N elements: pure host arithmetic (geometry.cuh
// launches with them; tests check them at extents beyond 2^32). Every grid
// stays within CUDA's limits (x < 2^31, y <= 65535) for any valid tensor.
struct Geometry {
  unsigned grid_x, grid_y;
  unsigned block_x, block_y;
};

inline Geometry reduce_geometry(const Tensor& t, const ReducePlan& plan, int n) {
  const unsigned splits = static_cast<unsigned>(plan.splits);
  if (t.order == Order::ChannelMajor) return {unsigned(t.c), splits, unsigned(kReduceThreads), 1};
  const MinorShape sh = minor_shape(t.c, n);
  return {unsigned(sh.col_blocks), splits, sh.tx, sh.ty};
}

constexpr int kApplyUnrollVectors = 4;  // vectors in flight per thread (apply.cuh)

inline Geometry apply_geometry(const Tensor& t, const ReducePlan& plan, int n) {
  const int64_t per_block = int64_t(kApplyThreads) * kApplyUnrollVectors;
  if (t.order == Order::ChannelMajor) {
    const int64_t want = (t.numel() / n + per_block - 1) / per_block;
    const int64_t blocks = want < plan.apply_blocks ? want : plan.apply_blocks;
    return {unsigned(blocks > 0 ? blocks : 1), 1, unsigned(kApplyThreads), 1};
  }
  const MinorShape sh = minor_shape(t.c, n);
  const int64_t rows = t.m();
  int64_t row_blocks =
      (rows + int64_t(sh.ty) * kApplyUnrollVectors - 1) / (int64_t(sh.ty) * kApplyUnrollVectors);
  int64_t cap = plan.apply_blocks / sh.col_blocks;
  if (cap < 1) cap = 1;
  if (cap > 65535) cap = 65535;
  if (row_blocks > cap) row_blocks = cap;
  if (row_blocks < 1) row_blocks = 1;
  return {unsigned(sh.col_blocks), unsigned(row_blocks), sh.tx, sh.ty};
}

constexpr size_t align16(size_t b) { return (b + 15) & ~size_t(15); }

// ---- persistent (single-pass) geometry ---------------------------------------------
// Each thread of a persistent kernel keeps its slice of every tensor it
// reads on chip, as vectors of N: K = values / N of them in registers, as
// fp32 (32 values of x forward, 16 each of x and dy backward: the same 32
// data values a thread), then `staged` more of raw activations in dynamic
// shared memory (the launcher picks how many: persist_fit). A unit is the
// slice whose partial state is written once; with V = K + staged vectors a
// thread:
//  - ChannelMajor: a warp, on one channel: vectors u * 32 V + lane + 32 k
//    (k < V) of the channel's m / N vectors; `splits` units per channel,
//    unit = channel * splits + split, eight units (warps) a block.
//  - ChannelMinor: a block of minor_shape(c, N), tx vector-columns by ty
//    rows, each thread V rows (r = split * ty * V + ty_index + ty * k);
//    `splits` row blocks per column block, block = column_block * splits +
//    split.
// Vector k < K of a thread lives in registers, vector K + s in shared
// memory at stage[s * kPersistThreads + thread] (a warp touches 32
// consecutive vectors: no bank conflicts). A tensor too large for that
// leaves `streamed` more vectors a thread, past the stage, in memory: read
// before the barrier and again after it (V = K + staged + streamed).
// Beyond kPersistMaxVectors a thread the multi-pass kernels run: a unit's
// count stays an exact float (32 * V * N <= 2^24 values).
constexpr int kPersistMaxVectors = 1 << 14;
constexpr int kPersistThreads = 256;
constexpr int kPersistForwardValues = 32;
constexpr int kPersistBackwardValues = 16;

struct PersistGeometry {
  int64_t splits;  // units per channel (ChannelMajor) or per column block (ChannelMinor)
  int64_t grid;    // blocks (int64: compared with the resident capacity before any launch)
  int vectors;     // V = K + staged + streamed
  unsigned block_x, block_y;
};

// `past` = the vectors a thread holds past its registers: staged + streamed.
inline PersistGeometry persist_geometry(const Tensor& t, int n, int values, int past = 0) {
  PersistGeometry g{};
  g.vectors = values / n + past;
  const int64_t m = t.m();
  if (t.order == Order::ChannelMajor) {
    const int64_t per_unit = int64_t(32) * g.vectors;
    g.splits = (m / n + per_unit - 1) / per_unit;
    const int64_t units = t.c * g.splits;
    const int64_t warps = kPersistThreads / 32;
    g.grid = (units + warps - 1) / warps;
    g.block_x = kPersistThreads;
    g.block_y = 1;
  } else {
    const MinorShape sh = minor_shape(t.c, n);
    const int64_t rows = int64_t(sh.ty) * g.vectors;
    g.splits = (m + rows - 1) / rows;
    g.grid = sh.col_blocks * g.splits;
    g.block_x = sh.tx;
    g.block_y = sh.ty;
  }
  return g;
}

inline int dtype_bytes(DType d) { return d == DType::F32 ? 4 : 2; }

// Dynamic shared memory of a block besides the stage: the ChannelMinor
// kernels' column merge (one state a thread and vector lane: Welford, 12
// bytes, forward; Sum2, 8, backward), reused after the barrier for the
// per-channel coefficients (32 N of them, smaller). ChannelMajor merges
// with shuffles: none.
constexpr size_t persist_scratch_bytes(bool major, int n, bool backward) {
  return major ? 0 : align16(size_t(kPersistThreads) * n * (backward ? 8 : 12));
}

// Bytes of shared memory one staged vector a thread takes in a block (both
// x and dy backward).
inline size_t persist_stage_bytes(DType d, int n, bool backward) {
  return size_t(kPersistThreads) * n * dtype_bytes(d) * (backward ? 2 : 1);
}

struct PersistFit {
  PersistGeometry g;
  int staged;     // vectors a thread (per tensor) in shared memory
  int streamed;   // vectors a thread (per tensor) read from memory twice
  size_t shared;  // dynamic shared memory a block: scratch, then the stage
  bool fits;      // the grid is resident at once (else: the multi-pass kernels)
};

// Where the grid fits on chip, and how. Registers alone first (the
// register-only kernel, built for the most resident blocks). Else the
// fewest staged vectors with which the whole grid of the staging kernel is
// resident at once: for b blocks an SM (from what its registers allow down
// to one), the stage may take min(shared_per_sm / b - reserved,
// shared_per_block) - scratch bytes a block; the grid shrinks as the stage
// grows, so the first b whose largest stage fits gives the smallest stage,
// found by bisection. Fewest staged vectors means the most blocks, hence
// the most loads in flight while the slice comes in.
// When even the largest stage leaves the grid too large, and lim.stream
// allows it: the hybrid. The b that holds the most values an SM (b * (K +
// largest stage), the larger b on a tie: more warps to stream with) takes
// its largest stage, and each thread the fewest streamed vectors with
// which the grid is resident (bisection again), at most K + staged of them
// for PersistStream::Half.
inline PersistFit persist_fit(const Tensor& t, int n, bool backward, const PersistLimits& lim) {
  const bool major = t.order == Order::ChannelMajor;
  const int values = backward ? kPersistBackwardValues : kPersistForwardValues;
  const int64_t scratch = int64_t(persist_scratch_bytes(major, n, backward));
  const int64_t per_vector = int64_t(persist_stage_bytes(t.dtype, n, backward));
  PersistFit f{persist_geometry(t, n, values), 0, 0, size_t(scratch), false};
  if (f.g.grid <= int64_t(lim.blocks) * lim.sm_count) {
    f.fits = lim.blocks > 0;
    if (f.fits) return f;
  }
  // The largest stage a block of b an SM may take (0: none).
  auto largest_stage = [&](int b) -> int64_t {
    int64_t room = lim.shared_per_sm / b - lim.shared_reserved;
    if (room > lim.shared_per_block) room = lim.shared_per_block;
    const int64_t most = (room - scratch) / per_vector;
    return most < 1 ? 0 : most > kPersistMaxVectors ? kPersistMaxVectors : most;
  };
  // The fewest s in [1, most] with which `base + s` vectors a thread past
  // the registers make the grid resident, given that `most` does: the grid
  // shrinks as s grows, so bisection finds it.
  auto fewest = [&](int base, int most, int64_t capacity) {
    int lo = 1, hi = most;
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (persist_geometry(t, n, values, base + mid).grid <= capacity)
        hi = mid;
      else
        lo = mid + 1;
    }
    return lo;
  };
  for (int b = lim.blocks_staged; b >= 1; --b) {
    const int64_t most = largest_stage(b);
    if (most < 1) continue;
    const int64_t capacity = int64_t(b) * lim.sm_count;
    if (persist_geometry(t, n, values, int(most)).grid > capacity) continue;
    const int lo = fewest(0, int(most), capacity);
    f.g = persist_geometry(t, n, values, lo);
    f.staged = lo;
    f.shared = size_t(scratch + lo * per_vector);
    f.fits = true;
    return f;
  }
  if (lim.stream == PersistStream::None) return f;
  int best_b = 0;
  int64_t best_values = 0;
  for (int b = lim.blocks_staged; b >= 1; --b) {
    const int64_t most = largest_stage(b);
    const int64_t held = most < 1 ? 0 : int64_t(b) * (values / n + most);
    if (held > best_values) {
      best_values = held;
      best_b = b;
    }
  }
  if (best_b == 0) return f;
  const int staged = int(largest_stage(best_b));
  const int on_chip = values / n + staged;
  const int limit = kPersistMaxVectors - on_chip;
  const int most = lim.stream == PersistStream::Half && on_chip < limit ? on_chip : limit;
  const int64_t capacity = int64_t(best_b) * lim.sm_count;
  if (most < 1 || persist_geometry(t, n, values, staged + most).grid > capacity) return f;
  const int lo = fewest(staged, most, capacity);
  f.g = persist_geometry(t, n, values, staged + lo);
  f.staged = staged;
  f.streamed = lo;
  f.shared = size_t(scratch + int64_t(staged) * per_vector);
  f.fits = true;
  return f;
}

// ---- workspace layout -----------------------------------------------------------
// Every sub-array starts 16-byte aligned; sizes are in bytes (align16 above).

// Forward training: per-(split, channel) Welford partials, then four
// per-channel arrays the finalize writes for the normalize pass (pivot,
// scale, shift) and for a backward that recomputes statistics (rstd).
struct ForwardWorkspace {
  size_t partials, pivot, scale, shift, mean, rstd, total;
  ForwardWorkspace(int64_t c, int64_t splits) {
    partials = 0;
    pivot = align16(partials + size_t(splits) * size_t(c) * 3 * sizeof(float));
    scale = align16(pivot + size_t(c) * sizeof(float));
    shift = align16(scale + size_t(c) * sizeof(float));
    mean = align16(shift + size_t(c) * sizeof(float));
    rstd = align16(mean + size_t(c) * sizeof(float));
    total = align16(rstd + size_t(c) * sizeof(float));
  }
};

// Backward: per-(split, channel) gradient sums, then the per-channel
// coefficients of dx; a backward that must recompute the batch statistics
// first uses a ForwardWorkspace placed after these.
struct BackwardWorkspace {
  size_t partials, coeffs, forward, total;
  BackwardWorkspace(int64_t c, int64_t splits, bool recompute_stats) {
    partials = 0;
    coeffs = align16(partials + size_t(splits) * size_t(c) * 2 * sizeof(float));
    forward = align16(coeffs + size_t(c) * 4 * sizeof(float));
    total = forward + (recompute_stats ? ForwardWorkspace(c, splits).total : 0);
  }
};

// Persistent kernels: the per-(split, channel) partial states only, of
// `state` bytes each (Welford forward, Sum2 backward).
inline size_t persist_workspace(int64_t c, int64_t splits, size_t state) {
  return align16(size_t(splits) * size_t(c) * state);
}

// The fused epilogue's arguments (epilogue.cuh): z, dz and the mask are
// tensors / bitmaps of the same element order as x.
struct EpilogueArgs {
  int kind;              // 0 none, 1 ReLU, 2 add + ReLU (Epilogue)
  const void* residual;  // z: forward ADD_RELU
  void* residual_grad;   // dz: backward ADD_RELU
  uint32_t* mask;        // forward: written (zeroed by the launcher); backward: read
  size_t mask_bytes;     // 4 * ceil(numel / 32)
};
inline size_t relu_mask_bytes(int64_t numel) { return size_t((numel + 31) / 32) * 4; }

// ---- forward training ----------------------------------------------------------------
struct ForwardTrainingArgs {
  Tensor t;
  ReducePlan plan;
  EpilogueArgs ep;
  const void* x;
  void* y;  // NULL: statistics only (backward's recomputation)
  const float* gamma;
  const float* beta;
  float* running_mean;  // NULL: not tracked
  float* running_var;
  int64_t* step_count;  // non-NULL only in cumulative mode with tracking
  float* saved_mean;    // NULL: not saved
  float* saved_rstd;
  double eps;
  double factor;  // exponential mode only
  void* workspace;
};
cudaError_t forward_training(const ForwardTrainingArgs& a, cudaStream_t stream);
cudaError_t tiny_forward_training(const ForwardTrainingArgs& a, cudaStream_t stream);
// One cooperative launch (persistent.cu); the multi-pass kernels when the
// grid does not fit (persist_fit).
cudaError_t persistent_forward_training(const ForwardTrainingArgs& a, cudaStream_t stream);

// ---- forward inference ---------------------------------------------------------------
struct InferenceArgs {
  Tensor t;
  ReducePlan plan;
  EpilogueArgs ep;  // mask optional
  const void* x;
  void* y;
  const float* gamma;
  const float* beta;
  const float* running_mean;
  const float* running_var;
  double eps;
};
cudaError_t forward_inference(const InferenceArgs& a, cudaStream_t stream);

struct ScaleShiftArgs {
  int64_t c;
  const float* gamma;
  const float* beta;
  const float* running_mean;
  const float* running_var;
  double eps;
  float* scale;
  float* shift;
};
cudaError_t inference_scale_shift(const ScaleShiftArgs& a, cudaStream_t stream);

struct FoldArgs {
  int64_t out_features, in_features;
  const float* gamma;
  const float* beta;
  const float* running_mean;
  const float* running_var;
  double eps;
  float* weight;
  const float* bias_in;
  float* bias_out;
};
cudaError_t fold_into_linear(const FoldArgs& a, cudaStream_t stream);

// ---- backward --------------------------------------------------------------------------
struct BackwardArgs {
  Tensor t;
  ReducePlan plan;
  EpilogueArgs ep;
  const void* x;
  const void* dy;
  void* dx;
  const float* gamma;
  // Full backward: the batch statistics (mean, rstd); NULL: recompute from x.
  // Frozen backward: the running statistics (mean, var), always set.
  const float* mean;
  const float* stat;
  float* dgamma;  // NULL with dbeta: not returned
  float* dbeta;
  double eps;
  bool frozen;
  void* workspace;
};
cudaError_t backward(const BackwardArgs& a, cudaStream_t stream);
cudaError_t tiny_backward(const BackwardArgs& a, cudaStream_t stream);
// The full backward with saved statistics in one cooperative launch
// (persistent.cu); the multi-pass kernels for anything else, or when the
// grid does not fit (persist_fit).
cudaError_t persistent_backward(const BackwardArgs& a, cudaStream_t stream);

// ---- occupancy of the persistent kernels ---------------------------------------------
// Resident blocks per SM of each dtype's persistent kernels by registers,
// threads and the merge scratch (the fewest over their vector widths and
// layouts; persist_fit adds the stage), from
// cudaOccupancyMaxActiveBlocksPerMultiprocessor; 0 where a query fails.
// [direction: 0 forward, 1 backward][0 register-only, 1 staging][DType].
// It also lets every staging kernel take up to `shared_optin` bytes of
// dynamic shared memory and prefer the largest shared-memory carveout, so
// that any stage persist_fit plans launches.
struct PersistOccupancy {
  int blocks[2][2][3];
};
PersistOccupancy persistent_occupancy(int shared_optin);

// ---- synchronized batch norm (sync.cu) ---------------------------------------------
// One rank's packed forward statistics, the unit of the all-gather: the
// rank's count m = n * spatial (int64), 8 bytes of zeros, then per channel
// fp32 arrays: the pivot (the channel's first value on that rank; 0 when
// the rank has no values), the mean of x - pivot, and M2. Zero-padded to 16.
struct SyncStatsLayout {
  size_t pivot, mean, m2, total;
  explicit SyncStatsLayout(int64_t c) {
    pivot = 16;
    mean = pivot + size_t(c) * sizeof(float);
    m2 = mean + size_t(c) * sizeof(float);
    total = align16(m2 + size_t(c) * sizeof(float));
  }
};
// The packed backward sums, fp64, the unit of the all-reduce: [0] the
// rank's count m, [1] zero, [2, 2 + c) sum g, [2 + c, 2 + 2c) sum g * (x -
// mean), zero-padded to 16 bytes. Summed element-wise over the ranks, it
// holds the global count and sums.
inline size_t sync_grads_bytes(int64_t c) { return align16(size_t(2 + 2 * c) * sizeof(double)); }

struct SyncStatsArgs {
  Tensor t;
  ReducePlan plan;
  const void* x;
  void* local_stats;  // SyncStatsLayout
  void* workspace;    // ForwardWorkspace
};
cudaError_t sync_forward_stats(const SyncStatsArgs& a, cudaStream_t stream);

// Merges the gathered statistics of `nranks` ranks, then the rest of
// forward training on this rank's tensor (f.t, whose n may be 0).
struct SyncApplyArgs {
  ForwardTrainingArgs f;
  const void* gathered;  // nranks blocks of SyncStatsLayout(c).total bytes, rank order
  int nranks, rank;
};
cudaError_t sync_forward_apply(const SyncApplyArgs& a, cudaStream_t stream);

struct SyncGradsArgs {
  Tensor t;
  ReducePlan plan;
  EpilogueArgs ep;  // the mask, if any, applies to dy
  const void* x;
  const void* dy;
  const float* mean;  // the global batch mean
  void* local_grads;  // sync_grads_bytes(c)
  void* workspace;    // BackwardWorkspace
};
cudaError_t sync_backward_grads(const SyncGradsArgs& a, cudaStream_t stream);

// dgamma, dbeta and dx from the reduced sums (b.mean, b.stat: the saved
// mean and rstd; b.frozen false).
struct SyncGradApplyArgs {
  BackwardArgs b;
  const void* reduced;  // sync_grads_bytes(c), summed over the ranks
};
cudaError_t sync_backward_apply(const SyncGradApplyArgs& a, cudaStream_t stream);

}  // namespace kernels
}  // namespace bnorm

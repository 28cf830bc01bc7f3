// Backward: dx, dgamma, dbeta, through the batch statistics or frozen ones.
//
// With g = dy, xhat = (x - mean) * rstd and m values per channel:
//   dbeta  = sum g
//   dgamma = sum g * xhat = rstd * sum g * (x - mean)
//   dx     = gamma * rstd * (g - dbeta / m - xhat * dgamma / m)        (full)
//   dx     = gamma * rstd * g                                          (frozen)
// The full form is the gradient through mean and variance: differentiate
// y = gamma * xhat + beta with mean and rstd as functions of x; the two
// subtracted terms are the paths through the mean and through the variance.
// Frozen (eval-mode) statistics are constants, so only the direct path stays;
// its mean and rstd come from the running statistics.
//
// Three launches, deterministic as the forward is (no atomics, fixed order):
//   1. partial sums (sum g, sum g * (x - mean)) per split and channel,
//      accumulated over register tiles and merged in a fixed tree;
//   2. finalize: a warp per channel adds the splits (a fixed tree), writes dgamma and
//      dbeta, and the coefficients of dx: a = gamma * rstd, mdy = dbeta / m,
//      k = rstd * dgamma / m, so that dx = a * ((g - mdy) - (x - mean) * k);
//   3. dx, elementwise (dx may alias dy or x: each value is read and then
//      written by the same thread).
// The frozen dx needs no reduction, so without dgamma/dbeta it is one launch.
// With a ReLU epilogue every pass reads g = dy masked by the forward's bits
// (epilogue.cuh), and the dx pass also writes dz = g for ADD_RELU.
// A full backward whose caller kept no saved statistics first recomputes
// them with the forward-statistics kernels (forward.cu).
#include "dtype.cuh"
#include "epilogue.cuh"
#include "frozen.cuh"
#include "launch.h"
#include "geometry.cuh"
#include "layout.cuh"
#include "reduce.cuh"
#include "finalize.cuh"
#include "backward_ops.cuh"

namespace bnorm {
namespace kernels {

namespace {

constexpr int kFinalizeThreads = 256;

// dx = gamma * rstd * g with frozen statistics: no x, no reduction.
template <class T, int N>
struct DxFrozenOp {
  struct Coef {
    float a;
  };
  struct In {
    MaskedGrad<T, N> g;
  };
  const T* dy;
  T* dx;
  const float* __restrict__ gamma;
  const float* __restrict__ running_var;
  double eps;
  const uint32_t* __restrict__ mask;
  T* dz;

  __device__ Coef coef(int64_t ch) const {
    return {float(frozen_scale(gamma, running_var, ch, eps))};
  }
  __device__ void load(int64_t offset, In& in) const { in.g.load(dy, mask, offset); }
  __device__ float compute(const Coef& c, const In& in, int i) const { return c.a * in.g[i]; }
  __device__ void store(int64_t offset, const In& in, const float (&out)[N]) const {
    store_vec<T, N>(dx + offset, out);
    if (dz) store_grad<T, N>(dz + offset, in.g);
  }
};

// One warp per channel: lanes add every 32nd split, then the warp adds its
// lanes (fixed tree); lane 0 finishes the channel.
__global__ void __launch_bounds__(kFinalizeThreads) finalize_grads(GradParams p) {
  const unsigned lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int64_t ch = int64_t(blockIdx.x) * warps + threadIdx.x / 32; ch < p.c;
       ch += int64_t(gridDim.x) * warps) {
    const Sum2 s = warp_merge_splits(p.partials, p.splits, p.c, ch);
    if (lane == 0) p.coeffs[ch] = finish_grads(s, ch, p);
  }
}

}  // namespace

cudaError_t backward(const BackwardArgs& a, cudaStream_t stream) {
  return dispatch_dtype(a.t.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const Tensor& t = a.t;
    const bool recompute = !a.frozen && !a.mean;
    const BackwardWorkspace ws(t.c, a.plan.splits, recompute);
    char* w = static_cast<char*>(a.workspace);
    const T* x = static_cast<const T*>(a.x);
    const T* dy = static_cast<const T*>(a.dy);
    T* dx = static_cast<T*>(a.dx);
    T* dz = static_cast<T*>(a.ep.residual_grad);
    const bool major = t.order == Order::ChannelMajor;
    const int width = vector_width<T>(major ? t.spatial : t.c, {a.x, a.dy, a.dx, dz});
    cudaError_t e;

    const float* mean = a.mean;
    const float* stat = a.stat;
    if (recompute) {
      ForwardTrainingArgs f{};
      f.t = t;
      f.plan = a.plan;
      f.x = a.x;
      f.eps = a.eps;
      f.workspace = w + ws.forward;
      e = forward_training(f, stream);
      if (e != cudaSuccess) return e;
      const ForwardWorkspace fws(t.c, a.plan.splits);
      mean = reinterpret_cast<const float*>(w + ws.forward + fws.mean);
      stat = reinterpret_cast<const float*>(w + ws.forward + fws.rstd);
    }

    Coeffs* coeffs = reinterpret_cast<Coeffs*>(w + ws.coeffs);
    if (!a.frozen || a.dgamma) {
      Sum2* partials = reinterpret_cast<Sum2*>(w + ws.partials);
      e = dispatch_width<T>(width, [&](auto n) -> cudaError_t {
        constexpr int N = decltype(n)::value;
        launch_reduce<N>(GradAcc<T, N>{x, dy, mean, a.ep.mask}, t, a.plan, partials, stream);
        return cudaGetLastError();
      });
      if (e != cudaSuccess) return e;

      GradParams p;
      p.c = t.c;
      set_counts(p, t.m());
      p.splits = a.plan.splits;
      p.partials = partials;
      p.gamma = a.gamma;
      p.mean = mean;
      p.stat = stat;
      p.eps = a.eps;
      p.frozen = a.frozen;
      p.dgamma = a.dgamma;
      p.dbeta = a.dbeta;
      p.coeffs = coeffs;
      const int64_t fblocks = (t.c + kFinalizeThreads / 32 - 1) / (kFinalizeThreads / 32);
      BNORM_LAUNCH(finalize_grads, unsigned(fblocks < 4096 ? fblocks : 4096), kFinalizeThreads,
                   0, stream, p);
      if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    if (!a.frozen) return dx_full_pass<T>(a, width, coeffs, stream);
    return dispatch_width<T>(width, [&](auto n) -> cudaError_t {
      constexpr int N = decltype(n)::value;
      launch_apply<N>(DxFrozenOp<T, N>{dy, dx, a.gamma, a.stat, a.eps, a.ep.mask, dz}, t,
                      a.plan, stream);
      return cudaGetLastError();
    });
  });
}

}  // namespace kernels
}  // namespace bnorm

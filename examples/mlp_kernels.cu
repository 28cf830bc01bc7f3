// The training demo's own kernels; see mlp_kernels.h. Written to the
// project's kernel rules (emu/emu_device.h): launches through BNORM_LAUNCH,
// shared memory through BNORM_DYNAMIC_SHARED, no warp lockstep, and sums in a
// fixed order so that every result is deterministic (a captured step
// replays bitwise like an eager one).
#include "mlp_kernels.h"

#include "kernels/portable.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 16;  // the demo's tensors are small; grid-stride beyond

unsigned blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  if (b < 1) b = 1;
  return unsigned(b < kMaxBlocks ? b : kMaxBlocks);
}

__global__ void gather_kernel(const float* data_x, const int* data_y, const int* perm,
                              const int64_t* step, int batches, int batch, int d, float* x,
                              int* y) {
  const int64_t first = (*step % batches) * int64_t(batch);
  const int64_t n = int64_t(batch) * d;
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t row = i / d, col = i % d;
    const int64_t src = perm[first + row];
    x[i] = data_x[src * d + col];
    if (col == 0) y[row] = data_y[src];
  }
}

__global__ void bias_act_kernel(const float* in, const float* bias, float* out, int rows,
                                int cols, int relu) {
  const int64_t n = int64_t(rows) * cols;
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float v = in[i] + (bias ? bias[i % cols] : 0.0f);
    if (relu) v = v > 0.0f ? v : 0.0f;
    out[i] = v;
  }
}

__global__ void relu_backward_kernel(const float* dy, const float* y, float* dx, int64_t n) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// One block: thread t takes rows t, t + blockDim.x, ...; per-thread sums go
// to shared memory and thread 0 adds them in thread order.
__global__ void softmax_xent_kernel(const float* logits, const int* labels, int rows, int k,
                                    float* dlogits, float* metrics, const int64_t* step) {
  BNORM_DYNAMIC_SHARED(smem);
  double* loss_part = reinterpret_cast<double*>(smem);
  double* hit_part = loss_part + blockDim.x;
  const int t = threadIdx.x;
  double loss = 0.0, hits = 0.0;
  for (int r = t; r < rows; r += blockDim.x) {
    const float* z = logits + int64_t(r) * k;
    const int label = labels[r];
    float zmax = z[0];
    int arg = 0;
    for (int j = 1; j < k; ++j)
      if (z[j] > zmax) {
        zmax = z[j];
        arg = j;
      }
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += expf(z[j] - zmax);
    const float log_sum = logf(sum);
    loss += double(log_sum - (z[label] - zmax));
    hits += arg == label ? 1.0 : 0.0;
    if (dlogits) {
      float* g = dlogits + int64_t(r) * k;
      const float inv_sum = 1.0f / sum;
      for (int j = 0; j < k; ++j)
        g[j] = (expf(z[j] - zmax) * inv_sum - (j == label ? 1.0f : 0.0f)) / float(rows);
    }
  }
  loss_part[t] = loss;
  hit_part[t] = hits;
  __syncthreads();
  if (t == 0) {
    double l = 0.0, h = 0.0;
    for (unsigned i = 0; i < blockDim.x; ++i) {
      l += loss_part[i];
      h += hit_part[i];
    }
    const int64_t s = step ? *step : 0;
    metrics[2 * s] = float(l / rows);
    metrics[2 * s + 1] = float(h / rows);
  }
}

__global__ void column_sums_kernel(const float* g, int rows, int cols, float* out) {
  const int stride = int(blockDim.x * gridDim.x);
  for (int c = int(blockIdx.x * blockDim.x + threadIdx.x); c < cols; c += stride) {
    float s = 0.0f;
    for (int r = 0; r < rows; ++r) s += g[int64_t(r) * cols + c];
    out[c] = s;
  }
}

__global__ void sgd_kernel(float* params, float* velocity, const float* grads, int64_t n,
                           const float* lr_p, float momentum, int64_t* step) {
  const float lr = *lr_p;
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = momentum * velocity[i] + grads[i];
    velocity[i] = v;
    params[i] -= lr * v;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) *step += 1;  // nothing else reads it here
}

__global__ void advance_kernel(int64_t* step) { *step += 1; }

}  // namespace

extern "C" {

cudaError_t mlp_gather(const float* data_x, const int* data_y, const int* perm,
                       const int64_t* step, int batches, int batch, int d, float* x, int* y,
                       cudaStream_t stream) {
  BNORM_LAUNCH(gather_kernel, blocks_for(int64_t(batch) * d), kThreads, 0, stream, data_x, data_y,
               perm, step, batches, batch, d, x, y);
  return cudaGetLastError();
}

cudaError_t mlp_bias_act(const float* in, const float* bias, float* out, int rows, int cols,
                         int relu, cudaStream_t stream) {
  BNORM_LAUNCH(bias_act_kernel, blocks_for(int64_t(rows) * cols), kThreads, 0, stream, in, bias,
               out, rows, cols, relu);
  return cudaGetLastError();
}

cudaError_t mlp_relu_backward(const float* dy, const float* y, float* dx, int64_t n,
                              cudaStream_t stream) {
  BNORM_LAUNCH(relu_backward_kernel, blocks_for(n), kThreads, 0, stream, dy, y, dx, n);
  return cudaGetLastError();
}

cudaError_t mlp_softmax_xent(const float* logits, const int* labels, int rows, int k,
                             float* dlogits, float* metrics, const int64_t* step,
                             cudaStream_t stream) {
  BNORM_LAUNCH(softmax_xent_kernel, 1, kThreads, 2 * kThreads * sizeof(double), stream, logits,
               labels, rows, k, dlogits, metrics, step);
  return cudaGetLastError();
}

cudaError_t mlp_column_sums(const float* g, int rows, int cols, float* out, cudaStream_t stream) {
  const unsigned threads = cols < 128 ? 64 : 128;
  const unsigned blocks = unsigned((cols + int(threads) - 1) / int(threads));
  BNORM_LAUNCH(column_sums_kernel, blocks, threads, 0, stream, g, rows, cols, out);
  return cudaGetLastError();
}

cudaError_t mlp_sgd(float* params, float* velocity, const float* grads, int64_t n,
                    const float* lr, float momentum, int64_t* step, cudaStream_t stream) {
  BNORM_LAUNCH(sgd_kernel, blocks_for(n), kThreads, 0, stream, params, velocity, grads, n, lr,
               momentum, step);
  return cudaGetLastError();
}

cudaError_t mlp_advance_step(int64_t* step, cudaStream_t stream) {
  BNORM_LAUNCH(advance_kernel, 1, 1, 0, stream, step);
  return cudaGetLastError();
}

}  // extern "C"

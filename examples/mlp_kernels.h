/*
 * The small CUDA kernels of the training demo (examples/train_mlp.c): what
 * an MLP needs besides matrix products (cuBLAS) and batch norm (bnorm).
 *
 * One source, examples/mlp_kernels.cu, built as the library's kernels are:
 * by nvcc for the GPU, and as C++ under the CPU emulator for the emulated
 * build. Every launcher enqueues on `stream` and returns the launch's error.
 *
 * Matrices are row-major (rows x cols): a batch of `rows` samples with
 * `cols` features, which is also cuBLAS's column-major (cols x rows) and
 * bnorm's (n = rows, c = cols, spatial = 1) tensor. Everything a step
 * needs to know that changes from step to step (which batch, where its
 * metrics go) is read from device memory, so a captured step replays.
 */
#ifndef BNORM_EXAMPLES_MLP_KERNELS_H_
#define BNORM_EXAMPLES_MLP_KERNELS_H_

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The batch of step *step: rows perm[b*batch .. b*batch + batch-1] of the
 * data set (x: d features per row, y: labels), b = *step % batches. */
cudaError_t mlp_gather(const float* data_x, const int* data_y, const int* perm,
                       const int64_t* step, int batches, int batch, int d, float* x, int* y,
                       cudaStream_t stream);

/* out = in + bias (per column; bias may be NULL), then max(0, .) if relu.
 * out may be in. */
cudaError_t mlp_bias_act(const float* in, const float* bias, float* out, int rows, int cols,
                         int relu, cudaStream_t stream);

/* dx = y > 0 ? dy : 0 (the ReLU's backward from its output y). dx may be dy. */
cudaError_t mlp_relu_backward(const float* dy, const float* y, float* dx, int64_t n,
                              cudaStream_t stream);

/* Softmax cross-entropy of `rows` rows of k logits against labels:
 *   dlogits = (softmax - onehot) / rows        (skipped when dlogits is NULL)
 *   metrics[2*s] = mean loss, metrics[2*s+1] = accuracy (argmax == label),
 * s = *step, or s = 0 when step is NULL. Sums in a fixed order. */
cudaError_t mlp_softmax_xent(const float* logits, const int* labels, int rows, int k,
                             float* dlogits, float* metrics, const int64_t* step,
                             cudaStream_t stream);

/* out[c] = sum over rows of g[r][c], in row order (bias gradients). */
cudaError_t mlp_column_sums(const float* g, int rows, int cols, float* out, cudaStream_t stream);

/* SGD with momentum over n parameters: v = momentum v + g; p -= (*lr) v
 * (the learning rate is read from device memory, so a schedule needs no
 * new graph). Then *step += 1 (the step is done). */
cudaError_t mlp_sgd(float* params, float* velocity, const float* grads, int64_t n,
                    const float* lr, float momentum, int64_t* step, cudaStream_t stream);

/* *step += 1, for passes that update no parameters. */
cudaError_t mlp_advance_step(int64_t* step, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif

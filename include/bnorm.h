/*
 * bnorm: fused CUDA kernels for batch normalization.
 *
 * The one public header. Usable from C99 and C++.
 *
 * ---------------------------------------------------------------------------
 * The math (every call meets it; see DESIGN.md for the derivation)
 *
 *   Per channel c, over the m = n * spatial values of the mini-batch:
 *     mean  = (1/m) sum x                 var = (1/m) sum (x - mean)^2
 *     rstd  = 1 / sqrt(var + eps)         xhat = (x - mean) * rstd
 *     y     = gamma * xhat + beta
 *   Running statistics (training), with factor f:
 *     running_mean = (1 - f) running_mean + f mean
 *     running_var  = (1 - f) running_var  + f var m / (m - 1)     (unbiased)
 *   Backward, with g = dy:
 *     dbeta  = sum g          dgamma = sum g xhat
 *     dx     = gamma rstd (g - dbeta/m - xhat dgamma/m)
 *   Frozen-statistics backward (eval-mode BN; statistics are constants):
 *     dx     = gamma rstd g   with rstd, mean taken from the running statistics
 *
 * ---------------------------------------------------------------------------
 * Conventions shared by every call
 *
 *  - Asynchrony. Every call that takes a stream only enqueues work on it and
 *    returns. No call allocates device memory, synchronizes, or reads device
 *    memory from the host, so every call is legal inside CUDA graph capture.
 *    Host-side argument checks happen before anything is enqueued.
 *  - Failure. A call that returns anything but BNORM_STATUS_SUCCESS enqueued
 *    nothing: outputs, running statistics and the step counter are untouched.
 *    bnormGetLastErrorMessage() then names the offending argument.
 *  - Memory. Every tensor and per-channel pointer is a device pointer (under
 *    the emulated build, memory from its cudaMalloc or any host memory).
 *    Tensors are dense, with no padding, in the layout the descriptor names.
 *    Per-channel arrays (gamma, beta, statistics, gradients) are fp32 arrays
 *    of length c, whatever the activation type.
 *  - Alignment. Tensors must be aligned to their element size, per-channel
 *    arrays to 4 bytes, the step counter to 8 bytes and the workspace to 16
 *    bytes; otherwise the call returns BNORM_STATUS_MISALIGNED. (Alignment
 *    beyond that only selects faster kernels; it is never required.)
 *  - Empty tensors. A tensor pointer may be NULL when its tensor has no
 *    elements (n == 0).
 *  - Determinism. The same inputs on the same device, handle configuration
 *    and shape give bitwise identical outputs, run after run: partial results
 *    are merged in a fixed order and no call uses floating-point atomics.
 *  - Special values (as PyTorch, whose statistics are fp32 too):
 *      eps = 0 on a constant channel (var = 0): rstd = +inf and every y of
 *        that channel is NaN (0 * inf); its saved mean and running
 *        statistics stay finite.
 *      A NaN or an infinity among a channel's x: that channel's mean is not
 *        finite, its variance, rstd and every y are NaN, and its running
 *        statistics become non-finite. A NaN or infinity in dy makes that
 *        channel's dbeta, dgamma and dx non-finite. Inference is elementwise:
 *        a non-finite x touches only its own y.
 *      A channel whose variance exceeds fp32's range (a spread beyond about
 *        1.8e19): var = +inf, rstd = 0 and y = beta.
 *      In every case the other channels are unaffected, bit for bit.
 *  - Threads. A handle may be used from one host thread at a time; different
 *    handles may be used concurrently. A handle belongs to the device that
 *    was current when it was created; calls must be made with that device
 *    current.
 */
#ifndef BNORM_H_
#define BNORM_H_

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h> /* cudaStream_t */

#define BNORM_VERSION_MAJOR 0
#define BNORM_VERSION_MINOR 2
#define BNORM_VERSION_PATCH 0
/* One integer, comparable: 100 * (100 * major + minor) + patch. */
#define BNORM_VERSION \
  (BNORM_VERSION_MAJOR * 10000 + BNORM_VERSION_MINOR * 100 + BNORM_VERSION_PATCH)

#if defined(_WIN32)
#define BNORM_API __declspec(dllexport)
#elif defined(__GNUC__)
#define BNORM_API __attribute__((visibility("default")))
#else
#define BNORM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status codes, grouped by kind: the hundreds digit says who must act.      */

typedef enum {
  BNORM_STATUS_SUCCESS = 0,

  /* 1xx: the arguments are wrong. Nothing was enqueued or written. */
  BNORM_STATUS_NULL_POINTER = 100,        /* a required pointer is NULL */
  BNORM_STATUS_INVALID_VALUE = 101,       /* unknown enum, bad eps/factor, bad config */
  BNORM_STATUS_BAD_SHAPE = 102,           /* a dimension is out of range or overflows */
  BNORM_STATUS_MISALIGNED = 103,          /* a pointer breaks the alignment rules */
  BNORM_STATUS_WORKSPACE_TOO_SMALL = 104, /* workspace_bytes < the size query's answer */
  BNORM_STATUS_BATCH_TOO_SMALL = 105,     /* m == 1 in training: variance undefined */
  BNORM_STATUS_BAD_ALIASING = 106,        /* tensors overlap in a way the call forbids */
  BNORM_STATUS_BAD_HANDLE = 107,          /* NULL, or not made by bnormCreate */

  /* 2xx: a valid request this build or device cannot carry out. */
  BNORM_STATUS_NOT_SUPPORTED = 200,

  /* 3xx: the CUDA runtime or the host failed. */
  BNORM_STATUS_CUDA_ERROR = 300,   /* a CUDA call failed; the message has its text */
  BNORM_STATUS_ALLOC_FAILED = 301, /* host memory for a handle could not be had */
  BNORM_STATUS_COMM_ERROR = 302,   /* a collective (NCCL) failed; the message has its text */

  /* 9xx: a bug in bnorm. Please report it with the message. */
  BNORM_STATUS_INTERNAL_ERROR = 900
} bnormStatus_t;

/* A static, never-NULL string for every status ("unknown status" otherwise). */
BNORM_API const char* bnormGetStatusString(bnormStatus_t status);

/* The message of the last bnorm call made on the calling host thread: the
 * empty string if it succeeded, else a sentence naming the call and the
 * offending argument. Valid until the thread's next bnorm call. */
BNORM_API const char* bnormGetLastErrorMessage(void);

/* BNORM_VERSION of the library actually loaded (compare with the macro). */
BNORM_API int bnormGetVersion(void);

/* ------------------------------------------------------------------------ */
/* Tensors                                                                   */

typedef enum {
  BNORM_DATA_FLOAT = 0, /* fp32 */
  BNORM_DATA_HALF = 1,  /* IEEE fp16 (__half) */
  BNORM_DATA_BFLOAT16 = 2
} bnormDataType_t;

typedef enum {
  BNORM_LAYOUT_NCHW = 0, /* channel-first: (n, c, spatial...) */
  BNORM_LAYOUT_NHWC = 1  /* channel-last:  (n, spatial..., c) */
} bnormLayout_t;

/* One activation tensor: n samples, c channels, and `spatial` values per
 * (sample, channel): the product of the spatial extents (d*h*w, h*w, or 1
 * for a plain (n, c) batch). 1-D, 2-D and 3-D batch norm are the same call.
 * Valid: n >= 0, c >= 1, spatial >= 1, n*c*spatial*element_size < 2^63. */
typedef struct {
  bnormDataType_t dtype;
  bnormLayout_t layout;
  int64_t n;
  int64_t c;
  int64_t spatial;
} bnormTensorDesc_t;

/* ------------------------------------------------------------------------ */
/* Configuration: one versioned struct for every call (NCCL-style growth:
 * new fields are appended; the library reads only what `size` covers).
 * Initialize with BNORM_CONFIG_INITIALIZER, then change fields.
 * Passing NULL for a config means the initializer's defaults.               */

typedef enum {
  /* running = (1 - f) running + f batch, f = exponential_average_factor */
  BNORM_AVERAGE_EXPONENTIAL = 0,
  /* f = 1 / (1 + t), t a step counter in device memory that the call then
   * increments: after k calls the running statistics are the plain mean of
   * the k batch statistics (PyTorch's momentum=None). */
  BNORM_AVERAGE_CUMULATIVE = 1
} bnormAverage_t;

typedef enum {
  /* bnorm picks per shape and device (recommended). */
  BNORM_PATH_AUTO = 0,
  /* Statistics pass, finalize, elementwise pass: several launches, any size. */
  BNORM_PATH_MULTI_PASS = 1,
  /* One launch, one block, a warp per channel: the fastest for tiny
   * tensors (launch latency dominates), slow for large ones. Channels of
   * 2^32 values or more run the multi-pass kernels instead. */
  BNORM_PATH_SINGLE_BLOCK = 2,
  /* One cooperative launch that keeps x (and dy) on chip between the
   * statistics and the normalize (or dx), so each value is read from memory
   * once: for tensors that fit in the registers and shared memory of the
   * grid the device holds resident at once (on an H100 about 14.6 M values
   * fp16 forward, 8.9 M fp32, 7.6 M fp16 backward). A larger tensor keeps
   * that much on chip and reads the rest twice, in the same one launch
   * (AUTO does so only while at least half of it stays on chip).
   * When the grid cannot be resident at any split (with NCHW, more channels
   * than the device holds resident warps; past 2^14 vectors a thread), or
   * the device cannot launch cooperatively, the call runs the multi-pass
   * kernels instead. Forward training and the backward with saved
   * statistics; the backward without them and the frozen backward run the
   * multi-pass kernels. Added in 0.2. */
  BNORM_PATH_PERSISTENT = 3
} bnormPath_t;

/* A fused epilogue after the normalization (forward) and its gradient
 * (backward). The ReLU's decisions are saved by forward training as a mask of
 * 1 bit per element: bit (i % 32) of 32-bit word i / 32 is set when element
 * i (in memory order) of the pre-activation was > 0. */
typedef enum {
  BNORM_EPILOGUE_NONE = 0,
  BNORM_EPILOGUE_RELU = 1,     /* y = max(bn(x), 0) */
  BNORM_EPILOGUE_ADD_RELU = 2  /* y = max(bn(x) + z, 0), z = config->residual */
} bnormEpilogue_t;

typedef struct {
  size_t size;           /* sizeof(bnormConfig_t) as the caller compiled it */
  unsigned int magic;    /* BNORM_CONFIG_MAGIC */
  unsigned int version;  /* BNORM_VERSION the caller compiled against */
  double eps;            /* >= 0 and finite; used exactly as given. Default 1e-5 */
  double exponential_average_factor; /* in [0, 1]. Default 0.1 */
  bnormAverage_t average;            /* Default BNORM_AVERAGE_EXPONENTIAL */
  /* Kernel path of the training and backward calls. Every path computes the
   * same function to rounding; a given path is bitwise deterministic. Added
   * in 0.1 (callers whose config is shorter get BNORM_PATH_AUTO). */
  bnormPath_t path;                  /* Default BNORM_PATH_AUTO */

  /* The fused epilogue (added in 0.2). With BNORM_EPILOGUE_NONE (the
   * default) the fields below are ignored. The pointers are device memory,
   * as the call's tensors are.
   *  - forward training: writes the mask (relu_mask, at least
   *    bnormGetReluMaskSize() bytes in relu_mask_bytes, 4-byte aligned;
   *    required) and reads z (residual, for ADD_RELU; same descriptor as x;
   *    required).
   *  - forward inference: reads z for ADD_RELU; writes the mask if
   *    relu_mask is not NULL (it may be, as inference needs none).
   *  - backward and frozen backward: read the mask (required), apply the
   *    ReLU's gradient to dy, and for ADD_RELU write dz = the masked dy to
   *    residual_grad (required), before the batch-norm backward proper.
   * Each call ignores the fields that are not its own, so one config serves
   * a forward and its backward. The mask must live from the training
   * forward to the backward (like cuDNN's reserve space): the backward
   * cannot recover the ReLU's decisions from y. In place: y may be the
   * residual (y == z, the shortcut is dead after the add) and dz may be dy;
   * no other overlap with the call's arguments is allowed. */
  bnormEpilogue_t epilogue;          /* Default BNORM_EPILOGUE_NONE */
  const void* residual;              /* z (ADD_RELU forward) */
  void* residual_grad;               /* dz (ADD_RELU backward) */
  void* relu_mask;                   /* written by training, read by backward */
  size_t relu_mask_bytes;
} bnormConfig_t;

#define BNORM_CONFIG_MAGIC 0xb7a0c0f1u
#define BNORM_CONFIG_INITIALIZER                                           \
  {                                                                        \
    sizeof(bnormConfig_t), BNORM_CONFIG_MAGIC, BNORM_VERSION, 1e-5, 0.1,   \
        BNORM_AVERAGE_EXPONENTIAL, BNORM_PATH_AUTO, BNORM_EPILOGUE_NONE,   \
        NULL, NULL, NULL, 0                                                \
  }

/* ------------------------------------------------------------------------ */
/* Handle                                                                    */

typedef struct bnormContext* bnormHandle_t;

/* Creates a handle for the current CUDA device: caches its properties and
 * launch choices. Allocates host memory only. */
BNORM_API bnormStatus_t bnormCreate(bnormHandle_t* handle);

/* Destroys a handle. NULL is a no-op that succeeds. Work already enqueued
 * with the handle is unaffected (the handle owns no device memory). */
BNORM_API bnormStatus_t bnormDestroy(bnormHandle_t handle);

/* ------------------------------------------------------------------------ */
/* Forward training
 *
 * Computes the batch statistics of x per channel, writes
 * y = gamma * (x - mean) * rstd + beta, and updates the running statistics.
 *
 *   x, y           tensors described by desc. y == x (in place) is allowed;
 *                  any other overlap is BNORM_STATUS_BAD_ALIASING.
 *   gamma, beta    may be NULL: treated as all ones / all zeros.
 *   running_mean,  both NULL (not tracked) or both set; updated in place
 *   running_var    (running_var gets the unbiased variance, m/(m-1)).
 *   step_count     one int64 in device memory; required when
 *                  config->average is BNORM_AVERAGE_CUMULATIVE and running
 *                  statistics are tracked (read, then incremented by one, on
 *                  the device, so a captured graph replays correctly);
 *                  ignored otherwise and may be NULL.
 *   saved_mean,    both NULL or both set: the batch mean and rstd, for
 *   saved_rstd     bnormBackward.
 *   workspace      at least bnormGetForwardTrainingWorkspaceSize() bytes,
 *                  16-byte aligned; may be NULL when that size is 0. Its
 *                  contents need no initialization and are clobbered.
 *
 * m = n * spatial. m == 0: success, nothing is launched or written.
 * m == 1: BNORM_STATUS_BATCH_TOO_SMALL.
 * eps and the factor come from config (NULL: defaults). */
BNORM_API bnormStatus_t bnormGetForwardTrainingWorkspaceSize(bnormHandle_t handle,
                                                             const bnormTensorDesc_t* desc,
                                                             const bnormConfig_t* config,
                                                             size_t* workspace_bytes);

BNORM_API bnormStatus_t bnormForwardTraining(bnormHandle_t handle, cudaStream_t stream,
                                             const bnormTensorDesc_t* desc,
                                             const bnormConfig_t* config, const void* x, void* y,
                                             const float* gamma, const float* beta,
                                             float* running_mean, float* running_var,
                                             int64_t* step_count, float* saved_mean,
                                             float* saved_rstd, void* workspace,
                                             size_t workspace_bytes);

/* Bytes of the ReLU mask for a tensor: 4 * ceil(n * c * spatial / 32). */
BNORM_API bnormStatus_t bnormGetReluMaskSize(bnormHandle_t handle, const bnormTensorDesc_t* desc,
                                             size_t* mask_bytes);

/* ------------------------------------------------------------------------ */
/* Forward inference
 *
 * y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta.
 * Needs no workspace. y == x allowed; other overlap is BAD_ALIASING.
 * gamma, beta may be NULL (ones / zeros); running_mean and running_var are
 * required. m == 0: success, nothing launched. */
BNORM_API bnormStatus_t bnormForwardInference(bnormHandle_t handle, cudaStream_t stream,
                                              const bnormTensorDesc_t* desc,
                                              const bnormConfig_t* config, const void* x, void* y,
                                              const float* gamma, const float* beta,
                                              const float* running_mean,
                                              const float* running_var);

/* The inference transform as one multiply-add per element, for folding BN
 * into the preceding convolution or linear layer:
 *   scale = gamma / sqrt(running_var + eps),  shift = beta - running_mean * scale
 * so that inference is y = x * scale + shift. c >= 1 channels; gamma, beta
 * may be NULL; scale and shift are required, must not overlap the inputs. */
BNORM_API bnormStatus_t bnormGetInferenceScaleShift(bnormHandle_t handle, cudaStream_t stream,
                                                    int64_t c, const bnormConfig_t* config,
                                                    const float* gamma, const float* beta,
                                                    const float* running_mean,
                                                    const float* running_var, float* scale,
                                                    float* shift);

/* Folds the inference transform into the preceding linear or 1x1
 * convolution layer, on the device, so that inference needs no batch norm:
 *   weight[o][i] *= scale[o],  bias_out[o] = bias_in[o] * scale[o] + shift[o]
 * with (scale, shift) of bnormGetInferenceScaleShift, o over the layer's
 * `out_features` = c output channels (the BN's channels), i over
 * `in_features` inputs (in_channels for a 1x1 convolution); weight is
 * out-channel-major fp32 (weight[o * in_features + i]), updated in place.
 * bias_in may be NULL (a layer without bias); bias_out is required and may
 * equal bias_in. gamma, beta may be NULL. No other overlap is allowed. */
BNORM_API bnormStatus_t bnormFoldIntoLinear(bnormHandle_t handle, cudaStream_t stream,
                                            int64_t out_features, int64_t in_features,
                                            const bnormConfig_t* config, const float* gamma,
                                            const float* beta, const float* running_mean,
                                            const float* running_var, float* weight,
                                            const float* bias_in, float* bias_out);

/* ------------------------------------------------------------------------ */
/* Backward (gradient through the batch statistics)
 *
 *   x, dy          the forward input and the gradient of y (desc for both).
 *   dx             the gradient of x. dx == dy or dx == x allowed; other
 *                  overlap is BNORM_STATUS_BAD_ALIASING.
 *   gamma          may be NULL (ones).
 *   saved_mean,    both set (as bnormForwardTraining saved them) or both
 *   saved_rstd     NULL: then the batch statistics are recomputed from x with
 *                  config->eps.
 *   dgamma, dbeta  both set, or both NULL (not returned; dx is still exact).
 *                  Overwritten, not accumulated.
 *   workspace      at least bnormGetBackwardWorkspaceSize() bytes.
 *
 * m == 0: success; dgamma and dbeta (if set) are zeroed, nothing else runs.
 * m == 1: BNORM_STATUS_BATCH_TOO_SMALL (as in training). */
BNORM_API bnormStatus_t bnormGetBackwardWorkspaceSize(bnormHandle_t handle,
                                                      const bnormTensorDesc_t* desc,
                                                      const bnormConfig_t* config,
                                                      size_t* workspace_bytes);

BNORM_API bnormStatus_t bnormBackward(bnormHandle_t handle, cudaStream_t stream,
                                      const bnormTensorDesc_t* desc, const bnormConfig_t* config,
                                      const void* x, const void* dy, void* dx, const float* gamma,
                                      const float* saved_mean, const float* saved_rstd,
                                      float* dgamma, float* dbeta, void* workspace,
                                      size_t workspace_bytes);

/* ------------------------------------------------------------------------ */
/* Frozen-statistics backward (the backward of bnormForwardInference)
 *
 *   dx = gamma * rstd * dy,  rstd = 1 / sqrt(running_var + eps)
 *   dgamma = sum dy * (x - running_mean) * rstd,  dbeta = sum dy
 * Pointers as in bnormBackward; running_mean and running_var are required.
 * x may be NULL when dgamma and dbeta are NULL (dx needs only dy).
 * m == 0: success; dgamma and dbeta (if set) are zeroed. m == 1 is valid. */
BNORM_API bnormStatus_t bnormGetBackwardFrozenWorkspaceSize(bnormHandle_t handle,
                                                            const bnormTensorDesc_t* desc,
                                                            const bnormConfig_t* config,
                                                            size_t* workspace_bytes);

BNORM_API bnormStatus_t bnormBackwardFrozen(bnormHandle_t handle, cudaStream_t stream,
                                            const bnormTensorDesc_t* desc,
                                            const bnormConfig_t* config, const void* x,
                                            const void* dy, void* dx, const float* gamma,
                                            const float* running_mean, const float* running_var,
                                            float* dgamma, float* dbeta, void* workspace,
                                            size_t workspace_bytes);

/* ------------------------------------------------------------------------ */
/* Synchronized batch norm across GPUs (data parallelism)
 *
 * Each rank (GPU) holds a slice of the mini-batch: its own n, the same c,
 * spatial, dtype and layout on every rank. The statistics are those of the
 * whole global batch, m = (sum of every rank's n) * spatial, as if one GPU
 * had seen it all. Every rank gets bitwise the same statistics, running
 * statistics, dgamma and dbeta.
 *
 * Split phases, each asynchronous on the caller's stream and legal inside
 * CUDA graph capture, for a caller with its own communication (MPI, a
 * framework's process group, a hierarchical exchange):
 *
 *   forward:   bnormSyncForwardStats    x -> this rank's packed statistics
 *              (exchange: all-gather the packed statistics, rank order)
 *              bnormSyncForwardApply    gathered -> statistics, running
 *                                       statistics, saved mean/rstd, y
 *   backward:  bnormSyncBackwardGrads   x, dy -> this rank's packed sums
 *              (exchange: all-reduce (sum) of the sums, as fp64)
 *              bnormSyncBackwardApply   reduced -> dgamma, dbeta, dx
 *
 * Why an all-gather forward and an all-reduce backward: the forward merge is
 * Chan's rule over each rank's (count, mean, M2), which is exact and free of
 * cancellation however large the mean, but is not a sum, so every rank
 * needs every rank's triple and merges them in rank order (the same order
 * on every rank: bitwise identical results). The backward quantities are
 * plain sums, so an fp64 all-reduce suffices. README ("Synchronized batch
 * norm") gives the bytes and latency of both at 8, 64 and 1024 ranks.
 *
 * With NCCL (compiled in when the build found it), bnormSyncForwardTraining
 * and bnormSyncBackward run all phases with exactly one collective each, on
 * the caller's communicator. Every rank must make the same sequence of calls
 * with the same c, spatial, dtype, layout and config, including ranks with
 * n == 0 (they contribute nothing but must take part in the collective). A
 * call that fails its argument checks on one rank returns before its
 * collective, and the other ranks then wait in theirs: check arguments the
 * same way on every rank.
 *
 * Global batch of fewer than two values per channel. The variance of one
 * value is undefined. A caller that knows the global sample count passes it
 * as global_n (the sum of every rank's n), and global_n * spatial == 1 is
 * then BNORM_STATUS_BATCH_TOO_SMALL before anything is enqueued, on every
 * rank alike; global_n == -1 means unknown. Any other global_n below -1 is
 * BNORM_STATUS_INVALID_VALUE; one below this rank's desc->n, or whose
 * product with spatial overflows, is BNORM_STATUS_BAD_SHAPE. Whatever
 * global_n says, the device checks the count it merged: with one value in
 * all, saved_rstd and y are NaN, and with fewer than two the running
 * statistics and the step counter are left untouched; with none at all
 * nothing is written.
 */

/* Bytes of one rank's packed forward statistics for c channels (the unit
 * of the all-gather: rank r's block sits at byte r * stats_bytes of the
 * gathered buffer), and of the packed backward sums (the all-reduce's
 * buffer: grads_bytes / 8 fp64 values). Both are multiples of 16. */
BNORM_API bnormStatus_t bnormGetSyncBufferSizes(bnormHandle_t handle, int64_t c,
                                                size_t* stats_bytes, size_t* grads_bytes);

/* Phase 1 of the forward: this rank's statistics of x (its count, and per
 * channel a pivot, the mean of x - pivot and M2) into local_stats
 * (stats_bytes, 16-byte aligned; may be the rank's own block of the gathered
 * buffer, for an in-place all-gather). desc->n may be 0. The workspace is
 * that of bnormGetForwardTrainingWorkspaceSize for the same desc and config,
 * and is reused by bnormSyncForwardApply: its contents need not survive. */
BNORM_API bnormStatus_t bnormSyncForwardStats(bnormHandle_t handle, cudaStream_t stream,
                                              const bnormTensorDesc_t* desc,
                                              const bnormConfig_t* config, const void* x,
                                              void* local_stats, void* workspace,
                                              size_t workspace_bytes);

/* Phases 3 and 4 of the forward: merges the nranks blocks of gathered_stats
 * (nranks * stats_bytes, 16-byte aligned, rank order) with Chan's rule in
 * rank order, then does what bnormForwardTraining does after its statistics
 * (saved mean and rstd, running statistics with the same factor or
 * cumulative step counter on every rank, y with the epilogue). `rank` is
 * this rank's index (its own block gives the pivot its y is computed
 * against). Every rank, n == 0 included, must call it so that its running
 * statistics stay the same as the others'. global_n: see above (-1:
 * unknown). Other arguments as bnormForwardTraining's; gathered_stats must
 * not overlap any output. */
BNORM_API bnormStatus_t bnormSyncForwardApply(
    bnormHandle_t handle, cudaStream_t stream, const bnormTensorDesc_t* desc,
    const bnormConfig_t* config, int nranks, int rank, int64_t global_n,
    const void* gathered_stats, const void* x, void* y, const float* gamma, const float* beta,
    float* running_mean, float* running_var, int64_t* step_count, float* saved_mean,
    float* saved_rstd, void* workspace, size_t workspace_bytes);

/* Phase 1 of the backward: this rank's count and, per channel, sum g and
 * sum g * (x - saved_mean) as fp64 into local_grads (grads_bytes, 16-byte
 * aligned), g being dy after the epilogue's gradient (config's ReLU mask).
 * saved_mean is the global mean the synchronized forward saved (required).
 * Workspace: bnormGetBackwardWorkspaceSize's, reused by the apply phase. */
BNORM_API bnormStatus_t bnormSyncBackwardGrads(bnormHandle_t handle, cudaStream_t stream,
                                               const bnormTensorDesc_t* desc,
                                               const bnormConfig_t* config, const void* x,
                                               const void* dy, const float* saved_mean,
                                               void* local_grads, void* workspace,
                                               size_t workspace_bytes);

/* The rest of the backward, from reduced_grads (the element-wise sum over
 * every rank of their local_grads; may be local_grads itself after an
 * in-place all-reduce): dgamma and dbeta (identical on every rank) and this
 * rank's dx (and dz for ADD_RELU). saved_mean and saved_rstd are required.
 * Other arguments as bnormBackward's. */
BNORM_API bnormStatus_t bnormSyncBackwardApply(
    bnormHandle_t handle, cudaStream_t stream, const bnormTensorDesc_t* desc,
    const bnormConfig_t* config, const void* reduced_grads, const void* x, const void* dy,
    void* dx, const float* gamma, const float* saved_mean, const float* saved_rstd,
    float* dgamma, float* dbeta, void* workspace, size_t workspace_bytes);

/* The built-in NCCL path: all phases, one collective each, on `comm` (a
 * communicator the caller created: ncclCommInitRank, ncclCommInitAll or
 * ncclCommSplit; its rank and size are read from it). The collective is
 * enqueued on `stream` between the phases' kernels. Without NCCL in the
 * build these return BNORM_STATUS_NOT_SUPPORTED. A collective that NCCL
 * refuses to enqueue is BNORM_STATUS_COMM_ERROR with NCCL's message; the
 * local statistics pass before it may then have written the workspace, but
 * no output, running statistic or step counter is written. (Errors NCCL
 * finds later are its asynchronous errors: ncclCommGetAsyncError.) The
 * workspace holds the local workspace and the exchanged buffers: see the
 * size queries. */
struct ncclComm; /* nccl.h: typedef struct ncclComm* ncclComm_t */

BNORM_API bnormStatus_t bnormGetSyncForwardTrainingWorkspaceSize(bnormHandle_t handle,
                                                                 const bnormTensorDesc_t* desc,
                                                                 const bnormConfig_t* config,
                                                                 int nranks,
                                                                 size_t* workspace_bytes);

BNORM_API bnormStatus_t bnormSyncForwardTraining(
    bnormHandle_t handle, cudaStream_t stream, struct ncclComm* comm,
    const bnormTensorDesc_t* desc, const bnormConfig_t* config, int64_t global_n, const void* x,
    void* y, const float* gamma, const float* beta, float* running_mean, float* running_var,
    int64_t* step_count, float* saved_mean, float* saved_rstd, void* workspace,
    size_t workspace_bytes);

BNORM_API bnormStatus_t bnormGetSyncBackwardWorkspaceSize(bnormHandle_t handle,
                                                          const bnormTensorDesc_t* desc,
                                                          const bnormConfig_t* config,
                                                          size_t* workspace_bytes);

BNORM_API bnormStatus_t bnormSyncBackward(bnormHandle_t handle, cudaStream_t stream,
                                          struct ncclComm* comm, const bnormTensorDesc_t* desc,
                                          const bnormConfig_t* config, const void* x,
                                          const void* dy, void* dx, const float* gamma,
                                          const float* saved_mean, const float* saved_rstd,
                                          float* dgamma, float* dbeta, void* workspace,
                                          size_t workspace_bytes);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BNORM_H_ */

/*
 * Double-precision reference of batch normalization, in plain C99.
 *
 * Slow and obvious on purpose: the library's kernels are checked against it,
 * so it favours accuracy (compensated two-pass statistics) over speed.
 * The math is the one in include/bnorm.h; m = n * spatial values per channel.
 */
#ifndef BN_REFERENCE_H_
#define BN_REFERENCE_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { BNREF_NCHW = 0, BNREF_NHWC = 1 } bnref_layout;

typedef struct {
  bnref_layout layout;
  int64_t n, c, spatial;
} bnref_shape;

/* Offset of element (sample i, channel ch, spatial position s) in a dense tensor. */
int64_t bnref_offset(const bnref_shape* sh, int64_t i, int64_t ch, int64_t s);
int64_t bnref_numel(const bnref_shape* sh);

/* Per-channel mean, biased var and rstd = 1/sqrt(var + eps). Any output may be NULL. */
void bnref_batch_stats(const bnref_shape* sh, const double* x, double eps, double* mean,
                       double* var, double* rstd);

/* y = gamma * (x - mean) * rstd + beta with batch statistics. gamma/beta NULL mean 1/0;
 * mean/var/rstd outputs may be NULL. */
void bnref_forward_training(const bnref_shape* sh, const double* x, const double* gamma,
                            const double* beta, double eps, double* y, double* mean, double* var,
                            double* rstd);

/* rm = (1-f) rm + f mean; rv = (1-f) rv + f var m/(m-1). Requires m >= 2. */
void bnref_update_running(int64_t c, int64_t m, double factor, const double* mean,
                          const double* var, double* running_mean, double* running_var);

/* y = gamma * (x - rm) / sqrt(rv + eps) + beta. gamma/beta NULL mean 1/0. */
void bnref_forward_inference(const bnref_shape* sh, const double* x, const double* gamma,
                             const double* beta, const double* running_mean,
                             const double* running_var, double eps, double* y);

/* scale = gamma / sqrt(rv + eps), shift = beta - rm * scale. gamma/beta NULL mean 1/0. */
void bnref_scale_shift(int64_t c, const double* gamma, const double* beta,
                       const double* running_mean, const double* running_var, double eps,
                       double* scale, double* shift);

/* Backward through the batch statistics (mean, rstd as saved by forward).
 * gamma NULL means ones; dx/dgamma/dbeta may each be NULL; m == 0 gives zero dgamma/dbeta. */
void bnref_backward(const bnref_shape* sh, const double* x, const double* dy,
                    const double* gamma, const double* mean, const double* rstd, double* dx,
                    double* dgamma, double* dbeta);

/* Backward with the running statistics held constant (eval-mode BN).
 * gamma NULL means ones; dx/dgamma/dbeta may each be NULL. */
void bnref_backward_frozen(const bnref_shape* sh, const double* x, const double* dy,
                           const double* gamma, const double* running_mean,
                           const double* running_var, double eps, double* dx, double* dgamma,
                           double* dbeta);

/* The fused epilogue: out = max(y + z, 0) elementwise over n values (z NULL:
 * max(y, 0)); positive[i] = 1 where y + z > 0 (positive may be NULL). */
void bnref_add_relu(int64_t n, const double* y, const double* z, double* out,
                    unsigned char* positive);

/* The epilogue's gradient: g = dy where positive, else 0 (also dz for the
 * add). */
void bnref_relu_backward(int64_t n, const double* dy, const unsigned char* positive, double* g);

#ifdef __cplusplus
}
#endif

#endif /* BN_REFERENCE_H_ */

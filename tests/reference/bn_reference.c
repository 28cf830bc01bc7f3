#include "bn_reference.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

int64_t bnref_offset(const bnref_shape* sh, int64_t i, int64_t ch, int64_t s) {
  /* NCHW: (i*c + ch)*spatial + s.  NHWC: (i*spatial + s)*c + ch. */
  if (sh->layout == BNREF_NHWC) return (i * sh->spatial + s) * sh->c + ch;
  return (i * sh->c + ch) * sh->spatial + s;
}

int64_t bnref_numel(const bnref_shape* sh) {
  /* n * c * spatial */
  return sh->n * sh->c * sh->spatial;
}

/* Neumaier-compensated running sum: the reference must not be the weak link
 * when the library's own accumulation error is being measured. */
typedef struct {
  double sum, comp;
} ksum;

static void ksum_add(ksum* k, double v) {
  double t = k->sum + v;
  if (fabs(k->sum) >= fabs(v))
    k->comp += (k->sum - t) + v;
  else
    k->comp += (v - t) + k->sum;
  k->sum = t;
}

static double ksum_value(const ksum* k) { return k->sum + k->comp; }

/* Mean and biased variance of one channel (m > 0). */
static void channel_stats(const bnref_shape* sh, const double* x, int64_t ch, double* mean_out,
                          double* var_out) {
  /* mean = (1/m) sum x; var = (1/m) sum d^2 - ((1/m) sum d)^2 with d = x - mean.
   * The second term is the corrected two-pass fix-up: it cancels the rounding
   * left in mean, so data with |mean| >> std keeps its variance. */
  const int64_t m = sh->n * sh->spatial;
  ksum s = {0.0, 0.0}, sd = {0.0, 0.0}, sd2 = {0.0, 0.0};
  double mean, dmean, var;
  int64_t i, p;
  for (i = 0; i < sh->n; ++i)
    for (p = 0; p < sh->spatial; ++p) ksum_add(&s, x[bnref_offset(sh, i, ch, p)]);
  mean = ksum_value(&s) / (double)m;
  for (i = 0; i < sh->n; ++i)
    for (p = 0; p < sh->spatial; ++p) {
      double d = x[bnref_offset(sh, i, ch, p)] - mean;
      ksum_add(&sd, d);
      ksum_add(&sd2, d * d);
    }
  dmean = ksum_value(&sd) / (double)m;
  var = ksum_value(&sd2) / (double)m - dmean * dmean;
  *mean_out = mean + dmean;
  /* Never negative; a NaN (from a NaN or an infinity in x) stays NaN, as in PyTorch. */
  *var_out = var < 0.0 ? 0.0 : var;
}

void bnref_batch_stats(const bnref_shape* sh, const double* x, double eps, double* mean,
                       double* var, double* rstd) {
  /* Per channel: mean = (1/m) sum x, var = (1/m) sum (x - mean)^2 (biased),
   * rstd = 1/sqrt(var + eps). m == 0 leaves the statistics as mean 0, var 0. */
  const int64_t m = sh->n * sh->spatial;
  int64_t ch;
  for (ch = 0; ch < sh->c; ++ch) {
    double mu = 0.0, v = 0.0;
    if (m > 0) channel_stats(sh, x, ch, &mu, &v);
    if (mean) mean[ch] = mu;
    if (var) var[ch] = v;
    if (rstd) rstd[ch] = 1.0 / sqrt(v + eps);
  }
}

/* y = scale[ch] * (x - center[ch]) + beta[ch], the shared normalize step. */
static void apply(const bnref_shape* sh, const double* x, const double* center,
                  const double* rstd, const double* gamma, const double* beta, double* y) {
  int64_t i, ch, p;
  for (ch = 0; ch < sh->c; ++ch) {
    const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
    for (i = 0; i < sh->n; ++i)
      for (p = 0; p < sh->spatial; ++p) {
        const int64_t o = bnref_offset(sh, i, ch, p);
        /* (x - mean) * rstd first, so a constant channel gives exactly beta. */
        y[o] = g * ((x[o] - center[ch]) * rstd[ch]) + b;
      }
  }
}

void bnref_forward_training(const bnref_shape* sh, const double* x, const double* gamma,
                            const double* beta, double eps, double* y, double* mean, double* var,
                            double* rstd) {
  /* y = gamma * (x - mean) * rstd + beta, with the batch mean and rstd of each channel. */
  double* mu = (double*)malloc(2 * (size_t)sh->c * sizeof(double));
  double* r;
  int64_t ch;
  if (!mu && sh->c > 0) abort(); /* a test harness has no better answer to out-of-memory */
  r = mu + sh->c;
  bnref_batch_stats(sh, x, eps, mu, var, r);
  apply(sh, x, mu, r, gamma, beta, y);
  for (ch = 0; ch < sh->c; ++ch) {
    if (mean) mean[ch] = mu[ch];
    if (rstd) rstd[ch] = r[ch];
  }
  free(mu);
}

void bnref_update_running(int64_t c, int64_t m, double factor, const double* mean,
                          const double* var, double* running_mean, double* running_var) {
  /* rm = (1-f) rm + f mean; rv = (1-f) rv + f var m/(m-1): the running variance
   * is the unbiased estimate, as in PyTorch and cuDNN. */
  const double bessel = (double)m / (double)(m - 1);
  int64_t ch;
  for (ch = 0; ch < c; ++ch) {
    running_mean[ch] = (1.0 - factor) * running_mean[ch] + factor * mean[ch];
    running_var[ch] = (1.0 - factor) * running_var[ch] + factor * (var[ch] * bessel);
  }
}

void bnref_forward_inference(const bnref_shape* sh, const double* x, const double* gamma,
                             const double* beta, const double* running_mean,
                             const double* running_var, double eps, double* y) {
  /* y = gamma * (x - rm) / sqrt(rv + eps) + beta. */
  double* r = (double*)malloc((size_t)sh->c * sizeof(double));
  int64_t ch;
  if (!r && sh->c > 0) abort();
  for (ch = 0; ch < sh->c; ++ch) r[ch] = 1.0 / sqrt(running_var[ch] + eps);
  apply(sh, x, running_mean, r, gamma, beta, y);
  free(r);
}

void bnref_scale_shift(int64_t c, const double* gamma, const double* beta,
                       const double* running_mean, const double* running_var, double eps,
                       double* scale, double* shift) {
  /* Inference folded to y = scale * x + shift:
   * scale = gamma / sqrt(rv + eps), shift = beta - rm * scale. */
  int64_t ch;
  for (ch = 0; ch < c; ++ch) {
    const double sc = (gamma ? gamma[ch] : 1.0) / sqrt(running_var[ch] + eps);
    scale[ch] = sc;
    shift[ch] = (beta ? beta[ch] : 0.0) - running_mean[ch] * sc;
  }
}

/* dbeta = sum dy, dgamma = sum dy * xhat with xhat = (x - center) * rstd, over one channel. */
static void channel_grad_sums(const bnref_shape* sh, const double* x, const double* dy,
                              int64_t ch, double center, double rstd, double* dgamma,
                              double* dbeta) {
  ksum sg = {0.0, 0.0}, sgx = {0.0, 0.0};
  int64_t i, p;
  for (i = 0; i < sh->n; ++i)
    for (p = 0; p < sh->spatial; ++p) {
      const int64_t o = bnref_offset(sh, i, ch, p);
      ksum_add(&sg, dy[o]);
      ksum_add(&sgx, dy[o] * ((x[o] - center) * rstd));
    }
  *dbeta = ksum_value(&sg);
  *dgamma = ksum_value(&sgx);
}

void bnref_backward(const bnref_shape* sh, const double* x, const double* dy,
                    const double* gamma, const double* mean, const double* rstd, double* dx,
                    double* dgamma, double* dbeta) {
  /* xhat = (x - mean) * rstd; dbeta = sum dy; dgamma = sum dy * xhat;
   * dx = gamma * rstd * (dy - dbeta/m - xhat * dgamma/m): the last two terms are
   * the gradient flowing back through the batch mean and variance. */
  const int64_t m = sh->n * sh->spatial;
  int64_t ch, i, p;
  for (ch = 0; ch < sh->c; ++ch) {
    double db = 0.0, dg = 0.0;
    if (m > 0) channel_grad_sums(sh, x, dy, ch, mean[ch], rstd[ch], &dg, &db);
    if (dgamma) dgamma[ch] = dg;
    if (dbeta) dbeta[ch] = db;
    if (!dx) continue;
    {
      const double k = (gamma ? gamma[ch] : 1.0) * rstd[ch];
      const double db_m = m > 0 ? db / (double)m : 0.0, dg_m = m > 0 ? dg / (double)m : 0.0;
      for (i = 0; i < sh->n; ++i)
        for (p = 0; p < sh->spatial; ++p) {
          const int64_t o = bnref_offset(sh, i, ch, p);
          const double xhat = (x[o] - mean[ch]) * rstd[ch];
          dx[o] = k * (dy[o] - db_m - xhat * dg_m);
        }
    }
  }
}

void bnref_backward_frozen(const bnref_shape* sh, const double* x, const double* dy,
                           const double* gamma, const double* running_mean,
                           const double* running_var, double eps, double* dx, double* dgamma,
                           double* dbeta) {
  /* Statistics are constants: rstd = 1/sqrt(rv + eps), xhat = (x - rm) * rstd,
   * dx = gamma * rstd * dy, dgamma = sum dy * xhat, dbeta = sum dy. */
  int64_t ch, i, p;
  for (ch = 0; ch < sh->c; ++ch) {
    const double r = 1.0 / sqrt(running_var[ch] + eps);
    const double k = (gamma ? gamma[ch] : 1.0) * r;
    double db, dg;
    channel_grad_sums(sh, x, dy, ch, running_mean[ch], r, &dg, &db);
    if (dgamma) dgamma[ch] = dg;
    if (dbeta) dbeta[ch] = db;
    if (!dx) continue;
    for (i = 0; i < sh->n; ++i)
      for (p = 0; p < sh->spatial; ++p) {
        const int64_t o = bnref_offset(sh, i, ch, p);
        dx[o] = k * dy[o];
      }
  }
}

/* ReLU after an optional residual add: the one nonlinearity of the fused
 * epilogue, and the set of elements through which gradient flows. */
void bnref_add_relu(int64_t n, const double* y, const double* z, double* out,
                    unsigned char* positive) {
  int64_t i;
  for (i = 0; i < n; ++i) {
    const double v = y[i] + (z ? z[i] : 0.0);
    out[i] = v > 0.0 ? v : 0.0;
    if (positive) positive[i] = (unsigned char)(v > 0.0);
  }
}

/* d relu(v) / dv is 1 where v > 0 and 0 elsewhere (0 at v == 0, as PyTorch). */
void bnref_relu_backward(int64_t n, const double* dy, const unsigned char* positive, double* g) {
  int64_t i;
  for (i = 0; i < n; ++i) g[i] = positive[i] ? dy[i] : 0.0;
}

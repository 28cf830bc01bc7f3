// More than 2^31 elements on a real GPU (label gpu;huge): fp16 tensors in
// NHWC and NCHW whose element counts, values per channel or both pass 2^31
// and 2^32, through forward training, inference and backward. The data is
// made on the host from a hash of the flat index (so any value can be
// recomputed), the statistics and gradient sums of every channel are
// computed in double on the host, and outputs are read back at sampled
// positions (the first and last values, around every multiple of 2^31, and
// spread evenly) and compared with the double-precision formulas.
//
// Skips without a GPU, or when the device or the host lacks the memory
// (the largest case needs about 40 GiB of device memory and 26 GiB of host
// memory).
//
// The same test, built against the emulator (test_huge_emu, BT_EMU), runs
// small shapes of the same three kinds instead (NHWC with many channels,
// NCHW with long channels, one channel with spatial 1): everything but the
// size, so that the test's own data, sums, sampling and tolerances are
// exercised in CI, where no GPU is.
#include <cuda_fp16.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "harness.h"

namespace {

using bt::Case;

// Runs f(begin, end, worker) over [0, n) on every host core.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& f) {
  const int workers = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> ts;
  const int64_t chunk = (n + workers - 1) / workers;
  for (int w = 0; w < workers; ++w) {
    const int64_t b = std::min(n, w * chunk), e = std::min(n, b + chunk);
    ts.emplace_back([&, b, e, w] { f(b, e, w); });
  }
  for (auto& t : ts) t.join();
}

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

float half_to_float(uint16_t h) {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) {
      __half_raw r;
      r.x = uint16_t(i);
      t[i] = __half2float(__half(r));
    }
    return t;
  }();
  return table[h];
}

uint16_t float_to_half(float f) {
  const __half_raw r = __half_raw(__float2half_rn(f));
  return r.x;
}

struct Huge {
  Case k;
  int64_t channel_of(int64_t i) const {
    return k.layout == BNORM_LAYOUT_NHWC ? i % k.s.c : (i / k.s.spatial) % k.s.c;
  }
  // Flat index of value j of channel ch.
  int64_t index(int64_t ch, int64_t j) const {
    const int64_t s = j % k.s.spatial, n = j / k.s.spatial;
    return k.layout == BNORM_LAYOUT_NHWC ? (n * k.s.spatial + s) * k.s.c + ch
                                         : (n * k.s.c + ch) * k.s.spatial + s;
  }
};

// Values of channel ch: mean 2 + ch % 5 - 4 * (ch % 2), spread 0.5 + (ch % 3)
// / 2, uniform noise from the hash of (seed, i).
std::vector<uint16_t> make_tensor(const Huge& h, uint64_t seed) {
  std::vector<uint16_t> v(size_t(h.k.numel()));
  parallel_for(h.k.numel(), [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t ch = h.channel_of(i);
      const double mean = 2.0 + double(ch % 5) - 4.0 * double(ch % 2);
      const double sd = 0.5 + double(ch % 3) / 2.0;
      const double u = double(mix(seed ^ uint64_t(i)) >> 11) * 0x1.0p-53 * 2.0 - 1.0;  // [-1, 1)
      v[size_t(i)] = float_to_half(float(mean + sd * 1.7320508 * u));
    }
  });
  return v;
}

// Per-channel sums of f(i, channel) over the whole tensor, in double, with
// per-worker partials merged in order.
std::vector<double> channel_sums(const Huge& h, const std::function<double(int64_t, int64_t)>& f) {
  const int workers = std::max(1u, std::thread::hardware_concurrency());
  const size_t c = size_t(h.k.s.c);
  std::vector<std::vector<double>> part(size_t(workers), std::vector<double>(c, 0.0));
  parallel_for(h.k.numel(), [&](int64_t b, int64_t e, int w) {
    std::vector<double>& p = part[size_t(w)];
    // Blocks of 4096 summed separately keep the double sums exact enough.
    std::vector<double> block(c, 0.0);
    for (int64_t i = b; i < e; ++i) {
      const int64_t ch = h.channel_of(i);
      block[size_t(ch)] += f(i, ch);
      if ((i - b) % 4096 == 4095) {
        for (size_t q = 0; q < c; ++q) p[q] += block[q], block[q] = 0.0;
      }
    }
    for (size_t q = 0; q < c; ++q) p[q] += block[q];
  });
  std::vector<double> out(c, 0.0);
  for (const auto& p : part)
    for (size_t q = 0; q < c; ++q) out[q] += p[q];
  return out;
}

// Positions to read back from channel ch: both ends, around every multiple
// of 2^31 of the flat index, and evenly spread values.
std::vector<int64_t> sample_indices(const Huge& h, int64_t ch) {
  std::vector<int64_t> out;
  const int64_t m = h.k.m();
  for (int64_t j : {int64_t(0), int64_t(1), m - 2, m - 1}) out.push_back(h.index(ch, j));
  const int64_t step = std::max<int64_t>(1, m / 2000);
  for (int64_t j = 0; j < 2000 && j * step < m; ++j)
    out.push_back(h.index(ch, j * step + (j * 7919) % step));
  // Values whose flat index is near k * 2^31: walk the channel's samples.
  for (int64_t mult = 1; mult * (int64_t(1) << 31) < h.k.numel(); ++mult) {
    const int64_t target = mult * (int64_t(1) << 31);
    int64_t lo = 0, hi = m - 1;  // the channel's flat index grows with j
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (h.index(ch, mid) < target) lo = mid + 1; else hi = mid;
    }
    for (int64_t j = std::max<int64_t>(0, lo - 3); j < std::min(m, lo + 3); ++j)
      out.push_back(h.index(ch, j));
  }
  return out;
}

double read_half(const void* dev, int64_t i) {
  uint16_t b = 0;
  EXPECT_EQ(cudaMemcpy(&b, static_cast<const uint16_t*>(dev) + i, 2, cudaMemcpyDeviceToHost),
            cudaSuccess);
  return half_to_float(b);
}

class HugeTensor : public ::testing::TestWithParam<Case> {};

TEST_P(HugeTensor, ForwardInferenceBackwardAgainstDoubleOnSampledValues) {
  BT_REQUIRE_DEVICE();
  const Huge h{GetParam()};
  const Case& k = h.k;
  const size_t bytes = size_t(k.numel()) * 2, c = size_t(k.s.c), cb = c * sizeof(float);
  size_t free_b = 0, total_b = 0;
  BT_CUDA(cudaMemGetInfo(&free_b, &total_b));
  const double gib = double(1 << 30);
  if (double(free_b) < 3.0 * double(bytes) + gib)
    GTEST_SKIP() << "needs " << (3.0 * double(bytes) + gib) / gib << " GiB of device memory, "
                 << double(free_b) / gib << " free";
  const double host = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (host < 2.5 * double(bytes) + 4 * gib)
    GTEST_SKIP() << "needs " << (2.5 * double(bytes) + 4 * gib) / gib << " GiB of host memory";
#ifndef BT_EMU
  ASSERT_GT(k.numel(), int64_t(1) << 31);
#endif

  bt::Handle handle;
  const bnormTensorDesc_t d = k.desc();
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  cfg.exponential_average_factor = 1.0;  // running stats become the batch stats

  // ---- forward training ----
  const std::vector<uint16_t> x = make_tensor(h, 1);
  const std::vector<double> sum = channel_sums(h, [&](int64_t i, int64_t) { return half_to_float(x[size_t(i)]); });
  const double m = double(k.m());
  std::vector<double> mean(c);
  for (size_t q = 0; q < c; ++q) mean[q] = sum[q] / m;
  const std::vector<double> m2 = channel_sums(h, [&](int64_t i, int64_t ch) {
    const double dv = half_to_float(x[size_t(i)]) - mean[size_t(ch)];
    return dv * dv;
  });
  std::vector<double> var(c), rstd(c), gamma(c), beta(c);
  for (size_t q = 0; q < c; ++q) {
    var[q] = m2[q] / m;
    rstd[q] = 1.0 / std::sqrt(var[q] + cfg.eps);
    gamma[q] = float(0.5 + 0.01 * double(q));
    beta[q] = float(0.25 - 0.02 * double(q));
  }
  bt::DeviceBuffer x_buf(bytes), dy_buf(bytes), dout(bytes);
  void* const xd = x_buf.get();
  BT_CUDA(cudaMemcpy(xd, x.data(), bytes, cudaMemcpyHostToDevice));
  bt::DeviceBuffer g = bt::upload_floats(gamma), b = bt::upload_floats(beta);
  bt::DeviceBuffer rm(cb), rv(cb), sm(cb), sr(cb);
  rm.poison();
  rv.poison();
  size_t ws_bytes = 0;
  BT_OK(bnormGetForwardTrainingWorkspaceSize(handle, &d, &cfg, &ws_bytes));
  bt::DeviceBuffer ws(ws_bytes);
  BT_OK(bnormForwardTraining(handle, nullptr, &d, &cfg, xd, dout.get(), g.f32(), b.f32(), rm.f32(),
                             rv.f32(), nullptr, sm.f32(), sr.f32(), ws.get(), ws_bytes));
  BT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got_mean = sm.download_f32(), got_rstd = sr.download_f32();
  const std::vector<float> got_rv = rv.download_f32();
  for (size_t q = 0; q < c; ++q) {
    SCOPED_TRACE(::testing::Message() << "channel " << q);
    EXPECT_NEAR(got_mean[q], mean[q], 1e-5 * (std::fabs(mean[q]) + std::sqrt(var[q])));
    EXPECT_NEAR(got_rstd[q], rstd[q], 1e-4 * rstd[q]);
    EXPECT_NEAR(got_rv[q], var[q] * m / (m - 1.0), 1e-4 * var[q]);
  }
  const std::vector<int64_t> channels = c <= 3 ? std::vector<int64_t>{0, 1, 2}
                                               : std::vector<int64_t>{0, int64_t(c) / 2 + 1, int64_t(c) - 1};
  const bt::Tolerance tol = bt::output_tolerance(BNORM_DATA_HALF);
  auto check_y = [&](const char* what, const std::vector<double>& scale, const std::vector<double>& center) {
    for (int64_t ch : channels) {
      if (ch >= int64_t(c)) continue;
      int bad = 0;
      for (int64_t i : sample_indices(h, ch)) {
        const double want = gamma[size_t(ch)] * ((half_to_float(x[size_t(i)]) - center[size_t(ch)]) *
                                                  scale[size_t(ch)]) + beta[size_t(ch)];
        const double got = read_half(dout.get(), i);
        if (!(std::fabs(got - want) <= tol.atol * 2 + tol.rtol * std::fabs(want)) && bad++ < 5)
          ADD_FAILURE() << what << " channel " << ch << " flat index " << i << ": " << got
                        << " expected " << want;
      }
    }
  };
  check_y("y (training)", rstd, mean);

  // ---- inference with the running statistics (= batch stats, unbiased var) ----
  std::vector<double> inf_scale(c), rvd = bt::to_double(got_rv), rmd = bt::to_double(rm.download_f32());
  for (size_t q = 0; q < c; ++q) inf_scale[q] = 1.0 / std::sqrt(rvd[q] + cfg.eps);
  dout.poison();
  BT_OK(bnormForwardInference(handle, nullptr, &d, &cfg, xd, dout.get(), g.f32(), b.f32(), rm.f32(),
                              rv.f32()));
  BT_CUDA(cudaDeviceSynchronize());
  check_y("y (inference)", inf_scale, rmd);

  // ---- backward with the saved statistics ----
  const std::vector<uint16_t> dy = make_tensor(h, 2);
  BT_CUDA(cudaMemcpy(dy_buf.get(), dy.data(), bytes, cudaMemcpyHostToDevice));
  const std::vector<double> sdy = channel_sums(h, [&](int64_t i, int64_t) { return half_to_float(dy[size_t(i)]); });
  const std::vector<double> sdyx = channel_sums(h, [&](int64_t i, int64_t ch) {
    return half_to_float(dy[size_t(i)]) * (half_to_float(x[size_t(i)]) - mean[size_t(ch)]);
  });
  const std::vector<double> sabs = channel_sums(h, [&](int64_t i, int64_t ch) {
    return std::fabs(half_to_float(dy[size_t(i)]) * (half_to_float(x[size_t(i)]) - mean[size_t(ch)]));
  });
  bt::DeviceBuffer dgamma(cb), dbeta(cb);
  BT_OK(bnormGetBackwardWorkspaceSize(handle, &d, &cfg, &ws_bytes));
  bt::DeviceBuffer wsb(ws_bytes);
  dout.poison();
  BT_OK(bnormBackward(handle, nullptr, &d, &cfg, xd, dy_buf.get(), dout.get(), g.f32(), sm.f32(),
                      sr.f32(), dgamma.f32(), dbeta.f32(), wsb.get(), ws_bytes));
  BT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> gdg = dgamma.download_f32(), gdb = dbeta.download_f32();
  for (size_t q = 0; q < c; ++q) {
    SCOPED_TRACE(::testing::Message() << "channel " << q);
    // Sums of m values of size about 1: fp32 partial sums merged in a tree.
    EXPECT_NEAR(gdb[q], sdy[q], 1e-5 * m + 1e-3 * std::fabs(sdy[q]));
    EXPECT_NEAR(gdg[q], sdyx[q] * got_rstd[q], 1e-5 * sabs[q] * got_rstd[q] + 1e-3 * std::fabs(sdyx[q] * got_rstd[q]));
  }
  for (int64_t ch : channels) {
    if (ch >= int64_t(c)) continue;
    const size_t q = size_t(ch);
    const double r = got_rstd[q], mu = got_mean[q];
    const double kdb = double(gdb[q]) / m, kdg = double(gdg[q]) / m;
    int bad = 0;
    for (int64_t i : sample_indices(h, ch)) {
      const double xhat = (half_to_float(x[size_t(i)]) - mu) * r;
      const double want = gamma[q] * r * (half_to_float(dy[size_t(i)]) - kdb - xhat * kdg);
      const double got = read_half(dout.get(), i);
      if (!(std::fabs(got - want) <= 4 * tol.atol * std::max(1.0, gamma[q] * r) + tol.rtol * std::fabs(want)) &&
          bad++ < 5)
        ADD_FAILURE() << "dx channel " << ch << " flat index " << i << ": " << got << " expected " << want;
    }
  }
}

#ifdef BT_EMU
INSTANTIATE_TEST_SUITE_P(
    Fp16Small, HugeTensor,
    ::testing::Values(Case{{33, 64, 16}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},
                      Case{{2, 3, 4099}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},
                      Case{{20005, 1, 1}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF}),
    bt::CaseName());
#else
INSTANTIATE_TEST_SUITE_P(
    Fp16, HugeTensor,
    ::testing::Values(
        // 2^31 + 2^16 elements, 33.5 million values per channel, 64 channels.
        Case{{32769, 64, 1024}, BNORM_LAYOUT_NHWC, BNORM_DATA_HALF},
        // 6.4e9 elements (> 2^32), 2^31 + 14 values per channel.
        Case{{2, 3, (int64_t(1) << 30) + 7}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF},
        // One channel of 2^32 + 5 values (spatial 1: the channel-minor kernels).
        Case{{(int64_t(1) << 32) + 5, 1, 1}, BNORM_LAYOUT_NCHW, BNORM_DATA_HALF}),
    bt::CaseName());
#endif

}  // namespace

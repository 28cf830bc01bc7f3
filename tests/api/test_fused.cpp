// The fused epilogues (ReLU, add + ReLU) forward and backward on every
// standard shape x layout x dtype and every kernel path, the 1-bit mask
// checked exactly against the reference's sign decisions, dz, the folding of
// BN into a linear layer, and the epilogue's error paths.
#include <cmath>
#include <cstring>

#include "harness.h"
#include "ops.h"

namespace {

using bt::Case;

bool bit(const std::vector<uint32_t>& mask, size_t i) { return (mask[i / 32] >> (i % 32)) & 1u; }

struct FusedParam {
  Case k;
  bnormEpilogue_t epilogue;
};

std::vector<FusedParam> fused_cases() {
  std::vector<FusedParam> out;
  for (const Case& k : bt::standard_cases())
    for (bnormEpilogue_t e : {BNORM_EPILOGUE_RELU, BNORM_EPILOGUE_ADD_RELU}) out.push_back({k, e});
  return out;
}

std::string fused_name(const ::testing::TestParamInfo<FusedParam>& info) {
  return std::string(info.param.epilogue == BNORM_EPILOGUE_RELU ? "Relu_" : "AddRelu_") +
         info.param.k.name();
}

bnormConfig_t fused_config(bnormEpilogue_t e, bnormPath_t path) {
  bnormConfig_t c = BNORM_CONFIG_INITIALIZER;
  c.epilogue = e;
  c.path = path;
  return c;
}

// The reference: y = relu(bn(x) + z), and which pre-activations are > 0.
struct RefFused {
  std::vector<double> y, pre;
  std::vector<unsigned char> positive;
};

RefFused ref_fused(const Case& k, const bnormConfig_t& cfg, const bt::TrainRequest& r) {
  const bt::RefTrain bn = bt::ref_forward_training(k, cfg, r);
  RefFused o;
  const size_t n = bn.y.size();
  o.y.resize(n);
  o.pre.resize(n);
  o.positive.resize(n);
  for (size_t i = 0; i < n; ++i) o.pre[i] = bn.y[i] + (r.z.empty() ? 0.0 : r.z[i]);
  bnref_add_relu(int64_t(n), bn.y.data(), r.z.empty() ? nullptr : r.z.data(), o.y.data(),
                 o.positive.data());
  return o;
}

// Mask bits must equal the reference's decisions wherever the
// pre-activation is clear of zero by more than the output's tolerance (and
// most elements must be: a vacuous comparison would prove nothing). Bits
// past the last element are zero.
::testing::AssertionResult mask_matches(const std::vector<uint32_t>& mask, const RefFused& ref,
                                        bt::Tolerance tol) {
  size_t clear = 0, wrong = 0, first = 0;
  for (size_t i = 0; i < ref.pre.size(); ++i) {
    if (std::fabs(ref.pre[i]) <= 4 * (tol.atol + tol.rtol * std::fabs(ref.pre[i]))) continue;
    ++clear;
    if (bit(mask, i) != bool(ref.positive[i]) && wrong++ == 0) first = i;
  }
  for (size_t i = ref.pre.size(); i < mask.size() * 32; ++i)
    if (bit(mask, i)) return ::testing::AssertionFailure() << "padding bit " << i << " is set";
  if (wrong)
    return ::testing::AssertionFailure() << wrong << " mask bits differ from the reference, first "
                                         << first << " (pre-activation " << ref.pre[first] << ")";
  // Random data leaves few pre-activations within a rounding of zero; the
  // tiniest shapes (4 values) are allowed one.
  if (clear * 10 < ref.pre.size() * 9 && clear + 1 < ref.pre.size())
    return ::testing::AssertionFailure() << "only " << clear << " of " << ref.pre.size()
                                         << " elements are clear of zero";
  return ::testing::AssertionSuccess();
}

class Fused : public ::testing::TestWithParam<FusedParam> {};

TEST_P(Fused, ForwardTrainingMatchesReferenceOnEveryPath) {
  BT_REQUIRE_DEVICE();
  const FusedParam fp = GetParam();
  const Case& k = fp.k;
  bt::Handle h;
  bt::TrainRequest r;
  r.x = bt::random_activations(k, 4100 + uint64_t(k.numel()));
  r.p = bt::random_params(k.s.c, 4200);
  r.running_mean.assign(size_t(k.s.c), 0.0);
  r.running_var.assign(size_t(k.s.c), 1.0);
  if (fp.epilogue == BNORM_EPILOGUE_ADD_RELU)
    r.z = bt::random_activations(k, 4300 + uint64_t(k.numel()), -1.0, 1.0);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    const bnormConfig_t cfg = fused_config(fp.epilogue, path);
    const bt::TrainResult got = bt::forward_training(h, k, cfg, r);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const RefFused want = ref_fused(k, cfg, r);
    const bt::Tolerance tol = bt::output_tolerance(k.dtype);
    EXPECT_TRUE(bt::all_close(got.y, want.y, tol, "y"));
    EXPECT_TRUE(mask_matches(got.mask, want, tol));
    for (size_t i = 0; i < got.y.size(); ++i)
      ASSERT_EQ(got.y[i] > 0, bit(got.mask, i)) << "the mask is y > 0, element " << i;
  }
}

TEST_P(Fused, BackwardMasksTheGradientAndReturnsDz) {
  BT_REQUIRE_DEVICE();
  const FusedParam fp = GetParam();
  const Case& k = fp.k;
  bt::Handle h;
  bt::TrainRequest t;
  t.x = bt::random_activations(k, 4400 + uint64_t(k.numel()));
  if (fp.epilogue == BNORM_EPILOGUE_ADD_RELU) t.z = bt::random_activations(k, 4500, -1.0, 1.0);
  const bnormConfig_t fwd = fused_config(fp.epilogue, BNORM_PATH_AUTO);
  const bt::TrainResult f = bt::forward_training(h, k, fwd, t);
  ASSERT_EQ(f.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();

  bt::BackwardRequest r;
  r.x = t.x;
  r.dy = bt::random_activations(k, 4600, -0.5, 0.5, 0.5, 1.5);
  r.gamma = bt::random_params(k.s.c, 4700).gamma;
  r.mean = bt::to_double(f.saved_mean);
  r.stat = bt::to_double(f.saved_rstd);
  r.mask = f.mask;
  // The reference backward of batch norm, fed the masked gradient.
  bt::BackwardRequest masked = r;
  for (size_t i = 0; i < masked.dy.size(); ++i)
    if (!bit(f.mask, i)) masked.dy[i] = 0.0;
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    const bnormConfig_t cfg = fused_config(fp.epilogue, path);
    const bt::BackwardResult got = bt::backward(h, k, cfg, r, false);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    const bt::RefBackward want = bt::ref_backward(k, BNORM_CONFIG_INITIALIZER, masked, false);
    bt::Tolerance tol = bt::output_tolerance(k.dtype);
    tol.atol *= 4.0 * std::max(1.0, want.dx_scale);
    EXPECT_TRUE(bt::all_close(got.dx, want.dx, tol, "dx"));
    for (size_t ch = 0; ch < want.dbeta.size(); ++ch) {
      EXPECT_NEAR(got.dbeta[ch], want.dbeta[ch], 1e-5 * want.abs_dbeta[ch] + 1e-6);
      EXPECT_NEAR(got.dgamma[ch], want.dgamma[ch], 1e-5 * want.abs_dgamma[ch] + 1e-6);
    }
    if (fp.epilogue == BNORM_EPILOGUE_ADD_RELU) {
      ASSERT_EQ(got.dz.size(), masked.dy.size());
      for (size_t i = 0; i < got.dz.size(); ++i)
        ASSERT_EQ(got.dz[i], masked.dy[i]) << "dz is the masked dy, element " << i;
    }
  }
}

TEST_P(Fused, FrozenBackwardMasksTheGradient) {
  BT_REQUIRE_DEVICE();
  const FusedParam fp = GetParam();
  const Case& k = fp.k;
  bt::Handle h;
  bt::BackwardRequest r;
  r.x = bt::random_activations(k, 4800 + uint64_t(k.s.c));
  r.dy = bt::random_activations(k, 4900, -0.5, 0.5, 0.5, 1.5);
  r.gamma = bt::random_params(k.s.c, 5000).gamma;
  r.mean = bt::random_floats(size_t(k.s.c), 5100, -3.0, 3.0);
  r.stat = bt::random_floats(size_t(k.s.c), 5200, 0.25, 4.0);
  r.mask.assign(size_t((k.numel() + 31) / 32), 0u);
  for (size_t w = 0; w < r.mask.size(); ++w) r.mask[w] = uint32_t(0x9e3779b9u * (w + 1)) ^ 0x5a5a5a5au;
  bt::BackwardRequest masked = r;
  for (size_t i = 0; i < masked.dy.size(); ++i)
    if (!bit(r.mask, i)) masked.dy[i] = 0.0;
  const bt::RefBackward want = bt::ref_backward(k, BNORM_CONFIG_INITIALIZER, masked, true);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    const bnormConfig_t cfg = fused_config(fp.epilogue, path);
    const bt::BackwardResult got = bt::backward(h, k, cfg, r, true);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    bt::Tolerance tol = bt::output_tolerance(k.dtype);
    tol.atol *= 4.0 * std::max(1.0, want.dx_scale);
    EXPECT_TRUE(bt::all_close(got.dx, want.dx, tol, "dx"));
    ASSERT_EQ(got.dbeta.size(), want.dbeta.size());
    ASSERT_EQ(got.dgamma.size(), want.dgamma.size());
    for (size_t ch = 0; ch < want.dbeta.size(); ++ch) {
      EXPECT_NEAR(got.dbeta[ch], want.dbeta[ch], 1e-5 * want.abs_dbeta[ch] + 1e-6) << "channel " << ch;
      EXPECT_NEAR(got.dgamma[ch], want.dgamma[ch], 1e-5 * want.abs_dgamma[ch] + 1e-6)
          << "channel " << ch;
    }
    if (fp.epilogue == BNORM_EPILOGUE_ADD_RELU) {
      ASSERT_EQ(got.dz.size(), masked.dy.size());
      for (size_t i = 0; i < got.dz.size(); ++i) ASSERT_EQ(got.dz[i], masked.dy[i]) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Standard, Fused, ::testing::ValuesIn(fused_cases()), fused_name);

// The backward with the epilogue and no saved statistics (saved_mean and
// saved_rstd NULL: recomputed from x): the mask of the training forward,
// then dz, dx, dgamma and dbeta against the reference fed the masked dy,
// with the exact batch statistics of x. Every layout and dtype, odd shapes,
// every path.
std::vector<FusedParam> recompute_cases() {
  std::vector<FusedParam> out;
  for (bt::Shape s : {bt::Shape{5, 37, 13}, bt::Shape{1, 33, 2}, bt::Shape{4, 3, 1500}})
    for (bnormLayout_t l : {BNORM_LAYOUT_NCHW, BNORM_LAYOUT_NHWC})
      for (bnormDataType_t t : {BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16})
        for (bnormEpilogue_t e : {BNORM_EPILOGUE_RELU, BNORM_EPILOGUE_ADD_RELU})
          out.push_back({Case{s, l, t}, e});
  return out;
}

class FusedRecompute : public ::testing::TestWithParam<FusedParam> {};

TEST_P(FusedRecompute, BackwardWithoutSavedStatisticsMatchesReference) {
  BT_REQUIRE_DEVICE();
  const FusedParam fp = GetParam();
  const Case& k = fp.k;
  bt::Handle h;
  bt::TrainRequest t;
  t.x = bt::random_activations(k, 6100 + uint64_t(k.numel()));
  t.p = bt::random_params(k.s.c, 6150);
  t.save_stats = false;
  if (fp.epilogue == BNORM_EPILOGUE_ADD_RELU)
    t.z = bt::random_activations(k, 6200 + uint64_t(k.numel()), -1.0, 1.0);
  const bnormConfig_t fwd = fused_config(fp.epilogue, BNORM_PATH_AUTO);
  const bt::TrainResult f = bt::forward_training(h, k, fwd, t);
  ASSERT_EQ(f.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
  const RefFused ref_y = ref_fused(k, fwd, t);
  EXPECT_TRUE(mask_matches(f.mask, ref_y, bt::output_tolerance(k.dtype)));

  bt::BackwardRequest r;
  r.x = t.x;
  r.dy = bt::random_activations(k, 6300, -0.5, 0.5, 0.5, 1.5);
  r.gamma = t.p.gamma;
  r.mask = f.mask;  // r.mean and r.stat empty: NULL, recomputed
  bt::BackwardRequest masked = r;
  for (size_t i = 0; i < masked.dy.size(); ++i)
    if (!bit(f.mask, i)) masked.dy[i] = 0.0;
  const bt::RefBackward want = bt::ref_backward(k, BNORM_CONFIG_INITIALIZER, masked, false);
  for (bnormPath_t path : bt::all_paths()) {
    SCOPED_TRACE(bt::path_name(path));
    const bnormConfig_t cfg = fused_config(fp.epilogue, path);
    const bt::BackwardResult got = bt::backward(h, k, cfg, r, false);
    ASSERT_EQ(got.status, BNORM_STATUS_SUCCESS) << bnormGetLastErrorMessage();
    bt::Tolerance tol = bt::output_tolerance(k.dtype);
    tol.atol *= 4.0 * std::max(1.0, want.dx_scale);
    EXPECT_TRUE(bt::all_close(got.dx, want.dx, tol, "dx"));
    ASSERT_EQ(got.dbeta.size(), want.dbeta.size());
    ASSERT_EQ(got.dgamma.size(), want.dgamma.size());
    for (size_t ch = 0; ch < want.dbeta.size(); ++ch) {
      EXPECT_NEAR(got.dbeta[ch], want.dbeta[ch], 1e-5 * want.abs_dbeta[ch] + 1e-6) << "channel " << ch;
      EXPECT_NEAR(got.dgamma[ch], want.dgamma[ch], 1e-5 * want.abs_dgamma[ch] + 1e-6)
          << "channel " << ch;
    }
    if (fp.epilogue == BNORM_EPILOGUE_ADD_RELU) {
      ASSERT_EQ(got.dz.size(), masked.dy.size());
      for (size_t i = 0; i < got.dz.size(); ++i)
        ASSERT_EQ(got.dz[i], masked.dy[i]) << "dz is the masked dy, element " << i;
    } else {
      EXPECT_TRUE(got.dz.empty());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(OddShapes, FusedRecompute, ::testing::ValuesIn(recompute_cases()),
                         fused_name);

// In place: y over the residual (forward), dz over dy (backward), bitwise
// the same results as separate buffers.
class FusedInPlace : public ::testing::TestWithParam<Case> {};

TEST_P(FusedInPlace, YOverResidualAndDzOverDy) {
  BT_REQUIRE_DEVICE();
  const Case k = GetParam();
  const bnormTensorDesc_t d = k.desc();
  bt::Handle h;
  const std::vector<double> x = bt::random_activations(k, 91), z = bt::random_activations(k, 92, -1.0, 1.0);
  const std::vector<double> dy = bt::random_activations(k, 93, -0.5, 0.5);
  size_t fws = 0, bws = 0, mb = 0;
  BT_OK(bnormGetForwardTrainingWorkspaceSize(h, &d, nullptr, &fws));
  BT_OK(bnormGetBackwardWorkspaceSize(h, &d, nullptr, &bws));
  BT_OK(bnormGetReluMaskSize(h, &d, &mb));
  bt::DeviceBuffer xb = bt::upload_tensor(x, k.dtype), ws(fws > bws ? fws : bws), mask(mb);
  bt::DeviceBuffer sm(size_t(k.s.c) * 4), sr(size_t(k.s.c) * 4);
  std::vector<uint8_t> y_sep, y_inp, dx_sep, dx_inp, dz_sep, dz_inp;
  for (bool in_place : {false, true}) {
    bt::DeviceBuffer zb = bt::upload_tensor(z, k.dtype), yb(xb.bytes());
    bt::DeviceBuffer dyb = bt::upload_tensor(dy, k.dtype), dxb(xb.bytes()), dzb(xb.bytes());
    yb.poison();
    dxb.poison();
    dzb.poison();
    bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
    cfg.epilogue = BNORM_EPILOGUE_ADD_RELU;
    cfg.residual = zb.get();
    cfg.relu_mask = mask.get();
    cfg.relu_mask_bytes = mb;
    cfg.residual_grad = in_place ? dyb.get() : dzb.get();
    void* y = in_place ? zb.get() : yb.get();
    BT_OK(bnormForwardTraining(h, nullptr, &d, &cfg, xb.get(), y, nullptr, nullptr, nullptr, nullptr,
                               nullptr, sm.f32(), sr.f32(), ws.get(), ws.bytes()));
    BT_OK(bnormBackward(h, nullptr, &d, &cfg, xb.get(), dyb.get(), dxb.get(), nullptr, sm.f32(),
                        sr.f32(), nullptr, nullptr, ws.get(), ws.bytes()));
    BT_CUDA(cudaDeviceSynchronize());
    (in_place ? y_inp : y_sep) = (in_place ? zb : yb).download();
    (in_place ? dx_inp : dx_sep) = dxb.download();
    (in_place ? dz_inp : dz_sep) = (in_place ? dyb : dzb).download();
  }
  EXPECT_EQ(y_inp, y_sep) << "y written over z";
  EXPECT_EQ(dx_inp, dx_sep) << "dx with dz over dy";
  EXPECT_EQ(dz_inp, dz_sep) << "dz written over dy";
}

INSTANTIATE_TEST_SUITE_P(Standard, FusedInPlace, ::testing::ValuesIn(bt::standard_cases()),
                         bt::CaseName());

// Inference with the epilogue: y = relu(inference(x) + z); the mask is
// optional and, when given, the same decisions.
class FusedInference : public ::testing::TestWithParam<FusedParam> {};

TEST_P(FusedInference, MatchesReference) {
  BT_REQUIRE_DEVICE();
  const FusedParam fp = GetParam();
  const Case& k = fp.k;
  bt::Handle h;
  const bnormTensorDesc_t d = k.desc();
  const std::vector<double> x = bt::random_activations(k, 5300 + uint64_t(k.numel()));
  const std::vector<double> z = bt::random_activations(k, 5400, -1.0, 1.0);
  const bt::ChannelParams p = bt::random_params(k.s.c, 5500);
  const std::vector<double> rm = bt::random_floats(size_t(k.s.c), 5600, -3.0, 3.0);
  const std::vector<double> rv = bt::random_floats(size_t(k.s.c), 5700, 0.25, 4.0);
  bt::DeviceBuffer xb = bt::upload_tensor(x, k.dtype), zb = bt::upload_tensor(z, k.dtype);
  bt::DeviceBuffer yb(xb.bytes()), g = bt::upload_floats(p.gamma), b = bt::upload_floats(p.beta);
  bt::DeviceBuffer m = bt::upload_floats(rm), v = bt::upload_floats(rv);
  size_t mask_bytes = 0;
  BT_OK(bnormGetReluMaskSize(h, &d, &mask_bytes));
  bt::DeviceBuffer mask(mask_bytes);
  for (bool with_mask : {false, true}) {
    yb.poison();
    mask.poison();
    bnormConfig_t cfg = fused_config(fp.epilogue, BNORM_PATH_AUTO);
    if (fp.epilogue == BNORM_EPILOGUE_ADD_RELU) cfg.residual = zb.get();
    if (with_mask) {
      cfg.relu_mask = mask.get();
      cfg.relu_mask_bytes = mask_bytes;
    }
    BT_OK(bnormForwardInference(h, nullptr, &d, &cfg, xb.get(), yb.get(), g.f32(), b.f32(), m.f32(),
                                v.f32()));
    BT_CUDA(cudaDeviceSynchronize());
    std::vector<double> bn(x.size()), want(x.size());
    const bnref_shape sh = k.ref();
    bnref_forward_inference(&sh, x.data(), p.gamma.data(), p.beta.data(), rm.data(), rv.data(),
                            cfg.eps, bn.data());
    bnref_add_relu(int64_t(x.size()), bn.data(),
                   fp.epilogue == BNORM_EPILOGUE_ADD_RELU ? z.data() : nullptr, want.data(), nullptr);
    const std::vector<double> got = bt::decode(yb.download(), k.dtype);
    EXPECT_TRUE(bt::all_close(got, want, bt::output_tolerance(k.dtype), "y"));
    const std::vector<uint8_t> mb = mask.download();
    if (with_mask) {
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i] > 0, bool((mb[i / 8] >> (i % 8)) & 1)) << "mask bit " << i;
    } else {
      for (uint8_t byte : mb) ASSERT_EQ(byte, 0xff) << "the mask was not asked for";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Standard, FusedInference, ::testing::ValuesIn(fused_cases()), fused_name);

// Folding: the folded layer's output equals the layer followed by BN in
// inference.
class Fold : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(Fold, FoldedLayerEqualsLayerThenBatchNorm) {
  BT_REQUIRE_DEVICE();
  const int64_t out = GetParam().first, in = GetParam().second;
  bt::Handle h;
  const bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  const std::vector<double> w = bt::random_floats(size_t(out * in), 60, -1.0, 1.0);
  const std::vector<double> bias = bt::random_floats(size_t(out), 61, -1.0, 1.0);
  const bt::ChannelParams p = bt::random_params(out, 62);
  const std::vector<double> rm = bt::random_floats(size_t(out), 63, -2.0, 2.0);
  const std::vector<double> rv = bt::random_floats(size_t(out), 64, 0.1, 3.0);
  for (bool with_bias : {true, false}) {
    bt::DeviceBuffer wb = bt::upload_floats(w), bb = bt::upload_floats(bias), ob(size_t(out) * 4);
    bt::DeviceBuffer g = bt::upload_floats(p.gamma), be = bt::upload_floats(p.beta);
    bt::DeviceBuffer m = bt::upload_floats(rm), v = bt::upload_floats(rv);
    ob.poison();
    BT_OK(bnormFoldIntoLinear(h, nullptr, out, in, &cfg, g.f32(), be.f32(), m.f32(), v.f32(),
                              wb.f32(), with_bias ? bb.f32() : nullptr, ob.f32()));
    BT_CUDA(cudaDeviceSynchronize());
    const std::vector<float> wf = wb.download_f32(), bf = ob.download_f32();
    // Three random inputs through both.
    for (uint64_t s = 0; s < 3; ++s) {
      const std::vector<double> x = bt::random_floats(size_t(in), 70 + s, -2.0, 2.0);
      for (int64_t o = 0; o < out; ++o) {
        double layer = with_bias ? bias[size_t(o)] : 0.0, folded = bf[size_t(o)];
        for (int64_t i = 0; i < in; ++i) {
          layer += w[size_t(o * in + i)] * x[size_t(i)];
          folded += double(wf[size_t(o * in + i)]) * x[size_t(i)];
        }
        const double bn = p.gamma[size_t(o)] * (layer - rm[size_t(o)]) /
                              std::sqrt(rv[size_t(o)] + cfg.eps) + p.beta[size_t(o)];
        EXPECT_NEAR(folded, bn, 2e-5 * (1.0 + std::fabs(bn) + double(in))) << "out " << o;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layers, Fold,
                         ::testing::Values(std::make_pair(int64_t(1), int64_t(1)),
                                           std::make_pair(int64_t(7), int64_t(13)),
                                           std::make_pair(int64_t(64), int64_t(3)),
                                           std::make_pair(int64_t(300), int64_t(257))));

// Error paths: a clear status naming the argument, and nothing written.
class FusedErrors : public ::testing::TestWithParam<bnormDataType_t> {};

TEST_P(FusedErrors, MissingOrShortEpilogueArgumentsWriteNothing) {
  BT_REQUIRE_DEVICE();
  const Case k{{3, 5, 7}, BNORM_LAYOUT_NHWC, GetParam()};
  const bnormTensorDesc_t d = k.desc();
  bt::Handle h;
  const std::vector<double> x = bt::random_activations(k, 80);
  bt::DeviceBuffer xb = bt::upload_tensor(x, k.dtype), zb = bt::upload_tensor(x, k.dtype);
  bt::DeviceBuffer yb(xb.bytes()), dzb(xb.bytes());
  bt::DeviceBuffer rm = bt::upload_floats(std::vector<double>(5, 0.5));
  bt::DeviceBuffer rv = bt::upload_floats(std::vector<double>(5, 2.0));
  size_t ws_bytes = 0, mask_bytes = 0;
  BT_OK(bnormGetBackwardWorkspaceSize(h, &d, nullptr, &ws_bytes));
  BT_OK(bnormGetReluMaskSize(h, &d, &mask_bytes));
  ASSERT_EQ(mask_bytes, size_t((k.numel() + 31) / 32 * 4));
  bt::DeviceBuffer ws(ws_bytes), mask(mask_bytes);
  yb.poison();
  mask.poison();
  dzb.poison();
  const std::vector<uint8_t> y0 = yb.download(), rm0 = rm.download(), mask0 = mask.download();

  struct Bad {
    const char* what;
    bnormEpilogue_t e;
    bool z, m;
    size_t mbytes;
    bnormStatus_t status;
    const char* names;
  };
  const Bad bad[] = {
      {"ADD_RELU without z", BNORM_EPILOGUE_ADD_RELU, false, true, mask_bytes,
       BNORM_STATUS_NULL_POINTER, "config->residual"},
      {"RELU without mask", BNORM_EPILOGUE_RELU, false, false, mask_bytes,
       BNORM_STATUS_NULL_POINTER, "config->relu_mask"},
      {"mask one word short", BNORM_EPILOGUE_RELU, false, true, mask_bytes - 4,
       BNORM_STATUS_WORKSPACE_TOO_SMALL, "config->relu_mask_bytes"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
    cfg.epilogue = b.e;
    cfg.residual = b.z ? zb.get() : nullptr;
    cfg.relu_mask = b.m ? mask.get() : nullptr;
    cfg.relu_mask_bytes = b.mbytes;
    EXPECT_EQ(bnormForwardTraining(h, nullptr, &d, &cfg, xb.get(), yb.get(), nullptr, nullptr,
                                   rm.f32(), rv.f32(), nullptr, nullptr, nullptr, ws.get(),
                                   ws_bytes),
              b.status);
    EXPECT_NE(std::strstr(bnormGetLastErrorMessage(), b.names), nullptr)
        << bnormGetLastErrorMessage();
  }
  {
    SCOPED_TRACE("unknown epilogue");
    bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
    const int v = 7;
    std::memcpy(&cfg.epilogue, &v, sizeof v);
    EXPECT_EQ(bnormForwardTraining(h, nullptr, &d, &cfg, xb.get(), yb.get(), nullptr, nullptr,
                                   rm.f32(), rv.f32(), nullptr, nullptr, nullptr, ws.get(),
                                   ws_bytes),
              BNORM_STATUS_INVALID_VALUE);
    EXPECT_NE(std::strstr(bnormGetLastErrorMessage(), "config->epilogue"), nullptr);
  }
  {
    SCOPED_TRACE("mask overlapping y");
    bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
    cfg.epilogue = BNORM_EPILOGUE_RELU;
    cfg.relu_mask = yb.get();
    cfg.relu_mask_bytes = mask_bytes;
    EXPECT_EQ(bnormForwardTraining(h, nullptr, &d, &cfg, xb.get(), yb.get(), nullptr, nullptr,
                                   rm.f32(), rv.f32(), nullptr, nullptr, nullptr, ws.get(),
                                   ws_bytes),
              BNORM_STATUS_BAD_ALIASING);
  }
  {
    SCOPED_TRACE("backward ADD_RELU without dz, and without mask");
    bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
    cfg.epilogue = BNORM_EPILOGUE_ADD_RELU;
    cfg.relu_mask = mask.get();
    cfg.relu_mask_bytes = mask_bytes;
    EXPECT_EQ(bnormBackward(h, nullptr, &d, &cfg, xb.get(), zb.get(), yb.get(), nullptr, nullptr,
                            nullptr, nullptr, nullptr, ws.get(), ws_bytes),
              BNORM_STATUS_NULL_POINTER);
    EXPECT_NE(std::strstr(bnormGetLastErrorMessage(), "config->residual_grad"), nullptr);
    cfg.residual_grad = dzb.get();
    cfg.relu_mask = nullptr;
    EXPECT_EQ(bnormBackward(h, nullptr, &d, &cfg, xb.get(), zb.get(), yb.get(), nullptr, nullptr,
                            nullptr, nullptr, nullptr, ws.get(), ws_bytes),
              BNORM_STATUS_NULL_POINTER);
    EXPECT_NE(std::strstr(bnormGetLastErrorMessage(), "config->relu_mask"), nullptr);
  }
  BT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(yb.download(), y0) << "y was written by a failed call";
  EXPECT_EQ(rm.download(), rm0) << "running_mean was written by a failed call";
  EXPECT_EQ(mask.download(), mask0) << "the mask was written by a failed call";
  for (uint8_t byte : dzb.download()) ASSERT_EQ(byte, 0xff) << "dz was written by a failed call";
}

// Inference and the frozen backward: ADD_RELU without z, a given mask too
// short (inference), no mask and ADD_RELU without dz (frozen backward). Each
// gives the documented status with a message naming the argument, and every
// output, the mask and the running statistics keep their bytes.
TEST_P(FusedErrors, InferenceAndFrozenBackwardArgumentsWriteNothing) {
  BT_REQUIRE_DEVICE();
  const Case k{{3, 5, 7}, BNORM_LAYOUT_NCHW, GetParam()};
  const bnormTensorDesc_t d = k.desc();
  bt::Handle h;
  const std::vector<double> x = bt::random_activations(k, 81);
  bt::DeviceBuffer xb = bt::upload_tensor(x, k.dtype), zb = bt::upload_tensor(x, k.dtype);
  bt::DeviceBuffer dyb = bt::upload_tensor(bt::random_activations(k, 82, -0.5, 0.5), k.dtype);
  bt::DeviceBuffer yb(xb.bytes()), dxb(xb.bytes()), dzb(xb.bytes());
  bt::DeviceBuffer rm = bt::upload_floats(std::vector<double>(5, 0.5));
  bt::DeviceBuffer rv = bt::upload_floats(std::vector<double>(5, 2.0));
  bt::DeviceBuffer g = bt::upload_floats(std::vector<double>(5, 1.5));
  bt::DeviceBuffer dg(5 * 4), db(5 * 4);
  size_t ws_bytes = 0, mask_bytes = 0;
  BT_OK(bnormGetBackwardFrozenWorkspaceSize(h, &d, nullptr, &ws_bytes));
  BT_OK(bnormGetReluMaskSize(h, &d, &mask_bytes));
  bt::DeviceBuffer ws(ws_bytes ? ws_bytes : 16), mask(mask_bytes);
  yb.poison();
  dxb.poison();
  dzb.poison();
  dg.poison();
  db.poison();
  // The mask a backward would read: a pattern, not the poison.
  std::vector<uint8_t> pattern(mask_bytes);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = uint8_t(0x5a ^ (i * 37));
  mask.upload(pattern);
  const bt::DeviceBuffer* watched[] = {&xb, &zb, &dyb, &yb, &dxb, &dzb, &rm, &rv, &g, &dg, &db, &mask};
  const char* names[] = {"x", "z", "dy", "y", "dx", "dz", "running_mean", "running_var",
                         "gamma", "dgamma", "dbeta", "mask"};
  std::vector<std::vector<uint8_t>> before;
  for (const bt::DeviceBuffer* b : watched) before.push_back(b->download());

  struct Bad {
    const char* what;
    bool frozen;
    bnormEpilogue_t e;
    bool z, m, dz;
    size_t mbytes;
    bnormStatus_t status;
    const char* names;
  };
  const Bad bad[] = {
      {"inference ADD_RELU without z", false, BNORM_EPILOGUE_ADD_RELU, false, false, false, 0,
       BNORM_STATUS_NULL_POINTER, "config->residual"},
      {"inference ADD_RELU without z, with a mask", false, BNORM_EPILOGUE_ADD_RELU, false, true,
       false, mask_bytes, BNORM_STATUS_NULL_POINTER, "config->residual"},
      {"inference RELU, mask one word short", false, BNORM_EPILOGUE_RELU, false, true, false,
       mask_bytes - 4, BNORM_STATUS_WORKSPACE_TOO_SMALL, "config->relu_mask_bytes"},
      {"inference ADD_RELU, mask of 0 bytes", false, BNORM_EPILOGUE_ADD_RELU, true, true, false, 0,
       BNORM_STATUS_WORKSPACE_TOO_SMALL, "config->relu_mask_bytes"},
      {"frozen RELU without mask", true, BNORM_EPILOGUE_RELU, false, false, false, mask_bytes,
       BNORM_STATUS_NULL_POINTER, "config->relu_mask"},
      {"frozen ADD_RELU without mask", true, BNORM_EPILOGUE_ADD_RELU, false, false, true,
       mask_bytes, BNORM_STATUS_NULL_POINTER, "config->relu_mask"},
      {"frozen ADD_RELU without dz", true, BNORM_EPILOGUE_ADD_RELU, false, true, false, mask_bytes,
       BNORM_STATUS_NULL_POINTER, "config->residual_grad"},
      {"frozen RELU, mask one word short", true, BNORM_EPILOGUE_RELU, false, true, false,
       mask_bytes - 4, BNORM_STATUS_WORKSPACE_TOO_SMALL, "config->relu_mask_bytes"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
    cfg.epilogue = b.e;
    cfg.residual = b.z ? zb.get() : nullptr;
    cfg.relu_mask = b.m ? mask.get() : nullptr;
    cfg.relu_mask_bytes = b.mbytes;
    cfg.residual_grad = b.dz ? dzb.get() : nullptr;
    const bnormStatus_t s =
        b.frozen ? bnormBackwardFrozen(h, nullptr, &d, &cfg, xb.get(), dyb.get(), dxb.get(), g.f32(),
                                       rm.f32(), rv.f32(), dg.f32(), db.f32(), ws.get(), ws_bytes)
                 : bnormForwardInference(h, nullptr, &d, &cfg, xb.get(), yb.get(), g.f32(), nullptr,
                                         rm.f32(), rv.f32());
    EXPECT_EQ(s, b.status) << bnormGetLastErrorMessage();
    const char* msg = bnormGetLastErrorMessage();
    EXPECT_NE(std::strstr(msg, b.names), nullptr) << msg;
    EXPECT_NE(std::strstr(msg, b.frozen ? "bnormBackwardFrozen" : "bnormForwardInference"), nullptr)
        << msg;
    BT_CUDA(cudaDeviceSynchronize());
    for (size_t i = 0; i < before.size(); ++i)
      EXPECT_EQ(watched[i]->download(), before[i]) << names[i] << " was written by a failed call";
  }
}

INSTANTIATE_TEST_SUITE_P(Types, FusedErrors,
                         ::testing::Values(BNORM_DATA_FLOAT, BNORM_DATA_HALF, BNORM_DATA_BFLOAT16));

}  // namespace

// A ReLU alone ignores config->residual and config->residual_grad (they
// belong to the add): stale pointers left there, even ones that overlap the
// call's own outputs, change nothing. (They used to enter the overlap check:
// BAD_ALIASING.)
TEST(FusedRelu, IgnoresTheAddsPointers) {
  BT_REQUIRE_DEVICE();
  bt::Handle h;
  const Case k{{3, 4, 5}, BNORM_LAYOUT_NCHW, BNORM_DATA_FLOAT};
  const bnormTensorDesc_t d = k.desc();
  size_t fws = 0, bws = 0, mask_bytes = 0;
  ASSERT_EQ(bnormGetForwardTrainingWorkspaceSize(h, &d, nullptr, &fws), BNORM_STATUS_SUCCESS);
  ASSERT_EQ(bnormGetBackwardFrozenWorkspaceSize(h, &d, nullptr, &bws), BNORM_STATUS_SUCCESS);
  ASSERT_EQ(bnormGetReluMaskSize(h, &d, &mask_bytes), BNORM_STATUS_SUCCESS);
  bt::DeviceBuffer x = bt::upload_tensor(bt::random_activations(k, 3), k.dtype);
  bt::DeviceBuffer dy = bt::upload_tensor(bt::random_activations(k, 4), k.dtype);
  bt::DeviceBuffer y(x.bytes()), dx(x.bytes()), mask(mask_bytes), ws(std::max(fws, bws));
  bt::DeviceBuffer rm = bt::upload_floats(std::vector<double>(4, 0.0));
  bt::DeviceBuffer rv = bt::upload_floats(std::vector<double>(4, 1.0));
  bt::DeviceBuffer sm(16), sr(16), dg(16), db(16);
  bnormConfig_t cfg = BNORM_CONFIG_INITIALIZER;
  cfg.epilogue = BNORM_EPILOGUE_RELU;
  cfg.relu_mask = mask.get();
  cfg.relu_mask_bytes = mask_bytes;
  cfg.residual = sm.get();      // overlaps an output of the forward
  cfg.residual_grad = dg.get();  // overlaps an output of the backward
  EXPECT_EQ(bnormForwardTraining(h, nullptr, &d, &cfg, x.get(), y.get(), nullptr, nullptr, rm.f32(),
                                 rv.f32(), nullptr, sm.f32(), sr.f32(), ws.get(), fws),
            BNORM_STATUS_SUCCESS)
      << bnormGetLastErrorMessage();
  EXPECT_EQ(bnormForwardInference(h, nullptr, &d, &cfg, x.get(), y.get(), nullptr, nullptr,
                                  rm.f32(), rv.f32()),
            BNORM_STATUS_SUCCESS)
      << bnormGetLastErrorMessage();
  EXPECT_EQ(bnormBackwardFrozen(h, nullptr, &d, &cfg, x.get(), dy.get(), dx.get(), nullptr,
                                rm.f32(), rv.f32(), dg.f32(), db.f32(), ws.get(), bws),
            BNORM_STATUS_SUCCESS)
      << bnormGetLastErrorMessage();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

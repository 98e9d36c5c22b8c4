// CUDA soft-mask attention (forward out/lse, backward dq/dk/dv) against the float64 CPU
// reference over a sweep of page sizes, head dims, GQA groups, dtypes, lengths that are
// not multiples of the page or the 64-row tile, budgets below and above the context, and
// temperatures. Fresh random data per case, device outputs poisoned (NaN) first.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/soft_mask_kernels.h"
#include "gpu/gpu_test_util.h"
#include "unique/soft_mask.h"

namespace unique::test {
namespace {

struct SmCase {
  int B, L, Hq, Hkv, D, P, budget, sink, recent;
  float T;
  DType dt;
};

std::string name_of(const SmCase& c) {
  return detail::concat("B", c.B, "_L", c.L, "_Hq", c.Hq, "_Hkv", c.Hkv, "_D", c.D, "_P", c.P, "_budget", c.budget,
                        "_T", c.T, "_", to_string(c.dt));
}

// Max |got - want| relative to max |want| (gradients have many near-zero entries), and no NaN.
void expect_close(const Buf& got, const Buf& want, double tol, const std::string& what) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = got.get(i), w = want.get(i);
    ASSERT_FALSE(std::isnan(g)) << what << ": NaN at " << i << " (element not written?)";
    err = std::max(err, std::abs(g - w));
    scale = std::max(scale, std::abs(w));
  }
  EXPECT_LE(err, tol * std::max(scale, 1e-3)) << what << ": max error " << err << ", max |ref| " << scale;
}

class GpuSoftMask : public ::testing::TestWithParam<SmCase> {};

void run_case(const SmCase& c);

// Every case through both kernel sets: the default (wgmma on sm_90) and mma.sync.
TEST_P(GpuSoftMask, ForwardAndBackwardMatchReference) {
  SKIP_WITHOUT_GPU();
  for (const char* kernel : {"auto", "mma"}) {
    SCOPED_TRACE(std::string("UNIQUE_SOFT_MASK_KERNEL=") + kernel);
    ScopedEnv env({{"UNIQUE_SOFT_MASK_KERNEL", kernel}});
    run_case(GetParam());
  }
}

// On an sm_90 device the default kernels are the wgmma ones (so the sweep above tests them);
// the override is checked by name.
TEST(GpuSoftMask, KernelChoice) {
  SKIP_WITHOUT_GPU();
  int dev = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
#ifdef UNIQUE_CUDA_SM90A
  for (int d : {64, 128}) EXPECT_STREQ(cuda::soft_mask_kernel(d), major == 9 ? "wgmma" : "mma");
#endif
  EXPECT_STREQ(soft_mask_cuda_kernel(128), cuda::soft_mask_kernel(128));  // the public name of the same choice
  {
    ScopedEnv env({{"UNIQUE_SOFT_MASK_KERNEL", "mma"}});
    EXPECT_STREQ(cuda::soft_mask_kernel(128), "mma");
  }
  {
    ScopedEnv env({{"UNIQUE_SOFT_MASK_KERNEL", "fastest"}});
    EXPECT_ERROR_MSG(cuda::soft_mask_kernel(128), "UNIQUE_SOFT_MASK_KERNEL", "auto, mma or wgmma", "fastest");
  }
  if (major != 9) {
    ScopedEnv env({{"UNIQUE_SOFT_MASK_KERNEL", "wgmma"}});
    EXPECT_ERROR_MSG(cuda::soft_mask_kernel(128), "UNIQUE_SOFT_MASK_KERNEL", "wgmma:");
  }
}

void run_case(const SmCase& c) {
  AttentionConfig cfg;
  cfg.page_size = c.P;
  cfg.budget_tokens = c.budget;
  cfg.sink_pages = c.sink;
  cfg.recent_pages = c.recent;
  cfg.temperature = c.T;
  cfg.alpha = 1.0f;
  const size_t nq = size_t(c.B) * c.L * c.Hq * c.D, nk = size_t(c.B) * c.L * c.Hkv * c.D;
  const size_t nl = size_t(c.B) * c.L * c.Hq;
  std::mt19937_64 rng(std::hash<std::string>{}(name_of(c)));
  std::normal_distribution<float> n01(0.0f, 1.0f);
  Buf q(c.dt, nq), k(c.dt, nk), v(c.dt, nk), go(c.dt, nq);
  for (size_t i = 0; i < nq; ++i) q.set(i, n01(rng));
  for (size_t i = 0; i < nq; ++i) go.set(i, n01(rng));
  for (size_t i = 0; i < nk; ++i) v.set(i, n01(rng));
  // Keys drift per page, so page statistics (and the mask) differ between pages.
  std::vector<float> drift(size_t(c.L / c.P + 1) * c.D);
  for (float& x : drift) x = n01(rng);
  for (size_t i = 0; i < nk; ++i) {
    const int d = int(i % c.D);
    const int t = int(i / (size_t(c.Hkv) * c.D)) % c.L;
    k.set(i, drift[size_t(t / c.P) * c.D + d] + 0.5f * n01(rng));
  }
  const std::initializer_list<int64_t> sq = {c.B, c.L, c.Hq, c.D}, sk = {c.B, c.L, c.Hkv, c.D};

  // Reference (fp32 outputs of the float64 computation on the same rounded inputs).
  Buf ro(DType::f32, nq), rl(DType::f32, nl), rq(DType::f32, nq), rk(DType::f32, nk), rv(DType::f32, nk);
  ref::soft_mask_attention_forward(cfg, q.view(sq), k.view(sk), v.view(sk), ro.view(sq), rl.view({c.B, c.L, c.Hq}));
  ref::soft_mask_attention_backward(cfg, q.view(sq), k.view(sk), v.view(sk), ro.view(sq), rl.view({c.B, c.L, c.Hq}),
                                    go.view(sq), rq.view(sq), rk.view(sk), rv.view(sk));

  const size_t e = dtype_size(c.dt);
  Dev dq_in(q.data(), nq * e), dk_in(k.data(), nk * e), dv_in(v.data(), nk * e), dgo(go.data(), nq * e);
  Dev dout(nq * e), dlse(nl * 4), dgq(nq * e), dgk(nk * e), dgv(nk * e);
  for (Dev* d : {&dout, &dlse, &dgq, &dgk, &dgv}) d->poison();
  const TensorView Q = dview(dq_in, c.dt, sq), K = dview(dk_in, c.dt, sk), V = dview(dv_in, c.dt, sk);
  const TensorView O = dview(dout, c.dt, sq), LSE = dview(dlse, DType::f32, {c.B, c.L, c.Hq});
  soft_mask_attention_forward(cfg, Q, K, V, O, LSE);
  soft_mask_attention_backward(cfg, Q, K, V, O, LSE, dview(dgo, c.dt, sq), dview(dgq, c.dt, sq),
                               dview(dgk, c.dt, sk), dview(dgv, c.dt, sk));
  CUDA_OK(cudaDeviceSynchronize());

  Buf o(c.dt, nq), l(DType::f32, nl), gq(c.dt, nq), gk(c.dt, nk), gv(c.dt, nk);
  dout.down(o.data(), nq * e);
  dlse.down(l.data(), nl * 4);
  dgq.down(gq.data(), nq * e);
  dgk.down(gk.data(), nk * e);
  dgv.down(gv.data(), nk * e);
  const bool bf = c.dt == DType::bf16;
  expect_close(o, ro, bf ? 2e-2 : 5e-3, "out");
  expect_close(l, rl, 2e-3, "lse");
  expect_close(gv, rv, bf ? 3e-2 : 1e-2, "dv");
  expect_close(gq, rq, bf ? 3e-2 : 1e-2, "dq");
  expect_close(gk, rk, bf ? 3e-2 : 1e-2, "dk");

  // With tau saved by the forward and read by the backward: the same thresholds (same
  // kernel), so bitwise the same forward outputs; gradients as close to the reference
  // (fp32 atomics make the backward's summation order vary between runs).
  Dev dtau(nl * 4), dout2(nq * e), dlse2(nl * 4), dgq2(nq * e), dgk2(nk * e), dgv2(nk * e);
  for (Dev* d : {&dtau, &dout2, &dlse2, &dgq2, &dgk2, &dgv2}) d->poison();
  const TensorView TAU = dview(dtau, DType::f32, {c.B, c.Hq, c.L});
  const TensorView O2 = dview(dout2, c.dt, sq), LSE2 = dview(dlse2, DType::f32, {c.B, c.L, c.Hq});
  soft_mask_attention_forward(cfg, Q, K, V, O2, LSE2, &TAU);
  soft_mask_attention_backward(cfg, Q, K, V, O2, LSE2, dview(dgo, c.dt, sq), dview(dgq2, c.dt, sq),
                               dview(dgk2, c.dt, sk), dview(dgv2, c.dt, sk), &TAU);
  CUDA_OK(cudaDeviceSynchronize());
  Buf o2(c.dt, nq), gq2(c.dt, nq), gk2(c.dt, nk), gv2(c.dt, nk), tau(DType::f32, nl);
  dout2.down(o2.data(), nq * e);
  dgq2.down(gq2.data(), nq * e);
  dgk2.down(gk2.data(), nk * e);
  dgv2.down(gv2.data(), nk * e);
  dtau.down(tau.data(), nl * 4);
  EXPECT_EQ(std::memcmp(o2.data(), o.data(), nq * e), 0) << "out with tau";
  expect_close(gv2, rv, bf ? 3e-2 : 1e-2, "dv with tau");
  expect_close(gq2, rq, bf ? 3e-2 : 1e-2, "dq with tau");
  expect_close(gk2, rk, bf ? 3e-2 : 1e-2, "dk with tau");
  const std::vector<double> rt = ref::soft_mask_thresholds(cfg, q.view(sq), k.view(sk));
  for (size_t i = 0; i < nl; ++i) {
    const double g = tau.get(i), w = rt[i];
    if (std::isinf(w)) ASSERT_EQ(g, w) << "tau at " << i;
    else ASSERT_NEAR(g, w, 1e-3 * (1.0 + std::abs(w))) << "tau at " << i;
  }
}

// Thresholds of long rows against the float64 reference: 33700 tokens (up to 2100
// candidates: every register-count path of the selection and the shared-memory one; one
// block of 16 warps per SM) and 16000 (up to 1000: the 8-warp blocks, several per SM), at
// budgets of 40, 300 and 900 pages and head dims 64 and 128; periodic keys make many pages'
// statistics, and so their scores, equal (ties at the top-k boundary).
void expect_long_row_thresholds(int L, int D, int budget_pages, bool periodic) {
  SCOPED_TRACE(detail::concat("L ", L, ", D ", D, ", budget ", budget_pages, " pages", periodic ? ", periodic keys" : ""));
  const int B = 1, H = 1;
  AttentionConfig cfg;
  cfg.page_size = 16;
  cfg.budget_tokens = 16 * budget_pages;
  cfg.temperature = 0.1f;
  const size_t n = size_t(B) * L * H * D;
  std::mt19937_64 rng(7 + L + D + budget_pages);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  Buf q(DType::bf16, n), k(DType::bf16, n);
  std::vector<float> drift(size_t(L / 16 + 1) * D);
  for (float& x : drift) x = n01(rng);
  for (size_t i = 0; i < n; ++i) q.set(i, n01(rng));
  for (size_t i = 0; i < n; ++i) {
    const size_t t = i / D, d = i % D;
    k.set(i, periodic ? drift[(t / 16 % 3) * D + d] + 0.5f * drift[(3 + t % 16) * D + d]
                      : drift[(t / 16) * D + d] + 0.5f * n01(rng));
  }
  const std::initializer_list<int64_t> s4 = {B, L, H, D};
  Dev dq(q.data(), n * 2), dk(k.data(), n * 2), dout(n * 2), dlse(size_t(L) * 4), dtau(size_t(L) * 4);
  dtau.poison();
  const TensorView TAU = dview(dtau, DType::f32, {B, H, L});
  soft_mask_attention_forward(cfg, dview(dq, DType::bf16, s4), dview(dk, DType::bf16, s4), dview(dk, DType::bf16, s4),
                              dview(dout, DType::bf16, s4), dview(dlse, DType::f32, {B, L, H}), &TAU);
  CUDA_OK(cudaDeviceSynchronize());
  Buf tau(DType::f32, size_t(L));
  dtau.down(tau.data(), size_t(L) * 4);
  const std::vector<double> rt = ref::soft_mask_thresholds(cfg, q.view(s4), k.view(s4));
  for (int t = 0; t < L; ++t) {
    const double g = tau.get(size_t(t)), w = rt[size_t(t)];
    if (std::isinf(w)) ASSERT_EQ(g, w) << "tau at " << t;
    else ASSERT_NEAR(g, w, 1e-3 * (1.0 + std::abs(w))) << "tau at " << t;
  }
}

TEST(GpuSoftMaskTau, LongRowsMatchReference) {
  SKIP_WITHOUT_GPU();
  expect_long_row_thresholds(33700, 64, 40, false);
  expect_long_row_thresholds(33700, 128, 300, false);
  expect_long_row_thresholds(33700, 64, 40, true);
  expect_long_row_thresholds(33700, 64, 900, false);
  expect_long_row_thresholds(16000, 128, 40, false);
  expect_long_row_thresholds(16000, 64, 300, true);
}

INSTANTIATE_TEST_SUITE_P(
    Sweep, GpuSoftMask,
    ::testing::Values(SmCase{1, 200, 4, 4, 64, 16, 64, 1, 1, 0.1f, DType::bf16},      // group 1
                      SmCase{2, 333, 8, 2, 128, 32, 64, 1, 1, 0.5f, DType::f16},      // group 4, ragged
                      SmCase{1, 517, 4, 1, 128, 64, 128, 1, 2, 0.05f, DType::bf16},   // P 64
                      SmCase{1, 150, 4, 1, 64, 16, 4096, 1, 1, 0.1f, DType::bf16},    // budget >= context
                      SmCase{1, 600, 8, 2, 64, 16, 96, 0, 0, 1.0f, DType::f16},       // no sink, recent 0
                      SmCase{1, 77, 2, 2, 128, 16, 16, 1, 1, 0.2f, DType::bf16},      // short
                      SmCase{1, 430, 4, 1, 64, 32, 64, 2, 1, 0.02f, DType::f16},      // near-hard mask
                      SmCase{1, 1000, 4, 2, 128, 16, 256, 1, 1, 0.1f, DType::bf16},   // 8 key blocks
                      SmCase{2, 700, 4, 4, 64, 64, 128, 1, 1, 0.1f, DType::f16}),     // D 64, P 64, batch 2
    [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(GpuSoftMaskErrors, UnsupportedShapesNameTheArgument) {
  SKIP_WITHOUT_GPU();
  AttentionConfig cfg;
  cfg.page_size = 8;
  cfg.budget_tokens = 64;
  Dev d(1 << 20);
  const TensorView q = dview(d, DType::bf16, {1, 64, 2, 64}), lse = dview(d, DType::f32, {1, 64, 2});
  EXPECT_ERROR_MSG(soft_mask_attention_forward(cfg, q, q, q, q, lse), "page_size", "16, 32 or 64");
  cfg.page_size = 16;
  const TensorView q96 = dview(d, DType::bf16, {1, 64, 2, 96});
  EXPECT_ERROR_MSG(soft_mask_attention_forward(cfg, q96, q96, q96, q96, lse), "head_dim", "64 or 128");
  const TensorView q32 = dview(d, DType::f32, {1, 64, 2, 64});
  EXPECT_ERROR_MSG(soft_mask_attention_forward(cfg, q32, q32, q32, q32, lse), "q.dtype", "bf16 or fp16");
}

}  // namespace
}  // namespace unique::test

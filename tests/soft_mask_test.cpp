// Soft-mask attention (include/unique/soft_mask.h), CPU float64 reference: gradients vs
// central finite differences (including the path through the page statistics), the
// dense and hard top-k limits against independent simple implementations in this file,
// the page weights, strided views, and bad-input errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "cpu/soft_mask_ref.h"
#include "test_util.h"
#include "unique/soft_mask.h"

namespace unique {
namespace {

namespace sm = ref::soft_mask;

struct Shape {
  int B, L, Hq, Hkv, D, P, budget, sink, recent;
  float T;
};

AttentionConfig config_of(const Shape& s) {
  AttentionConfig cfg;
  cfg.page_size = s.P;
  cfg.budget_tokens = s.budget;
  cfg.sink_pages = s.sink;
  cfg.recent_pages = s.recent;
  cfg.temperature = s.T;
  cfg.alpha = 0.7f;
  return cfg;
}

// Keys with per-channel offsets and a per-page drift, so page statistics differ.
sm::Problem random_problem(const Shape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  sm::Problem p;
  p.B = s.B, p.L = s.L, p.Hq = s.Hq, p.Hkv = s.Hkv, p.D = s.D;
  p.q.resize(size_t(s.B) * s.L * s.Hq * s.D);
  p.k.resize(size_t(s.B) * s.L * s.Hkv * s.D);
  p.v.resize(p.k.size());
  for (double& x : p.q) x = n(rng);
  std::vector<double> chan(s.D), drift(size_t(s.L / s.P + 1) * s.D);
  for (double& x : chan) x = 0.5 * n(rng);
  for (double& x : drift) x = n(rng);
  for (size_t i = 0; i < p.k.size(); ++i) {
    const int d = int(i % s.D);
    const int t = int(i / (size_t(s.Hkv) * s.D)) % s.L;
    p.k[i] = chan[d] + drift[size_t(t / s.P) * s.D + d] + (0.3 + 0.2 * (d % 3)) * n(rng);
  }
  for (double& x : p.v) x = n(rng);
  return p;
}

std::vector<double> random_vec(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> x(n);
  for (double& e : x) e = nd(rng);
  return x;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central difference of loss(p) = sum(dout * out(p)) in every element of one input.
std::vector<double> finite_diff(const AttentionConfig& cfg, sm::Problem p, std::vector<double> sm::Problem::*x,
                                const std::vector<double>& tau, const std::vector<double>& dout,
                                const std::vector<double>* frozen = nullptr) {
  const double h = 1e-5;
  std::vector<double> g((p.*x).size()), out, lse;
  for (size_t i = 0; i < g.size(); ++i) {
    const double x0 = (p.*x)[i];
    (p.*x)[i] = x0 + h;
    sm::forward(cfg, p, tau, out, lse, frozen);
    const double lp = dot(out, dout);
    (p.*x)[i] = x0 - h;
    sm::forward(cfg, p, tau, out, lse, frozen);
    const double lm = dot(out, dout);
    (p.*x)[i] = x0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " element " << i;
}

// ---- gradients -----------------------------------------------------------------------------

class SoftMaskGrad : public ::testing::TestWithParam<Shape> {};

TEST_P(SoftMaskGrad, MatchesFiniteDifferencesIncludingStatsPath) {
  const Shape s = GetParam();
  const AttentionConfig cfg = config_of(s);
  const sm::Problem p = random_problem(s, 1234 + s.L);
  const std::vector<double> tau = sm::thresholds(cfg, p);
  const std::vector<double> dout = random_vec(p.q.size(), 99);

  // The mask must be active and not saturated, or the path through s is not exercised.
  const std::vector<double> w = sm::page_weights(cfg, p, tau);
  int soft = 0;
  for (double x : w) soft += x > 0.05 && x < 0.95;
  ASSERT_GT(soft, 10) << "too few unsaturated page weights for the test to mean anything";

  std::vector<double> dq, dk, dv;
  sm::backward(cfg, p, tau, dout, dq, dk, dv);
  expect_close(dq, finite_diff(cfg, p, &sm::Problem::q, tau, dout), 1e-6, "dq");
  const std::vector<double> fd_k = finite_diff(cfg, p, &sm::Problem::k, tau, dout);
  expect_close(dk, fd_k, 1e-6, "dk");
  expect_close(dv, finite_diff(cfg, p, &sm::Problem::v, tau, dout), 1e-6, "dv");

  // With the mask frozen the k-gradient is measurably different: a backward that drops
  // the path through mu/sigma would fail the check above.
  const std::vector<double> fd_k_frozen = finite_diff(cfg, p, &sm::Problem::k, tau, dout, &w);
  EXPECT_GT(max_abs_diff(fd_k, fd_k_frozen), 1e-3);
  const std::vector<double> fd_q_frozen = finite_diff(cfg, p, &sm::Problem::q, tau, dout, &w);
  EXPECT_GT(max_abs_diff(dq, fd_q_frozen), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(SoftMask, SoftMaskGrad,
                         ::testing::Values(Shape{1, 29, 2, 2, 6, 4, 8, 1, 1, 0.5f},    // group 1
                                           Shape{2, 22, 2, 1, 4, 4, 4, 0, 1, 1.0f},    // group 2, no sink
                                           Shape{1, 35, 3, 1, 4, 4, 8, 1, 2, 0.7f},    // group 3, 2 recent
                                           Shape{1, 52, 2, 1, 3, 8, 8, 1, 0, 0.8f}),  // P 8, recent 0
                         [](const auto& info) { return "case" + std::to_string(info.index); });

// ---- limits -----------------------------------------------------------------------------------

// Causal attention of query t over the keys of the pages for which keep(t, j) holds.
std::vector<double> masked_attention(const sm::Problem& p, const AttentionConfig& cfg,
                                     const std::function<bool(int, int, int, int)>& keep) {
  const double c = cfg.scale_for(p.D);
  const int g = p.Hq / p.Hkv;
  std::vector<double> out(p.q.size(), 0.0);
  for (int b = 0; b < p.B; ++b)
    for (int hq = 0; hq < p.Hq; ++hq)
      for (int t = 0; t < p.L; ++t) {
        const double* q = &p.q[((size_t(b) * p.L + t) * p.Hq + hq) * p.D];
        std::vector<double> z;
        std::vector<int> keys;
        for (int s = 0; s <= t; ++s) {
          if (!keep(b, hq, t, s / cfg.page_size)) continue;
          const double* k = &p.k[((size_t(b) * p.L + s) * p.Hkv + hq / g) * p.D];
          double d = 0;
          for (int i = 0; i < p.D; ++i) d += q[i] * k[i];
          z.push_back(c * d);
          keys.push_back(s);
        }
        const double mx = *std::max_element(z.begin(), z.end());
        double sum = 0;
        for (double& x : z) sum += (x = std::exp(x - mx));
        double* o = &out[((size_t(b) * p.L + t) * p.Hq + hq) * p.D];
        for (size_t i = 0; i < keys.size(); ++i)
          for (int d = 0; d < p.D; ++d)
            o[d] += z[i] / sum * p.v[((size_t(b) * p.L + keys[i]) * p.Hkv + hq / g) * p.D + d];
      }
  return out;
}

TEST(SoftMaskLimits, BudgetCoveringContextIsDenseCausal) {
  const Shape s{2, 45, 4, 2, 8, 4, 48, 1, 1, 0.1f};
  const AttentionConfig cfg = config_of(s);
  const sm::Problem p = random_problem(s, 7);
  const std::vector<double> tau = sm::thresholds(cfg, p);
  for (double x : tau) ASSERT_TRUE(std::isinf(x) && x < 0);
  std::vector<double> out, lse;
  sm::forward(cfg, p, tau, out, lse);
  expect_close(out, masked_attention(p, cfg, [](int, int, int, int) { return true; }), 1e-12, "out");
}

TEST(SoftMaskLimits, SmallTemperatureIsHardTopK) {
  for (const Shape s : {Shape{1, 61, 2, 1, 8, 4, 12, 1, 1, 1e-9f}, Shape{2, 40, 2, 2, 6, 4, 8, 0, 2, 1e-9f}}) {
    const AttentionConfig cfg = config_of(s);
    const sm::Problem p = random_problem(s, 11 + s.L);
    // Independent top-k: scores from freshly computed page means and stds.
    const double c = cfg.scale_for(p.D);
    const int P = s.P, g = s.Hq / s.Hkv, kp = cfg.topk_pages();
    auto score = [&](int b, int hq, int t, int j) {
      double acc = 0;
      const double* q = &p.q[((size_t(b) * p.L + t) * p.Hq + hq) * p.D];
      for (int d = 0; d < p.D; ++d) {
        double mu = 0, var = 0;
        for (int i = 0; i < P; ++i) mu += p.k[((size_t(b) * p.L + j * P + i) * p.Hkv + hq / g) * p.D + d] / P;
        for (int i = 0; i < P; ++i) {
          const double e = p.k[((size_t(b) * p.L + j * P + i) * p.Hkv + hq / g) * p.D + d] - mu;
          var += e * e / P;
        }
        acc += q[d] * mu + cfg.alpha * std::abs(q[d]) * std::sqrt(var);
      }
      return c * acc;
    };
    auto keep = [&](int b, int hq, int t, int j) {
      const int own = t / P;
      if (j < s.sink || j > own - std::max(s.recent, 1)) return true;
      std::vector<std::pair<double, int>> cand;
      for (int i = s.sink; i <= own - std::max(s.recent, 1); ++i) cand.push_back({score(b, hq, t, i), i});
      std::sort(cand.begin(), cand.end(), std::greater<>());
      for (int i = 0; i < std::min<int>(kp, int(cand.size())); ++i)
        if (cand[i].second == j) return true;
      return false;
    };
    std::vector<double> out, lse;
    sm::forward(cfg, p, sm::thresholds(cfg, p), out, lse);
    expect_close(out, masked_attention(p, cfg, keep), 1e-6, "out");
  }
}

TEST(SoftMaskWeights, SinkRecentOwnPagesWeighOne) {
  for (const Shape s : {Shape{1, 64, 2, 1, 8, 4, 8, 2, 2, 0.3f}, Shape{1, 50, 2, 2, 8, 4, 4, 1, 0, 0.3f}}) {
    const AttentionConfig cfg = config_of(s);
    const sm::Problem p = random_problem(s, 5);
    const std::vector<double> w = sm::page_weights(cfg, p, sm::thresholds(cfg, p));
    const int NP = (s.L + s.P - 1) / s.P;
    int candidates = 0;
    for (int h = 0; h < s.Hq; ++h)
      for (int t = 0; t < s.L; ++t) {
        const int own = t / s.P, last_cand = own - std::max(s.recent, 1);
        const int n = std::max(0, last_cand - s.sink + 1);
        for (int j = 0; j < NP; ++j) {
          const double x = w[(size_t(h) * s.L + t) * NP + j];
          if (j > own) EXPECT_EQ(x, 0.0);
          else if (j < s.sink || j > last_cand || n <= cfg.topk_pages()) EXPECT_EQ(x, 1.0) << "t " << t << " j " << j;
          else {
            EXPECT_GT(x, 0.0);
            EXPECT_LT(x, 1.0);
            ++candidates;
          }
        }
      }
    EXPECT_GT(candidates, 0);
  }
}

// ---- the public API (views, dtypes, strides) ---------------------------------------------

TEST(SoftMaskApi, ViewsAndStridedLayoutMatchCore) {
  const Shape s{2, 33, 4, 2, 8, 4, 8, 1, 1, 0.4f};
  const AttentionConfig cfg = config_of(s);
  const sm::Problem p = random_problem(s, 3);
  const std::vector<double> gout = random_vec(p.q.size(), 4);
  // torch layout [B, H, L, D] storage, passed as strided [B, L, H, D] views.
  auto to_bhld = [&](const std::vector<double>& x, int H) {
    test::Buf buf(DType::f32, x.size());
    for (int b = 0; b < s.B; ++b)
      for (int t = 0; t < s.L; ++t)
        for (int h = 0; h < H; ++h)
          for (int d = 0; d < s.D; ++d)
            buf.set(((size_t(b) * H + h) * s.L + t) * s.D + d, float(x[((size_t(b) * s.L + t) * H + h) * s.D + d]));
    return buf;
  };
  auto view = [&](test::Buf& buf, int H) {
    TensorView v = buf.view({s.B, H, s.L, s.D});
    std::swap(v.shape[1], v.shape[2]);
    std::swap(v.stride[1], v.stride[2]);
    return v;
  };
  test::Buf q = to_bhld(p.q, s.Hq), k = to_bhld(p.k, s.Hkv), v = to_bhld(p.v, s.Hkv), go = to_bhld(gout, s.Hq);
  test::Buf out = to_bhld(p.q, s.Hq), dq = to_bhld(p.q, s.Hq), dk = to_bhld(p.k, s.Hkv), dv = to_bhld(p.k, s.Hkv);
  test::Buf lse(DType::f32, size_t(s.B) * s.L * s.Hq);
  for (auto* b : {&out, &dq, &dk, &dv, &lse}) b->poison();
  soft_mask_attention_forward(cfg, view(q, s.Hq), view(k, s.Hkv), view(v, s.Hkv), view(out, s.Hq),
                              lse.view({s.B, s.L, s.Hq}));
  soft_mask_attention_backward(cfg, view(q, s.Hq), view(k, s.Hkv), view(v, s.Hkv), view(out, s.Hq),
                               lse.view({s.B, s.L, s.Hq}), view(go, s.Hq), view(dq, s.Hq), view(dk, s.Hkv),
                               view(dv, s.Hkv));
  // The core on the same float-rounded inputs.
  sm::Problem pf = p;
  for (auto* x : {&pf.q, &pf.k, &pf.v})
    for (double& e : *x) e = float(e);
  std::vector<double> gf = gout;
  for (double& e : gf) e = float(e);
  const std::vector<double> tau = sm::thresholds(cfg, pf);
  std::vector<double> ro, rl, rq, rk, rv;
  sm::forward(cfg, pf, tau, ro, rl);
  sm::backward(cfg, pf, tau, gf, rq, rk, rv);
  auto check = [&](const test::Buf& buf, const std::vector<double>& want, int H, const char* what) {
    for (int b = 0; b < s.B; ++b)
      for (int t = 0; t < s.L; ++t)
        for (int h = 0; h < H; ++h)
          for (int d = 0; d < s.D; ++d) {
            const double w = want[((size_t(b) * s.L + t) * H + h) * s.D + d];
            ASSERT_NEAR(buf.get(((size_t(b) * H + h) * s.L + t) * s.D + d), w, 1e-5 * (1 + std::abs(w))) << what;
          }
  };
  check(out, ro, s.Hq, "out");
  check(dq, rq, s.Hq, "dq");
  check(dk, rk, s.Hkv, "dk");
  check(dv, rv, s.Hkv, "dv");
  for (size_t i = 0; i < rl.size(); ++i) ASSERT_NEAR(lse.get(i), rl[i], 1e-5 * (1 + std::abs(rl[i])));
  // The page-weight helper agrees with the core.
  const std::vector<double> w = ref::soft_mask_page_weights(cfg, view(q, s.Hq), view(k, s.Hkv));
  EXPECT_LT(max_abs_diff(w, sm::page_weights(cfg, pf, tau)), 1e-12);
}

// ---- bad input --------------------------------------------------------------------------------

TEST(SoftMaskErrors, BadArgumentsNameTheArgument) {
  const int B = 1, L = 20, Hq = 4, Hkv = 2, D = 8;
  test::Buf q(DType::f32, B * L * Hq * D), k(DType::f32, B * L * Hkv * D), v(DType::f32, B * L * Hkv * D),
      out(DType::f32, B * L * Hq * D), lse(DType::f32, B * L * Hq), k3(DType::f32, B * L * 3 * D);
  AttentionConfig cfg;
  cfg.page_size = 4;
  cfg.budget_tokens = 8;
  auto fwd = [&](const AttentionConfig& c, const TensorView& kk, const TensorView& l) {
    soft_mask_attention_forward(c, q.view({B, L, Hq, D}), kk, v.view({B, L, Hkv, D}), out.view({B, L, Hq, D}), l);
  };
  const TensorView kv = k.view({B, L, Hkv, D}), lv = lse.view({B, L, Hq});
  fwd(cfg, kv, lv);  // the good call works
  EXPECT_ERROR_MSG(fwd(cfg, k3.view({B, L, 3, D}), lv), "k num_kv_heads", "divisor of num_qo_heads (4)", "got 3");
  EXPECT_ERROR_MSG(fwd(cfg, k.view({B, L, Hkv * 2, D / 2}), lv), "k: expected shape [1, 20, *, 8]");
  EXPECT_ERROR_MSG(fwd(cfg, kv, lse.view({B, L * Hq})), "lse: expected shape [1, 20, 4]");
  test::Buf lse16(DType::bf16, B * L * Hq);
  EXPECT_ERROR_MSG(fwd(cfg, kv, lse16.view({B, L, Hq})), "lse", "fp32", "bf16");
  AttentionConfig bad = cfg;
  bad.temperature = 0.0f;
  EXPECT_ERROR_MSG(fwd(bad, kv, lv), "temperature: expected a finite number > 0, got 0");
  bad = cfg;
  bad.budget_tokens = 2;
  EXPECT_ERROR_MSG(fwd(bad, kv, lv), "budget_tokens: expected >= page_size (4), got 2");
  bad = cfg;
  bad.offset = OffsetForm::norm;
  EXPECT_ERROR_MSG(fwd(bad, kv, lv), "offset: expected channel", "got norm");
  TensorView kc = kv;
  kc.device = Device::cuda;
  EXPECT_ERROR_MSG(fwd(cfg, kc, lv), "k", "cpu", "cuda");
  test::Buf dq(DType::f32, B * L * Hq * D), dk(DType::f32, B * L * Hkv * D), dv(DType::f32, B * L * Hkv * D);
  auto bwd_bad_dv = [&] {
    soft_mask_attention_backward(cfg, q.view({B, L, Hq, D}), kv, v.view({B, L, Hkv, D}), out.view({B, L, Hq, D}),
                                 lv, out.view({B, L, Hq, D}), dq.view({B, L, Hq, D}), dk.view({B, L, Hkv, D}),
                                 dv.view({B, L, Hkv, D / 2}));
  };
  EXPECT_ERROR_MSG(bwd_bad_dv(), "dv: expected shape [1, 20, 2, 8]");
  auto null_q = [&] {
    TensorView nul = q.view({B, L, Hq, D});
    nul.data = nullptr;
    soft_mask_attention_forward(cfg, nul, kv, v.view({B, L, Hkv, D}), out.view({B, L, Hq, D}), lv);
  };
  EXPECT_ERROR_MSG(null_q(), "q");
  test::Buf tau(DType::f32, B * Hq * L);
  auto fwd_tau = [&](const TensorView& t) {
    soft_mask_attention_forward(cfg, q.view({B, L, Hq, D}), kv, v.view({B, L, Hkv, D}), out.view({B, L, Hq, D}), lv,
                                &t);
  };
  fwd_tau(tau.view({B, Hq, L}));  // the good call works
  EXPECT_ERROR_MSG(fwd_tau(tau.view({B, L, Hq})), "tau: expected shape [1, 4, 20]");
  EXPECT_ERROR_MSG(fwd_tau(lse16.view({B, Hq, L})), "tau", "fp32", "bf16");
}

// The forward's optional tau output holds the thresholds of ref::soft_mask_thresholds
// (-inf for queries with no more candidates than the budget); the backward accepts it.
TEST(SoftMaskApi, ForwardWritesThresholds) {
  const int B = 2, L = 40, Hq = 4, Hkv = 2, D = 8;
  std::mt19937 rng(3);
  std::normal_distribution<float> n01;
  test::Buf q(DType::f32, B * L * Hq * D), k(DType::f32, B * L * Hkv * D), v(DType::f32, B * L * Hkv * D),
      out(DType::f32, B * L * Hq * D), lse(DType::f32, B * L * Hq), tau(DType::f32, B * Hq * L);
  for (size_t i = 0; i < q.size(); ++i) q.set(i, n01(rng));
  for (size_t i = 0; i < k.size(); ++i) k.set(i, n01(rng));
  for (size_t i = 0; i < v.size(); ++i) v.set(i, n01(rng));
  AttentionConfig cfg;
  cfg.page_size = 4;
  cfg.budget_tokens = 8;
  const TensorView Q = q.view({B, L, Hq, D}), K = k.view({B, L, Hkv, D}), V = v.view({B, L, Hkv, D});
  const TensorView T = tau.view({B, Hq, L});
  soft_mask_attention_forward(cfg, Q, K, V, out.view({B, L, Hq, D}), lse.view({B, L, Hq}), &T);
  const std::vector<double> want = ref::soft_mask_thresholds(cfg, Q, K);
  ASSERT_EQ(want.size(), tau.size());
  int masked = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(tau.get(i), static_cast<float>(want[i])) << i;
    masked += std::isfinite(want[i]);
  }
  EXPECT_GT(masked, 0);
  EXPECT_LT(masked, int(want.size()));
  test::Buf dq(DType::f32, q.size()), dk(DType::f32, k.size()), dv(DType::f32, v.size()), dq2(DType::f32, q.size());
  soft_mask_attention_backward(cfg, Q, K, V, out.view({B, L, Hq, D}), lse.view({B, L, Hq}), out.view({B, L, Hq, D}),
                               dq.view({B, L, Hq, D}), dk.view({B, L, Hkv, D}), dv.view({B, L, Hkv, D}), &T);
  soft_mask_attention_backward(cfg, Q, K, V, out.view({B, L, Hq, D}), lse.view({B, L, Hq}), out.view({B, L, Hq, D}),
                               dq2.view({B, L, Hq, D}), dk.view({B, L, Hkv, D}), dv.view({B, L, Hkv, D}));
  for (size_t i = 0; i < dq.size(); ++i) EXPECT_EQ(dq.get(i), dq2.get(i)) << i;
}

}  // namespace
}  // namespace unique

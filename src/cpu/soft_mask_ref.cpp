// Reference soft-mask attention (include/unique/soft_mask.h): plain loops in double, one
// query row at a time, written to mirror the header's formulas rather than to be fast.
#include "cpu/soft_mask_ref.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "unique/error.h"
#include "unique/soft_mask.h"

namespace unique::ref {

namespace soft_mask {

namespace {

constexpr double kNoMask = -std::numeric_limits<double>::infinity();

// log(sigmoid(x)) without overflow or log(0): min(x, 0) - log1p(exp(-|x|)).
double log_sigmoid(double x) { return std::min(x, 0.0) - std::log1p(std::exp(-std::abs(x))); }

struct Ctx {
  const AttentionConfig& cfg;
  const Problem& p;
  int P, group, NP;  // NP = pages including a partial last one
  double scale;
  std::vector<double> mu, sig;  // [B][Hkv][L/P][D], complete pages only

  Ctx(const AttentionConfig& c, const Problem& pr)
      : cfg(c), p(pr), P(c.page_size), group(pr.Hq / pr.Hkv), NP((pr.L + c.page_size - 1) / c.page_size),
        scale(c.scale_for(pr.D)) {
    const int NC = p.L / P;
    mu.assign(size_t(p.B) * p.Hkv * NC * p.D, 0.0);
    sig.assign(mu.size(), 0.0);
    for (int b = 0; b < p.B; ++b)
      for (int h = 0; h < p.Hkv; ++h)
        for (int j = 0; j < NC; ++j)
          for (int d = 0; d < p.D; ++d) {
            double m = 0, v = 0;
            for (int i = 0; i < P; ++i) m += kv(p.k, b, j * P + i, h, d);
            m /= P;
            for (int i = 0; i < P; ++i) v += (kv(p.k, b, j * P + i, h, d) - m) * (kv(p.k, b, j * P + i, h, d) - m);
            mu[stat(b, h, j) + d] = m;
            sig[stat(b, h, j) + d] = std::sqrt(v / P);
          }
  }
  size_t qi(int b, int t, int h) const { return ((size_t(b) * p.L + t) * p.Hq + h) * p.D; }
  size_t ki(int b, int s, int h) const { return ((size_t(b) * p.L + s) * p.Hkv + h) * p.D; }
  double kv(const std::vector<double>& x, int b, int s, int h, int d) const { return x[ki(b, s, h) + d]; }
  size_t stat(int b, int h, int j) const { return ((size_t(b) * p.Hkv + h) * (p.L / P) + j) * p.D; }
  // Candidate pages of query t: sink_pages <= j <= t/P - max(recent_pages, 1).
  int first_cand() const { return cfg.sink_pages; }
  int last_cand(int t) const { return t / P - std::max(cfg.recent_pages, 1); }
  double score(int b, int hq, int t, int j) const {
    const int h = hq / group;
    const double* q = &p.q[qi(b, t, hq)];
    double dot = 0, off = 0;
    for (int d = 0; d < p.D; ++d) {
      dot += q[d] * mu[stat(b, h, j) + d];
      off += std::abs(q[d]) * sig[stat(b, h, j) + d];
    }
    return scale * (dot + cfg.alpha * off);
  }
  // log weight of every visible page 0..t/P of query t (0 for non-candidates).
  std::vector<double> log_weights(int b, int hq, int t, double tau, const std::vector<double>* w) const {
    std::vector<double> lw(t / P + 1, 0.0);
    if (w) {
      for (int j = 0; j <= t / P; ++j) lw[j] = std::log((*w)[((size_t(b) * p.Hq + hq) * p.L + t) * NP + j]);
      return lw;
    }
    if (tau == kNoMask) return lw;
    for (int j = first_cand(); j <= last_cand(t); ++j)
      lw[j] = log_sigmoid((score(b, hq, t, j) - tau) / cfg.temperature);
    return lw;
  }
  // Softmax probabilities of query t over keys 0..t; returns lse.
  double probs(int b, int hq, int t, const std::vector<double>& lw, std::vector<double>& pr) const {
    const int h = hq / group;
    const double* q = &p.q[qi(b, t, hq)];
    pr.assign(t + 1, 0.0);
    double mx = -std::numeric_limits<double>::infinity();
    for (int s = 0; s <= t; ++s) {
      double dot = 0;
      for (int d = 0; d < p.D; ++d) dot += q[d] * kv(p.k, b, s, h, d);
      pr[s] = scale * dot + lw[s / P];
      mx = std::max(mx, pr[s]);
    }
    double sum = 0;
    for (double& x : pr) sum += (x = std::exp(x - mx));
    for (double& x : pr) x /= sum;
    return mx + std::log(sum);
  }
};

}  // namespace

std::vector<double> thresholds(const AttentionConfig& cfg, const Problem& p) {
  Ctx c(cfg, p);
  const int kp = cfg.topk_pages();
  std::vector<double> tau(size_t(p.B) * p.Hq * p.L, kNoMask);
  for (int b = 0; b < p.B; ++b)
    for (int hq = 0; hq < p.Hq; ++hq)
      for (int t = 0; t < p.L; ++t) {
        std::vector<double> s;
        for (int j = c.first_cand(); j <= c.last_cand(t); ++j) s.push_back(c.score(b, hq, t, j));
        if (int(s.size()) <= kp) continue;
        std::sort(s.begin(), s.end(), std::greater<double>());
        tau[(size_t(b) * p.Hq + hq) * p.L + t] = 0.5 * (s[kp - 1] + s[kp]);
      }
  return tau;
}

std::vector<double> page_weights(const AttentionConfig& cfg, const Problem& p, const std::vector<double>& tau) {
  Ctx c(cfg, p);
  std::vector<double> w(size_t(p.B) * p.Hq * p.L * c.NP, 0.0);
  for (int b = 0; b < p.B; ++b)
    for (int hq = 0; hq < p.Hq; ++hq)
      for (int t = 0; t < p.L; ++t) {
        const std::vector<double> lw = c.log_weights(b, hq, t, tau[(size_t(b) * p.Hq + hq) * p.L + t], nullptr);
        for (int j = 0; j <= t / c.P; ++j) w[((size_t(b) * p.Hq + hq) * p.L + t) * c.NP + j] = std::exp(lw[j]);
      }
  return w;
}

void forward(const AttentionConfig& cfg, const Problem& p, const std::vector<double>& tau, std::vector<double>& out,
             std::vector<double>& lse, const std::vector<double>* weights) {
  Ctx c(cfg, p);
  out.assign(p.q.size(), 0.0);
  lse.assign(size_t(p.B) * p.L * p.Hq, 0.0);
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < p.B; ++b)
    for (int hq = 0; hq < p.Hq; ++hq) {
      const int h = hq / c.group;
      std::vector<double> pr;
      for (int t = 0; t < p.L; ++t) {
        const auto lw = c.log_weights(b, hq, t, tau[(size_t(b) * p.Hq + hq) * p.L + t], weights);
        lse[(size_t(b) * p.L + t) * p.Hq + hq] = c.probs(b, hq, t, lw, pr);
        double* o = &out[c.qi(b, t, hq)];
        for (int s = 0; s <= t; ++s)
          for (int d = 0; d < p.D; ++d) o[d] += pr[s] * c.kv(p.v, b, s, h, d);
      }
    }
}

void backward(const AttentionConfig& cfg, const Problem& p, const std::vector<double>& tau,
              const std::vector<double>& dout, std::vector<double>& dq, std::vector<double>& dk,
              std::vector<double>& dv) {
  Ctx c(cfg, p);
  const int P = c.P, D = p.D;
  dq.assign(p.q.size(), 0.0);
  dk.assign(p.k.size(), 0.0);
  dv.assign(p.v.size(), 0.0);
  std::vector<double> dmu(c.mu.size(), 0.0), dsig(c.sig.size(), 0.0);
  // Parallel over KV heads: each thread owns the dk/dv/dmu/dsig rows of its KV head.
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.Hkv; ++h) {
      std::vector<double> pr, dz;
      for (int hq = h * c.group; hq < (h + 1) * c.group; ++hq)
        for (int t = 0; t < p.L; ++t) {
          const double ta = tau[(size_t(b) * p.Hq + hq) * p.L + t];
          const auto lw = c.log_weights(b, hq, t, ta, nullptr);
          c.probs(b, hq, t, lw, pr);
          const double* q = &p.q[c.qi(b, t, hq)];
          const double* go = &dout[c.qi(b, t, hq)];
          double* gq = &dq[c.qi(b, t, hq)];
          // dz_s = p_s (dout . v_s - sum_r p_r dout . v_r): the softmax backward.
          dz.assign(t + 1, 0.0);
          double delta = 0;
          for (int s = 0; s <= t; ++s) {
            double dp = 0;
            for (int d = 0; d < D; ++d) dp += go[d] * c.kv(p.v, b, s, h, d);
            dz[s] = dp;
            delta += pr[s] * dp;
          }
          for (int s = 0; s <= t; ++s) {
            dz[s] = pr[s] * (dz[s] - delta);
            for (int d = 0; d < D; ++d) {
              dv[c.ki(b, s, h) + d] += pr[s] * go[d];
              gq[d] += c.scale * dz[s] * c.kv(p.k, b, s, h, d);
              dk[c.ki(b, s, h) + d] += c.scale * dz[s] * q[d];
            }
          }
          if (ta == kNoMask) continue;
          // Through log m: d log m / ds = (1 - m) / T for each candidate page.
          for (int j = c.first_cand(); j <= c.last_cand(t); ++j) {
            double dbias = 0;
            for (int s = j * P; s < (j + 1) * P; ++s) dbias += dz[s];
            const double m = std::exp(lw[j]);
            const double dx = dbias * (1.0 - m) / cfg.temperature * c.scale;
            const size_t st = c.stat(b, h, j);
            for (int d = 0; d < D; ++d) {
              const double sgn = q[d] > 0 ? 1.0 : (q[d] < 0 ? -1.0 : 0.0);
              gq[d] += dx * (c.mu[st + d] + cfg.alpha * sgn * c.sig[st + d]);
              dmu[st + d] += dx * q[d];
              dsig[st + d] += dx * cfg.alpha * std::abs(q[d]);
            }
          }
        }
      // dmu/dk_i = 1/P; dsigma/dk_i = (k_i - mu) / (P sigma), 0 where sigma == 0.
      for (int j = 0; j < p.L / P; ++j)
        for (int i = j * P; i < (j + 1) * P; ++i)
          for (int d = 0; d < D; ++d) {
            const size_t st = c.stat(b, h, j) + d;
            double g = dmu[st] / P;
            if (c.sig[st] > 0) g += dsig[st] * (c.kv(p.k, b, i, h, d) - c.mu[st]) / (P * c.sig[st]);
            dk[c.ki(b, i, h) + d] += g;
          }
    }
}

}  // namespace soft_mask

namespace {

int64_t off4(const TensorView& t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return a * t.stride[0] + b * t.stride[1] + c * t.stride[2] + d * t.stride[3];
}
std::vector<double> load4(const TensorView& t) {
  std::vector<double> x(size_t(t.numel()));
  size_t i = 0;
  for (int64_t a = 0; a < t.shape[0]; ++a)
    for (int64_t b = 0; b < t.shape[1]; ++b)
      for (int64_t c = 0; c < t.shape[2]; ++c)
        for (int64_t d = 0; d < t.shape[3]; ++d) x[i++] = load_as_float(t.data, t.dtype, off4(t, a, b, c, d));
  return x;
}
void store4(const TensorView& t, const std::vector<double>& x) {
  size_t i = 0;
  for (int64_t a = 0; a < t.shape[0]; ++a)
    for (int64_t b = 0; b < t.shape[1]; ++b)
      for (int64_t c = 0; c < t.shape[2]; ++c)
        for (int64_t d = 0; d < t.shape[3]; ++d)
          store_from_float(t.data, t.dtype, off4(t, a, b, c, d), static_cast<float>(x[i++]));
}
soft_mask::Problem problem(const TensorView& q, const TensorView& k, const TensorView& v) {
  soft_mask::Problem p;
  p.B = int(q.shape[0]);
  p.L = int(q.shape[1]);
  p.Hq = int(q.shape[2]);
  p.Hkv = int(k.shape[2]);
  p.D = int(q.shape[3]);
  p.q = load4(q);
  p.k = load4(k);
  p.v = load4(v);
  return p;
}

}  // namespace

void soft_mask_attention_forward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const TensorView& out, const TensorView& lse) {
  validate_soft_mask_args(cfg, q, k, v, out, lse);
  const soft_mask::Problem p = problem(q, k, v);
  std::vector<double> o, l;
  soft_mask::forward(cfg, p, soft_mask::thresholds(cfg, p), o, l);
  store4(out, o);
  for (int b = 0; b < p.B; ++b)
    for (int t = 0; t < p.L; ++t)
      for (int h = 0; h < p.Hq; ++h)
        lse.ptr<float>()[b * lse.stride[0] + t * lse.stride[1] + h * lse.stride[2]] =
            static_cast<float>(l[(size_t(b) * p.L + t) * p.Hq + h]);
}

void soft_mask_attention_backward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                  const TensorView& v, const TensorView& out, const TensorView& lse,
                                  const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                  const TensorView& dv) {
  validate_soft_mask_args(cfg, q, k, v, out, lse, &dout, &dq, &dk, &dv);
  const soft_mask::Problem p = problem(q, k, v);
  std::vector<double> gq, gk, gv;
  soft_mask::backward(cfg, p, soft_mask::thresholds(cfg, p), load4(dout), gq, gk, gv);
  store4(dq, gq);
  store4(dk, gk);
  store4(dv, gv);
}

std::vector<double> soft_mask_thresholds(const AttentionConfig& cfg, const TensorView& q, const TensorView& k) {
  cfg.validate();
  expect_shape(q, "q", {-1, -1, -1, -1});
  expect_shape(k, "k", {q.shape[0], q.shape[1], -1, q.shape[3]});
  return soft_mask::thresholds(cfg, problem(q, k, k));
}

std::vector<double> soft_mask_page_weights(const AttentionConfig& cfg, const TensorView& q, const TensorView& k) {
  cfg.validate();
  expect_shape(q, "q", {-1, -1, -1, -1});
  expect_shape(k, "k", {q.shape[0], q.shape[1], -1, q.shape[3]});
  const soft_mask::Problem p = problem(q, k, k);
  return soft_mask::page_weights(cfg, p, soft_mask::thresholds(cfg, p));
}

}  // namespace unique::ref

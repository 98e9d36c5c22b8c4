// Reference page scoring and selection: plain loops, double accumulation, full sort.
// The oracle every fast scorer/selector (CPU and CUDA) is tested against.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "attention/validate.h"
#include "cpu/cpu_kernels.h"
#include "unique/detail/hash.h"
#include "unique/error.h"
#include "unique/metrics.h"
#include "unique/selection.h"

namespace unique::ref {

namespace {

double q_at(const TensorView& q, int b, int hq, int d) {
  return load_as_float(q.data, q.dtype, b * q.stride[0] + hq * q.stride[1] + d * q.stride[2]);
}

// Composite score of logical page j of sequence b for query head hq: the best q.k_pooled
// over the page's blocks of cfg.pool tokens (the last block of a partial page or of a
// pool that does not divide the page may be shorter).
double composite_score(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int b,
                       int hq, int h, int j) {
  const int n = seq_pages(kv, b), P = kv.page_size, D = kv.head_dim;
  const int page = kv.page_indices[kv.page_indptr[b] + j];
  const int tokens = j == n - 1 ? kv.last_page_len[b] : P;
  double best = -INFINITY;
  for (int t0 = 0; t0 < tokens; t0 += cfg.pool) {
    const int t1 = std::min(tokens, t0 + cfg.pool);
    double s = 0;
    for (int d = 0; d < D; ++d) {
      double k = 0;
      for (int t = t0; t < t1; ++t) k += load_as_float(kv.k, kv.dtype, kv.kv_offset(page, h) + int64_t(t) * D + d);
      s += q_at(q, b, hq, d) * (k / (t1 - t0));
    }
    best = std::max(best, s);
  }
  return best;
}

// Raw score of logical page j of sequence b for query head hq (not oracle/random).
double raw_score(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int b,
                 int hq, int h, int j) {
  const int page = kv.page_indices[kv.page_indptr[b] + j];
  const int64_t so = kv.stats_offset(page, h);
  // fp8 statistics: the code's value times its pair's scale (exact in double).
  const bool fp8 = kv.stats_dtype == DType::e4m3;
  const double s_unique = fp8 ? kv.stats_scale[kv.scale_offset(page, h)] : 1.0;
  const double s_quest = fp8 ? kv.stats_scale[kv.scale_offset(page, h) + 1] : 1.0;
  auto stat = [&](const void* p, int d) -> double {
    return load_as_float(p, kv.stats_dtype, so + d) * (p == kv.kmin || p == kv.kmax ? s_quest : s_unique);
  };
  double s = 0, off = 0, qn = 0, sn = 0;
  for (int d = 0; d < kv.head_dim; ++d) {
    const double qd = q_at(q, b, hq, d);
    switch (cfg.estimator) {
      case Estimator::quest:
        s += std::max(qd * stat(kv.kmin, d), qd * stat(kv.kmax, d));
        break;
      case Estimator::mean:
        s += qd * stat(kv.mean, d);
        break;
      case Estimator::unique:
        s += qd * stat(kv.mean, d);
        off += std::abs(qd) * stat(kv.std, d);
        qn += qd * qd;
        sn += stat(kv.std, d) * stat(kv.std, d);
        break;
      default:
        break;
    }
  }
  if (cfg.estimator == Estimator::unique)
    s += cfg.alpha * (cfg.offset == OffsetForm::channel ? off : std::sqrt(qn) * std::sqrt(sn));
  return s;
}


}  // namespace

void score_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                 const TensorView& scores) {
  detail::validate_scoring(cfg, q, kv);
  UNIQUE_CHECK_ARG(scores.ndim == 3 && scores.shape[2] >= max_seq_pages(kv) && scores.dtype == DType::f32,
            "scores", "fp32 [batch, num_kv_heads, >= max pages]", scores.shape_str());
  const int H = kv.num_kv_heads, group = static_cast<int>(q.shape[1]) / H;
  const int max_pages = static_cast<int>(scores.shape[2]);
  float* out = scores.ptr<float>();
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int h = 0; h < H; ++h) {
      float* row = out + (int64_t(b) * H + h) * max_pages;
      std::fill(row, row + max_pages, -INFINITY);
      std::vector<double> agg(n, cfg.gqa == GqaAggregation::max ? -INFINITY : 0.0);
      for (int i = 0; i < group; ++i) {
        const int hq = h * group + i;
        std::vector<double> s(n);
        if (cfg.estimator == Estimator::oracle) {
          s = page_attention_mass(q, kv, b, hq, cfg.scale_for(kv.head_dim));
        } else {
          for (int j = 0; j < n; ++j) {
            if (cfg.estimator == Estimator::random)
              s[j] = detail::random_page_score(cfg.seed, b, h, j);
            else if (cfg.estimator == Estimator::dense)
              s[j] = 0;
            else if (cfg.estimator == Estimator::composite)
              s[j] = composite_score(cfg, q, kv, b, hq, h, j);
            else
              s[j] = raw_score(cfg, q, kv, b, hq, h, j);
          }
        }
        // The oracle is already a probability; other scores are softmax-normalised.
        if (cfg.gqa == GqaAggregation::softmax_sum && cfg.estimator != Estimator::oracle) {
          const double scale = cfg.scale_for(kv.head_dim);
          const double m = *std::max_element(s.begin(), s.end());
          double sum = 0;
          for (double& x : s) sum += (x = std::exp((x - m) * scale));
          for (double& x : s) x /= sum;
        }
        for (int j = 0; j < n; ++j)
          agg[j] = cfg.gqa == GqaAggregation::max ? std::max(agg[j], s[j]) : agg[j] + s[j];
      }
      for (int j = 0; j < n; ++j) row[j] = static_cast<float>(agg[j]);
    }
  }
}

void select_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection& out) {
  detail::validate_scoring(cfg, q, kv);
  validate_selection(out, kv, cfg);
  const int H = kv.num_kv_heads, max_pages = max_seq_pages(kv);
  std::vector<float> scores(size_t(kv.batch) * H * max_pages);
  ref::score_pages(cfg, q, kv, make_view(scores.data(), DType::f32, {kv.batch, H, max_pages}));
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int h = 0; h < H; ++h) {
      const float* s = scores.data() + (size_t(b) * H + h) * max_pages;
      std::vector<int> chosen, rest;
      for (int j = 0; j < n; ++j) (cpu::is_forced(cfg, j, n) ? chosen : rest).push_back(j);
      std::sort(rest.begin(), rest.end(),
                [&](int a, int c) { return cpu::ranks_before(s[a], a, s[c], c); });
      const int k = cfg.estimator == Estimator::dense ? n : cfg.topk_pages();
      for (int i = 0; i < std::min<int>(k, rest.size()); ++i) chosen.push_back(rest[i]);
      std::sort(chosen.begin(), chosen.end());
      int32_t* pages = out.pages + (int64_t(b) * H + h) * out.max_selected;
      for (int i = 0; i < out.max_selected; ++i)
        pages[i] = i < static_cast<int>(chosen.size()) ? chosen[i] : -1;
      out.counts[b * H + h] = static_cast<int32_t>(chosen.size());
    }
  }
}

}  // namespace unique::ref

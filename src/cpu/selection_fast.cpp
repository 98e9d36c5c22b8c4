// Fast CPU page scoring + selection: one task per (sequence, KV head), the page
// statistics read once for all query heads of the GQA group, partial selection
// (nth_element) instead of a full sort.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/vec.h"
#include "unique/detail/hash.h"

namespace unique::cpu {

namespace {

inline float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}


// Softmax attention mass per page for each query head (the oracle), into s[i*n + j].
template <class T>
void oracle_mass(const AttentionConfig& cfg, const PagedKV& kv, int b, int h, int group,
                 const float* qg, float* s, std::vector<float>& logits) {
  const int n = seq_pages(kv, b), D = kv.head_dim, P = kv.page_size;
  const int64_t len = seq_len(kv, b);
  const float scale = cfg.scale_for(D);
  const T* K = static_cast<const T*>(kv.k);
  std::vector<float> krow(D);
  logits.resize(size_t(group) * len);
  for (int64_t t = 0; t < len; ++t) {
    const int page = kv.page_indices[kv.page_indptr[b] + t / P];
    const T* kp = K + kv.kv_offset(page, h) + (t % P) * D;
    for (int d = 0; d < D; ++d) krow[d] = to_float(kp[d]);
    for (int i = 0; i < group; ++i) logits[i * len + t] = dot(qg + i * D, krow.data(), D) * scale;
  }
  for (int i = 0; i < group; ++i) {
    float* l = logits.data() + i * len;
    const float m = *std::max_element(l, l + len);
    double sum = 0;
    for (int64_t t = 0; t < len; ++t) sum += (l[t] = std::exp(l[t] - m));
    for (int j = 0; j < n; ++j) s[i * n + j] = 0.0f;
    for (int64_t t = 0; t < len; ++t) s[i * n + t / P] += static_cast<float>(l[t] / sum);
  }
}

// Scores of pages[0..n) for G query heads from the page statistics (stats type S), into
// s[i*n + j]. One pass over the stats rows: each chunk is widened once for all G heads.
// aq = alpha*|q| (channel offset form), so q.mu + alpha*|q|.sigma is one sum per head:
// half the horizontal reductions, which bound this loop once the rows stream from DRAM.
template <class S, int G>
void stats_scores(const AttentionConfig& cfg, const PagedKV& kv, const int32_t* pages, int n,
                  int h, const float* q, const float* aq, const float* qnorm, float* s) {
  const int D = kv.head_dim;
  const S* mean = static_cast<const S*>(kv.mean);
  const S* sdev = static_cast<const S*>(kv.std);
  const S* lo = static_cast<const S*>(kv.kmin);
  const S* hi = static_cast<const S*>(kv.kmax);
  const Estimator e = cfg.estimator;
  const bool channel = cfg.offset == OffsetForm::channel;
  constexpr int kAhead = 8;  // pages: a row is ~30 ns of streaming, DRAM latency ~100+ ns
  for (int j = 0; j < n; ++j) {
    const int64_t so = kv.stats_offset(pages[j], h);
    if (j + kAhead < n) {  // stats rows of one head are strided across pages: prefetch ahead
      const int64_t ahead = kv.stats_offset(pages[j + kAhead], h);
      const void* a = e == Estimator::quest ? static_cast<const void*>(lo + ahead) : mean + ahead;
      const void* b = e == Estimator::quest ? static_cast<const void*>(hi + ahead) : sdev + ahead;
      prefetch_bytes(a, D * sizeof(S));
      if (e != Estimator::mean) prefetch_bytes(b, D * sizeof(S));
    }
    VecF dotv[G] = {}, sd2{};
    for (int d0 = 0; d0 < D; d0 += kW) {
      if (e == Estimator::quest) {
        const VecF l = load_widen(lo + so + d0), u = load_widen(hi + so + d0);
        for (int i = 0; i < G; ++i) {
          const VecF qi = load(q + i * D + d0);
          dotv[i] += vmax(qi * l, qi * u);
        }
        continue;
      }
      const VecF mu = load_widen(mean + so + d0);
      for (int i = 0; i < G; ++i) dotv[i] += load(q + i * D + d0) * mu;
      if (e != Estimator::unique) continue;
      const VecF sd = load_widen(sdev + so + d0);
      if (channel) {
        for (int i = 0; i < G; ++i) dotv[i] += load(aq + i * D + d0) * sd;
      } else {
        sd2 += sd * sd;
      }
    }
    // fp8: codes were summed unscaled; each pair's power-of-two scale applies once here.
    float sc = 1.0f;
    if constexpr (std::is_same_v<S, e4m3>)
      sc = kv.stats_scale[kv.scale_offset(pages[j], h) + (e == Estimator::quest ? 1 : 0)];
    const float sd_norm = e == Estimator::unique && !channel ? sc * std::sqrt(hsum(sd2)) : 0.0f;
    for (int i = 0; i < G; ++i) {
      float v = sc * hsum(dotv[i]);
      if (e == Estimator::unique && !channel) v += cfg.alpha * qnorm[i] * sd_norm;
      s[i * n + j] = v;
    }
  }
}

struct Scratch {
  std::vector<float> q, aq, qnorm, per_head, agg, logits;
  std::vector<int> rest, chosen;
};

// Aggregated scores of the n pages of (b, h) into sc.agg.
void score_one(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int b, int h,
               Scratch& sc) {
  const int D = kv.head_dim, group = static_cast<int>(q.shape[1]) / kv.num_kv_heads;
  const int n = seq_pages(kv, b);
  sc.q.resize(size_t(group) * D);
  sc.qnorm.resize(group);
  sc.per_head.assign(size_t(group) * n, 0.0f);
  sc.agg.assign(n, 0.0f);
  load_query_group(q, b, h, group, D, sc.q.data());
  for (int i = 0; i < group; ++i) sc.qnorm[i] = std::sqrt(dot(&sc.q[i * D], &sc.q[i * D], D));
  sc.aq.resize(sc.q.size());
  for (size_t i = 0; i < sc.q.size(); ++i) sc.aq[i] = cfg.alpha * std::fabs(sc.q[i]);
  const int32_t* pages = kv.page_indices + kv.page_indptr[b];
  float* s = sc.per_head.data();

  switch (cfg.estimator) {
    case Estimator::dense:  // all zeros (every page is selected anyway)
      break;
    case Estimator::random:
      for (int i = 0; i < group; ++i)
        for (int j = 0; j < n; ++j) s[i * n + j] = detail::random_page_score(cfg.seed, b, h, j);
      break;
    case Estimator::oracle:
      dispatch_dtype(kv.dtype, [&](auto t) {
        oracle_mass<decltype(t)>(cfg, kv, b, h, group, sc.q.data(), s, sc.logits);
      });
      break;
    default:
      dispatch_stats_dtype(kv.stats_dtype, [&](auto st) {
        for_head_blocks(group, [&](auto g, int i0) {
          stats_scores<decltype(st), g()>(cfg, kv, pages, n, h, &sc.q[i0 * D], &sc.aq[i0 * D],
                                          sc.qnorm.data() + i0, s + i0 * n);
        });
      });
  }
  if (cfg.gqa == GqaAggregation::max) {
    for (int j = 0; j < n; ++j) sc.agg[j] = -INFINITY;
    for (int i = 0; i < group; ++i)
      for (int j = 0; j < n; ++j) sc.agg[j] = std::max(sc.agg[j], s[i * n + j]);
    return;
  }
  const float scale = cfg.scale_for(D);
  for (int i = 0; i < group; ++i) {
    float* si = s + i * n;
    if (cfg.estimator != Estimator::oracle) {
      const float m = *std::max_element(si, si + n);
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) sum += (si[j] = std::exp((si[j] - m) * scale));
      for (int j = 0; j < n; ++j) si[j] /= sum;
    }
    for (int j = 0; j < n; ++j) sc.agg[j] += si[j];
  }
}

}  // namespace

void score_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                 const TensorView& scores) {
  const int H = kv.num_kv_heads, max_pages = static_cast<int>(scores.shape[2]);
#pragma omp parallel
  {
    Scratch sc;
#pragma omp for schedule(dynamic) collapse(2)
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < H; ++h) {
        score_one(cfg, q, kv, b, h, sc);
        float* row = scores.ptr<float>() + (int64_t(b) * H + h) * max_pages;
        std::copy(sc.agg.begin(), sc.agg.end(), row);
        std::fill(row + sc.agg.size(), row + max_pages, -INFINITY);
      }
  }
}

void select_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection& out) {
  const int H = kv.num_kv_heads;
#pragma omp parallel
  {
    Scratch sc;
#pragma omp for schedule(dynamic) collapse(2)
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < H; ++h) {
        const int n = seq_pages(kv, b);
        const int k = cfg.estimator == Estimator::dense ? n : cfg.topk_pages();
        sc.chosen.clear();
        sc.rest.clear();
        for (int j = 0; j < n; ++j) (is_forced(cfg, j, n) ? sc.chosen : sc.rest).push_back(j);
        if (k < static_cast<int>(sc.rest.size())) {
          score_one(cfg, q, kv, b, h, sc);
          const float* s = sc.agg.data();
          std::nth_element(sc.rest.begin(), sc.rest.begin() + k, sc.rest.end(),
                           [&](int a, int c) { return ranks_before(s[a], a, s[c], c); });
          sc.rest.resize(k);
        }
        sc.chosen.insert(sc.chosen.end(), sc.rest.begin(), sc.rest.end());
        std::sort(sc.chosen.begin(), sc.chosen.end());
        int32_t* pages = out.pages + (int64_t(b) * H + h) * out.max_selected;
        const int c = static_cast<int>(sc.chosen.size());
        std::copy(sc.chosen.begin(), sc.chosen.end(), pages);
        std::fill(pages + c, pages + out.max_selected, -1);
        out.counts[b * H + h] = c;
      }
  }
}

}  // namespace unique::cpu

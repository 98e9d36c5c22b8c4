// Fast CPU page scoring + selection. Statistics estimators score in page-major tasks (64
// pages of one sequence, every KV head of a page together, each row read once for all
// query heads of its GQA group); the others per (sequence, KV head). Then per (sequence,
// KV head): GQA aggregation and a partial selection (nth_element on rank keys).
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

// Softmax attention mass per page for each query head (the oracle), into s[i*stride + j].
template <class T>
void oracle_mass(const AttentionConfig& cfg, const PagedKV& kv, int b, int h, int group,
                 const float* qg, float* s, int stride, std::vector<float>& logits) {
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
    for (int j = 0; j < n; ++j) s[i * stride + j] = 0.0f;
    for (int64_t t = 0; t < len; ++t) s[i * stride + t / P] += static_cast<float>(l[t] / sum);
  }
}

// Per-head scores of every (sequence, KV head): row (b, h, i) of `stride` floats holds
// query head h*group + i's score of each page position of sequence b. Callers keep one per
// thread (thread_local) across calls: a fresh buffer each decode step costs page faults
// and zeroing on the order of the scoring itself.
struct HeadScores {
  int H = 0, group = 0, stride = 0;
  std::vector<float> s;
  float* row(int b, int h) { return s.data() + (int64_t(b) * H + h) * group * stride; }
};

// The query rows of every (sequence, query head) as fp32, alpha*|q| (channel offset form:
// q.mu + alpha*|q|.sigma is then one sum per head) and |q| (norm offset form).
struct Queries {
  int D = 0;
  std::vector<float> q, aq, qnorm;
  Queries(const AttentionConfig& cfg, const TensorView& q_in, const PagedKV& kv) : D(kv.head_dim) {
    const int HQ = static_cast<int>(q_in.shape[1]), group = HQ / kv.num_kv_heads;
    q.resize(size_t(kv.batch) * HQ * D);
    qnorm.resize(size_t(kv.batch) * HQ);
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < kv.num_kv_heads; ++h)
        load_query_group(q_in, b, h, group, D, &q[(size_t(b) * HQ + h * group) * D]);
    aq.resize(q.size());
    for (size_t i = 0; i < q.size(); ++i) aq[i] = cfg.alpha * std::fabs(q[i]);
    for (size_t r = 0; r < qnorm.size(); ++r) qnorm[r] = std::sqrt(dot(&q[r * D], &q[r * D], D));
  }
};

// What a statistics score reads and sums, fixed at compile time so the row loop has no
// branches: unique (channel or norm offset form), quest, mean.
enum class StatsKind { unique_channel, unique_norm, quest, mean };

// Scores of R statistics rows (pages[0..R), KV head h) for G query heads, into
// out[i*stride + r] for r < count (rows past count repeat page 0 and are dropped).
// R*G = 16 accumulators: each q chunk is loaded once for R pages, and hsum16 reduces all
// 16 at once (one horizontal sum per head and page was a fifth of the one-row form's work).
template <class S, int G, StatsKind K>
inline void score_rows(const AttentionConfig& cfg, const PagedKV& kv, const int32_t* pages,
                       int count, int h, const float* q, const float* aq, const float* qnorm,
                       float* out, int stride) {
  constexpr int R = kW / G;
  const int D = kv.head_dim;
  const S* a[R];
  const S* c[R];
  for (int r = 0; r < R; ++r) {
    const int64_t so = kv.stats_offset(pages[r < count ? r : 0], h);
    a[r] = static_cast<const S*>(K == StatsKind::quest ? kv.kmin : kv.mean) + so;
    c[r] = static_cast<const S*>(K == StatsKind::quest ? kv.kmax : kv.std) + so;
  }
  VecF acc[R * G] = {}, sd2[R] = {};
  for (int d0 = 0; d0 < D; d0 += kW) {
    VecF qv[G], av[G];
    for (int i = 0; i < G; ++i) qv[i] = load(q + i * D + d0);
    if constexpr (K == StatsKind::unique_channel)
      for (int i = 0; i < G; ++i) av[i] = load(aq + i * D + d0);
    for (int r = 0; r < R; ++r) {
      const VecF x = load_widen(a[r] + d0);
      if constexpr (K == StatsKind::quest) {
        const VecF u = load_widen(c[r] + d0);
        for (int i = 0; i < G; ++i) acc[r * G + i] += vmax(qv[i] * x, qv[i] * u);
      } else {
        for (int i = 0; i < G; ++i) acc[r * G + i] += qv[i] * x;
        if constexpr (K == StatsKind::unique_channel) {
          const VecF sd = load_widen(c[r] + d0);
          for (int i = 0; i < G; ++i) acc[r * G + i] += av[i] * sd;
        } else if constexpr (K == StatsKind::unique_norm) {
          const VecF sd = load_widen(c[r] + d0);
          sd2[r] += sd * sd;
        }
      }
    }
  }
  const VecF sum = hsum16(acc);
  for (int r = 0; r < count && r < R; ++r) {
    // fp8: codes were summed unscaled; each pair's power-of-two scale applies once here.
    float sc = 1.0f;
    if constexpr (std::is_same_v<S, e4m3>)
      sc = kv.stats_scale[kv.scale_offset(pages[r], h) + (K == StatsKind::quest ? 1 : 0)];
    float sd_norm = 0.0f;
    if constexpr (K == StatsKind::unique_norm) sd_norm = cfg.alpha * sc * std::sqrt(hsum(sd2[r]));
    for (int i = 0; i < G; ++i) out[i * stride + r] = sc * sum[r * G + i] + qnorm[i] * sd_norm;
  }
}

// Statistics scores of page positions [j0, j1) of sequence b for every KV head, kW/G
// pages at a time, the pages' rows of all KV heads next to each other in the scan.
template <class S, StatsKind K>
void score_page_range(const AttentionConfig& cfg, const PagedKV& kv, const Queries& qs, int b,
                      int j0, int j1, HeadScores& hs) {
  const int H = kv.num_kv_heads, D = kv.head_dim, group = hs.group;
  const int32_t* pages = kv.page_indices + kv.page_indptr[b];
  const int row_bytes = D * static_cast<int>(sizeof(S));
  const S* a = static_cast<const S*>(K == StatsKind::quest ? kv.kmin : kv.mean);
  const S* c = static_cast<const S*>(K == StatsKind::quest ? kv.kmax : kv.std);
  for_head_blocks(group, [&](auto g, int i0) {
    constexpr int G = g(), R = kW / G;
    for (int j = j0; j < j1; j += R) {
      for (int h = 0; h < H; ++h) {
        // Pages are scattered: fetch head h's rows of the next R pages while these are
        // scored, spread over the heads rather than in one burst the miss queue drops.
        for (int p = j + R; p < std::min(j + 2 * R, j1); ++p) {
          const int64_t ahead = kv.stats_offset(pages[p], h);
          prefetch_bytes(a + ahead, row_bytes);
          if constexpr (K != StatsKind::mean) prefetch_bytes(c + ahead, row_bytes);
        }
        const int64_t r = (int64_t(b) * H + h) * group + i0;  // first query head of the block
        score_rows<S, G, K>(cfg, kv, pages + j, j1 - j, h, &qs.q[r * D], &qs.aq[r * D],
                            &qs.qnorm[r], hs.row(b, h) + i0 * hs.stride + j, hs.stride);
      }
    }
  });
}

template <StatsKind K>
using KindC = std::integral_constant<StatsKind, K>;

template <class F>
void dispatch_stats_kind(const AttentionConfig& cfg, F&& f) {
  switch (cfg.estimator) {
    case Estimator::quest: return f(KindC<StatsKind::quest>{});
    case Estimator::mean: return f(KindC<StatsKind::mean>{});
    default:
      if (cfg.offset == OffsetForm::channel) return f(KindC<StatsKind::unique_channel>{});
      return f(KindC<StatsKind::unique_norm>{});
  }
}

// Composite scores of (b, h) for the group's query heads, into s[i*stride + j]: each block
// of pool tokens of a page is averaged once (fp32, one chunk at a time) and dotted with
// every head of the group; a page keeps its best block.
template <class T>
void composite_scores(const AttentionConfig& cfg, const PagedKV& kv, const float* q, int b, int h,
                      int group, float* s, int stride) {
  const int n = seq_pages(kv, b), P = kv.page_size, D = kv.head_dim;
  const T* K = static_cast<const T*>(kv.k);
  std::vector<float> pooled(D);
  for (int j = 0; j < n; ++j) {
    const T* kp = K + kv.kv_offset(kv.page_indices[kv.page_indptr[b] + j], h);
    const int tokens = j == n - 1 ? kv.last_page_len[b] : P;
    for (int i = 0; i < group; ++i) s[i * stride + j] = -INFINITY;
    for (int t0 = 0; t0 < tokens; t0 += cfg.pool) {
      const int t1 = std::min(tokens, t0 + cfg.pool);
      const float inv = 1.0f / float(t1 - t0);
      for (int d0 = 0; d0 < D; d0 += kW) {
        VecF sum{};
        for (int t = t0; t < t1; ++t) sum += load_widen(kp + int64_t(t) * D + d0);
        store(&pooled[d0], sum * inv);
      }
      for (int i = 0; i < group; ++i) s[i * stride + j] = std::max(s[i * stride + j], dot(q + i * D, pooled.data(), D));
    }
  }
}

// Scores of the estimators that do not read statistics, for one (b, h).
void score_other(const AttentionConfig& cfg, const PagedKV& kv, const Queries& qs, int b, int h,
                 HeadScores& hs, std::vector<float>& logits) {
  const int n = seq_pages(kv, b), group = hs.group;
  float* s = hs.row(b, h);
  const float* qg = &qs.q[(int64_t(b) * kv.num_kv_heads + h) * group * qs.D];  // the group's heads
  if (cfg.estimator == Estimator::random) {
    for (int i = 0; i < group; ++i)
      for (int j = 0; j < n; ++j) s[i * hs.stride + j] = unique::detail::random_page_score(cfg.seed, b, h, j);
  } else if (cfg.estimator == Estimator::composite) {
    dispatch_dtype(kv.dtype, [&](auto t) { composite_scores<decltype(t)>(cfg, kv, qg, b, h, group, s, hs.stride); });
  } else if (cfg.estimator == Estimator::oracle) {
    dispatch_dtype(kv.dtype, [&](auto t) { oracle_mass<decltype(t)>(cfg, kv, b, h, group, qg, s, hs.stride, logits); });
  } else {  // dense: all zeros (every page is selected anyway)
    for (int i = 0; i < group; ++i) std::fill_n(s + i * hs.stride, n, 0.0f);
  }
}

bool reads_statistics(Estimator e) {
  return e == Estimator::unique || e == Estimator::quest || e == Estimator::mean;
}

// Per-head scores of every page of every sequence in which `wanted(b)`, into hs (all
// threads).
template <class Wanted>
void score_all(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, Wanted wanted,
               HeadScores& hs) {
  const int H = kv.num_kv_heads;
  hs.H = H;
  hs.group = static_cast<int>(q.shape[1]) / H;
  hs.stride = max_seq_pages(kv);
  hs.s.resize(size_t(kv.batch) * H * hs.group * hs.stride);
  const Queries qs(cfg, q, kv);
  if (reads_statistics(cfg.estimator)) {
    // Tasks of kChunk pages of one sequence: both cores busy even at batch 1.
    constexpr int kChunk = 64;
    std::vector<std::pair<int, int>> tasks;
    for (int b = 0; b < kv.batch; ++b)
      if (wanted(b))
        for (int j = 0; j < seq_pages(kv, b); j += kChunk) tasks.emplace_back(b, j);
#pragma omp parallel for schedule(dynamic)
    for (size_t t = 0; t < tasks.size(); ++t) {
      const auto [b, j0] = tasks[t];
      const int j1 = std::min(j0 + kChunk, seq_pages(kv, b));
      dispatch_stats_dtype(kv.stats_dtype, [&](auto st) {
        dispatch_stats_kind(cfg, [&](auto kind) {
          score_page_range<decltype(st), kind()>(cfg, kv, qs, b, j0, j1, hs);
        });
      });
    }
    return;
  }
#pragma omp parallel
  {
    std::vector<float> logits;
#pragma omp for schedule(dynamic) collapse(2)
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < H; ++h)
        if (wanted(b)) score_other(cfg, kv, qs, b, h, hs, logits);
  }
}

// The calling thread's buffer, named by a reference: inside an OpenMP region a
// thread_local name would be each worker's own (empty) buffer.
HeadScores& calling_thread_scores() {
  thread_local HeadScores hs;
  return hs;
}

// GQA aggregation of the per-head scores of (b, h) into agg[0..n).
void aggregate(const AttentionConfig& cfg, const PagedKV& kv, HeadScores& hs, int b, int h,
               std::vector<float>& agg) {
  const int n = seq_pages(kv, b);
  float* s = hs.row(b, h);
  if (cfg.gqa == GqaAggregation::max) {
    agg.assign(n, -INFINITY);
    for (int i = 0; i < hs.group; ++i)
      for (int j = 0; j < n; ++j) agg[j] = std::max(agg[j], s[i * hs.stride + j]);
    return;
  }
  agg.assign(n, 0.0f);
  const float scale = cfg.scale_for(kv.head_dim);
  for (int i = 0; i < hs.group; ++i) {
    float* si = s + i * hs.stride;
    if (cfg.estimator != Estimator::oracle) {
      const float m = *std::max_element(si, si + n);
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) sum += (si[j] = std::exp((si[j] - m) * scale));
      for (int j = 0; j < n; ++j) si[j] /= sum;
    }
    for (int j = 0; j < n; ++j) agg[j] += si[j];
  }
}

}  // namespace

void score_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                 const TensorView& scores) {
  const int H = kv.num_kv_heads, max_pages = static_cast<int>(scores.shape[2]);
  HeadScores& hs = calling_thread_scores();
  score_all(cfg, q, kv, [](int) { return true; }, hs);
#pragma omp parallel
  {
    std::vector<float> agg;
#pragma omp for schedule(dynamic) collapse(2)
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < H; ++h) {
        aggregate(cfg, kv, hs, b, h, agg);
        float* row = scores.ptr<float>() + (int64_t(b) * H + h) * max_pages;
        std::copy(agg.begin(), agg.end(), row);
        std::fill(row + agg.size(), row + max_pages, -INFINITY);
      }
  }
}

void select_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection& out) {
  const int H = kv.num_kv_heads;
  // The forced pages are the positions outside [lo, hi): a prefix (sink) and a suffix
  // (recent, the last page always); the scores are needed only when k < hi - lo.
  const auto ranked = [&](int b) {
    const int n = seq_pages(kv, b);
    const int lo = std::min(cfg.sink_pages, n);
    return std::pair{lo, std::max(lo, n - std::max(cfg.recent_pages, 1))};
  };
  const auto needs_scores = [&](int b) {
    const auto [lo, hi] = ranked(b);
    return cfg.estimator != Estimator::dense && cfg.topk_pages() < hi - lo;
  };
  HeadScores& hs = calling_thread_scores();
  score_all(cfg, q, kv, needs_scores, hs);
#pragma omp parallel
  {
    std::vector<float> agg;
    std::vector<uint64_t> keys;
#pragma omp for schedule(dynamic) collapse(2)
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < H; ++h) {
        const int n = seq_pages(kv, b);
        const auto [lo, hi] = ranked(b);
        int32_t* pages = out.pages + (int64_t(b) * H + h) * out.max_selected;
        int c = 0;
        for (int j = 0; j < lo; ++j) pages[c++] = j;
        if (needs_scores(b)) {
          const int k = cfg.topk_pages();
          aggregate(cfg, kv, hs, b, h, agg);
          keys.resize(hi - lo);
          for (int j = lo; j < hi; ++j) keys[j - lo] = rank_key(agg[j], j);
          std::nth_element(keys.begin(), keys.begin() + k, keys.end(), std::greater<>());
          for (int i = 0; i < k; ++i) pages[c + i] = static_cast<int32_t>(~uint32_t(keys[i]));
          std::sort(pages + c, pages + c + k);
          c += k;
        } else {
          for (int j = lo; j < hi; ++j) pages[c++] = j;
        }
        for (int j = hi; j < n; ++j) pages[c++] = j;
        std::fill(pages + c, pages + out.max_selected, -1);
        out.counts[b * H + h] = c;
      }
  }
}

}  // namespace unique::cpu

// Composite vs exact block mass on given queries and keys (include/unique/prefill_rank.h).
#include "unique/prefill_rank.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "unique/error.h"
#include "unique/prefill.h"

namespace unique {

namespace {

std::vector<double> ranks(const float* v, int n) {
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] < v[b]; });
  std::vector<double> r(n);
  for (int i = 0; i < n;) {  // ties share their mean rank
    int j = i;
    while (j + 1 < n && v[idx[j + 1]] == v[idx[i]]) ++j;
    for (int k = i; k <= j; ++k) r[idx[k]] = 0.5 * (i + j);
    i = j + 1;
  }
  return r;
}

}  // namespace

double spearman(const float* a, const float* b, int n) {
  const std::vector<double> ra = ranks(a, n), rb = ranks(b, n);
  double ma = 0, mb = 0;
  for (int i = 0; i < n; ++i) ma += ra[i] / n, mb += rb[i] / n;
  double sab = 0, saa = 0, sbb = 0;
  for (int i = 0; i < n; ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : 1.0;
}

std::vector<BlockMassRow> sample_block_mass(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                                            int seq, const std::vector<int>& q_blocks,
                                            const std::vector<float>& top_ps) {
  UNIQUE_CHECK_ARG(q.ndim == 3, "q", "[L, num_qo_heads, head_dim]", q.shape_str());
  const int64_t L = q.shape[0];
  const int Hq = static_cast<int>(q.shape[1]);
  validate_prefill_args(cfg, q, kv, seq, L);  // also: kv holds exactly L tokens of seq
  const int B = cfg.prefill_block, P = kv.page_size;
  const int nqb = static_cast<int>((L + B - 1) / B);
  std::vector<BlockMassRow> rows;
  for (int qb : q_blocks) {
    UNIQUE_CHECK_ARG(qb >= 0 && qb < nqb, "q_blocks", detail::concat("0..", nqb - 1), qb);
    const int64_t begin = int64_t(qb) * B, end = std::min<int64_t>(L, begin + B);
    // The key prefix [0, end) as a sequence of its own: the page table cut after its last page.
    const int32_t first = kv.page_indptr[seq];
    const int32_t indptr[2] = {first, first + static_cast<int32_t>((end + P - 1) / P)};
    const int32_t last = static_cast<int32_t>(end - int64_t(indptr[1] - indptr[0] - 1) * P);
    PagedKV pre = kv;
    pre.batch = 1;
    pre.page_indptr = indptr;
    pre.last_page_len = &last;
    pre.max_pages_per_seq = 0;
    TensorView qc = q;
    qc.data = static_cast<char*>(q.data) + begin * q.stride[0] * dtype_size(q.dtype);
    qc.shape[0] = end - begin;
    const int n = qb + 1;
    std::vector<float> est(size_t(Hq) * n), exact(est.size());
    ref::prefill_block_mass(cfg, qc, pre, 0, end, false, make_view(est.data(), DType::f32, {Hq, 1, n}));
    ref::prefill_block_mass(cfg, qc, pre, 0, end, true, make_view(exact.data(), DType::f32, {Hq, 1, n}));
    const size_t row0 = rows.size();
    for (int h = 0; h < Hq; ++h) {
      BlockMassRow r;
      r.head = h;
      r.q_block = qb;
      r.est.assign(est.begin() + size_t(h) * n, est.begin() + size_t(h + 1) * n);
      r.exact.assign(exact.begin() + size_t(h) * n, exact.begin() + size_t(h + 1) * n);
      rows.push_back(std::move(r));
    }
    // The library's selection itself (the fast kernel), not a re-implementation of its rule.
    std::vector<int32_t> blocks(size_t(Hq) * n), counts(Hq);
    for (float p : top_ps) {
      AttentionConfig c = cfg;
      c.top_p = p;
      select_prefill_blocks(c, qc, pre, 0, end, BlockSelection{blocks.data(), counts.data(), Hq, 1, n});
      for (int h = 0; h < Hq; ++h)
        rows[row0 + h].top_p_kept.emplace_back(blocks.begin() + size_t(h) * n,
                                               blocks.begin() + size_t(h) * n + counts[h]);
    }
  }
  return rows;
}

std::vector<int> top_k_blocks(const std::vector<float>& mass, int k) {
  const int n = static_cast<int>(mass.size());
  if (k >= n) {
    std::vector<int> all(n);
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  std::vector<int> kept = {0};
  if (n > 1) kept.push_back(n - 1);
  std::vector<int> order;
  for (int kb = 1; kb < n - 1; ++kb) order.push_back(kb);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return mass[a] > mass[b]; });
  for (int kb : order) {
    if (static_cast<int>(kept.size()) >= k) break;
    kept.push_back(kb);
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}

double kept_mass(const BlockMassRow& row, const std::vector<int>& kept) {
  double m = 0;
  for (int kb : kept) m += row.exact.at(size_t(kb));
  return m;
}

int matching_k(const std::vector<BlockMassRow>& rows, int64_t blocks) {
  int most = 1;
  for (const BlockMassRow& r : rows) most = std::max(most, static_cast<int>(r.exact.size()));
  for (int k = 1; k < most; ++k) {
    int64_t sum = 0;
    for (const BlockMassRow& r : rows) sum += std::min<int64_t>(std::max(k, std::min<int>(2, int(r.exact.size()))),
                                                               int64_t(r.exact.size()));
    if (sum >= blocks) return k;
  }
  return most;
}

int equal_mass_k(const std::vector<BlockMassRow>& rows, double mass) {
  int most = 1;
  for (const BlockMassRow& r : rows) most = std::max(most, static_cast<int>(r.exact.size()));
  if (rows.empty()) return most;
  // mean[k - 1]: the rows' mean exact mass under top_k_blocks(est, k). The sets are nested in
  // k, so each row adds its blocks in the estimate's order once (same order and ties as
  // top_k_blocks: block 0 and the diagonal first).
  std::vector<double> mean(size_t(most), 0.0);
  for (const BlockMassRow& r : rows) {
    const int n = static_cast<int>(r.exact.size());
    if (n == 0) continue;  // no visible block: nothing to keep
    std::vector<int> rest;
    for (int kb = 1; kb < n - 1; ++kb) rest.push_back(kb);
    std::stable_sort(rest.begin(), rest.end(), [&](int a, int b) { return r.est[a] > r.est[b]; });
    const int forced = n > 1 ? 2 : 1;
    double m = r.exact[0] + (n > 1 ? r.exact[size_t(n - 1)] : 0.0);
    for (int k = 1; k <= most; ++k) {
      if (k > forced && k - forced <= static_cast<int>(rest.size())) m += r.exact[size_t(rest[size_t(k - forced - 1)])];
      mean[size_t(k - 1)] += m / double(rows.size());
    }
  }
  // Within summation-order rounding of the target counts as reaching it (the caller's target
  // is itself a mean of the same masses, summed in another order).
  for (int k = 1; k <= most; ++k)
    if (mean[size_t(k - 1)] >= mass - 1e-12) return k;
  return most;
}

std::vector<int> spread_q_blocks(int num_q_blocks, int count) {
  std::vector<int> v;
  const int avail = num_q_blocks - 2;
  if (avail <= 0) return v;
  if (count <= 0 || count >= avail) {
    for (int qb = 2; qb < num_q_blocks; ++qb) v.push_back(qb);
    return v;
  }
  // Evenly spaced from the last block down, so the last block is always sampled.
  for (int i = 0; i < count; ++i) {
    const int qb = num_q_blocks - 1 - static_cast<int>(std::llround(double(i) * (avail - 1) / std::max(1, count - 1)));
    if (v.empty() || v.back() != qb) v.push_back(qb);
  }
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace unique

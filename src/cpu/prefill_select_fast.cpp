// Fast CPU UniSparse block selection (unique::select_prefill_blocks). Composite keys are
// pooled once per call into a transposed fp32 panel per KV head; then one task per (query
// block, KV head[, part of its GQA group]) pools the block's composite queries, computes
// their logits against every visible composite key as one register-tiled GEMM (all heads
// of the task share the key panel), softmaxes each row, folds the rows into per-column
// sums (so the per-block aggregation runs once per head, not once per row), and applies
// the top-p rule. top_p >= 1 keeps every block without computing any mass.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/prefill_tile.h"

namespace unique::cpu {

namespace {

void write_row(const BlockSelection& out, int hq, int i, const std::vector<int>& kept) {
  const int64_t r = int64_t(hq) * out.num_q_blocks + i;
  const int c = static_cast<int>(kept.size());
  int32_t* b = out.blocks + r * out.max_kv_blocks;
  std::copy(kept.begin(), kept.end(), b);
  std::fill(b + c, b + out.max_kv_blocks, -1);
  out.counts[r] = c;
}

// Composite keys ck_j (mean of key rows [j*pool, min((j+1)*pool, kv_len))) as
// ckt[(h*D + d)*ldc + j], zero for j >= nck. Called by every thread of a parallel region
// (the work-shared loop ends in a barrier).
template <class T>
void composite_keys(const PagedKV& kv, int seq, const ChunkGeom& g, int64_t nck, int64_t ldc, float* ckt) {
  const int D = g.D, P = kv.page_size;
  const T* K = static_cast<const T*>(kv.k);
  const int32_t* table = kv.page_indices + kv.page_indptr[seq];
  {
    std::vector<float> acc(D);
#pragma omp for collapse(2) schedule(static)
    for (int h = 0; h < g.H; ++h)
      for (int64_t j = 0; j < ldc; ++j) {
        float* col = ckt + int64_t(h) * D * ldc + j;
        if (j >= nck) {
          for (int d = 0; d < D; ++d) col[d * ldc] = 0.0f;
          continue;
        }
        const int64_t s0 = j * g.pool, s1 = std::min<int64_t>(s0 + g.pool, g.kv_len);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t s = s0; s < s1; ++s) {
          const T* row = K + kv.kv_offset(table[s / P], h) + (s % P) * D;
          for (int d0 = 0; d0 < D; d0 += kW) store(acc.data() + d0, load(acc.data() + d0) + load_widen(row + d0));
        }
        const float n = static_cast<float>(s1 - s0);
        for (int d = 0; d < D; ++d) col[d * ldc] = acc[d] / n;
      }
  }
}

struct Scratch {
  std::vector<float> qrows, cq, logits, colsum;
  std::vector<double> mass;
  std::vector<int> order, kept;
};

// Block mass of query block i for query heads [hq0, hq0+n) of KV head h into
// sc.mass[j * (qb+1) + kb].
void block_mass(const AttentionConfig& cfg, const TensorView& q, const ChunkGeom& g, const float* ckt, int64_t ldc,
                int i, int h, int hq0, int n, Scratch& sc) {
  const int D = g.D, pool = g.pool, qb = g.pb.first_q_block + i;
  const int64_t ta = g.q_begin(i), tb = g.q_end(i), R = tb - ta;
  const int64_t gA = ta / pool, gB = (tb - 1) / pool;
  const int ng = static_cast<int>(gB - gA + 1);
  sc.qrows.resize(size_t(n) * R * D);
  load_query_rows(q, ta - g.q0, tb - g.q0, hq0, n, D, cfg.scale_for(D), sc.qrows.data());
  // Composite queries cq[(j*ng + k)*D + d], group gA + k; a group cut by the chunk start
  // or the sequence end averages the rows it has.
  sc.cq.assign(size_t(n) * ng * D, 0.0f);
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < ng; ++k) {
      const int64_t r0 = std::max((gA + k) * pool, ta) - ta, r1 = std::min((gA + k + 1) * pool, tb) - ta;
      float* c = sc.cq.data() + (int64_t(j) * ng + k) * D;
      for (int64_t r = r0; r < r1; ++r) {
        const float* src = sc.qrows.data() + (j * R + r) * D;
        for (int d = 0; d < D; ++d) c[d] += src[d];
      }
      const float cnt = static_cast<float>(r1 - r0);
      for (int d = 0; d < D; ++d) c[d] /= cnt;
    }
  const int ncols = static_cast<int>(gB + 1), ldl = round_up(ncols, kW);
  const int rows = n * ng;
  // Rows per pass bound the logits scratch to ~4 MB whatever the context.
  const int pass = std::max(4, std::min(64, (1 << 20) / ldl));
  sc.logits.resize(size_t(std::min(pass, rows)) * ldl);
  sc.colsum.assign(size_t(n) * ldl, 0.0f);
  const float* panel = ckt + int64_t(h) * D * ldc;
  for (int r0 = 0; r0 < rows; r0 += pass) {
    const int nr = std::min(pass, rows - r0);
    mm_set(sc.cq.data() + int64_t(r0) * D, D, panel, ldc, sc.logits.data(), ldl, nr, ldl, D);
    for (int r = 0; r < nr; ++r) {
      const int j = (r0 + r) / ng, k = (r0 + r) % ng;
      const int valid = static_cast<int>(gA + k + 1);  // composite causality: key groups <= g
      float* row = sc.logits.data() + int64_t(r) * ldl;
      VecF mv = splat(-INFINITY);
      int c = 0;
      for (; c + kW <= valid; c += kW) mv = vmax(mv, load(row + c));
      float mx = hmax(mv);
      for (; c < valid; ++c) mx = std::max(mx, row[c]);
      VecF sv{};
      for (c = 0; c + kW <= valid; c += kW) {
        const VecF e = exp_nonpos(load(row + c) - mx);
        store(row + c, e);
        sv += e;
      }
      float sum = hsum(sv);
      for (; c < valid; ++c) sum += (row[c] = exp_nonpos(row[c] - mx));
      for (; c < round_up(valid, kW); ++c) row[c] = 0.0f;
      const VecF inv = splat(1.0f / sum);
      float* cs = sc.colsum.data() + int64_t(j) * ldl;
      for (c = 0; c < valid; c += kW) store(cs + c, load(cs + c) + load(row + c) * inv);
    }
  }
  const int per_block = g.B / pool;
  sc.mass.assign(size_t(n) * (qb + 1), 0.0);
  for (int j = 0; j < n; ++j) {
    const float* cs = sc.colsum.data() + int64_t(j) * ldl;
    double* m = sc.mass.data() + int64_t(j) * (qb + 1);
    for (int c = 0; c < ncols; ++c) m[c / per_block] += cs[c];
    for (int kb = 0; kb <= qb; ++kb) m[kb] /= ng;
  }
}

// Block 0, the diagonal, then the heaviest blocks (ties to the lower) while the rule wants more
// (AttentionConfig::prefill_wants_more: top_p, or a fixed top-k).
void kept_blocks(const double* m, int qb, const AttentionConfig& cfg, Scratch& sc) {
  sc.kept.assign(1, 0);
  double cum = m[0];
  if (qb > 0) {
    sc.kept.push_back(qb);
    cum += m[qb];
  }
  sc.order.clear();
  for (int kb = 1; kb < qb; ++kb) sc.order.push_back(kb);
  std::sort(sc.order.begin(), sc.order.end(), [&](int a, int b) { return m[a] > m[b] || (m[a] == m[b] && a < b); });
  for (int kb : sc.order) {
    if (!cfg.prefill_wants_more(static_cast<int>(sc.kept.size()), cum)) break;
    sc.kept.push_back(kb);
    cum += m[kb];
  }
  std::sort(sc.kept.begin(), sc.kept.end());
}

}  // namespace

void select_prefill_blocks(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection& out) {
  const ChunkGeom g(cfg, q, kv, kv_len);
  const int Hq = g.H * g.group, nqb = g.pb.num_q_blocks;
  if (cfg.prefill_keeps_all()) {
    std::vector<int> all;
    for (int i = 0; i < nqb; ++i) {
      all.resize(g.pb.first_q_block + i + 1);
      for (int kb = 0; kb < int(all.size()); ++kb) all[kb] = kb;
      for (int hq = 0; hq < Hq; ++hq) write_row(out, hq, i, all);
    }
    return;
  }
  const int64_t nck = (kv_len + g.pool - 1) / g.pool, ldc = round_up(static_cast<int>(nck), kW);
  std::vector<float> ckt(size_t(g.H) * g.D * ldc);
  const int hpt = g.heads_per_task(omp_get_max_threads());
  const int splits = (g.group + hpt - 1) / hpt;
  const int64_t per_block = int64_t(g.H) * splits, tasks = per_block * nqb;
  // Composite logits (plus pooling) in multiply-adds: below ~1M (plus exps) a team costs
  // more than it saves (each parallel region is a barrier, slow when a core is busy
  // elsewhere).
  const double work = double(q.shape[0]) * double(kv_len) / (double(g.pool) * g.pool) * Hq * g.D +
                      double(kv_len) * g.H * g.D;
#pragma omp parallel if (work >= double(1 << 20))
  {
    dispatch_dtype(kv.dtype, [&](auto tag) { composite_keys<decltype(tag)>(kv, seq, g, nck, ldc, ckt.data()); });
    Scratch sc;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int i = nqb - 1 - static_cast<int>(task / per_block);  // heaviest first
      const int h = static_cast<int>(task % per_block) / splits, part = static_cast<int>(task % per_block) % splits;
      const int hq0 = h * g.group + part * hpt, n = std::min(hpt, g.group - part * hpt);
      const int qb = g.pb.first_q_block + i;
      if (qb < 2) {  // nothing optional: block 0 and the diagonal
        sc.kept.assign(1, 0);
        if (qb == 1) sc.kept.push_back(1);
        for (int j = 0; j < n; ++j) write_row(out, hq0 + j, i, sc.kept);
        continue;
      }
      block_mass(cfg, q, g, ckt.data(), ldc, i, h, hq0, n, sc);
      for (int j = 0; j < n; ++j) {
        kept_blocks(sc.mass.data() + int64_t(j) * (qb + 1), qb, cfg, sc);
        write_row(out, hq0 + j, i, sc.kept);
      }
    }
  }
}

}  // namespace unique::cpu

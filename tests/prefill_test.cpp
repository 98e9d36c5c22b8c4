// Fast CPU prefill (unique::select_prefill_blocks / sparse_prefill) against the reference
// twins over sweeps of page size, head dim, GQA group, KV/q/out dtype, prefill block, pool,
// chunk position and top_p; selection equal to the reference except where block masses tie
// within rounding; top_p = 1 equal to dense bit for bit; results independent of the thread
// count; blocks that are not kept are never read.
#include <gtest/gtest.h>
#include <omp.h>

#include <set>

#include "test_util.h"

namespace unique::test {
namespace {

struct PrefillCase {
  CacheCase c;
  int seq = 0, Hq = 0, D = 0;
  int64_t L = 0, q_len = 0;
  Buf q;  // [q_len, Hq, D]
  PagedKV kv() const { return c.kv(); }
  TensorView qv() { return q.view({q_len, Hq, D}); }
};

// Sequence `seq` of the cache holds L tokens; the chunk is its last q_len. Queries lean
// towards the keys' direction (as real ones do) so the attention is not uniform.
PrefillCase make_prefill(int P, int D, int H, int group, int64_t L, int64_t q_len, DType kv_dt, DType q_dt,
                         bool two_seqs, uint64_t seed) {
  CaseSpec s;
  s.lens = two_seqs ? std::vector<int64_t>{37, L} : std::vector<int64_t>{L};
  s.page_size = P;
  s.head_dim = D;
  s.num_kv_heads = H;
  s.dtype = kv_dt;
  s.max_chunk = 2 * P + 3;
  PrefillCase pc;
  pc.c = make_case(s, seed);
  pc.seq = two_seqs ? 1 : 0;
  pc.Hq = H * group;
  pc.D = D;
  pc.L = L;
  pc.q_len = q_len;
  pc.q = Buf(q_dt, size_t(q_len) * pc.Hq * D);
  Rng r(seed ^ 0x9e3779b97f4a7c15ull);
  const KeyModel* models = pc.c.models.data() + size_t(pc.seq) * H;
  for (int64_t t = 0; t < q_len; ++t)
    for (int hq = 0; hq < pc.Hq; ++hq) {
      const float w = r.uniform(0.0f, 0.8f);
      for (int d = 0; d < D; ++d) pc.q.set((t * pc.Hq + hq) * D + d, w * models[hq / group].dir[d] + r.normal());
    }
  return pc;
}

struct SelBuf {
  std::vector<int32_t> blocks, counts;
  BlockSelection sel;
  SelBuf(int Hq, const PrefillBlocks& pb)
      : blocks(size_t(Hq) * pb.num_q_blocks * pb.num_kv_blocks, kSentinel),
        counts(size_t(Hq) * pb.num_q_blocks, kSentinel) {
    sel = BlockSelection{blocks.data(), counts.data(), Hq, pb.num_q_blocks, pb.num_kv_blocks};
  }
  std::vector<int> row(int hq, int i) const {
    const size_t r = size_t(hq) * sel.num_q_blocks + i;
    const int c = std::clamp(counts[r], 0, sel.max_kv_blocks);
    return std::vector<int>(blocks.begin() + r * sel.max_kv_blocks, blocks.begin() + r * sel.max_kv_blocks + c);
  }
};

// Every row of a selection is a top-p selection of the (reference) masses up to tol:
// block 0 and the diagonal kept; ascending ids, -1 after the count; no dropped optional
// block heavier than a kept one; the kept mass reaches top_p; without its lightest
// optional block it would not (top_p < 1), everything kept (top_p >= 1). With
// cfg.prefill_top_k = k instead: min(k, qb + 1) blocks, the same order rule.
void expect_valid_top_p(const SelBuf& s, const PrefillBlocks& pb, int Hq, const AttentionConfig& cfg, const Buf& mass,
                        double tol) {
  const float top_p = cfg.top_p;
  const int top_k = cfg.prefill_top_k;
  int bad = 0;
  for (int hq = 0; hq < Hq; ++hq)
    for (int i = 0; i < pb.num_q_blocks; ++i) {
      const int qb = pb.first_q_block + i;
      const size_t r = size_t(hq) * pb.num_q_blocks + i;
      const int c = s.counts[r];
      const std::string where = "hq " + std::to_string(hq) + " qb " + std::to_string(qb);
      if (c < 1 || c > qb + 1) {
        ADD_FAILURE() << where << ": count " << c;
        return;
      }
      const int32_t* b = s.blocks.data() + r * pb.num_kv_blocks;
      std::vector<char> kept(qb + 1, 0);
      for (int j = 0; j < pb.num_kv_blocks; ++j) {
        if (j >= c) {
          if (b[j] != -1 && ++bad < 10) ADD_FAILURE() << where << ": padding " << j << " = " << b[j];
          continue;
        }
        if (!(b[j] >= 0 && b[j] <= qb && (j == 0 || b[j] > b[j - 1]))) {
          ADD_FAILURE() << where << ": block " << j << " = " << b[j];
          return;
        }
        kept[b[j]] = 1;
      }
      if (!kept[0] || !kept[qb]) ADD_FAILURE() << where << ": block 0 or the diagonal missing";
      if (top_k > 0 && c != std::min(top_k, qb + 1) && ++bad < 10)
        ADD_FAILURE() << where << ": top-k " << top_k << " keeps " << c << " blocks";
      if (top_k == 0 && top_p >= 1.0f) {
        if (c != qb + 1 && ++bad < 10) ADD_FAILURE() << where << ": top_p 1 keeps " << c << " blocks";
        continue;
      }
      const float* m = static_cast<const float*>(mass.data()) + r * pb.num_kv_blocks;
      double cum = 0, lightest = INFINITY, heaviest_dropped = -INFINITY;
      for (int kb = 0; kb <= qb; ++kb) {
        if (kept[kb]) cum += m[kb];
        if (kb == 0 || kb == qb) continue;
        if (kept[kb]) lightest = std::min<double>(lightest, m[kb]);
        else heaviest_dropped = std::max<double>(heaviest_dropped, m[kb]);
      }
      if (lightest < heaviest_dropped - tol && ++bad < 10)
        ADD_FAILURE() << where << ": kept block of mass " << lightest << " over a dropped one of " << heaviest_dropped;
      if (top_k > 0) continue;
      if (c < qb + 1 && cum < top_p - tol && ++bad < 10)
        ADD_FAILURE() << where << ": kept mass " << cum << " < top_p " << top_p;
      if (std::isfinite(lightest) && cum - lightest >= top_p + tol && ++bad < 10)
        ADD_FAILURE() << where << ": kept mass " << cum << " reaches top_p without the block of mass " << lightest;
    }
  EXPECT_EQ(bad, 0);
}

// Rows where fast and ref differ are near-ties: each block in the difference has a mass
// within tol of the boundary (the lightest optional block the reference kept, or the
// heaviest it dropped), and only a few rows differ.
void expect_selection_matches(const SelBuf& f, const SelBuf& r, const PrefillBlocks& pb, int Hq, const Buf& mass,
                              double tol) {
  int differ = 0, rows = 0;
  for (int hq = 0; hq < Hq; ++hq)
    for (int i = 0; i < pb.num_q_blocks; ++i, ++rows) {
      const std::vector<int> a = f.row(hq, i), b = r.row(hq, i);
      if (a == b) continue;
      ++differ;
      const int qb = pb.first_q_block + i;
      const float* m = static_cast<const float*>(mass.data()) + (size_t(hq) * pb.num_q_blocks + i) * pb.num_kv_blocks;
      double lightest = INFINITY, heaviest_dropped = -INFINITY;
      const std::set<int> kept(b.begin(), b.end());
      for (int kb = 1; kb < qb; ++kb) {
        if (kept.count(kb)) lightest = std::min<double>(lightest, m[kb]);
        else heaviest_dropped = std::max<double>(heaviest_dropped, m[kb]);
      }
      std::vector<int> diff;
      std::set_symmetric_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(diff));
      for (int kb : diff) {
        const double near = std::min(std::fabs(m[kb] - lightest), std::fabs(m[kb] - heaviest_dropped));
        EXPECT_LE(near, tol) << "hq " << hq << " qb " << qb << ": block " << kb << " (mass " << m[kb]
                             << ") kept by only one of fast/ref; boundary " << lightest << " / " << heaviest_dropped;
      }
    }
  EXPECT_LE(differ, std::max(2, rows / 20)) << differ << " of " << rows << " rows differ";
}

double out_tol(DType t) {
  switch (t) {
    case DType::bf16: return 8e-3;
    case DType::f16: return 1e-3;
    default: return 2e-5;
  }
}


struct Outputs {
  Buf out, lse;
  Outputs(DType dt, int64_t q_len, int Hq, int D) : out(dt, size_t(q_len) * Hq * D), lse(DType::f32, size_t(q_len) * Hq) {}
  void poison() {
    out.poison();
    lse.poison();
  }
};

struct SweepCase {
  int P, D, H, group, B, pool;
  DType dt;
  bool partial;  // chunk starting mid-block and mid-pool-group (else q_len == kv_len)
  bool two_seqs;
};

std::string name(const SweepCase& s, uint64_t seed, int64_t L, int64_t q_len) {
  return "seed=" + std::to_string(seed) + " P=" + std::to_string(s.P) + " D=" + std::to_string(s.D) +
         " H=" + std::to_string(s.H) + " group=" + std::to_string(s.group) + " B=" + std::to_string(s.B) +
         " pool=" + std::to_string(s.pool) + " dt=" + to_string(s.dt) + " L=" + std::to_string(L) +
         " q_len=" + std::to_string(q_len) + " seq=" + std::to_string(int(s.two_seqs));
}

void run_sweep_case(const SweepCase& s, uint64_t seed) {
  Rng r(seed);
  // 4..6 blocks, a partial last block and page (the partial page drawn independently).
  const int64_t L = int64_t(s.B) * r.range(4, 5) + r.range(1, s.B - 1);
  // Mid-block and, with pool > 1, mid-group: q0 = k*B + pool*m + 1.
  const int64_t q0 = s.partial ? int64_t(s.B) * r.range(1, 2) + int64_t(s.pool) * r.range(0, s.B / s.pool - 1) + 1 : 0;
  const int64_t q_len = L - q0;
  const DType qt = s.dt, ot = DType((int(s.dt) + int(seed % 2)) % 3);
  SCOPED_TRACE(name(s, seed, L, q_len) + " q=" + to_string(qt) + " out=" + to_string(ot));
  PrefillCase pc = make_prefill(s.P, s.D, s.H, s.group, L, q_len, s.dt, qt, s.two_seqs, seed);
  const PagedKV kv = pc.kv();
  const TensorView qv = pc.qv();
  const int Hq = pc.Hq, D = s.D;
  AttentionConfig cfg;
  cfg.page_size = s.P;
  cfg.prefill_block = s.B;
  cfg.pool = s.pool;
  const PrefillBlocks pb = prefill_blocks(cfg, q_len, L);
  ASSERT_EQ(pb.first_q_block, q0 / s.B);
  Buf mass(DType::f32, size_t(Hq) * pb.num_q_blocks * pb.num_kv_blocks);
  ref::prefill_block_mass(cfg, qv, kv, pc.seq, L, false, mass.view({Hq, pb.num_q_blocks, pb.num_kv_blocks}));
  // The sparse attention compared with the reference at one top_p < 1 per case. The rules:
  // top_p 0.5, 0.9, 1, then a fixed top-k of 3 blocks and of 1000 (every block: dense).
  const float checked_top_p = seed % 2 ? 0.5f : 0.9f;
  int dropped = 0;
  struct Rule {
    float top_p;
    int top_k;
  };
  for (const Rule rule : {Rule{0.5f, 0}, Rule{0.9f, 0}, Rule{1.0f, 0}, Rule{0.9f, 3}, Rule{0.5f, 1000}}) {
    SCOPED_TRACE("top_p=" + std::to_string(rule.top_p) + " top_k=" + std::to_string(rule.top_k));
    cfg.top_p = rule.top_p;
    cfg.prefill_top_k = rule.top_k;
    const bool all = cfg.prefill_top_k >= 1000 || cfg.prefill_keeps_all();
    const bool check_attention = rule.top_k == 3 || (rule.top_k == 0 && rule.top_p == checked_top_p);
    SelBuf fs(Hq, pb), rs(Hq, pb);
    select_prefill_blocks(cfg, qv, kv, pc.seq, L, fs.sel);
    ref::select_prefill_blocks(cfg, qv, kv, pc.seq, L, rs.sel);
    // Masses are sums of fp32 softmax terms: rounding ~1e-6, far below any real gap.
    expect_valid_top_p(fs, pb, Hq, cfg, mass, 2e-5);
    expect_selection_matches(fs, rs, pb, Hq, mass, 2e-5);
    if (all) {
      EXPECT_EQ(fs.blocks, rs.blocks);
      EXPECT_EQ(fs.counts, rs.counts);
    }
    if (::testing::Test::HasFailure()) return;
    for (size_t i = 0; i < rs.counts.size(); ++i) dropped += rs.counts[i] < pb.first_q_block + int(i % pb.num_q_blocks) + 1;

    Outputs fo(ot, q_len, Hq, D), ro(ot, q_len, Hq, D);
    if (check_attention) {
      fo.poison();
      ro.poison();
      sparse_prefill(cfg, qv, kv, pc.seq, L, &rs.sel, fo.out.view({q_len, Hq, D}), fo.lse.view({q_len, Hq}));
      ref::sparse_prefill(cfg, qv, kv, pc.seq, L, &rs.sel, ro.out.view({q_len, Hq, D}), ro.lse.view({q_len, Hq}));
      expect_outputs_match(fo.out, ro.out, fo.lse, ro.lse, q_len * Hq, D, out_tol(fo.out.dt));
    }
    if (all) {
      // Every block kept runs exactly the dense arithmetic.
      Outputs dense(ot, q_len, Hq, D);
      fo.poison();
      dense.poison();
      sparse_prefill(cfg, qv, kv, pc.seq, L, &fs.sel, fo.out.view({q_len, Hq, D}), fo.lse.view({q_len, Hq}));
      sparse_prefill(cfg, qv, kv, pc.seq, L, nullptr, dense.out.view({q_len, Hq, D}), dense.lse.view({q_len, Hq}));
      EXPECT_EQ(fo.out.bytes, dense.out.bytes);
      EXPECT_EQ(fo.lse.bytes, dense.lse.bytes);
      if (seed % 3 == 0) {  // dense against the reference (the costliest reference call)
        ro.poison();
        ref::sparse_prefill(cfg, qv, kv, pc.seq, L, nullptr, ro.out.view({q_len, Hq, D}), ro.lse.view({q_len, Hq}));
        expect_outputs_match(dense.out, ro.out, dense.lse, ro.lse, q_len * Hq, D, out_tol(dense.out.dt));
      }
    }
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(dropped, 0) << "no top_p dropped a block: the case tests no sparsity";
}

// dtype x GQA group x chunk kind; page size, head dim, prefill block, pool and the second
// sequence rotate with co-prime periods so every value meets every dtype and group.
std::vector<SweepCase> sweep_cases() {
  std::vector<SweepCase> v;
  const int Ps[] = {16, 32, 64}, Ds[] = {64, 128}, Bs[] = {16, 32, 64}, pools[] = {1, 4, 8, 4, 8};
  int c = 0;
  for (DType dt : {DType::f32, DType::f16, DType::bf16})
    for (int group : {1, 4, 8, 3})
      for (bool partial : {false, true}) {
        SweepCase s;
        s.P = Ps[c % 3];
        s.D = Ds[c % 2];
        s.B = Bs[(c / 2 + c) % 3];
        s.pool = pools[c % 5];
        s.H = group >= 8 ? 1 : 2;
        s.group = group;
        s.dt = dt;
        s.partial = partial;
        s.two_seqs = c % 4 == 1;
        v.push_back(s);
        ++c;
      }
  return v;
}

TEST(PrefillFast, SweepMatchesReference) {
  int i = 0;
  for (const SweepCase& s : sweep_cases()) {
    run_sweep_case(s, case_seed(77, i++));
    if (::testing::Test::HasFailure()) return;
  }
}

// A large block (128) with a short last query block, and a chunk of a single query.
TEST(PrefillFast, LargeBlockAndSingleQuery) {
  run_sweep_case({16, 64, 2, 2, 128, 8, DType::bf16, true, false}, case_seed(78, 0));
  for (int64_t L : {int64_t(1), int64_t(200)}) {
    PrefillCase pc = make_prefill(32, 64, 2, 4, L, 1, DType::f16, DType::f32, false, case_seed(78, L));
    AttentionConfig cfg;
    cfg.page_size = 32;
    cfg.prefill_block = 32;
    cfg.top_p = 0.5f;
    const PrefillBlocks pb = prefill_blocks(cfg, 1, L);
    SelBuf fs(pc.Hq, pb), rs(pc.Hq, pb);
    select_prefill_blocks(cfg, pc.qv(), pc.kv(), 0, L, fs.sel);
    ref::select_prefill_blocks(cfg, pc.qv(), pc.kv(), 0, L, rs.sel);
    EXPECT_EQ(fs.blocks, rs.blocks);  // one composite query: no tie risk with these data
    Outputs fo(DType::f32, 1, pc.Hq, 64), ro(DType::f32, 1, pc.Hq, 64);
    fo.poison();
    ro.poison();
    sparse_prefill(cfg, pc.qv(), pc.kv(), 0, L, &fs.sel, fo.out.view({1, pc.Hq, 64}), fo.lse.view({1, pc.Hq}));
    ref::sparse_prefill(cfg, pc.qv(), pc.kv(), 0, L, &fs.sel, ro.out.view({1, pc.Hq, 64}), ro.lse.view({1, pc.Hq}));
    expect_outputs_match(fo.out, ro.out, fo.lse, ro.lse, pc.Hq, 64, out_tol(fo.out.dt));
  }
}

// Work is split differently with 1 and 7 threads (7 > the tasks of this case splits the
// GQA group); every head's arithmetic is the same, so are the results, bit for bit. The
// case is large enough for both kernels to start a team.
TEST(PrefillFast, ResultsDoNotDependOnThreadCount) {
  PrefillCase pc = make_prefill(16, 64, 1, 6, 600, 130, DType::bf16, DType::bf16, false, case_seed(79, 0));
  AttentionConfig cfg;
  cfg.page_size = 16;
  cfg.prefill_block = 64;
  cfg.pool = 4;
  cfg.top_p = 0.8f;
  const PrefillBlocks pb = prefill_blocks(cfg, pc.q_len, pc.L);
  const int saved = omp_get_max_threads();
  std::vector<std::vector<unsigned char>> results;
  for (int threads : {1, 7}) {
    omp_set_num_threads(threads);
    SelBuf s(pc.Hq, pb);
    select_prefill_blocks(cfg, pc.qv(), pc.kv(), 0, pc.L, s.sel);
    Outputs o(DType::f32, pc.q_len, pc.Hq, 64);
    o.poison();
    sparse_prefill(cfg, pc.qv(), pc.kv(), 0, pc.L, &s.sel, o.out.view({pc.q_len, pc.Hq, 64}),
                   o.lse.view({pc.q_len, pc.Hq}));
    std::vector<unsigned char> all(reinterpret_cast<unsigned char*>(s.blocks.data()),
                                   reinterpret_cast<unsigned char*>(s.blocks.data() + s.blocks.size()));
    all.insert(all.end(), o.out.bytes.begin(), o.out.bytes.end());
    all.insert(all.end(), o.lse.bytes.begin(), o.lse.bytes.end());
    results.push_back(all);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(results[0], results[1]);
}

// Key blocks that no head keeps are never read: NaN written into them changes nothing.
TEST(PrefillFast, BlocksNotKeptAreNotRead) {
  const int P = 16, D = 64, B = 32;
  PrefillCase pc = make_prefill(P, D, 2, 2, 160, 100, DType::f32, DType::f32, false, case_seed(80, 0));
  PagedKV kv = pc.kv();
  AttentionConfig cfg;
  cfg.page_size = P;
  cfg.prefill_block = B;
  const PrefillBlocks pb = prefill_blocks(cfg, pc.q_len, pc.L);
  // Block 0 and the diagonal only; block 2 (positions 64..95) then is never visible.
  SelBuf s(pc.Hq, pb);
  for (int hq = 0; hq < pc.Hq; ++hq)
    for (int i = 0; i < pb.num_q_blocks; ++i) {
      const int qb = pb.first_q_block + i;
      const size_t r = size_t(hq) * pb.num_q_blocks + i;
      std::fill(s.blocks.begin() + r * pb.num_kv_blocks, s.blocks.begin() + (r + 1) * pb.num_kv_blocks, -1);
      s.blocks[r * pb.num_kv_blocks] = 0;
      if (qb > 0) s.blocks[r * pb.num_kv_blocks + 1] = qb;
      s.counts[r] = qb > 0 ? 2 : 1;
    }
  Outputs ro(DType::f32, pc.q_len, pc.Hq, D), fo(DType::f32, pc.q_len, pc.Hq, D);
  ref::sparse_prefill(cfg, pc.qv(), kv, 0, pc.L, &s.sel, ro.out.view({pc.q_len, pc.Hq, D}),
                      ro.lse.view({pc.q_len, pc.Hq}));
  const int32_t* table = kv.page_indices + kv.page_indptr[0];
  for (int64_t t = 2 * B; t < 3 * B; ++t)
    for (int h = 0; h < kv.num_kv_heads; ++h)
      for (int d = 0; d < D; ++d) {
        const int64_t at = kv.kv_offset(table[t / P], h) + (t % P) * D + d;
        static_cast<float*>(kv.k)[at] = NAN;
        static_cast<float*>(kv.v)[at] = NAN;
      }
  fo.poison();
  sparse_prefill(cfg, pc.qv(), kv, 0, pc.L, &s.sel, fo.out.view({pc.q_len, pc.Hq, D}), fo.lse.view({pc.q_len, pc.Hq}));
  // Rows of query block 2 see their diagonal (NaN); every other row must match.
  for (int64_t t = 0; t < pc.q_len; ++t) {
    const int64_t abs_t = pc.L - pc.q_len + t;
    if (abs_t / B == 2) continue;
    for (int i = 0; i < pc.Hq * D; ++i) {
      const size_t at = size_t(t) * pc.Hq * D + i;
      ASSERT_NEAR(fo.out.get(at), ro.out.get(at), 2e-5) << "t " << abs_t;
    }
  }
}

// Strided q, out and lse views (a slice of wider rows) read and write the right elements.
TEST(PrefillFast, StridedViews) {
  const int D = 64, Hq = 4;
  const int64_t L = 90, q_len = 50;
  PrefillCase pc = make_prefill(16, D, 2, 2, L, q_len, DType::bf16, DType::f32, false, case_seed(81, 0));
  AttentionConfig cfg;
  cfg.page_size = 16;
  cfg.prefill_block = 16;
  cfg.pool = 4;
  cfg.top_p = 0.7f;
  // q rows padded to 2*Hq heads: heads at stride 2*D.
  Buf wide_q(DType::f32, size_t(q_len) * Hq * 2 * D);
  for (int64_t t = 0; t < q_len; ++t)
    for (int hq = 0; hq < Hq; ++hq)
      for (int d = 0; d < D; ++d) wide_q.set((t * Hq + hq) * 2 * D + d, pc.q.get((t * Hq + hq) * D + d));
  TensorView qs = make_view(wide_q.data(), DType::f32, {q_len, Hq, D});
  qs.stride = {Hq * 2 * D, 2 * D, 1};
  const PrefillBlocks pb = prefill_blocks(cfg, q_len, L);
  SelBuf a(Hq, pb), b(Hq, pb);
  select_prefill_blocks(cfg, pc.qv(), pc.kv(), 0, L, a.sel);
  select_prefill_blocks(cfg, qs, pc.kv(), 0, L, b.sel);
  EXPECT_EQ(a.blocks, b.blocks);
  Outputs dense(DType::f32, q_len, Hq, D);
  sparse_prefill(cfg, pc.qv(), pc.kv(), 0, L, &a.sel, dense.out.view({q_len, Hq, D}), dense.lse.view({q_len, Hq}));
  Buf wide_out(DType::f32, size_t(q_len) * Hq * 2 * D), wide_lse(DType::f32, size_t(q_len) * Hq * 2);
  wide_out.poison();
  wide_lse.poison();
  TensorView os = make_view(wide_out.data(), DType::f32, {q_len, Hq, D});
  os.stride = {Hq * 2 * D, 2 * D, 1};
  TensorView ls = make_view(wide_lse.data(), DType::f32, {q_len, Hq});
  ls.stride = {Hq * 2, 2};
  sparse_prefill(cfg, qs, pc.kv(), 0, L, &b.sel, os, ls);
  for (int64_t t = 0; t < q_len; ++t)
    for (int hq = 0; hq < Hq; ++hq) {
      EXPECT_EQ(wide_lse.get((t * Hq + hq) * 2), dense.lse.get(t * Hq + hq));
      EXPECT_TRUE(std::isnan(wide_lse.get((t * Hq + hq) * 2 + 1))) << "wrote past the view";
      for (int d = 0; d < D; ++d) {
        ASSERT_EQ(wide_out.get((t * Hq + hq) * 2 * D + d), dense.out.get((t * Hq + hq) * D + d));
        ASSERT_TRUE(std::isnan(wide_out.get((t * Hq + hq) * 2 * D + D + d))) << "wrote past the view";
      }
    }
}

}  // namespace
}  // namespace unique::test

// Page scoring and top-k selection: fast (unique::score_pages / select_pages) against the
// reference twins over sweeps of page size, head dim, GQA group, dtypes, estimators, GQA
// aggregations and offset forms; selection invariants; oracle optimality of recall;
// planted needles.
#include <gtest/gtest.h>

#include <array>
#include <set>

#include "test_util.h"

namespace unique::test {
namespace {

struct EstCfg {
  Estimator e;
  GqaAggregation g;
  OffsetForm o;
};
std::vector<EstCfg> all_estimator_configs() {
  std::vector<EstCfg> v;
  for (GqaAggregation g : {GqaAggregation::max, GqaAggregation::softmax_sum}) {
    v.push_back({Estimator::unique, g, OffsetForm::channel});
    v.push_back({Estimator::unique, g, OffsetForm::norm});
    for (Estimator e : {Estimator::quest, Estimator::mean, Estimator::oracle, Estimator::random,
                        Estimator::dense, Estimator::composite})
      v.push_back({e, g, OffsetForm::channel});
  }
  return v;
}

std::string cfg_name(const AttentionConfig& c) {
  return std::string("estimator=") + to_string(c.estimator) + " gqa=" + to_string(c.gqa) +
         " offset=" + to_string(c.offset) + " budget=" + std::to_string(c.budget_tokens) +
         " sink=" + std::to_string(c.sink_pages) + " recent=" + std::to_string(c.recent_pages) +
         " alpha=" + std::to_string(c.alpha);
}

double row_scale(const float* s, int n) {
  double m = 0;
  for (int j = 0; j < n; ++j) m = std::max(m, std::fabs(double(s[j])));
  return m;
}

// Scores: every entry written; -inf past the sequence's pages; fast within tolerance of ref.
void expect_scores_match(const PagedKV& kv, const Buf& fast, const Buf& ref, int max_pages,
                         double rel) {
  int bad = 0;
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int h = 0; h < kv.num_kv_heads; ++h) {
      const size_t base = (size_t(b) * kv.num_kv_heads + h) * max_pages;
      const float* r = reinterpret_cast<const float*>(ref.data()) + base;
      const double tol = rel * row_scale(r, n) + 1e-6;
      for (int j = 0; j < max_pages; ++j) {
        const float f = fast.get(base + j), x = r[j];
        if (j >= n) {
          if (!(f == -INFINITY && x == -INFINITY) && ++bad < 10)
            ADD_FAILURE() << "b" << b << " h" << h << " j" << j << " past the end: fast " << f << " ref " << x;
          continue;
        }
        if (!(std::isfinite(f) && std::isfinite(x) && std::fabs(double(f) - x) <= tol) && ++bad < 10)
          ADD_FAILURE() << "b" << b << " h" << h << " page " << j << ": fast " << f << " ref " << x
                        << " tol " << tol;
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

// Invariants of one selection: count, order, range, forced pages, -1 padding.
void expect_selection_invariants(const SelBuf& s, const AttentionConfig& cfg, const PagedKV& kv) {
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int h = 0; h < kv.num_kv_heads; ++h) {
      SCOPED_TRACE("b=" + std::to_string(b) + " h=" + std::to_string(h) + " pages=" + std::to_string(n));
      const int c = s.count(b, h);
      // Computed here, not through the library: forced = |[0,sink) u [n-max(recent,1), n)|.
      const int recent = std::max(cfg.recent_pages, 1);
      std::set<int> forced;
      for (int j = 0; j < n; ++j)
        if (j < cfg.sink_pages || j >= n - recent) forced.insert(j);
      const int k = cfg.budget_tokens / cfg.page_size;
      const int want = cfg.estimator == Estimator::dense
                           ? n
                           : std::min<int>(n, int(forced.size()) + k);
      ASSERT_EQ(c, want);
      EXPECT_EQ(c, cfg.estimator == Estimator::dense ? n : std::min(cfg.max_selected(n), n));
      const int32_t* p = s.row(b, h);
      for (int i = 0; i < c; ++i) {
        EXPECT_GE(p[i], 0);
        EXPECT_LT(p[i], n);
        if (i) {
          EXPECT_LT(p[i - 1], p[i]) << "not ascending or duplicate at " << i;
        }
      }
      for (int i = c; i < s.sel.max_selected; ++i) EXPECT_EQ(p[i], -1) << "padding at " << i;
      const std::set<int> chosen(p, p + c);
      for (int j : forced) EXPECT_TRUE(chosen.count(j)) << "forced page " << j << " missing";
      EXPECT_TRUE(chosen.count(n - 1)) << "last page missing";
      if (cfg.budget_tokens >= n * cfg.page_size) {
        EXPECT_EQ(c, n) << "budget >= context selects every page";
      }
    }
  }
}

// Fast selection equals the reference one, except for pages whose reference score ties
// (within rel * row scale) with the k-th boundary score.
void expect_selection_matches(const SelBuf& fast, const SelBuf& ref, const Buf& ref_scores,
                              int max_pages, const AttentionConfig& cfg, const PagedKV& kv,
                              double rel) {
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int h = 0; h < kv.num_kv_heads; ++h) {
      ASSERT_EQ(fast.count(b, h), ref.count(b, h)) << "b" << b << " h" << h;
      const std::vector<int> f = fast.chosen(b, h), r = ref.chosen(b, h);
      if (f == r) continue;
      const float* s = reinterpret_cast<const float*>(ref_scores.data()) +
                       (size_t(b) * kv.num_kv_heads + h) * max_pages;
      // Boundary: lowest-ranked reference score among the non-forced chosen pages.
      double boundary = INFINITY;
      const int recent = std::max(cfg.recent_pages, 1);
      auto forced = [&](int j) { return j < cfg.sink_pages || j >= n - recent; };
      for (int j : r)
        if (!forced(j)) boundary = std::min(boundary, double(s[j]));
      const double tol = rel * row_scale(s, n) + 1e-6;
      std::vector<int> diff;
      std::set_symmetric_difference(f.begin(), f.end(), r.begin(), r.end(), std::back_inserter(diff));
      for (int j : diff) {
        EXPECT_FALSE(forced(j)) << "forced page " << j << " differs";
        EXPECT_LE(std::fabs(s[j] - boundary), tol)
            << "b" << b << " h" << h << ": page " << j << " (ref score " << s[j]
            << ") selected by only one of fast/ref; boundary score " << boundary;
      }
    }
  }
}

struct SweepParam {
  int P, D, group;
  DType dt;
};

class ScoreSelectSweep : public ::testing::TestWithParam<SweepParam> {};

// fp8_stats: the statistics are stored as fp8 (e4m3 + per-pair scales); the reference
// scores the dequantized values in double, the fast scorer sums codes and scales once.
void fast_matches_reference(const SweepParam& sp, bool fp8_stats) {
  // Distinct for every (P, D, group, dtype): each case draws its own data.
  const uint64_t idx = ((uint64_t(sp.P) * 1000 + sp.D) * 100 + sp.group) * 10 + int(sp.dt);
  const uint64_t seed = case_seed(fp8_stats ? 23 : 21, idx);
  Rng r(seed);
  CaseSpec s;
  s.page_size = sp.P;
  s.head_dim = sp.D;
  s.dtype = sp.dt;
  s.stats_dtype = fp8_stats ? DType::e4m3 : (idx % 2) ? DType::bf16 : DType::f32;
  s.num_kv_heads = 2;
  // Ragged: a long sequence with a partial last page, one exactly full page, one token.
  s.lens = {int64_t(6 * sp.P + r.range(1, sp.P - 1)), int64_t(sp.P), 1, int64_t(3 * sp.P + 1)};
  s.max_chunk = sp.P + 9;
  const DType qt = DType(r.range(0, 2));
  SCOPED_TRACE(case_name(s, sp.group, qt, seed));
  CacheCase c = make_case(s, seed);
  const PagedKV kv = c.kv();
  const int B = c.batch(), H = s.num_kv_heads, Hq = H * sp.group;
  Buf q = make_queries(c, sp.group, qt, seed);
  const TensorView qv = q.view({B, Hq, sp.D});
  const int max_pages = max_seq_pages(kv) + 2;  // a wider scores buffer than needed

  struct Shape { int budget_pages, sink, recent; };
  const std::vector<Shape> shapes = {{2, 1, 1}, {1, 0, 0}, {3, 2, 2}, {100, 1, 1}};
  int ci = 0;
  for (const EstCfg& ec : all_estimator_configs()) {
    const Shape sh = shapes[ci++ % shapes.size()];
    AttentionConfig cfg;
    cfg.page_size = sp.P;
    cfg.budget_tokens = sh.budget_pages * sp.P + (ci % 3 == 0 ? sp.P / 2 : 0);  // non-multiple too
    cfg.sink_pages = sh.sink;
    cfg.recent_pages = sh.recent;
    cfg.estimator = ec.e;
    cfg.gqa = ec.g;
    cfg.offset = ec.o;
    cfg.alpha = ci % 2 ? 1.0f : 0.5f;
    cfg.seed = seed;
    cfg.pool = std::array{4, 8, 64}[ci % 3];  // composite: blocks within a page, or the whole page
    SCOPED_TRACE(cfg_name(cfg) + " pool=" + std::to_string(cfg.pool));

    Buf fs(DType::f32, size_t(B) * H * max_pages), rs(DType::f32, fs.size());
    fs.poison();
    rs.poison();
    score_pages(cfg, qv, kv, fs.view({B, H, max_pages}));
    ref::score_pages(cfg, qv, kv, rs.view({B, H, max_pages}));
    const double rel = ec.e == Estimator::oracle ? 2e-5 : 1e-4;
    expect_scores_match(kv, fs, rs, max_pages, rel);
    if (ec.e == Estimator::dense && ec.g == GqaAggregation::max) {
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < seq_pages(kv, b); ++j) EXPECT_EQ(rs.get(size_t(b) * H * max_pages + j), 0.0f);
    }
    if (ec.e == Estimator::random && ec.g == GqaAggregation::max) {  // bit-identical: same hash
      for (size_t i = 0; i < fs.size(); ++i) ASSERT_EQ(fs.get(i), rs.get(i)) << i;
    }

    const int ms = cfg.max_selected(max_seq_pages(kv)) + 1;  // one slot of slack: -1 padded
    SelBuf fsel(B, H, ms), rsel(B, H, ms);
    select_pages(cfg, qv, kv, fsel.sel);
    ref::select_pages(cfg, qv, kv, rsel.sel);
    expect_selection_invariants(fsel, cfg, kv);
    expect_selection_invariants(rsel, cfg, kv);
    expect_selection_matches(fsel, rsel, rs, max_pages, cfg, kv, rel);
    if (ec.e == Estimator::random || ec.e == Estimator::dense) {
      EXPECT_EQ(fsel.pages, rsel.pages);
      EXPECT_EQ(fsel.counts, rsel.counts);
    }
    if (::testing::Test::HasFailure()) return;
  }
}

TEST_P(ScoreSelectSweep, FastMatchesReference) { fast_matches_reference(GetParam(), false); }
TEST_P(ScoreSelectSweep, Fp8StatsFastMatchesReference) { fast_matches_reference(GetParam(), true); }

std::vector<SweepParam> sweep_params() {
  std::vector<SweepParam> v;
  for (int P : {16, 32, 64})
    for (int D : {64, 128})
      for (int g : {1, 4, 8})
        for (DType dt : {DType::f32, DType::f16, DType::bf16}) v.push_back({P, D, g, dt});
  return v;
}
std::string sweep_name(const ::testing::TestParamInfo<SweepParam>& i) {
  return detail::concat("P", i.param.P, "_D", i.param.D, "_G", i.param.group, "_", to_string(i.param.dt));
}
INSTANTIATE_TEST_SUITE_P(Sweep, ScoreSelectSweep, ::testing::ValuesIn(sweep_params()), sweep_name);
// GQA groups that are not a multiple of the kernels' head blocks (8/4/2/1).
INSTANTIATE_TEST_SUITE_P(OddGroups, ScoreSelectSweep,
                         ::testing::Values(SweepParam{16, 64, 2, DType::f32}, SweepParam{16, 64, 3, DType::bf16},
                                           SweepParam{32, 64, 5, DType::f16}, SweepParam{16, 128, 6, DType::f32},
                                           SweepParam{64, 64, 7, DType::bf16}, SweepParam{16, 64, 12, DType::f32}),
                         sweep_name);

// Pages with identical statistics tie exactly: the lower positions win, fast and ref alike.
TEST(Selection, TiesGoToLowerPagePositions) {
  for (Estimator e : {Estimator::unique, Estimator::quest, Estimator::mean}) {
    KVCacheOptions opt;
    opt.num_pages = 12;
    opt.num_kv_heads = 1;
    opt.page_size = 16;
    opt.head_dim = 16;
    opt.dtype = DType::f32;
    KVCache cache(opt);
    const int s = cache.add_sequence();
    const int len = 10 * 16;
    std::vector<float> k(size_t(len) * 16), v(k.size(), 1.0f);
    for (int t = 0; t < len; ++t)
      for (int d = 0; d < 16; ++d) k[t * 16 + d] = float((t % 16) - 7) * 0.25f + d;  // same on every page
    cache.append({s}, {len}, make_view(k.data(), DType::f32, {len, 1, 16}), make_view(v.data(), DType::f32, {len, 1, 16}));
    PageTable t = cache.page_table({s});
    const PagedKV kv = cache.view(t);
    std::vector<float> q(16);
    for (int d = 0; d < 16; ++d) q[d] = 0.1f * (d - 5);
    AttentionConfig cfg;
    cfg.estimator = e;
    cfg.budget_tokens = 3 * 16;
    SCOPED_TRACE(cfg_name(cfg));
    for (int impl = 0; impl < 2; ++impl) {
      SelBuf sel(1, 1, cfg.max_selected(10));
      const TensorView qv = make_view(q.data(), DType::f32, {1, 1, 16});
      if (impl) ref::select_pages(cfg, qv, kv, sel.sel);
      else select_pages(cfg, qv, kv, sel.sel);
      EXPECT_EQ(sel.chosen(0, 0), (std::vector<int>{0, 1, 2, 3, 9})) << (impl ? "ref" : "fast");
    }
  }
}

// The random estimator is seeded: same seed same pages, another seed other pages.
// The composite estimator at its two ends, against values computed here: one block per
// page (pool >= page) is the page's mean key, so its scores are the `mean` estimator's
// (fp32 statistics kept exactly by the cache); one token per block scores a page by its
// largest q.k. Ragged lengths: partial last pages average only their tokens.
TEST(Selection, CompositeEndsAreMeanAndMaxLogit) {
  for (int P : {16, 32}) {
    CaseSpec s;
    s.page_size = P;
    s.lens = {int64_t(5 * P + 3), int64_t(P), 1};
    s.head_dim = 64;
    const uint64_t seed = case_seed(31, P);
    CacheCase c = make_case(s, seed);
    const PagedKV kv = c.kv();
    const int B = c.batch(), H = s.num_kv_heads, D = s.head_dim, group = 2, Hq = H * group;
    Buf q = make_queries(c, group, DType::f32, seed);
    const TensorView qv = q.view({B, Hq, D});
    const int max_pages = max_seq_pages(kv);
    auto scores = [&](Estimator e, int pool, bool fast) {
      AttentionConfig cfg;
      cfg.page_size = P;
      cfg.estimator = e;
      cfg.pool = pool;
      Buf out(DType::f32, size_t(B) * H * max_pages);
      out.poison();
      if (fast) score_pages(cfg, qv, kv, out.view({B, H, max_pages}));
      else ref::score_pages(cfg, qv, kv, out.view({B, H, max_pages}));
      return out;
    };
    for (bool fast : {false, true}) {
      SCOPED_TRACE(fast ? "fast" : "reference");
      const Buf whole = scores(Estimator::composite, 64, fast), mean = scores(Estimator::mean, 8, false);
      const Buf single = scores(Estimator::composite, 1, fast);
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
          for (int j = 0; j < seq_pages(kv, b); ++j) {
            const size_t at = (size_t(b) * H + h) * max_pages + j;
            EXPECT_NEAR(whole.get(at), mean.get(at), 1e-4 * (1 + std::fabs(mean.get(at)))) << b << " " << h << " " << j;
            // Largest q.k over the page's tokens, maximised over the group's heads (GQA max).
            const int page = kv.page_indices[kv.page_indptr[b] + j];
            const int tokens = j == seq_pages(kv, b) - 1 ? kv.last_page_len[b] : P;
            double best = -INFINITY;
            for (int i = 0; i < group; ++i)
              for (int t = 0; t < tokens; ++t) {
                double dot = 0;
                for (int d = 0; d < D; ++d)
                  dot += double(q.get((size_t(b) * Hq + h * group + i) * D + d)) *
                         load_as_float(kv.k, kv.dtype, kv.kv_offset(page, h) + int64_t(t) * D + d);
                best = std::max(best, dot);
              }
            EXPECT_NEAR(single.get(at), best, 1e-4 * (1 + std::fabs(best))) << b << " " << h << " " << j;
          }
    }
  }
}

TEST(Selection, RandomEstimatorIsSeeded) {
  CaseSpec s;
  s.lens = {40 * 16};
  s.num_kv_heads = 1;
  s.head_dim = 64;
  CacheCase c = make_case(s, 99);
  const PagedKV kv = c.kv();
  Buf q = make_queries(c, 1, DType::f32, 99);
  AttentionConfig cfg;
  cfg.estimator = Estimator::random;
  cfg.budget_tokens = 8 * 16;
  std::set<std::vector<int>> seen;
  for (uint64_t seed : {1, 2, 3, 1}) {
    cfg.seed = seed;
    SelBuf sel(1, 1, cfg.max_selected(40));
    select_pages(cfg, q.view({1, 1, 64}), kv, sel.sel);
    seen.insert(sel.chosen(0, 0));
  }
  EXPECT_EQ(seen.size(), 3u);
}

// Attention-mass recall: dense == 1; the oracle (true page mass, aggregated by the sum over
// the group's heads, which makes its selection optimal for the mean recall) >= every other
// estimator at the same budget; with group 1 also under max aggregation.
TEST(Selection, OracleRecallIsBest) {
  uint64_t ci = 0;
  for (int P : {16, 32})
    for (int group : {1, 4})
      for (DType dt : {DType::f32, DType::bf16}) {
        const uint64_t seed = case_seed(31, ci++);
        CaseSpec s;
        s.page_size = P;
        s.head_dim = 64;
        s.dtype = dt;
        s.num_kv_heads = 2;
        s.lens = {int64_t(12 * P + 3), int64_t(7 * P), int64_t(P + 2)};
        s.needle = true;
        SCOPED_TRACE(case_name(s, group, DType::f32, seed));
        CacheCase c = make_case(s, seed);
        const PagedKV kv = c.kv();
        const int B = c.batch(), Hq = 2 * group;
        Buf q = make_queries(c, group, DType::f32, seed, 0.3f);
        const TensorView qv = q.view({B, Hq, 64});
        AttentionConfig base;
        base.page_size = P;
        base.budget_tokens = 3 * P;
        auto recall_of = [&](Estimator e, GqaAggregation g, bool use_ref) {
          AttentionConfig cfg = base;
          cfg.estimator = e;
          cfg.gqa = g;
          cfg.seed = seed;
          SelBuf sel(B, 2, cfg.max_selected(max_seq_pages(kv)));
          if (use_ref) ref::select_pages(cfg, qv, kv, sel.sel);
          else select_pages(cfg, qv, kv, sel.sel);
          return attention_recall(cfg, qv, kv, sel.sel);
        };
        const double dense = recall_of(Estimator::dense, GqaAggregation::max, false);
        EXPECT_NEAR(dense, 1.0, 1e-12);
        for (bool use_ref : {false, true}) {
          const double oracle = recall_of(Estimator::oracle, GqaAggregation::softmax_sum, use_ref);
          EXPECT_LE(oracle, 1.0 + 1e-12);
          EXPECT_GT(oracle, 0.0);
          for (GqaAggregation g : {GqaAggregation::max, GqaAggregation::softmax_sum})
            for (Estimator e : {Estimator::unique, Estimator::quest, Estimator::mean, Estimator::random,
                                Estimator::oracle}) {
              const double rec = recall_of(e, g, use_ref);
              EXPECT_GE(oracle + 1e-6, rec) << to_string(e) << " " << to_string(g) << (use_ref ? " ref" : " fast");
              EXPECT_LE(rec, 1.0 + 1e-12);
            }
          if (group == 1) {
            const double oracle_max = recall_of(Estimator::oracle, GqaAggregation::max, use_ref);
            EXPECT_NEAR(oracle_max, oracle, 1e-6);
          }
        }
      }
}

// A planted needle page (keys pushed along the query direction) is selected by unique,
// quest and the oracle at a budget of one page.
TEST(Selection, NeedlePageIsSelected) {
  uint64_t ci = 0;
  for (int P : {16, 64})
    for (int group : {1, 4})
      for (DType dt : {DType::f32, DType::bf16}) {
        const uint64_t seed = case_seed(41, ci++);
        CaseSpec s;
        s.page_size = P;
        s.head_dim = 128;
        s.dtype = dt;
        s.stats_dtype = ci % 2 ? DType::bf16 : DType::f32;
        s.num_kv_heads = 2;
        s.lens = {int64_t(20 * P + 5), int64_t(9 * P)};
        s.needle = true;
        s.needle_strength = 2.0f;
        SCOPED_TRACE(case_name(s, group, DType::f32, seed));
        CacheCase c = make_case(s, seed);
        const PagedKV kv = c.kv();
        const int B = c.batch(), Hq = 2 * group;
        Buf q = make_queries(c, group, DType::f32, seed, 1.5f);
        for (Estimator e : {Estimator::unique, Estimator::quest, Estimator::oracle}) {
          AttentionConfig cfg;
          cfg.page_size = P;
          cfg.budget_tokens = P;
          cfg.estimator = e;
          SelBuf sel(B, 2, cfg.max_selected(max_seq_pages(kv)));
          select_pages(cfg, q.view({B, Hq, 128}), kv, sel.sel);
          for (int b = 0; b < B; ++b)
            for (int h = 0; h < 2; ++h) {
              const int needle = c.needles[b * 2 + h];
              ASSERT_GE(needle, 1);
              const auto ch = sel.chosen(b, h);
              EXPECT_TRUE(std::count(ch.begin(), ch.end(), needle))
                  << to_string(e) << " b" << b << " h" << h << " missed needle page " << needle;
            }
        }
      }
}

// The UNIQUE offset term: a page whose keys spread widely ranks above a page with the same
// mean and no spread; alpha = 0 makes it the mean estimator.
TEST(Selection, UniqueOffsetRanksSpreadPagesHigher) {
  KVCacheOptions opt;
  opt.num_pages = 4;
  opt.num_kv_heads = 1;
  opt.page_size = 16;
  opt.head_dim = 16;
  opt.dtype = DType::f32;
  KVCache cache(opt);
  const int s = cache.add_sequence();
  const int len = 4 * 16;
  std::vector<float> k(size_t(len) * 16, 0.0f), v(k.size(), 0.0f);
  for (int t = 16; t < 32; ++t)  // page 1: mean 0, spread +-3 in every channel
    for (int d = 0; d < 16; ++d) k[t * 16 + d] = (t % 2 ? 3.0f : -3.0f);
  for (int t = 32; t < 48; ++t)  // page 2: mean 0.1, no spread
    for (int d = 0; d < 16; ++d) k[t * 16 + d] = 0.1f;
  cache.append({s}, {len}, make_view(k.data(), DType::f32, {len, 1, 16}), make_view(v.data(), DType::f32, {len, 1, 16}));
  PageTable t = cache.page_table({s});
  const PagedKV kv = cache.view(t);
  std::vector<float> q(16, 1.0f);
  AttentionConfig cfg;
  cfg.budget_tokens = 16;
  cfg.sink_pages = 1;
  cfg.recent_pages = 1;
  for (OffsetForm o : {OffsetForm::channel, OffsetForm::norm}) {
    cfg.offset = o;
    cfg.alpha = 1.0f;
    cfg.estimator = Estimator::unique;
    SelBuf sel(1, 1, 3);
    select_pages(cfg, make_view(q.data(), DType::f32, {1, 1, 16}), kv, sel.sel);
    EXPECT_EQ(sel.chosen(0, 0), (std::vector<int>{0, 1, 3})) << to_string(o);
    // Score by hand: q.mean + alpha * offset; channel: sum |q| * 3 = 48; norm: 4 * 12 = 48.
    Buf sc(DType::f32, 4);
    score_pages(cfg, make_view(q.data(), DType::f32, {1, 1, 16}), kv, sc.view({1, 1, 4}));
    EXPECT_NEAR(sc.get(1), 48.0, 1e-4);
    EXPECT_NEAR(sc.get(2), 1.6, 1e-5);
  }
  cfg.alpha = 0.0f;
  SelBuf sel(1, 1, 3);
  select_pages(cfg, make_view(q.data(), DType::f32, {1, 1, 16}), kv, sel.sel);
  EXPECT_EQ(sel.chosen(0, 0), (std::vector<int>{0, 2, 3}));
  cfg.alpha = 1.0f;
  cfg.estimator = Estimator::mean;
  select_pages(cfg, make_view(q.data(), DType::f32, {1, 1, 16}), kv, sel.sel);
  EXPECT_EQ(sel.chosen(0, 0), (std::vector<int>{0, 2, 3}));
}

}  // namespace
}  // namespace unique::test

// Paged decode: fast (unique::paged_decode) against unique::ref::paged_decode, dense and
// sparse, over sweeps of page size, head dim, GQA group and dtypes of cache, q and out;
// sparse with every page selected equals dense exactly; the reference against attention
// computed here from the raw keys and values.
#include <gtest/gtest.h>

#include "test_util.h"

namespace unique::test {
namespace {

double out_tol(DType out) {
  switch (out) {
    case DType::bf16: return 1e-2;
    case DType::f16: return 2e-3;
    default: return 1e-5;
  }
}


struct SweepParam {
  int P, D, group;
  DType dt;
};
class DecodeSweep : public ::testing::TestWithParam<SweepParam> {};

TEST_P(DecodeSweep, FastMatchesReference) {
  const SweepParam sp = GetParam();
  // Distinct for every (P, D, group, dtype): each case draws its own data.
  const uint64_t idx = ((uint64_t(sp.P) * 1000 + sp.D) * 100 + sp.group) * 10 + int(sp.dt);
  const uint64_t seed = case_seed(51, idx);
  Rng r(seed);
  CaseSpec s;
  s.page_size = sp.P;
  s.head_dim = sp.D;
  s.dtype = sp.dt;
  s.num_kv_heads = 2;
  s.lens = {int64_t(5 * sp.P + r.range(1, sp.P - 1)), 1, int64_t(2 * sp.P), int64_t(sp.P + 1)};
  s.max_chunk = sp.P + 5;
  for (DType qt : {DType::f32, DType::f16, DType::bf16}) {
    const DType ot = DType((int(qt) + idx) % 3);
    const uint64_t qseed = seed + int(qt);
    SCOPED_TRACE(case_name(s, sp.group, qt, qseed) + " out=" + to_string(ot));
    CacheCase c = make_case(s, qseed);
    const PagedKV kv = c.kv();
    const int B = c.batch(), H = 2, Hq = H * sp.group, D = sp.D;
    Buf q = make_queries(c, sp.group, qt, qseed, 0.5f);
    const TensorView qv = q.view({B, Hq, D});
    AttentionConfig cfg;
    cfg.page_size = sp.P;
    cfg.budget_tokens = 2 * sp.P;
    cfg.sm_scale = int(qt) == 1 ? 0.05f : 0.0f;  // default 1/sqrt(D) and an explicit one
    // Sparse selections from the reference selector (a 2-page budget, and a budget above
    // every sequence's length: all pages); dense as nullptr.
    SelBuf sel(B, H, cfg.max_selected(max_seq_pages(kv)));
    ref::select_pages(cfg, qv, kv, sel.sel);
    AttentionConfig all_cfg = cfg;
    all_cfg.budget_tokens = (max_seq_pages(kv) + 1) * sp.P;
    SelBuf all(B, H, all_cfg.max_selected(max_seq_pages(kv)));
    ref::select_pages(all_cfg, qv, kv, all.sel);
    for (const Selection* sp_sel : std::vector<const Selection*>{nullptr, &sel.sel, &all.sel}) {
      SCOPED_TRACE(!sp_sel ? "dense" : sp_sel == &sel.sel ? "sparse" : "sparse, budget >= context");
      Buf fo(ot, size_t(B) * Hq * D), ro(ot, fo.size());
      Buf fl(DType::f32, size_t(B) * Hq), rl(DType::f32, fl.size());
      fo.poison(); ro.poison(); fl.poison(); rl.poison();
      paged_decode(cfg, qv, kv, sp_sel, fo.view({B, Hq, D}), fl.view({B, Hq}));
      ref::paged_decode(cfg, qv, kv, sp_sel, ro.view({B, Hq, D}), rl.view({B, Hq}));
      expect_outputs_match(fo, ro, fl, rl, B * Hq, D, out_tol(fo.dt));
      // Without lse (null view): the same output.
      Buf fo2(ot, fo.size());
      fo2.poison();
      paged_decode(cfg, qv, kv, sp_sel, fo2.view({B, Hq, D}), TensorView{});
      EXPECT_EQ(fo2.bytes, fo.bytes);
    }
    if (::testing::Test::HasFailure()) return;
  }
}

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
INSTANTIATE_TEST_SUITE_P(Sweep, DecodeSweep, ::testing::ValuesIn(sweep_params()), sweep_name);
// GQA groups that are not a multiple of the kernels' head blocks (8/4/2/1).
INSTANTIATE_TEST_SUITE_P(OddGroups, DecodeSweep,
                         ::testing::Values(SweepParam{16, 64, 2, DType::f32}, SweepParam{16, 64, 3, DType::bf16},
                                           SweepParam{32, 64, 5, DType::f16}, SweepParam{16, 128, 6, DType::f32},
                                           SweepParam{64, 64, 7, DType::bf16}, SweepParam{16, 64, 12, DType::f32}),
                         sweep_name);

// A selection of every page (made by hand, and by select_pages with budget >= context)
// gives bit-identical results to dense, in the fast and the reference paths.
TEST(Decode, SparseWithEveryPageEqualsDense) {
  uint64_t ci = 0;
  for (int P : {16, 64})
    for (int group : {1, 8})
      for (DType dt : {DType::f32, DType::bf16}) {
        const uint64_t seed = case_seed(52, ci++);
        CaseSpec s;
        s.page_size = P;
        s.head_dim = 64;
        s.dtype = dt;
        s.num_kv_heads = 2;
        s.lens = {int64_t(4 * P + 3), 1, int64_t(P)};
        SCOPED_TRACE(case_name(s, group, DType::f32, seed));
        CacheCase c = make_case(s, seed);
        const PagedKV kv = c.kv();
        const int B = c.batch(), H = 2, Hq = H * group, D = 64, n_max = max_seq_pages(kv);
        Buf q = make_queries(c, group, DType::f32, seed);
        const TensorView qv = q.view({B, Hq, D});
        AttentionConfig cfg;
        cfg.page_size = P;
        cfg.budget_tokens = 4 * P;
        SelBuf all(B, H, n_max + 2);
        for (int b = 0; b < B; ++b)
          for (int h = 0; h < H; ++h) {
            const int n = seq_pages(kv, b);
            int32_t* p = all.pages.data() + (size_t(b) * H + h) * (n_max + 2);
            for (int i = 0; i < n_max + 2; ++i) p[i] = i < n ? i : -1;
            all.counts[b * H + h] = n;
          }
        AttentionConfig big = cfg;
        big.budget_tokens = n_max * P + P;
        SelBuf picked(B, H, big.max_selected(n_max));
        select_pages(big, qv, kv, picked.sel);
        for (int b = 0; b < B; ++b)
          for (int h = 0; h < H; ++h) ASSERT_EQ(picked.count(b, h), seq_pages(kv, b));
        for (int impl = 0; impl < 2; ++impl) {
          auto run = [&](const AttentionConfig& cf, const Selection* sel, Buf& o, Buf& l) {
            o.poison();
            l.poison();
            if (impl) ref::paged_decode(cf, qv, kv, sel, o.view({B, Hq, D}), l.view({B, Hq}));
            else paged_decode(cf, qv, kv, sel, o.view({B, Hq, D}), l.view({B, Hq}));
          };
          Buf dense_o(DType::f32, size_t(B) * Hq * D), dense_l(DType::f32, size_t(B) * Hq);
          Buf o1 = dense_o, l1 = dense_l, o2 = dense_o, l2 = dense_l;
          run(cfg, nullptr, dense_o, dense_l);
          run(cfg, &all.sel, o1, l1);
          run(big, &picked.sel, o2, l2);
          for (size_t i = 0; i < dense_o.size(); ++i) ASSERT_FALSE(std::isnan(dense_o.get(i)));
          EXPECT_EQ(o1.bytes, dense_o.bytes) << (impl ? "ref" : "fast");
          EXPECT_EQ(l1.bytes, dense_l.bytes) << (impl ? "ref" : "fast");
          EXPECT_EQ(o2.bytes, dense_o.bytes) << (impl ? "ref" : "fast");
          EXPECT_EQ(l2.bytes, dense_l.bytes) << (impl ? "ref" : "fast");
        }
      }
}

// Attention computed here from the raw fp32 keys/values fed to the cache (double): the
// reference (and so the fast path) is checked against an independent formula, dense and
// for a selection given by hand; plus sparse decode == dense decode over a cache that
// holds only the selected pages.
TEST(Decode, ReferenceMatchesIndependentAttention) {
  const uint64_t seed = 5353;
  SCOPED_TRACE("seed=" + std::to_string(seed));
  Rng r(seed);
  const int P = 16, D = 32, H = 2, group = 2, Hq = 4;
  const std::vector<int> lens = {3 * P + 5, 7};
  KVCacheOptions opt;
  opt.num_pages = 8;
  opt.num_kv_heads = H;
  opt.page_size = P;
  opt.head_dim = D;
  opt.dtype = DType::f32;
  KVCache cache(opt);
  std::vector<std::vector<float>> K(2), V(2);  // [t][h][d]
  std::vector<int> seqs;
  for (int b = 0; b < 2; ++b) {
    seqs.push_back(cache.add_sequence());
    K[b].resize(size_t(lens[b]) * H * D);
    V[b].resize(K[b].size());
    for (auto& x : K[b]) x = r.normal();
    for (auto& x : V[b]) x = r.normal();
    cache.append({seqs[b]}, {lens[b]}, make_view(K[b].data(), DType::f32, {lens[b], H, D}),
                 make_view(V[b].data(), DType::f32, {lens[b], H, D}));
  }
  PageTable table = cache.page_table(seqs);
  const PagedKV kv = cache.view(table);
  std::vector<float> q(size_t(2) * Hq * D);
  for (auto& x : q) x = r.normal();
  AttentionConfig cfg;
  cfg.budget_tokens = P;
  // Selection by hand: sequence 0 pages {0, 2, 3} for head 0, {1, 3} for head 1; seq 1 {0}.
  SelBuf sel(2, H, 3);
  const std::vector<std::vector<int>> pick = {{0, 2, 3}, {1, 3}, {0}, {0}};
  for (int i = 0; i < 4; ++i) {
    std::fill(sel.pages.begin() + i * 3, sel.pages.begin() + i * 3 + 3, -1);
    std::copy(pick[i].begin(), pick[i].end(), sel.pages.begin() + i * 3);
    sel.counts[i] = static_cast<int>(pick[i].size());
  }
  const double scale = 1.0 / std::sqrt(double(D));
  for (int sparse = 0; sparse < 2; ++sparse)
    for (int impl = 0; impl < 2; ++impl) {
      Buf o(DType::f32, q.size()), l(DType::f32, 2 * Hq);
      o.poison();
      l.poison();
      const Selection* s = sparse ? &sel.sel : nullptr;
      const TensorView qv = make_view(q.data(), DType::f32, {2, Hq, D});
      if (impl) ref::paged_decode(cfg, qv, kv, s, o.view({2, Hq, D}), l.view({2, Hq}));
      else paged_decode(cfg, qv, kv, s, o.view({2, Hq, D}), l.view({2, Hq}));
      for (int b = 0; b < 2; ++b)
        for (int hq = 0; hq < Hq; ++hq) {
          const int h = hq / group;
          std::vector<double> w;
          std::vector<int> toks;
          for (int t = 0; t < lens[b]; ++t) {
            if (sparse) {
              const auto& pk = pick[b * H + h];
              if (std::find(pk.begin(), pk.end(), t / P) == pk.end()) continue;
            }
            double dot = 0;
            for (int d = 0; d < D; ++d) dot += double(q[(b * Hq + hq) * D + d]) * K[b][(size_t(t) * H + h) * D + d];
            w.push_back(dot * scale);
            toks.push_back(t);
          }
          const double m = *std::max_element(w.begin(), w.end());
          double sum = 0;
          for (double& x : w) sum += (x = std::exp(x - m));
          for (int d = 0; d < D; ++d) {
            double acc = 0;
            for (size_t i = 0; i < toks.size(); ++i) acc += w[i] * V[b][(size_t(toks[i]) * H + h) * D + d];
            EXPECT_NEAR(o.get((size_t(b) * Hq + hq) * D + d), acc / sum, 1e-5)
                << (impl ? "ref" : "fast") << (sparse ? " sparse" : " dense") << " b" << b << " hq" << hq;
          }
          EXPECT_NEAR(l.get(b * Hq + hq), m + std::log(sum), 1e-5);
        }
    }
}

// Strided q and out views (e.g. a slice of a larger tensor) are read and written through
// their strides by both paths.
TEST(Decode, StridedQueryAndOutput) {
  CaseSpec s;
  s.lens = {70, 20};
  s.head_dim = 64;
  s.num_kv_heads = 2;
  CacheCase c = make_case(s, 777);
  const PagedKV kv = c.kv();
  const int B = 2, Hq = 4, D = 64;
  Buf q = make_queries(c, 2, DType::f32, 777);
  // q2: [B, Hq, 2*D] with q in the first half of the last dim, padding NaN.
  Buf q2(DType::f32, size_t(B) * Hq * 2 * D);
  q2.poison();
  for (int r = 0; r < B * Hq; ++r)
    for (int d = 0; d < D; ++d) q2.set(size_t(r) * 2 * D + d, q.get(size_t(r) * D + d));
  TensorView qs = q2.view({B, Hq, D});
  qs.stride[1] = 2 * D;
  qs.stride[0] = Hq * 2 * D;
  AttentionConfig cfg;
  cfg.budget_tokens = 16;
  for (int impl = 0; impl < 2; ++impl) {
    Buf o(DType::f32, size_t(B) * Hq * D), o2(DType::f32, size_t(B) * Hq * 2 * D);
    o.poison();
    o2.poison();
    TensorView os = o2.view({B, Hq, D});
    os.stride[1] = 2 * D;
    os.stride[0] = Hq * 2 * D;
    if (impl) {
      ref::paged_decode(cfg, q.view({B, Hq, D}), kv, nullptr, o.view({B, Hq, D}), TensorView{});
      ref::paged_decode(cfg, qs, kv, nullptr, os, TensorView{});
    } else {
      paged_decode(cfg, q.view({B, Hq, D}), kv, nullptr, o.view({B, Hq, D}), TensorView{});
      paged_decode(cfg, qs, kv, nullptr, os, TensorView{});
    }
    for (int r = 0; r < B * Hq; ++r)
      for (int d = 0; d < D; ++d) {
        EXPECT_EQ(o2.get(size_t(r) * 2 * D + d), o.get(size_t(r) * D + d));
        EXPECT_TRUE(std::isnan(o2.get(size_t(r) * 2 * D + D + d))) << "wrote outside the view";
      }
  }
}

// The relative-L2 metric against a value computed here.
TEST(Metrics, RelativeL2) {
  std::vector<float> a = {1, 2, 3, 4}, b = {1, 2, 3, 5};
  EXPECT_NEAR(relative_l2(make_view(a.data(), DType::f32, {4}), make_view(b.data(), DType::f32, {4})),
              1.0 / std::sqrt(1 + 4 + 9 + 25.0), 1e-12);
  EXPECT_EQ(relative_l2(make_view(b.data(), DType::f32, {4}), make_view(b.data(), DType::f32, {4})), 0.0);
  EXPECT_ERROR_MSG(relative_l2(make_view(a.data(), DType::f32, {4}), make_view(b.data(), DType::f32, {3})),
                   "relative_l2");
}

}  // namespace
}  // namespace unique::test

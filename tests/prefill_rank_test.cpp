// Composite vs exact block mass on given queries and keys (unique/prefill_rank.h): the
// Spearman helper on hand-computed cases, the per-query-block sampling equal to a
// whole-prompt block-mass call, and a planted ordering the estimate must rank exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "unique/kv_cache.h"
#include "unique/prefill.h"
#include "unique/prefill_rank.h"

namespace unique {
namespace {

TEST(PrefillRank, SpearmanKnownValues) {
  const float a[] = {1, 2, 3, 4, 5}, rev[] = {5, 4, 3, 2, 1}, sq[] = {1, 4, 9, 16, 25};
  EXPECT_DOUBLE_EQ(spearman(a, a, 5), 1.0);
  EXPECT_DOUBLE_EQ(spearman(a, rev, 5), -1.0);
  EXPECT_DOUBLE_EQ(spearman(a, sq, 5), 1.0);  // ranks, not values
  // Ties share their mean rank: ranks {0, 1.5, 1.5, 3} vs {0, 1, 2, 3}: 4.5 / sqrt(4.5 * 5).
  const float t[] = {1, 2, 2, 3}, u[] = {1, 2, 3, 4};
  EXPECT_NEAR(spearman(t, u, 4), 4.5 / std::sqrt(22.5), 1e-12);
  const float flat[] = {7, 7, 7};
  EXPECT_DOUBLE_EQ(spearman(flat, a, 3), 1.0);
}

TEST(PrefillRank, TopKAndSpread) {
  const std::vector<float> m = {0.1f, 0.3f, 0.05f, 0.4f, 0.15f};  // n = 5: block 0 and 4 always
  EXPECT_EQ(top_k_blocks(m, 1), (std::vector<int>{0, 4}));
  EXPECT_EQ(top_k_blocks(m, 3), (std::vector<int>{0, 3, 4}));
  EXPECT_EQ(top_k_blocks(m, 4), (std::vector<int>{0, 1, 3, 4}));
  EXPECT_EQ(top_k_blocks(m, 9), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(spread_q_blocks(10, 0), (std::vector<int>{2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(spread_q_blocks(10, 3), (std::vector<int>{2, 5, 9}));  // ends included, from the last down
  EXPECT_TRUE(spread_q_blocks(2, 4).empty());
}

// equal_mass_k against a brute force over k with top_k_blocks + kept_mass, on random rows of
// mixed lengths (estimates unrelated to the exact masses, with ties), for targets across the
// whole range: the returned k reaches the target and k - 1 does not.
TEST(PrefillRank, EqualMassKMatchesBruteForce) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<BlockMassRow> rows;
  for (int i = 0; i < 40; ++i) {
    BlockMassRow r;
    const int n = 1 + int(u(rng) * 30);
    double sum = 0;
    for (int b = 0; b < n; ++b) {
      r.exact.push_back(u(rng) * u(rng));
      r.est.push_back(float(int(u(rng) * 6)));  // few distinct values: ties
      sum += r.exact.back();
    }
    for (float& x : r.exact) x = float(x / sum);
    rows.push_back(r);
  }
  auto mean_mass = [&](int k) {
    double m = 0;
    for (const BlockMassRow& r : rows) m += kept_mass(r, top_k_blocks(r.est, k)) / double(rows.size());
    return m;
  };
  int most = 0;
  for (const BlockMassRow& r : rows) most = std::max(most, int(r.exact.size()));
  for (double target : {0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 0.999999, 1.5}) {
    SCOPED_TRACE(target);
    const int k = equal_mass_k(rows, target);
    ASSERT_GE(k, 1);
    ASSERT_LE(k, most);
    if (k < most) {
      EXPECT_GE(mean_mass(k), target - 1e-9);
    }
    if (k > 1) {
      EXPECT_LT(mean_mass(k - 1), target + 1e-9);
    }
  }
  EXPECT_EQ(equal_mass_k(rows, 1.5), most);  // out of reach: every block
  EXPECT_EQ(equal_mass_k(rows, 0.0), 1);
}

struct Prompt {
  KVCache cache;
  PageTable table;
  PagedKV kv;
  std::vector<float> q;
  Prompt(int L, int Hq, int Hk, int D, const std::vector<float>& k, std::vector<float> qv)
      : cache(KVCacheOptions{64, Hk, 16, D, DType::f32, DType::f32}), q(std::move(qv)) {
    // A first short sequence, so the prompt's pages do not start at 0.
    const int other = cache.add_sequence(), seq = cache.add_sequence();
    std::vector<float> pad(size_t(20) * Hk * D, 0.5f);
    cache.append({other}, {20}, make_view(pad.data(), DType::f32, {20, Hk, D}), make_view(pad.data(), DType::f32, {20, Hk, D}));
    cache.append({seq}, {L}, make_view(k.data(), DType::f32, {L, Hk, D}), make_view(k.data(), DType::f32, {L, Hk, D}));
    table = cache.page_table({seq});
    kv = cache.view(table);
  }
};

// Every sampled row equals the same query block's row of one whole-prompt block-mass call
// (estimate and exact), for a prompt that ends mid-block and GQA.
TEST(PrefillRank, SampledRowsEqualWholePromptMass) {
  const int L = 300, Hq = 4, Hk = 2, D = 16;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> k(size_t(L) * Hk * D), q(size_t(L) * Hq * D);
  for (auto& x : k) x = nd(rng);
  for (auto& x : q) x = 0.7f * nd(rng);
  Prompt p(L, Hq, Hk, D, k, q);
  AttentionConfig cfg;
  cfg.prefill_block = 32;
  cfg.pool = 4;
  const TensorView qv = make_view(p.q.data(), DType::f32, {L, Hq, D});
  const int nqb = (L + 31) / 32;
  std::vector<float> est(size_t(Hq) * nqb * nqb), exact(est.size());
  ref::prefill_block_mass(cfg, qv, p.kv, 0, L, false, make_view(est.data(), DType::f32, {Hq, nqb, nqb}));
  ref::prefill_block_mass(cfg, qv, p.kv, 0, L, true, make_view(exact.data(), DType::f32, {Hq, nqb, nqb}));
  const std::vector<int> blocks = {0, 2, 5, nqb - 1};
  const std::vector<BlockMassRow> rows = sample_block_mass(cfg, qv, p.kv, 0, blocks, {0.5f, 1.0f});
  ASSERT_EQ(rows.size(), blocks.size() * Hq);
  for (const BlockMassRow& r : rows) {
    ASSERT_EQ(r.est.size(), size_t(r.q_block + 1));
    double se = 0, sx = 0;
    for (int kb = 0; kb <= r.q_block; ++kb) {
      const size_t at = (size_t(r.head) * nqb + r.q_block) * nqb + kb;
      EXPECT_NEAR(r.est[kb], est[at], 1e-6) << "head " << r.head << " block " << r.q_block << " kb " << kb;
      EXPECT_NEAR(r.exact[kb], exact[at], 1e-6) << "head " << r.head << " block " << r.q_block << " kb " << kb;
      se += r.est[kb];
      sx += r.exact[kb];
    }
    EXPECT_NEAR(se, 1.0, 1e-4);
    EXPECT_NEAR(sx, 1.0, 1e-4);
    ASSERT_EQ(r.top_p_kept.size(), 2u);
    EXPECT_EQ(r.top_p_kept[1].size(), size_t(r.q_block + 1));  // top_p 1 keeps all
    EXPECT_NEAR(kept_mass(r, r.top_p_kept[1]), 1.0, 1e-4);
    EXPECT_LE(r.top_p_kept[0].size(), r.top_p_kept[1].size());
  }
}

// Planted: the keys of key block kb are one direction u scaled by s(kb), rising with kb in
// a scrambled order, and every query is u. Keys are constant within a block, so composite
// keys equal them and the estimate must rank blocks exactly as the exact mass: Spearman 1
// on every row; the fixed top-k by the estimate then equals the oracle top-k.
TEST(PrefillRank, PlantedOrderIsRankedExactly) {
  const int L = 16 * 32, Hq = 2, Hk = 2, D = 16, B = 32;
  const int scale_of[16] = {3, 9, 1, 14, 6, 11, 0, 8, 15, 4, 12, 2, 7, 13, 5, 10};
  std::vector<float> k(size_t(L) * Hk * D), q(size_t(L) * Hq * D);
  for (int t = 0; t < L; ++t)
    for (int h = 0; h < Hk; ++h)
      for (int d = 0; d < D; ++d) k[(size_t(t) * Hk + h) * D + d] = 0.5f * scale_of[t / B] * (d % 2 ? 1.0f : -1.0f);
  for (int t = 0; t < L; ++t)
    for (int h = 0; h < Hq; ++h)
      for (int d = 0; d < D; ++d) q[(size_t(t) * Hq + h) * D + d] = d % 2 ? 1.0f : -1.0f;
  Prompt p(L, Hq, Hk, D, k, q);
  AttentionConfig cfg;
  cfg.prefill_block = B;
  cfg.pool = 8;
  const TensorView qv = make_view(p.q.data(), DType::f32, {L, Hq, D});
  const std::vector<BlockMassRow> rows = sample_block_mass(cfg, qv, p.kv, 0, spread_q_blocks(16, 0), {0.9f});
  ASSERT_EQ(rows.size(), 14u * Hq);
  int64_t kept = 0;
  for (const BlockMassRow& r : rows) {
    EXPECT_DOUBLE_EQ(spearman(r.est.data(), r.exact.data(), int(r.est.size())), 1.0) << "block " << r.q_block;
    EXPECT_GE(kept_mass(r, r.top_p_kept[0]), 0.8);  // estimate and exact weigh the diagonal a little differently
    kept += static_cast<int64_t>(r.top_p_kept[0].size());
  }
  const int k_match = matching_k(rows, kept);
  int64_t k_kept = 0;
  for (const BlockMassRow& r : rows) {
    const std::vector<int> tk = top_k_blocks(r.est, k_match);
    EXPECT_EQ(tk, top_k_blocks(r.exact, k_match));
    k_kept += static_cast<int64_t>(tk.size());
  }
  EXPECT_GE(k_kept, kept);
  int64_t fewer = 0;
  for (const BlockMassRow& r : rows) fewer += static_cast<int64_t>(top_k_blocks(r.est, k_match - 1).size());
  EXPECT_LT(fewer, kept);  // the smallest such k
}

}  // namespace
}  // namespace unique

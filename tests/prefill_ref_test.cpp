// The reference prefill checked against independent computations: the reference paged
// decode of every prefix, exact block mass, and the definitions of prefill.h.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "test_util.h"

namespace unique::test {
namespace {

struct PrefillCase {
  CacheCase c;
  int Hq, group;
  int64_t L, q_len;
  Buf q;  // [q_len, Hq, D]
};

PrefillCase make_prefill_case(int P, int D, int H, int group, int64_t L, int64_t q_len, DType dt, uint64_t seed) {
  CaseSpec s;
  s.lens = {L};
  s.page_size = P;
  s.head_dim = D;
  s.num_kv_heads = H;
  s.dtype = dt;
  PrefillCase pc{make_case(s, seed), H * group, group, L, q_len, Buf(DType::f32, size_t(q_len) * H * group * D)};
  Rng r(seed + 1);
  // Queries correlated with the keys' channel offsets (as real queries are), plus noise.
  for (int64_t t = 0; t < q_len; ++t)
    for (int hq = 0; hq < pc.Hq; ++hq)
      for (int d = 0; d < D; ++d)
        pc.q.set((t * pc.Hq + hq) * D + d, 0.3f * pc.c.models[hq / group].dir[d] + r.normal());
  return pc;
}

// Dense prefill of a chunk equals, for every query t, the reference decode over the prefix
// [0, t] (the same softmax computed another way).
TEST(PrefillRef, DenseEqualsDecodeOfEveryPrefix) {
  for (auto [P, L, q_len, group] : {std::tuple{16, 75, 75, 1}, std::tuple{16, 130, 41, 4}, std::tuple{32, 97, 1, 2}}) {
    const int D = 64, H = 2;
    PrefillCase pc = make_prefill_case(P, D, H, group, L, q_len, DType::bf16, 17 + L);
    const PagedKV kv = pc.c.kv();
    AttentionConfig cfg;
    cfg.page_size = P;
    Buf out(DType::f32, size_t(q_len) * pc.Hq * D), lse(DType::f32, size_t(q_len) * pc.Hq);
    out.poison();
    lse.poison();
    ref::sparse_prefill(cfg, pc.q.view({q_len, pc.Hq, D}), kv, 0, L, nullptr, out.view({q_len, pc.Hq, D}),
                        lse.view({q_len, pc.Hq}));
    for (int64_t i = 0; i < q_len; ++i) {
      const int64_t t = L - q_len + i;
      PagedKV prefix = kv;
      const int32_t indptr[2] = {0, pages_of(t + 1, P)};
      const int32_t last = static_cast<int32_t>(t + 1 - int64_t(indptr[1] - 1) * P);
      prefix.page_indptr = indptr;
      prefix.last_page_len = &last;
      Buf dec(DType::f32, size_t(pc.Hq) * D), dlse(DType::f32, pc.Hq);
      ref::paged_decode(cfg, make_view(static_cast<float*>(pc.q.data()) + i * pc.Hq * D, DType::f32, {1, pc.Hq, D}),
                        prefix, nullptr, dec.view({1, pc.Hq, D}), dlse.view({1, pc.Hq}));
      for (int hq = 0; hq < pc.Hq; ++hq) {
        EXPECT_NEAR(lse.get(i * pc.Hq + hq), dlse.get(hq), 1e-5 * std::fabs(dlse.get(hq)) + 1e-5) << "t " << t;
        for (int d = 0; d < D; ++d)
          ASSERT_NEAR(out.get((i * pc.Hq + hq) * D + d), dec.get(hq * D + d), 1e-5) << "t " << t << " hq " << hq;
      }
    }
  }
}

// With pool = 1 composite tokens are the tokens themselves: the estimate is the exact mass.
// Every row of either mass sums to 1 and is 0 past the diagonal.
TEST(PrefillRef, CompositeMassWithPoolOneIsExactMass) {
  const int P = 16, D = 64, H = 2, group = 2;
  const int64_t L = 150, q_len = 90;  // chunk starts inside block 0 of size 32
  PrefillCase pc = make_prefill_case(P, D, H, group, L, q_len, DType::f32, 5);
  const PagedKV kv = pc.c.kv();
  for (int pool : {1, 4, 8}) {
    AttentionConfig cfg;
    cfg.page_size = P;
    cfg.prefill_block = 32;
    cfg.pool = pool;
    const PrefillBlocks pb = prefill_blocks(cfg, q_len, L);
    ASSERT_EQ(pb.first_q_block, 1);
    ASSERT_EQ(pb.num_kv_blocks, 5);
    ASSERT_EQ(pb.num_q_blocks, 4);
    Buf est(DType::f32, size_t(pc.Hq) * pb.num_q_blocks * pb.num_kv_blocks), exact(DType::f32, est.size());
    est.poison();
    exact.poison();
    ref::prefill_block_mass(cfg, pc.q.view({q_len, pc.Hq, D}), kv, 0, L, false,
                            est.view({pc.Hq, pb.num_q_blocks, pb.num_kv_blocks}));
    ref::prefill_block_mass(cfg, pc.q.view({q_len, pc.Hq, D}), kv, 0, L, true,
                            exact.view({pc.Hq, pb.num_q_blocks, pb.num_kv_blocks}));
    for (int hq = 0; hq < pc.Hq; ++hq)
      for (int i = 0; i < pb.num_q_blocks; ++i) {
        double se = 0, sx = 0;
        for (int kb = 0; kb < pb.num_kv_blocks; ++kb) {
          const size_t at = (size_t(hq) * pb.num_q_blocks + i) * pb.num_kv_blocks + kb;
          se += est.get(at);
          sx += exact.get(at);
          if (kb > pb.first_q_block + i) {
            EXPECT_EQ(est.get(at), 0.0f);
            EXPECT_EQ(exact.get(at), 0.0f);
          }
          if (pool == 1) {
            EXPECT_NEAR(est.get(at), exact.get(at), 1e-6) << "hq " << hq << " qb " << i << " kb " << kb;
          }
        }
        EXPECT_NEAR(se, 1.0, 1e-5);
        EXPECT_NEAR(sx, 1.0, 1e-5);
      }
  }
}

// The reference selection of cfg's rule over a whole prompt (sequence 0) and the composite
// block masses it ranks by.
struct RefSelection {
  PrefillBlocks pb;
  Buf mass;
  std::vector<int32_t> blocks, counts;
  BlockSelection sel;
  RefSelection(const AttentionConfig& cfg, PrefillCase& pc, int D, int64_t L, int64_t q_len)
      : pb(prefill_blocks(cfg, q_len, L)), mass(DType::f32, size_t(pc.Hq) * pb.num_q_blocks * pb.num_kv_blocks) {
    const PagedKV kv = pc.c.kv();
    ref::prefill_block_mass(cfg, pc.q.view({q_len, pc.Hq, D}), kv, 0, L, false,
                            mass.view({pc.Hq, pb.num_q_blocks, pb.num_kv_blocks}));
    blocks.assign(mass.size(), kSentinel);
    counts.assign(size_t(pc.Hq) * pb.num_q_blocks, kSentinel);
    sel = BlockSelection{blocks.data(), counts.data(), pc.Hq, pb.num_q_blocks, pb.num_kv_blocks};
    ref::select_prefill_blocks(cfg, pc.q.view({q_len, pc.Hq, D}), kv, 0, L, sel);
  }
};

// Selection rules: block 0 and the diagonal always; the kept mass reaches top_p and no kept
// optional block could be dropped (each is heavier than every dropped one); top_p = 1
// keeps everything and then equals dense exactly.
TEST(PrefillRef, TopPSelectionFollowsItsDefinition) {
  const int P = 16, D = 64, H = 2, group = 4;
  const int64_t L = 600, q_len = 600;
  PrefillCase pc = make_prefill_case(P, D, H, group, L, q_len, DType::f32, 9);
  const PagedKV kv = pc.c.kv();
  for (float top_p : {0.5f, 0.9f, 1.0f}) {
    AttentionConfig cfg;
    cfg.page_size = P;
    cfg.top_p = top_p;
    RefSelection rs(cfg, pc, D, L, q_len);
    const PrefillBlocks& pb = rs.pb;
    const Buf& mass = rs.mass;
    const std::vector<int32_t>& blocks = rs.blocks;
    const std::vector<int32_t>& counts = rs.counts;
    int dropped_any = 0;
    for (int hq = 0; hq < pc.Hq; ++hq)
      for (int i = 0; i < pb.num_q_blocks; ++i) {
        const int qb = pb.first_q_block + i;
        const size_t r = size_t(hq) * pb.num_q_blocks + i;
        const int c = counts[r];
        ASSERT_GE(c, 1);
        ASSERT_LE(c, qb + 1);
        std::vector<char> kept(pb.num_kv_blocks, 0);
        for (int j = 0; j < pb.num_kv_blocks; ++j) {
          const int32_t b = blocks[r * pb.num_kv_blocks + j];
          if (j >= c) {
            EXPECT_EQ(b, -1);
            continue;
          }
          ASSERT_TRUE(b >= 0 && b <= qb);
          if (j) {
            EXPECT_GT(b, blocks[r * pb.num_kv_blocks + j - 1]);
          }
          kept[b] = 1;
        }
        EXPECT_TRUE(kept[0] && kept[qb]);
        const float* m = static_cast<const float*>(mass.data()) + r * pb.num_kv_blocks;
        double cum = 0, lightest_kept = INFINITY, heaviest_dropped = -INFINITY;
        for (int kb = 0; kb <= qb; ++kb) {
          if (kept[kb]) cum += m[kb];
          if (kb == 0 || kb == qb) continue;
          if (kept[kb]) lightest_kept = std::min<double>(lightest_kept, m[kb]);
          else heaviest_dropped = std::max<double>(heaviest_dropped, m[kb]);
        }
        if (top_p >= 1.0f) {
          EXPECT_EQ(c, qb + 1);
          continue;
        }
        dropped_any += c < qb + 1;
        if (c < qb + 1) {
          EXPECT_GE(cum, top_p - 1e-5);
        }
        EXPECT_GE(lightest_kept, heaviest_dropped);
      }
    if (top_p < 0.6f) {
      EXPECT_GT(dropped_any, 0) << "top_p " << top_p << " dropped nothing: the case tests nothing";
    }
    if (top_p >= 1.0f) {
      Buf sparse(DType::f32, size_t(q_len) * pc.Hq * D), dense(DType::f32, sparse.size());
      sparse.poison();
      dense.poison();
      ref::sparse_prefill(cfg, pc.q.view({q_len, pc.Hq, D}), kv, 0, L, &rs.sel, sparse.view({q_len, pc.Hq, D}), {});
      ref::sparse_prefill(cfg, pc.q.view({q_len, pc.Hq, D}), kv, 0, L, nullptr, dense.view({q_len, pc.Hq, D}), {});
      EXPECT_EQ(sparse.bytes, dense.bytes);
    }
  }
}

// The fixed top-k baseline: min(k, qb + 1) blocks per row, block 0 and the diagonal among
// them, no dropped optional block heavier than a kept one.
TEST(PrefillRef, TopKSelectionFollowsItsDefinition) {
  const int64_t L = 600;
  PrefillCase pc = make_prefill_case(16, 64, 2, 4, L, L, DType::f32, 19);
  for (int k : {2, 3, 7}) {
    SCOPED_TRACE("k=" + std::to_string(k));
    AttentionConfig cfg;
    cfg.prefill_top_k = k;
    cfg.top_p = 0.5f;  // ignored: top-k decides
    const RefSelection rs(cfg, pc, 64, L, L);
    for (int hq = 0; hq < pc.Hq; ++hq)
      for (int i = 0; i < rs.pb.num_q_blocks; ++i) {
        const int qb = rs.pb.first_q_block + i;
        const size_t r = size_t(hq) * rs.pb.num_q_blocks + i;
        ASSERT_EQ(rs.counts[r], std::min(k, qb + 1)) << "hq " << hq << " qb " << qb;
        std::vector<char> kept(rs.pb.num_kv_blocks, 0);
        for (int j = 0; j < rs.counts[r]; ++j) kept[rs.blocks[r * rs.pb.num_kv_blocks + j]] = 1;
        EXPECT_TRUE(kept[0] && kept[qb]);
        const float* m = static_cast<const float*>(rs.mass.data()) + r * rs.pb.num_kv_blocks;
        for (int a = 1; a < qb; ++a)
          for (int b = 1; b < qb; ++b)
            if (kept[a] && !kept[b]) {
              EXPECT_GE(m[a], m[b]) << "qb " << qb << ": kept " << a << " dropped " << b;
            }
      }
  }
  AttentionConfig bad;
  bad.prefill_top_k = 1;
  EXPECT_ERROR_MSG(bad.validate(), "prefill_top_k");
  bad.prefill_top_k = -3;
  EXPECT_ERROR_MSG(bad.validate(), "prefill_top_k");
}

TEST(PrefillErrors, BadArgumentsNameTheArgument) {
  PrefillCase pc = make_prefill_case(16, 64, 2, 2, 100, 40, DType::f32, 3);
  const PagedKV kv = pc.c.kv();
  AttentionConfig cfg;
  const TensorView q = pc.q.view({40, 4, 64});
  Buf out(DType::f32, size_t(40) * 4 * 64);
  const TensorView ov = out.view({40, 4, 64});
  EXPECT_ERROR_MSG(sparse_prefill(cfg, q, kv, 0, 99, nullptr, ov, {}), "kv_len", "100", "99");
  EXPECT_ERROR_MSG(sparse_prefill(cfg, q, kv, 1, 100, nullptr, ov, {}), "seq", "1");
  EXPECT_ERROR_MSG(sparse_prefill(cfg, pc.q.view({101, 4, 64}), kv, 0, 100, nullptr, ov, {}), "q_len", "101");
  EXPECT_ERROR_MSG(sparse_prefill(cfg, pc.q.view({40, 3, 64}), kv, 0, 100, nullptr, ov, {}), "num_qo_heads", "3");
  EXPECT_ERROR_MSG(sparse_prefill(cfg, q, kv, 0, 100, nullptr, out.view({40, 4, 32}), {}), "out", "shape");
  AttentionConfig bad = cfg;
  bad.pool = 7;
  EXPECT_ERROR_MSG(sparse_prefill(bad, q, kv, 0, 100, nullptr, ov, {}), "pool", "7");
  bad = cfg;
  bad.top_p = 0.0f;
  EXPECT_ERROR_MSG(sparse_prefill(bad, q, kv, 0, 100, nullptr, ov, {}), "top_p");
  bad = cfg;
  bad.prefill_block = 40;
  EXPECT_ERROR_MSG(sparse_prefill(bad, q, kv, 0, 100, nullptr, ov, {}), "prefill_block", "40");
  EXPECT_ERROR_MSG(parse_prefill("sparse"), "prefill", "dense, unisparse", "sparse");

  // Selection shape and contents (the chunk touches query blocks 0..1 of 2 key blocks).
  std::vector<int32_t> blocks(4 * 2 * 2, -1), counts(4 * 2, 1);
  for (int r = 0; r < 8; ++r) blocks[r * 2] = 0;
  BlockSelection sel{blocks.data(), counts.data(), 4, 2, 2};
  BlockSelection wrong = sel;
  wrong.num_q_blocks = 3;
  EXPECT_ERROR_MSG(select_prefill_blocks(cfg, q, kv, 0, 100, wrong), "block selection.num_q_blocks", "2", "3");
  wrong = sel;
  wrong.max_kv_blocks = 1;
  EXPECT_ERROR_MSG(sparse_prefill(cfg, q, kv, 0, 100, &wrong, ov, {}), "block selection.max_kv_blocks");
  EXPECT_NO_THROW(sparse_prefill(cfg, q, kv, 0, 100, &sel, ov, {}));
  blocks[0] = 1;  // head 0, query block 0 may not see key block 1
  EXPECT_ERROR_MSG(sparse_prefill(cfg, q, kv, 0, 100, &sel, ov, {}), "block selection.blocks[0, 0, 0]", "[0, 0]");
  blocks[0] = 0;
  counts[3] = 3;
  EXPECT_ERROR_MSG(sparse_prefill(cfg, q, kv, 0, 100, &sel, ov, {}), "block selection.counts[1, 1]", "1..2", "3");
}

}  // namespace
}  // namespace unique::test

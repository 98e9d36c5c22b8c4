// CUDA kernels vs the CPU reference: append (K/V + page stats), page scores for every
// estimator and GQA aggregation, selection, dense and sparse paged decode, the DecodePlan
// plan/run split with CUDA-graph capture and replay, and bad input. Sweeps page size,
// head dim, GQA group, KV dtype, ragged batches with partial last pages and one-token
// sequences, budgets below and above the context. Outputs are poisoned before each call.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <vector>

#include "cuda/kernels.h"
#include "gpu/gpu_test_util.h"
#include "test_util.h"
#include "unique/decode_plan.h"
#include "unique/stream.h"
#include "unique/unique.h"

namespace unique::test {
namespace {

float tol_for(DType t) { return t == DType::f32 ? 2e-4f : t == DType::f16 ? 2e-3f : 1.6e-2f; }

// Selections equal except where the reference scores of the pages that differ tie
// within rounding with the weakest page the reference kept.
void expect_same_selection(const SelBuf& ref, const std::vector<int32_t>& pages, const std::vector<int32_t>& counts,
                           const std::vector<float>& ref_scores, int max_pages, int B, int H, float tol) {
  const int M = ref.sel.max_selected;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      ASSERT_EQ(counts[b * H + h], ref.count(b, h)) << "b=" << b << " h=" << h;
      const int c = ref.count(b, h);
      const int32_t* got = pages.data() + (size_t(b) * H + h) * M;
      for (int i = 1; i < c; ++i) ASSERT_LT(got[i - 1], got[i]) << "not ascending";
      for (int i = c; i < M; ++i) ASSERT_EQ(got[i], -1) << "padding";
      std::set<int> a(got, got + c);
      const std::vector<int> want = ref.chosen(b, h);
      std::set<int> w(want.begin(), want.end());
      if (a == w) continue;
      const float* s = ref_scores.data() + (size_t(b) * H + h) * max_pages;
      float kth = INFINITY;
      for (int j : w) kth = std::min(kth, s[j]);
      for (int j : a) {
        if (!w.count(j)) {
          EXPECT_NEAR(s[j], kth, tol * (1 + std::abs(kth))) << "extra page " << j << " b=" << b << " h=" << h;
        }
      }
      for (int j : w) {
        if (!a.count(j)) {
          EXPECT_NEAR(s[j], kth, tol * (1 + std::abs(kth))) << "missing page " << j << " b=" << b << " h=" << h;
        }
      }
    }
}

// The GPU decode (q: device view, output in `ot`, poisoned first) against ref::paged_decode
// on the host copies: outputs within `tol` relative, log-sum-exp within 1e-3 relative.
// `ref_sel` / `dsel`: the same selection on host and device (null: dense).
void expect_decode_matches(const AttentionConfig& cfg, const TensorView& hq, const PagedKV& hkv,
                           const Selection* ref_sel, const TensorView& dq, const PagedKV& dkv,
                           const Selection* dsel, DType ot, float tol) {
  const int B = static_cast<int>(hq.shape[0]), Hq = static_cast<int>(hq.shape[1]), D = static_cast<int>(hq.shape[2]);
  Buf ref_out(DType::f32, size_t(B) * Hq * D);
  std::vector<float> ref_lse(size_t(B) * Hq), got_lse(ref_lse.size());
  ref::paged_decode(cfg, hq, hkv, ref_sel, ref_out.view({B, Hq, D}), make_view(ref_lse.data(), DType::f32, {B, Hq}));
  Dev dout(size_t(B) * Hq * D * dtype_size(ot)), dlse(size_t(B) * Hq * 4);
  dout.poison();
  dlse.poison();
  paged_decode(cfg, dq, dkv, dsel, dview(dout, ot, {B, Hq, D}), dview(dlse, DType::f32, {B, Hq}));
  Buf got(ot, size_t(B) * Hq * D);
  dout.down(got.data(), got.bytes.size());
  dlse.down(got_lse.data(), got_lse.size() * 4);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got.get(i), ref_out.get(i), tol * (1 + std::abs(ref_out.get(i)))) << "out i=" << i;
  for (size_t i = 0; i < got_lse.size(); ++i)
    ASSERT_NEAR(got_lse[i], ref_lse[i], 1e-3f * (1 + std::abs(ref_lse[i]))) << "lse i=" << i;
}

struct SweepParam {
  int P, D, group;
  DType dtype;
  int Hk = 2;  // KV heads
};

std::vector<SweepParam> sweep() {
  std::vector<SweepParam> v;
  for (int P : {16, 32, 64})
    for (int D : {64, 128})
      for (int g : {1, 4, 8})
        for (DType t : {DType::bf16, DType::f16}) v.push_back({P, D, g, t});
  v.push_back({16, 128, 8, DType::f32});
  v.push_back({16, 256, 2, DType::bf16});
  v.push_back({32, 128, 6, DType::bf16});   // group not a power of two
  v.push_back({16, 64, 16, DType::f16});    // group above 8
  v.push_back({24, 64, 2, DType::f16});     // page size not a power of two; decode tiles span pages
  v.push_back({7, 128, 4, DType::bf16});    // page size below the decode tile
  v.push_back({16, 128, 4, DType::bf16, 8});  // the benchmark shape: 8 KV heads, group 4
  v.push_back({32, 64, 8, DType::f16, 4});    // 4 KV heads, group 8
  v.push_back({16, 128, 1, DType::bf16, 16}); // 16 KV heads, MHA
  v.push_back({16, 128, 4, DType::bf16, 3});  // 3 KV heads: score blocks of one KV head (not interleaved)
  v.push_back({16, 128, 3, DType::bf16});     // group 3: the tensor-core decode with one empty head row
  v.push_back({32, 64, 12, DType::f16});      // group 12: a full and a partial subgroup of 8 heads
  return v;
}

class GpuSweep : public ::testing::TestWithParam<SweepParam> {};

// Ragged lengths: partial last pages, a one-token sequence, a sequence shorter than the budget.
CaseSpec spec_for(const SweepParam& p, DType stats) {
  CaseSpec s;
  s.lens = {int64_t(p.P) * 37 + 5, 1, int64_t(p.P) * 3, int64_t(p.P) * 20 + p.P - 1};
  s.num_kv_heads = p.Hk;
  s.page_size = p.P;
  s.head_dim = p.D;
  s.dtype = p.dtype;
  s.stats_dtype = stats;
  s.needle = true;
  s.max_chunk = 3 * p.P;
  return s;
}

TEST_P(GpuSweep, ScoresSelectionDecodeMatchReference) {
  SKIP_WITHOUT_GPU();
  const SweepParam prm = GetParam();
  int case_i = 0;
  for (DType stats : {DType::f32, DType::bf16, DType::f16, DType::e4m3}) {
    const uint64_t seed = case_seed(4, prm.P * 1000 + prm.D * 10 + prm.group + 7 * case_i++ + 100000 * prm.Hk);
    const CaseSpec spec = spec_for(prm, stats);
    CacheCase c = make_case(spec, seed);
    const PagedKV hkv = c.kv();
    DevKV dkv(hkv);
    const int B = c.batch(), H = spec.num_kv_heads, D = spec.head_dim, Hq = H * prm.group;
    const int max_pages = max_seq_pages(hkv);
    Buf q = make_queries(c, prm.group, DType::bf16, seed, 0.3f);
    Dev dq(q.data(), q.bytes.size());
    const TensorView hq = q.view({B, Hq, D});
    const TensorView dqv = dview(dq, DType::bf16, {B, Hq, D});
    SCOPED_TRACE(case_name(spec, prm.group, DType::bf16, seed));

    struct Est {
      Estimator e;
      GqaAggregation g;
      OffsetForm o;
    };
    for (Est est : {Est{Estimator::unique, GqaAggregation::max, OffsetForm::channel},
                    Est{Estimator::unique, GqaAggregation::softmax_sum, OffsetForm::channel},
                    Est{Estimator::unique, GqaAggregation::max, OffsetForm::norm},
                    Est{Estimator::quest, GqaAggregation::max, OffsetForm::channel},
                    Est{Estimator::mean, GqaAggregation::max, OffsetForm::channel},
                    Est{Estimator::oracle, GqaAggregation::softmax_sum, OffsetForm::channel},
                    Est{Estimator::random, GqaAggregation::max, OffsetForm::channel},
                    Est{Estimator::dense, GqaAggregation::max, OffsetForm::channel}}) {
      for (int budget_pages : {4, 1000}) {
        AttentionConfig cfg;
        cfg.page_size = prm.P;
        cfg.budget_tokens = budget_pages * prm.P;
        cfg.estimator = est.e;
        cfg.gqa = est.g;
        cfg.offset = est.o;
        cfg.seed = seed;
        SCOPED_TRACE(std::string("estimator=") + to_string(est.e) + " gqa=" + to_string(est.g) +
                     " offset=" + to_string(est.o) + " budget_pages=" + std::to_string(budget_pages));
        // scores
        std::vector<float> ref_scores(size_t(B) * H * max_pages), got_scores(ref_scores.size());
        ref::score_pages(cfg, hq, hkv, make_view(ref_scores.data(), DType::f32, {B, H, max_pages}));
        Dev ds(ref_scores.size() * 4);
        ds.poison();
        score_pages(cfg, dqv, dkv.kv, dview(ds, DType::f32, {B, H, max_pages}));
        ds.down(got_scores.data(), got_scores.size() * 4);
        const float stol = est.e == Estimator::oracle ? 1e-4f : 2e-4f;
        for (size_t i = 0; i < ref_scores.size(); ++i) {
          if (std::isinf(ref_scores[i])) {
            ASSERT_EQ(got_scores[i], ref_scores[i]) << "i=" << i;
          } else {
            ASSERT_NEAR(got_scores[i], ref_scores[i], stol * (1 + std::abs(ref_scores[i]))) << "i=" << i;
          }
        }
        // selection
        const int M = cfg.max_selected(max_pages);
        SelBuf ref_sel(B, H, M);
        ref::select_pages(cfg, hq, hkv, ref_sel.sel);
        Dev dp(size_t(B) * H * M * 4), dc(size_t(B) * H * 4);
        dp.poison();
        dc.poison();
        Selection dsel{dp.as<int32_t>(), dc.as<int32_t>(), B, H, M, Device::cuda};
        select_pages(cfg, dqv, dkv.kv, dsel);
        std::vector<int32_t> gp(size_t(B) * H * M), gc(size_t(B) * H);
        dp.down(gp.data(), gp.size() * 4);
        dc.down(gc.data(), gc.size() * 4);
        expect_same_selection(ref_sel, gp, gc, ref_scores, max_pages, B, H, 1e-4f);
        if (::testing::Test::HasFatalFailure()) return;

        // sparse decode over the reference selection (so the comparison is of decode alone)
        if (est.e != Estimator::unique || est.g != GqaAggregation::max || est.o != OffsetForm::channel) continue;
        dp.up(ref_sel.pages.data(), ref_sel.pages.size() * 4);
        dc.up(ref_sel.counts.data(), ref_sel.counts.size() * 4);
        // Both decode kernels where the tensor-core one serves the shape.
        std::vector<const char*> kernels = {"simt"};
        if (std::string(cuda::decode_kernel_choice(prm.dtype, D, prm.group)) == "mma") kernels.push_back("mma");
        for (const char* kernel : kernels) {
          ScopedEnv choice({{"UNIQUE_DECODE_KERNEL", kernel}});
          for (bool sparse : {true, false}) {
            SCOPED_TRACE(std::string(sparse ? "sparse decode, " : "dense decode, ") + kernel + " kernel");
            for (DType ot : {DType::f32, DType::bf16}) {
              expect_decode_matches(cfg, hq, hkv, sparse ? &ref_sel.sel : nullptr, dqv, dkv.kv, sparse ? &dsel : nullptr,
                                    ot, std::max(tol_for(prm.dtype), tol_for(ot)));
              if (::testing::Test::HasFatalFailure()) return;
            }
          }
        }
      }
    }
  }
}

std::string param_name(const ::testing::TestParamInfo<SweepParam>& i) {
  return detail::concat("P", i.param.P, "_D", i.param.D, "_g", i.param.group, "_", to_string(i.param.dtype),
                        i.param.Hk == 2 ? std::string() : detail::concat("_H", i.param.Hk));
}
INSTANTIATE_TEST_SUITE_P(Sweep, GpuSweep, ::testing::ValuesIn(sweep()), param_name);

// Long sequences (up to 20000 pages: every register tile of the select kernel) and
// distributions that reach each branch of its threshold search: random scores (one
// histogram level), exact ties (every page given the same statistics: the lowest
// positions must win; the all-equal shortcut), three distinct scores (a full bucket,
// refined by a second level that finds all keys equal), one outlier page (every other
// score in one bucket: a second histogram level), and an inf and a NaN score (a
// non-finite range: the bitwise fallback; NaN ranks as -inf). Each case also through the
// bitwise search alone (UNIQUE_SEL_TOPK=bitwise), the histogram's fallback.
TEST(GpuSelect, LongSequencesAndExactTiesMatchReference) {
  SKIP_WITHOUT_GPU();
  // One KV head, then 8 (the benchmark's head count: blocks per head, shorter sequences).
  for (int H : {1, 8}) {
  SCOPED_TRACE(detail::concat("num_kv_heads=", H));
  CaseSpec spec;
  spec.lens = H == 1 ? std::vector<int64_t>{int64_t(16) * 20000 + 7, 16 * 2500, 300, int64_t(16) * 9000 + 3}
                     : std::vector<int64_t>{int64_t(16) * 5000 + 7, 300};
  spec.num_kv_heads = H;
  spec.page_size = 16;
  spec.head_dim = 64;
  spec.dtype = DType::bf16;
  spec.stats_dtype = DType::bf16;
  spec.max_chunk = 4096;
  CacheCase c = make_case(spec, 11);
  PagedKV hkv = c.kv();
  const size_t row = size_t(hkv.num_kv_heads) * hkv.head_dim, bytes = hkv.num_pages * row * 2;
  const std::vector<char> mean0(static_cast<char*>(hkv.mean), static_cast<char*>(hkv.mean) + bytes);
  const std::vector<char> std0(static_cast<char*>(hkv.std), static_cast<char*>(hkv.std) + bytes);
  // physical pages of two non-forced logical pages of the longest sequence
  const int pa = hkv.page_indices[hkv.page_indptr[0] + 100], pb = hkv.page_indices[hkv.page_indptr[0] + 101];
  auto set_row = [&](void* st, int pg, float x) {
    for (size_t d = 0; d < row; ++d) static_cast<uint16_t*>(st)[pg * row + d] = float_to_bf16_bits(x);
  };
  for (const char* mode : {"random", "ties", "ties3", "outlier", "nonfinite"}) {
    const std::string m = mode;
    std::memcpy(hkv.mean, mean0.data(), bytes);
    std::memcpy(hkv.std, std0.data(), bytes);
    if (m == "ties" || m == "ties3")  // page pg gets the statistics of physical page 0 (or pg % 3)
      for (int pg = 1; pg < hkv.num_pages; ++pg)
        for (void* st : {hkv.mean, hkv.std})
          std::memcpy(static_cast<char*>(st) + pg * row * 2,
                      static_cast<char*>(st) + (m == "ties" ? 0 : pg % 3) * row * 2, row * 2);
    if (m == "outlier")  // a std 1000x larger: a score far above all others
      for (size_t d = 0; d < row; ++d) {
        uint16_t& x = static_cast<uint16_t*>(hkv.std)[pa * row + d];
        x = float_to_bf16_bits(1000.0f * (std::abs(bf16_bits_to_float(x)) + 0.1f));
      }
    if (m == "nonfinite") {
      set_row(hkv.std, pa, INFINITY);  // score +inf
      set_row(hkv.mean, pb, NAN);      // score NaN
    }
    DevKV dkv(hkv);
    const int B = c.batch(), D = 64, group = 4, Hq = H * group;
    Buf q = make_queries(c, group, DType::f32, 5, 0.3f);
    Dev dq(q.data(), q.bytes.size());
    for (int budget : {16 * 64, 16 * 3000, 16 * 12000}) {
      AttentionConfig cfg;
      cfg.budget_tokens = budget;
      cfg.sink_pages = 2;
      cfg.recent_pages = 3;
      SCOPED_TRACE(m + " budget=" + std::to_string(budget));
      const int max_pages = max_seq_pages(hkv), M = cfg.max_selected(max_pages);
      SelBuf ref_sel(B, H, M);
      ref::select_pages(cfg, q.view({B, Hq, D}), hkv, ref_sel.sel);
      std::vector<float> ref_scores(size_t(B) * H * max_pages);
      ref::score_pages(cfg, q.view({B, Hq, D}), hkv, make_view(ref_scores.data(), DType::f32, {B, H, max_pages}));
      Dev dp(size_t(B) * H * M * 4), dc(size_t(B) * H * 4);
      Selection dsel{dp.as<int32_t>(), dc.as<int32_t>(), B, H, M, Device::cuda};
      for (const char* path : {"hist", "bitwise"}) {
        SCOPED_TRACE(detail::concat("UNIQUE_SEL_TOPK=", path));
        ScopedEnv env({{"UNIQUE_SEL_TOPK", path}});
        dp.poison();
        dc.poison();
        select_pages(cfg, dview(dq, DType::f32, {B, Hq, D}), dkv.kv, dsel);
        std::vector<int32_t> gp(size_t(B) * H * M), gc(size_t(B) * H);
        dp.down(gp.data(), gp.size() * 4);
        dc.down(gc.data(), gc.size() * 4);
        if (m == "ties" || m == "ties3") {
          EXPECT_EQ(gp, ref_sel.pages);
          EXPECT_EQ(gc, ref_sel.counts);
        } else {
          expect_same_selection(ref_sel, gp, gc, ref_scores, max_pages, B, H, 1e-4f);
        }
      }
    }
  }
  std::memcpy(hkv.mean, mean0.data(), bytes);
  std::memcpy(hkv.std, std0.data(), bytes);
  }
}

// The select kernel starts (PDL) while score blocks still run and shares the cached score
// workspace with the next call. Back-to-back selections with different queries and no host
// sync between them (several waves of score blocks), each into its own buffers, must each
// match the reference of their own queries; also with the per-head scores written by query
// head (softmax_sum) and with two query-head subgroups (group 12).
TEST(GpuSelect, BackToBackCallsSeeTheirOwnScores) {
  SKIP_WITHOUT_GPU();
  const int H = 8, D = 128;
  CaseSpec spec;
  spec.lens = {int64_t(16) * 6000 + 5, 16 * 3000, 700};
  spec.num_kv_heads = H;
  spec.page_size = 16;
  spec.head_dim = D;
  spec.dtype = DType::bf16;
  spec.stats_dtype = DType::bf16;
  spec.max_chunk = 4096;
  CacheCase c = make_case(spec, 23);
  const PagedKV hkv = c.kv();
  DevKV dkv(hkv);
  const int B = c.batch(), max_pages = max_seq_pages(hkv);
  struct Variant {
    int group;
    GqaAggregation gqa;
  };
  for (const Variant v : {Variant{4, GqaAggregation::max}, Variant{4, GqaAggregation::softmax_sum},
                          Variant{12, GqaAggregation::max}}) {
    const int Hq = H * v.group;
    AttentionConfig cfg;
    cfg.budget_tokens = 2048;
    cfg.gqa = v.gqa;
    SCOPED_TRACE(detail::concat("group=", v.group, " gqa=", to_string(v.gqa)));
    const int M = cfg.max_selected(max_pages);
    constexpr int kCalls = 4;
    std::vector<Buf> qs;
    std::vector<Dev> dqs, dps, dcs;
    for (int i = 0; i < kCalls; ++i) {
      qs.push_back(make_queries(c, v.group, DType::bf16, 100 + i, 0.3f));
      dqs.emplace_back(qs.back().data(), qs.back().bytes.size());
      dps.emplace_back(size_t(B) * H * M * 4);
      dcs.emplace_back(size_t(B) * H * 4);
      dps.back().poison();
      dcs.back().poison();
    }
    for (int i = 0; i < kCalls; ++i) {  // launched back to back
      Selection dsel{dps[i].as<int32_t>(), dcs[i].as<int32_t>(), B, H, M, Device::cuda};
      select_pages(cfg, dview(dqs[i], DType::bf16, {B, Hq, D}), dkv.kv, dsel);
    }
    for (int i = 0; i < kCalls; ++i) {
      SCOPED_TRACE(detail::concat("call ", i));
      const TensorView hq = qs[i].view({B, Hq, D});
      SelBuf ref_sel(B, H, M);
      ref::select_pages(cfg, hq, hkv, ref_sel.sel);
      std::vector<float> ref_scores(size_t(B) * H * max_pages);
      ref::score_pages(cfg, hq, hkv, make_view(ref_scores.data(), DType::f32, {B, H, max_pages}));
      std::vector<int32_t> gp(size_t(B) * H * M), gc(size_t(B) * H);
      dps[i].down(gp.data(), gp.size() * 4);
      dcs[i].down(gc.data(), gc.size() * 4);
      expect_same_selection(ref_sel, gp, gc, ref_scores, max_pages, B, H, 1e-4f);
    }
  }
}

// The decode kernel resolves the page table a window of 128 list entries at a time; the
// sweep's sequences fit one window. Here one chunk per (sequence, head) (UNIQUE_DECODE_CHUNKS,
// read per launch) makes blocks walk several windows, dense and sparse, and writes the output
// directly (no merge); three chunks cut windows mid-list.
TEST(GpuDecode, LongListsCrossPageTableWindows) {
  SKIP_WITHOUT_GPU();
  for (int P : {16, 24}) {
    CaseSpec spec;
    spec.lens = {int64_t(P) * 300 + 5, int64_t(P) * 129, 7};
    spec.num_kv_heads = 2;
    spec.page_size = P;
    spec.head_dim = 128;
    spec.dtype = DType::bf16;
    spec.stats_dtype = DType::bf16;
    spec.max_chunk = 64 * P;
    const uint64_t seed = case_seed(12, P);
    CacheCase c = make_case(spec, seed);
    const PagedKV hkv = c.kv();
    DevKV dkv(hkv);
    const int B = c.batch(), H = 2, D = 128, group = 4, Hq = H * group;
    Buf q = make_queries(c, group, DType::bf16, seed, 0.3f);
    Dev dq(q.data(), q.bytes.size());
    const TensorView hq = q.view({B, Hq, D});
    const std::pair<const char*, const char*> runs[] = {{"simt", "1"}, {"simt", "3"}, {"mma", "1"}, {"mma", "3"}};
    for (const auto& [kernel, chunks] : runs) {
      ScopedEnv env({{"UNIQUE_DECODE_KERNEL", kernel}, {"UNIQUE_DECODE_CHUNKS", chunks}});
      for (bool sparse : {true, false}) {
        SCOPED_TRACE(detail::concat("P=", P, " kernel=", kernel, " chunks=", chunks, sparse ? " sparse" : " dense"));
        AttentionConfig cfg;
        cfg.page_size = P;
        cfg.budget_tokens = 200 * P;  // > one window of selected pages
        const int max_pages = max_seq_pages(hkv), M = cfg.max_selected(max_pages);
        SelBuf ref_sel(B, H, M);
        ref::select_pages(cfg, hq, hkv, ref_sel.sel);
        Dev dp(ref_sel.pages.data(), ref_sel.pages.size() * 4), dc(ref_sel.counts.data(), ref_sel.counts.size() * 4);
        Selection dsel{dp.as<int32_t>(), dc.as<int32_t>(), B, H, M, Device::cuda};
        expect_decode_matches(cfg, hq, hkv, sparse ? &ref_sel.sel : nullptr, dview(dq, DType::bf16, {B, Hq, D}), dkv.kv,
                              sparse ? &dsel : nullptr, DType::f32, tol_for(DType::bf16));
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

// fp32 queries (what the engine passes) through both decode kernels: the tensor-core one
// rounds them to the K/V dtype, so its result must still be within the K/V dtype's tolerance
// of the float64 reference (dense and sparse, D 128 group 4 and D 64 group 8).
TEST(GpuDecode, Fp32QueriesBothKernels) {
  SKIP_WITHOUT_GPU();
  for (DType kvt : {DType::bf16, DType::f16})
    for (int group : {4, 8}) {
      const int P = 16, H = 2, D = group == 4 ? 128 : 64, Hq = H * group;
      CaseSpec spec;
      spec.lens = {int64_t(P) * 50 + 3, int64_t(P) * 9};
      spec.num_kv_heads = H;
      spec.page_size = P;
      spec.head_dim = D;
      spec.dtype = kvt;
      spec.stats_dtype = DType::bf16;
      spec.needle = true;
      spec.max_chunk = 3 * P;
      const uint64_t seed = case_seed(13, group * 10 + int(kvt));
      CacheCase c = make_case(spec, seed);
      const PagedKV hkv = c.kv();
      DevKV dkv(hkv);
      const int B = c.batch();
      Buf q = make_queries(c, group, DType::f32, seed, 0.3f);
      Dev dq(q.data(), q.bytes.size());
      const TensorView hq = q.view({B, Hq, D});
      AttentionConfig cfg;
      cfg.page_size = P;
      cfg.budget_tokens = 8 * P;
      const int max_pages = max_seq_pages(hkv), M = cfg.max_selected(max_pages);
      SelBuf ref_sel(B, H, M);
      ref::select_pages(cfg, hq, hkv, ref_sel.sel);
      Dev dp(ref_sel.pages.data(), ref_sel.pages.size() * 4), dc(ref_sel.counts.data(), ref_sel.counts.size() * 4);
      Selection dsel{dp.as<int32_t>(), dc.as<int32_t>(), B, H, M, Device::cuda};
      for (const char* kernel : {"simt", "mma"})
        for (bool sparse : {true, false}) {
          ScopedEnv env({{"UNIQUE_DECODE_KERNEL", kernel}});
          SCOPED_TRACE(detail::concat(to_string(kvt), " group=", group, " kernel=", kernel, sparse ? " sparse" : " dense"));
          expect_decode_matches(cfg, hq, hkv, sparse ? &ref_sel.sel : nullptr, dview(dq, DType::f32, {B, Hq, D}), dkv.kv,
                                sparse ? &dsel : nullptr, DType::f32, tol_for(kvt));
          if (::testing::Test::HasFatalFailure()) return;
        }
    }
}

// The select kernel's threshold search and its override's error.
TEST(GpuSelect, TopkPathChoice) {
  {
    ScopedEnv env({{"UNIQUE_SEL_TOPK", nullptr}});
    EXPECT_STREQ(cuda::select_topk_path(), "hist");
  }
  for (const char* v : {"hist", "bitwise"}) {
    ScopedEnv env({{"UNIQUE_SEL_TOPK", v}});
    EXPECT_STREQ(cuda::select_topk_path(), v);
  }
  ScopedEnv env({{"UNIQUE_SEL_TOPK", "radix"}});
  EXPECT_ERROR_MSG(cuda::select_topk_path(), "UNIQUE_SEL_TOPK", "hist or bitwise", "radix");
}

// Which decode kernel serves which shapes, and the override's errors.
TEST(GpuDecode, KernelChoice) {
  EXPECT_STREQ(cuda::decode_kernel_choice(DType::bf16, 128, 4), "mma");
  EXPECT_STREQ(cuda::decode_kernel_choice(DType::f16, 64, 16), "mma");
  EXPECT_STREQ(cuda::decode_kernel_choice(DType::bf16, 128, 1), "simt");
  EXPECT_STREQ(cuda::decode_kernel_choice(DType::bf16, 256, 8), "simt");
  EXPECT_STREQ(cuda::decode_kernel_choice(DType::f32, 128, 8), "simt");
  {
    ScopedEnv env({{"UNIQUE_DECODE_KERNEL", "simt"}});
    EXPECT_STREQ(cuda::decode_kernel_choice(DType::bf16, 128, 4), "simt");
  }
  {
    ScopedEnv env({{"UNIQUE_DECODE_KERNEL", "mma"}});
    EXPECT_STREQ(cuda::decode_kernel_choice(DType::bf16, 128, 4), "mma");
    EXPECT_ERROR_MSG(cuda::decode_kernel_choice(DType::bf16, 128, 2), "UNIQUE_DECODE_KERNEL", "group 2");
  }
  {
    ScopedEnv env({{"UNIQUE_DECODE_KERNEL", "fastest"}});
    EXPECT_ERROR_MSG(cuda::decode_kernel_choice(DType::bf16, 128, 4), "UNIQUE_DECODE_KERNEL", "auto, simt or mma",
                     "fastest");
  }
}

// ---- append ------------------------------------------------------------------------------

TEST(GpuAppend, MatchesCpuAppendAndRecomputation) {
  SKIP_WITHOUT_GPU();
  for (int P : {16, 32, 64})
    for (DType dt : {DType::bf16, DType::f16, DType::f32})
      for (DType st : {DType::f32, DType::bf16, DType::e4m3}) {
        const int H = 2, D = 128;
        CaseSpec spec;
        spec.lens = {int64_t(P) * 5 + 3, 2, int64_t(P) * 2};
        spec.num_kv_heads = H;
        spec.page_size = P;
        spec.head_dim = D;
        spec.dtype = dt;
        spec.stats_dtype = st;
        spec.extra_pages = 12;
        const uint64_t seed = case_seed(9, P * 10 + int(dt) * 3 + int(st) + (st == DType::e4m3 ? 1000 : 0));
        CacheCase c = make_case(spec, seed);
        SCOPED_TRACE(case_name(spec, 1, DType::f32, seed));
        // Append n_b new tokens per sequence: grow the cache's page table on the host first
        // (KVCache::append on the CPU copy), then apply the same append on the GPU mirror of
        // the state before it.
        const std::vector<int> counts{1, P + 5, 2 * P};
        const int rows = counts[0] + counts[1] + counts[2];
        Rng r(seed);
        Buf kn(DType::f32, size_t(rows) * H * D), vn(DType::f32, size_t(rows) * H * D);
        for (size_t i = 0; i < kn.size(); ++i) {
          kn.set(i, 3.0f * r.normal() + 1.0f);
          vn.set(i, r.normal());
        }
        const PagedKV before = c.kv();
        DevKV dkv(before);  // pool + stats before the append
        c.cache->append(c.seqs, counts, kn.view({rows, H, D}), vn.view({rows, H, D}));
        c.table = c.cache->page_table(c.seqs);
        const PagedKV after = c.kv();
        // device page table after the append
        Dev indptr(after.page_indptr, (after.batch + 1) * 4);
        Dev indices(after.page_indices, after.page_indptr[after.batch] * 4);
        Dev last(after.last_page_len, after.batch * 4);
        PagedKV dk = dkv.kv;
        dk.page_indptr = indptr.as<int32_t>();
        dk.page_indices = indices.as<int32_t>();
        dk.last_page_len = last.as<int32_t>();
        dk.max_pages_per_seq = max_seq_pages(after);
        std::vector<int32_t> aip{0, counts[0], counts[0] + counts[1], rows};
        Dev daip(aip.data(), aip.size() * 4), dkn(kn.data(), kn.bytes.size()), dvn(vn.data(), vn.bytes.size());
        append_kv(dk, dview(dkn, DType::f32, {rows, H, D}), dview(dvn, DType::f32, {rows, H, D}),
                  daip.as<int32_t>());
        CUDA_OK(cudaDeviceSynchronize());
        const size_t e = size_t(after.num_pages) * H * P * D, s = size_t(after.num_pages) * H * D;
        Buf gk(dt, e), gv(dt, e), gm(st, s), gs(st, s), gmin(st, s), gmax(st, s);
        dkv.k.down(gk.data(), gk.bytes.size());
        dkv.v.down(gv.data(), gv.bytes.size());
        dkv.mean.down(gm.data(), gm.bytes.size());
        dkv.std.down(gs.data(), gs.bytes.size());
        dkv.kmin.down(gmin.data(), gmin.bytes.size());
        dkv.kmax.down(gmax.data(), gmax.bytes.size());
        std::vector<float> gscale;
        if (st == DType::e4m3) {  // fp8: codes and scales bit-identical to the CPU append's
          gscale.resize(size_t(after.num_pages) * H * 2);
          dkv.scale.down(gscale.data(), gscale.size() * 4);
        }
        // Compare over the pages of the batch (the rest of the pool is untouched garbage-free zeros).
        const float stol = st == DType::bf16 ? 8e-3f : 1e-5f;
        for (int b = 0; b < after.batch; ++b) {
          const int n = seq_pages(after, b);
          for (int j = 0; j < n; ++j) {
            const int page = after.page_indices[after.page_indptr[b] + j];
            const int tokens = j == n - 1 ? after.last_page_len[b] : P;
            for (int h = 0; h < H; ++h) {
              const int64_t o = after.kv_offset(page, h);
              for (int i = 0; i < tokens * D; ++i) {
                ASSERT_EQ(gk.get(o + i), load_as_float(after.k, dt, o + i)) << "K b=" << b << " j=" << j;
                ASSERT_EQ(gv.get(o + i), load_as_float(after.v, dt, o + i)) << "V b=" << b << " j=" << j;
              }
              const int64_t so = after.stats_offset(page, h);
              if (st == DType::e4m3) {
                for (int w = 0; w < 2; ++w)
                  ASSERT_EQ(gscale[after.scale_offset(page, h) + w], after.stats_scale[after.scale_offset(page, h) + w])
                      << "fp8 scale " << w << " b=" << b << " j=" << j << " h=" << h;
                const Buf* g[4] = {&gm, &gs, &gmin, &gmax};
                const void* want[4] = {after.mean, after.std, after.kmin, after.kmax};
                for (int i = 0; i < 4; ++i)
                  for (int d = 0; d < D; ++d)
                    ASSERT_EQ(int(static_cast<const uint8_t*>(g[i]->data())[so + d]),
                              int(static_cast<const uint8_t*>(want[i])[so + d]))
                        << "fp8 code of stat " << i << " b=" << b << " j=" << j << " h=" << h << " d=" << d;
                continue;
              }
              for (int d = 0; d < D; ++d) {
                auto near = [&](const Buf& g, const void* want, const char* what) {
                  const float w = load_as_float(want, st, so + d);
                  ASSERT_NEAR(g.get(so + d), w, stol * (1 + std::abs(w))) << what << " b=" << b << " j=" << j << " d=" << d;
                };
                near(gm, after.mean, "mean");
                near(gs, after.std, "std");
                near(gmin, after.kmin, "kmin");
                near(gmax, after.kmax, "kmax");
              }
            }
          }
        }
      }
}

// ---- plan/run and CUDA graphs ----------------------------------------------------------------

TEST(GpuPlan, GraphCaptureReplayMatchesDirectRun) {
  SKIP_WITHOUT_GPU();
  const int P = 16, H = 2, D = 128, group = 4, Hq = H * group;
  CaseSpec spec;
  spec.lens = {900, 17, 400};
  spec.num_kv_heads = H;
  spec.page_size = P;
  spec.head_dim = D;
  spec.dtype = DType::bf16;
  spec.stats_dtype = DType::bf16;
  spec.needle = true;
  CacheCase c = make_case(spec, 77);
  const PagedKV hkv = c.kv();
  DevKV dkv(hkv);
  const int B = c.batch();
  Buf q1 = make_queries(c, group, DType::bf16, 1, 0.3f), q2 = make_queries(c, group, DType::bf16, 2, 0.3f);
  Dev dq(q1.data(), q1.bytes.size()), dout(size_t(B) * Hq * D * 4), dlse(size_t(B) * Hq * 4);
  const TensorView qv = dview(dq, DType::bf16, {B, Hq, D}), ov = dview(dout, DType::f32, {B, Hq, D}),
                   lv = dview(dlse, DType::f32, {B, Hq});
  for (Estimator e : {Estimator::unique, Estimator::dense}) {
    AttentionConfig cfg;
    cfg.page_size = P;
    cfg.budget_tokens = 128;
    cfg.estimator = e;
    SCOPED_TRACE(to_string(e));
    DecodePlan plan;
    plan.plan(cfg, DecodeShape{B, Hq, H, D, dkv.kv.max_pages_per_seq});
    cudaStream_t st;
    CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    plan.run(qv, dkv.kv, ov, lv, st);
    CUDA_OK(cudaStreamEndCapture(st, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (const Buf* q : {&q1, &q2, &q1}) {
      dq.up(q->data(), q->bytes.size());
      dout.poison();
      CUDA_OK(cudaGraphLaunch(exec, st));
      CUDA_OK(cudaStreamSynchronize(st));
      // reference: the plain API on the same inputs, then the CPU reference
      Buf hq_buf = *q;
      const TensorView hq = hq_buf.view({B, Hq, D});
      Buf want(DType::f32, size_t(B) * Hq * D);
      if (e == Estimator::dense) {
        ref::paged_decode(cfg, hq, hkv, nullptr, want.view({B, Hq, D}), TensorView{});
      } else {
        SelBuf rs(B, H, cfg.max_selected(max_seq_pages(hkv)));
        ref::select_pages(cfg, hq, hkv, rs.sel);
        ref::paged_decode(cfg, hq, hkv, &rs.sel, want.view({B, Hq, D}), TensorView{});
      }
      std::vector<float> got(size_t(B) * Hq * D);
      dout.down(got.data(), got.size() * 4);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want.get(i), 2e-2f * (1 + std::abs(want.get(i)))) << "i=" << i;
    }
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaStreamDestroy(st));
  }
}

TEST(GpuPlan, RunRejectsShapesOutsideThePlan) {
  SKIP_WITHOUT_GPU();
  CaseSpec spec;
  spec.lens = {100};
  spec.head_dim = 64;
  spec.dtype = DType::bf16;
  CacheCase c = make_case(spec, 3);
  DevKV dkv(c.kv());
  AttentionConfig cfg;
  cfg.budget_tokens = 32;
  DecodePlan plan;
  EXPECT_ERROR_MSG(plan.run(TensorView{}, dkv.kv, TensorView{}, TensorView{}, nullptr), "plan() before run()");
  plan.plan(cfg, DecodeShape{1, 2, 2, 64, 2});
  Dev dq(2 * 64 * 4), dout(2 * 64 * 4);
  EXPECT_ERROR_MSG(plan.run(dview(dq, DType::f32, {1, 2, 64}), dkv.kv, dview(dout, DType::f32, {1, 2, 64}),
                            TensorView{}, nullptr),
                   "kv.max_pages_per_seq");
  EXPECT_ERROR_MSG(plan.plan(cfg, DecodeShape{1, 3, 2, 64, 2}), "shape.num_qo_heads");
  EXPECT_ERROR_MSG(plan.plan(cfg, DecodeShape{1, 2, 2, 96, 2}), "shape.head_dim");
  AttentionConfig composite = cfg;  // a CPU accuracy study: refused, not scored as another estimator
  composite.estimator = Estimator::composite;
  EXPECT_ERROR_MSG(plan.plan(composite, DecodeShape{1, 2, 2, 64, 2}), "estimator", "composite", "CUDA");
}

TEST(GpuErrors, BadInputIsRejectedBeforeLaunch) {
  SKIP_WITHOUT_GPU();
  CaseSpec spec;
  spec.lens = {100, 20};
  spec.head_dim = 64;
  CacheCase c = make_case(spec, 5);
  DevKV dkv(c.kv());
  AttentionConfig cfg;
  cfg.budget_tokens = 32;
  Dev dq(2 * 2 * 64 * 4), dout(2 * 2 * 64 * 4);
  PagedKV bad = dkv.kv;
  bad.max_pages_per_seq = 0;
  EXPECT_ERROR_MSG(paged_decode(cfg, dview(dq, DType::f32, {2, 2, 64}), bad, nullptr,
                                dview(dout, DType::f32, {2, 2, 64}), TensorView{}),
                   "kv.max_pages_per_seq");
  // host query with a device cache
  std::vector<float> hq(2 * 2 * 64);
  EXPECT_ERROR_MSG(paged_decode(cfg, make_view(hq.data(), DType::f32, {2, 2, 64}), dkv.kv, nullptr,
                                dview(dout, DType::f32, {2, 2, 64}), TensorView{}),
                   "q");
  // head dim the CUDA kernels do not have
  CaseSpec s2 = spec;
  s2.head_dim = 96;
  CacheCase c2 = make_case(s2, 6);
  DevKV d2(c2.kv());
  Dev dq2(2 * 2 * 96 * 4), do2(2 * 2 * 96 * 4);
  EXPECT_ERROR_MSG(paged_decode(cfg, dview(dq2, DType::f32, {2, 2, 96}), d2.kv, nullptr,
                                dview(do2, DType::f32, {2, 2, 96}), TensorView{}),
                   "kv.head_dim", "64, 128 or 256");
  // the composite estimator (CPU only)
  AttentionConfig composite = cfg;
  composite.estimator = Estimator::composite;
  const int max_pages = max_seq_pages(c.kv());
  Dev ds(size_t(2) * 2 * max_pages * 4);
  EXPECT_ERROR_MSG(score_pages(composite, dview(dq, DType::f32, {2, 2, 64}), dkv.kv,
                               dview(ds, DType::f32, {2, 2, max_pages})),
                   "estimator", "composite", "CUDA");
}

}  // namespace
}  // namespace unique::test

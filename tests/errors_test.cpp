// Bad input: every validation error of the public entry points (fast and reference) is a
// unique::Error whose message names the argument.
#include <gtest/gtest.h>

#include "test_util.h"

namespace unique::test {
namespace {

struct Fixture {
  CacheCase c;
  PagedKV kv;
  Buf q;
  int B = 0, H = 2, Hq = 4, D = 64;
  Fixture() {
    CaseSpec s;
    s.lens = {50, 20};
    s.head_dim = 64;
    s.num_kv_heads = 2;
    c = make_case(s, 1234);
    kv = c.kv();
    B = c.batch();
    q = make_queries(c, 2, DType::f32, 1234);
  }
  TensorView qv() { return q.view({B, Hq, D}); }
};

AttentionConfig base_cfg() {
  AttentionConfig cfg;
  cfg.page_size = 16;
  cfg.budget_tokens = 16;
  return cfg;
}

// Every path that takes (cfg, q, kv): fast/ref score, select, decode.
template <class Check>
void for_each_entry(Fixture& f, const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                    Check check) {
  Buf scores(DType::f32, size_t(std::max(kv.batch, 1)) * std::max(kv.num_kv_heads, 1) * 8);
  SelBuf sel(std::max(kv.batch, 1), std::max(kv.num_kv_heads, 1), 8);
  Buf out(DType::f32, size_t(f.B) * 16 * 128);
  const TensorView sv = make_view(scores.data(), DType::f32, {kv.batch, kv.num_kv_heads, 8});
  const TensorView ov = make_view(out.data(), DType::f32, {q.shape[0], q.shape[1], q.shape[2]});
  check("score_pages", [&] { score_pages(cfg, q, kv, sv); });
  check("ref::score_pages", [&] { ref::score_pages(cfg, q, kv, sv); });
  check("select_pages", [&] { select_pages(cfg, q, kv, sel.sel); });
  check("ref::select_pages", [&] { ref::select_pages(cfg, q, kv, sel.sel); });
  check("paged_decode", [&] { paged_decode(cfg, q, kv, nullptr, ov, TensorView{}); });
  check("ref::paged_decode", [&] { ref::paged_decode(cfg, q, kv, nullptr, ov, TensorView{}); });
}

#define EXPECT_ALL_ENTRIES_THROW(f, cfg, q, kv, ...)                                   \
  for_each_entry(f, cfg, q, kv, [&](const char* name, auto fn) {                       \
    SCOPED_TRACE(name);                                                                \
    EXPECT_ERROR_MSG(fn(), __VA_ARGS__);                                               \
  })

TEST(Errors, WrongQueryShape) {
  Fixture f;
  Buf q(DType::f32, size_t(f.B) * f.Hq * 128);
  EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), q.view({f.B, f.Hq, 32}), f.kv, "q", "shape [2, *, 64]", "[2, 4, 32]");
  EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), q.view({f.B + 1, f.Hq, 64}), f.kv, "q", "[3, 4, 64]");
  EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), q.view({f.B * f.Hq * 64}), f.kv, "q", "shape");
}

TEST(Errors, MismatchedHeads) {
  Fixture f;
  Buf q(DType::f32, size_t(f.B) * 3 * 64);
  EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), q.view({f.B, 3, 64}), f.kv, "num_qo_heads", "num_kv_heads", "3");
  Buf q0(DType::f32, 1);
  EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), q0.view({f.B, 0, 64}), f.kv, "num_qo_heads");
}

TEST(Errors, NullPointers) {
  Fixture f;
  TensorView qnull = f.qv();
  qnull.data = nullptr;
  EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), qnull, f.kv, "q", "null");
  PagedKV k = f.kv;
  k.k = nullptr;
  EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), f.qv(), k, "kv.k");
  PagedKV t = f.kv;
  t.page_indices = nullptr;
  EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), f.qv(), t, "page table");
  PagedKV m = f.kv;
  m.mean = nullptr;
  for (Estimator e : {Estimator::unique, Estimator::mean}) {
    AttentionConfig cfg = base_cfg();
    cfg.estimator = e;
    Buf scores(DType::f32, 64);
    EXPECT_ERROR_MSG(score_pages(cfg, f.qv(), m, scores.view({2, 2, 8})), "kv.mean");
    EXPECT_ERROR_MSG(ref::score_pages(cfg, f.qv(), m, scores.view({2, 2, 8})), "kv.mean");
  }
  PagedKV mm = f.kv;
  mm.kmax = nullptr;
  AttentionConfig qc = base_cfg();
  qc.estimator = Estimator::quest;
  SelBuf sel(2, 2, 8);
  EXPECT_ERROR_MSG(select_pages(qc, f.qv(), mm, sel.sel), "kv.kmin/kv.kmax");
  EXPECT_ERROR_MSG(ref::select_pages(qc, f.qv(), mm, sel.sel), "kv.kmin/kv.kmax");
  // Stats are not needed by decode, oracle, random or dense.
  Buf out(DType::f32, size_t(f.B) * f.Hq * f.D);
  PagedKV nostats = f.kv;
  nostats.mean = nostats.std = nostats.kmin = nostats.kmax = nullptr;
  EXPECT_NO_THROW(paged_decode(base_cfg(), f.qv(), nostats, nullptr, out.view({f.B, f.Hq, f.D}), TensorView{}));
  for (Estimator e : {Estimator::oracle, Estimator::random, Estimator::dense}) {
    AttentionConfig cfg = base_cfg();
    cfg.estimator = e;
    EXPECT_NO_THROW(select_pages(cfg, f.qv(), nostats, sel.sel)) << to_string(e);
  }
  // Null selection arrays, null output.
  SelBuf bad(2, 2, 8);
  bad.sel.pages = nullptr;
  EXPECT_ERROR_MSG(select_pages(base_cfg(), f.qv(), f.kv, bad.sel), "selection");
  EXPECT_ERROR_MSG(paged_decode(base_cfg(), f.qv(), f.kv, &bad.sel, out.view({f.B, f.Hq, f.D}), TensorView{}),
                   "selection");
  TensorView onull = out.view({f.B, f.Hq, f.D});
  onull.data = nullptr;
  EXPECT_ERROR_MSG(paged_decode(base_cfg(), f.qv(), f.kv, nullptr, onull, TensorView{}), "out", "null");
  EXPECT_ERROR_MSG(ref::paged_decode(base_cfg(), f.qv(), f.kv, nullptr, onull, TensorView{}), "out", "null");
  // append_kv: null append_indptr.
  std::vector<float> kn(64 * 2);
  EXPECT_ERROR_MSG(append_kv(f.kv, make_view(kn.data(), DType::f32, {1, 2, 64}),
                             make_view(kn.data(), DType::f32, {1, 2, 64}), nullptr),
                   "append_indptr");
}

TEST(Errors, WrongDtypeOfLseAndScores) {
  Fixture f;
  Buf out(DType::f32, size_t(f.B) * f.Hq * f.D), lse(DType::bf16, size_t(f.B) * f.Hq);
  for (int impl = 0; impl < 2; ++impl) {
    auto dec = [&](const TensorView& o, const TensorView& l) {
      if (impl) ref::paged_decode(base_cfg(), f.qv(), f.kv, nullptr, o, l);
      else paged_decode(base_cfg(), f.qv(), f.kv, nullptr, o, l);
    };
    EXPECT_ERROR_MSG(dec(out.view({f.B, f.Hq, f.D}), lse.view({f.B, f.Hq})), "lse", "fp32", "bf16");
    Buf lse32(DType::f32, size_t(f.B) * f.Hq + 1);
    EXPECT_ERROR_MSG(dec(out.view({f.B, f.Hq, f.D}), lse32.view({f.B, f.Hq + 1})), "lse", "shape");
    EXPECT_ERROR_MSG(dec(out.view({f.B, f.Hq, f.D - 16}), TensorView{}), "out", "shape");
    TensorView gpu_out = out.view({f.B, f.Hq, f.D});
    gpu_out.device = Device::cuda;
    EXPECT_ERROR_MSG(dec(gpu_out, TensorView{}), "out", "device");
  }
  Buf s16(DType::f16, 2 * 2 * 8);
  EXPECT_ERROR_MSG(score_pages(base_cfg(), f.qv(), f.kv, s16.view({2, 2, 8})), "scores", "fp32", "fp16");
  EXPECT_ERROR_MSG(ref::score_pages(base_cfg(), f.qv(), f.kv, s16.view({2, 2, 8})), "scores");
  Buf s32(DType::f32, 2 * 2 * 8);
  EXPECT_ERROR_MSG(score_pages(base_cfg(), f.qv(), f.kv, s32.view({2, 2, 3})), "scores.shape[2]", "4", "3");
  EXPECT_ERROR_MSG(ref::score_pages(base_cfg(), f.qv(), f.kv, s32.view({2, 2, 3})), "scores");
  EXPECT_ERROR_MSG(score_pages(base_cfg(), f.qv(), f.kv, s32.view({2, 3, 4})), "scores", "shape");
}

TEST(Errors, PageTableContents) {
  Fixture f;
  {  // page id out of range
    std::vector<int32_t> idx(f.c.table.indices);
    idx[1] = f.kv.num_pages;
    PagedKV kv = f.kv;
    kv.page_indices = idx.data();
    const std::string np = std::to_string(f.kv.num_pages);
    EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), f.qv(), kv, "page_indices[1]", "a page id in [0,", np.c_str());
    idx[1] = -1;
    EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), f.qv(), kv, "page_indices[1]", "-1");
  }
  for (int bad : {0, 17}) {  // last_page_len 0 or > page size
    std::vector<int32_t> last(f.c.table.last_page_len);
    last[1] = bad;
    PagedKV kv = f.kv;
    kv.last_page_len = last.data();
    const std::string bs = std::to_string(bad);
    EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), f.qv(), kv, "last_page_len[1]", "1..16", bs.c_str());
  }
  {  // empty sequence
    std::vector<int32_t> indptr(f.c.table.indptr);
    ASSERT_EQ(indptr.size(), 3u);
    indptr[2] = indptr[1];
    PagedKV kv = f.kv;
    kv.page_indptr = indptr.data();
    EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), f.qv(), kv, "page_indptr[2] - page_indptr[1]", "empty sequence");
  }
  {  // indptr not starting at 0
    std::vector<int32_t> indptr(f.c.table.indptr);
    indptr[0] = 1;
    PagedKV kv = f.kv;
    kv.page_indptr = indptr.data();
    EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), f.qv(), kv, "page_indptr[0]");
  }
  {  // batch 0, bad head_dim
    PagedKV kv = f.kv;
    kv.batch = 0;
    EXPECT_ERROR_MSG(validate_paged_kv(kv, false), "kv.batch");
    kv = f.kv;
    kv.head_dim = 40;
    EXPECT_ERROR_MSG(validate_paged_kv(kv, false), "kv.head_dim", "40");
    kv = f.kv;
    kv.mean = nullptr;
    EXPECT_ERROR_MSG(validate_paged_kv(kv, true), "kv stats");
    kv = f.kv;
    kv.max_pages_per_seq = 3;  // sequence 0 has 4 pages
    EXPECT_ALL_ENTRIES_THROW(f, base_cfg(), f.qv(), kv, "pages of sequence 0", "max_pages_per_seq (3)", "4");
  }
}

TEST(Errors, ConfigValues) {
  Fixture f;
  AttentionConfig cfg = base_cfg();
  cfg.budget_tokens = 0;
  EXPECT_ERROR_MSG(cfg.validate(), "budget_tokens", "0");
  EXPECT_ALL_ENTRIES_THROW(f, cfg, f.qv(), f.kv, "budget_tokens", ">= page_size (16)", "0");
  cfg.budget_tokens = 15;
  EXPECT_ALL_ENTRIES_THROW(f, cfg, f.qv(), f.kv, "budget_tokens", "15");
  cfg = base_cfg();
  cfg.page_size = 32;
  cfg.budget_tokens = 64;
  EXPECT_ALL_ENTRIES_THROW(f, cfg, f.qv(), f.kv, "config.page_size", "16", "32");
  cfg = base_cfg();
  cfg.sink_pages = -1;
  EXPECT_ERROR_MSG(cfg.validate(), "sink_pages");
  cfg = base_cfg();
  cfg.recent_pages = -2;
  EXPECT_ERROR_MSG(cfg.validate(), "recent_pages");
  cfg = base_cfg();
  cfg.alpha = NAN;
  EXPECT_ERROR_MSG(cfg.validate(), "alpha");
  cfg = base_cfg();
  cfg.sm_scale = -1.0f;
  EXPECT_ALL_ENTRIES_THROW(f, cfg, f.qv(), f.kv, "sm_scale");
  cfg = base_cfg();
  cfg.page_size = 0;
  EXPECT_ERROR_MSG(cfg.validate(), "page_size");
  EXPECT_NO_THROW(base_cfg().validate());
}

TEST(Errors, SelectionShapeAndContents) {
  Fixture f;
  AttentionConfig cfg = base_cfg();
  cfg.budget_tokens = 32;  // k = 2: max_selected(4 pages) = 4
  ASSERT_EQ(cfg.max_selected(4), 4);
  {
    SelBuf small(f.B, f.H, 3);
    EXPECT_ERROR_MSG(select_pages(cfg, f.qv(), f.kv, small.sel), "selection.max_selected", ">= 4", "3");
    EXPECT_ERROR_MSG(ref::select_pages(cfg, f.qv(), f.kv, small.sel), "selection.max_selected");
    Buf out(DType::f32, size_t(f.B) * f.Hq * f.D);
    EXPECT_ERROR_MSG(paged_decode(cfg, f.qv(), f.kv, &small.sel, out.view({f.B, f.Hq, f.D}), TensorView{}),
                     "selection.max_selected");
  }
  {
    SelBuf wrong(f.B + 1, f.H, 4);
    EXPECT_ERROR_MSG(select_pages(cfg, f.qv(), f.kv, wrong.sel), "selection.batch");
    SelBuf wrongh(f.B, f.H + 1, 4);
    EXPECT_ERROR_MSG(select_pages(cfg, f.qv(), f.kv, wrongh.sel), "selection.num_kv_heads");
    SelBuf gpu(f.B, f.H, 4);
    gpu.sel.device = Device::cuda;
    EXPECT_ERROR_MSG(select_pages(cfg, f.qv(), f.kv, gpu.sel), "selection.device");
  }
  // Decode with a selection whose contents are wrong.
  SelBuf sel(f.B, f.H, 4);
  select_pages(cfg, f.qv(), f.kv, sel.sel);
  Buf out(DType::f32, size_t(f.B) * f.Hq * f.D);
  // The fast and reference decode and the recall metric all refuse them.
  for (int impl = 0; impl < 3; ++impl) {
    auto dec = [&](const Selection& s) {
      if (impl == 2) attention_recall(cfg, f.qv(), f.kv, s);
      else if (impl) ref::paged_decode(cfg, f.qv(), f.kv, &s, out.view({f.B, f.Hq, f.D}), TensorView{});
      else paged_decode(cfg, f.qv(), f.kv, &s, out.view({f.B, f.Hq, f.D}), TensorView{});
    };
    SelBuf s = sel;
    s.sel.pages = s.pages.data();
    s.sel.counts = s.counts.data();
    s.pages[1 * 4 + 1] = 4;  // sequence 0 (4 pages) head 1, slot 1: position 4 out of range
    EXPECT_ERROR_MSG(dec(s.sel), "selection.pages[0, 1, 1]", "[0, 4)", "4");
    s.pages[1 * 4 + 1] = -1;
    EXPECT_ERROR_MSG(dec(s.sel), "selection.pages[0, 1, 1]", "-1");
    SelBuf t = sel;
    t.sel.pages = t.pages.data();
    t.sel.counts = t.counts.data();
    t.counts[3] = 0;
    EXPECT_ERROR_MSG(dec(t.sel), "selection.counts[1, 1]", "0");
    t.counts[3] = 5;
    EXPECT_ERROR_MSG(dec(t.sel), "selection.counts[1, 1]", "5");
  }
}

TEST(Errors, AppendKv) {
  Fixture f;
  std::vector<float> k(10 * 2 * 64);
  const TensorView k1 = make_view(k.data(), DType::f32, {1, 2, 64});
  std::vector<int32_t> ap = {0, 1, 1};
  EXPECT_ERROR_MSG(append_kv(f.kv, make_view(k.data(), DType::f32, {1, 3, 64}), k1, ap.data()), "k_new");
  EXPECT_ERROR_MSG(append_kv(f.kv, k1, make_view(k.data(), DType::f32, {2, 2, 64}), ap.data()), "v_new");
  std::vector<int32_t> ap2 = {0, 1, 2};
  EXPECT_ERROR_MSG(append_kv(f.kv, k1, k1, ap2.data()), "append_indptr[batch]");
  std::vector<int32_t> ap3 = {1, 1, 1};
  EXPECT_ERROR_MSG(append_kv(f.kv, k1, k1, ap3.data()), "append_indptr[0]");
  // More tokens appended to a sequence than it holds.
  const TensorView k30 = make_view(k.data(), DType::f32, {10, 2, 64});
  std::vector<int32_t> ap4 = {0, 0, 10};
  PagedKV kv = f.kv;
  std::vector<int32_t> last = {f.c.table.last_page_len[0], 5};
  std::vector<int32_t> indptr = {f.c.table.indptr[0], f.c.table.indptr[1], f.c.table.indptr[1] + 1};
  kv.last_page_len = last.data();
  kv.page_indptr = indptr.data();  // sequence 1: 1 page, 5 tokens
  EXPECT_ERROR_MSG(append_kv(kv, k30, k30, ap4.data()), "tokens appended to sequence 1", "0..5", "10");
  EXPECT_ERROR_MSG(recompute_page_stats([&] { PagedKV x = f.kv; x.num_kv_heads = 0; return x; }()),
                   "kv.num_kv_heads");
}

TEST(Errors, ParseNames) {
  for (Estimator e : {Estimator::unique, Estimator::quest, Estimator::mean, Estimator::oracle,
                      Estimator::random, Estimator::dense, Estimator::composite})
    EXPECT_EQ(parse_estimator(to_string(e)), e);
  EXPECT_ERROR_MSG(parse_estimator("nope"), "estimator", "nope", "unique");
  EXPECT_ERROR_MSG(parse_estimator(""), "estimator");
  EXPECT_ERROR_MSG(parse_estimator("Unique"), "estimator", "Unique");
  EXPECT_EQ(parse_gqa("max"), GqaAggregation::max);
  EXPECT_EQ(parse_gqa("softmax_sum"), GqaAggregation::softmax_sum);
  EXPECT_EQ(parse_gqa(to_string(GqaAggregation::softmax_sum)), GqaAggregation::softmax_sum);
  EXPECT_ERROR_MSG(parse_gqa("mean"), "gqa", "mean");
  EXPECT_EQ(parse_offset("norm"), OffsetForm::norm);
  EXPECT_EQ(parse_offset(to_string(OffsetForm::channel)), OffsetForm::channel);
  EXPECT_ERROR_MSG(parse_offset("l2"), "offset", "l2");
}

TEST(Errors, TensorViewHelpers) {
  float x[24];
  TensorView t = make_view(x, DType::f32, {2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.shape_str(), "[2, 3, 4]");
  EXPECT_ERROR_MSG(expect_shape(t, "thing", {2, 4, -1}), "thing", "shape [2, 4, *]", "shape [2, 3, 4]");
  EXPECT_NO_THROW(expect_shape(t, "thing", {-1, 3, 4}));
  EXPECT_ERROR_MSG(expect_dtype(t, "thing", DType::bf16), "thing", "bf16", "fp32");
  EXPECT_ERROR_MSG(expect_device(t, "thing", Device::cuda), "thing", "cuda", "cpu");
  t.stride[0] = 100;
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_ERROR_MSG(expect_contiguous(t, "thing"), "thing", "contiguous");
  t.data = nullptr;
  EXPECT_ERROR_MSG(expect_not_null(t, "thing"), "thing", "null");
  EXPECT_ERROR_MSG(make_view(x, DType::f32, {1, 1, 1, 1, 1, 1, 1}), "make_view");
}

}  // namespace
}  // namespace unique::test

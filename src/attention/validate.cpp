#include "attention/validate.h"

#include "unique/error.h"

namespace unique::detail {

void validate_cfg_kv(const AttentionConfig& cfg, const PagedKV& kv, bool need_stats) {
  cfg.validate();
  UNIQUE_CHECK_ARG(cfg.page_size == kv.page_size, "config.page_size",
            concat("the cache's page size ", kv.page_size), cfg.page_size);
  validate_paged_kv(kv, need_stats);
}

void validate_query(const TensorView& q, const PagedKV& kv) {
  expect_not_null(q, "q");
  expect_shape(q, "q", {kv.batch, -1, kv.head_dim});
  expect_device(q, "q", kv.device);
  const int64_t hq = q.shape[1];
  UNIQUE_CHECK_ARG(hq > 0 && hq % kv.num_kv_heads == 0, "q num_qo_heads",
            concat("a positive multiple of num_kv_heads (", kv.num_kv_heads, ")"), hq);
}

void validate_scoring(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv) {
  validate_cfg_kv(cfg, kv, false);
  validate_query(q, kv);
  if (cfg.estimator == Estimator::quest)
    UNIQUE_CHECK_ARG(kv.kmin && kv.kmax, "kv.kmin/kv.kmax", "set for estimator quest", "null");
  else if (cfg.estimator == Estimator::unique || cfg.estimator == Estimator::mean)
    UNIQUE_CHECK_ARG(kv.mean && kv.std, "kv.mean/kv.std",
              concat("set for estimator ", to_string(cfg.estimator)), "null");
}

void validate_out_lse(const TensorView& q, const PagedKV& kv, const TensorView& out, const TensorView& lse) {
  expect_not_null(out, "out");
  expect_shape(out, "out", {q.shape[0], q.shape[1], q.shape[2]});
  expect_device(out, "out", kv.device);
  if (lse.data) {
    expect_shape(lse, "lse", {q.shape[0], q.shape[1]});
    expect_dtype(lse, "lse", DType::f32);
    expect_device(lse, "lse", kv.device);
  }
}

void validate_host_selection(const Selection& sel, const PagedKV& kv) {
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int h = 0; h < kv.num_kv_heads; ++h) {
      const int c = sel.counts[b * kv.num_kv_heads + h];
      UNIQUE_CHECK_ARG(c >= 1 && c <= sel.max_selected, concat("selection.counts[", b, ", ", h, "]"),
                       concat("1..", sel.max_selected), c);
      const int32_t* p = sel.pages + (int64_t(b) * kv.num_kv_heads + h) * sel.max_selected;
      for (int i = 0; i < c; ++i)
        UNIQUE_CHECK_ARG(p[i] >= 0 && p[i] < n, concat("selection.pages[", b, ", ", h, ", ", i, "]"),
                         concat("a page position in [0, ", n, ")"), p[i]);
    }
  }
}

}  // namespace unique::detail

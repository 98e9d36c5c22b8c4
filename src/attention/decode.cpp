#include "unique/decode.h"

#include "attention/cuda_backend.h"
#include "attention/validate.h"
#include "cpu/cpu_kernels.h"
#include "unique/error.h"
#include "unique/stream.h"

namespace unique {

void validate_decode_args(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                          const Selection* sel, const TensorView& out, const TensorView& lse) {
  detail::validate_cfg_kv(cfg, kv, false);
  detail::validate_query(q, kv);
  expect_not_null(out, "out");
  expect_shape(out, "out", {q.shape[0], q.shape[1], q.shape[2]});
  expect_device(out, "out", kv.device);
  if (lse.data) {
    expect_shape(lse, "lse", {q.shape[0], q.shape[1]});
    expect_dtype(lse, "lse", DType::f32);
    expect_device(lse, "lse", kv.device);
  }
  if (!sel) return;
  validate_selection(*sel, kv, cfg);
  if (kv.device == Device::cuda) return;  // device selections are written by our kernels
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int h = 0; h < kv.num_kv_heads; ++h) {
      const int c = sel->counts[b * kv.num_kv_heads + h];
      UNIQUE_CHECK_ARG(c >= 1 && c <= sel->max_selected,
                detail::concat("selection.counts[", b, ", ", h, "]"),
                detail::concat("1..", sel->max_selected), c);
      const int32_t* p = sel->pages + (int64_t(b) * kv.num_kv_heads + h) * sel->max_selected;
      for (int i = 0; i < c; ++i)
        UNIQUE_CHECK_ARG(p[i] >= 0 && p[i] < n, detail::concat("selection.pages[", b, ", ", h, ", ", i, "]"),
                  detail::concat("a page position in [0, ", n, ")"), p[i]);
    }
  }
}

void paged_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection* sel, const TensorView& out, const TensorView& lse) {
  validate_decode_args(cfg, q, kv, sel, out, lse);
  if (kv.device == Device::cuda)
    cuda_backend::paged_decode(cfg, q, kv, sel, out, lse, max_seq_pages(kv), cuda_stream());
  else
    cpu::paged_decode(cfg, q, kv, sel, out, lse);
}

}  // namespace unique

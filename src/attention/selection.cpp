#include "unique/selection.h"

#include "attention/cuda_backend.h"
#include "attention/validate.h"
#include "cpu/cpu_kernels.h"
#include "unique/error.h"
#include "unique/stream.h"

namespace unique {

void validate_selection(const Selection& sel, const PagedKV& kv, const AttentionConfig& cfg) {
  UNIQUE_CHECK_ARG(sel.pages && sel.counts, "selection", "pages and counts set", "a null pointer");
  UNIQUE_CHECK_ARG(sel.device == kv.device, "selection.device", to_string(kv.device),
            to_string(sel.device));
  UNIQUE_CHECK_ARG(sel.batch == kv.batch, "selection.batch", kv.batch, sel.batch);
  UNIQUE_CHECK_ARG(sel.num_kv_heads == kv.num_kv_heads, "selection.num_kv_heads", kv.num_kv_heads,
            sel.num_kv_heads);
  const int need = cfg.max_selected(max_seq_pages(kv));
  UNIQUE_CHECK_ARG(sel.max_selected >= need, "selection.max_selected",
            detail::concat(">= ", need, " (config.max_selected of the longest sequence)"),
            sel.max_selected);
}

void score_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                 const TensorView& scores) {
  detail::validate_scoring(cfg, q, kv);
  const int max_pages = max_seq_pages(kv);
  expect_shape(scores, "scores", {kv.batch, kv.num_kv_heads, -1});
  UNIQUE_CHECK_ARG(scores.shape[2] >= max_pages, "scores.shape[2]",
            detail::concat(">= pages of the longest sequence (", max_pages, ")"), scores.shape[2]);
  expect_dtype(scores, "scores", DType::f32);
  expect_contiguous(scores, "scores");
  expect_device(scores, "scores", kv.device);
  if (kv.device == Device::cuda)
    cuda_backend::score_pages(cfg, q, kv, scores, max_pages, cuda_stream());
  else
    cpu::score_pages(cfg, q, kv, scores);
}

void select_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection& out) {
  detail::validate_scoring(cfg, q, kv);
  validate_selection(out, kv, cfg);
  if (kv.device == Device::cuda)
    cuda_backend::select_pages(cfg, q, kv, out, max_seq_pages(kv), cuda_stream());
  else
    cpu::select_pages(cfg, q, kv, out);
}

}  // namespace unique

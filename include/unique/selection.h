// Page scoring and top-k page selection per (sequence, KV head).
#pragma once
#include <cstdint>

#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/tensor.h"

namespace unique {

// Fixed-shape selection so a decode step can be captured in a CUDA graph.
//   pages  [batch, num_kv_heads, max_selected]  logical page positions within the
//          sequence (0 = first page), ascending, -1 after `count` entries
//   counts [batch, num_kv_heads]
struct Selection {
  int32_t* pages = nullptr;
  int32_t* counts = nullptr;
  int batch = 0;
  int num_kv_heads = 0;
  int max_selected = 0;
  Device device = Device::cpu;
};

// Scores of every page of every sequence, aggregated over the query heads of each GQA
// group as cfg.gqa says. q [batch, num_qo_heads, head_dim] (any dtype, same device as kv);
// scores [batch, num_kv_heads, max_pages] fp32, entries past a sequence's pages = -inf.
// For Estimator::dense every score is 0.
void score_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                 const TensorView& scores);

// Selection per (sequence, KV head): the first sink_pages and last recent_pages pages
// (the last page always), plus the top-k of the rest by score; ties go to the lower page
// position; budget >= context (or Estimator::dense) selects every page.
// count = min(k + sink + recent, pages) where sink/recent overlap is counted once.
void select_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection& out);

// Host checks of a Selection against kv (shape fields, device).
void validate_selection(const Selection& sel, const PagedKV& kv, const AttentionConfig& cfg);

namespace ref {
void score_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                 const TensorView& scores);
void select_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection& out);
}  // namespace ref

}  // namespace unique

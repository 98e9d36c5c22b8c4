// Page statistics: per (page, KV head, channel) key mean/std (UNIQUE) and min/max (Quest).
#pragma once
#include <cstdint>

#include "unique/paged_kv.h"
#include "unique/tensor.h"

namespace unique {

// Writes new tokens into the pages and updates the statistics of the pages they land in.
// The page table in `kv` already describes the lengths AFTER the append; sequence b gets
// the rows [append_indptr[b], append_indptr[b+1]) of k_new/v_new ([nnz, H, D], any dtype),
// placed at its last (append_indptr[b+1]-append_indptr[b]) positions.
// append_indptr lives on the host for a CPU cache and on the device for a CUDA cache.
// The statistics of every page touched are recomputed from its stored keys (two-pass,
// fp32, at most page_size rows): exact against recompute_page_stats for any stats dtype,
// and cheap next to the write (one page re-read per sequence and head).
void append_kv(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
               const int32_t* append_indptr);

// Recomputes every statistic of the pages in kv's page table from the stored keys
// (two-pass, double accumulation, rounded once to stats_dtype). The reference the incremental update must match.
void recompute_page_stats(const PagedKV& kv);

}  // namespace unique

// Internal: argument checks shared by the public entry points.
#pragma once
#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/prefill.h"
#include "unique/selection.h"
#include "unique/tensor.h"

namespace unique::detail {

// cfg valid, cfg.page_size == kv.page_size, kv valid (stats if the estimator needs them).
void validate_cfg_kv(const AttentionConfig& cfg, const PagedKV& kv, bool need_stats);
// q [kv.batch, Hq, head_dim] on kv's device, Hq a multiple of num_kv_heads.
void validate_query(const TensorView& q, const PagedKV& kv);

// Everything score_pages/select_pages need: cfg/kv/q valid and the estimator's stats set.
void validate_scoring(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv);

// out [q rows, Hq, D] (any dtype) and the optional lse [q rows, Hq] fp32 on kv's device.
void validate_out_lse(const TensorView& q, const PagedKV& kv, const TensorView& out, const TensorView& lse);

// The contents of a host selection: counts in 1..max_selected, page positions in range.
void validate_host_selection(const Selection& sel, const PagedKV& kv);

// Everything select_prefill_blocks (out == nullptr) or sparse_prefill needs: arguments,
// selection shape, and on the CPU the contents of a selection the attention reads.
void validate_prefill_call(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection* sel, const TensorView* out,
                           const TensorView* lse);

}  // namespace unique::detail

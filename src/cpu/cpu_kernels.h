// Internal: CPU kernels behind the public dispatch functions. Arguments are validated by
// the callers in src/attention. unique::ref::* (public) are the simple reference twins.
#pragma once
#include <cstdint>
#include <vector>

#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/prefill.h"
#include "unique/selection.h"
#include "unique/tensor.h"

namespace unique::cpu {

void append_kv(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
               const int32_t* append_indptr);
void recompute_page_stats(const PagedKV& kv);

void score_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                 const TensorView& scores);
void select_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection& out);
void paged_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection* sel, const TensorView& out, const TensorView& lse);

void select_prefill_blocks(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection& out);
void sparse_prefill(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                    int64_t kv_len, const BlockSelection* sel, const TensorView& out, const TensorView& lse);

// Strict total order used by every selection: higher score first, NaN as -inf, ties to
// the lower page position.
inline bool ranks_before(float sa, int a, float sb, int b) {
  sa = sa == sa ? sa : -__builtin_inff();
  sb = sb == sb ? sb : -__builtin_inff();
  return sa > sb || (sa == sb && a < b);
}

// ranks_before as one unsigned comparison (larger key first), for sorting many pages: the
// score's bits made monotonic (NaN as -inf, -0 as +0), then the inverted position.
inline uint64_t rank_key(float s, int pos) {
  s = s == s ? s + 0.0f : -__builtin_inff();
  uint32_t u;
  __builtin_memcpy(&u, &s, sizeof u);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (uint64_t(u) << 32) | uint32_t(~uint32_t(pos));
}

// Pages always kept for a sequence of n pages: [0, sink) and [n - max(recent,1), n).
inline bool is_forced(const AttentionConfig& cfg, int page, int n) {
  int recent = cfg.recent_pages > 0 ? cfg.recent_pages : 1;
  return page < cfg.sink_pages || page >= n - recent;
}

// Query heads of one (sequence, KV head) as fp32 rows [group, head_dim].
void load_query_group(const TensorView& q, int b, int kv_head, int group, int head_dim,
                      float* out);

}  // namespace unique::cpu

// Paged decode attention (one new query token per sequence) over all pages (dense) or
// over a Selection (sparse). GQA: query head h reads KV head h / (num_qo_heads/num_kv_heads).
#pragma once
#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/selection.h"
#include "unique/tensor.h"

namespace unique {

// q [batch, num_qo_heads, head_dim] any dtype; out same shape, any dtype;
// lse [batch, num_qo_heads] fp32 (natural log of the softmax denominator of
// sm_scale*q.k), optional (null data). sel == nullptr means dense.
// Accumulates in fp32 (fast) / double (ref).
void paged_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection* sel, const TensorView& out, const TensorView& lse);

namespace ref {
void paged_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection* sel, const TensorView& out, const TensorView& lse);
}  // namespace ref

// Checks shared by every backend (throws unique::Error naming the argument).
void validate_decode_args(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                          const Selection* sel, const TensorView& out, const TensorView& lse);

}  // namespace unique

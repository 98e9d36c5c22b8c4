// Prefill attention over the paged KV cache: dense causal, or UniSparse block-sparse
// causal (arXiv 2512.14082): composite tokens, top-p key-block selection per query block,
// then exact attention over the kept blocks only.
//
// One call handles one sequence's chunk of new tokens. The chunk's K/V are already in the
// cache (append them first), so the cache holds kv_len tokens of sequence `seq` and the
// chunk's queries are positions [kv_len - q_len, kv_len). Query position t sees key
// positions s <= t.
//
// Blocks are aligned to absolute positions: token t is in block t / B (B =
// cfg.prefill_block). The chunk touches query blocks [first_q_block, last_block]; key
// blocks are 0..last_block. Composite tokens pool `cfg.pool` consecutive absolute positions
// (group t / pool; a group at the start of the chunk or at the end of the sequence may be
// partial and averages the rows it has):
//
//   cq_g = mean of the chunk's query rows in group g,  ck_j = mean of key rows in group j
//   p_gj = softmax over j <= g of  sm_scale * cq_g . ck_j          (per query head, GQA)
//   mass[qb][kb] = mean over the groups g in query block qb of  sum over j in kb of p_gj
//
// Selection per (query head, query block qb): block 0 and the diagonal block qb always,
// then key blocks in decreasing mass (ties to the lower block) until the kept mass reaches
// cfg.top_p. top_p >= 1 keeps every block 0..qb, so the sparse prefill equals the dense one.
// cfg.prefill_top_k > 0 replaces the top-p rule by a fixed count (the fixed-budget baseline):
// min(prefill_top_k, qb + 1) blocks, the same two first, then by decreasing mass.
#pragma once
#include <cstdint>

#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/tensor.h"

namespace unique {

// Block counts of a chunk of q_len queries ending at kv_len (both >= 1, q_len <= kv_len).
struct PrefillBlocks {
  int first_q_block = 0;  // absolute block of the chunk's first query
  int num_q_blocks = 0;   // query blocks the chunk touches
  int num_kv_blocks = 0;  // key blocks 0..last (= the most any query block can keep)
};
PrefillBlocks prefill_blocks(const AttentionConfig& cfg, int64_t q_len, int64_t kv_len);

// Kept key blocks of every (query head, query block of the chunk), fixed shape:
//   blocks [num_qo_heads, num_q_blocks, max_kv_blocks] absolute key-block ids, ascending,
//          -1 past the count
//   counts [num_qo_heads, num_q_blocks]
struct BlockSelection {
  int32_t* blocks = nullptr;
  int32_t* counts = nullptr;
  int num_qo_heads = 0;
  int num_q_blocks = 0;
  int max_kv_blocks = 0;
  Device device = Device::cpu;
};

// q [q_len, num_qo_heads, head_dim] any dtype, on kv's device; kv_len = tokens of sequence
// `seq` in kv (checked against the host page table on the CPU; on the GPU the caller
// vouches for it). out.num_q_blocks/max_kv_blocks must match prefill_blocks(...).
void select_prefill_blocks(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                           int seq, int64_t kv_len, const BlockSelection& out);

// Causal attention of the chunk's queries over the kept key blocks (sel == nullptr: every
// block, i.e. dense causal). out [q_len, num_qo_heads, head_dim] any dtype; lse
// [q_len, num_qo_heads] fp32 natural-log softmax denominators, optional (null data).
// fp32 accumulation (fast) / double (ref).
void sparse_prefill(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                    int64_t kv_len, const BlockSelection* sel, const TensorView& out,
                    const TensorView& lse);

// Checks shared by every backend (throw unique::Error naming the argument).
void validate_prefill_args(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len);
void validate_block_selection(const BlockSelection& sel, const AttentionConfig& cfg, const TensorView& q,
                              const PagedKV& kv, int64_t kv_len);

namespace ref {
// Block mass [num_qo_heads, num_q_blocks, num_kv_blocks] fp32 (host): the composite-token
// estimate above (exact = false), or the true causal softmax mass of the chunk's queries
// averaged over each query block (exact = true), for evaluating the estimate. Entries of
// key blocks past the diagonal are 0.
void prefill_block_mass(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                        int64_t kv_len, bool exact, const TensorView& mass);
void select_prefill_blocks(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                           int seq, int64_t kv_len, const BlockSelection& out);
void sparse_prefill(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                    int64_t kv_len, const BlockSelection* sel, const TensorView& out,
                    const TensorView& lse);
}  // namespace ref

}  // namespace unique

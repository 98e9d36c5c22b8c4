#include "unique/prefill.h"

#include "attention/cuda_backend.h"
#include "attention/validate.h"
#include "cpu/cpu_kernels.h"
#include "unique/error.h"
#include "unique/stream.h"

namespace unique {

PrefillBlocks prefill_blocks(const AttentionConfig& cfg, int64_t q_len, int64_t kv_len) {
  UNIQUE_CHECK_ARG(kv_len >= 1, "kv_len", ">= 1", kv_len);
  UNIQUE_CHECK_ARG(q_len >= 1 && q_len <= kv_len, "q_len", detail::concat("1..kv_len (", kv_len, ")"), q_len);
  const int64_t B = cfg.prefill_block;
  PrefillBlocks pb;
  pb.first_q_block = static_cast<int>((kv_len - q_len) / B);
  pb.num_kv_blocks = static_cast<int>((kv_len + B - 1) / B);
  pb.num_q_blocks = pb.num_kv_blocks - pb.first_q_block;
  return pb;
}

void validate_prefill_args(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len) {
  detail::validate_cfg_kv(cfg, kv, false);
  UNIQUE_CHECK_ARG(seq >= 0 && seq < kv.batch, "seq", detail::concat("0..", kv.batch - 1), seq);
  expect_not_null(q, "q");
  expect_shape(q, "q", {-1, -1, kv.head_dim});
  expect_device(q, "q", kv.device);
  UNIQUE_CHECK_ARG(q.shape[1] > 0 && q.shape[1] % kv.num_kv_heads == 0, "q num_qo_heads",
                   detail::concat("a positive multiple of num_kv_heads (", kv.num_kv_heads, ")"), q.shape[1]);
  prefill_blocks(cfg, q.shape[0], kv_len);  // q_len and kv_len ranges
  if (kv.device == Device::cpu)
    UNIQUE_CHECK_ARG(kv_len == seq_len(kv, seq), "kv_len",
                     detail::concat("the tokens of sequence ", seq, " in the cache (", seq_len(kv, seq), ")"),
                     kv_len);
  else
    UNIQUE_CHECK_ARG(kv_len <= int64_t(kv.max_pages_per_seq) * kv.page_size, "kv_len",
                     detail::concat("<= kv.max_pages_per_seq * page_size (",
                                    int64_t(kv.max_pages_per_seq) * kv.page_size, ")"),
                     kv_len);
}

void validate_block_selection(const BlockSelection& sel, const AttentionConfig& cfg, const TensorView& q,
                              const PagedKV& kv, int64_t kv_len) {
  const PrefillBlocks pb = prefill_blocks(cfg, q.shape[0], kv_len);
  UNIQUE_CHECK_ARG(sel.blocks && sel.counts, "block selection", "blocks and counts set", "a null pointer");
  UNIQUE_CHECK_ARG(sel.device == kv.device, "block selection.device", to_string(kv.device), to_string(sel.device));
  UNIQUE_CHECK_ARG(sel.num_qo_heads == q.shape[1], "block selection.num_qo_heads", q.shape[1], sel.num_qo_heads);
  UNIQUE_CHECK_ARG(sel.num_q_blocks == pb.num_q_blocks, "block selection.num_q_blocks", pb.num_q_blocks,
                   sel.num_q_blocks);
  UNIQUE_CHECK_ARG(sel.max_kv_blocks == pb.num_kv_blocks, "block selection.max_kv_blocks", pb.num_kv_blocks,
                   sel.max_kv_blocks);
}

namespace {

// Every id a visible block, ascending, the count in range.
void validate_host_block_selection(const BlockSelection& sel, const PrefillBlocks& pb) {
  for (int h = 0; h < sel.num_qo_heads; ++h)
    for (int i = 0; i < sel.num_q_blocks; ++i) {
      const int qb = pb.first_q_block + i;
      const int64_t row = int64_t(h) * sel.num_q_blocks + i;
      const int c = sel.counts[row];
      UNIQUE_CHECK_ARG(c >= 1 && c <= qb + 1, detail::concat("block selection.counts[", h, ", ", i, "]"),
                       detail::concat("1..", qb + 1), c);
      const int32_t* b = sel.blocks + row * sel.max_kv_blocks;
      for (int j = 0; j < c; ++j)
        UNIQUE_CHECK_ARG(b[j] >= 0 && b[j] <= qb && (j == 0 || b[j] > b[j - 1]),
                         detail::concat("block selection.blocks[", h, ", ", i, ", ", j, "]"),
                         detail::concat("an ascending key block in [0, ", qb, "]"), b[j]);
    }
}


}  // namespace

namespace detail {
void validate_prefill_call(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection* sel, const TensorView* out,
                           const TensorView* lse) {
  validate_prefill_args(cfg, q, kv, seq, kv_len);
  if (out) validate_out_lse(q, kv, *out, *lse);
  if (!sel) return;
  validate_block_selection(*sel, cfg, q, kv, kv_len);
  // A selection the attention reads may come from the caller; device ones come from our kernels.
  if (out && kv.device == Device::cpu)
    validate_host_block_selection(*sel, prefill_blocks(cfg, q.shape[0], kv_len));
}
}  // namespace detail

void select_prefill_blocks(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection& out) {
  detail::validate_prefill_call(cfg, q, kv, seq, kv_len, &out, nullptr, nullptr);
  if (kv.device == Device::cuda)
    cuda_backend::select_prefill_blocks(cfg, q, kv, seq, kv_len, out, cuda_stream());
  else
    cpu::select_prefill_blocks(cfg, q, kv, seq, kv_len, out);
}

void sparse_prefill(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                    int64_t kv_len, const BlockSelection* sel, const TensorView& out, const TensorView& lse) {
  detail::validate_prefill_call(cfg, q, kv, seq, kv_len, sel, &out, &lse);
  if (kv.device == Device::cuda)
    cuda_backend::sparse_prefill(cfg, q, kv, seq, kv_len, sel, out, lse, cuda_stream());
  else
    cpu::sparse_prefill(cfg, q, kv, seq, kv_len, sel, out, lse);
}

}  // namespace unique

// CPU prefill kernels behind unique::select_prefill_blocks / unique::sparse_prefill.
// Placeholder until the fast kernels land: forwards to the reference.
#include "cpu/cpu_kernels.h"

namespace unique::cpu {

void select_prefill_blocks(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection& out) {
  ref::select_prefill_blocks(cfg, q, kv, seq, kv_len, out);
}

void sparse_prefill(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                    int64_t kv_len, const BlockSelection* sel, const TensorView& out, const TensorView& lse) {
  ref::sparse_prefill(cfg, q, kv, seq, kv_len, sel, out, lse);
}

}  // namespace unique::cpu

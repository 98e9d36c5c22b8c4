// unique::cuda_backend prefill entry points: the selection's composite-token scratch comes
// from a grow-only buffer (like the decode entry points' cached workspace).
#include <mutex>

#include "attention/cuda_backend.h"
#include "cuda/common.cuh"
#include "cuda/grow_buffer.h"
#include "cuda/prefill_kernels.h"

namespace unique::cuda_backend {

namespace {
struct Scratch {
  std::mutex mu;
  cuda::GrowBuffer buf;
};
Scratch& scratch() {
  static Scratch* s = new Scratch;  // never freed: outlives static destruction order
  return *s;
}
}  // namespace

void select_prefill_blocks(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection& out, void* stream) {
  Scratch& s = scratch();
  std::lock_guard<std::mutex> lock(s.mu);
  void* ws = s.buf.get(cuda::prefill_select_workspace_bytes(cfg, q, kv, kv_len));
  cuda::launch_prefill_select(cfg, q, kv, seq, kv_len, out, ws, static_cast<cudaStream_t>(stream));
}

void sparse_prefill(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                    int64_t kv_len, const BlockSelection* sel, const TensorView& out, const TensorView& lse,
                    void* stream) {
  cuda::launch_prefill_attention(cfg, q, kv, seq, kv_len, sel, out, lse, static_cast<cudaStream_t>(stream));
}

}  // namespace unique::cuda_backend

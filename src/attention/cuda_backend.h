// Internal: entry points of the CUDA backend (src/cuda). The public functions in
// src/attention validate their arguments on the host, then call these when the data
// lives on the GPU. Without UNIQUE_WITH_CUDA they throw unique::Error.
// All take device pointers (kv, q, out, selection, append_indptr) and launch on `stream`
// with no host synchronisation and no allocation.
#pragma once
#include <cstdint>

#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/prefill.h"
#include "unique/selection.h"
#include "unique/tensor.h"

namespace unique::cuda_backend {

// `max_new_tokens_per_seq` bounds append_indptr[b+1]-append_indptr[b] (host-known).
void append_kv(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
               const int32_t* append_indptr, int max_new_tokens_per_seq, void* stream);
void score_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                 const TensorView& scores, int max_pages, void* stream);
void select_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection& out, int max_pages, void* stream);
void paged_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection* sel, const TensorView& out, const TensorView& lse,
                  int max_pages, void* stream);

double measure_copy_gbps(std::size_t bytes, int reps);

// Prefill of one sequence's chunk (include/unique/prefill.h); kv_len host-known.
void select_prefill_blocks(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection& out, void* stream);
void sparse_prefill(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                    int64_t kv_len, const BlockSelection* sel, const TensorView& out,
                    const TensorView& lse, void* stream);

// Soft-mask attention (include/unique/soft_mask.h); arguments already validated. The
// workspace (page statistics, thresholds, fp32 gradient accumulators) comes from a
// grow-only device buffer. tau (may be null): [B][Hq][L] thresholds, written by the
// forward, read (not recomputed) by the backward.
void soft_mask_forward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse, float* tau, void* stream);
void soft_mask_backward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout, const TensorView& dq,
                        const TensorView& dk, const TensorView& dv, const float* tau, void* stream);
// The kernels those run on the current device for head_dim: "wgmma" or "mma".
const char* soft_mask_kernel(int head_dim);

}  // namespace unique::cuda_backend

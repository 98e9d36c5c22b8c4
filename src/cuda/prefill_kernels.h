// Internal: launchers of the CUDA prefill kernels (include/unique/prefill.h on the GPU).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/prefill.h"
#include "unique/tensor.h"

namespace unique::cuda {

// Everything the attention kernel reads, by value (one sequence's chunk).
struct PrefillAttentionArgs {
  const void* q = nullptr;
  DType q_dtype = DType::bf16;
  int64_t q_s0 = 0, q_s1 = 0, q_s2 = 0;
  void* out = nullptr;
  DType o_dtype = DType::bf16;
  int64_t o_s0 = 0, o_s1 = 0, o_s2 = 0;
  float* lse = nullptr;
  int64_t l_s0 = 0, l_s1 = 0;
  const void* k = nullptr;
  const void* v = nullptr;
  const int32_t* page_indptr = nullptr;
  const int32_t* page_indices = nullptr;
  int seq = 0;
  int num_kv_heads = 0, page_size = 0, group = 1;
  int page_shift = -1;  // log2(page_size) when it is a power of two, else -1
  int64_t kv_len = 0, q0 = 0;
  float scale_log2 = 0.0f;
  int block = 64, first_q_block = 0, last_q_tile = 0;
  const int32_t* sel_blocks = nullptr;  // null: dense causal
  const int32_t* sel_counts = nullptr;
  int sel_num_q_blocks = 0, sel_max_kv_blocks = 0;
};

// bf16/fp16 K/V, head_dim 64/128, prefill_block a multiple of 64. Runs the wgmma kernel
// (prefill_attention_sm90.cu) on sm_90 devices when this build has sm_90a code and its
// shared memory fits, else the mma.sync kernel; UNIQUE_PREFILL_KERNEL=mma|wgmma forces one
// (wgmma where it cannot run is an error).
void launch_prefill_attention(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                              int64_t kv_len, const BlockSelection* sel, const TensorView& out,
                              const TensorView& lse, cudaStream_t stream);

// The name of the kernel launch_prefill_attention would run ("wgmma" or "mma").
const char* prefill_attention_kernel(int head_dim, int64_t kv_len, bool sparse);

// The sm_90a kernel (internal to launch_prefill_attention).
size_t prefill_attention_sm90_smem(int head_dim, int64_t kv_len, bool sparse);
void launch_prefill_attention_sm90(const PrefillAttentionArgs& a, DType kv_dtype, int head_dim, int num_qo_heads,
                                   cudaStream_t stream);

// Composite-token scratch of the selection: pooled queries [q groups, Hq, D] and keys
// [k groups, Hkv, D] in the KV dtype.
size_t prefill_select_workspace_bytes(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                                      int64_t kv_len);
void launch_prefill_select(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection& out, void* workspace, cudaStream_t stream);

}  // namespace unique::cuda

// Internal: launchers of the CUDA kernels with explicit workspaces. The cuda_backend::*
// entry points use a cached workspace; unique::DecodePlan owns one per plan, so run()
// allocates nothing and can be captured in a CUDA graph.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/selection.h"
#include "unique/tensor.h"

namespace unique::cuda {

// Throws unique::Error for an estimator the CUDA path does not have (composite).
void check_cuda_estimator(const AttentionConfig& cfg);

// Scoring + selection scratch.
struct SelectWorkspace {
  float* agg = nullptr;  // [batch, num_kv_heads, max_pages rounded up to 4]
  float* raw = nullptr;  // [batch, num_qo_heads, max_pages] (softmax_sum, oracle, group > 8)
};
struct SelectSizes {
  size_t agg_floats, raw_floats;
};
SelectSizes select_sizes(int batch, int num_qo_heads, int num_kv_heads, int max_pages);
// The select kernel's threshold search: "hist" (a histogram over the scores' range, the
// bitwise search where it cannot decide) or "bitwise"; UNIQUE_SEL_TOPK overrides (read per
// launch, so tests run both; an unknown value is an error naming the variable).
const char* select_topk_path();

// Split-KV partials: o [batch, num_qo_heads, chunks, head_dim], lse [batch, num_qo_heads, chunks].
struct DecodeWorkspace {
  float* part_o = nullptr;
  float* part_lse = nullptr;
  size_t capacity_floats = 0;  // of part_o; part_lse holds capacity_floats / head_dim
};
// The decode kernel for these shapes: "mma" (tensor cores: 16-bit K/V, head dim 64 / 128,
// at least 3 query heads per KV head) or "simt"; UNIQUE_DECODE_KERNEL=auto|simt|mma overrides
// (mma where it cannot run is an error naming the variable). The mma kernel carries q as a
// K/V-dtype value plus its rounding remainder (the A operand's otherwise empty rows 8..15), so
// fp32 queries keep ~16 mantissa bits.
const char* decode_kernel_choice(DType kv_dtype, int head_dim, int group);
// Chunks (splits) per (sequence, head) for a list of at most max_list pages.
int decode_chunks(int batch, int num_qo_heads, int num_kv_heads, int page_size, int max_list, DType dtype,
                  int head_dim);
size_t decode_floats(int batch, int num_qo_heads, int head_dim, int chunks);

// Scores all pages (into scores_out when non-null: [batch, num_kv_heads, scores_stride]) and,
// when sel is non-null, selects into it.
void launch_score_select(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                         int max_pages, const SelectWorkspace& ws, float* scores_out,
                         int scores_stride, const Selection* sel, cudaStream_t stream);

void launch_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                   const Selection* sel, const TensorView& out, const TensorView& lse,
                   int max_pages, const DecodeWorkspace& ws, cudaStream_t stream);

void launch_append(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
                   const int32_t* append_indptr, int max_new_tokens_per_seq, cudaStream_t stream);

}  // namespace unique::cuda

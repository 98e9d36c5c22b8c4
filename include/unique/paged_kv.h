// PagedKV: one descriptor for a paged KV cache and the page table of a batch
// (FlashInfer's paged_kv_t idea). Non-owning; every kernel takes this one struct.
//
// Layouts (HND, FlashInfer-compatible):
//   k, v          [num_pages, num_kv_heads, page_size, head_dim]   dtype
//   mean, std     [num_pages, num_kv_heads, head_dim]   stats_dtype  (UNIQUE stats)
//   kmin, kmax    [num_pages, num_kv_heads, head_dim]   stats_dtype  (Quest stats)
//   stats_scale   [num_pages, num_kv_heads, 2]   fp32   only for stats_dtype fp8 (e4m3):
//                 [.., 0] scales mean and std, [.., 1] kmin and kmax
//   page_indptr   [batch + 1]   CSR offsets into page_indices
//   page_indices  [nnz]         physical page ids of each sequence, in order
//   last_page_len [batch]       tokens in each sequence's last page, 1..page_size
// Statistics are population statistics of the page's keys as stored (after rounding to
// dtype), computed in fp32 or better and rounded once to stats_dtype: they equal a
// from-scratch recomputation after any sequence of appends. std of a one-token page is 0.
// Any stats pointer may be null when not kept. stats_dtype bf16 halves the bytes a
// selection step reads (at page 16 the stats are most of them); fp8 halves them again.
// fp8 statistics: each pair (mean/std, kmin/kmax) of a (page, KV head) shares one scale s,
// the smallest power of two with max|x| / s <= 448 over both rows (e4m3_scale_exp in
// dtype.h); the stored code is e4m3(x / s), round-to-nearest-even, saturating; the value
// is code * s. One scale per pair lets a scorer apply it once after each page's dot
// product: s * sum(q * mu8 + alpha * |q| * sigma8) and s * sum(max(q * min8, q * max8)).
// The fp32 statistics are computed in double for fp8 (append and recompute alike), so an
// append's codes and scales equal a from-scratch recomputation's, on the CPU and the GPU.
#pragma once
#include <cstdint>

#include "unique/dtype.h"

namespace unique {

struct PagedKV {
  DType dtype = DType::bf16;
  Device device = Device::cpu;
  int num_pages = 0;
  int num_kv_heads = 0;
  int page_size = 16;
  int head_dim = 128;
  void* k = nullptr;
  void* v = nullptr;
  DType stats_dtype = DType::f32;
  void* mean = nullptr;
  void* std = nullptr;
  void* kmin = nullptr;
  void* kmax = nullptr;
  float* stats_scale = nullptr;  // [num_pages, num_kv_heads, 2], stats_dtype fp8 only
  int batch = 0;
  const int32_t* page_indptr = nullptr;
  const int32_t* page_indices = nullptr;
  const int32_t* last_page_len = nullptr;
  // Upper bound on the pages of any sequence in the batch. Required when the page table
  // lives on the GPU (the host cannot read it); on the CPU 0 means "compute it".
  int max_pages_per_seq = 0;

  // Element offsets (not bytes) of a page-head block and of a page-head stats row.
  int64_t kv_offset(int64_t page, int64_t head) const {
    return (page * num_kv_heads + head) * page_size * head_dim;
  }
  int64_t stats_offset(int64_t page, int64_t head) const {
    return (page * num_kv_heads + head) * head_dim;
  }
  // Element offset of the fp8 scale pair of a page-head: [+0] mean/std, [+1] kmin/kmax.
  int64_t scale_offset(int64_t page, int64_t head) const { return (page * num_kv_heads + head) * 2; }
};

// Host-side checks of a PagedKV whose page table is readable on the host: dimensions,
// pointers, indptr monotonic, page ids in [0, num_pages), last_page_len in [1, page_size],
// no empty sequence; dtype not fp8; stats_scale set when stats_dtype is fp8 and any
// statistic is kept. Throws unique::Error naming the field.
void validate_paged_kv(const PagedKV& kv, bool need_stats);

// Tokens in sequence b (host page table).
int64_t seq_len(const PagedKV& kv, int b);
int seq_pages(const PagedKV& kv, int b);
int max_seq_pages(const PagedKV& kv);

}  // namespace unique

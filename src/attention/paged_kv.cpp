#include "unique/paged_kv.h"

#include <algorithm>

#include "unique/error.h"

namespace unique {

int seq_pages(const PagedKV& kv, int b) { return kv.page_indptr[b + 1] - kv.page_indptr[b]; }

int64_t seq_len(const PagedKV& kv, int b) {
  return static_cast<int64_t>(seq_pages(kv, b) - 1) * kv.page_size + kv.last_page_len[b];
}

int max_seq_pages(const PagedKV& kv) {
  if (kv.device == Device::cuda) return kv.max_pages_per_seq;
  int m = 0;
  for (int b = 0; b < kv.batch; ++b) m = std::max(m, seq_pages(kv, b));
  return m;
}

void validate_paged_kv(const PagedKV& kv, bool need_stats) {
  UNIQUE_CHECK_ARG(kv.num_kv_heads > 0, "kv.num_kv_heads", "> 0", kv.num_kv_heads);
  UNIQUE_CHECK_ARG(kv.page_size >= 1 && kv.page_size <= 256, "kv.page_size", "1..256", kv.page_size);
  UNIQUE_CHECK_ARG(kv.head_dim > 0 && kv.head_dim <= 512 && kv.head_dim % 16 == 0, "kv.head_dim",
            "a multiple of 16 in 16..512", kv.head_dim);
  UNIQUE_CHECK_ARG(kv.num_pages > 0, "kv.num_pages", "> 0", kv.num_pages);
  UNIQUE_CHECK_ARG(kv.batch > 0, "kv.batch", "> 0", kv.batch);
  UNIQUE_CHECK_ARG(kv.k != nullptr && kv.v != nullptr, "kv.k/kv.v", "non-null", "null");
  UNIQUE_CHECK_ARG(kv.page_indptr && kv.page_indices && kv.last_page_len, "kv page table",
            "page_indptr, page_indices and last_page_len set", "a null pointer");
  if (need_stats)
    UNIQUE_CHECK_ARG(kv.mean && kv.std && kv.kmin && kv.kmax, "kv stats", "mean, std, kmin, kmax set",
              "a null pointer");
  expect_compute_dtype(kv.dtype, "kv.dtype");
  if (kv.stats_dtype == DType::e4m3 && (kv.mean || kv.std || kv.kmin || kv.kmax))
    UNIQUE_CHECK_ARG(kv.stats_scale != nullptr, "kv.stats_scale",
                     "set for stats_dtype fp8 ([num_pages, num_kv_heads, 2] fp32)", "null");
  if (kv.device == Device::cuda) {
    // The page table lives on the GPU; the host knows only the bound the caller gives.
    UNIQUE_CHECK_ARG(kv.max_pages_per_seq > 0, "kv.max_pages_per_seq", "> 0 for a CUDA page table",
              kv.max_pages_per_seq);
    return;
  }
  UNIQUE_CHECK_ARG(kv.page_indptr[0] == 0, "page_indptr[0]", 0, kv.page_indptr[0]);
  for (int b = 0; b < kv.batch; ++b) {
    int n = seq_pages(kv, b);
    UNIQUE_CHECK_ARG(n >= 1, detail::concat("page_indptr[", b + 1, "] - page_indptr[", b, "]"),
              ">= 1 page (empty sequence)", n);
    int last = kv.last_page_len[b];
    UNIQUE_CHECK_ARG(last >= 1 && last <= kv.page_size, detail::concat("last_page_len[", b, "]"),
              detail::concat("1..", kv.page_size), last);
    if (kv.max_pages_per_seq > 0)
      UNIQUE_CHECK_ARG(n <= kv.max_pages_per_seq, detail::concat("pages of sequence ", b),
                detail::concat("<= max_pages_per_seq (", kv.max_pages_per_seq, ")"), n);
    for (int j = kv.page_indptr[b]; j < kv.page_indptr[b + 1]; ++j) {
      int p = kv.page_indices[j];
      UNIQUE_CHECK_ARG(p >= 0 && p < kv.num_pages, detail::concat("page_indices[", j, "]"),
                detail::concat("a page id in [0, ", kv.num_pages, ")"), p);
    }
  }
}

}  // namespace unique

#include "unique/page_stats.h"

#include "attention/cuda_backend.h"
#include "attention/validate.h"
#include "cpu/cpu_kernels.h"
#include "unique/error.h"
#include "unique/stream.h"

namespace unique {

void append_kv(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
               const int32_t* append_indptr) {
  validate_paged_kv(kv, false);
  UNIQUE_CHECK_ARG(append_indptr != nullptr, "append_indptr", "non-null", "null");
  expect_shape(k_new, "k_new", {-1, kv.num_kv_heads, kv.head_dim});
  expect_shape(v_new, "v_new", {k_new.shape[0], kv.num_kv_heads, kv.head_dim});
  expect_contiguous(k_new, "k_new");
  expect_contiguous(v_new, "v_new");
  expect_device(k_new, "k_new", kv.device);
  expect_device(v_new, "v_new", kv.device);
  UNIQUE_CHECK_ARG((kv.mean == nullptr) == (kv.std == nullptr), "kv.mean/kv.std", "both set or both null",
            "one null");
  UNIQUE_CHECK_ARG((kv.kmin == nullptr) == (kv.kmax == nullptr), "kv.kmin/kv.kmax",
            "both set or both null", "one null");
  if (kv.device == Device::cuda) {
    // append_indptr is on the GPU; each sequence appends at most all of k_new.
    cuda_backend::append_kv(kv, k_new, v_new, append_indptr, static_cast<int>(k_new.shape[0]),
                            cuda_stream());
    return;
  }
  UNIQUE_CHECK_ARG(append_indptr[0] == 0, "append_indptr[0]", 0, append_indptr[0]);
  for (int b = 0; b < kv.batch; ++b) {
    const int n = append_indptr[b + 1] - append_indptr[b];
    UNIQUE_CHECK_ARG(n >= 0 && n <= seq_len(kv, b), detail::concat("tokens appended to sequence ", b),
              detail::concat("0..", seq_len(kv, b), " (its length after the append)"), n);
  }
  UNIQUE_CHECK_ARG(append_indptr[kv.batch] == k_new.shape[0], "append_indptr[batch]",
            detail::concat("k_new rows (", k_new.shape[0], ")"), append_indptr[kv.batch]);
  expect_not_null(k_new, "k_new");
  expect_not_null(v_new, "v_new");
  cpu::append_kv(kv, k_new, v_new, append_indptr);
}

void recompute_page_stats(const PagedKV& kv) {
  validate_paged_kv(kv, false);
  UNIQUE_CHECK_ARG(kv.device == Device::cpu, "kv.device", "cpu (reference recomputation)",
            to_string(kv.device));
  cpu::recompute_page_stats(kv);
}

}  // namespace unique

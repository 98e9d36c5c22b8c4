#include "unique/decode.h"

#include "attention/cuda_backend.h"
#include "attention/validate.h"
#include "cpu/cpu_kernels.h"
#include "unique/error.h"
#include "unique/stream.h"

namespace unique {

void validate_decode_args(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                          const Selection* sel, const TensorView& out, const TensorView& lse) {
  detail::validate_cfg_kv(cfg, kv, false);
  detail::validate_query(q, kv);
  detail::validate_out_lse(q, kv, out, lse);
  if (!sel) return;
  validate_selection(*sel, kv, cfg);
  // Device selections are written by our kernels; a host one may come from the caller.
  if (kv.device == Device::cpu) detail::validate_host_selection(*sel, kv);
}

void paged_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection* sel, const TensorView& out, const TensorView& lse) {
  validate_decode_args(cfg, q, kv, sel, out, lse);
  if (kv.device == Device::cuda)
    cuda_backend::paged_decode(cfg, q, kv, sel, out, lse, max_seq_pages(kv), cuda_stream());
  else
    cpu::paged_decode(cfg, q, kv, sel, out, lse);
}

}  // namespace unique

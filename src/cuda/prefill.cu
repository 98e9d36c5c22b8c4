// CUDA prefill (include/unique/prefill.h). Placeholder until the kernels land.
#include "attention/cuda_backend.h"
#include "unique/error.h"

namespace unique::cuda_backend {

void select_prefill_blocks(const AttentionConfig&, const TensorView&, const PagedKV&, int, int64_t,
                           const BlockSelection&, void*) {
  throw Error("kv.device: expected cpu (the CUDA prefill kernels are not built yet), got cuda");
}
void sparse_prefill(const AttentionConfig&, const TensorView&, const PagedKV&, int, int64_t,
                    const BlockSelection*, const TensorView&, const TensorView&, void*) {
  throw Error("kv.device: expected cpu (the CUDA prefill kernels are not built yet), got cuda");
}

}  // namespace unique::cuda_backend

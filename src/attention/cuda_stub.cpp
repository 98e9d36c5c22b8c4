// Without CUDA, GPU entry points fail with a clear message instead of a link error.
#ifndef UNIQUE_WITH_CUDA
#include "attention/cuda_backend.h"
#include "unique/error.h"

namespace unique::cuda_backend {
namespace {
[[noreturn]] void no_cuda() {
  throw Error("device: expected cpu (this build of unique has no CUDA support), got cuda");
}
}  // namespace
void append_kv(const PagedKV&, const TensorView&, const TensorView&, const int32_t*, int, void*) {
  no_cuda();
}
void score_pages(const AttentionConfig&, const TensorView&, const PagedKV&, const TensorView&,
                 int, void*) {
  no_cuda();
}
void select_pages(const AttentionConfig&, const TensorView&, const PagedKV&, const Selection&,
                  int, void*) {
  no_cuda();
}
void paged_decode(const AttentionConfig&, const TensorView&, const PagedKV&, const Selection*,
                  const TensorView&, const TensorView&, int, void*) {
  no_cuda();
}
void select_prefill_blocks(const AttentionConfig&, const TensorView&, const PagedKV&, int, int64_t,
                           const BlockSelection&, void*) {
  no_cuda();
}
void sparse_prefill(const AttentionConfig&, const TensorView&, const PagedKV&, int, int64_t,
                    const BlockSelection*, const TensorView&, const TensorView&, void*) {
  no_cuda();
}
double measure_copy_gbps(std::size_t, int) { no_cuda(); }
void soft_mask_forward(const AttentionConfig&, const TensorView&, const TensorView&, const TensorView&,
                       const TensorView&, const TensorView&, float*, void*) {
  no_cuda();
}
void soft_mask_backward(const AttentionConfig&, const TensorView&, const TensorView&, const TensorView&,
                        const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                        const TensorView&, const TensorView&, const float*, void*) {
  no_cuda();
}
const char* soft_mask_kernel(int) { return "none"; }
}  // namespace unique::cuda_backend
#endif

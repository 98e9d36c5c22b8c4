// unique::cuda_backend::* (called by the public dispatch after host validation) and the
// shared pieces of the CUDA backend: error reporting, device properties, and the cached
// workspace the plan-less entry points use (grown on demand; use DecodePlan for CUDA
// graphs and for concurrent calls from several host threads).
#include <mutex>
#include <vector>

#include "attention/cuda_backend.h"
#include "cuda/common.cuh"
#include "cuda/grow_buffer.h"
#include "cuda/kernels.h"

namespace unique::cuda {

void throw_cuda(cudaError_t err, const char* call, const char* file, int line) {
  throw RuntimeError(detail::concat("CUDA error in ", call, " (", file, ":", line, "): ",
                                    cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

int num_sms() {
  static std::mutex mu;
  static std::vector<int> cache;
  int dev = 0;
  UNIQUE_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (dev >= static_cast<int>(cache.size())) cache.resize(dev + 1, 0);
  if (cache[dev] == 0) UNIQUE_CUDA_CHECK(cudaDeviceGetAttribute(&cache[dev], cudaDevAttrMultiProcessorCount, dev));
  return cache[dev];
}

namespace {

struct Cached {
  std::mutex mu;
  GrowBuffer agg{.zeroed = true}, raw{.zeroed = true}, part_o{.zeroed = true}, part_lse{.zeroed = true};
};
Cached& cached() {
  static Cached* c = new Cached;  // never freed: outlives static destruction order
  return *c;
}

}  // namespace

}  // namespace unique::cuda

namespace unique::cuda_backend {

using namespace unique::cuda;

void append_kv(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
               const int32_t* append_indptr, int max_new_tokens_per_seq, void* stream) {
  launch_append(kv, k_new, v_new, append_indptr, max_new_tokens_per_seq, static_cast<cudaStream_t>(stream));
}

namespace {
SelectWorkspace select_ws(int batch, int hq, int hk, int max_pages) {
  const SelectSizes s = select_sizes(batch, hq, hk, max_pages);
  Cached& c = cached();
  SelectWorkspace ws;
  ws.agg = static_cast<float*>(c.agg.get(s.agg_floats * sizeof(float)));
  ws.raw = static_cast<float*>(c.raw.get(s.raw_floats * sizeof(float)));
  return ws;
}
}  // namespace

void score_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                 const TensorView& scores, int max_pages, void* stream) {
  std::lock_guard<std::mutex> lock(cached().mu);
  const SelectWorkspace ws = select_ws(kv.batch, static_cast<int>(q.shape[1]), kv.num_kv_heads, max_pages);
  launch_score_select(cfg, q, kv, max_pages, ws, scores.ptr<float>(), static_cast<int>(scores.shape[2]),
                      nullptr, static_cast<cudaStream_t>(stream));
}

void select_pages(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection& out, int max_pages, void* stream) {
  std::lock_guard<std::mutex> lock(cached().mu);
  const SelectWorkspace ws = select_ws(kv.batch, static_cast<int>(q.shape[1]), kv.num_kv_heads, max_pages);
  launch_score_select(cfg, q, kv, max_pages, ws, nullptr, 0, &out, static_cast<cudaStream_t>(stream));
}

void paged_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection* sel, const TensorView& out, const TensorView& lse, int max_pages,
                  void* stream) {
  const int hq = static_cast<int>(q.shape[1]);
  const int max_list = sel ? std::min(sel->max_selected, max_pages) : max_pages;
  const int chunks = decode_chunks(kv.batch, hq, kv.num_kv_heads, kv.page_size, max_list, kv.dtype,
                                         kv.head_dim);
  const size_t floats = decode_floats(kv.batch, hq, kv.head_dim, chunks);
  std::lock_guard<std::mutex> lock(cached().mu);
  Cached& c = cached();
  DecodeWorkspace ws;
  if (floats > 0) {
    ws.part_o = static_cast<float*>(c.part_o.get(floats * sizeof(float)));
    ws.part_lse = static_cast<float*>(c.part_lse.get(floats / kv.head_dim * sizeof(float)));
    ws.capacity_floats = floats;
  }
  launch_decode(cfg, q, kv, sel, out, lse, max_pages, ws, static_cast<cudaStream_t>(stream));
}

double measure_copy_gbps(std::size_t bytes, int reps) {
  void *a = nullptr, *b = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  double best = 0;
  try {
    UNIQUE_CUDA_CHECK(cudaMalloc(&a, bytes));
    UNIQUE_CUDA_CHECK(cudaMalloc(&b, bytes));
    UNIQUE_CUDA_CHECK(cudaMemset(a, 1, bytes));
    UNIQUE_CUDA_CHECK(cudaEventCreate(&e0));
    UNIQUE_CUDA_CHECK(cudaEventCreate(&e1));
    for (int i = 0; i <= reps; ++i) {  // the first copy warms up
      UNIQUE_CUDA_CHECK(cudaEventRecord(e0));
      UNIQUE_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
      UNIQUE_CUDA_CHECK(cudaEventRecord(e1));
      UNIQUE_CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0;
      UNIQUE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      if (i > 0) best = std::max(best, 2.0 * double(bytes) / (ms * 1e6));
    }
  } catch (...) {
    cudaFree(a), cudaFree(b);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    throw;
  }
  cudaFree(a), cudaFree(b);
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  return best;
}

}  // namespace unique::cuda_backend

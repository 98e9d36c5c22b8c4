// Append new K/V tokens into their pages and recompute the statistics of every page they
// touch, in one kernel: one block per (touched page, KV head, sequence). The block writes
// its page's new rows, then (after a barrier, the rows are visible to the whole block)
// recomputes mean/std (two-pass, population) and min/max over the page's stored keys
// exactly as the CPU path does, rounded once to the stats dtype.
#include <algorithm>

#include "attention/cuda_backend.h"
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace unique::cuda {

namespace {

struct AppendParams {
  void* k;
  void* v;
  void* mean;
  void* std;
  void* kmin;
  void* kmax;
  DType stats_dtype;
  const int32_t* indptr;
  const int32_t* indices;
  const int32_t* last_len;
  const int32_t* append_indptr;
  const void* k_new;
  const void* v_new;
  DType new_dtype;
  int Hk, P, D;
};

template <class T>
__global__ void __launch_bounds__(128) append_kernel(const AppendParams p) {
  const int b = blockIdx.z, h = blockIdx.y;
  const int n_pages = p.indptr[b + 1] - p.indptr[b];
  const int64_t len = int64_t(n_pages - 1) * p.P + p.last_len[b];
  const int a0 = p.append_indptr[b];
  const int n_new = p.append_indptr[b + 1] - a0;
  if (n_new <= 0 || n_new > len) return;  // a bad append_indptr writes nothing
  const int64_t first_pos = len - n_new;
  const int64_t j = first_pos / p.P + blockIdx.x;  // logical page of this block
  if (j * p.P >= len) return;
  const int64_t page = p.indices[p.indptr[b] + j];
  const int D = p.D;
  T* K = static_cast<T*>(p.k) + (page * p.Hk + h) * p.P * D;
  T* V = static_cast<T*>(p.v) + (page * p.Hk + h) * p.P * D;
  const int64_t jp = j * p.P;
  const int r0 = static_cast<int>((first_pos > jp ? first_pos : jp) - jp);
  const int tokens = static_cast<int>(len - jp < p.P ? len - jp : p.P);
  for (int i = threadIdx.x; i < (tokens - r0) * D; i += blockDim.x) {
    const int r = r0 + i / D, d = i % D;
    const int64_t src = ((a0 + (j * p.P + r - first_pos)) * p.Hk + h) * D + d;
    K[r * D + d] = from_f<T>(load_any(p.k_new, p.new_dtype, src));
    V[r * D + d] = from_f<T>(load_any(p.v_new, p.new_dtype, src));
  }
  if (!p.mean && !p.kmin) return;
  __syncthreads();
  const int64_t so = (page * p.Hk + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0.0f, lo = INFINITY, hi = -INFINITY;
    for (int t = 0; t < tokens; ++t) {
      const float x = to_f<T>(K[t * D + d]);
      sum += x;
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
    }
    const float mu = sum / tokens;
    float ss = 0.0f;
    for (int t = 0; t < tokens; ++t) {
      const float x = to_f<T>(K[t * D + d]) - mu;
      ss = fmaf(x, x, ss);
    }
    if (p.mean) {
      store_any(p.mean, p.stats_dtype, so + d, mu);
      store_any(p.std, p.stats_dtype, so + d, sqrtf(ss / tokens));
    }
    if (p.kmin) {
      store_any(p.kmin, p.stats_dtype, so + d, lo);
      store_any(p.kmax, p.stats_dtype, so + d, hi);
    }
  }
}

}  // namespace

void launch_append(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
                   const int32_t* append_indptr, int max_new_tokens_per_seq, cudaStream_t stream) {
  if (max_new_tokens_per_seq <= 0 || k_new.shape[0] == 0) return;
  AppendParams p{};
  p.k = kv.k;
  p.v = kv.v;
  p.mean = kv.mean;
  p.std = kv.std;
  p.kmin = kv.kmin;
  p.kmax = kv.kmax;
  p.stats_dtype = kv.stats_dtype;
  p.indptr = kv.page_indptr;
  p.indices = kv.page_indices;
  p.last_len = kv.last_page_len;
  p.append_indptr = append_indptr;
  p.k_new = k_new.data;
  p.v_new = v_new.data;
  p.new_dtype = k_new.dtype;
  p.Hk = kv.num_kv_heads;
  p.P = kv.page_size;
  p.D = kv.head_dim;
  if (v_new.dtype != k_new.dtype) throw_arg("v_new.dtype", to_string(k_new.dtype), to_string(v_new.dtype));
  // New tokens of one sequence span at most this many pages.
  const int touched = (max_new_tokens_per_seq - 1) / kv.page_size + 2;
  const dim3 grid(touched, kv.num_kv_heads, kv.batch);
  dispatch_dtype(kv.dtype, [&](auto t) {
    append_kernel<decltype(t)><<<grid, 128, 0, stream>>>(p);
  });
  UNIQUE_CUDA_LAUNCH("append_kernel");
}

}  // namespace unique::cuda

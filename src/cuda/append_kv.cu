// Append new K/V tokens into their pages and recompute the statistics of every page they
// touch, in one kernel: one block per (touched page, KV head, sequence). The block writes
// its page's new rows, then (after a barrier, the rows are visible to the whole block)
// recomputes mean/std (two-pass, population) and min/max over the page's stored keys
// exactly as the CPU path does, rounded once to the stats dtype.
// fp8 (e4m3) statistics: every column is computed in double (column_stats<double>, as the
// CPU computes them for fp8), rounded to fp32, kept in shared memory; one block-wide max per statistics pair
// gives the pair's power-of-two scale, and the codes are cvt.rn.satfinite.e4m3: the same
// codes and scales as the CPU append and recompute_page_stats, bit for bit.
#include <cuda_fp8.h>

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
  float* stats_scale;
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

constexpr int kAppendThreads = 128;
constexpr int kMaxHeadDim = 512;

// The statistics of column d over a page's `tokens` stored keys K (visible to the block):
// v = {mean, population std (two-pass), min, max}, accumulated in Acc: float, or double for
// fp8 statistics as the CPU computes them (page_stats_cpu.cpp; explicit fma in both).
template <class Acc, class T>
__device__ void column_stats(const T* K, int tokens, int D, int d, float (&v)[4]) {
  Acc sum = 0, lo = INFINITY, hi = -INFINITY;
  for (int t = 0; t < tokens; ++t) {
    const Acc x = to_f<T>(K[t * D + d]);
    sum += x;
    lo = fmin(lo, x);
    hi = fmax(hi, x);
  }
  const Acc mu = sum / tokens;
  Acc ss = 0;
  for (int t = 0; t < tokens; ++t) {
    const Acc x = Acc(to_f<T>(K[t * D + d])) - mu;
    ss = fma(x, x, ss);
  }
  v[0] = float(mu);
  v[1] = float(sqrt(ss / tokens));
  v[2] = float(lo);
  v[3] = float(hi);
}

// fp8 statistics of one page-head: columns in double, one block-wide max per statistics
// pair for its power-of-two scale, then the codes.
template <class T>
__device__ void fp8_page_stats(const AppendParams& p, const T* K, int tokens, int64_t so, int64_t sco) {
  __shared__ float rows[4][kMaxHeadDim];
  __shared__ float warp_max[2][kAppendThreads / 32];
  const int D = p.D;
  float am[2] = {0.0f, 0.0f};
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float v[4];
    column_stats<double>(K, tokens, D, d, v);
#pragma unroll
    for (int i = 0; i < 4; ++i) rows[i][d] = v[i];
    am[0] = fmaxf(am[0], fmaxf(fabsf(v[0]), fabsf(v[1])));
    am[1] = fmaxf(am[1], fmaxf(fabsf(v[2]), fabsf(v[3])));
  }
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    for (int o = 16; o > 0; o >>= 1) am[w] = fmaxf(am[w], __shfl_xor_sync(0xffffffffu, am[w], o));
    if ((threadIdx.x & 31) == 0) warp_max[w][threadIdx.x >> 5] = am[w];
  }
  __syncthreads();
  void* dst[4] = {p.mean, p.std, p.kmin, p.kmax};
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    if (!dst[2 * w]) continue;
    float amax = 0.0f;
    for (int i = 0; i < int(blockDim.x >> 5); ++i) amax = fmaxf(amax, warp_max[w][i]);
    const int e = e4m3_scale_exp(amax);
    const float inv = pow2f(-e);
    if (threadIdx.x == 0) p.stats_scale[sco + w] = pow2f(e);
    for (int d = threadIdx.x; d < D; d += blockDim.x)
      for (int i = 2 * w; i < 2 * w + 2; ++i)
        static_cast<uint8_t*>(dst[i])[so + d] =
            __nv_cvt_float_to_fp8(rows[i][d] * inv, __NV_SATFINITE, __NV_E4M3);
  }
}

template <class T>
__global__ void __launch_bounds__(kAppendThreads) append_kernel(const AppendParams p) {
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
  if (p.stats_dtype == DType::e4m3) {
    fp8_page_stats(p, K, tokens, so, (page * p.Hk + h) * 2);
    return;
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float v[4];
    column_stats<float>(K, tokens, D, d, v);
    if (p.mean) {
      store_any(p.mean, p.stats_dtype, so + d, v[0]);
      store_any(p.std, p.stats_dtype, so + d, v[1]);
    }
    if (p.kmin) {
      store_any(p.kmin, p.stats_dtype, so + d, v[2]);
      store_any(p.kmax, p.stats_dtype, so + d, v[3]);
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
  p.stats_scale = kv.stats_scale;
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
    append_kernel<decltype(t)><<<grid, kAppendThreads, 0, stream>>>(p);
  });
  UNIQUE_CUDA_LAUNCH("append_kernel");
}

}  // namespace unique::cuda

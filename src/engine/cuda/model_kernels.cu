// The engine's non-attention kernels (model_kernels.h). Memory-bound elementwise work next
// to the GEMMs: one pass over each row, fp32 math.
#include "engine/cuda/model_kernels.h"

#include "cuda/common.cuh"

namespace unique::engine::cuda {

namespace uc = ::unique::cuda;

namespace {

// Sum over the block (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float x) {
  __shared__ float part[32];
  x = uc::warp_sum(x);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[w] = x;
  __syncthreads();
  x = lane < nw ? part[lane] : 0.f;
  return uc::warp_sum(x);
}

int threads_for(int n) { return std::min(1024, std::max(32, (n + 31) / 32 * 32)); }

__global__ void embed_kernel(const void* table, DType dt, const int32_t* tokens, int hidden, float* x) {
  const int r = blockIdx.x;
  const int64_t src = int64_t(tokens[r]) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) x[int64_t(r) * hidden + i] = uc::load_any(table, dt, src + i);
}

__global__ void rmsnorm_kernel(const float* x, const int32_t* rows, int hidden, const float* w, float eps, void* out,
                               DType dt) {
  const int r = blockIdx.x;
  const float* xr = x + int64_t(rows ? rows[r] : r) * hidden;
  float ss = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss);
  const float inv = 1.0f / sqrtf(ss / float(hidden) + eps);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) uc::store_any(out, dt, int64_t(r) * hidden + i, xr[i] * inv * w[i]);
}

// Block (row, head); thread i handles the rotate-half pair (i, i + D/2).
__global__ void qkv_post_kernel(const QkvPostArgs a) {
  const int r = blockIdx.x, hh = blockIdx.y, half = a.D / 2, i = threadIdx.x;
  const int H = a.Hq + 2 * a.Hk;
  const bool is_q = hh < a.Hq, is_k = !is_q && hh < a.Hq + a.Hk;
  const int col = hh * a.D;  // column of this head in the q | k | v row
  const float* src = a.qkv + int64_t(r) * H * a.D + col;
  float x0 = 0.f, x1 = 0.f;
  if (i < half) {
    x0 = src[i];
    x1 = src[i + half];
    if (a.bias) x0 += a.bias[col + i], x1 += a.bias[col + i + half];
  }
  const float* norm = is_q ? a.q_norm : is_k ? a.k_norm : nullptr;
  if (norm) {  // uniform over the block
    const float ss = block_sum(x0 * x0 + x1 * x1);
    const float inv = 1.0f / sqrtf(ss / float(a.D) + a.eps);
    if (i < half) x0 = x0 * inv * norm[i], x1 = x1 * inv * norm[i + half];
  }
  if (i >= half) return;
  float* dst;
  if (is_q) {
    dst = a.q + (int64_t(r) * a.Hq + hh) * a.D;
  } else if (is_k) {
    dst = a.k + (int64_t(r) * a.Hk + (hh - a.Hq)) * a.D;
  } else {
    dst = a.v + (int64_t(r) * a.Hk + (hh - a.Hq - a.Hk)) * a.D;
    dst[i] = x0;
    dst[i + half] = x1;
    return;
  }
  const float ang = float(a.pos[r]) * a.inv_freq[i];
  const float c = float(cos(double(ang))), s = float(sin(double(ang)));
  dst[i] = x0 * c - x1 * s;
  dst[i + half] = x1 * c + x0 * s;
}

__global__ void silu_mul_kernel(const float* gu, int inter, void* out, DType dt) {
  const int r = blockIdx.y;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= inter) return;
  const float g = gu[int64_t(r) * 2 * inter + i], u = gu[int64_t(r) * 2 * inter + inter + i];
  uc::store_any(out, dt, int64_t(r) * inter + i, g / (1.0f + expf(-g)) * u);
}

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27; x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void synthetic_kv_kernel(uint64_t seed, int64_t first, int64_t n, int Hk, int D, float* k, float* v) {
  const int64_t total = n * Hk * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t x = mix64((seed + 1) * 0x9E3779B97F4A7C15ull ^ uint64_t(first * Hk * D + i));
    const float r = float(x >> 40) * (1.0f / 16777216.0f) - 0.5f;
    k[i] = 3.4f * r + 0.5f * float((i % D) % 7) - 1.5f;
    v[i] = 3.4f * r;
  }
}

__global__ void copy_rows_kernel(uint32_t* base, int64_t row_words, const int32_t* src, const int32_t* dst) {
  const uint32_t* s = base + int64_t(src[blockIdx.x]) * row_words;
  uint32_t* d = base + int64_t(dst[blockIdx.x]) * row_words;
  for (int64_t i = threadIdx.x; i < row_words; i += blockDim.x) d[i] = s[i];
}

}  // namespace

void embed(const void* table, DType dt, const int32_t* tokens, int rows, int hidden, float* x, cudaStream_t stream) {
  if (rows == 0) return;
  embed_kernel<<<rows, threads_for(std::min(hidden, 256)), 0, stream>>>(table, dt, tokens, hidden, x);
  UNIQUE_CUDA_LAUNCH("embed_kernel");
}

void rmsnorm(const float* x, const int32_t* rows, int n, int hidden, const float* w, float eps, void* out, DType dt,
             cudaStream_t stream) {
  if (n == 0) return;
  rmsnorm_kernel<<<n, threads_for(std::min(hidden, 512)), 0, stream>>>(x, rows, hidden, w, eps, out, dt);
  UNIQUE_CUDA_LAUNCH("rmsnorm_kernel");
}

void qkv_post(const QkvPostArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return;
  const dim3 grid(a.rows, a.Hq + 2 * a.Hk);
  qkv_post_kernel<<<grid, threads_for(a.D / 2), 0, stream>>>(a);
  UNIQUE_CUDA_LAUNCH("qkv_post_kernel");
}

void silu_mul(const float* gu, int rows, int inter, void* out, DType dt, cudaStream_t stream) {
  if (rows == 0) return;
  const dim3 grid((inter + 255) / 256, rows);
  silu_mul_kernel<<<grid, 256, 0, stream>>>(gu, inter, out, dt);
  UNIQUE_CUDA_LAUNCH("silu_mul_kernel");
}

void synthetic_kv(uint64_t seed, int64_t first_token, int64_t n, int Hk, int D, float* k, float* v,
                  cudaStream_t stream) {
  if (n == 0) return;
  const int64_t total = n * Hk * D;
  const int blocks = static_cast<int>(std::min<int64_t>((total + 255) / 256, 4096));
  synthetic_kv_kernel<<<blocks, 256, 0, stream>>>(seed, first_token, n, Hk, D, k, v);
  UNIQUE_CUDA_LAUNCH("synthetic_kv_kernel");
}

void copy_rows(void* base, int64_t row_bytes, const int32_t* src_rows, const int32_t* dst_rows, int n,
               cudaStream_t stream) {
  if (n == 0) return;
  copy_rows_kernel<<<n, 256, 0, stream>>>(static_cast<uint32_t*>(base), row_bytes / 4, src_rows, dst_rows);
  UNIQUE_CUDA_LAUNCH("copy_rows_kernel");
}

}  // namespace unique::engine::cuda

// Internal: the CUDA kernels of the engine's forward that are not attention (src/engine/cuda).
// Activations between GEMMs: the residual stream x and GEMM outputs are fp32; GEMM inputs
// (normed rows, SwiGLU output, attention output) are in the weights' dtype `dt`, as cuBLAS
// takes both operands in one type. All launch on `stream` and never synchronise.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "unique/dtype.h"

namespace unique::engine::cuda {

// x[r, :] = table[tokens[r], :] (table [vocab, hidden] in dt) as fp32.
void embed(const void* table, DType dt, const int32_t* tokens, int rows, int hidden, float* x, cudaStream_t stream);

// out[i, :] = x[src, :] / sqrt(mean(x[src, :]^2) + eps) * w, src = rows ? rows[i] : i;
// out [n, hidden] in dt.
void rmsnorm(const float* x, const int32_t* rows, int n, int hidden, const float* w, float eps, void* out, DType dt,
             cudaStream_t stream);

// The fused step between the QKV GEMM and attention, one block per (row, head):
// bias add, Qwen3 q/k RMSNorm over head_dim, RoPE (rotate-half, the angle pos * inv_freq
// rounded to fp32 and its cos/sin taken in double as the CPU path and transformers do).
struct QkvPostArgs {
  const float* qkv = nullptr;   // [rows, (Hq + 2 Hk) D] GEMM output: q | k | v
  const float* bias = nullptr;  // [(Hq + 2 Hk) D] or null
  const float* q_norm = nullptr;  // [D] or null (then k_norm is null too)
  const float* k_norm = nullptr;
  const int32_t* pos = nullptr;   // [rows] absolute positions
  const float* inv_freq = nullptr;  // [D / 2]
  float eps = 1e-6f;
  int rows = 0, Hq = 0, Hk = 0, D = 0;
  float* q = nullptr;      // [rows, Hq, D]
  float* k = nullptr;      // [rows, Hk, D]
  float* v = nullptr;      // [rows, Hk, D]
};
void qkv_post(const QkvPostArgs& a, cudaStream_t stream);

// out[r, i] = silu(gu[r, i]) * gu[r, I + i]; gu [rows, 2 I] fp32 (gate | up), out [rows, I] in dt.
void silu_mul(const float* gu, int rows, int inter, void* out, DType dt, cudaStream_t stream);

// Synthetic keys/values for speed runs (the CPU path's distribution: uniform, keys with a
// per-channel offset): k, v [n, Hk, D] fp32.
void synthetic_kv(uint64_t seed, int64_t first_token, int64_t n, int Hk, int D, float* k, float* v,
                  cudaStream_t stream);

// For i < n: copy the row src_rows[i] of `base` over the row dst_rows[i] (rows of row_bytes,
// a multiple of 4). Forks a sequence's pages.
void copy_rows(void* base, int64_t row_bytes, const int32_t* src_rows, const int32_t* dst_rows, int n,
               cudaStream_t stream);

}  // namespace unique::engine::cuda

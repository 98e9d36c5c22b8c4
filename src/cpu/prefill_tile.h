// Internal: pieces shared by the fast CPU prefill kernels (prefill_select_fast.cpp,
// prefill_attention_fast.cpp): a small register-tiled fp32 GEMM, typed query-row loading
// and the geometry of a chunk.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cpu/vec.h"
#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/prefill.h"
#include "unique/tensor.h"

namespace unique::cpu {

// x in every lane. (splat() is 0 + x, which the compiler may not fold: -0 + 0 = +0.)
inline VecF bcast(float x) { return VecF{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

// C[RT x NV*kW] += A[RT x depth] * B[depth x NV*kW]. B rows are contiguous vectors and A
// entries are broadcast, so no horizontal sums: RT*NV accumulators stay in registers
// (4x4 = 16 of AVX-512's 32) and every B load feeds RT FMAs. Not inlined: inlined into
// a large caller, the compiler spilled b[] to the stack inside the k loop (-40%).
// ACC = false overwrites C instead (no zero fill of C first).
template <int RT, int NV, bool ACC>
__attribute__((noinline)) void mm_tile(const float* __restrict A, int64_t lda, const float* __restrict B, int64_t ldb,
                                       float* __restrict C, int64_t ldc, int depth) {
  VecF acc[RT][NV];
  for (int r = 0; r < RT; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = ACC ? load(C + r * ldc + v * kW) : VecF{};
  for (int k = 0; k < depth; ++k) {
    VecF b[NV];
    for (int v = 0; v < NV; ++v) {
      b[v] = load(B + k * ldb + v * kW);
#if defined(__AVX512F__)
      // Keep b in registers: folded into every FMA as a memory operand it is loaded RT
      // times, and the loads, not the FMAs, then bound the loop. (Only where one register
      // holds a VecF; elsewhere the constraint is impossible.)
      __asm__("" : "+v"(b[v]));
#endif
    }
    for (int r = 0; r < RT; ++r) {
      const VecF a = bcast(A[r * lda + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int v = 0; v < NV; ++v) store(C + r * ldc + v * kW, acc[r][v]);
}

template <int RT, bool ACC>
inline void mm_cols(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int depth,
                    int nv) {
  switch (nv) {
    case 1: mm_tile<RT, 1, ACC>(A, lda, B, ldb, C, ldc, depth); break;
    case 2: mm_tile<RT, 2, ACC>(A, lda, B, ldb, C, ldc, depth); break;
    case 3: mm_tile<RT, 3, ACC>(A, lda, B, ldb, C, ldc, depth); break;
    default: mm_tile<RT, 4, ACC>(A, lda, B, ldb, C, ldc, depth); break;
  }
}

// C[rows x cols] (+)= A[rows x depth] * B[depth x cols], row-major, cols a multiple of kW;
// accumulate = false overwrites C. Column panels outside, row tiles inside: the B panel
// (depth x 64 floats) is reused by every row tile while it is in L1/L2.
template <bool ACC>
inline void mm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int rows, int cols,
               int depth) {
  const int nv = cols / kW;
  for (int v0 = 0; v0 < nv; v0 += 4) {
    const int w = std::min(4, nv - v0);
    const float* Bp = B + v0 * kW;
    float* Cp = C + v0 * kW;
    int r = 0;
    for (; r + 4 <= rows; r += 4) mm_cols<4, ACC>(A + r * lda, lda, Bp, ldb, Cp + r * ldc, ldc, depth, w);
    for (; r < rows; ++r) mm_cols<1, ACC>(A + r * lda, lda, Bp, ldb, Cp + r * ldc, ldc, depth, w);
  }
}
inline void mm_set(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int rows,
                   int cols, int depth) {
  mm<false>(A, lda, B, ldb, C, ldc, rows, cols, depth);
}
inline void mm_acc(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int rows,
                   int cols, int depth) {
  mm<true>(A, lda, B, ldb, C, ldc, rows, cols, depth);
}

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

// Chunk rows [r0, r1) (0-based in q) of query heads [hq0, hq0 + n) as fp32 times scale,
// head-major: out[(i * (r1 - r0) + r) * D + d]. One dtype dispatch per call.
inline void load_query_rows(const TensorView& q, int64_t r0, int64_t r1, int hq0, int n, int D, float scale,
                            float* out) {
  dispatch_dtype(q.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* base = static_cast<const T*>(q.data);
    const int64_t rows = r1 - r0;
    for (int i = 0; i < n; ++i)
      for (int64_t r = 0; r < rows; ++r) {
        const T* src = base + (r0 + r) * q.stride[0] + int64_t(hq0 + i) * q.stride[1];
        float* dst = out + (i * rows + r) * D;
        for (int d = 0; d < D; ++d) dst[d] = to_float(src[d * q.stride[2]]) * scale;
      }
  });
}

// The chunk's geometry (see include/unique/prefill.h): queries are positions [q0, kv_len).
struct ChunkGeom {
  int64_t q0 = 0, kv_len = 0;
  int B = 0, pool = 0, H = 0, group = 0, D = 0;
  PrefillBlocks pb;
  ChunkGeom(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int64_t len)
      : q0(len - q.shape[0]), kv_len(len), B(cfg.prefill_block), pool(cfg.pool), H(kv.num_kv_heads),
        group(static_cast<int>(q.shape[1]) / kv.num_kv_heads), D(kv.head_dim),
        pb(prefill_blocks(cfg, q.shape[0], len)) {}
  // Absolute query positions of the chunk in query block i (0-based in the chunk).
  int64_t q_begin(int i) const { return std::max<int64_t>(int64_t(pb.first_q_block + i) * B, q0); }
  int64_t q_end(int i) const { return std::min<int64_t>(int64_t(pb.first_q_block + i + 1) * B, kv_len); }
  // Query heads per task: the whole GQA group, unless (KV heads x query blocks) tasks
  // would leave threads idle; then the group is split.
  int heads_per_task(int threads) const {
    const int64_t tasks = int64_t(H) * pb.num_q_blocks;
    const int64_t want = 2 * int64_t(threads);
    if (tasks >= want) return group;
    const int64_t splits = std::min<int64_t>(group, (want + tasks - 1) / tasks);
    return static_cast<int>((group + splits - 1) / splits);
  }
};

}  // namespace unique::cpu

// Tensor-core building blocks of the prefill kernels (sm_80+ instructions, run on sm_90a):
// mma.sync m16n8k16 with fp32 accumulators, ldmatrix from XOR-swizzled shared-memory tiles,
// cp.async 16-byte copies with zero fill. Fragment layouts are PTX's for m16n8k16
// (g = lane / 4, t = lane % 4):
//   A 16x16 row-major: a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B 16x8  [k][n]:    b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)
//   C 16x8 fp32:       c0,c1 (g, 2t..2t+1)  c2,c3 (g+8, 2t..2t+1)
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "unique/dtype.h"

namespace unique::cuda {

// 16-byte chunk `chunk` of row `row` in a tile whose rows hold `chunks` 16-byte chunks:
// the chunk index is XORed with the row's low 3 bits, so the 8 rows an ldmatrix reads at
// one column land in 8 different bank groups.
__device__ __forceinline__ int swz(int row, int chunk, int chunks) {
  return row * chunks + (chunk ^ (row & 7));
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; src_bytes < 16 zero-fills the rest (0 = all).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(src_bytes));
}
// 4 or 8 bytes global -> shared (cp.async.ca: the sizes below 16 go through L1); src_bytes 0
// zero-fills.
template <int N>
__device__ __forceinline__ void cp_async_small(void* dst, const void* src, int src_bytes) {
  static_assert(N == 4 || N == 8);
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(smem_addr(dst)), "l"(src), "n"(N),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// c += a * b for 16-bit T (bf16 or f16 storage types of unique/dtype.h).
template <class T>
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, const uint32_t* b) {
  if constexpr (std::is_same_v<T, bf16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// Two floats as a packed pair of T (the low half is x).
template <class T>
__device__ __forceinline__ uint32_t pack2(float x, float y) {
  if constexpr (std::is_same_v<T, bf16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(x, y);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

// The A fragment of one k16 step from the C layout of the two n8 tiles that hold its columns
// (16 kk.. and 16 kk + 8..): how P and dS feed the next product without leaving registers.
template <class T>
__device__ __forceinline__ void c_to_a_fragment(const float (&c0)[4], const float (&c1)[4], uint32_t (&a)[4]) {
  a[0] = pack2<T>(c0[0], c0[1]);
  a[1] = pack2<T>(c0[2], c0[3]);
  a[2] = pack2<T>(c1[0], c1[1]);
  a[3] = pack2<T>(c1[2], c1[3]);
}

// Accumulator rows in the C layout above: a thread holds two rows (g, g + 8) of each n8
// tile. Multiplies them by their own factors (the online-softmax rescale).
template <int NT>
__device__ __forceinline__ void scale_rows(float (&c)[NT][4], const float (&f)[2]) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    c[nt][0] *= f[0];
    c[nt][1] *= f[0];
    c[nt][2] *= f[1];
    c[nt][3] *= f[1];
  }
}
// Sums each of a thread's two row values over the 4 lanes (t = lane % 4) that share the row.
__device__ __forceinline__ void quad_sum(float (&x)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    x[r] += __shfl_xor_sync(0xffffffffu, x[r], 1);
    x[r] += __shfl_xor_sync(0xffffffffu, x[r], 2);
  }
}

// A warp's A fragments of 16 query rows [row0, row0 + 16) of a swizzled [rows][D] tile.
template <class T, int D>
__device__ __forceinline__ void load_q_fragments(const T* q_s, int row0, int lane, uint32_t (&qf)[D / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(qf[kk], q_s + swz(row0 + lane % 16, kk * 2 + lane / 16, D / 8) * 8);
}

// s += Q K^T for a warp's 16 query rows (fragments qf) against the NK keys of a swizzled
// [NK][D] shared-memory tile: s[n][.] holds keys 8n..8n+7 in the C layout above.
template <class T, int D, int NK>
__device__ __forceinline__ void qk_tile(const uint32_t (&qf)[D / 16][4], const T* k_s, int lane, float (&s)[NK / 8][4]) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
    for (int n2 = 0; n2 < NK / 16; ++n2) {
      uint32_t b[4];
      const int m8 = lane / 8;
      ldmatrix_x4(b, k_s + swz(n2 * 16 + (m8 / 2) * 8 + lane % 8, kk * 2 + m8 % 2, D / 8) * 8);
      mma16816<T>(s[2 * n2], qf[kk], b);
      mma16816<T>(s[2 * n2 + 1], qf[kk], b + 2);
    }
}

// o += P V for a warp's 16 rows: P as the A fragment pa of keys [16 kk, 16 kk + 16) of a
// swizzled [keys][D] shared-memory tile v_s; o[n][.] holds channels 8n..8n+7 (C layout).
template <class T, int D>
__device__ __forceinline__ void pv_tile(const uint32_t (&pa)[4], const T* v_s, int kk, int lane, float (&o)[D / 8][4]) {
#pragma unroll
  for (int n2 = 0; n2 < D / 16; ++n2) {
    uint32_t b[4];
    const int m8 = lane / 8;
    ldmatrix_x4_trans(b, v_s + swz(kk * 16 + (m8 % 2) * 8 + lane % 8, n2 * 2 + m8 / 2, D / 8) * 8);
    mma16816<T>(o[2 * n2], pa, b);
    mma16816<T>(o[2 * n2 + 1], pa, b + 2);
  }
}

}  // namespace unique::cuda

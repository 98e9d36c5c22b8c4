// Internal: device helpers shared by the soft-mask attention kernels: the candidate-page
// rule, the stable log-sigmoid, the split page statistics' tile load, and the per-(query
// row, page) log-weight of a key tile recomputed from q, mu, sigma and tau (cheaper than
// storing a [rows x pages] bias).
#pragma once
#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "cuda/soft_mask_kernels.h"

namespace unique::cuda::soft_mask {

constexpr int kTile = 64;     // query rows and keys per tile
constexpr int kThreads = 128; // 4 warps of 16 rows (forward) or 16 keys (backward)
constexpr int kMaxPagesPerTile = kTile / 16;

// log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): never log(0), exact 0 at +inf. The
// log1p term as __logf(1 + e), e in (0, 1]: absolute error ~1e-7 (where e < 2^-24 it is
// 0 instead of e), far below what a logit or the bias gradient resolves, and ~10x cheaper
// than log1pf (it runs for every (row, page) of every tile in both passes).
__device__ __forceinline__ float log_sigmoid(float x) { return fminf(x, 0.0f) - __logf(1.0f + __expf(-fabsf(x))); }

// Candidate pages of query t: sink <= j <= t / P - max(recent, 1).
__device__ __forceinline__ int last_candidate(const SoftMaskArgs& a, int64_t t) {
  return static_cast<int>(t >> a.pshift) - max(a.recent, 1);
}

// Element offset of row t, head h of a [B, L, H, D] view.
__device__ __forceinline__ int64_t row_off(const Strides4& s, int b, int64_t t, int h) {
  return b * s.b + t * s.t + h * s.h;
}

// cp.async of the split statistics (SoftMaskArgs::hl) of the 64-key tile's pages into
// shared memory ([kMaxPagesPerTile][D / 2] uint4, pages past the complete ones as zeros);
// threads [tid0, tid0 + nthreads) take part (the caller commits the group).
template <int D>
__device__ __forceinline__ void load_tile_hl_async(const SoftMaskArgs& a, int b, int h, int key_tile, uint4* hl_s,
                                                   int tid0, int nthreads) {
  const int npg = a.npg;
  for (int idx = tid0; idx < npg * D / 2; idx += nthreads) {
    const int j = key_tile * npg + idx / (D / 2);
    const bool in = j < a.NC;
    const int64_t o = in ? ((int64_t(b) * a.Hkv + h) * a.NC + key_tile * npg) * (D / 2) + idx : 0;
    cp_async16(hl_s + idx, a.hl + o, in ? 16 : 0);
  }
}

// p[0] += x, p[1] += y (p 8-byte aligned): one vector atomic on sm_90.
__device__ __forceinline__ void atomic_add2(float* p, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(x, y));
#else
  atomicAdd(p, x);
  atomicAdd(p + 1, y);
#endif
}

// The end of both forward kernels: a thread's two rows (g, g + 8 of its warp's 16) reduced
// over the 4 lanes that share them, normalised and written with their log-sum-exp (natural
// log; m is in log2 units); rows past L are not written.
template <int D>
__device__ __forceinline__ void write_rows(const SoftMaskArgs& a, int b, int hq, int t4, const int64_t (&row)[2],
                                           const float (&o)[D / 8][4], const float (&m)[2], float (&l)[2]) {
  quad_sum(l);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t t = row[r];
    if (t >= a.L) continue;
    const float inv = 1.0f / l[r];
    const int64_t base = row_off(a.os, b, t, hq);
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      const int d = nt * 8 + 2 * t4;
      store_any(a.out, a.o_dtype, base + d, o[nt][2 * r] * inv);
      store_any(a.out, a.o_dtype, base + d + 1, o[nt][2 * r + 1] * inv);
    }
    if (t4 == 0) a.lse[b * a.ls.b + t * a.ls.t + hq * a.ls.h] = (m[r] + log2f(l[r])) * kLn2;
  }
}

// x ~= hi + lo as two packed pairs of T (hi = round(x), lo = round(x - hi)): about twice
// T's mantissa, so a tensor-core product with an exact T operand is good to ~1e-5.
template <class T>
__device__ __forceinline__ void split2(float x, float y, uint32_t& hi, uint32_t& lo) {
  hi = pack2<T>(x, y);
  float hx, hy;
  if constexpr (std::is_same_v<T, bf16>) {
    hx = __uint_as_float(hi << 16);
    hy = __uint_as_float(hi & 0xffff0000u);
  } else {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&hi));
    hx = f.x;
    hy = f.y;
  }
  lo = pack2<T>(x - hx, y - hy);
}

// Stores the page bias log m of one warp's 16 query rows [r0, r0 + 16) of the block's tile
// (rows row0 + r0 + ...) and the tile's pages into bias_s ([64 rows][4]), from the page
// scores' two halves in the m16n8 C layout: columns 0-3 the products with the hi halves of
// pages 0-3, 4-7 with their lo halves (dot = q . mu, off = |q| . sigma); 0 for rows without
// a mask and pages that are not candidates. Lanes t4 and t4 ^ 2 hold the hi and lo sums of
// the same pages. The warp writes only its own rows.
__device__ __forceinline__ void store_log_weights(const SoftMaskArgs& a, float (&dot)[4], float (&off)[4],
                                                  const float* tau_s, int64_t row0, int r0, int key_tile, int lane,
                                                  float* bias_s) {
  const int g = lane / 4, t4 = lane % 4, npg = a.npg;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    dot[e] += __shfl_xor_sync(0xffffffffu, dot[e], 2);
    off[e] += __shfl_xor_sync(0xffffffffu, off[e], 2);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int pi = 2 * t4 + (e & 1);
    if (t4 >= 2 || pi >= npg) continue;
    const int rl = r0 + g + 8 * (e / 2);
    const int64_t t = row0 + rl;
    const int j = key_tile * npg + pi;
    const float tau = tau_s[rl];
    float lw = 0.0f;
    if (t < a.L && tau != -INFINITY && j >= a.sink && j <= last_candidate(a, t)) {
      const float s = a.scale * (dot[e] + a.alpha * off[e]);
      lw = log_sigmoid((s - tau) * a.inv_T);
    }
    bias_s[rl * kMaxPagesPerTile + pi] = lw;
  }
}

// The page bias of one warp's 16 query rows (store_log_weights) with the page scores
// [q, |q|] x [mu, sigma]^T on mma.sync (qfrag(kk, f) gives the rows' A fragment of channels
// [16 kk, 16 kk + 16); |q| by clearing the sign bits of the packed pairs; mu/sigma as their
// hi + lo split from hl_s, [4 pages][D / 2] uint4; fp32 accumulation), 2 mma per 16 channels.
template <class T, int D, class QFrag>
__device__ __forceinline__ void warp_log_weights(const SoftMaskArgs& a, QFrag&& qfrag, const uint4* hl_s,
                                                 const float* tau_s, int64_t row0, int r0, int key_tile, int lane,
                                                 float* bias_s) {
  // B columns 0..3: hi halves of pages 0..3, columns 4..7: lo halves of the same pages (a
  // tile has at most 4 pages), so one mma per 16 channels takes both.
  const int g = lane / 4, t4 = lane % 4, pg = g & 3;
  const bool has = pg < a.npg, lo = g >= 4;
  float dot[4] = {}, off[4] = {};
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint4 w0 = make_uint4(0, 0, 0, 0), w1 = w0;
    if (has) {
      w0 = hl_s[pg * (D / 2) + kk * 8 + t4];
      w1 = hl_s[pg * (D / 2) + kk * 8 + 4 + t4];
    }
    const uint32_t bm[2] = {lo ? w0.y : w0.x, lo ? w1.y : w1.x};
    const uint32_t bs[2] = {lo ? w0.w : w0.z, lo ? w1.w : w1.z};
    uint32_t qk[4];
    qfrag(kk, qk);
    const uint32_t qa[4] = {qk[0] & 0x7fff7fffu, qk[1] & 0x7fff7fffu, qk[2] & 0x7fff7fffu, qk[3] & 0x7fff7fffu};
    mma16816<T>(dot, qk, bm);
    mma16816<T>(off, qa, bs);
  }
  store_log_weights(a, dot, off, tau_s, row0, r0, key_tile, lane, bias_s);
}

}  // namespace unique::cuda::soft_mask

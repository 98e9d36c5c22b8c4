// Internal: device helpers shared by the soft-mask attention kernels: the candidate-page
// rule, the stable log-sigmoid, and the per-(query row, page) log-weight of a key tile
// recomputed from q, mu, sigma and tau (cheaper than storing a [rows x pages] bias).
#pragma once
#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "cuda/soft_mask_kernels.h"

namespace unique::cuda::soft_mask {

constexpr int kTile = 64;     // query rows and keys per tile
constexpr int kThreads = 128; // 4 warps of 16 rows (forward) or 16 keys (backward)
constexpr int kMaxPagesPerTile = kTile / 16;

// log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): never log(0), exact 0 at +inf.
__device__ __forceinline__ float log_sigmoid(float x) { return fminf(x, 0.0f) - log1pf(__expf(-fabsf(x))); }

// Candidate pages of query t: sink <= j <= t / P - max(recent, 1).
__device__ __forceinline__ int last_candidate(const SoftMaskArgs& a, int64_t t) {
  return static_cast<int>(t / a.P) - max(a.recent, 1);
}

// Element offset of row t, head h of a [B, L, H, D] view.
__device__ __forceinline__ int64_t row_off(const Strides4& s, int b, int64_t t, int h) {
  return b * s.b + t * s.t + h * s.h;
}

// Loads the mu/sigma rows of the key tile's pages (fp32 [kMaxPagesPerTile][D], pages past
// the complete ones as zeros) into shared memory; every thread of the block takes part.
template <int D>
__device__ __forceinline__ void load_tile_stats(const SoftMaskArgs& a, int b, int h, int key_tile, float* mu_s,
                                                float* sig_s) {
  const int npg = kTile / a.P;
  for (int i = threadIdx.x; i < npg * D; i += blockDim.x) {
    const int pi = i / D, d = i % D, j = key_tile * npg + pi;
    float m = 0.0f, s = 0.0f;
    if (j < a.NC) {
      const int64_t o = ((int64_t(b) * a.Hkv + h) * a.NC + j) * D + d;
      m = a.mu[o];
      s = a.sig[o];
    }
    mu_s[pi * D + d] = m;
    sig_s[pi * D + d] = s;
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

// The page bias log m (0 for rows without a mask and pages that are not candidates) of one
// warp's 16 query rows [r0, r0 + 16) of the block's tile (qf: their A fragments; rows
// row0 + r0 + ...), on tensor cores: the scores of the tile's
// pages are [q, |q|] x [mu, sigma]^T (|q| by clearing the sign bits of the packed pairs;
// mu/sigma split hi + lo, fp32 accumulation), 2 mma per 16 channels. The warp writes only
// bias_s rows [r0, r0 + 16).
template <class T, int D>
__device__ __forceinline__ void warp_log_weights(const SoftMaskArgs& a, const uint32_t (&qf)[D / 16][4],
                                                 const float* mu_s, const float* sig_s, const float* tau_s,
                                                 int64_t row0, int r0, int key_tile, int lane, float* bias_s) {
  // B columns 0..3: hi halves of pages 0..3, columns 4..7: lo halves of the same pages (a
  // tile has at most 4 pages), so one mma per 16 channels takes both; lanes t4 and t4 ^ 2
  // then hold the hi and lo sums of the same pages.
  const int g = lane / 4, t4 = lane % 4, npg = kTile / a.P, pg = g & 3;
  const bool has = pg < npg;
  float dot[4] = {}, off[4] = {};
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    float2 m0 = make_float2(0.0f, 0.0f), m1 = m0, s0 = m0, s1 = m0;
    if (has) {
      const int o = pg * D + kk * 16 + 2 * t4;
      m0 = *reinterpret_cast<const float2*>(mu_s + o);
      m1 = *reinterpret_cast<const float2*>(mu_s + o + 8);
      s0 = *reinterpret_cast<const float2*>(sig_s + o);
      s1 = *reinterpret_cast<const float2*>(sig_s + o + 8);
    }
    uint32_t mh[2], ml[2], sh[2], sl[2];
    split2<T>(m0.x, m0.y, mh[0], ml[0]);
    split2<T>(m1.x, m1.y, mh[1], ml[1]);
    split2<T>(s0.x, s0.y, sh[0], sl[0]);
    split2<T>(s1.x, s1.y, sh[1], sl[1]);
    const bool lo = g >= 4;
    const uint32_t bm[2] = {lo ? ml[0] : mh[0], lo ? ml[1] : mh[1]};
    const uint32_t bs[2] = {lo ? sl[0] : sh[0], lo ? sl[1] : sh[1]};
    const uint32_t qa[4] = {qf[kk][0] & 0x7fff7fffu, qf[kk][1] & 0x7fff7fffu, qf[kk][2] & 0x7fff7fffu,
                            qf[kk][3] & 0x7fff7fffu};
    mma16816<T>(dot, qf[kk], bm);
    mma16816<T>(off, qa, bs);
  }
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

}  // namespace unique::cuda::soft_mask

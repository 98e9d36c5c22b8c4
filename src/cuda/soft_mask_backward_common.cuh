// Internal: the page-statistics parts of the soft-mask backward. Both kernels (mma.sync:
// soft_mask_backward.cu, wgmma: soft_mask_backward_sm90.cu) hold dQ, dK, dV in the m16n8 C
// layout per warp (a wgmma accumulator is that layout too), so these run on either: the wgmma
// kernel uses dx_fragment, times_sign_q, write_dk_dv and add_page_grads, the mma.sync kernel
// all of them (its page products are mma.sync; the caller passes the shared-memory address
// of a Q tile element where the layouts differ).
//   dx(row, page) = dbias (1 - m) / T * c, from the column sums of dS over the page's keys;
//   dq(row, ch)  += dx (mu + alpha sign(q) sigma)(page, ch)     (dq_page_term)
//   dmu(page, ch) += dx q,  dsigma(page, ch) += dx alpha |q|      (dmu_dsigma_step)
#pragma once
#include "cuda/soft_mask_common.cuh"

namespace unique::cuda::soft_mask {

// The A fragment (16 rows x k16) of one sub-tile's dx for the dq page term: rows
// [r0, r0 + 16) of xs ([64 rows][kMaxPagesPerTile]); k rows 0-3 the hi halves of pages
// 0-3, 4-7 the lo halves (lanes t4 < 2 hold hi, t4 >= 2 lo). Registers {0, 2} and {1, 3}
// of the full fragment are equal (the k rows 8-15 repeat 0-7 against mu/sigma lo).
template <class T>
__device__ __forceinline__ void dx_fragment(const float* xs, int r0, int g, int t4, int npg, uint32_t (&xa)[2]) {
  constexpr int PT = kMaxPagesPerTile;
  const int p0 = 2 * (t4 & 1), r = r0 + g;
  const float y0 = p0 < npg ? xs[r * PT + p0] : 0.0f;
  const float y1 = p0 + 1 < npg ? xs[r * PT + p0 + 1] : 0.0f;
  const float y2 = p0 < npg ? xs[(r + 8) * PT + p0] : 0.0f;
  const float y3 = p0 + 1 < npg ? xs[(r + 8) * PT + p0 + 1] : 0.0f;
  uint32_t h01, l01, h23, l23;
  split2<T>(y0, y1, h01, l01);
  split2<T>(y2, y3, h23, l23);
  xa[0] = t4 < 2 ? h01 : l01;
  xa[1] = t4 < 2 ? h23 : l23;
}

// pm += DX x mu, ps += DX x sigma for the n8 tile of channels whose B column is dn, over
// one sub-tile's pages (xa: its dx_fragment; hl: its [4][D / 2] split statistics): one k16
// step, k rows 0-3 DXhi x mu_hi, 4-7 DXlo x mu_hi, 8-11 DXhi x mu_lo, 12-15 DXlo x mu_lo;
// lane t4 holds B k rows 2 t4, 2 t4 + 1 (+ 8): pages p0, p0 + 1, the halves picked out of
// hl by byte_perm.
template <class T, int D>
__device__ __forceinline__ void page_products(const uint32_t (&xa)[2], const uint4* hl, int dn, int t4, int npg,
                                              float (&pm)[4], float (&ps)[4]) {
  const int p0 = 2 * (t4 & 1);
  const uint4* hs = hl + dn / 2;
  const uint4 z = make_uint4(0, 0, 0, 0);
  const uint4 w0 = p0 < npg ? hs[p0 * D / 2] : z, w1 = p0 + 1 < npg ? hs[(p0 + 1) * D / 2] : z;
  const uint32_t sel = (dn & 1) ? 0x7632u : 0x5410u;
  const uint32_t bm[2] = {__byte_perm(w0.x, w1.x, sel), __byte_perm(w0.y, w1.y, sel)};
  const uint32_t bs[2] = {__byte_perm(w0.z, w1.z, sel), __byte_perm(w0.w, w1.w, sel)};
  const uint32_t xf[4] = {xa[0], xa[1], xa[0], xa[1]};
  mma16816<T>(pm, xf, bm);
  mma16816<T>(ps, xf, bs);
}

// sign(q) x for element e of a lane's 2 x 2 outputs (qq: the q pairs of rows g and g + 8 as
// 32-bit words): x with q's sign bit, 0 where q is +-0.
__device__ __forceinline__ float times_sign_q(float x, const uint32_t (&qq)[2], int e) {
  const uint32_t bits = (e & 1) ? qq[e / 2] >> 16 : qq[e / 2] & 0xffffu;
  return (bits & 0x7fffu) ? __uint_as_float(__float_as_uint(x) ^ ((bits & 0x8000u) << 16)) : 0.0f;
}

// The dq of one n8 tile (the lane's 2 x 2 outputs): c dS K + pm + alpha sign(q) ps; qq = the
// q pairs (channels 2 t4, 2 t4 + 1) of rows g and g + 8 as 32-bit words.
__device__ __forceinline__ void dq_tile_values(const SoftMaskArgs& a, const float (&dq)[4], const float (&pm)[4],
                                               const float (&ps)[4], const uint32_t (&qq)[2], float (&x)[4]) {
#pragma unroll
  for (int e = 0; e < 4; ++e) x[e] = dq[e] * a.scale + pm[e] + a.alpha * times_sign_q(ps[e], qq, e);
}

// dmu^T += Q^T DX, dsigma^T += |Q|^T DX (alpha at the end) for the warp's MT m16 tiles of
// channels over the tile's 64 rows: A = Q^T by transposed ldmatrix (qt_addr(kk, mt): the
// lane's address for rows 16 kk.., channel tile mt), B = DX [rows x pages] split hi + lo
// (xs: the sub-tile's dx, [64 rows][kMaxPagesPerTile]).
template <class T, int MT, class QtAddr>
__device__ __forceinline__ void dmu_dsigma_step(const float* xs, int g, int t4, int npg, QtAddr&& qt_addr,
                                                float (&dmu)[MT][4], float (&dsig)[MT][4]) {
  constexpr int PT = kMaxPagesPerTile;
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) {
    float x0 = 0.0f, x1 = 0.0f, x2 = 0.0f, x3 = 0.0f;
    if (g < npg) {
      const int r = kk * 16 + 2 * t4;
      x0 = xs[r * PT + g];
      x1 = xs[(r + 1) * PT + g];
      x2 = xs[(r + 8) * PT + g];
      x3 = xs[(r + 9) * PT + g];
    }
    uint32_t bh[2], bl[2];
    split2<T>(x0, x1, bh[0], bl[0]);
    split2<T>(x2, x3, bh[1], bl[1]);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      uint32_t x[4];
      ldmatrix_x4_trans(x, qt_addr(kk, mt));
      const uint32_t qa[4] = {x[0], x[2], x[1], x[3]};
      const uint32_t aa[4] = {x[0] & 0x7fff7fffu, x[2] & 0x7fff7fffu, x[1] & 0x7fff7fffu, x[3] & 0x7fff7fffu};
      mma16816<T>(dmu[mt], qa, bh);
      mma16816<T>(dmu[mt], qa, bl);
      mma16816<T>(dsig[mt], aa, bh);
      mma16816<T>(dsig[mt], aa, bl);
    }
  }
}

// dx * c = dbias (1 - m) / T * c in place for `n` (row, page) entries of one sub-tile
// (threads [0, nthreads) from `i0`); 0 for non-candidates (log m = 0: m = 1).
__device__ __forceinline__ void dbias_to_dx(const SoftMaskArgs& a, const float* bias, float* dbias, int i0,
                                            int nthreads) {
  for (int i = i0; i < kTile * a.npg; i += nthreads) {
    const int o = (i % kTile) * kMaxPagesPerTile + i / kTile;
    const float lw = bias[o];
    dbias[o] = lw == 0.0f ? 0.0f : dbias[o] * (1.0f - __expf(lw)) * a.inv_T * a.scale;
  }
}

// Column sums of a warp's dS^T (16 keys of one page x 64 queries, m16n8 C layout) into
// dbias[query][page] (shared atomics; P >= 16 so the warp's keys share a page).
__device__ __forceinline__ void add_dbias(const float (&dst)[kTile / 8][4], int g, int t4, int page, float* dbias) {
#pragma unroll
  for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      float x = dst[nt][c] + dst[nt][2 + c];
      x += __shfl_xor_sync(0xffffffffu, x, 4);
      x += __shfl_xor_sync(0xffffffffu, x, 8);
      x += __shfl_xor_sync(0xffffffffu, x, 16);
      if (g == 0 && x != 0.0f) atomicAdd(&dbias[(nt * 8 + 2 * t4 + c) * kMaxPagesPerTile + page], x);
    }
}

// dK (times c) and dV of a warp's 16 keys from key_w into the fp32 accumulators (the query
// heads of a KV head add up there).
template <int D>
__device__ __forceinline__ void write_dk_dv(const SoftMaskArgs& a, int b, int h, int64_t key_w, int g, int t4,
                                            const float (&dk)[D / 8][4], const float (&dv)[D / 8][4]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t key = key_w + g + 8 * r;
    if (key >= a.L) continue;
    const int64_t base = ((int64_t(b) * a.L + key) * a.Hkv + h) * D;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      const int d = nt * 8 + 2 * t4;
      atomic_add2(a.dk_acc + base + d, dk[nt][2 * r] * a.scale, dk[nt][2 * r + 1] * a.scale);
      atomic_add2(a.dv_acc + base + d, dv[nt][2 * r], dv[nt][2 * r + 1]);
    }
  }
}

// dmu, dsigma (times alpha) of page pi of 64-key tile kt, channel d, into the accumulators
// (nothing for pages past the tile's or the complete ones).
template <int D>
__device__ __forceinline__ void add_page_grads(const SoftMaskArgs& a, int b, int h, int kt, int pi, int d, float dmu,
                                               float dsig) {
  const int j = kt * a.npg + pi;
  if (pi >= a.npg || j >= a.NC) return;
  const int64_t o = ((int64_t(b) * a.Hkv + h) * a.NC + j) * D + d;
  if (dmu != 0.0f) atomicAdd(a.dmu + o, dmu);
  if (dsig != 0.0f) atomicAdd(a.dsig + o, dsig * a.alpha);
}

}  // namespace unique::cuda::soft_mask

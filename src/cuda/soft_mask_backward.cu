// Soft-mask attention backward, flash-attention 2 style: one 128-thread block per (64-key
// tile, query head); each warp owns 16 keys and keeps their dK and dV in registers while
// the block walks the query tiles from the diagonal down. Per query tile, on tensor cores:
//   S^T = K Q^T, P^T = exp(S^T * c + log m - lse), dP^T = V dO^T, dS^T = P^T (dP^T - delta),
//   dV += P^T dO, dK += dS^T Q, dQ += dS K (dS^T through shared memory, fp32 atomics).
// The page-bias gradient: dbias(row, page) = sum of dS over the page's keys (all in this
// tile, P divides 64), dx = dbias (1 - m) / T, then dq += dx c (mu + alpha sign(q) sigma)
// and dmu += dx c q, dsigma += dx c alpha |q| for the tile's pages (fp32, CUDA cores).
// The finalize kernel turns dmu/dsigma into dk.
#include <algorithm>

#include "cuda/soft_mask_common.cuh"

namespace unique::cuda {

namespace soft_mask {
namespace {

// p[0] += x, p[1] += y (p 8-byte aligned): one vector atomic on sm_90.
__device__ __forceinline__ void atomic_add2(float* p, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(x, y));
#else
  atomicAdd(p, x);
  atomicAdd(p + 1, y);
#endif
}

template <class T, int D>
__global__ void __launch_bounds__(kThreads) backward_kernel(const SoftMaskArgs a) {
  constexpr int CH = D / 8;
  constexpr int SCH = kTile / 8;  // 16-byte chunks per row of the dS^T tile
  extern __shared__ uint4 smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + kTile * D;
  T* sQ0 = sV + kTile * D;                                       // [2 stages][64][D]
  T* sdO0 = sQ0 + 2 * kTile * D;                                 // [2 stages][64][D]
  float* mu_s = reinterpret_cast<float*>(sdO0 + 2 * kTile * D);  // [4][D]
  float* sig_s = mu_s + kMaxPagesPerTile * D;                    // [4][D]
  float* bias_s = sig_s + kMaxPagesPerTile * D;                  // [64][4]
  float* dbias_s = bias_s + kTile * kMaxPagesPerTile;            // [64][4], then dx * c
  float* lse_s = dbias_s + kTile * kMaxPagesPerTile;             // [64], log2 units
  float* delta_s = lse_s + kTile;                                // [64]
  float* tau_s = delta_s + kTile;                                // [64]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, m8 = lane / 8;
  const int g = lane / 4, t4 = lane % 4;
  const int kt = blockIdx.x, hq = blockIdx.y, b = blockIdx.z, h = hq / a.group;
  const int npg = kTile / a.P;
  const int64_t key0 = int64_t(kt) * kTile;
  const int num_tiles = (a.L + kTile - 1) / kTile;
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  const T* dO = static_cast<const T*>(a.dout);

  // K/V tile and the stats of its pages, once.
  for (int idx = tid; idx < kTile * CH; idx += kThreads) {
    const int r = idx / CH, c = idx % CH;
    const int64_t s = key0 + r;
    const bool in = s < a.L;
    cp_async16(sK + swz(r, c, CH) * 8, in ? K + row_off(a.ks, b, s, h) + c * 8 : K, in ? 16 : 0);
    cp_async16(sV + swz(r, c, CH) * 8, in ? V + row_off(a.vs, b, s, h) + c * 8 : V, in ? 16 : 0);
  }
  cp_async_commit();
  load_tile_stats<D>(a, b, h, kt, mu_s, sig_s);

  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  // dmu^T / dsigma^T [D x pages] accumulated on tensor cores: warp w owns channels
  // [w * D / 4, (w + 1) * D / 4) as MT m16 tiles, the tile's pages as one n8 tile.
  constexpr int MT = D / 64;
  float dmu_acc[MT][4] = {}, dsig_acc[MT][4] = {};
  const int my_page = (warp * 16) / a.P;  // the page of this warp's 16 keys (P >= 16)

  // Q and dO tiles double-buffered: tile qt + 1 loads while qt is processed.
  auto load_q_tile = [&](int qt, int stage) {
    T* dq_ = sQ0 + stage * kTile * D;
    T* do_ = sdO0 + stage * kTile * D;
    for (int idx = tid; idx < kTile * CH; idx += kThreads) {
      const int r = idx / CH, c = idx % CH;
      const int64_t t = int64_t(qt) * kTile + r;
      const bool in = t < a.L;
      cp_async16(dq_ + swz(r, c, CH) * 8, in ? Q + row_off(a.qs, b, t, hq) + c * 8 : Q, in ? 16 : 0);
      cp_async16(do_ + swz(r, c, CH) * 8, in ? dO + row_off(a.dos, b, t, hq) + c * 8 : dO, in ? 16 : 0);
    }
    cp_async_commit();
  };
  load_q_tile(kt, 0);

  for (int qt = kt; qt < num_tiles; ++qt) {
    const int64_t row0 = int64_t(qt) * kTile;
    const int stage = (qt - kt) & 1;
    T* sQ = sQ0 + stage * kTile * D;
    T* sdO = sdO0 + stage * kTile * D;
    T* sdS = sdO;  // [64 keys][64 queries]: reuses this stage's dO once (c)/(d) are done
    // (a) prefetch the next Q and dO tiles; per-row constants.
    if (qt + 1 < num_tiles) load_q_tile(qt + 1, stage ^ 1);
    for (int r = tid; r < kTile; r += kThreads) {
      const int64_t t = row0 + r;
      const bool in = t < a.L;
      const int64_t row = (int64_t(b) * a.Hq + hq) * a.L + t;
      lse_s[r] = in ? a.lse[b * a.ls.b + t * a.ls.t + hq * a.ls.h] * kLog2e : 0.0f;
      delta_s[r] = in ? a.delta[row] : 0.0f;
      tau_s[r] = in ? a.tau[row] : -INFINITY;
    }
    for (int i = tid; i < kTile * kMaxPagesPerTile; i += kThreads) dbias_s[i] = 0.0f;
    if (qt + 1 < num_tiles) cp_async_wait<1>();
    else cp_async_wait<0>();
    __syncthreads();
    // (b) log page weights of (row, page of this key tile).
    {
      uint32_t qf[D / 16][4];
      load_q_fragments<T, D>(sQ, warp * 16, lane, qf);
      warp_log_weights<T, D>(a, qf, mu_s, sig_s, tau_s, row0, warp * 16, kt, lane, bias_s);
    }
    __syncthreads();

    // (c) S^T and dP^T for the warp's 16 keys x 64 queries.
    float st[kTile / 8][4] = {}, dpt[kTile / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ka[4], va[4];
      ldmatrix_x4(ka, sK + swz(warp * 16 + lane % 16, kk * 2 + lane / 16, CH) * 8);
      ldmatrix_x4(va, sV + swz(warp * 16 + lane % 16, kk * 2 + lane / 16, CH) * 8);
#pragma unroll
      for (int n2 = 0; n2 < kTile / 16; ++n2) {
        uint32_t qb[4], ob[4];
        ldmatrix_x4(qb, sQ + swz(n2 * 16 + (m8 / 2) * 8 + lane % 8, kk * 2 + m8 % 2, CH) * 8);
        ldmatrix_x4(ob, sdO + swz(n2 * 16 + (m8 / 2) * 8 + lane % 8, kk * 2 + m8 % 2, CH) * 8);
        mma16816<T>(st[2 * n2], ka, qb);
        mma16816<T>(st[2 * n2 + 1], ka, qb + 2);
        mma16816<T>(dpt[2 * n2], va, ob);
        mma16816<T>(dpt[2 * n2 + 1], va, ob + 2);
      }
    }
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kl = warp * 16 + g + 8 * (e / 2), ql = nt * 8 + 2 * t4 + (e & 1);
        const int64_t key = key0 + kl, t = row0 + ql;
        float p = 0.0f;
        if (t < a.L && key <= t)
          p = fast_exp2(st[nt][e] * a.scale_log2 + bias_s[ql * kMaxPagesPerTile + my_page] * kLog2e - lse_s[ql]);
        st[nt][e] = p;
        dpt[nt][e] = p * (dpt[nt][e] - delta_s[ql]);
      }

    // (d) dV += P^T dO, dK += dS^T Q.
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      const uint32_t pa[4] = {pack2<T>(st[2 * kk][0], st[2 * kk][1]), pack2<T>(st[2 * kk][2], st[2 * kk][3]),
                              pack2<T>(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                              pack2<T>(st[2 * kk + 1][2], st[2 * kk + 1][3])};
      const uint32_t sa[4] = {pack2<T>(dpt[2 * kk][0], dpt[2 * kk][1]), pack2<T>(dpt[2 * kk][2], dpt[2 * kk][3]),
                              pack2<T>(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                              pack2<T>(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
      for (int n2 = 0; n2 < D / 16; ++n2) {
        uint32_t ob[4], qb[4];
        ldmatrix_x4_trans(ob, sdO + swz(kk * 16 + (m8 % 2) * 8 + lane % 8, n2 * 2 + m8 / 2, CH) * 8);
        ldmatrix_x4_trans(qb, sQ + swz(kk * 16 + (m8 % 2) * 8 + lane % 8, n2 * 2 + m8 / 2, CH) * 8);
        mma16816<T>(dv[2 * n2], pa, ob);
        mma16816<T>(dv[2 * n2 + 1], pa, ob + 2);
        mma16816<T>(dk[2 * n2], sa, qb);
        mma16816<T>(dk[2 * n2 + 1], sa, qb + 2);
      }
    }

    // (e) dbias = column sums of dS^T over the page's keys; dS^T to shared memory.
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        float x = dpt[nt][c] + dpt[nt][2 + c];
        x += __shfl_xor_sync(0xffffffffu, x, 4);
        x += __shfl_xor_sync(0xffffffffu, x, 8);
        x += __shfl_xor_sync(0xffffffffu, x, 16);
        if (g == 0 && x != 0.0f) atomicAdd(&dbias_s[(nt * 8 + 2 * t4 + c) * kMaxPagesPerTile + my_page], x);
      }
    __syncthreads();  // every warp is done reading this stage's dO: dS^T overwrites it
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int kl = warp * 16 + g + 8 * r, ql = nt * 8 + 2 * t4;
        *reinterpret_cast<uint32_t*>(sdS + swz(kl, ql / 8, SCH) * 8 + ql % 8) =
            pack2<T>(dpt[nt][2 * r], dpt[nt][2 * r + 1]);
      }
    __syncthreads();
    // (f) dx * c = dbias (1 - m) / T * c, in place (0 for non-candidates: m = 1).
    for (int i = tid; i < kTile * npg; i += kThreads) {
      const int r = i % kTile, pi = i / kTile, o = r * kMaxPagesPerTile + pi;
      const float lw = bias_s[o];
      dbias_s[o] = lw == 0.0f ? 0.0f : dbias_s[o] * (1.0f - __expf(lw)) * a.inv_T * a.scale;
    }
    __syncthreads();

    // (g) dQ = c dS K + dx c (mu + alpha sign(q) sigma) for the warp's 16 query rows.
    // In halves of D (fewer live registers next to dk/dv: D 128 spilled otherwise).
    constexpr int DH = D >= 128 ? D / 2 : D;
#pragma unroll 1
    for (int d0 = 0; d0 < D; d0 += DH) {
      float dq[DH / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
        uint32_t da[4];
        ldmatrix_x4_trans(da, sdS + swz(kk * 16 + (m8 / 2) * 8 + lane % 8, warp * 2 + m8 % 2, SCH) * 8);
#pragma unroll
        for (int n2 = 0; n2 < DH / 16; ++n2) {
          uint32_t kb[4];
          ldmatrix_x4_trans(kb, sK + swz(kk * 16 + (m8 % 2) * 8 + lane % 8, d0 / 8 + n2 * 2 + m8 / 2, CH) * 8);
          mma16816<T>(dq[2 * n2], da, kb);
          mma16816<T>(dq[2 * n2 + 1], da, kb + 2);
        }
      }
      // Page term on tensor cores, one n8 tile of channels at a time: DX [16 rows x pages]
      // times mu / sigma [pages x 8], both split hi + lo, packed into one k16 step (a
      // tile has <= 4 pages): k 0-3 DXhi x mu_hi, 4-7 DXlo x mu_hi, 8-11 DXhi x mu_lo,
      // 12-15 DXlo x mu_lo. Lane t4 holds A/B k rows 2 t4, 2 t4 + 1 (+ 8): pages p0, p0 + 1.
      const int p0 = 2 * (t4 & 1);
      uint32_t xa[4];
      {
        const int r = warp * 16 + g;
        const float y0 = p0 < npg ? dbias_s[r * kMaxPagesPerTile + p0] : 0.0f;
        const float y1 = p0 + 1 < npg ? dbias_s[r * kMaxPagesPerTile + p0 + 1] : 0.0f;
        const float y2 = p0 < npg ? dbias_s[(r + 8) * kMaxPagesPerTile + p0] : 0.0f;
        const float y3 = p0 + 1 < npg ? dbias_s[(r + 8) * kMaxPagesPerTile + p0 + 1] : 0.0f;
        uint32_t h01, l01, h23, l23;
        split2<T>(y0, y1, h01, l01);
        split2<T>(y2, y3, h23, l23);
        xa[0] = xa[2] = t4 < 2 ? h01 : l01;
        xa[1] = xa[3] = t4 < 2 ? h23 : l23;
      }
      float* dst[2];
      bool in[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t t = row0 + warp * 16 + g + 8 * r;
        in[r] = t < a.L;
        dst[r] = a.dq_acc + ((int64_t(b) * a.L + (in[r] ? t : 0)) * a.Hq + hq) * D;
      }
#pragma unroll
      for (int nt = 0; nt < DH / 8; ++nt) {
        const int dn = d0 + nt * 8 + g;  // B column (channel)
        const float m0 = p0 < npg ? mu_s[p0 * D + dn] : 0.0f, m1 = p0 + 1 < npg ? mu_s[(p0 + 1) * D + dn] : 0.0f;
        const float s0 = p0 < npg ? sig_s[p0 * D + dn] : 0.0f, s1 = p0 + 1 < npg ? sig_s[(p0 + 1) * D + dn] : 0.0f;
        uint32_t bm[2], bs[2];
        split2<T>(m0, m1, bm[0], bm[1]);
        split2<T>(s0, s1, bs[0], bs[1]);
        float pm[4] = {}, ps[4] = {};
        mma16816<T>(pm, xa, bm);
        mma16816<T>(ps, xa, bs);
        float x[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2, ql = warp * 16 + g + 8 * r, d = d0 + nt * 8 + 2 * t4 + (e & 1);
          const float qv = to_f<T>(sQ[swz(ql, d / 8, CH) * 8 + d % 8]);
          const float sgn = qv > 0.0f ? 1.0f : (qv < 0.0f ? -1.0f : 0.0f);
          x[e] = dq[nt][e] * a.scale + pm[e] + a.alpha * sgn * ps[e];
        }
#pragma unroll
        for (int r = 0; r < 2; ++r)
          if (in[r]) atomic_add2(dst[r] + d0 + nt * 8 + 2 * t4, x[2 * r], x[2 * r + 1]);
      }
    }
    // dmu += dx c q, dsigma += dx c alpha |q| over the tile's rows, per (page, channel).
    // dmu^T += Q^T DX, dsigma^T += |Q|^T DX (alpha at the end): A = Q^T by transposed
    // ldmatrix of sQ, B = DX [rows x pages] split hi + lo.
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      float x0 = 0.0f, x1 = 0.0f, x2 = 0.0f, x3 = 0.0f;
      if (g < npg) {
        const int r = kk * 16 + 2 * t4;
        x0 = dbias_s[r * kMaxPagesPerTile + g];
        x1 = dbias_s[(r + 1) * kMaxPagesPerTile + g];
        x2 = dbias_s[(r + 8) * kMaxPagesPerTile + g];
        x3 = dbias_s[(r + 9) * kMaxPagesPerTile + g];
      }
      uint32_t bh[2], bl[2];
      split2<T>(x0, x1, bh[0], bl[0]);
      split2<T>(x2, x3, bh[1], bl[1]);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t x[4];
        ldmatrix_x4_trans(x, sQ + swz(kk * 16 + (m8 % 2) * 8 + lane % 8, (warp * MT + mt) * 2 + m8 / 2, CH) * 8);
        const uint32_t qa[4] = {x[0], x[2], x[1], x[3]};
        const uint32_t aa[4] = {x[0] & 0x7fff7fffu, x[2] & 0x7fff7fffu, x[1] & 0x7fff7fffu, x[3] & 0x7fff7fffu};
        mma16816<T>(dmu_acc[mt], qa, bh);
        mma16816<T>(dmu_acc[mt], qa, bl);
        mma16816<T>(dsig_acc[mt], aa, bh);
        mma16816<T>(dsig_acc[mt], aa, bl);
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this stage; dbias_s, row constants
  }

  // Epilogue: dK (times c), dV, dmu, dsigma into the fp32 accumulators (query heads of a
  // KV head add up there).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t key = key0 + warp * 16 + g + 8 * r;
    if (key >= a.L) continue;
    const int64_t base = ((int64_t(b) * a.L + key) * a.Hkv + h) * D;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      const int d = nt * 8 + 2 * t4;
      atomic_add2(a.dk_acc + base + d, dk[nt][2 * r] * a.scale, dk[nt][2 * r + 1] * a.scale);
      atomic_add2(a.dv_acc + base + d, dv[nt][2 * r], dv[nt][2 * r + 1]);
    }
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int pi = 2 * t4 + (e & 1), d = (warp * MT + mt) * 16 + g + 8 * (e / 2);
      const int j = kt * npg + pi;
      if (pi >= npg || j >= a.NC) continue;
      const int64_t o = ((int64_t(b) * a.Hkv + h) * a.NC + j) * D + d;
      if (dmu_acc[mt][e] != 0.0f) atomicAdd(a.dmu + o, dmu_acc[mt][e]);
      if (dsig_acc[mt][e] != 0.0f) atomicAdd(a.dsig + o, dsig_acc[mt][e] * a.alpha);
    }
}

template <class T, int D>
void launch_typed(const SoftMaskArgs& a, cudaStream_t stream) {
  const size_t smem = size_t(6) * kTile * D * sizeof(T) +
                      (2 * kMaxPagesPerTile * D + 2 * kTile * kMaxPagesPerTile + 3 * kTile) * sizeof(float);
  auto kernel = backward_kernel<T, D>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((a.L + kTile - 1) / kTile, a.Hq, a.B);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  UNIQUE_CUDA_LAUNCH("soft_mask backward_kernel");
}

}  // namespace
}  // namespace soft_mask

void launch_soft_mask_backward(const SoftMaskArgs& a, int D, cudaStream_t stream) {
  using namespace soft_mask;
  if (a.dtype == DType::bf16) {
    if (D == 64) launch_typed<bf16, 64>(a, stream);
    else launch_typed<bf16, 128>(a, stream);
  } else {
    if (D == 64) launch_typed<f16, 64>(a, stream);
    else launch_typed<f16, 128>(a, stream);
  }
}

}  // namespace unique::cuda

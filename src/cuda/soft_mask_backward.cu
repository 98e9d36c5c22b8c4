// Soft-mask attention backward, flash-attention 2 style: one 256-thread block per (128-key
// block = two 64-key tiles, query head); each of the 8 warps owns 16 keys and keeps their
// dK and dV in registers while the block walks the 64-row query tiles from the diagonal
// down (one Q/dO tile load and one set of dQ atomics per 128 keys). Per query tile, on tensor cores:
//   S^T = K Q^T, P^T = exp(S^T * c + log m - lse), dP^T = V dO^T, dS^T = P^T (dP^T - delta),
//   dV += P^T dO, dK += dS^T Q, dQ += dS K (dS^T through shared memory, fp32 atomics).
// The page-bias gradient: dbias(row, page) = sum of dS over the page's keys (all in this
// tile, P divides 64), dx = dbias (1 - m) / T, then dq += dx c (mu + alpha sign(q) sigma)
// and dmu += dx c q, dsigma += dx c alpha |q| for the tile's pages (tensor cores).
// The finalize kernel turns dmu/dsigma into dk.
#include <algorithm>
#include <cstring>

#include "cuda/soft_mask_backward_common.cuh"

namespace unique::cuda {

namespace soft_mask {
namespace {

constexpr int kBKeys = 2 * kTile;  // keys per block: two 64-key tiles (sub-tiles)
constexpr int kBWarps = kBKeys / 16;
constexpr int kBThreads = kBWarps * 32;

template <class T, int D>
__global__ void __launch_bounds__(kBThreads) backward_kernel(const SoftMaskArgs a) {
  constexpr int CH = D / 8;
  constexpr int SCH = kTile / 8;  // 16-byte chunks per row of the dS^T tile
  constexpr int PT = kMaxPagesPerTile;
  extern __shared__ uint4 smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);                        // [128][D]
  T* sV = sK + kBKeys * D;                                       // [128][D]
  T* sQ0 = sV + kBKeys * D;                                      // [2 stages][64][D]
  T* sdO0 = sQ0 + 2 * kTile * D;                                 // [2 stages][64][D]
  T* sdS = sdO0 + 2 * kTile * D;                                 // [128 keys][64 queries]
  uint4* hl_s = reinterpret_cast<uint4*>(sdS + kBKeys * kTile);  // [2 sub-tiles][4][D / 2] split mu/sigma
  float* bias_s = reinterpret_cast<float*>(hl_s + 2 * PT * D / 2);  // [2][64][4]
  float* dbias_s = bias_s + 2 * kTile * PT;                      // [2][64][4], then dx * c
  float* lse_s = dbias_s + 2 * kTile * PT;                       // [64], log2 units
  float* delta_s = lse_s + kTile;                                // [64]
  float* tau_s = delta_s + kTile;                                // [64]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, m8 = lane / 8;
  const int g = lane / 4, t4 = lane % 4;
  // Warp roles: keys [16 warp, 16 warp + 16) of the block for S/dP/dK/dV; sub = the 64-key
  // sub-tile of those keys and wl the warp's 16-row (query or channel) slot inside it.
  const int sub = warp / 4, wl = warp % 4;
  const int kb = blockIdx.x, hq = blockIdx.y, b = blockIdx.z, h = hq / a.group;
  const int npg = a.npg;
  const int64_t key0 = int64_t(kb) * kBKeys;
  const int kt_sub = 2 * kb + sub;  // the 64-key tile index of this warp's keys
  const int num_tiles = (a.L + kTile - 1) / kTile;
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  const T* dO = static_cast<const T*>(a.dout);

  // K/V of the block's 128 keys and the stats of its pages, once.
  for (int idx = tid; idx < kBKeys * CH; idx += kBThreads) {
    const int r = idx / CH, c = idx % CH;
    const int64_t s = key0 + r;
    const bool in = s < a.L;
    cp_async16(sK + swz(r, c, CH) * 8, in ? K + row_off(a.ks, b, s, h) + c * 8 : K, in ? 16 : 0);
    cp_async16(sV + swz(r, c, CH) * 8, in ? V + row_off(a.vs, b, s, h) + c * 8 : V, in ? 16 : 0);
  }
  load_tile_hl_async<D>(a, b, h, 2 * kb, hl_s, tid, kBThreads);
  load_tile_hl_async<D>(a, b, h, 2 * kb + 1, hl_s + PT * D / 2, tid, kBThreads);
  cp_async_commit();
  float* my_bias = bias_s + sub * kTile * PT;
  float* my_dbias = dbias_s + sub * kTile * PT;

  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  // dmu^T / dsigma^T [D x pages] of the warp's sub-tile on tensor cores: warp wl owns
  // channels [wl * D / 4, (wl + 1) * D / 4) as MT m16 tiles, the sub-tile's pages as one n8 tile.
  constexpr int MT = D / 64;
  float dmu_acc[MT][4] = {}, dsig_acc[MT][4] = {};
  const int my_page = (wl * 16) >> a.pshift;  // the page (within the sub-tile) of this warp's 16 keys

  // Q and dO tiles double-buffered: tile qt + 1 loads while qt is processed.
  // Each thread copies chunk lc of rows lr, lr + RSTEP, ...: its sources differ per tile
  // only by the row offset (address arithmetic hoisted out of the query-tile loop).
  constexpr int RSTEP = kBThreads / CH;
  const int lr = tid / CH, lc = tid % CH;
  const T* q_src = Q + int64_t(b) * a.qs.b + int64_t(hq) * a.qs.h + lc * 8;
  const T* o_src = dO + int64_t(b) * a.dos.b + int64_t(hq) * a.dos.h + lc * 8;
  auto load_q_tile = [&](int qt, int stage) {
    T* dq_ = sQ0 + stage * kTile * D;
    T* do_ = sdO0 + stage * kTile * D;
#pragma unroll
    for (int i = 0; i < kTile / RSTEP; ++i) {
      const int r = lr + i * RSTEP;
      const int64_t t = int64_t(qt) * kTile + r;
      const bool in = t < a.L;
      const int so = swz(r, lc, CH) * 8;
      cp_async16(dq_ + so, in ? q_src + t * a.qs.t : Q, in ? 16 : 0);
      cp_async16(do_ + so, in ? o_src + t * a.dos.t : dO, in ? 16 : 0);
    }
    cp_async_commit();
  };
  const int qt0 = 2 * kb;  // the first query tile that sees any of the block's keys
  load_q_tile(qt0, 0);

  for (int qt = qt0; qt < num_tiles; ++qt) {
    const int64_t row0 = int64_t(qt) * kTile;
    const int stage = (qt - qt0) & 1;
    const T* sQ = sQ0 + stage * kTile * D;
    const T* sdO = sdO0 + stage * kTile * D;
    // Sub-tile 1 is entirely above the diagonal of the first query tile: its warps skip the work.
    const bool active = key0 + warp * 16 <= row0 + kTile - 1;
    // (a) prefetch the next Q and dO tiles; per-row constants.
    if (qt + 1 < num_tiles) load_q_tile(qt + 1, stage ^ 1);
    for (int r = tid; r < kTile; r += kBThreads) {
      const int64_t t = row0 + r;
      const bool in = t < a.L;
      const int64_t row = (int64_t(b) * a.Hq + hq) * a.L + t;
      lse_s[r] = in ? a.lse[b * a.ls.b + t * a.ls.t + hq * a.ls.h] * kLog2e : 0.0f;
      delta_s[r] = in ? a.delta[row] : 0.0f;
      tau_s[r] = in ? a.tau[row] : -INFINITY;
    }
    for (int i = tid; i < 2 * kTile * PT; i += kBThreads) dbias_s[i] = 0.0f;
    if (qt + 1 < num_tiles) cp_async_wait<1>();
    else cp_async_wait<0>();
    __syncthreads();
    // (b) log page weights of (row, page of the warp's sub-tile): rows [16 wl, 16 wl + 16).
    warp_log_weights<T, D>(
        a, [&](int kk, uint32_t(&f)[4]) { ldmatrix_x4(f, sQ + swz(wl * 16 + lane % 16, kk * 2 + lane / 16, CH) * 8); },
        hl_s + sub * PT * D / 2, tau_s, row0, wl * 16, kt_sub, lane, my_bias);
    __syncthreads();

    // (c) S^T and dP^T for the warp's 16 keys x 64 queries.
    float st[kTile / 8][4] = {}, dpt[kTile / 8][4] = {};
    if (active) {
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
      // Causal / length masks only where a key may follow a row or a row may be past L.
      const bool masked = key0 + warp * 16 + 15 > row0 || row0 + kTile > a.L;
#pragma unroll
      for (int nt = 0; nt < kTile / 8; ++nt) {
        const int q0 = nt * 8 + 2 * t4;  // the lane's query columns q0, q0 + 1
        const float2 l2 = *reinterpret_cast<const float2*>(lse_s + q0);
        const float2 d2 = *reinterpret_cast<const float2*>(delta_s + q0);
        const float c[2] = {my_bias[q0 * PT + my_page] * kLog2e - l2.x, my_bias[(q0 + 1) * PT + my_page] * kLog2e - l2.y};
        const float dl[2] = {d2.x, d2.y};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float p = fast_exp2(st[nt][e] * a.scale_log2 + c[e & 1]);
          if (masked) {
            const int64_t key = key0 + warp * 16 + g + 8 * (e / 2), t = row0 + q0 + (e & 1);
            if (!(t < a.L && key <= t)) p = 0.0f;
          }
          st[nt][e] = p;
          dpt[nt][e] = p * (dpt[nt][e] - dl[e & 1]);
        }
      }

      // (d) dV += P^T dO, dK += dS^T Q.
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
        uint32_t pa[4];
        c_to_a_fragment<T>(st[2 * kk], st[2 * kk + 1], pa);
        uint32_t sa[4];
        c_to_a_fragment<T>(dpt[2 * kk], dpt[2 * kk + 1], sa);
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

      // (e) dbias = column sums of dS^T over the page's keys.
      add_dbias(dpt, g, t4, my_page, my_dbias);
    }
    // dS^T (zeros for inactive warps) to shared memory: the previous iteration's readers
    // of sdS finished before its closing barrier.
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
    for (int s2 = 0; s2 < 2; ++s2) dbias_to_dx(a, bias_s + s2 * kTile * PT, dbias_s + s2 * kTile * PT, tid, kBThreads);
    __syncthreads();

    // (g) dQ = c dS K + dx c (mu + alpha sign(q) sigma) for query rows [16 wl, 16 wl + 16),
    // channels [sub * D / 2, (sub + 1) * D / 2), over the block's 128 keys, in chunks of 32
    // channels (few live registers next to dk/dv).
    {
      constexpr int DH = D / 2, DQ = 32;
      // Page term on tensor cores (soft_mask_backward_common.cuh), over both sub-tiles' pages.
      uint32_t xa[2][2];
#pragma unroll
      for (int s2 = 0; s2 < 2; ++s2) dx_fragment<T>(dbias_s + s2 * kTile * PT, wl * 16, g, t4, npg, xa[s2]);
      const int64_t t_a = row0 + wl * 16 + g;
      float* const dst = a.dq_acc + ((int64_t(b) * a.L + (t_a < a.L ? t_a : 0)) * a.Hq + hq) * D;
      const int64_t row_stride = int64_t(8) * a.Hq * D;  // row t_a + 8
      const bool in0 = t_a < a.L, in1 = t_a + 8 < a.L;
#pragma unroll 1
      for (int d0 = sub * DH; d0 < (sub + 1) * DH; d0 += DQ) {
        float dq[DQ / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < kBKeys / 16; ++kk) {
          uint32_t da[4];
          ldmatrix_x4_trans(da, sdS + swz(kk * 16 + (m8 / 2) * 8 + lane % 8, wl * 2 + m8 % 2, SCH) * 8);
#pragma unroll
          for (int n2 = 0; n2 < DQ / 16; ++n2) {
            uint32_t kbf[4];
            ldmatrix_x4_trans(kbf, sK + swz(kk * 16 + (m8 % 2) * 8 + lane % 8, d0 / 8 + n2 * 2 + m8 / 2, CH) * 8);
            mma16816<T>(dq[2 * n2], da, kbf);
            mma16816<T>(dq[2 * n2 + 1], da, kbf + 2);
          }
        }
#pragma unroll
        for (int nt = 0; nt < DQ / 8; ++nt) {
          const int dn = d0 + nt * 8 + g;  // B column (channel)
          float pm[4] = {}, ps[4] = {};
#pragma unroll
          for (int s2 = 0; s2 < 2; ++s2) page_products<T, D>(xa[s2], hl_s + s2 * PT * D / 2, dn, t4, npg, pm, ps);
          // q pairs (channels 2 t4, 2 t4 + 1) of rows g and g + 8: one 32-bit word each (the
          // swizzle of both rows is chunk ^ g).
          const uint32_t* q32 = reinterpret_cast<const uint32_t*>(sQ);
          const int qw = ((wl * 16 + g) * CH + ((d0 / 8 + nt) ^ g)) * 4 + t4;
          const uint32_t qq[2] = {q32[qw], q32[qw + 8 * CH * 4]};
          float x[4];
          dq_tile_values(a, dq[nt], pm, ps, qq, x);
          const int dc = d0 + nt * 8 + 2 * t4;
          if (in0) atomic_add2(dst + dc, x[0], x[1]);
          if (in1) atomic_add2(dst + row_stride + dc, x[2], x[3]);
        }
      }
    }
    // dmu += dx c q, dsigma += dx c alpha |q| over the tile's rows, per (page, channel) of
    // the warp's sub-tile. dmu^T += Q^T DX, dsigma^T += |Q|^T DX (alpha at the end): A = Q^T
    // by transposed ldmatrix of sQ, B = DX [rows x pages] split hi + lo.
    dmu_dsigma_step<T, MT>(
        my_dbias, g, t4, npg,
        [&](int kk, int mt) { return sQ + swz(kk * 16 + (m8 % 2) * 8 + lane % 8, (wl * MT + mt) * 2 + m8 / 2, CH) * 8; },
        dmu_acc, dsig_acc);
    __syncthreads();  // the next iteration's prefetch overwrites this stage; sdS, dbias_s, row constants
  }

  write_dk_dv<D>(a, b, h, key0 + warp * 16, g, t4, dk, dv);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      add_page_grads<D>(a, b, h, kt_sub, 2 * t4 + (e & 1), (wl * MT + mt) * 16 + g + 8 * (e / 2), dmu_acc[mt][e],
                        dsig_acc[mt][e]);
}

template <class T, int D>
void launch_typed(const SoftMaskArgs& a, cudaStream_t stream) {
  const size_t smem = (size_t(2) * kBKeys * D + 4 * kTile * D + kBKeys * kTile) * sizeof(T) +
                      size_t(2) * kMaxPagesPerTile * D / 2 * sizeof(uint4) +
                      (4 * kTile * kMaxPagesPerTile + 3 * kTile) * sizeof(float);
  auto kernel = backward_kernel<T, D>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((a.L + kBKeys - 1) / kBKeys, a.Hq, a.B);
  kernel<<<grid, kBThreads, smem, stream>>>(a);
  UNIQUE_CUDA_LAUNCH("soft_mask backward_kernel");
}

}  // namespace
}  // namespace soft_mask

void launch_soft_mask_backward(const SoftMaskArgs& a, int D, cudaStream_t stream) {
  using namespace soft_mask;
  if (std::strcmp(soft_mask_kernel(D), "wgmma") == 0) {
    launch_soft_mask_backward_sm90(a, D, stream);
    return;
  }
  dispatch_16bit_hd(a.dtype, D, [&](auto t, auto d) { launch_typed<decltype(t), d.value>(a, stream); });
}

}  // namespace unique::cuda

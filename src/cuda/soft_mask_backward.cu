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
    {
      uint32_t qf[D / 16][4];
      load_q_fragments<T, D>(sQ, wl * 16, lane, qf);
      warp_log_weights<T, D>(a, qf, hl_s + sub * PT * D / 2, tau_s, row0, wl * 16, kt_sub, lane, my_bias);
    }
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

      // (e) dbias = column sums of dS^T over the page's keys.
#pragma unroll
      for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float x = dpt[nt][c] + dpt[nt][2 + c];
          x += __shfl_xor_sync(0xffffffffu, x, 4);
          x += __shfl_xor_sync(0xffffffffu, x, 8);
          x += __shfl_xor_sync(0xffffffffu, x, 16);
          if (g == 0 && x != 0.0f) atomicAdd(&my_dbias[(nt * 8 + 2 * t4 + c) * PT + my_page], x);
        }
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
    for (int i = tid; i < 2 * kTile * npg; i += kBThreads) {
      // i = (s2 npg + pi) kTile + r
      const int r = i % kTile, sp = i / kTile, s2 = sp >= npg, pi = sp - s2 * npg;
      const int o = (s2 * kTile + r) * PT + pi;
      const float lw = bias_s[o];
      dbias_s[o] = lw == 0.0f ? 0.0f : dbias_s[o] * (1.0f - __expf(lw)) * a.inv_T * a.scale;
    }
    __syncthreads();

    // (g) dQ = c dS K + dx c (mu + alpha sign(q) sigma) for query rows [16 wl, 16 wl + 16),
    // channels [sub * D / 2, (sub + 1) * D / 2), over the block's 128 keys, in chunks of 32
    // channels (few live registers next to dk/dv).
    {
      constexpr int DH = D / 2, DQ = 32;
      // Page term on tensor cores, one n8 tile of channels at a time: DX [16 rows x pages]
      // times mu / sigma [pages x 8], both split hi + lo, packed into one k16 step per
      // sub-tile (<= 4 pages each): k 0-3 DXhi x mu_hi, 4-7 DXlo x mu_hi, 8-11 DXhi x mu_lo,
      // 12-15 DXlo x mu_lo. Lane t4 holds A/B k rows 2 t4, 2 t4 + 1 (+ 8): pages p0, p0 + 1
      // (B: their split mu/sigma of channel dn, the halves picked out of hl_s by byte_perm).
      const int p0 = 2 * (t4 & 1);
      uint32_t xa[2][2];  // A fragment registers {0, 2} and {1, 3} are equal
#pragma unroll
      for (int s2 = 0; s2 < 2; ++s2) {
        const float* xs = dbias_s + s2 * kTile * PT;
        const int r = wl * 16 + g;
        const float y0 = p0 < npg ? xs[r * PT + p0] : 0.0f;
        const float y1 = p0 + 1 < npg ? xs[r * PT + p0 + 1] : 0.0f;
        const float y2 = p0 < npg ? xs[(r + 8) * PT + p0] : 0.0f;
        const float y3 = p0 + 1 < npg ? xs[(r + 8) * PT + p0 + 1] : 0.0f;
        uint32_t h01, l01, h23, l23;
        split2<T>(y0, y1, h01, l01);
        split2<T>(y2, y3, h23, l23);
        xa[s2][0] = t4 < 2 ? h01 : l01;
        xa[s2][1] = t4 < 2 ? h23 : l23;
      }
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
          for (int s2 = 0; s2 < 2; ++s2) {
            const uint4* hs = hl_s + s2 * PT * D / 2 + dn / 2;
            const uint4 z = make_uint4(0, 0, 0, 0);
            const uint4 w0 = p0 < npg ? hs[p0 * D / 2] : z, w1 = p0 + 1 < npg ? hs[(p0 + 1) * D / 2] : z;
            const uint32_t sel = (dn & 1) ? 0x7632u : 0x5410u;
            const uint32_t bm[2] = {__byte_perm(w0.x, w1.x, sel), __byte_perm(w0.y, w1.y, sel)};
            const uint32_t bs[2] = {__byte_perm(w0.z, w1.z, sel), __byte_perm(w0.w, w1.w, sel)};
            const uint32_t xf[4] = {xa[s2][0], xa[s2][1], xa[s2][0], xa[s2][1]};
            mma16816<T>(pm, xf, bm);
            mma16816<T>(ps, xf, bs);
          }
          // sign(q) of the lane's 2 x 2 outputs: q pairs (channels 2 t4, 2 t4 + 1) of rows g and
          // g + 8 are one 32-bit word each (the swizzle of both rows is chunk ^ g).
          const uint32_t* q32 = reinterpret_cast<const uint32_t*>(sQ);
          const int qw = ((wl * 16 + g) * CH + ((d0 / 8 + nt) ^ g)) * 4 + t4;
          const uint32_t qq[2] = {q32[qw], q32[qw + 8 * CH * 4]};
          float x[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const uint32_t bits = (e & 1) ? qq[e / 2] >> 16 : qq[e / 2] & 0xffffu;
            // alpha sign(q) ps: ps with q's sign bit, 0 where q is +-0
            const float sp = (bits & 0x7fffu) ? __uint_as_float(__float_as_uint(ps[e]) ^ ((bits & 0x8000u) << 16)) : 0.0f;
            x[e] = dq[nt][e] * a.scale + pm[e] + a.alpha * sp;
          }
          const int dc = d0 + nt * 8 + 2 * t4;
          if (in0) atomic_add2(dst + dc, x[0], x[1]);
          if (in1) atomic_add2(dst + row_stride + dc, x[2], x[3]);
        }
      }
    }
    // dmu += dx c q, dsigma += dx c alpha |q| over the tile's rows, per (page, channel) of
    // the warp's sub-tile. dmu^T += Q^T DX, dsigma^T += |Q|^T DX (alpha at the end): A = Q^T
    // by transposed ldmatrix of sQ, B = DX [rows x pages] split hi + lo.
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      float x0 = 0.0f, x1 = 0.0f, x2 = 0.0f, x3 = 0.0f;
      if (g < npg) {
        const int r = kk * 16 + 2 * t4;
        x0 = my_dbias[r * PT + g];
        x1 = my_dbias[(r + 1) * PT + g];
        x2 = my_dbias[(r + 8) * PT + g];
        x3 = my_dbias[(r + 9) * PT + g];
      }
      uint32_t bh[2], bl[2];
      split2<T>(x0, x1, bh[0], bl[0]);
      split2<T>(x2, x3, bh[1], bl[1]);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint32_t x[4];
        ldmatrix_x4_trans(x, sQ + swz(kk * 16 + (m8 % 2) * 8 + lane % 8, (wl * MT + mt) * 2 + m8 / 2, CH) * 8);
        const uint32_t qa[4] = {x[0], x[2], x[1], x[3]};
        const uint32_t aa[4] = {x[0] & 0x7fff7fffu, x[2] & 0x7fff7fffu, x[1] & 0x7fff7fffu, x[3] & 0x7fff7fffu};
        mma16816<T>(dmu_acc[mt], qa, bh);
        mma16816<T>(dmu_acc[mt], qa, bl);
        mma16816<T>(dsig_acc[mt], aa, bh);
        mma16816<T>(dsig_acc[mt], aa, bl);
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this stage; sdS, dbias_s, row constants
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
      const int pi = 2 * t4 + (e & 1), d = (wl * MT + mt) * 16 + g + 8 * (e / 2);
      const int j = kt_sub * npg + pi;
      if (pi >= npg || j >= a.NC) continue;
      const int64_t o = ((int64_t(b) * a.Hkv + h) * a.NC + j) * D + d;
      if (dmu_acc[mt][e] != 0.0f) atomicAdd(a.dmu + o, dmu_acc[mt][e]);
      if (dsig_acc[mt][e] != 0.0f) atomicAdd(a.dsig + o, dsig_acc[mt][e] * a.alpha);
    }
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
  if (a.dtype == DType::bf16) {
    if (D == 64) launch_typed<bf16, 64>(a, stream);
    else launch_typed<bf16, 128>(a, stream);
  } else {
    if (D == 64) launch_typed<f16, 64>(a, stream);
    else launch_typed<f16, 128>(a, stream);
  }
}

}  // namespace unique::cuda

// Soft-mask attention backward on Hopper warpgroup MMA (wgmma, sm_90a), the default on sm_90
// devices (UNIQUE_SOFT_MASK_KERNEL=mma|wgmma forces one; soft_mask_backward.cu launches).
//
// Why a second kernel: the mma.sync backward issues every operand fragment through
// ldmatrix, one 16x8x16 MMA at a time, and holds dK, dV, S and dP in 255 registers; Nsight
// showed it issue-bound at 0.34 instructions per cycle per scheduler with HMMA 9.5% of its
// instructions (~110 TFLOP/s). Here every attention product is a wgmma whose shared-memory
// operands the tensor cores read themselves.
//
// Same schedule as the mma.sync kernel: one 256-thread block per (128 keys, query head);
// warpgroup w owns keys [64 w, 64 w + 64) of the block and keeps their dK and dV in
// registers while the block walks the 64-row query tiles from the diagonal down (Q, dO,
// abs(Q) and the rows' lse / delta / tau double-buffered with cp.async). Per query tile and
// warpgroup, all on wgmma:
//   page scores [Q, abs(Q)] x [mu, sigma]^T (m64n8, B = SoftMaskArgs::pb), then
//   S^T = K_w Q^T, dP^T = V_w dO^T   m64n64, A and B K-major in shared memory;
//   log m from the page scores while S^T / dP^T run;
//   P^T = exp(S^T c + log m - lse), dS^T = P^T (dP^T - delta)       (registers)
//   dV_w += P^T dO, dK_w += dS^T Q   m64nD, A = P^T / dS^T from registers, B N-major
//   dbias = ones x dS^T (mma.sync, B read back transposed from the dS^T tile), dx
//   dQ = c (alpha sign(q) dx sigma + dS K + dx mu)   m64n64; dS K with A = dS^T as stored
//                                    ([keys][queries]: M-major), B = K N-major; at D 128
//                                    warpgroup w takes channels [64 w, 64 w + 64) over all
//                                    128 keys, at D 64 all channels over its own keys
//   dmu^T += Q^T dx, dsigma^T += abs(Q)^T dx   m64n8, A M-major
// A wgmma accumulator is, per warp, the m16n8 C layout of soft_mask_backward_common.cuh's
// helpers. Q, dO, K, V and dS^T sit in the 128-byte-swizzled canonical layout of wgmma.cuh
// (64-channel slabs of 64 rows).
#include <algorithm>

#include "cuda/soft_mask_backward_common.cuh"
#include "cuda/wgmma.cuh"

namespace unique::cuda {

namespace soft_mask {
namespace {

using namespace sm90;

constexpr int kWG = 2;               // warpgroups per block
constexpr int kKeys = kWG * kTile;   // keys per block
constexpr int kWThreads = kWG * 128;

template <int D>
constexpr size_t tile_bytes() {  // a [64 rows][D] 16-bit tile
  return size_t(kTile) * D * 2;
}
template <int D>
constexpr size_t smem_bytes() {
  return 1024 /* alignment */ + 2 * kWG * tile_bytes<D>() /* K, V */ + 6 * tile_bytes<D>() /* Q, dO, |Q| x 2 */ +
         size_t(kKeys) * kTile * 2 /* dS^T */ + size_t(kWG) * 2 * D * 16 /* page-score B */ +
         size_t(kWG) * 2 * D * 32 /* page-term B */ + size_t(kWG) * 1024 /* dx B */ +
         (size_t(2) * kWG * kTile * kMaxPagesPerTile + kWG * 4 * kTile + 2 * 3 * kTile) * sizeof(float);
}

// Barrier of one warpgroup's 128 threads (ids 1, 2; 0 is __syncthreads).
__device__ __forceinline__ void warpgroup_sync(int wg) { asm volatile("bar.sync %0, 128;\n" ::"r"(wg + 1) : "memory"); }

template <class T, int D>
__global__ void __launch_bounds__(kWThreads, 1) backward_sm90_kernel(const SoftMaskArgs a) {
#ifdef UNIQUE_WGMMA
  constexpr int CH = D / 8;
  constexpr int PT = kMaxPagesPerTile;
  constexpr int MT = D / 64;             // dmu / dsigma: m64 channel tiles
  constexpr bool kSplitChannels = D == 128;
  constexpr uint32_t TB = uint32_t(tile_bytes<D>());
  extern __shared__ uint8_t smem_raw[];
  uint8_t* base = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  uint8_t* sK = base;                    // [warpgroup][D / 64 slabs][64 keys][128 B]
  uint8_t* sV = sK + kWG * TB;
  uint8_t* sQ0 = sV + kWG * TB;          // [2 stages][D / 64][64 rows][128 B]
  uint8_t* sdO0 = sQ0 + 2 * TB;
  uint8_t* sAQ0 = sdO0 + 2 * TB;         // |Q| (SoftMaskArgs::aq), as sQ
  uint8_t* sdS = sAQ0 + 2 * TB;          // dS^T [128 keys][64 queries]
  // The page-score B operands of each warpgroup's pages (SoftMaskArgs::pb: K-major [8
  // columns][D], columns 0-3 the hi halves of pages 0-3, 4-7 their lo halves; mu then sigma).
  uint8_t* sPB = sdS + kKeys * kTile * 2;
  // The dq page-term B operands, N-major [16 k][D]: k rows 0-3 and 4-7 the hi halves of pages
  // 0-3, 8-11 and 12-15 their lo halves (against dx_fragment's k layout); mu then sigma
  // ([warpgroup][2][D / 64 slabs][16][128 B]).
  uint8_t* sPT = sPB + kWG * 2 * D * 16;
  // dx of each warpgroup's pages as the B operand of dmu / dsigma, K-major [8 columns][64
  // rows]: columns 0-3 the hi halves of pages 0-3, 4-7 their lo halves.
  uint8_t* sDX = sPT + kWG * 2 * D * 32;
  float* bias_s = reinterpret_cast<float*>(sDX + kWG * 1024);         // [warpgroup][64][4]
  float* dx_s = bias_s + kWG * kTile * PT;                            // [warpgroup][64][4]: dx * c
  float* part_s = dx_s + kWG * kTile * PT;                            // [8 warps][64]: dS over the warp's keys
  float* rows_s = part_s + kWG * 4 * kTile;  // [2 stages][lse (log2 units), delta, tau][64]

  const int tid = threadIdx.x, wg = tid / 128, wl = (tid / 32) % 4, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4, m8 = lane / 8;
  const int kb = blockIdx.x, hq = blockIdx.y, b = blockIdx.z, h = hq / a.group;
  const int npg = a.npg;
  const int64_t key0 = int64_t(kb) * kKeys;
  const int64_t wkey0 = key0 + wg * kTile;  // the warpgroup's first key
  const int kt_sub = 2 * kb + wg;           // its 64-key tile
  const int num_tiles = (a.L + kTile - 1) / kTile;
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  const T* dO = static_cast<const T*>(a.dout);

  // K/V of the block's keys and the statistics of their pages, once.
  for (int idx = tid; idx < kKeys * CH; idx += kWThreads) {
    const int r = idx / CH, c = idx % CH;
    const int64_t s = key0 + r;
    const bool in = s < a.L;
    const uint32_t o = (r / kTile) * TB + sw128_offset(r % kTile, c, kTile);
    cp_async16(sK + o, in ? K + row_off(a.ks, b, s, h) + c * 8 : K, in ? 16 : 0);
    cp_async16(sV + o, in ? V + row_off(a.vs, b, s, h) + c * 8 : V, in ? 16 : 0);
  }
  {  // the page-score B images of the two 64-key tiles (zeros past the last tile)
    const uint8_t* src = a.pb + ((int64_t(b) * a.Hkv + h) * a.NT + 2 * kb) * (2 * D * 16);
    for (int i = tid; i < kWG * 2 * D; i += kWThreads) {
      const bool in = 2 * kb + i / (2 * D) < a.NT;
      cp_async16(sPB + i * 16, in ? src + i * 16 : a.pb, in ? 16 : 0);
    }
  }
  cp_async_commit();

  // Q and dO tiles: a thread copies chunk lc of rows lr, lr + RSTEP, ... (RSTEP a multiple of
  // 8, so each destination is the first plus whole rows).
  constexpr int RSTEP = kWThreads / CH;
  const int lr = tid / CH, lc = tid % CH;
  const uint32_t dst0 = sw128_offset(lr, lc, kTile);
  const T* q_src = Q + int64_t(b) * a.qs.b + int64_t(hq) * a.qs.h + lc * 8;
  const T* o_src = dO + int64_t(b) * a.dos.b + int64_t(hq) * a.dos.h + lc * 8;
  const T* aq = static_cast<const T*>(a.aq);
  const T* aq_src = aq + int64_t(b) * a.L * a.Hq * D + int64_t(hq) * D + lc * 8;
  const int64_t row_base = (int64_t(b) * a.Hq + hq) * a.L;  // of lse2, delta, tau
  // Q, dO, |Q| and the rows' lse / delta / tau of query tile qt into a stage (zeros past L).
  auto load_q_tile = [&](int qt, int stage) {
#pragma unroll
    for (int i = 0; i < kTile / RSTEP; ++i) {
      const int64_t t = int64_t(qt) * kTile + lr + i * RSTEP;
      const bool in = t < a.L;
      const uint32_t o = stage * TB + dst0 + i * RSTEP * 128;
      cp_async16(sQ0 + o, in ? q_src + t * a.qs.t : Q, in ? 16 : 0);
      cp_async16(sdO0 + o, in ? o_src + t * a.dos.t : dO, in ? 16 : 0);
      cp_async16(sAQ0 + o, in ? aq_src + t * a.Hq * D : aq, in ? 16 : 0);
    }
    for (int i = tid; i < 3 * kTile; i += kWThreads) {
      const int which = i / kTile, r = i % kTile;
      const int64_t t = int64_t(qt) * kTile + r;
      const float* src = which == 0 ? a.lse2 : which == 1 ? a.delta : a.tau;
      cp_async_small<4>(rows_s + (stage * 3 + which) * kTile + r, t < a.L ? src + row_base + t : src, t < a.L ? 4 : 0);
    }
    cp_async_commit();
  };
  const int qt0 = 2 * kb;  // the first query tile that sees any of the block's keys
  cp_async_wait<0>();
  __syncthreads();
  for (int idx = tid; idx < kWG * 16 * D / 2; idx += kWThreads) {
    const int w = idx / (16 * D / 2), r = (idx / (D / 2)) % 16, c2 = idx % (D / 2), p = r % 4, c = 2 * c2;
    const int j = (2 * kb + w) * npg + p;  // the page
    const uint4 u = p < npg && j < a.NC ? a.hl[((int64_t(b) * a.Hkv + h) * a.NC + j) * (D / 2) + c2] : make_uint4(0, 0, 0, 0);
    const uint32_t o = w * 2 * D * 32 + (c / 64) * 2048 + r * 128 + ((((c % 64) / 8) ^ (r % 8)) << 4) + (c % 8) * 2;
    *reinterpret_cast<uint32_t*>(sPT + o) = r < 8 ? u.x : u.y;
    *reinterpret_cast<uint32_t*>(sPT + o + D * 32) = r < 8 ? u.z : u.w;
  }
  for (int i = tid; i < kWG * 1024 / 16; i += kWThreads) reinterpret_cast<uint4*>(sDX)[i] = make_uint4(0, 0, 0, 0);
  load_q_tile(qt0, 0);

  // K-major operands ([64 rows][D] as slabs): k-step j is 32 bytes along the rows, a new slab
  // every 4 steps. N/M-major ones: k-step = 16 rows = 2048 bytes; slabs are the 64-wide groups.
  auto koff = [](int j) { return uint32_t((j / 4) * kTile * 128 + (j % 4) * 32); };
  const int c0 = kSplitChannels ? wg * 64 : 0;  // the warpgroup's dQ channels [c0, c0 + 64)
  const Desc k_a = sw128_desc(smem_addr(sK + wg * TB), 16, 1024);
  const Desc v_a = sw128_desc(smem_addr(sV + wg * TB), 16, 1024);
  const Desc q_b = sw128_desc(smem_addr(sQ0), 16, 1024);
  const Desc do_b = sw128_desc(smem_addr(sdO0), 16, 1024);
  const Desc q_bn = sw128_desc(smem_addr(sQ0), kTile * 128, 1024);
  const Desc do_bn = sw128_desc(smem_addr(sdO0), kTile * 128, 1024);
  const Desc ds_a = sw128_desc(smem_addr(sdS), kKeys * 128, 1024);
  const Desc k_bn = sw128_desc(smem_addr(sK), kTile * 128, 1024);
  const Desc aq_a = sw128_desc(smem_addr(sAQ0), 16, 1024);
  const Desc mu_b = sw128_desc(smem_addr(sPB + wg * 2 * D * 16), 16, 1024);
  const Desc sig_b = desc_advance(mu_b, D * 16);
  auto koff8 = [](int j) { return uint32_t((j / 4) * 1024 + (j % 4) * 32); };  // [8 rows][D] operands
  // Page-term B of sub-tile s, the warpgroup's dQ channel slab; dx B of the warpgroup.
  auto pt_desc = [&](int s, int sig) {
    return sw128_desc(smem_addr(sPT + s * 2 * D * 32 + sig * D * 32 + (c0 / 64) * 2048), 2048, 1024);
  };
  const Desc dx_b = sw128_desc(smem_addr(sDX + wg * 1024), 16, 1024);
  // Q^T and |Q|^T as the M-major A of dmu / dsigma: the same descriptor form as an N-major B
  // (q_bn), rows along k.
  const Desc aqt_a = sw128_desc(smem_addr(sAQ0), kTile * 128, 1024);

  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  float dmu_acc[MT][4] = {}, dsig_acc[MT][4] = {};
  const int my_page = (wl * 16) >> a.pshift;  // the page (within the 64-key tile) of the warp's keys
  float* my_bias = bias_s + wg * kTile * PT;
  float* my_dx = dx_s + wg * kTile * PT;

  for (int qt = qt0; qt < num_tiles; ++qt) {
    const int64_t row0 = int64_t(qt) * kTile;
    const uint32_t so = ((qt - qt0) & 1) * TB;  // this tile's stage (Q, dO, |Q|)
    const uint8_t* sQ = sQ0 + so;
    const int stage = (qt - qt0) & 1;
    const float* lse_s = rows_s + stage * 3 * kTile;
    const float* delta_s = lse_s + kTile;
    const float* tau_s = delta_s + kTile;
    cp_async_wait<0>();  // this tile's stage (the only group in flight)
    fence_proxy_async();
    // Everyone's part has landed, and every thread is done with the previous tile (whose stage
    // the prefetch below refills; sdS, part_s, dx_s and sDX are rewritten only after this).
    __syncthreads();
    if (qt + 1 < num_tiles) load_q_tile(qt + 1, stage ^ 1);

    // Both warpgroups run every step of every tile: on the block's first query tile warpgroup 1's
    // keys all lie above the diagonal, so its P and dS are masked to 0 and it adds nothing (one
    // tile in L / 64); a warpgroup skipping steps made ptxas serialise the wgmma (C7520) and
    // racecheck mis-pair the named barriers.
    uint32_t sa[kTile / 16][4];  // dS^T as A fragments
    {
      float st[kTile / 8][4], dpt[kTile / 8][4], dot[4], off[4];
      wgmma_fence();
      // The page scores [Q, |Q|] x [mu, sigma]^T (64 rows x 8 columns: hi / lo halves of the
      // warpgroup's pages), then S^T and dP^T in a second group.
#pragma unroll
      for (int j = 0; j < D / 16; ++j) mma_ss<T, 8>(dot, desc_advance(q_b, so + koff(j)), desc_advance(mu_b, koff8(j)), j > 0);
#pragma unroll
      for (int j = 0; j < D / 16; ++j) mma_ss<T, 8>(off, desc_advance(aq_a, so + koff(j)), desc_advance(sig_b, koff8(j)), j > 0);
      wgmma_commit();
#pragma unroll
      for (int j = 0; j < D / 16; ++j) mma_ss<T, kTile>(&st[0][0], desc_advance(k_a, koff(j)), desc_advance(q_b, so + koff(j)), j > 0);
#pragma unroll
      for (int j = 0; j < D / 16; ++j) mma_ss<T, kTile>(&dpt[0][0], desc_advance(v_a, koff(j)), desc_advance(do_b, so + koff(j)), j > 0);
      wgmma_commit();
      // The page bias of rows [16 wl, 16 wl + 16) while S^T and dP^T run.
      wgmma_wait<1>();
      fence_regs<4>(dot);
      fence_regs<4>(off);
      store_log_weights(a, dot, off, tau_s, row0, wl * 16, kt_sub, lane, my_bias);
      warpgroup_sync(wg);
      wgmma_wait<0>();
      fence_regs<kTile / 2>(&st[0][0]);
      fence_regs<kTile / 2>(&dpt[0][0]);

      // Causal / length masks only where a key may follow a row or a row may be past L.
      const int64_t kw = wkey0 + wl * 16;  // the warp's first key
      const bool masked = kw + 15 > row0 || row0 + kTile > a.L;
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
            const int64_t key = kw + g + 8 * (e / 2), t = row0 + q0 + (e & 1);
            if (!(t < a.L && key <= t)) p = 0.0f;
          }
          st[nt][e] = p;
          dpt[nt][e] = p * (dpt[nt][e] - dl[e & 1]);
        }
      }
      uint32_t pa[kTile / 16][4];
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
        c_to_a_fragment<T>(st[2 * kk], st[2 * kk + 1], pa[kk]);
        c_to_a_fragment<T>(dpt[2 * kk], dpt[2 * kk + 1], sa[kk]);
      }
      // dV += P^T dO, dK += dS^T Q (dO, Q as N-major B: k = query rows).
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) mma_rs<T, D, 1>(&dv[0][0], pa[kk], desc_advance(do_bn, so + kk * 2048), 1);
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) mma_rs<T, D, 1>(&dk[0][0], sa[kk], desc_advance(q_bn, so + kk * 2048), 1);
      wgmma_commit();
    }
    // dS^T to shared memory for dQ: rows = the warpgroup's keys, 128-byte rows of 64 queries
    // (the A fragment's registers: rows g / g + 8, query pairs 16 kk + 2 t4 (+ 8)).
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int kl = wg * kTile + wl * 16 + g + 8 * (r & 1), chunk = 2 * kk + r / 2;
        *reinterpret_cast<uint32_t*>(sdS + kl * 128 + ((chunk ^ g) << 4) + t4 * 4) = sa[kk][r];
      }
    fence_proxy_async();
    // dbias = column sums of dS^T over each page's keys: the warp's 16 keys (one page or
    // part of one) summed on tensor cores as ones x dS^T, B read back transposed from sdS.
    __syncwarp();
    {
      const uint32_t one = pack2<T>(1.0f, 1.0f);
      const uint32_t ones[4] = {one, one, one, one};
      float cs[kTile / 8][4] = {};
#pragma unroll
      for (int j = 0; j < kTile / 16; ++j) {
        uint32_t bq[4];
        const int kl = wg * kTile + wl * 16 + (m8 % 2) * 8 + lane % 8, chunk = 2 * j + m8 / 2;
        ldmatrix_x4_trans(bq, sdS + kl * 128 + ((chunk ^ (lane % 8)) << 4));
        mma16816<T>(cs[2 * j], ones, bq);
        mma16816<T>(cs[2 * j + 1], ones, bq + 2);
      }
      if (g == 0)  // every row of the product is the same sum
#pragma unroll
        for (int nt = 0; nt < kTile / 8; ++nt)
          *reinterpret_cast<float2*>(part_s + (tid / 32) * kTile + nt * 8 + 2 * t4) = make_float2(cs[nt][0], cs[nt][1]);
    }
    warpgroup_sync(wg);  // the warpgroup's sums are complete
    // dx = dbias (1 - m) / T (0 for non-candidates, m = 1); c is
    // applied to dq and dmu / dsigma at the end. Also as the split B operand of dmu / dsigma.
    for (int i = tid % 128; i < kTile * npg; i += 128) {
      const int r = i % kTile, pi = i / kTile, o = r * PT + pi, wpp = 4 / npg;  // warps per page
      float x = 0.0f;
      for (int w = 0; w < wpp; ++w) x += part_s[(wg * 4 + pi * wpp + w) * kTile + r];
      const float lw = my_bias[o];
      x = lw == 0.0f ? 0.0f : x * (1.0f - __expf(lw)) * a.inv_T;
      my_dx[o] = x;
      const T hi = from_f<T>(x), lo = from_f<T>(x - to_f(hi));
      auto at = [&](int n) { return sDX + wg * 1024 + n * 128 + (((r / 8) ^ n) << 4) + (r % 8) * 2; };  // (column n, row r)
      *reinterpret_cast<T*>(at(pi)) = hi;
      *reinterpret_cast<T*>(at(4 + pi)) = lo;
    }
    fence_proxy_async();
    __syncthreads();  // dS^T and dx of both warpgroups

    // dQ = c (dS K + dx mu + alpha sign(q) dx sigma) for query rows [16 wl, 16 wl + 16),
    // channels [c0, c0 + 64): the sigma term first (it needs sign(q) per element), then dS K
    // and the mu term accumulate onto it. dmu^T += Q^T dx, dsigma^T += |Q|^T dx (the warpgroup's
    // pages; A = Q^T: M-major) run behind the sigma term.
    {
      constexpr int NS = kSplitChannels ? kWG : 1;  // sub-tiles whose keys this dQ covers
      const int s_first = kSplitChannels ? 0 : wg;
      uint32_t xa[NS][4];
#pragma unroll
      for (int s = 0; s < NS; ++s) {
        uint32_t x2[2];
        dx_fragment<T>(dx_s + (s_first + s) * kTile * PT, wl * 16, g, t4, npg, x2);
        xa[s][0] = xa[s][2] = x2[0];
        xa[s][1] = xa[s][3] = x2[1];
      }
      float dq[8][4];
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < NS; ++s) mma_rs<T, 64, 1>(&dq[0][0], xa[s], pt_desc(s_first + s, 1), s > 0);
      wgmma_commit();
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < kTile / 16; ++j) {
          const uint32_t ao = so + mt * kTile * 128 + j * 2048;
          mma_ss<T, 8, 1>(dmu_acc[mt], desc_advance(q_bn, ao), desc_advance(dx_b, j * 32), 1);
          mma_ss<T, 8, 1>(dsig_acc[mt], desc_advance(aqt_a, ao), desc_advance(dx_b, j * 32), 1);
        }
      wgmma_commit();
      wgmma_wait<1>();
      fence_regs<32>(&dq[0][0]);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        // q pairs (channels 2 t4, 2 t4 + 1) of rows g and g + 8 (same swizzle: g == g + 8 mod 8).
        const uint8_t* qp = sQ + sw128_offset(wl * 16 + g, c0 / 8 + nt, kTile) + t4 * 4;
        const uint32_t qq[2] = {*reinterpret_cast<const uint32_t*>(qp), *reinterpret_cast<const uint32_t*>(qp + 8 * 128)};
#pragma unroll
        for (int e = 0; e < 4; ++e) dq[nt][e] = a.alpha * times_sign_q(dq[nt][e], qq, e);
      }
      wgmma_fence();
      if constexpr (kSplitChannels) {
#pragma unroll
        for (int kk = 0; kk < kKeys / 16; ++kk)
          mma_ss<T, 64, 1, 1>(&dq[0][0], desc_advance(ds_a, kk * 2048),
                              desc_advance(k_bn, (kk / 4) * TB + wg * kTile * 128 + (kk % 4) * 2048), 1);
      } else {
#pragma unroll
        for (int kk = 0; kk < kTile / 16; ++kk)
          mma_ss<T, 64, 1, 1>(&dq[0][0], desc_advance(ds_a, (wg * 4 + kk) * 2048), desc_advance(k_bn, wg * TB + kk * 2048),
                              1);
      }
#pragma unroll
      for (int s = 0; s < NS; ++s) mma_rs<T, 64, 1>(&dq[0][0], xa[s], pt_desc(s_first + s, 0), 1);
      wgmma_commit();
      const int64_t t_a = row0 + wl * 16 + g;
      float* const dst = a.dq_acc + ((int64_t(b) * a.L + (t_a < a.L ? t_a : 0)) * a.Hq + hq) * D;
      const int64_t row_stride = int64_t(8) * a.Hq * D;  // row t_a + 8
      const bool in0 = t_a < a.L, in1 = t_a + 8 < a.L;
      wgmma_wait<0>();
      fence_regs<32>(&dq[0][0]);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int dc = c0 + nt * 8 + 2 * t4;
        if (in0) atomic_add2(dst + dc, dq[nt][0] * a.scale, dq[nt][1] * a.scale);
        if (in1) atomic_add2(dst + row_stride + dc, dq[nt][2] * a.scale, dq[nt][3] * a.scale);
      }
    }
  }
  write_dk_dv<D>(a, b, h, wkey0 + wl * 16, g, t4, dk, dv);
  // dmu / dsigma: m64n8 tile mt holds channels 64 mt + (rows), columns 2 t4, 2 t4 + 1 = the hi
  // halves of pages 2 t4.. (t4 < 2) or the lo halves (t4 >= 2, lane t4 ^ 2's pages).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float m = dmu_acc[mt][e] + __shfl_xor_sync(0xffffffffu, dmu_acc[mt][e], 2);
      const float sg = dsig_acc[mt][e] + __shfl_xor_sync(0xffffffffu, dsig_acc[mt][e], 2);
      if (t4 < 2)
        add_page_grads<D>(a, b, h, kt_sub, 2 * t4 + (e & 1), mt * 64 + wl * 16 + g + 8 * (e / 2), m * a.scale,
                          sg * a.scale);
    }
#endif
}

template <class T, int D>
void launch_typed(const SoftMaskArgs& a, cudaStream_t stream) {
  constexpr size_t smem = smem_bytes<D>();
  auto kernel = backward_sm90_kernel<T, D>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((a.L + kKeys - 1) / kKeys, a.Hq, a.B);
  kernel<<<grid, kWThreads, smem, stream>>>(a);
  UNIQUE_CUDA_LAUNCH("soft_mask backward_sm90_kernel");
}

}  // namespace
}  // namespace soft_mask

size_t soft_mask_backward_sm90_smem(int D) {
  return D == 64 ? soft_mask::smem_bytes<64>() : soft_mask::smem_bytes<128>();
}

void launch_soft_mask_backward_sm90(const SoftMaskArgs& a, int D, cudaStream_t stream) {
  using namespace soft_mask;
  dispatch_16bit_hd(a.dtype, D, [&](auto t, auto d) { launch_typed<decltype(t), d.value>(a, stream); });
}

}  // namespace unique::cuda

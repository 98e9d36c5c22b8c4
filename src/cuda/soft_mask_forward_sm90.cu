// Soft-mask attention forward on Hopper warpgroup MMA (wgmma, sm_90a), the default on sm_90
// devices (UNIQUE_SOFT_MASK_KERNEL=mma|wgmma forces a kernel; soft_mask_forward.cu launches).
//
// The dense causal prefill kernel's scheme (prefill_attention_sm90.cu: 256-thread blocks of two
// warpgroups x 64 query rows, Q and 64-key K/V tiles in 128-byte-swizzled shared memory through
// a 4-stage cp.async ring two tiles ahead, S = Q K^T and O += P V as wgmma, P V of tile i - 1
// running during tile i's softmax) plus the page bias: per key tile the scores of its pages
// [Q, |Q|] x [mu, sigma]^T are one more small wgmma group (m64n8: the hi / lo halves of the
// tile's <= 4 pages, B = the tile's image in SoftMaskArgs::pb, streamed with K/V), issued before
// S; log m = log_sigmoid((c s - tau) / T) of the lane's rows and pages is computed in
// registers while S runs and spread over the quad by shuffles (no shared-memory round trip).
#include <algorithm>

#include "cuda/soft_mask_common.cuh"
#include "cuda/wgmma.cuh"

namespace unique::cuda {

namespace soft_mask {
namespace {

using namespace sm90;

constexpr int kWG = 2;            // warpgroups per block
constexpr int kRows = 64;         // query rows per warpgroup
constexpr int kBQ = kWG * kRows;  // query rows per block
constexpr int kBK = 64;           // keys per tile
constexpr int kStages = 4;        // tile i computes, i - 1's V is in use, i + 1 and i + 2 load
constexpr int kWThreads = kWG * 128;

template <int D>
constexpr size_t smem_bytes() {  // alignment + Q, |Q| + ring of K, V, page-score images
  return 1024 + 2 * size_t(kBQ) * D * 2 + kStages * (2 * size_t(kBK) * D * 2 + 2 * D * 16);
}

template <class T, int D>
__global__ void __launch_bounds__(kWThreads, 1) forward_sm90_kernel(const SoftMaskArgs a) {
#ifdef UNIQUE_WGMMA
  constexpr int CH = D / 8;
  constexpr uint32_t TB = kBK * D * 2, PBB = 2 * D * 16;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* base = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  uint8_t* sQ = base;                 // [warpgroup][D / 64 slabs][64 rows][128 B]
  uint8_t* sAQ = sQ + kBQ * D * 2;    // |Q|, the same layout
  uint8_t* sK = sAQ + kBQ * D * 2;    // [stage][D / 64][64 keys][128 B]
  uint8_t* sV = sK + kStages * TB;
  uint8_t* sPB = sV + kStages * TB;   // [stage][mu, sigma][D / 64][8][128 B]

  const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int hq = blockIdx.y, b = blockIdx.z, h = hq / a.group;
  const int bt = (a.L - 1) / kBQ - static_cast<int>(blockIdx.x);  // heaviest (last) rows first
  const int64_t row0 = int64_t(bt) * kBQ;
  const int n_tiles = static_cast<int>((std::min<int64_t>(row0 + kBQ, a.L) - 1) / kBK) + 1;
  // The last key tile each warpgroup's rows see (-1: no rows in the sequence).
  int wg_last[kWG];
#pragma unroll
  for (int w = 0; w < kWG; ++w) {
    const int64_t r0 = row0 + w * kRows;
    wg_last[w] = r0 < a.L ? static_cast<int>((std::min<int64_t>(r0 + kRows, a.L) - 1) / kBK) : -1;
  }

  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  constexpr int kRowStep = kWThreads / CH;  // a multiple of 8
  const int c = tid % CH, r0 = tid / CH;
  const uint32_t dst0 = sw128_offset(r0, c, kBK);
  const T* k_src = K + int64_t(b) * a.ks.b + int64_t(h) * a.ks.h + c * 8;
  const T* v_src = V + int64_t(b) * a.vs.b + int64_t(h) * a.vs.h + c * 8;
  const uint8_t* pb_src = a.pb + (int64_t(b) * a.Hkv + h) * a.NT * PBB;
  auto load_tile = [&](int i) {
    if (i < n_tiles) {
      const uint32_t st = i % kStages;
#pragma unroll
      for (int k = 0; k < kBK / kRowStep; ++k) {
        const int64_t s = int64_t(i) * kBK + r0 + k * kRowStep;
        const bool in = s < a.L;
        const uint32_t o = st * TB + dst0 + k * kRowStep * 128;
        cp_async16(sK + o, in ? k_src + s * a.ks.t : K, in ? 16 : 0);
        cp_async16(sV + o, in ? v_src + s * a.vs.t : V, in ? 16 : 0);
      }
      for (int j = tid; j < int(PBB / 16); j += kWThreads) cp_async16(sPB + st * PBB + j * 16, pb_src + i * PBB + j * 16, 16);
    }
    cp_async_commit();  // one group per tile index, empty past the end, so the counts line up
  };
#pragma unroll
  for (int i = 0; i < kStages - 2; ++i) load_tile(i);

  // Q (zeros past the sequence) and |Q| once.
  const T* Q = static_cast<const T*>(a.q);
  for (int idx = tid; idx < kBQ * CH; idx += kWThreads) {
    const int r = idx / CH, ch = idx % CH;
    const int64_t t = row0 + r;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (t < a.L) {
      const T* src = Q + row_off(a.qs, b, t, hq) + ch * 8;
      uint32_t w[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) w[e] = uint32_t(src[2 * e].bits) | (uint32_t(src[2 * e + 1].bits) << 16);
      v = make_uint4(w[0], w[1], w[2], w[3]);
    }
    const uint32_t o = (r / kRows) * kRows * D * 2 + sw128_offset(r % kRows, ch, kRows);
    *reinterpret_cast<uint4*>(sQ + o) = v;
    *reinterpret_cast<uint4*>(sAQ + o) = make_uint4(v.x & 0x7fff7fffu, v.y & 0x7fff7fffu, v.z & 0x7fff7fffu, v.w & 0x7fff7fffu);
  }
  fence_proxy_async();

  const Desc q_desc = sw128_desc(smem_addr(sQ + wg * kRows * D * 2), 16, 1024);
  const Desc aq_desc = sw128_desc(smem_addr(sAQ + wg * kRows * D * 2), 16, 1024);
  const Desc k_desc = sw128_desc(smem_addr(sK), 16, 1024);
  const Desc v_desc = sw128_desc(smem_addr(sV), kBK * 128, 1024);
  const Desc pb_desc = sw128_desc(smem_addr(sPB), 16, 1024);
  auto koff = [](int j) { return uint32_t((j / 4) * kRows * 128 + (j % 4) * 32); };  // [64][D] operands
  auto koff8 = [](int j) { return uint32_t((j / 4) * 1024 + (j % 4) * 32); };        // [8][D] operands

  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int64_t wg_row0 = row0 + wg * kRows;
  const int64_t my_row[2] = {wg_row0 + warp * 16 + g, wg_row0 + warp * 16 + g + 8};
  float tau[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) tau[r] = my_row[r] < a.L ? a.tau[(int64_t(b) * a.Hq + hq) * a.L + my_row[r]] : -INFINITY;
  const int pg_shift = a.pshift - 3;  // an n8 column tile's page: nt >> pg_shift

  uint32_t pa[kBK / 16][4] = {};
  bool pending = false;
  uint32_t pending_off = 0;
  auto issue_pv = [&]() {
    fence_regs<D / 2>(&o[0][0]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) mma_rs<T, D, 1>(&o[0][0], pa[kk], desc_advance(v_desc, pending_off + kk * 2048), 1);
    wgmma_commit();
  };

  for (int i = 0; i < n_tiles; ++i) {
    cp_async_wait<kStages - 3>();  // tile i has landed (this thread's part)
    fence_proxy_async();
    __syncthreads();  // everyone's part; every P V of tile i - 2 is done, so its stage is free
    if (i > wg_last[wg]) {
      load_tile(i + kStages - 2);
      if (pending) {  // the stage of the pending tile is reloaded two tiles from now
        issue_pv();
        wgmma_wait<0>();
        fence_regs<D / 2>(&o[0][0]);
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk) pa[kk][0] = pa[kk][1] = pa[kk][2] = pa[kk][3] = 0u;
        pending = false;
      }
      continue;
    }
    const uint32_t stage_off = (i % kStages) * TB, pb_off = (i % kStages) * PBB;
    // Diagonal tiles are a separate instantiation (ptxas waits for every in-flight wgmma
    // where divergent paths merge).
    auto step = [&](auto masked) {
      float s[kBK / 8][4], dot[4], off[4];
      wgmma_fence();
#pragma unroll
      for (int j = 0; j < D / 16; ++j) mma_ss<T, 8>(dot, desc_advance(q_desc, koff(j)), desc_advance(pb_desc, pb_off + koff8(j)), j > 0);
#pragma unroll
      for (int j = 0; j < D / 16; ++j)
        mma_ss<T, 8>(off, desc_advance(aq_desc, koff(j)), desc_advance(pb_desc, pb_off + D * 16 + koff8(j)), j > 0);
      wgmma_commit();
#pragma unroll
      for (int j = 0; j < D / 16; ++j)
        mma_ss<T, kBK>(&s[0][0], desc_advance(q_desc, koff(j)), desc_advance(k_desc, stage_off + koff(j)), j > 0);
      wgmma_commit();
      load_tile(i + kStages - 2);

      // log m (log2 units) of the lane's rows and pages while S runs: lanes t4 and t4 ^ 2 hold
      // the hi / lo column halves of pages 2 (t4 & 1), +1; their sum is the score.
      wgmma_wait<1>();
      fence_regs<4>(dot);
      fence_regs<4>(off);
      float lw[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float sc = a.scale * (dot[e] + __shfl_xor_sync(0xffffffffu, dot[e], 2) +
                                    a.alpha * (off[e] + __shfl_xor_sync(0xffffffffu, off[e], 2)));
        const int pi = 2 * (t4 & 1) + (e & 1), j = i * a.npg + pi;
        const int64_t t = my_row[e / 2];
        const float tr = tau[e / 2];
        lw[e] = 0.0f;
        if (pi < a.npg && t < a.L && tr != -INFINITY && j >= a.sink && j <= last_candidate(a, t))
          lw[e] = log_sigmoid((sc - tr) * a.inv_T) * kLog2e;
      }
      // bias[r][p]: page p of row r, from quad lane 0 (pages 0, 1) and 1 (pages 2, 3).
      float bias[2][4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        bias[e / 2][e & 1] = __shfl_sync(0xffffffffu, lw[e], lane & ~3);
        bias[e / 2][2 + (e & 1)] = __shfl_sync(0xffffffffu, lw[e], (lane & ~3) | 1);
      }

      wgmma_wait<0>();
      fence_regs<kBK / 2>(&s[0][0]);
      // Nothing pending: pa is zero, so P V over this tile's (finite) V adds nothing and the
      // issue stays unconditional (a wgmma under a divergent branch serialises them all).
      if (!pending) pending_off = stage_off;
      issue_pv();

      // Logits in log2 units with the page bias; mask (diagonal tiles only); online softmax.
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < kBK / 8; ++nt) {
        const int p = nt >> pg_shift;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float bw = p == 0 ? bias[r][0] : p == 1 ? bias[r][1] : p == 2 ? bias[r][2] : bias[r][3];
#pragma unroll
          for (int c2 = 0; c2 < 2; ++c2) {
            float x = fmaf(s[nt][2 * r + c2], a.scale_log2, bw);
            if constexpr (decltype(masked)::value)
              if (int64_t(i) * kBK + nt * 8 + 2 * t4 + c2 > my_row[r]) x = -INFINITY;
            s[nt][2 * r + c2] = x;
            mx[r] = fmaxf(mx[r], x);
          }
        }
      }
      float corr[2], nb[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m[r], mx[r]);
        const float bb = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet
        corr[r] = fast_exp2(m[r] - bb);
        m[r] = m_new;
        l[r] *= corr[r];
        nb[r] = -bb;
      }
      float p[kBK / 8][4], part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int nt = 0; nt < kBK / 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          p[nt][q] = fast_exp2(s[nt][q] + nb[q / 2]);
          part[q] += p[nt][q];
        }
      l[0] += part[0] + part[1];
      l[1] += part[2] + part[3];
      fence_regs<kBK / 2>(&p[0][0]);  // computed before the wait, while that P V runs
      fence_regs<2>(l);
      wgmma_wait<0>();  // the previous P V lands before O is rescaled and pa is rewritten
      fence_regs<D / 2>(&o[0][0]);
      if (__any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f)) scale_rows(o, corr);
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) c_to_a_fragment<T>(p[2 * kk], p[2 * kk + 1], pa[kk]);
    };
    if (int64_t(i + 1) * kBK - 1 > wg_row0) step(std::true_type{});
    else step(std::false_type{});
    pending = true;
    pending_off = stage_off;
  }
  if (pending) {
    issue_pv();
    wgmma_wait<0>();
    fence_regs<D / 2>(&o[0][0]);
  }
  cp_async_wait<0>();

  write_rows<D>(a, b, hq, t4, my_row, o, m, l);
#endif
}

template <class T, int D>
void launch_typed(const SoftMaskArgs& a, cudaStream_t stream) {
  constexpr size_t smem = smem_bytes<D>();
  auto kernel = forward_sm90_kernel<T, D>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((a.L + kBQ - 1) / kBQ, a.Hq, a.B);
  kernel<<<grid, kWThreads, smem, stream>>>(a);
  UNIQUE_CUDA_LAUNCH("soft_mask forward_sm90_kernel");
}

}  // namespace
}  // namespace soft_mask

size_t soft_mask_forward_sm90_smem(int D) {
  return D == 64 ? soft_mask::smem_bytes<64>() : soft_mask::smem_bytes<128>();
}

void launch_soft_mask_forward_sm90(const SoftMaskArgs& a, int D, cudaStream_t stream) {
  using namespace soft_mask;
  dispatch_16bit_hd(a.dtype, D, [&](auto t, auto d) { launch_typed<decltype(t), d.value>(a, stream); });
}

}  // namespace unique::cuda

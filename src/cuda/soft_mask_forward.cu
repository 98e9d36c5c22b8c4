// Soft-mask attention forward: the prefill kernel's flash-attention 2 scheme (one 128-thread
// block per 64-row query tile and query head, Q in registers, K/V tiles double-buffered
// through shared memory with cp.async, QK^T and PV on tensor cores, online softmax in
// exp2) plus one step per key tile: the log page weights of the tile's 64/P pages for the
// block's 64 rows, recomputed on tensor cores from q, the split mu/sigma and tau
// (warp_log_weights, 1/8 of the tile's attention mma) and added to the logits of the page's keys.
#include <algorithm>
#include <cstring>

#include "cuda/soft_mask_common.cuh"

namespace unique::cuda {

namespace soft_mask {
namespace {

// D 64: at most 168 registers, so three 4-warp blocks fit an SM (173 would leave two).
template <class T, int D>
__global__ void __launch_bounds__(kThreads, D == 64 ? 3 : 1) forward_kernel(const SoftMaskArgs a) {
  constexpr int CH = D / 8;
  extern __shared__ uint4 smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kTile * D;
  T* sV = sK + 2 * kTile * D;
  uint4* hl_s = reinterpret_cast<uint4*>(sV + 2 * kTile * D);  // [2 stages][4][D / 2] split mu/sigma
  float* bias_s = reinterpret_cast<float*>(hl_s + 2 * kMaxPagesPerTile * D / 2);  // [64][4]
  float* tau_s = bias_s + kTile * kMaxPagesPerTile;            // [64]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int hq = blockIdx.y, b = blockIdx.z, h = hq / a.group;
  const int num_q_tiles = (a.L + kTile - 1) / kTile;
  const int qt = num_q_tiles - 1 - static_cast<int>(blockIdx.x);  // heaviest first
  const int64_t row0 = int64_t(qt) * kTile;
  const int64_t last_row = std::min<int64_t>(row0 + kTile, a.L) - 1;
  const int n_tiles = static_cast<int>(last_row / kTile) + 1;
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);

  // Each thread copies chunk lc of rows lr, lr + RSTEP, ...: its sources differ per tile
  // only by the row offset (address arithmetic hoisted out of the key-tile loop).
  constexpr int RSTEP = kThreads / CH;
  const int lr = tid / CH, lc = tid % CH;
  const T* k_src = K + int64_t(b) * a.ks.b + int64_t(h) * a.ks.h + lc * 8;
  const T* v_src = V + int64_t(b) * a.vs.b + int64_t(h) * a.vs.h + lc * 8;
  auto load_tile = [&](int tile, int stage) {
    T* dk = sK + stage * kTile * D;
    T* dv = sV + stage * kTile * D;
#pragma unroll
    for (int i = 0; i < kTile / RSTEP; ++i) {
      const int r = lr + i * RSTEP;
      const int64_t s = int64_t(tile) * kTile + r;
      const bool in = s < a.L;
      const int so = swz(r, lc, CH) * 8;
      cp_async16(dk + so, in ? k_src + s * a.ks.t : K, in ? 16 : 0);
      cp_async16(dv + so, in ? v_src + s * a.vs.t : V, in ? 16 : 0);
    }
    load_tile_hl_async<D>(a, b, h, tile, hl_s + stage * kMaxPagesPerTile * D / 2, tid, kThreads);
    cp_async_commit();
  };
  load_tile(0, 0);

  for (int idx = tid; idx < kTile * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    const int64_t t = row0 + r;
    sQ[swz(r, d / 8, CH) * 8 + d % 8] = t < a.L ? Q[row_off(a.qs, b, t, hq) + d] : from_f<T>(0.0f);
  }
  for (int r = tid; r < kTile; r += kThreads) {
    const int64_t t = row0 + r;
    tau_s[r] = t < a.L ? a.tau[(int64_t(b) * a.Hq + hq) * a.L + t] : -INFINITY;
  }
  __syncthreads();
  uint32_t qf[D / 16][4];
  load_q_fragments<T, D>(sQ, warp * 16, lane, qf);

  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int g = lane / 4, t4 = lane % 4;
  const int64_t my_row[2] = {row0 + warp * 16 + g, row0 + warp * 16 + g + 8};

  for (int tile = 0; tile < n_tiles; ++tile) {
    const int stage = tile & 1;
    if (tile + 1 < n_tiles) {
      load_tile(tile + 1, stage ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // tile `tile` (K, V, mu, sigma) visible to all warps
    warp_log_weights<T, D>(
        a, [&](int kk, uint32_t(&f)[4]) { f[0] = qf[kk][0], f[1] = qf[kk][1], f[2] = qf[kk][2], f[3] = qf[kk][3]; },
        hl_s + stage * kMaxPagesPerTile * D / 2, tau_s, row0, warp * 16, tile, lane, bias_s);
    __syncwarp();  // each warp reads only its own 16 rows of bias_s
    const T* k_s = sK + stage * kTile * D;
    const T* v_s = sV + stage * kTile * D;

    float s[kTile / 8][4] = {};
    qk_tile<T, D, kTile>(qf, k_s, lane, s);

    const bool diag = int64_t(tile + 1) * kTile - 1 > row0;
    float mx[2] = {m[0], m[1]};
    const int pshift = __ffs(a.P) - 1;  // P is 16, 32 or 64: the 8 keys of an n8 tile share a page
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt) {
      const int pg = (nt * 8) >> pshift;
      const float bw[2] = {bias_s[(warp * 16 + g) * kMaxPagesPerTile + pg] * kLog2e,
                           bias_s[(warp * 16 + g + 8) * kMaxPagesPerTile + pg] * kLog2e};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kl = nt * 8 + 2 * t4 + (e & 1);  // key within the tile
        const int64_t key = int64_t(tile) * kTile + kl;
        float x = s[nt][e] * a.scale_log2 + bw[e / 2];
        if (diag && (key > my_row[e / 2] || key >= a.L)) x = -INFINITY;
        s[nt][e] = x;
        mx[e / 2] = fmaxf(mx[e / 2], x);
      }
    }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float base = mx[r] == -INFINITY ? 0.0f : mx[r];
      corr[r] = fast_exp2(m[r] - base);
      m[r] = mx[r];
      l[r] *= corr[r];
    }
    scale_rows(o, corr);
#pragma unroll
    for (int nt = 0; nt < kTile / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float base = m[e / 2] == -INFINITY ? 0.0f : m[e / 2];
        const float p = fast_exp2(s[nt][e] - base);
        s[nt][e] = p;
        l[e / 2] += p;
      }
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      uint32_t pa[4];
      c_to_a_fragment<T>(s[2 * kk], s[2 * kk + 1], pa);
      pv_tile<T, D>(pa, v_s, kk, lane, o);
    }
    __syncthreads();  // the next iteration's prefetch, stats and bias overwrite shared memory
  }

  write_rows<D>(a, b, hq, t4, my_row, o, m, l);
}

template <class T, int D>
void launch_typed(const SoftMaskArgs& a, cudaStream_t stream) {
  const size_t smem = size_t(5) * kTile * D * sizeof(T) + size_t(2) * kMaxPagesPerTile * D / 2 * sizeof(uint4) +
                      (kTile * kMaxPagesPerTile + kTile) * sizeof(float);
  auto kernel = forward_kernel<T, D>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((a.L + kTile - 1) / kTile, a.Hq, a.B);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  UNIQUE_CUDA_LAUNCH("soft_mask forward_kernel");
}

}  // namespace
}  // namespace soft_mask

void launch_soft_mask_forward(const SoftMaskArgs& a, int D, cudaStream_t stream) {
  using namespace soft_mask;
  if (std::strcmp(soft_mask_kernel(D), "wgmma") == 0) {
    launch_soft_mask_forward_sm90(a, D, stream);
    return;
  }
  dispatch_16bit_hd(a.dtype, D, [&](auto t, auto d) { launch_typed<decltype(t), d.value>(a, stream); });
}

}  // namespace unique::cuda

// Block-sparse causal prefill attention on Hopper warpgroup MMA (wgmma, sm_90a).
//
// Why a second kernel: the mma.sync kernel (prefill_attention.cu) issues every operand
// fragment through ldmatrix and one 16x8x16 MMA at a time, and its 64-row tiles read each
// K/V tile from L2 once per 64 query rows; it ran at ~150 TFLOP/s on an H100, under half of
// torch's flash kernel. Here a 256-thread block (two warpgroups) owns 128 query rows, so a
// K/V tile read from L2 feeds twice the rows, and S = Q K^T and O += P V are wgmma with both
// K/V operands read by the tensor cores straight from 128-byte-swizzled shared memory
// (Q from shared memory too; P from registers, the FA2 register reuse).
//
// Schedule: K/V tiles of 64 keys stream through a 4-stage cp.async ring, loaded two tiles
// ahead (one barrier per tile); each warpgroup computes only the tiles its 64 rows need:
// every tile up to its own diagonal (dense), or the tiles of its own query block's kept key
// blocks (sparse; the block's list is the union of both warpgroups' lists, one bit per
// warpgroup). Within a warpgroup the tensor cores run tile i - 1's O += P V while the
// warpgroup does tile i's softmax (after tile i's S = Q K^T): only the O rescale waits for
// that P V (FA3's intra-warpgroup overlap, with S waited for first, see below). Online
// softmax in registers with exp2 (log2 e folded into the scale); only diagonal tiles mask.
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "cuda/prefill_epilogue.cuh"
#include "cuda/prefill_kernels.h"
#include "cuda/wgmma.cuh"

namespace unique::cuda {

namespace {

using namespace sm90;

constexpr int kWG = 2;               // warpgroups per block
constexpr int kRows = 64;            // query rows per warpgroup
constexpr int kBQ = kWG * kRows;     // query rows per block
constexpr int kBK = 64;              // keys per tile
constexpr int kStages = 4;  // tile i computes, i - 1's V is in use, i + 1 and i + 2 load
constexpr int kThreads = kWG * 128;

template <int D>
constexpr size_t tile_bytes() {
  return size_t(kBK) * D * 2;
}
template <int D>
constexpr size_t smem_fixed() {  // Q + K/V ring, plus 1 KB to align the base
  return size_t(kBQ) * D * 2 + 2 * kStages * tile_bytes<D>() + 1024;
}

template <class T, int D>
__global__ void __launch_bounds__(kThreads, 1) prefill_attention_sm90_kernel(const PrefillAttentionArgs a) {
#ifdef UNIQUE_WGMMA
  constexpr int CH = D / 8;  // 16-byte chunks per row
  extern __shared__ uint8_t smem_raw[];
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int n_tiles_s;
  // 1024-byte aligned by pointer arithmetic on smem_raw (an integer round trip would lose
  // the shared address space and turn every access into a generic one).
  uint8_t* base = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  uint8_t* sQ = base;
  uint8_t* sK = sQ + size_t(kBQ) * D * 2;
  uint8_t* sV = sK + kStages * tile_bytes<D>();
  int* flags = reinterpret_cast<int*>(sV + kStages * tile_bytes<D>());

  const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
  const int hq = blockIdx.y;
  const int h = hq / a.group;
  const int bt = a.last_q_tile - static_cast<int>(blockIdx.x);  // heaviest (last) rows first
  const int64_t row0 = int64_t(bt) * kBQ;
  const int64_t last_row = std::min<int64_t>(row0 + kBQ, a.kv_len) - 1;
  const int last_key_tile = static_cast<int>(last_row / kBK);
  const int32_t* pages = a.page_indices + a.page_indptr[a.seq];

  // Each warpgroup's rows and the last key tile they see; a warpgroup whose rows all lie
  // before the chunk (q0) or past the sequence computes nothing.
  int wg_last[kWG];
  bool wg_on[kWG];
#pragma unroll
  for (int w = 0; w < kWG; ++w) {
    const int64_t r0 = row0 + w * kRows;
    wg_on[w] = r0 < a.kv_len && r0 + kRows > a.q0;
    wg_last[w] = wg_on[w] ? static_cast<int>((std::min<int64_t>(r0 + kRows, a.kv_len) - 1) / kBK) : -1;
  }

  // ---- tile list: bit w set = warpgroup w computes the tile --------------------------------
  int n_tiles = last_key_tile + 1;
  int* tiles = flags + n_tiles;
  if (a.sel_blocks) {
    for (int t = tid; t < n_tiles; t += kThreads) flags[t] = 0;
    __syncthreads();
    const int per_block = a.block / kBK;
    const int w = wg;
    if (wg_on[w]) {
      const int64_t qb = (row0 + w * kRows) / a.block;
      const int64_t r = int64_t(hq) * a.sel_num_q_blocks + (qb - a.first_q_block);
      const int c = a.sel_counts[r];
      const int32_t* blocks = a.sel_blocks + r * a.sel_max_kv_blocks;
      for (int i = tid % 128; i < c * per_block; i += 128) {
        const int t = blocks[i / per_block] * per_block + i % per_block;
        if (t <= wg_last[w]) atomicOr(&flags[t], 1 << w);
      }
    }
    __syncthreads();
    const int seg = (n_tiles + kThreads - 1) / kThreads;
    const int lo = std::min(n_tiles, tid * seg), hi = std::min(n_tiles, lo + seg);
    int mine = 0;
    for (int t = lo; t < hi; ++t) mine += flags[t] != 0;
    int at = 0, total = 0;
    Scan(scan_tmp).ExclusiveSum(mine, at, total);
    for (int t = lo; t < hi; ++t)
      if (flags[t]) tiles[at++] = (t << 2) | flags[t];
    if (tid == 0) n_tiles_s = total;
    __syncthreads();
    n_tiles = n_tiles_s;
  }
  auto entry = [&](int i) {
    if (a.sel_blocks) return tiles[i];
    return (i << 2) | (i <= wg_last[0] ? 1 : 0) | (i <= wg_last[1] ? 2 : 0);
  };

  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  const int shift = a.page_shift;
  // A thread copies one 16-byte chunk column (c) of rows r0, r0 + kRowStep, ...: the swizzled
  // destination of each is a constant plus k * kRowStep rows (kRowStep is a multiple of 8).
  constexpr int kRowStep = kThreads / CH;
  const int c = tid % CH, r0 = tid / CH;
  const uint32_t dst0 = sw128_offset(r0, c, kBK);
  const int64_t head_off = int64_t(h) * a.page_size * D + c * 8;
  const int64_t page_elems = int64_t(a.num_kv_heads) * a.page_size * D;
  auto load_tile = [&](int i) {
    if (i < n_tiles) {
      const int tile = entry(i) >> 2;
      const uint32_t stage_off = (i % kStages) * uint32_t(tile_bytes<D>());
#pragma unroll
      for (int k = 0; k < kBK / kRowStep; ++k) {
        const int32_t s = tile * kBK + r0 + k * kRowStep;
        const T* srck = K;
        const T* srcv = V;
        int bytes = 0;
        if (s < a.kv_len) {
          const int32_t pg = shift >= 0 ? s >> shift : s / a.page_size;
          const int32_t in = s - pg * a.page_size;
          const int64_t off = pages[pg] * page_elems + head_off + in * D;
          srck = K + off;
          srcv = V + off;
          bytes = 16;
        }
        const uint32_t o = stage_off + dst0 + k * kRowStep * 128;
        cp_async16(sK + o, srck, bytes);
        cp_async16(sV + o, srcv, bytes);
      }
    }
    cp_async_commit();  // one group per tile index, empty past the end, so the counts line up
  };
#pragma unroll
  for (int i = 0; i < kStages - 2; ++i) load_tile(i);

  // ---- Q (any dtype and strides; zeros outside the chunk) ---------------------------------
  for (int idx = tid; idx < kBQ * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    const int64_t t = row0 + r;
    float x = 0.0f;
    if (t >= a.q0 && t < a.kv_len) x = load_any(a.q, a.q_dtype, (t - a.q0) * a.q_s0 + hq * a.q_s1 + d * a.q_s2);
    T* dst = reinterpret_cast<T*>(sQ + size_t(r / kRows) * kRows * D * 2 + sw128_offset(r % kRows, d / 8, kRows));
    dst[d % 8] = from_f<T>(x);
  }
  fence_proxy_async();

  const Desc q_desc = sw128_desc(smem_addr(sQ + size_t(wg) * kRows * D * 2), 16, 1024);
  const Desc k_desc = sw128_desc(smem_addr(sK), 16, 1024);
  const Desc v_desc = sw128_desc(smem_addr(sV), kBK * 128, 1024);

  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int g = lane / 4, t4 = lane % 4;
  const int64_t wg_row0 = row0 + wg * kRows;
  const int64_t my_row[2] = {wg_row0 + warp * 16 + g, wg_row0 + warp * 16 + g + 8};

  // O += P V of the warpgroup's previous tile (V is the N-major B operand: keys x channels as
  // stored; k-steps of 16 keys). Issued once the next tile's S has landed, so the tensor
  // cores run it while this warpgroup does that tile's softmax.
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
    const int e = entry(i);
    if (!((e >> wg) & 1)) {
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
    const int tile = e >> 2;
    const uint32_t stage_off = (i % kStages) * uint32_t(tile_bytes<D>());
    // One tile: the diagonal tiles and the others are separate instantiations because
    // ptxas waits for every in-flight wgmma where divergent paths merge (a mask branch
    // between the S wait and the P V wait would end the overlap on every tile).
    auto step = [&](auto masked) {
      // S = Q K^T (64 rows x 64 keys per warpgroup), k-steps of 16 channels; then the previous
      // tile's P V behind it.
      float s[kBK / 8][4];
      wgmma_fence();
#pragma unroll
      for (int j = 0; j < D / 16; ++j) {
        const uint32_t koff = (j / 4) * kRows * 128 + (j % 4) * 32;  // Q slab rows == K tile rows == 64
        mma_ss<T, kBK>(&s[0][0], desc_advance(q_desc, koff), desc_advance(k_desc, stage_off + koff), j > 0);
      }
      wgmma_commit();
      // The copies two tiles ahead go out while S runs: their page-table reads would
      // otherwise delay the S issue after every barrier.
      load_tile(i + kStages - 2);
      // S is waited for before the previous tile's P V is issued: ptxas waits for every
      // in-flight wgmma before a write to any accumulator register, so with S still in
      // flight the softmax (which overwrites S) could not overlap the P V.
      wgmma_wait<0>();
      fence_regs<kBK / 2>(&s[0][0]);
      // Nothing pending: pa is zero (initial or after a flush), so P V over this tile's (finite)
      // V adds nothing and the issue stays unconditional (a wgmma under a divergent branch
      // here makes ptxas serialise them all).
      if (!pending) pending_off = stage_off;
      issue_pv();

      // Mask (diagonal tiles only: key > row; keys past the sequence are above every stored
      // row), online softmax on raw scores with the scale folded into one FFMA per exp2.
      if constexpr (decltype(masked)::value) {
        const int lim[2] = {int(my_row[0] - int64_t(tile) * kBK), int(my_row[1] - int64_t(tile) * kBK)};
#pragma unroll
        for (int nt = 0; nt < kBK / 8; ++nt)
#pragma unroll
          for (int q = 0; q < 4; ++q)
            if (nt * 8 + 2 * t4 + (q & 1) > lim[q / 2]) s[nt][q] = -INFINITY;
      }
      // Row max and sum as pairwise trees / 4 partial sums: 16-long chains of dependent
      // FMNMX / FADD were the largest stall reason (fixed-latency dependencies).
      float mx[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float t[kBK / 8];
#pragma unroll
        for (int nt = 0; nt < kBK / 8; ++nt) t[nt] = fmaxf(s[nt][2 * r], s[nt][2 * r + 1]);
#pragma unroll
        for (int w = kBK / 16; w > 0; w /= 2)
#pragma unroll
          for (int j = 0; j < w; ++j) t[j] = fmaxf(t[j], t[j + w]);
        mx[r] = t[0];
      }
      float corr[2], neg_b[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m[r], mx[r] * a.scale_log2);
        const float b = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet
        corr[r] = fast_exp2(m[r] - b);
        m[r] = m_new;
        l[r] *= corr[r];
        neg_b[r] = -b;
      }
      float p[kBK / 8][4], part[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // (row, column parity) partial sums
#pragma unroll
      for (int nt = 0; nt < kBK / 8; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          p[nt][q] = fast_exp2(fmaf(s[nt][q], a.scale_log2, neg_b[q / 2]));
          part[q] += p[nt][q];
        }
      l[0] += part[0] + part[1];
      l[1] += part[2] + part[3];
      fence_regs<kBK / 2>(&p[0][0]);  // computed before the wait, while that P V runs
      fence_regs<2>(l);
      wgmma_wait<0>();  // the previous P V lands before O is rescaled and pa is rewritten
      fence_regs<D / 2>(&o[0][0]);
      if (__any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f)) scale_rows(o, corr);  // the max moved
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) c_to_a_fragment<T>(p[2 * kk], p[2 * kk + 1], pa[kk]);
    };
    if (int64_t(tile + 1) * kBK - 1 > wg_row0) step(std::true_type{});
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

  write_prefill_rows<D>(a, hq, t4, my_row, o, m, l);
#endif
}

template <class T, int D>
void launch_typed(PrefillAttentionArgs a, int hq, cudaStream_t stream) {
  const int first = static_cast<int>(a.q0 / kBQ);
  a.last_q_tile = static_cast<int>((a.kv_len - 1) / kBQ);
  const size_t smem = prefill_attention_sm90_smem(D, a.kv_len, a.sel_blocks != nullptr);
  auto kernel = prefill_attention_sm90_kernel<T, D>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<dim3(a.last_q_tile - first + 1, hq), kThreads, smem, stream>>>(a);
  UNIQUE_CUDA_LAUNCH("prefill_attention_sm90_kernel");
}

}  // namespace

size_t prefill_attention_sm90_smem(int head_dim, int64_t kv_len, bool sparse) {
  const int64_t tiles = (kv_len + kBK - 1) / kBK;
  return (head_dim == 64 ? smem_fixed<64>() : smem_fixed<128>()) + (sparse ? size_t(2 * tiles) * sizeof(int) : 0);
}

void launch_prefill_attention_sm90(const PrefillAttentionArgs& a, DType kv_dtype, int head_dim, int num_qo_heads,
                                   cudaStream_t stream) {
  dispatch_16bit_hd(kv_dtype, head_dim, [&](auto t, auto d) { launch_typed<decltype(t), d.value>(a, num_qo_heads, stream); });
}

}  // namespace unique::cuda

// Block-sparse causal prefill attention over the paged cache (flash-attention 2 style).
// One 128-thread block per (64-row query tile, query head): 4 warps of 16 query rows, Q in
// registers (ldmatrix once), K/V tiles of 64 keys streamed through shared memory with
// cp.async (two stages: tile i+1 loads while tile i computes), S = QK^T and O += PV on
// tensor cores (mma.sync m16n8k16, fp32 accumulators), online softmax in registers with
// exp2 and the log2(e) factor folded into the scale. The tile list is every key tile up to
// the diagonal (dense) or the tiles of the kept key blocks (sparse); only the diagonal tile
// is masked. Query tiles are launched heaviest (last) first for load balance.
#include <algorithm>
#include <climits>
#include <cstring>

#include "cuda/common.cuh"
#include "cuda/kernel_choice.h"
#include "cuda/mma.cuh"
#include "cuda/prefill_epilogue.cuh"
#include "cuda/prefill_kernels.h"

namespace unique::cuda {

namespace {

constexpr int kBQ = 64;   // query rows per block
constexpr int kBK = 64;   // keys per tile
constexpr int kThreads = 128;

template <class T, int D>
__global__ void __launch_bounds__(kThreads)
prefill_attention_kernel(const PrefillAttentionArgs a) {
  constexpr int CH = D / 8;  // 16-byte chunks per row
  extern __shared__ uint4 smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kBQ * D;
  T* sV = sK + 2 * kBK * D;
  int* tiles = reinterpret_cast<int*>(sV + 2 * kBK * D);
  __shared__ int n_tiles_s;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int hq = blockIdx.y;
  const int h = hq / a.group;
  const int qt = a.last_q_tile - static_cast<int>(blockIdx.x);
  const int64_t row0 = int64_t(qt) * kBQ;
  const int64_t last_row = std::min<int64_t>(row0 + kBQ, a.kv_len) - 1;
  const int last_key_tile = static_cast<int>(last_row / kBK);
  const int32_t* pages = a.page_indices + a.page_indptr[a.seq];

  // ---- tile list -------------------------------------------------------------------------
  int n_tiles = last_key_tile + 1;
  if (a.sel_blocks) {
    const int per_block = a.block / kBK;
    const int64_t r = int64_t(hq) * a.sel_num_q_blocks + (row0 / a.block - a.first_q_block);
    const int c = a.sel_counts[r];
    const int32_t* blocks = a.sel_blocks + r * a.sel_max_kv_blocks;
    if (tid == 0) n_tiles_s = 0;
    __syncthreads();
    int mine = 0;
    for (int i = tid; i < c * per_block; i += kThreads) {
      const int t = blocks[i / per_block] * per_block + i % per_block;
      tiles[i] = t;
      mine += t <= last_key_tile;
    }
    atomicAdd(&n_tiles_s, mine);
    __syncthreads();
    n_tiles = n_tiles_s;  // kept blocks ascend, so the tiles past the diagonal are the tail
  }
  auto tile_at = [&](int i) { return a.sel_blocks ? tiles[i] : i; };

  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  auto load_tile = [&](int tile, int stage) {
    T* dk = sK + stage * kBK * D;
    T* dv = sV + stage * kBK * D;
    for (int idx = tid; idx < kBK * CH; idx += kThreads) {
      const int r = idx / CH, c = idx % CH;
      const int64_t s = int64_t(tile) * kBK + r;
      const T* srck = K;
      const T* srcv = V;
      int bytes = 0;
      if (s < a.kv_len) {
        const int64_t off = (int64_t(pages[s / a.page_size]) * a.num_kv_heads + h) * a.page_size * D +
                            (s % a.page_size) * D + c * 8;
        srck = K + off;
        srcv = V + off;
        bytes = 16;
      }
      cp_async16(dk + swz(r, c, CH) * 8, srck, bytes);
      cp_async16(dv + swz(r, c, CH) * 8, srcv, bytes);
    }
    cp_async_commit();
  };
  if (n_tiles > 0) load_tile(tile_at(0), 0);

  // ---- Q tile (any dtype and strides; zeros outside the chunk) -----------------------------
  for (int idx = tid; idx < kBQ * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    const int64_t t = row0 + r;
    float x = 0.0f;
    if (t >= a.q0 && t < a.kv_len) x = load_any(a.q, a.q_dtype, (t - a.q0) * a.q_s0 + hq * a.q_s1 + d * a.q_s2);
    sQ[swz(r, d / 8, CH) * 8 + d % 8] = from_f<T>(x);
  }
  __syncthreads();
  uint32_t qf[D / 16][4];
  load_q_fragments<T, D>(sQ, warp * 16, lane, qf);

  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int g = lane / 4, t4 = lane % 4;
  const int64_t my_row[2] = {row0 + warp * 16 + g, row0 + warp * 16 + g + 8};

  for (int i = 0; i < n_tiles; ++i) {
    const int tile = tile_at(i), stage = i & 1;
    if (i + 1 < n_tiles) {
      load_tile(tile_at(i + 1), stage ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* k_s = sK + stage * kBK * D;
    const T* v_s = sV + stage * kBK * D;

    float s[kBK / 8][4] = {};
    qk_tile<T, D, kBK>(qf, k_s, lane, s);

    // Scale, mask (diagonal tile and keys past the sequence), online softmax.
    const bool diag = int64_t(tile + 1) * kBK - 1 > row0;
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < kBK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = int64_t(tile) * kBK + nt * 8 + 2 * t4 + (e & 1);
        float x = s[nt][e] * a.scale_log2;
        if (diag && (key > my_row[e / 2] || key >= a.kv_len)) x = -INFINITY;
        s[nt][e] = x;
        mx[e / 2] = fmaxf(mx[e / 2], x);
      }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float base = mx[r] == -INFINITY ? 0.0f : mx[r];  // a row with nothing visible yet
      corr[r] = fast_exp2(m[r] - base);
      m[r] = mx[r];
      l[r] *= corr[r];
    }
    scale_rows(o, corr);
#pragma unroll
    for (int nt = 0; nt < kBK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float base = m[e / 2] == -INFINITY ? 0.0f : m[e / 2];
        const float p = fast_exp2(s[nt][e] - base);
        s[nt][e] = p;
        l[e / 2] += p;
      }

    // O += P V: P from the S accumulators (FA2 register reuse), V^T fragments via ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t pa[4];
      c_to_a_fragment<T>(s[2 * kk], s[2 * kk + 1], pa);
      pv_tile<T, D>(pa, v_s, kk, lane, o);
    }
    __syncthreads();  // the next iteration's prefetch overwrites this stage
  }

  write_prefill_rows<D>(a, hq, t4, my_row, o, m, l);
}

template <class T, int D>
void launch_typed(const PrefillAttentionArgs& a, int num_q_tiles, int num_qo_heads, size_t smem,
                  cudaStream_t stream) {
  auto kernel = prefill_attention_kernel<T, D>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<dim3(num_q_tiles, num_qo_heads), kThreads, smem, stream>>>(a);
  UNIQUE_CUDA_LAUNCH("prefill_attention_kernel");
}

// Why the wgmma kernel cannot run this shape (beyond the device and build: kernel_choice.h),
// or nullptr when it can.
const char* wgmma_unavailable(int head_dim, int64_t kv_len, bool sparse) {
  if (kv_len > int64_t(INT32_MAX) - 128) return "kv_len above 2^31 (its key indices are 32-bit)";
  int dev = 0, smem_max = 0;
  UNIQUE_CUDA_CHECK(cudaGetDevice(&dev));
  UNIQUE_CUDA_CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (prefill_attention_sm90_smem(head_dim, kv_len, sparse) > size_t(smem_max))
    return "its tile list does not fit in shared memory at this kv_len";
  return nullptr;
}

}  // namespace

const char* prefill_attention_kernel(int head_dim, int64_t kv_len, bool sparse) {
  return choose_kernel("UNIQUE_PREFILL_KERNEL", wgmma_unavailable(head_dim, kv_len, sparse));
}

void launch_prefill_attention(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                              int64_t kv_len, const BlockSelection* sel, const TensorView& out,
                              const TensorView& lse, cudaStream_t stream) {
  UNIQUE_CHECK_ARG(kv.dtype == DType::bf16 || kv.dtype == DType::f16, "kv.dtype",
                   "bf16 or fp16 (the CUDA prefill runs on tensor cores)", to_string(kv.dtype));
  UNIQUE_CHECK_ARG(kv.head_dim == 64 || kv.head_dim == 128, "kv.head_dim", "64 or 128 (CUDA prefill)",
                   kv.head_dim);
  UNIQUE_CHECK_ARG(cfg.prefill_block % kBK == 0, "prefill_block", "a multiple of 64 (CUDA prefill)",
                   cfg.prefill_block);
  const int64_t q_len = q.shape[0];
  const int hq = static_cast<int>(q.shape[1]);
  PrefillAttentionArgs a;
  a.q = q.data;
  a.q_dtype = q.dtype;
  a.q_s0 = q.stride[0];
  a.q_s1 = q.stride[1];
  a.q_s2 = q.stride[2];
  a.out = out.data;
  a.o_dtype = out.dtype;
  a.o_s0 = out.stride[0];
  a.o_s1 = out.stride[1];
  a.o_s2 = out.stride[2];
  a.lse = lse.data ? lse.ptr<float>() : nullptr;
  a.l_s0 = lse.data ? lse.stride[0] : 0;
  a.l_s1 = lse.data ? lse.stride[1] : 0;
  a.k = kv.k;
  a.v = kv.v;
  a.page_indptr = kv.page_indptr;
  a.page_indices = kv.page_indices;
  a.seq = seq;
  a.num_kv_heads = kv.num_kv_heads;
  a.page_size = kv.page_size;
  a.page_shift = (kv.page_size & (kv.page_size - 1)) == 0 ? __builtin_ctz(unsigned(kv.page_size)) : -1;
  a.kv_len = kv_len;
  a.q0 = kv_len - q_len;
  a.group = hq / kv.num_kv_heads;
  a.scale_log2 = cfg.scale_for(kv.head_dim) * kLog2e;
  a.block = cfg.prefill_block;
  const PrefillBlocks pb = prefill_blocks(cfg, q_len, kv_len);
  a.first_q_block = pb.first_q_block;
  if (sel) {
    a.sel_blocks = sel->blocks;
    a.sel_counts = sel->counts;
    a.sel_num_q_blocks = sel->num_q_blocks;
    a.sel_max_kv_blocks = sel->max_kv_blocks;
  }
  if (std::strcmp(prefill_attention_kernel(kv.head_dim, kv_len, sel != nullptr), "wgmma") == 0) {
    launch_prefill_attention_sm90(a, kv.dtype, kv.head_dim, hq, stream);
    return;
  }
  const int first_tile = static_cast<int>(a.q0 / kBQ);
  a.last_q_tile = static_cast<int>((kv_len - 1) / kBQ);
  const int num_q_tiles = a.last_q_tile - first_tile + 1;
  const int max_tiles = static_cast<int>((kv_len + kBK - 1) / kBK) + cfg.prefill_block / kBK;
  const size_t elem = 2;  // bf16 / fp16
  const size_t smem_tiles = (size_t(kBQ) + 4 * kBK) * kv.head_dim * elem;
  const size_t smem = smem_tiles + (sel ? size_t(max_tiles) * sizeof(int) : 0);
  dispatch_16bit_hd(kv.dtype, kv.head_dim,
                    [&](auto t, auto d) { launch_typed<decltype(t), d.value>(a, num_q_tiles, hq, smem, stream); });
}

}  // namespace unique::cuda

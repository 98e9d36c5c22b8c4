// UniSparse block selection on the GPU (include/unique/prefill.h): composite tokens pooled
// by two small kernels, then one 128-thread block per (query block, query head) that
//   1. computes the compressed attention of the block's composite queries (<= 16 rows: one
//      m16 tile, fragments straight from the pooled tensors, which stay in L2) against the
//      composite keys it may see, on tensor cores; pass 1 finds each row's softmax max and
//      sum, pass 2 adds the normalised probabilities into per-key-block bins in shared
//      memory (no [heads, blocks, blocks] mass tensor in device memory);
//   2. sorts the optional blocks by (mass desc, block asc) with a bitonic sort, counts how
//      many the top-p rule keeps from a block-wide exclusive scan, and writes the kept
//      blocks ascending.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "cuda/prefill_kernels.h"

namespace unique::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

struct SelectArgs {
  const void* cq = nullptr;  // [n_cq, Hq, D] T
  const void* ck = nullptr;  // [n_ck, H, D] T
  int64_t g0 = 0;            // first composite query group of the chunk
  int64_t n_cq = 0, n_ck = 0;
  int Hq = 0, H = 0, group = 1, pool = 8, block = 64, first_q_block = 0;
  float scale_log2 = 0.0f, top_p = 0.95f;
  int32_t* blocks = nullptr;
  int32_t* counts = nullptr;
  int num_q_blocks = 0, max_kv_blocks = 0;
};

template <class T>
__global__ void pool_queries_kernel(const void* q, DType q_dtype, int64_t s0, int64_t s1, int64_t s2, int64_t q0,
                                    int64_t kv_len, int pool, int64_t g0, int Hq, int D, T* cq) {
  const int64_t g = g0 + blockIdx.x;
  const int hq = blockIdx.y;
  const int64_t t0 = std::max<int64_t>(g * pool, q0), t1 = std::min<int64_t>((g + 1) * pool, kv_len);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t t = t0; t < t1; ++t) acc += load_any(q, q_dtype, (t - q0) * s0 + hq * s1 + d * s2);
    cq[(int64_t(blockIdx.x) * Hq + hq) * D + d] = from_f<T>(acc / float(t1 - t0));
  }
}

template <class T>
__global__ void pool_keys_kernel(const T* k, const int32_t* page_indptr, const int32_t* page_indices, int seq,
                                 int H, int P, int D, int64_t kv_len, int pool, T* ck) {
  const int64_t j = blockIdx.x;
  const int h = blockIdx.y;
  const int32_t* pages = page_indices + page_indptr[seq];
  const int64_t s0 = j * pool, s1 = std::min<int64_t>(s0 + pool, kv_len);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t s = s0; s < s1; ++s)
      acc += to_f(k[(int64_t(pages[s / P]) * H + h) * P * D + (s % P) * D + d]);
    ck[(j * H + h) * D + d] = from_f<T>(acc / float(s1 - s0));
  }
}

__device__ __forceinline__ uint32_t ld32(const void* base, int64_t elem) {
  return *reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(base) + elem);
}

// Order-preserving map of a float onto uint32 (larger float, larger key).
__device__ __forceinline__ uint32_t ordered(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

template <class T, int D>
__global__ void __launch_bounds__(kThreads) select_kernel(const SelectArgs a) {
  extern __shared__ uint64_t smem_u64[];
  const int i = blockIdx.x, hq = blockIdx.y, h = hq / a.group;
  const int qb = a.first_q_block + i;
  const int nkb = qb + 1;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  int32_t* out_blocks = a.blocks + (int64_t(hq) * a.num_q_blocks + i) * a.max_kv_blocks;
  int32_t* out_count = a.counts + int64_t(hq) * a.num_q_blocks + i;

  if (a.top_p >= 1.0f) {  // every block 0..qb
    for (int j = tid; j < a.max_kv_blocks; j += kThreads) out_blocks[j] = j < nkb ? j : -1;
    if (tid == 0) *out_count = nkb;
    return;
  }

  int npow = 1;
  while (npow < std::max(nkb - 2, 1)) npow <<= 1;
  uint64_t* keys = smem_u64;                                  // [npow]
  float* bins = reinterpret_cast<float*>(keys + npow);        // [nkb]
  float* scan = bins + nkb;                                   // [kThreads]
  float* wm = scan + kThreads;                                // [kWarps][16]
  float* wl = wm + kWarps * 16;                               // [kWarps][16]
  uint8_t* kept = reinterpret_cast<uint8_t*>(wl + kWarps * 16);  // [nkb]
  __shared__ int count_s;

  for (int j = tid; j < nkb; j += kThreads) {
    bins[j] = 0.0f;
    kept[j] = 0;
  }

  // Composite query rows of this block within the chunk.
  const int rows_per_block = a.block / a.pool;
  const int64_t gr0 = std::max<int64_t>(int64_t(qb) * rows_per_block, a.g0);
  const int64_t gr1 = std::min<int64_t>(int64_t(qb + 1) * rows_per_block, a.g0 + a.n_cq);  // exclusive
  const int nr = static_cast<int>(gr1 - gr0);
  const int64_t g_hi = gr1 - 1;  // the last row sees composite keys 0..g_hi

  uint32_t qa[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = g + (e & 1) * 8;
      const int d = kk * 16 + 2 * t4 + (e / 2) * 8;
      qa[kk][e] = r < nr ? ld32(a.cq, ((gr0 + r - a.g0) * a.Hq + hq) * D + d) : 0u;
    }

  // Scores of composite keys [key0, key0 + 8) for this thread's rows g, g + 8 (log2 units,
  // -inf where the key is not visible).
  auto tile_scores = [&](int64_t key0, float* c) {
    c[0] = c[1] = c[2] = c[3] = 0.0f;
    const int64_t key = key0 + g;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t b[2] = {0u, 0u};
      if (key < a.n_ck) {
        b[0] = ld32(a.ck, (key * a.H + h) * D + kk * 16 + 2 * t4);
        b[1] = ld32(a.ck, (key * a.H + h) * D + kk * 16 + 2 * t4 + 8);
      }
      mma16816<T>(c, qa[kk], b);
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = g + (e / 2) * 8;
      const int64_t j = key0 + 2 * t4 + (e & 1);
      c[e] = (r < nr && j <= gr0 + r) ? c[e] * a.scale_log2 : -INFINITY;
    }
  };

  // Pass 1: per-row max and sum of 2^score.
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  for (int64_t key0 = int64_t(warp) * 8; key0 <= g_hi; key0 += kWarps * 8) {
    float c[4];
    tile_scores(key0, c);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float mx = fmaxf(m[r], fmaxf(c[2 * r], c[2 * r + 1]));
      if (mx == -INFINITY) continue;
      l[r] = l[r] * fast_exp2(m[r] - mx) + fast_exp2(c[2 * r] - mx) + fast_exp2(c[2 * r + 1] - mx);
      m[r] = mx;
    }
  }
  auto combine = [](float& m1, float& l1, float m2, float l2) {
    const float mx = fmaxf(m1, m2);
    if (mx == -INFINITY) return;
    l1 = l1 * fast_exp2(m1 - mx) + l2 * fast_exp2(m2 - mx);
    m1 = mx;
  };
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1)
      combine(m[r], l[r], __shfl_xor_sync(0xffffffffu, m[r], o), __shfl_xor_sync(0xffffffffu, l[r], o));
  if (t4 == 0) {
    wm[warp * 16 + g] = m[0];
    wl[warp * 16 + g] = l[0];
    wm[warp * 16 + g + 8] = m[1];
    wl[warp * 16 + g + 8] = l[1];
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
    for (int w = 0; w < kWarps; ++w) combine(m[r], l[r], wm[w * 16 + g + 8 * r], wl[w * 16 + g + 8 * r]);
  }

  // Pass 2: normalised probabilities into key-block bins, averaged over the rows.
  const float inv_rows = 1.0f / float(nr);
  for (int64_t key0 = int64_t(warp) * 8; key0 <= g_hi; key0 += kWarps * 8) {
    float c[4];
    tile_scores(key0, c);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = e / 2;
      if (c[e] == -INFINITY) continue;
      const int64_t j = key0 + 2 * t4 + (e & 1);
      atomicAdd(&bins[(j * a.pool) / a.block], fast_exp2(c[e] - m[r]) / l[r] * inv_rows);
    }
  }
  __syncthreads();

  // Top-p over the optional blocks 1..qb-1 (block 0 and the diagonal are always kept).
  const float forced = bins[0] + (qb > 0 ? bins[qb] : 0.0f);
  const int n_opt = std::max(qb - 1, 0);
  for (int j = tid; j < npow; j += kThreads)
    keys[j] = j < n_opt ? (uint64_t(~ordered(bins[1 + j])) << 32) | uint32_t(1 + j) : ~uint64_t(0);
  __syncthreads();
  for (int k = 2; k <= npow; k <<= 1)
    for (int jj = k >> 1; jj > 0; jj >>= 1) {
      for (int x = tid; x < npow; x += kThreads) {
        const int y = x ^ jj;
        if (y > x) {
          const uint64_t kx = keys[x], ky = keys[y];
          if ((kx > ky) == ((x & k) == 0)) {
            keys[x] = ky;
            keys[y] = kx;
          }
        }
      }
      __syncthreads();
    }
  // Exclusive prefix of the sorted masses: each thread a contiguous segment.
  const int seg = (n_opt + kThreads - 1) / kThreads;
  const int b0 = std::min(tid * seg, n_opt), b1 = std::min(b0 + seg, n_opt);
  float part = 0.0f;
  for (int x = b0; x < b1; ++x) part += bins[uint32_t(keys[x])];
  scan[tid] = part;
  __syncthreads();
  float before = forced;
  for (int w = 0; w < tid; ++w) before += scan[w];
  int mine = 0;
  for (int x = b0; x < b1; ++x) {
    if (before < a.top_p) ++mine;
    before += bins[uint32_t(keys[x])];
  }
  if (tid == 0) count_s = 0;
  __syncthreads();
  atomicAdd(&count_s, mine);
  __syncthreads();
  const int keep = count_s;
  for (int x = tid; x < keep; x += kThreads) kept[uint32_t(keys[x])] = 1;
  if (tid == 0) {
    kept[0] = 1;
    kept[qb] = 1;
  }
  __syncthreads();
  // Ascending compaction by warp 0.
  if (warp == 0) {
    int n = 0;
    for (int base = 0; base < nkb; base += 32) {
      const int j = base + lane;
      const bool on = j < nkb && kept[j];
      const uint32_t mask = __ballot_sync(0xffffffffu, on);
      if (on) out_blocks[n + __popc(mask & ((1u << lane) - 1))] = j;
      n += __popc(mask);
    }
    if (lane == 0) {
      *out_count = n;
      count_s = n;
    }
  }
  __syncthreads();
  for (int j = count_s + tid; j < a.max_kv_blocks; j += kThreads) out_blocks[j] = -1;
}

size_t select_smem(int max_nkb) {
  int npow = 1;
  while (npow < std::max(max_nkb - 2, 1)) npow <<= 1;
  return size_t(npow) * 8 + size_t(max_nkb) * 4 + kThreads * 4 + 2 * kWarps * 16 * 4 + size_t(max_nkb) + 16;
}

struct PoolSizes {
  int64_t g0, n_cq, n_ck;
};
PoolSizes pool_sizes(const AttentionConfig& cfg, int64_t q_len, int64_t kv_len) {
  const int64_t q0 = kv_len - q_len;
  PoolSizes p;
  p.g0 = q0 / cfg.pool;
  p.n_cq = (kv_len - 1) / cfg.pool - p.g0 + 1;
  p.n_ck = (kv_len + cfg.pool - 1) / cfg.pool;
  return p;
}

template <class T, int D>
void launch_typed(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq, int64_t kv_len,
                  const BlockSelection& out, void* workspace, cudaStream_t stream) {
  const int64_t q_len = q.shape[0];
  const int hq = static_cast<int>(q.shape[1]), H = kv.num_kv_heads;
  const PoolSizes ps = pool_sizes(cfg, q_len, kv_len);
  const PrefillBlocks pb = prefill_blocks(cfg, q_len, kv_len);
  T* cq = static_cast<T*>(workspace);
  T* ck = cq + ps.n_cq * hq * D;
  SelectArgs a;
  a.cq = cq;
  a.ck = ck;
  a.g0 = ps.g0;
  a.n_cq = ps.n_cq;
  a.n_ck = ps.n_ck;
  a.Hq = hq;
  a.H = H;
  a.group = hq / H;
  a.pool = cfg.pool;
  a.block = cfg.prefill_block;
  a.first_q_block = pb.first_q_block;
  a.scale_log2 = cfg.scale_for(D) * kLog2e;
  a.top_p = cfg.top_p;
  a.blocks = out.blocks;
  a.counts = out.counts;
  a.num_q_blocks = out.num_q_blocks;
  a.max_kv_blocks = out.max_kv_blocks;
  if (cfg.top_p < 1.0f) {
    pool_queries_kernel<T><<<dim3(unsigned(ps.n_cq), hq), D, 0, stream>>>(
        q.data, q.dtype, q.stride[0], q.stride[1], q.stride[2], kv_len - q_len, kv_len, cfg.pool, ps.g0, hq, D, cq);
    UNIQUE_CUDA_LAUNCH("pool_queries_kernel");
    pool_keys_kernel<T><<<dim3(unsigned(ps.n_ck), H), D, 0, stream>>>(
        static_cast<const T*>(kv.k), kv.page_indptr, kv.page_indices, seq, H, kv.page_size, D, kv_len, cfg.pool, ck);
    UNIQUE_CUDA_LAUNCH("pool_keys_kernel");
  }
  const size_t smem = select_smem(pb.num_kv_blocks);
  auto kernel = select_kernel<T, D>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<dim3(pb.num_q_blocks, hq), kThreads, smem, stream>>>(a);
  UNIQUE_CUDA_LAUNCH("prefill select_kernel");
}

}  // namespace

size_t prefill_select_workspace_bytes(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                                      int64_t kv_len) {
  const PoolSizes ps = pool_sizes(cfg, q.shape[0], kv_len);
  return size_t(ps.n_cq * q.shape[1] + ps.n_ck * kv.num_kv_heads) * kv.head_dim * 2;
}

void launch_prefill_select(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection& out, void* workspace, cudaStream_t stream) {
  UNIQUE_CHECK_ARG(kv.dtype == DType::bf16 || kv.dtype == DType::f16, "kv.dtype",
                   "bf16 or fp16 (the CUDA prefill runs on tensor cores)", to_string(kv.dtype));
  UNIQUE_CHECK_ARG(kv.head_dim == 64 || kv.head_dim == 128, "kv.head_dim", "64 or 128 (CUDA prefill)",
                   kv.head_dim);
  UNIQUE_CHECK_ARG(cfg.prefill_block / cfg.pool <= 16, "pool",
                   detail::concat(">= prefill_block / 16 (", cfg.prefill_block / 16,
                                  "): the CUDA selection takes <= 16 composite queries per block"),
                   cfg.pool);
  if (kv.dtype == DType::bf16) {
    if (kv.head_dim == 64) launch_typed<bf16, 64>(cfg, q, kv, seq, kv_len, out, workspace, stream);
    else launch_typed<bf16, 128>(cfg, q, kv, seq, kv_len, out, workspace, stream);
  } else {
    if (kv.head_dim == 64) launch_typed<f16, 64>(cfg, q, kv, seq, kv_len, out, workspace, stream);
    else launch_typed<f16, 128>(cfg, q, kv, seq, kv_len, out, workspace, stream);
  }
}

}  // namespace unique::cuda

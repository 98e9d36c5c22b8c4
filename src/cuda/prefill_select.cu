// UniSparse block selection on the GPU (include/unique/prefill.h): composite tokens pooled
// by two small kernels, then one block per (query head, 64 composite queries = the 4 or 8
// query blocks they form): one warpgroup, or two that split the key tiles between them
// (even / odd) where the bins leave room for one block per SM only (long contexts: 4 warps
// per SM left the issue slots 78% idle). A warp owns 16 rows (one or two query blocks):
//   1. tiles of 64 composite keys stream through shared memory (cp.async, two stages); the
//      compressed scores come from wgmma on sm_90 (Q and K tiles 128B-swizzled in shared
//      memory) or mma.sync (Q fragments in registers), in the same per-warp layout. Pass 1
//      finds each row's softmax max and sum (tile max, one rescale); pass 2 adds the
//      normalised probabilities, summed over the warp by a reduce-scatter butterfly, into
//      per-(query block, key block) bins in shared memory (shared atomics: a block's rows
//      belong to one warp per key split); no [heads, blocks, blocks] mass tensor exists in
//      device memory.
//   2. per query block: the optional key blocks sorted by (mass desc, block asc) with a
//      bitonic sort, a block-wide exclusive scan of the sorted masses counts how many the
//      top-p rule keeps, and the kept blocks are written ascending.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "cuda/prefill_kernels.h"
#include "cuda/wgmma.cuh"

namespace unique::cuda {

namespace {

// KS (template parameter): key splits; warpgroup ks takes the key tiles t with t % KS == ks.
constexpr int kRows = 64;  // composite query rows per thread block: 4 warps x 16 (per key split)
constexpr int kKeys = 64;  // composite keys per shared-memory tile

struct SelectArgs {
  const void* cq = nullptr;  // [n_cq, Hq, D] T
  const void* ck = nullptr;  // [n_ck, H, D] T
  int64_t g0 = 0;            // first composite query group of the chunk
  int64_t n_cq = 0, n_ck = 0;
  int Hq = 0, H = 0, group = 1, pool = 8, block = 64, first_q_block = 0;
  int rows_per_block = 8, blocks_per_cta = 8;  // block / pool (8 or 16), kRows / rows_per_block
  float scale_log2 = 0.0f, top_p = 0.95f;
  int top_k = 0;          // > 0: keep this many blocks (AttentionConfig::prefill_top_k), not top_p
  bool keep_all = false;  // AttentionConfig::prefill_keeps_all
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

// Order-preserving map of a float onto uint32 (larger float, larger key).
__device__ __forceinline__ uint32_t ordered(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Shared-memory layout of select_kernel (host and device agree on it).
struct SelectLayout {
  size_t q, k, bins, keys, scan, kept, total;
  int npow;
  __host__ __device__ SelectLayout(int D, int blocks_per_cta, int max_kv_blocks, int KS) {
    npow = 1;
    while (npow < (max_kv_blocks - 2 > 1 ? max_kv_blocks - 2 : 1)) npow <<= 1;
    q = 0;  // from a 1024-byte aligned base (the wgmma variant's swizzled tiles need it)
    k = q + size_t(kRows) * D * 2;
    const size_t k_bytes = size_t(2) * KS * kKeys * D * 2;  // 2 stages x KS tiles
    bins = k + k_bytes;
    const size_t bins_end = bins + (size_t(blocks_per_cta) * max_kv_blocks * 4 + 15) / 16 * 16;
    // The sort keys live in the key tiles' space once the two passes are over.
    keys = size_t(npow) * 8 <= k_bytes ? k : bins_end;
    scan = keys == k ? bins_end : keys + size_t(npow) * 8;
    kept = scan + 128 * KS * 4;
    total = kept + (size_t(max_kv_blocks) + 15) / 16 * 16 + 1024;  // + alignment slack
  }
};

// Wgmma: the compressed scores of a key tile by warpgroup MMA (sm_90a; Q and K tiles in the
// 128B-swizzled layouts of wgmma.cuh), else by mma.sync. The accumulator layout per warp is
// the same (16 rows, 8 n8 tiles), so everything after the scores is shared.
template <class T, int D, bool Wgmma, int KS>
__global__ void __launch_bounds__(128 * KS) select_kernel(const SelectArgs a) {
  constexpr int CH = D / 8, kThreads = 128 * KS, kSplit = KS;
  extern __shared__ uint8_t smem_raw[];
  const int rpb = a.rows_per_block, bpc = a.blocks_per_cta, nkb_max = a.max_kv_blocks;
  const SelectLayout lay(D, bpc, nkb_max, KS);
  uint8_t* base = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  T* sQ = reinterpret_cast<T*>(base + lay.q);
  T* sK = reinterpret_cast<T*>(base + lay.k);
  float* bins = reinterpret_cast<float*>(base + lay.bins);  // [bpc][nkb_max]
  uint64_t* keys = reinterpret_cast<uint64_t*>(base + lay.keys);
  float* scan = reinterpret_cast<float*>(base + lay.scan);
  uint8_t* kept = reinterpret_cast<uint8_t*>(base + lay.kept);
  __shared__ int count_s;
  __shared__ float inv_rows_s[kRows];
  __shared__ float ml_s[kSplit][kRows][2];  // per key split: each row's softmax max and sum

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int rw = warp % 4, ks = warp / 4;  // row warp, key split (= warpgroup)
  const int hq = blockIdx.y, h = hq / a.group;
  const int cta_first = static_cast<int>(blockIdx.x) * bpc;  // first query block, chunk-relative
  const int nblk = min(bpc, a.num_q_blocks - cta_first);
  const int qb0 = a.first_q_block + cta_first;

  if (a.keep_all) {  // every block 0..qb
    for (int j = 0; j < nblk; ++j) {
      const int nkb = qb0 + j + 1;
      int32_t* out = a.blocks + (int64_t(hq) * a.num_q_blocks + cta_first + j) * nkb_max;
      for (int x = tid; x < nkb_max; x += kThreads) out[x] = x < nkb ? x : -1;
      if (tid == 0) a.counts[int64_t(hq) * a.num_q_blocks + cta_first + j] = nkb;
    }
    return;
  }

  // Row r of the tile: local query block r / rpb, composite group (qb0 + r / rpb) * rpb + r % rpb.
  auto row_group = [&](int r) { return int64_t(qb0 + r / rpb) * rpb + r % rpb; };
  auto row_valid = [&](int r) {
    const int64_t gr = row_group(r);
    return r / rpb < nblk && gr >= a.g0 && gr < a.g0 + a.n_cq;
  };
  for (int x = tid; x < bpc * nkb_max; x += kThreads) bins[x] = 0.0f;
  if (tid < bpc) {
    int n = 0;
    for (int r = tid * rpb; r < (tid + 1) * rpb; ++r) n += row_valid(r);
    for (int r = tid * rpb; r < (tid + 1) * rpb; ++r) inv_rows_s[r] = n ? 1.0f / float(n) : 0.0f;
  }
  const int64_t g_hi = min(int64_t(qb0 + nblk) * rpb, a.g0 + a.n_cq) - 1;
  const int n_tiles = static_cast<int>(g_hi / kKeys) + 1;

  const T* cq = static_cast<const T*>(a.cq);
  const T* ck = static_cast<const T*>(a.ck);
  for (int x = tid; x < kRows * CH; x += kThreads) {
    const int r = x / CH, c = x % CH;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row_valid(r)) v = *reinterpret_cast<const uint4*>(cq + ((row_group(r) - a.g0) * a.Hq + hq) * D + c * 8);
    if constexpr (Wgmma) *reinterpret_cast<uint4*>(reinterpret_cast<uint8_t*>(sQ) + sm90::sw128_offset(r, c, kRows)) = v;
    else *reinterpret_cast<uint4*>(sQ + swz(r, c, CH) * 8) = v;
  }
  if constexpr (Wgmma) sm90::fence_proxy_async();
  // Stage `stage` holds tiles kSplit * pair + 0 .. kSplit - 1, one per key split.
  auto load_tiles = [&](int pair, int stage) {
    for (int x = tid; x < kSplit * kKeys * CH; x += kThreads) {
      const int slot = x / (kKeys * CH), r = x / CH % kKeys, c = x % CH;
      T* dk = sK + (stage * kSplit + slot) * kKeys * D;
      const int64_t key = (int64_t(pair) * kSplit + slot) * kKeys + r;
      const bool in = key < a.n_ck;
      const uint32_t o = Wgmma ? sm90::sw128_offset(r, c, kKeys) : uint32_t(swz(r, c, CH) * 16);
      cp_async16(reinterpret_cast<uint8_t*>(dk) + o, in ? ck + (key * a.H + h) * D + c * 8 : ck, in ? 16 : 0);
    }
    cp_async_commit();
  };
  __syncthreads();
  uint32_t qf[Wgmma ? 1 : D / 16][4];
  if constexpr (!Wgmma) load_q_fragments<T, D>(sQ, rw * 16, lane, qf);
  const sm90::Desc q_desc = sm90::sw128_desc(smem_addr(sQ), 16, 1024), k_desc = sm90::sw128_desc(smem_addr(sK), 16, 1024);
  const int rA = rw * 16 + g, rB = rA + 8;
  const bool valid[2] = {row_valid(rA), row_valid(rB)};
  const int64_t lim[2] = {row_group(rA), row_group(rB)};  // a row sees composite keys <= its group
  int64_t warp_hi = -1;  // the last composite key any row of this warp sees
  for (int r = rw * 16; r < rw * 16 + 16; ++r)
    if (row_valid(r)) warp_hi = max(warp_hi, row_group(r));
  const int n_pairs = (n_tiles + kSplit - 1) / kSplit;

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, inv_l[2] = {0.0f, 0.0f};
  for (int pass = 0; pass < 2; ++pass) {
    load_tiles(0, 0);
    for (int i = 0; i < n_pairs; ++i) {
      if (i + 1 < n_pairs) {
        load_tiles(i + 1, (i + 1) & 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      const int t = i * kSplit + ks;  // this warpgroup's tile (past n_tiles: zeros, skipped below)
      const int tile_slot = (i & 1) * kSplit + ks;
      if constexpr (Wgmma) sm90::fence_proxy_async();
      __syncthreads();
      // The wgmma is issued by the whole warpgroup (= this block), before the per-warp test.
      float s[kKeys / 8][4] = {};
      if constexpr (Wgmma) {
        sm90::wgmma_fence();
#pragma unroll
        for (int j = 0; j < D / 16; ++j) {
          const uint32_t off = (j / 4) * kKeys * 128 + (j % 4) * 32;  // Q rows == K tile rows == 64
          sm90::mma_ss<T, kKeys>(&s[0][0], sm90::desc_advance(q_desc, off),
                                 sm90::desc_advance(k_desc, tile_slot * kKeys * D * 2 + off), j > 0);
        }
        sm90::wgmma_commit();
        sm90::wgmma_wait<0>();
        sm90::fence_regs<kKeys / 2>(&s[0][0]);
      }
      if (int64_t(t) * kKeys <= warp_hi) {
        if constexpr (!Wgmma) qk_tile<T, D, kKeys>(qf, sK + tile_slot * kKeys * D, lane, s);
        // Tiles wholly below every row's limit (most of them) skip the per-element mask.
        auto step = [&](auto masked) {
          auto visible = [&](int r, int col) {
            if constexpr (decltype(masked)::value) return valid[r] && int64_t(t) * kKeys + col <= lim[r];
            return true;
          };
          if (pass == 0) {
            // Row max and sum of the tile first, then one rescale: a per-element online update
            // (two exp2 and a dependent chain per element) made pass 1's twin 3x slower.
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int nt = 0; nt < kKeys / 8; ++nt)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const int r = e / 2;
                s[nt][e] = visible(r, nt * 8 + 2 * t4 + (e & 1)) ? s[nt][e] * a.scale_log2 : -INFINITY;
                mx[r] = fmaxf(mx[r], s[nt][e]);
              }
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              if (mx[r] == -INFINITY) continue;  // nothing visible in this tile for this lane's row
              const float m_new = fmaxf(m[r], mx[r]);
              float sum = 0.0f;
#pragma unroll
              for (int nt = 0; nt < kKeys / 8; ++nt)
                sum += fast_exp2(s[nt][2 * r] - m_new) + fast_exp2(s[nt][2 * r + 1] - m_new);
              l[r] = l[r] * fast_exp2(m[r] - m_new) + sum;
              m[r] = m_new;
            }
          } else {
            // v[nt][r]: this lane's probability mass of row r (rA, rB) in the 8 keys of n8 tile nt.
            float v[kKeys / 8 * 2];
#pragma unroll
            for (int nt = 0; nt < kKeys / 8; ++nt)
#pragma unroll
              for (int r = 0; r < 2; ++r) {
                float acc = 0.0f;
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                  if (visible(r, nt * 8 + 2 * t4 + c)) acc += fast_exp2(s[nt][2 * r + c] * a.scale_log2 - m[r]);
                }
                v[nt * 2 + r] = acc * inv_l[r];
              }
            // Sum each of the 16 values over the warp's 32 lanes (8 rows of one query block x 4
            // key columns) by a reduce-scatter butterfly: 16 shuffles, where a full reduction
            // per value took 80. Afterwards lane L holds value idx(L) (bits 4..1 of L).
#pragma unroll
            for (int half = kKeys / 8, o = 16; half >= 1; half /= 2, o /= 2) {
              const bool up = lane & o;
#pragma unroll
              for (int j = 0; j < half; ++j) {
                const float send = up ? v[j] : v[j + half];
                const float keep = up ? v[j + half] : v[j];
                v[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
              }
            }
            v[0] += __shfl_xor_sync(0xffffffffu, v[0], 1);
            const int idx = (lane >> 1) & 15, nt = idx / 2, r = idx % 2;
            // Eight consecutive composite keys lie in one key block (rpb >= 8); a block's rows
            // belong to one row warp of each key split (and at rpb 16 two n8 tiles share a
            // bin): shared atomics. Key tiles run past the last visible key (and past the last
            // key block): those add nothing and must not touch the bins (the index would alias
            // the next query block's row).
            if ((lane & 1) == 0 && int64_t(t) * kKeys + nt * 8 <= warp_hi) {
              const int kb = static_cast<int>((int64_t(t) * kKeys + nt * 8) / rpb);
              const int row = rw * 16 + r * 8;
              atomicAdd(&bins[(row / rpb) * nkb_max + kb], v[0] * inv_rows_s[row]);
            }
          }
        };
        // Warp-uniform choice: both paths shuffle across the whole warp.
        if (__all_sync(0xffffffffu, valid[0] && valid[1] && int64_t(t) * kKeys + kKeys - 1 <= std::min(lim[0], lim[1])))
          step(std::false_type{});
        else
          step(std::true_type{});
      }
      __syncthreads();  // the next prefetch overwrites this stage
    }
    if (pass == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
          const float m2 = __shfl_xor_sync(0xffffffffu, m[r], o), l2 = __shfl_xor_sync(0xffffffffu, l[r], o);
          const float mx = fmaxf(m[r], m2);
          if (mx != -INFINITY) {
            l[r] = l[r] * fast_exp2(m[r] - mx) + l2 * fast_exp2(m2 - mx);
            m[r] = mx;
          }
        }
      }
      // ... and across the key splits.
      if (t4 == 0) {
        ml_s[ks][rA][0] = m[0];
        ml_s[ks][rA][1] = l[0];
        ml_s[ks][rB][0] = m[1];
        ml_s[ks][rB][1] = l[1];
      }
      __syncthreads();
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = r ? rB : rA;
        for (int o = 0; o < kSplit; ++o) {
          if (o == ks) continue;
          const float m2 = ml_s[o][row][0], l2 = ml_s[o][row][1];
          const float mx = fmaxf(m[r], m2);
          if (mx != -INFINITY) {
            l[r] = l[r] * fast_exp2(m[r] - mx) + l2 * fast_exp2(m2 - mx);
            m[r] = mx;
          }
        }
        inv_l[r] = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
      }
    }
  }
  __syncthreads();

  // Top-p per query block: the optional blocks 1..qb-1 sorted by (mass desc, block asc)
  // with a bitonic sort; a block-wide exclusive scan of the sorted masses counts how many
  // the rule keeps; block 0 and the diagonal are always kept.
  for (int j = 0; j < nblk; ++j) {
    const int qb = qb0 + j, nkb = qb + 1;
    const float* bj = bins + j * nkb_max;
    int32_t* out_blocks = a.blocks + (int64_t(hq) * a.num_q_blocks + cta_first + j) * nkb_max;
    int32_t* out_count = a.counts + int64_t(hq) * a.num_q_blocks + cta_first + j;
    const float forced = bj[0] + (qb > 0 ? bj[qb] : 0.0f);
    const int n_opt = max(qb - 1, 0);
    int npow = 1;
    while (npow < max(n_opt, 1)) npow <<= 1;
    for (int x = tid; x < npow; x += kThreads)
      keys[x] = x < n_opt ? (uint64_t(~ordered(bj[1 + x])) << 32) | uint32_t(1 + x) : ~uint64_t(0);
    for (int x = tid; x < nkb; x += kThreads) kept[x] = 0;
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
    const int seg = (n_opt + kThreads - 1) / kThreads;
    const int b0 = min(tid * seg, n_opt), b1 = min(b0 + seg, n_opt);
    float part = 0.0f;
    for (int x = b0; x < b1; ++x) part += bj[uint32_t(keys[x])];
    scan[tid] = part;
    if (tid == 0) count_s = 0;
    __syncthreads();
    float before = forced;
    for (int w = 0; w < tid; ++w) before += scan[w];
    int mine = 0;
    for (int x = b0; x < b1; ++x) {
      if (a.top_k > 0 ? 2 + x < a.top_k : before < a.top_p) ++mine;  // (2: block 0 and the diagonal)
      before += bj[uint32_t(keys[x])];
    }
    atomicAdd(&count_s, mine);
    __syncthreads();
    const int keep = count_s;
    for (int x = tid; x < keep; x += kThreads) kept[uint32_t(keys[x])] = 1;
    __syncthreads();
    if (warp == 0) {
      if (lane == 0) {
        kept[0] = 1;
        kept[qb] = 1;
      }
      __syncwarp();
      int n = 0;
      for (int base0 = 0; base0 < nkb; base0 += 32) {
        const int x = base0 + lane;
        const bool on = x < nkb && kept[x];
        const uint32_t mask = __ballot_sync(0xffffffffu, on);
        if (on) out_blocks[n + __popc(mask & ((1u << lane) - 1))] = x;
        n += __popc(mask);
      }
      if (lane == 0) {
        *out_count = n;
        count_s = n;
      }
    }
    __syncthreads();
    for (int x = count_s + tid; x < nkb_max; x += kThreads) out_blocks[x] = -1;
    __syncthreads();  // keys/kept/count_s are reused by the next block
  }
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
  a.top_k = cfg.prefill_top_k;
  a.keep_all = cfg.prefill_keeps_all();
  a.blocks = out.blocks;
  a.counts = out.counts;
  a.num_q_blocks = out.num_q_blocks;
  a.max_kv_blocks = out.max_kv_blocks;
  if (!cfg.prefill_keeps_all()) {
    pool_queries_kernel<T><<<dim3(unsigned(ps.n_cq), hq), D, 0, stream>>>(
        q.data, q.dtype, q.stride[0], q.stride[1], q.stride[2], kv_len - q_len, kv_len, cfg.pool, ps.g0, hq, D, cq);
    UNIQUE_CUDA_LAUNCH("pool_queries_kernel");
    pool_keys_kernel<T><<<dim3(unsigned(ps.n_ck), H), D, 0, stream>>>(
        static_cast<const T*>(kv.k), kv.page_indptr, kv.page_indices, seq, H, kv.page_size, D, kv_len, cfg.pool, ck);
    UNIQUE_CUDA_LAUNCH("pool_keys_kernel");
  }
  a.rows_per_block = cfg.prefill_block / cfg.pool;
  a.blocks_per_cta = kRows / a.rows_per_block;
  int dev = 0, max_smem = 0;
  UNIQUE_CUDA_CHECK(cudaGetDevice(&dev));
  UNIQUE_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  // The wgmma variant wherever the wgmma attention kernel runs (same device/build test and
  // the same UNIQUE_PREFILL_KERNEL override), with two key splits where the bins leave room
  // for one block per SM only (long contexts) and the second split's tiles still fit. The
  // mma.sync fallback keeps one (the configuration it was measured and tested in).
  const bool wgmma = std::strcmp(prefill_attention_kernel(D, kv_len, false), "wgmma") == 0;
  const size_t smem1 = SelectLayout(D, a.blocks_per_cta, pb.num_kv_blocks, 1).total;
  int ks = 1;
  const char* force = std::getenv("UNIQUE_PREFILL_SELECT_SPLIT");  // tests: "2" at any length
  if (wgmma && SelectLayout(D, a.blocks_per_cta, pb.num_kv_blocks, 2).total <= size_t(max_smem) && force &&
      std::strcmp(force, "2") == 0) {
    ks = 2;
  } else if (wgmma && SelectLayout(D, a.blocks_per_cta, pb.num_kv_blocks, 2).total <= size_t(max_smem)) {
    // Only where one split fits a single block per SM (4 warps): measured at 32K / 64K, where
    // 2-3 blocks fit, the second split (more shared memory per block) was 7-20% slower.
    int per_sm = 0;
    auto k1 = select_kernel<T, D, true, 1>;
    UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(k1, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem1)));
    UNIQUE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k1, 128, smem1));
    if (per_sm <= 1) ks = 2;
  }
  const size_t smem = SelectLayout(D, a.blocks_per_cta, pb.num_kv_blocks, ks).total;
  UNIQUE_CHECK_ARG(smem <= size_t(max_smem), "kv_len",
                   detail::concat("a context whose ", pb.num_kv_blocks, " key blocks fit the CUDA selection's shared memory (",
                                  max_smem, " bytes; use a larger prefill_block)"),
                   kv_len);
  auto kernel = wgmma ? (ks == 2 ? select_kernel<T, D, true, 2> : select_kernel<T, D, true, 1>) : select_kernel<T, D, false, 1>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int ctas = (pb.num_q_blocks + a.blocks_per_cta - 1) / a.blocks_per_cta;
  kernel<<<dim3(ctas, hq), 128 * ks, smem, stream>>>(a);
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
  // A tile of 8 composite keys must lie in one key block, and a block's composite queries
  // in one warp's 16 rows.
  UNIQUE_CHECK_ARG(cfg.prefill_block / cfg.pool == 8 || cfg.prefill_block / cfg.pool == 16, "pool",
                   detail::concat("prefill_block / 8 or prefill_block / 16 (", cfg.prefill_block / 8, " or ",
                                  cfg.prefill_block / 16, ") for the CUDA selection"),
                   cfg.pool);
  dispatch_16bit_hd(kv.dtype, kv.head_dim, [&](auto t, auto d) {
    launch_typed<decltype(t), d.value>(cfg, q, kv, seq, kv_len, out, workspace, stream);
  });
}

}  // namespace unique::cuda

// Page scoring + top-k selection per (sequence, KV head), no host sync, two launches.
//
// score_kernel: a block scores a chunk of a sequence's pages for the query heads of one KV
// head (up to 8 at a time; the queries sit in shared memory, then each lane's channels in
// registers: 16 channels of 4 heads when the group has <= 4 query heads, else 8 of 8). Each
// lane streams its own 16-byte pieces of the statistics rows through a private cp.async ring
// in shared memory, as decode_kernel does with K/V: the bytes in flight cost no registers
// and no barrier is needed in the loop (the register-prefetching kernel this replaced held
// its loads in registers and ran 6% (bf16) / 15% (fp8) slower at batch 8 / 128K on the
// H100). The chunk's page ids are resolved into shared memory once. The estimator is folded
// into one sum per head (unique/channel: q.mu + alpha*|q|.sigma), so one shuffle reduction
// per head and page remains; GQA max is taken in registers. The kernel triggers the select
// grid's launch at its start (programmatic dependent launch).
// fp8 (e4m3) statistics: the codes are summed as above and each page's pair scale
// (PagedKV::stats_scale, a power of two, copied through the ring with the rows) multiplies
// the head's sum once, after the lane reduction.
// select_kernel: one 1024-thread block per (sequence, KV head), launched as a programmatic
// dependent of the score kernel (its blocks start as the last score blocks leave, read the
// page table, then wait for the score grid with griddepcontrol.wait): GQA aggregations that
// need every page (softmax sums, oracle masses), then an exact top-k over the non-forced
// pages [sink, n - recent), keys in registers: the threshold (the k-th largest key) from a
// linear histogram over the active scores' range, resolved in the boundary bucket by one
// warp (bitwise search as fallback; see histogram_threshold), then one ordered compaction
// (block scans) that writes ascending page positions. Ties go to the lower position, as in
// the reference.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cfloat>
#include <type_traits>
#include <cstdlib>
#include <string>
#include <string_view>

#include "attention/cuda_backend.h"
#include "cuda/common.cuh"
#include "cuda/fp8.cuh"
#include "cuda/kernels.h"
#include "cuda/mma.cuh"
#include "unique/detail/hash.h"

namespace unique::cuda {

namespace {

constexpr int kThreads = 256;       // score kernels
constexpr int kSelThreads = 1024;   // select kernel
constexpr int kHeads = 8;       // query heads scored per block at most
constexpr int kMaxGroup = 128;  // query heads per KV head the aggregation supports

enum class Form : int { mean, channel, norm, quest };

struct ScoreParams {
  const void* sa;  // mean or kmin
  const void* sb;  // std or kmax
  const float* sscale;  // fp8 statistics: [pages, Hk, 2] pair scales (else null)
  int sw;               // the pair of sa/sb: 0 mean/std, 1 kmin/kmax
  const void* k;   // oracle
  const int32_t* indptr;
  const int32_t* indices;
  const int32_t* last_len;
  int Hk, Hq, group, subgroups, P, max_pages;
  const void* q;
  DType q_dtype;
  int64_t qs0, qs1, qs2;
  Estimator est;
  GqaAggregation gqa;
  float alpha, scale;
  uint64_t seed;
  bool raw_mode;
  float* agg;  // rows of agg_stride floats (a multiple of 4: the select kernel's 16-byte loads)
  int agg_stride;
  float* raw;
  float* scores_out;
  int scores_stride;
  int32_t* sel_pages;
  int32_t* sel_counts;
  int max_selected;
  int sink, recent, topk;
  int chunk_pages;
  int trigger;    // score_kernel lets the select grid launch at its start (PDL trigger)
  int hist_topk;  // histogram threshold search (0: the bitwise one alone; UNIQUE_SEL_TOPK)
};

__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) f = -INFINITY;  // NaN ranks as -inf
  if (f == 0.0f) f = 0.0f;    // -0 ties with +0
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

using Scan = cub::BlockScan<uint32_t, kSelThreads>;
using Reduce = cub::BlockReduce<float, kSelThreads>;

__device__ float block_max(float x, Reduce::TempStorage& tmp, float* bcast) {
  const float r = Reduce(tmp).Reduce(x, [](float a, float b) { return fmaxf(a, b); });
  if (threadIdx.x == 0) *bcast = r;
  __syncthreads();
  const float out = *bcast;
  __syncthreads();
  return out;
}
__device__ float block_sum(float x, Reduce::TempStorage& tmp, float* bcast) {
  const float r = Reduce(tmp).Sum(x);
  if (threadIdx.x == 0) *bcast = r;
  __syncthreads();
  const float out = *bcast;
  __syncthreads();
  return out;
}

// ---- exact top-k threshold of the select kernel ---------------------------------------------
// T = the k-th largest order key of the block's keys (0 = excluded). The search used to be
// bitwise: 32 block-wide counts, one barrier each (~4 us of the kernel's 16 us at 8192
// pages on the H100: latency-bound on the few SMs that one block per (sequence, KV head)
// occupies). Now a linear histogram over the active keys' score range [lo, hi] finds the
// bucket holding the k-th largest in ~4 barriers; one warp then resolves it among that
// bucket's few keys. A bucket too full for the warp is refined by another histogram over
// its own range (at most kLevels); non-finite ranges (inf / NaN scores) fall back to the
// bitwise search.
constexpr int kBins = 2 * kSelThreads;  // buckets per histogram level (2 per thread)
constexpr int kCand = 256;              // boundary-bucket keys one warp resolves (8 per lane)
constexpr int kLevels = 3;

struct SelShared {
  uint32_t hist[2][kBins];  // a level fills one while the next level's is cleared
  uint32_t cand[kCand];
  uint32_t wsum[kSelThreads / 32];
  float lo[kSelThreads / 32], hi[kSelThreads / 32];
  uint32_t ncand;
  uint32_t res[3];  // T, keys > T, keys == T (from the resolving warp)
  uint32_t cnt[3];  // rotating counters of the bitwise fallback
};

__device__ __forceinline__ float key_value(uint32_t key) {  // inverse of order_key
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}
__device__ __forceinline__ float warp_min(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fminf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
// Bucket of v among kBins linear buckets over [lo, lo + kBins / scale]: non-decreasing in v
// (each correctly rounded op is monotone; explicit _rn so nothing is contracted), so equal
// keys share a bucket and buckets order keys; lo -> 0, the range's top -> kBins - 1 (also
// when scale is inf: NaN and inf are clamped).
__device__ __forceinline__ uint32_t bucket_of(uint32_t key, float lo, float scale) {
  const float x = __fmul_rn(__fsub_rn(key_value(key), lo), scale);
  return uint32_t(fminf(fmaxf(x, 0.0f), float(kBins - 1)));
}
// Inclusive suffix sum over lanes >= lane.
__device__ __forceinline__ uint32_t warp_suffix_sum(uint32_t x) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t t = __shfl_down_sync(0xffffffffu, x, o);
    if (lane + o < 32) x += t;
  }
  return x;
}

// Histogram search (above). nact = the number of nonzero keys, 1 <= need < nact.
// Returns false (nothing decided) for a non-finite score range or kLevels full buckets.
template <int KPT>
__device__ bool histogram_threshold(const uint32_t (&keys)[KPT], uint32_t nact, uint32_t need, SelShared& sh,
                                    uint32_t& T, uint32_t& n_gt, uint32_t& eq_total) {
  static_assert(KPT <= 32 && kBins == 64 * (kSelThreads / 32));
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  uint32_t active = 0;  // bit i: keys[i] is still a candidate
#pragma unroll
  for (int i = 0; i < KPT; ++i) active |= keys[i] ? 1u << i : 0u;
  uint32_t above = 0;  // keys above the active ones (all > T)
  for (int level = 0; level < kLevels; ++level) {
    uint32_t* hist = sh.hist[level & 1];
    float lo = INFINITY, hi = -INFINITY;
#pragma unroll
    for (int i = 0; i < KPT; ++i)
      if (active >> i & 1u) {
        lo = fminf(lo, key_value(keys[i]));
        hi = fmaxf(hi, key_value(keys[i]));
      }
    lo = warp_min(lo);
    hi = warp_max(hi);
    if (lane == 0) {
      sh.lo[warp] = lo;
      sh.hi[warp] = hi;
    }
    __syncthreads();
    lo = warp_min(sh.lo[lane]);
    hi = warp_max(sh.hi[lane]);
    // Clear the next level's histogram: its last reads (two levels up) precede the barrier above.
    sh.hist[(level + 1) & 1][tid] = 0;
    sh.hist[(level + 1) & 1][tid + kSelThreads] = 0;
    if (lo == hi) {  // every active key is the threshold (e.g. all scores equal)
      T = order_key(lo);
      n_gt = above;
      eq_total = nact;
      return true;
    }
    if (!(hi - lo <= FLT_MAX)) return false;  // inf / NaN range: block-uniform
    const float scale = float(kBins) / (hi - lo);
#pragma unroll
    for (int i = 0; i < KPT; ++i)
      if (active >> i & 1u) atomicAdd(&hist[bucket_of(keys[i], lo, scale)], 1u);
    __syncthreads();
    {
      const uint32_t* hw = hist + warp * 64;
      const uint32_t c = __reduce_add_sync(0xffffffffu, hw[2 * lane] + hw[2 * lane + 1]);
      if (lane == 0) sh.wsum[warp] = c;
    }
    __syncthreads();
    // Every warp alike (no barrier): the warp range, then the bucket, holding the need-th
    // largest, counting from the top.
    uint32_t s = sh.wsum[lane];
    uint32_t suf = warp_suffix_sum(s);
    const int w = 31 - __clz(__ballot_sync(0xffffffffu, suf >= need));
    const uint32_t above_w = __shfl_sync(0xffffffffu, suf - s, w);
    const uint32_t c0 = hist[w * 64 + 2 * lane], c1 = hist[w * 64 + 2 * lane + 1];
    s = c0 + c1;
    suf = warp_suffix_sum(s) + above_w;
    const int l2 = 31 - __clz(__ballot_sync(0xffffffffu, suf >= need));
    uint32_t above_b = __shfl_sync(0xffffffffu, suf - s, l2);
    const uint32_t n1 = __shfl_sync(0xffffffffu, c1, l2), n0 = __shfl_sync(0xffffffffu, c0, l2);
    uint32_t bin, cnt;
    if (above_b + n1 >= need) {
      bin = w * 64 + 2 * l2 + 1;
      cnt = n1;
    } else {
      bin = w * 64 + 2 * l2;
      above_b += n1;
      cnt = n0;
    }
    need -= above_b;
    above += above_b;
    nact = cnt;
    uint32_t next = 0;
#pragma unroll
    for (int i = 0; i < KPT; ++i)
      if ((active >> i & 1u) && bucket_of(keys[i], lo, scale) == bin) next |= 1u << i;
    active = next;
    if (cnt > kCand) continue;  // refine this bucket by its own histogram
    // Gather the bucket's keys; one warp finds the need-th largest among them bitwise
    // (warp-level counts, no barriers), starting below the bits they all share.
#pragma unroll
    for (int i = 0; i < KPT; ++i)
      if (active >> i & 1u) sh.cand[atomicAdd(&sh.ncand, 1u)] = keys[i];
    __syncthreads();
    if (warp == 0) {
      constexpr int R = kCand / 32;
      uint32_t ck[R], all_and = ~0u, all_or = 0u;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint32_t idx = lane + 32 * r;
        ck[r] = idx < cnt ? sh.cand[idx] : 0u;
        if (idx < cnt) {
          all_and &= ck[r];
          all_or |= ck[r];
        }
      }
      all_and = __reduce_and_sync(0xffffffffu, all_and);
      all_or = __reduce_or_sync(0xffffffffu, all_or);
      const uint32_t diff = all_and ^ all_or;
      const int top = diff ? 31 - __clz(diff) : -1;
      uint32_t t = top >= 0 ? all_and & ~(0xffffffffu >> (31 - top)) : all_and;
      for (int bit = top; bit >= 0; --bit) {
        const uint32_t x = t | (1u << bit);
        uint32_t c = 0;
#pragma unroll
        for (int r = 0; r < R; ++r) c += ck[r] >= x ? 1u : 0u;
        if (__reduce_add_sync(0xffffffffu, c) >= need) t = x;
      }
      uint32_t gt = 0, eq = 0;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        gt += ck[r] > t ? 1u : 0u;
        eq += ck[r] == t ? 1u : 0u;
      }
      gt = __reduce_add_sync(0xffffffffu, gt);
      eq = __reduce_add_sync(0xffffffffu, eq);
      if (lane == 0) {
        sh.res[0] = t;
        sh.res[1] = above + gt;
        sh.res[2] = eq;
      }
    }
    __syncthreads();
    T = sh.res[0];
    n_gt = sh.res[1];
    eq_total = sh.res[2];
    return true;
  }
  return false;
}

// The old search, kept as the fallback: T bit by bit from the top, keeping a bit when at
// least k keys are >= the candidate. One block-wide count per bit (warp reductions, one
// shared atomic per warp, three rotating counters so one barrier per bit suffices).
template <int KPT>
__device__ void bitwise_threshold(const uint32_t (&keys)[KPT], uint32_t k, SelShared& sh, uint32_t& T,
                                  uint32_t& n_gt, uint32_t& eq_total) {
  const int tid = threadIdx.x;
  auto block_count = [&](int it, uint32_t c) {
    c = __reduce_add_sync(0xffffffffu, c);
    if ((tid & 31) == 0 && c) atomicAdd(&sh.cnt[it % 3], c);
    __syncthreads();
    const uint32_t total = sh.cnt[it % 3];
    if (tid == 0) sh.cnt[(it + 2) % 3] = 0;  // read before this barrier by everyone
    return total;
  };
  T = 0;
  int it = 0;
  for (int bit = 31; bit >= 0; --bit, ++it) {
    const uint32_t cand = T | (1u << bit);
    uint32_t c = 0;
#pragma unroll
    for (int i = 0; i < KPT; ++i) c += keys[i] >= cand ? 1u : 0u;
    if (block_count(it, c) >= k) T = cand;
  }
  uint32_t gt = 0, eq = 0;
#pragma unroll
  for (int i = 0; i < KPT; ++i) {
    gt += keys[i] > T ? 1u : 0u;
    eq += keys[i] == T ? 1u : 0u;
  }
  n_gt = block_count(it++, gt);
  eq_total = block_count(it++, eq);
}

// One block per (b, hk): aggregation where it needs every page, scores_out, top-k.
// KPT keys per thread in registers cover n <= KPT * kSelThreads pages.
template <int KPT>
__global__ void __launch_bounds__(kSelThreads) select_kernel(const ScoreParams p) {
  __shared__ union {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  } tmp;
  __shared__ float head_m[kMaxGroup], head_z[kMaxGroup];
  __shared__ float bcast;
  __shared__ SelShared sh;
  for (int i = threadIdx.x; i < kBins; i += kSelThreads) sh.hist[0][i] = 0;
  if (threadIdx.x < 3) sh.cnt[threadIdx.x] = 0;
  if (threadIdx.x == 0) sh.ncand = 0;  // all read after the barrier that ends the aggregation

  const int b = blockIdx.y, hk = blockIdx.x;
  const int tid = threadIdx.x;
  const int n = p.indptr[b + 1] - p.indptr[b];  // the page table is not written by the score kernel
  // Launched as a programmatic dependent of the score kernel: wait for its results
  // (sm_90+; older GPUs ignore the launch attribute and run the launches in stream order).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  float* agg = p.agg + (int64_t(b) * p.Hk + hk) * p.agg_stride;
  const float* raw = p.raw + (int64_t(b) * p.Hq + hk * p.group) * p.max_pages;
  const bool oracle = p.est == Estimator::oracle;

  if (p.est == Estimator::dense || p.est == Estimator::random) {
    for (int j = tid; j < n; j += kSelThreads)
      agg[j] = p.est == Estimator::dense ? 0.0f : detail::random_page_score(p.seed, b, hk, j);
  } else if (p.raw_mode) {
    const bool soft = oracle || p.gqa == GqaAggregation::softmax_sum;
    if (soft) {
      // Per head: M = max over pages, Z = sum of exp; oracle rows hold page log2-masses.
      const float sc = oracle ? 1.0f : p.scale * kLog2e;
      for (int g = 0; g < p.group; ++g) {
        float m = -INFINITY;
        for (int j = tid; j < n; j += kSelThreads) m = fmaxf(m, raw[int64_t(g) * p.max_pages + j] * sc);
        m = block_max(m, tmp.reduce, &bcast);
        float z = 0.0f;
        for (int j = tid; j < n; j += kSelThreads) z += exp2f(raw[int64_t(g) * p.max_pages + j] * sc - m);
        z = block_sum(z, tmp.reduce, &bcast);
        if (tid == 0) {
          head_m[g] = m;
          head_z[g] = z;
        }
      }
      __syncthreads();
      for (int j = tid; j < n; j += kSelThreads) {
        float a = p.gqa == GqaAggregation::max ? -INFINITY : 0.0f;
        for (int g = 0; g < p.group; ++g) {
          const float w = exp2f(raw[int64_t(g) * p.max_pages + j] * sc - head_m[g]) / head_z[g];
          a = p.gqa == GqaAggregation::max ? fmaxf(a, w) : a + w;
        }
        agg[j] = a;
      }
    } else {
      for (int j = tid; j < n; j += kSelThreads) {
        float a = -INFINITY;
        for (int g = 0; g < p.group; ++g) a = fmaxf(a, raw[int64_t(g) * p.max_pages + j]);
        agg[j] = a;
      }
    }
  }
  __syncthreads();

  if (p.scores_out) {
    float* out = p.scores_out + (int64_t(b) * p.Hk + hk) * p.scores_stride;
    for (int j = tid; j < p.scores_stride; j += kSelThreads) out[j] = j < n ? agg[j] : -INFINITY;
  }
  if (!p.sel_pages) return;

  // Non-forced pages are [lo, hi); keys of the others (and past n) are 0, which no score maps to.
  const int recent = p.recent > 0 ? p.recent : 1;
  const int lo = min(p.sink, n), hi = max(lo, n - recent);
  const int rest = hi - lo;
  const bool all = p.est == Estimator::dense || p.topk >= rest;
  // Consecutive pages per thread (one scan orders the output), read 16 bytes at a time: one
  // 4-byte load per key put each lane of a warp in its own 32-byte sector per instruction
  // (Nsight: 86% of the kernel's L2 sectors excess at 1 x 128K); 16-byte loads took ~0.5 us
  // off the selection at batch 1 and 8 (H100, 2026-11-24).
  // j0 and agg_stride are multiples of 4 and j0 < hi <= agg_stride: the 4 floats at j0 lie in
  // the row and are 16-byte aligned.
  static_assert(KPT % 4 == 0);
  uint32_t keys[KPT];
#pragma unroll
  for (int i4 = 0; i4 < KPT; i4 += 4) {
    const int j0 = tid * KPT + i4;
    float4 t = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (!all && j0 < hi) t = *reinterpret_cast<const float4*>(agg + j0);
    const float v[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = j0 + e;
      keys[i4 + e] = (!all && j >= lo && j < hi) ? order_key(v[e]) : 0u;
    }
  }
  uint32_t T = 0, need_eq = 0, eq_total = 0;
  if (!all) {
    const uint32_t k = uint32_t(p.topk);
    uint32_t n_gt = 0;
    if (k == 0) T = ~0u;  // nothing taken (no key is ~0: that is a NaN's, and NaN maps to -inf)
    else if (!p.hist_topk || !histogram_threshold<KPT>(keys, uint32_t(rest), k, sh, T, n_gt, eq_total))
      bitwise_threshold<KPT>(keys, k, sh, T, n_gt, eq_total);
    need_eq = k - n_gt;
  }

  int32_t* pages = p.sel_pages + (int64_t(b) * p.Hk + hk) * p.max_selected;
  // Keys equal to the threshold are taken by position only when not all of them fit.
  uint32_t eq_base = 0;
  if (!all && need_eq < eq_total) {
    uint32_t n_eq = 0;
#pragma unroll
    for (int i = 0; i < KPT; ++i) n_eq += (keys[i] != 0u && keys[i] == T) ? 1u : 0u;
    Scan(tmp.scan).ExclusiveSum(n_eq, eq_base);
    __syncthreads();
  }
  auto take_at = [&](int i, uint32_t& eq_rank) {
    const int j = tid * KPT + i;
    const uint32_t key = keys[i];
    const bool eq = key != 0u && key == T;
    const bool t = j < n && (all || j < lo || j >= hi || key > T || (eq && eq_rank < need_eq));
    eq_rank += eq ? 1u : 0u;
    return t;
  };
  uint32_t n_take = 0, eq_rank = eq_base;
#pragma unroll
  for (int i = 0; i < KPT; ++i) n_take += take_at(i, eq_rank) ? 1u : 0u;
  uint32_t pos, taken;
  Scan(tmp.scan).ExclusiveSum(n_take, pos, taken);
  eq_rank = eq_base;
#pragma unroll
  for (int i = 0; i < KPT; ++i)
    if (take_at(i, eq_rank)) {
      if (pos < uint32_t(p.max_selected)) pages[pos] = tid * KPT + i;
      ++pos;
    }
  const int count = min(int(taken), p.max_selected);
  for (int i = count + tid; i < p.max_selected; i += kSelThreads) pages[i] = -1;
  if (tid == 0) p.sel_counts[b * p.Hk + hk] = count;
}

// Tile of score_kernel (see the file comment).
constexpr int kIdWindow = 2048;  // most pages per score block (its chunk's ids in shared memory)

template <class S, int D, int G>
struct ScoreTile {
  static constexpr int CPL = G <= 4 ? 16 : 8;  // channels per lane (query registers: G * CPL)
  static constexpr int SV = (16 / int(sizeof(S))) < CPL ? 16 / int(sizeof(S)) : CPL;  // per load
  static constexpr int LB = SV * int(sizeof(S));     // bytes per load: 16, or 8 (fp8, CPL 8)
  static constexpr int NV = CPL / SV;                // loads per lane per statistic
  static constexpr int LPP = D / CPL;                // lanes per (page, KV head) row
  static constexpr int PPW = 32 / LPP;               // rows per warp step
  static constexpr int RPS = (kThreads / 32) * PPW;  // rows per block step
  static constexpr int LANE_BYTES = 2 * NV * LB;     // one step of one lane: both statistics
  static constexpr int ST0 = 65536 / (kThreads * LANE_BYTES);
  static constexpr int ST = ST0 < 2 ? 2 : ST0 > 8 ? 8 : ST0;  // ring stages: ~64 KB per block
  static constexpr int SMEM = ST * kThreads * (LANE_BYTES + 4);  // + an fp8 pair scale per lane
  static_assert(LPP >= 1 && LPP <= 32 && NV >= 1);
};

template <class S, int D, Form F, int G>
__global__ void __launch_bounds__(kThreads, 2) score_kernel(const ScoreParams p) {
  using Tile = ScoreTile<S, D, G>;
  constexpr bool kFp8 = std::is_same_v<S, e4m3>;
  constexpr int CPL = Tile::CPL, SV = Tile::SV, LB = Tile::LB, NV = Tile::NV, LPP = Tile::LPP;
  constexpr int PPW = Tile::PPW, RPS = Tile::RPS, ST = Tile::ST;
  using LoadT = std::conditional_t<LB == 16, uint4, uint2>;
  extern __shared__ __align__(16) unsigned char ring_raw[];
  LoadT* ring = reinterpret_cast<LoadT*>(ring_raw);  // [stage][statistic][nv][thread]
  float* ring_sc = reinterpret_cast<float*>(ring_raw + size_t(ST) * 2 * NV * kThreads * LB);  // [stage][thread]
  __shared__ __align__(16) float q_s[kHeads][D];
  __shared__ float qn_s[kHeads];
  __shared__ int32_t id_s[kIdWindow];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, sub = lane % LPP;
  const int my = warp * PPW + lane / LPP;  // this lane's row within a block step
  const int b = blockIdx.z, hk = blockIdx.y / p.subgroups, sg = blockIdx.y % p.subgroups;
  const int h0 = hk * p.group + sg * kHeads;
  const int ng = min(kHeads, p.group - sg * kHeads);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The select grid (a programmatic dependent) may launch now: its blocks take SMs as score
  // blocks of the last wave leave and read the page table before they wait for this grid's
  // completion (griddepcontrol.wait; the trigger does not make these results visible early).
  if (p.trigger) asm volatile("griddepcontrol.launch_dependents;");
#endif
  const int seq0 = p.indptr[b];
  const int n = p.indptr[b + 1] - seq0;
  const int begin = blockIdx.x * p.chunk_pages;
  const int end = min(n, begin + p.chunk_pages);
  const int rows = max(0, end - begin);  // pages, <= kIdWindow (the launcher's chunking)
  for (int t = tid; t < rows; t += kThreads) id_s[t] = p.indices[seq0 + begin + t];
  for (int i = tid; i < kHeads * D; i += kThreads) {
    const int g = i / D, d = i % D;
    q_s[g][d] = g < ng ? load_any(p.q, p.q_dtype, b * p.qs0 + (h0 + g) * p.qs1 + d * p.qs2) : 0.0f;
  }
  __syncthreads();
  const S* A = static_cast<const S*>(p.sa);
  const S* B = static_cast<const S*>(p.sb);
  const int steps = (rows + RPS - 1) / RPS;
  // This lane's ring slot of statistic st (0: sa, 1: sb), piece nv, in a stage.
  auto slot = [&](int stage, int st, int nv) { return ring + (size_t(stage * 2 + st) * NV + nv) * kThreads + tid; };
  auto issue = [&](int stage, int i) {
    const int r = i * RPS + my;
    const bool ok = r < rows;
    const int64_t base = ok ? (int64_t(id_s[r]) * p.Hk + hk) * D : 0;
#pragma unroll
    for (int nv = 0; nv < NV; ++nv) {
      const int64_t e = base + (nv * LPP + sub) * SV;
      LoadT* da = slot(stage, 0, nv);
      LoadT* db = slot(stage, 1, nv);
      if constexpr (LB == 16) {
        cp_async16(da, A + e, ok ? 16 : 0);
        if constexpr (F != Form::mean) cp_async16(db, B + e, ok ? 16 : 0);
      } else {
        cp_async_small<LB>(da, A + e, ok ? LB : 0);
        if constexpr (F != Form::mean) cp_async_small<LB>(db, B + e, ok ? LB : 0);
      }
    }
    if constexpr (kFp8)
      cp_async_small<4>(ring_sc + stage * kThreads + tid, p.sscale + (base / D) * 2 + p.sw, ok ? 4 : 0);
  };
  // Ring prologue first: the rows' DRAM trip overlaps the query set-up below.
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    issue(s, s);
    cp_async_commit();
  }
  if constexpr (F == Form::norm) {
    if (warp < kHeads) {
      float ss = 0.0f;
      for (int d = lane; d < D; d += 32) ss += q_s[warp][d] * q_s[warp][d];
      ss = warp_sum(ss);
      if (lane == 0) qn_s[warp] = sqrtf(ss);
    }
    __syncthreads();
  }
  // This lane's channels of every head, in registers (shared-memory reads per row would make
  // the kernel bound by shared-memory bandwidth).
  float qr[G][CPL];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int nv = 0; nv < NV; ++nv)
#pragma unroll
      for (int e = 0; e < SV; ++e) qr[g][nv * SV + e] = q_s[g][(nv * LPP + sub) * SV + e];
  for (int i = 0; i < steps; ++i) {
    const int stage = i % ST;
    asm volatile("" ::: "memory");  // the previous step's reads of the refilled stage stay above
    issue((i + ST - 1) % ST, i + ST - 1);
    cp_async_commit();
    cp_async_wait<ST - 1>();  // step i's group has landed (this lane's copies)
    asm volatile("" ::: "memory");
    const int j = begin + i * RPS + my;
    const bool valid = j < end;
    float a[CPL], bb[CPL];
#pragma unroll
    for (int nv = 0; nv < NV; ++nv) {
      const LoadT ra = *slot(stage, 0, nv);
      LoadT rb{};
      if constexpr (F != Form::mean) rb = *slot(stage, 1, nv);
      if constexpr (kFp8 && SV == 16) {
        unpack16_e4m3(ra, a + nv * SV);
        if constexpr (F != Form::mean) unpack16_e4m3(rb, bb + nv * SV);
      } else if constexpr (kFp8) {
        unpack8_e4m3(ra, a + nv * SV);
        if constexpr (F != Form::mean) unpack8_e4m3(rb, bb + nv * SV);
      } else {
        unpack16<S>(ra, a + nv * SV);
        if constexpr (F != Form::mean) unpack16<S>(rb, bb + nv * SV);
      }
    }
    float sc = 1.0f;
    if constexpr (kFp8) sc = ring_sc[stage * kThreads + tid];
    float bsq = 0.0f;
    if constexpr (F == Form::norm) {
#pragma unroll
      for (int e = 0; e < CPL; ++e) bsq = fmaf(bb[e], bb[e], bsq);
#pragma unroll
      for (int o = LPP / 2; o > 0; o >>= 1) bsq += __shfl_xor_sync(0xffffffffu, bsq, o);
    }
    float best = -INFINITY;
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (g >= ng) break;  // block-uniform
      float s = 0.0f, s2 = 0.0f;
#pragma unroll
      for (int k = 0; k < CPL; ++k) {
        const float qd = qr[g][k];
        if constexpr (F == Form::quest) s += fmaxf(qd * a[k], qd * bb[k]);
        else if constexpr (F == Form::channel) {
          s = fmaf(qd, a[k], s);
          s2 = fmaf(fabsf(qd), bb[k], s2);
        } else s = fmaf(qd, a[k], s);
      }
      if constexpr (F == Form::channel) s = fmaf(p.alpha, s2, s);
#pragma unroll
      for (int o = LPP / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if constexpr (F == Form::norm) s += p.alpha * qn_s[g] * sqrtf(bsq);
      if constexpr (kFp8) s *= sc;  // a power of two > 0: exact, order-preserving in max
      best = fmaxf(best, s);
      if (p.raw_mode && valid && sub == 0) p.raw[(int64_t(b) * p.Hq + h0 + g) * p.max_pages + j] = s;
    }
    if (!p.raw_mode && valid && sub == 0) p.agg[(int64_t(b) * p.Hk + hk) * p.agg_stride + j] = best;
  }
  cp_async_wait<0>();
}

// Oracle: per page and head, log2 of the page's softmax numerator sum (exact attention
// mass after normalisation in finalize). Evaluation only: a warp per page, a lane per token.
template <class T, int D>
__global__ void __launch_bounds__(kThreads) oracle_kernel(const ScoreParams p) {
  constexpr int VEC = Vec<T>::n;
  __shared__ __align__(16) float q_s[kHeads][D];
  const int b = blockIdx.z, hk = blockIdx.y / p.subgroups, sg = blockIdx.y % p.subgroups;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int h0 = hk * p.group + sg * kHeads;
  const int ng = min(kHeads, p.group - sg * kHeads);
  const int seq0 = p.indptr[b];
  const int n = p.indptr[b + 1] - seq0;
  const int begin = blockIdx.x * p.chunk_pages;
  const int end = min(n, begin + p.chunk_pages);
  for (int i = threadIdx.x; i < kHeads * D; i += kThreads) {
    const int g = i / D, d = i % D;
    q_s[g][d] = g < ng ? load_any(p.q, p.q_dtype, b * p.qs0 + (h0 + g) * p.qs1 + d * p.qs2) * p.scale * kLog2e
                       : 0.0f;
  }
  __syncthreads();
  const T* K = static_cast<const T*>(p.k);
  for (int j = begin + warp; j < end; j += kThreads / 32) {
    const int tokens = j == n - 1 ? p.last_len[b] : p.P;
    const int64_t page = p.indices[seq0 + j];
    float m[kHeads], z[kHeads];
    for (int g = 0; g < kHeads; ++g) {
      m[g] = -INFINITY;
      z[g] = 0.0f;
    }
    for (int r0 = 0; r0 < tokens; r0 += 32) {
      const int r = r0 + lane;
      float s[kHeads] = {};
      if (r < tokens) {
        const T* row = K + ((page * p.Hk + hk) * p.P + r) * D;
        for (int c = 0; c < D / VEC; ++c) {
          float x[VEC];
          load16(row + c * VEC, x);
#pragma unroll
          for (int g = 0; g < kHeads; ++g)
#pragma unroll
            for (int e = 0; e < VEC; ++e) s[g] = fmaf(q_s[g][c * VEC + e], x[e], s[g]);
        }
      }
#pragma unroll
      for (int g = 0; g < kHeads; ++g) {
        const float sv = r < tokens ? s[g] : -INFINITY;
        const float mn = fmaxf(m[g], warp_max(sv));
        z[g] = z[g] * exp2f(m[g] - mn) + warp_sum(r < tokens ? exp2f(sv - mn) : 0.0f);
        m[g] = mn;
      }
    }
    if (lane == 0)
      for (int g = 0; g < ng; ++g) p.raw[(int64_t(b) * p.Hq + h0 + g) * p.max_pages + j] = m[g] + log2f(z[g]);
  }
}

// Launches Kernel with Smem bytes of dynamic shared memory, raising the kernel's limit above
// the default 48 KB once per device.
template <auto Kernel, int Smem>
void launch_big_smem(dim3 grid, cudaStream_t stream, const ScoreParams& p) {
  static bool done[64] = {};
  int dev = 0;
  UNIQUE_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 64 && !done[dev]) {
    UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Smem));
    done[dev] = true;
  }
  Kernel<<<grid, kThreads, Smem, stream>>>(p);
}

// Benchmark-only knobs (UNIQUE_SEL_*), read once.
int env_knob(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : dflt;
}

}  // namespace

void check_cuda_estimator(const AttentionConfig& cfg) {
  UNIQUE_CHECK_ARG(cfg.estimator != Estimator::composite, "estimator",
                   "unique, quest, mean, oracle, random or dense on CUDA (composite is a CPU accuracy study)",
                   to_string(cfg.estimator));
}

// Row stride of the aggregated scores: max_pages rounded up to 4 floats (16-byte rows).
int agg_stride(int max_pages) { return (max_pages + 3) / 4 * 4; }

const char* select_topk_path() {
  const char* e = std::getenv("UNIQUE_SEL_TOPK");
  const std::string_view v = e ? e : "";
  if (v.empty() || v == "hist") return "hist";
  if (v == "bitwise") return "bitwise";
  throw_arg("UNIQUE_SEL_TOPK", "hist or bitwise", std::string(v));
}

SelectSizes select_sizes(int batch, int num_qo_heads, int num_kv_heads, int max_pages) {
  return {size_t(batch) * num_kv_heads * agg_stride(max_pages), size_t(batch) * num_qo_heads * max_pages};
}

void launch_score_select(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                         int max_pages, const SelectWorkspace& ws, float* scores_out,
                         int scores_stride, const Selection* sel, cudaStream_t stream) {
  const int Hq = static_cast<int>(q.shape[1]), Hk = kv.num_kv_heads, D = kv.head_dim;
  const int group = Hq / Hk;
  if (D != 64 && D != 128 && D != 256) throw_arg("kv.head_dim", "64, 128 or 256 on CUDA", D);
  if (group > kMaxGroup) throw_arg("num_qo_heads / num_kv_heads", "<= 128 on CUDA", group);
  if (max_pages > 32 * kSelThreads) throw_arg("kv.max_pages_per_seq", "<= 32768 for CUDA selection", max_pages);
  check_cuda_estimator(cfg);
  ScoreParams p{};
  const bool unique_est = cfg.estimator == Estimator::unique;
  p.sa = cfg.estimator == Estimator::quest ? kv.kmin : kv.mean;
  p.sb = cfg.estimator == Estimator::quest ? kv.kmax : kv.std;
  p.sscale = kv.stats_dtype == DType::e4m3 ? kv.stats_scale : nullptr;
  p.sw = cfg.estimator == Estimator::quest ? 1 : 0;
  p.k = kv.k;
  p.indptr = kv.page_indptr;
  p.indices = kv.page_indices;
  p.last_len = kv.last_page_len;
  p.Hk = Hk;
  p.Hq = Hq;
  p.group = group;
  p.subgroups = (group + kHeads - 1) / kHeads;
  p.P = kv.page_size;
  p.max_pages = max_pages;
  p.q = q.data;
  p.q_dtype = q.dtype;
  p.qs0 = q.stride[0];
  p.qs1 = q.stride[1];
  p.qs2 = q.stride[2];
  p.est = cfg.estimator;
  p.gqa = cfg.gqa;
  p.alpha = cfg.alpha;
  p.scale = cfg.scale_for(D);
  p.seed = cfg.seed;
  const bool per_page = cfg.estimator != Estimator::dense && cfg.estimator != Estimator::random;
  p.raw_mode = per_page && (cfg.estimator == Estimator::oracle || cfg.gqa == GqaAggregation::softmax_sum ||
                            group > kHeads);
  p.agg = ws.agg;
  p.agg_stride = agg_stride(max_pages);
  p.raw = ws.raw;
  p.scores_out = scores_out;
  p.scores_stride = scores_stride;
  p.sel_pages = sel ? sel->pages : nullptr;
  p.sel_counts = sel ? sel->counts : nullptr;
  p.max_selected = sel ? sel->max_selected : 0;
  p.sink = cfg.sink_pages;
  p.recent = cfg.recent_pages;
  p.topk = cfg.topk_pages();
  const int rows = kv.batch * Hk * (p.raw_mode ? p.subgroups : 1);
  // Groups of <= 4 query heads keep only 4 heads' queries in registers (16 channels per lane).
  const bool g4 = std::min(group, kHeads) <= 4;
  static const int k_trigger = env_knob("UNIQUE_SEL_TRIGGER", 1);  // benchmark knob
  p.trigger = k_trigger;
  p.hist_topk = std::string_view(select_topk_path()) == "hist";  // read per launch: no allocation on this path
  int chunks = 1;
  if (per_page) {
    // At least one wave of blocks (two per SM). bf16/fp16/fp32 statistics: ~256 pages per
    // block (H100, batch 8 / 128K: 256-page blocks beat 512 by 1-2% and 1639 by 15%). fp8
    // statistics (an 8-stage ring): at most two full waves, at most one block per 256 pages
    // (batch 8 / 128K: 89 / 59 us at P16 / P32 against 112 / 64 with 256-page blocks, 100 / 64
    // with a third, partial wave). Batch 1 takes its single wave either way. At least 64
    // pages per block, at most kIdWindow.
    static const int k_chunk = env_knob("UNIQUE_SEL_CHUNK_PAGES", 0);  // benchmark knob (0: the rule)
    const int wave = (2 * num_sms() + rows - 1) / rows;
    const bool fp8 = kv.stats_dtype == DType::e4m3;
    // (floor: a third, partial wave of blocks costs more than larger blocks)
    int want = fp8 ? std::min(std::max(1, 4 * num_sms() / rows), (max_pages + 255) / 256) : (max_pages + 255) / 256;
    if (k_chunk > 0) want = (max_pages + k_chunk - 1) / k_chunk;
    chunks = std::max(wave, want);
    chunks = std::min(chunks, std::max(1, (max_pages + 63) / 64));
    chunks = std::max(chunks, (max_pages + kIdWindow - 1) / kIdWindow);
  }
  p.chunk_pages = (max_pages + chunks - 1) / chunks;
  // Without raw mode a block scores all heads of the group (group <= 8): one subgroup.
  if (!p.raw_mode) p.subgroups = 1;
  const dim3 grid(chunks, Hk * p.subgroups, kv.batch);
  if (cfg.estimator == Estimator::oracle) {
    dispatch_dtype(kv.dtype, [&](auto t) {
      using T = decltype(t);
      switch (D) {
        case 64: oracle_kernel<T, 64><<<grid, kThreads, 0, stream>>>(p); break;
        case 128: oracle_kernel<T, 128><<<grid, kThreads, 0, stream>>>(p); break;
        default: oracle_kernel<T, 256><<<grid, kThreads, 0, stream>>>(p); break;
      }
    });
    UNIQUE_CUDA_LAUNCH("oracle_kernel");
  } else if (per_page) {
    Form f = Form::mean;
    if (cfg.estimator == Estimator::quest) f = Form::quest;
    else if (unique_est) f = cfg.offset == OffsetForm::norm ? Form::norm : Form::channel;
    dispatch_stats_dtype(kv.stats_dtype, [&](auto t) {
      using S = decltype(t);
      auto go = [&](auto dtag) {
        constexpr int DD = decltype(dtag)::value;
        auto launch = [&](auto gtag) {
          constexpr int GG = decltype(gtag)::value;
          constexpr int smem = ScoreTile<S, DD, GG>::SMEM;
          switch (f) {
            case Form::quest: launch_big_smem<score_kernel<S, DD, Form::quest, GG>, smem>(grid, stream, p); break;
            case Form::norm: launch_big_smem<score_kernel<S, DD, Form::norm, GG>, smem>(grid, stream, p); break;
            case Form::channel: launch_big_smem<score_kernel<S, DD, Form::channel, GG>, smem>(grid, stream, p); break;
            default: launch_big_smem<score_kernel<S, DD, Form::mean, GG>, smem>(grid, stream, p); break;
          }
        };
        if (g4) launch(std::integral_constant<int, 4>{});
        else launch(std::integral_constant<int, 8>{});
      };
      switch (D) {
        case 64: go(std::integral_constant<int, 64>{}); break;
        case 128: go(std::integral_constant<int, 128>{}); break;
        default: go(std::integral_constant<int, 256>{}); break;
      }
    });
    UNIQUE_CUDA_LAUNCH("score_kernel");
  }
  const dim3 sgrid(Hk, kv.batch);
  // Programmatic dependent launch: the select grid's launch overlaps the score kernel's
  // tail; its blocks wait (griddepcontrol.wait) until the score grid has completed.
  static const int k_pdl = env_knob("UNIQUE_SEL_PDL", 1);
  auto sel_go = [&](auto kernel) {
    cudaLaunchConfig_t lc{};
    lc.gridDim = sgrid;
    lc.blockDim = dim3(kSelThreads);
    lc.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = attr;
    lc.numAttrs = k_pdl ? 1 : 0;
    UNIQUE_CUDA_CHECK(cudaLaunchKernelEx(&lc, kernel, p));
  };
  if (max_pages <= 4 * kSelThreads) sel_go(select_kernel<4>);
  else if (max_pages <= 8 * kSelThreads) sel_go(select_kernel<8>);
  else if (max_pages <= 16 * kSelThreads) sel_go(select_kernel<16>);
  else sel_go(select_kernel<32>);
  UNIQUE_CUDA_LAUNCH("select_kernel");
}

}  // namespace unique::cuda

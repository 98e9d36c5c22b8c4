// Page scoring + top-k selection per (sequence, KV head), one launch, no host sync.
//
// Phase 1 (every block): a block scores a chunk of a sequence's pages for the query heads
// of one KV head (up to 8 at a time). The statistics rows are read once with 16-byte loads,
// D/VEC lanes per page; the estimator is folded into one sum per head so one shuffle
// reduction per head and page remains (unique/channel: q.mu + alpha*|q|.sigma).
// Phase 2 (the last block of a (sequence, KV head) to finish, found with an atomic counter
// that it resets for the next launch): GQA aggregation where it needs all pages (softmax
// sums, oracle masses), then an exact top-k by 4 passes of 8-bit radix select over the
// non-forced pages [sink, n - recent), then one ordered compaction (block scans) that
// writes ascending page positions. Ties go to the lower position, as in the reference.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <algorithm>

#include "attention/cuda_backend.h"
#include "cuda/common.cuh"
#include "cuda/kernels.h"
#include "unique/detail/hash.h"

namespace unique::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kHeads = 8;       // query heads scored per block at most
constexpr int kMaxGroup = 128;  // query heads per KV head the aggregation supports

enum class Form : int { none, mean, channel, norm, quest };

struct ScoreParams {
  const void* sa;  // mean or kmin
  const void* sb;  // std or kmax
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
  float* agg;
  float* raw;
  uint32_t* counters;
  float* scores_out;
  int scores_stride;
  int32_t* sel_pages;
  int32_t* sel_counts;
  int max_selected;
  int sink, recent, topk;
  int chunks, chunk_pages;
};

__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) f = -INFINITY;  // NaN ranks as -inf
  if (f == 0.0f) f = 0.0f;    // -0 ties with +0
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

using Scan = cub::BlockScan<uint32_t, kThreads>;
using Reduce = cub::BlockReduce<float, kThreads>;

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

// Phase 2, run by one block per (b, hk) once every chunk is scored.
__device__ __noinline__ void finalize(const ScoreParams& p, int b, int hk) {
  __shared__ union {
    Scan::TempStorage scan;
    Reduce::TempStorage reduce;
  } tmp;
  __shared__ float head_m[kMaxGroup], head_z[kMaxGroup];
  __shared__ float bcast;
  __shared__ uint32_t hist[256];
  __shared__ uint32_t s_prefix, s_remaining, s_total_take, s_total_eq;

  const int tid = threadIdx.x;
  const int n = p.indptr[b + 1] - p.indptr[b];
  float* agg = p.agg + (int64_t(b) * p.Hk + hk) * p.max_pages;
  const float* raw = p.raw + (int64_t(b) * p.Hq + hk * p.group) * p.max_pages;
  const bool oracle = p.est == Estimator::oracle;

  // -- aggregation over the group's heads where it needs every page --
  if (p.est == Estimator::dense || p.est == Estimator::random) {
    for (int j = tid; j < n; j += kThreads)
      agg[j] = p.est == Estimator::dense ? 0.0f : detail::random_page_score(p.seed, b, hk, j);
  } else if (p.raw_mode) {
    const bool soft = oracle || p.gqa == GqaAggregation::softmax_sum;
    if (soft) {
      // Per head: M = max over pages, Z = sum of exp; oracle rows hold page log-masses (log2).
      const float sc = oracle ? 1.0f : p.scale * kLog2e;
      for (int g = 0; g < p.group; ++g) {
        float m = -INFINITY;
        for (int j = tid; j < n; j += kThreads) m = fmaxf(m, __ldcg(raw + int64_t(g) * p.max_pages + j) * sc);
        m = block_max(m, tmp.reduce, &bcast);
        float z = 0.0f;
        for (int j = tid; j < n; j += kThreads)
          z += exp2f(__ldcg(raw + int64_t(g) * p.max_pages + j) * sc - m);
        z = block_sum(z, tmp.reduce, &bcast);
        if (tid == 0) {
          head_m[g] = m;
          head_z[g] = z;
        }
      }
      __syncthreads();
      for (int j = tid; j < n; j += kThreads) {
        float a = p.gqa == GqaAggregation::max ? -INFINITY : 0.0f;
        for (int g = 0; g < p.group; ++g) {
          const float w = exp2f(__ldcg(raw + int64_t(g) * p.max_pages + j) * sc - head_m[g]) / head_z[g];
          a = p.gqa == GqaAggregation::max ? fmaxf(a, w) : a + w;
        }
        agg[j] = a;
      }
    } else {
      for (int j = tid; j < n; j += kThreads) {
        float a = -INFINITY;
        for (int g = 0; g < p.group; ++g) a = fmaxf(a, __ldcg(raw + int64_t(g) * p.max_pages + j));
        agg[j] = a;
      }
    }
  }
  __syncthreads();
  __threadfence_block();

  if (p.scores_out) {
    float* out = p.scores_out + (int64_t(b) * p.Hk + hk) * p.scores_stride;
    for (int j = tid; j < p.scores_stride; j += kThreads) out[j] = j < n ? __ldcg(agg + j) : -INFINITY;
  }
  if (!p.sel_pages) return;

  // -- top-k over the non-forced pages [sink, n - recent) --
  const int recent = p.recent > 0 ? p.recent : 1;
  const int lo = min(p.sink, n), hi = max(lo, n - recent);
  const int rest = hi - lo;
  const bool all = p.est == Estimator::dense || p.topk >= rest;
  if (tid == 0) {
    s_prefix = 0;
    s_remaining = p.topk;
  }
  __syncthreads();
  if (!all) {
    uint32_t mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      hist[tid] = 0;
      __syncthreads();
      const uint32_t prefix = s_prefix;
      for (int j = lo + tid; j < hi; j += kThreads) {
        const uint32_t key = order_key(__ldcg(agg + j));
        const bool match = (key & mask) == prefix;
        const uint32_t bin = match ? (key >> shift) & 255u : 256u;
        const unsigned act = __activemask();
        const unsigned peers = __match_any_sync(act, bin);
        if (match && (threadIdx.x % 32) == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
      }
      __syncthreads();
      // Thread t looks at bin 255 - t: counts from the top.
      const uint32_t c = hist[255 - tid];
      uint32_t incl;
      Scan(tmp.scan).InclusiveSum(c, incl);
      const uint32_t remaining = s_remaining;
      __syncthreads();
      if (incl - c < remaining && remaining <= incl) {
        s_prefix = prefix | (uint32_t(255 - tid) << shift);
        s_remaining = remaining - (incl - c);
      }
      mask |= 255u << shift;
      __syncthreads();
    }
  }
  const uint32_t T = s_prefix, need_eq = s_remaining;

  int32_t* pages = p.sel_pages + (int64_t(b) * p.Hk + hk) * p.max_selected;
  uint32_t taken = 0, eq_seen = 0;
  for (int tile = 0; tile < n; tile += kThreads) {
    const int j = tile + tid;
    const bool in = j < n;
    const bool forced = in && (j < lo || j >= hi);
    uint32_t key = 0;
    if (in && !forced && !all) key = order_key(__ldcg(agg + j));
    const uint32_t eq = (in && !forced && !all && key == T) ? 1u : 0u;
    uint32_t eq_rank, eq_tile;
    Scan(tmp.scan).ExclusiveSum(eq, eq_rank, eq_tile);
    __syncthreads();
    const bool take = in && (forced || all || key > T || (eq && eq_seen + eq_rank < need_eq));
    uint32_t pos, take_tile;
    Scan(tmp.scan).ExclusiveSum(take ? 1u : 0u, pos, take_tile);
    __syncthreads();
    if (take && taken + pos < uint32_t(p.max_selected)) pages[taken + pos] = j;
    taken += take_tile;
    eq_seen += eq_tile;
  }
  const int count = min(int(taken), p.max_selected);
  for (int i = count + tid; i < p.max_selected; i += kThreads) pages[i] = -1;
  if (tid == 0) p.sel_counts[b * p.Hk + hk] = count;
}

// Arrival: the last of the blocks of (b, hk) runs finalize and resets the counter.
__device__ __forceinline__ void arrive(const ScoreParams& p, int b, int hk) {
  __shared__ bool s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const uint32_t total = uint32_t(p.chunks) * (p.raw_mode ? p.subgroups : 1);
    s_last = atomicAdd(&p.counters[b * p.Hk + hk], 1u) == total - 1;
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  finalize(p, b, hk);
  if (threadIdx.x == 0) p.counters[b * p.Hk + hk] = 0;
}

template <class S, int D, Form F>
__global__ void __launch_bounds__(kThreads) score_kernel(const ScoreParams p) {
  constexpr int SV = Vec<S>::n;
  constexpr int LPP = (D / SV) < 32 ? (D / SV) : 32;  // lanes per page
  constexpr int NV = D / (SV * LPP);
  constexpr int PPW = 32 / LPP;  // pages per warp step
  const int b = blockIdx.z, hk = blockIdx.y / p.subgroups, sg = blockIdx.y % p.subgroups;
  if constexpr (F != Form::none) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, sub = lane % LPP;
    const int h0 = hk * p.group + sg * kHeads;
    const int ng = min(kHeads, p.group - sg * kHeads);
    const int seq0 = p.indptr[b];
    const int n = p.indptr[b + 1] - seq0;
    const int begin = blockIdx.x * p.chunk_pages;
    const int end = min(n, begin + p.chunk_pages);
    float qr[kHeads][NV * SV];
    float qn[kHeads];
#pragma unroll
    for (int g = 0; g < kHeads; ++g) {
      float ss = 0.0f;
#pragma unroll
      for (int nv = 0; nv < NV; ++nv)
#pragma unroll
        for (int e = 0; e < SV; ++e) {
          const int d = (nv * LPP + sub) * SV + e;
          const float x = g < ng ? load_any(p.q, p.q_dtype, b * p.qs0 + (h0 + g) * p.qs1 + d * p.qs2) : 0.0f;
          qr[g][nv * SV + e] = x;
          ss += x * x;
        }
      if constexpr (F == Form::norm) {
#pragma unroll
        for (int o = LPP / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        qn[g] = sqrtf(ss);
      }
    }
    const S* A = static_cast<const S*>(p.sa);
    const S* B = static_cast<const S*>(p.sb);
    for (int base = begin + warp * PPW; base < end; base += (kThreads / 32) * PPW) {
      const int j = base + lane / LPP;
      const bool valid = j < end;
      float a[NV * SV], bb[NV * SV];
      if (valid) {
        const int64_t off = (int64_t(p.indices[seq0 + j]) * p.Hk + hk) * D;
#pragma unroll
        for (int nv = 0; nv < NV; ++nv) {
          load16(A + off + (nv * LPP + sub) * SV, a + nv * SV);
          if constexpr (F != Form::mean) load16(B + off + (nv * LPP + sub) * SV, bb + nv * SV);
        }
      } else {
#pragma unroll
        for (int e = 0; e < NV * SV; ++e) a[e] = bb[e] = 0.0f;
      }
      float bsq = 0.0f;
      if constexpr (F == Form::norm) {
#pragma unroll
        for (int e = 0; e < NV * SV; ++e) bsq = fmaf(bb[e], bb[e], bsq);
#pragma unroll
        for (int o = LPP / 2; o > 0; o >>= 1) bsq += __shfl_xor_sync(0xffffffffu, bsq, o);
      }
      float best = -INFINITY;
#pragma unroll
      for (int g = 0; g < kHeads; ++g) {
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < NV * SV; ++e) {
          const float qd = qr[g][e];
          if constexpr (F == Form::quest) s += fmaxf(qd * a[e], qd * bb[e]);
          else if constexpr (F == Form::channel) s = fmaf(qd, a[e], fmaf(p.alpha * fabsf(qd), bb[e], s));
          else s = fmaf(qd, a[e], s);
        }
#pragma unroll
        for (int o = LPP / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if constexpr (F == Form::norm) s += p.alpha * qn[g] * sqrtf(bsq);
        if (g < ng) {
          best = fmaxf(best, s);
          if (p.raw_mode && valid && sub == 0) p.raw[(int64_t(b) * p.Hq + h0 + g) * p.max_pages + j] = s;
        }
      }
      if (!p.raw_mode && valid && sub == 0) p.agg[(int64_t(b) * p.Hk + hk) * p.max_pages + j] = best;
    }
  }
  arrive(p, b, hk);
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
  arrive(p, b, hk);
}

}  // namespace

SelectSizes select_sizes(int batch, int num_qo_heads, int num_kv_heads, int max_pages) {
  return {size_t(batch) * num_kv_heads * max_pages, size_t(batch) * num_qo_heads * max_pages,
          size_t(batch) * num_kv_heads};
}

void launch_score_select(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                         int max_pages, const SelectWorkspace& ws, float* scores_out,
                         int scores_stride, const Selection* sel, cudaStream_t stream) {
  const int Hq = static_cast<int>(q.shape[1]), Hk = kv.num_kv_heads, D = kv.head_dim;
  const int group = Hq / Hk;
  if (D != 64 && D != 128 && D != 256) throw_arg("kv.head_dim", "64, 128 or 256 on CUDA", D);
  if (group > kMaxGroup) throw_arg("num_qo_heads / num_kv_heads", "<= 128 on CUDA", group);
  ScoreParams p{};
  const bool unique_est = cfg.estimator == Estimator::unique;
  p.sa = cfg.estimator == Estimator::quest ? kv.kmin : kv.mean;
  p.sb = cfg.estimator == Estimator::quest ? kv.kmax : kv.std;
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
  p.raw = ws.raw;
  p.counters = ws.counters;
  p.scores_out = scores_out;
  p.scores_stride = scores_stride;
  p.sel_pages = sel ? sel->pages : nullptr;
  p.sel_counts = sel ? sel->counts : nullptr;
  p.max_selected = sel ? sel->max_selected : 0;
  p.sink = cfg.sink_pages;
  p.recent = cfg.recent_pages;
  p.topk = cfg.topk_pages();
  const int rows = kv.batch * Hk * (p.raw_mode ? p.subgroups : 1);
  int chunks = 1;
  if (per_page) {
    const int want = std::max(1, (4 * num_sms() + rows - 1) / rows);
    chunks = std::min(want, std::max(1, (max_pages + 63) / 64));
  }
  p.chunks = chunks;
  p.chunk_pages = (max_pages + chunks - 1) / chunks;
  // Without raw mode a block scores all heads of the group (group <= 8): one subgroup.
  if (!p.raw_mode) p.subgroups = 1;
  const dim3 grid(chunks, Hk * p.subgroups, kv.batch);
  if (!per_page) {
    score_kernel<float, 64, Form::none><<<grid, kThreads, 0, stream>>>(p);
    UNIQUE_CUDA_LAUNCH("score_kernel");
    return;
  }
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
    return;
  }
  Form f = Form::mean;
  if (cfg.estimator == Estimator::quest) f = Form::quest;
  else if (unique_est) f = cfg.offset == OffsetForm::norm ? Form::norm : Form::channel;
  dispatch_dtype(kv.stats_dtype, [&](auto t) {
    using S = decltype(t);
    auto go = [&](auto dtag) {
      constexpr int DD = decltype(dtag)::value;
      switch (f) {
        case Form::quest: score_kernel<S, DD, Form::quest><<<grid, kThreads, 0, stream>>>(p); break;
        case Form::norm: score_kernel<S, DD, Form::norm><<<grid, kThreads, 0, stream>>>(p); break;
        case Form::channel: score_kernel<S, DD, Form::channel><<<grid, kThreads, 0, stream>>>(p); break;
        default: score_kernel<S, DD, Form::mean><<<grid, kThreads, 0, stream>>>(p); break;
      }
    };
    switch (D) {
      case 64: go(std::integral_constant<int, 64>{}); break;
      case 128: go(std::integral_constant<int, 128>{}); break;
      default: go(std::integral_constant<int, 256>{}); break;
    }
  });
  UNIQUE_CUDA_LAUNCH("score_kernel");
}

}  // namespace unique::cuda

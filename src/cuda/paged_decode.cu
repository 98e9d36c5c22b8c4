// Paged decode attention, flash-decoding style: the page list of each (sequence, KV head)
// (every page, or the selected ones) is cut into `chunks` pieces, one block per piece and
// per group of up to 8 query heads sharing the KV head, so each page is read once and a
// single long sequence still fills the GPU. Each block writes a normalised partial output
// and its log-sum-exp; a second kernel merges the partials (skipped when chunks == 1).
//
// Inside a block (4 warps) a warp takes 32 token slots at a time: for q.k each lane owns
// one token and reads its K row with 16-byte loads (no shuffles; the query heads sit in
// shared memory, read as broadcasts); online softmax per warp; for p.V a row is read by
// D/VEC lanes with 16-byte loads, the probabilities come from shared memory.
#include <algorithm>
#include <cstdlib>

#include "attention/cuda_backend.h"
#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace unique::cuda {

namespace {

constexpr int kWarps = 4;

struct DecodeParams {
  const void* k;
  const void* v;
  const int32_t* indptr;
  const int32_t* indices;
  const int32_t* last_len;
  const int32_t* sel_pages;  // null = dense
  const int32_t* sel_counts;
  int max_selected;
  int Hk, Hq, group, subgroups, P;
  const void* q;
  DType q_dtype;
  int64_t qs0, qs1, qs2;
  void* out;
  DType out_dtype;
  int64_t os0, os1, os2;
  float* lse;
  int64_t ls0, ls1;
  float* part_o;
  float* part_lse;
  int chunks, chunk_pages;
  float scale_log2;  // sm_scale * log2(e)
  bool k_stream;     // K loads evict-first instead of through L1 (tuning knob)
};

template <class T, int D, int G>
__global__ void __launch_bounds__(kWarps * 32) decode_kernel(const DecodeParams p) {
  constexpr int VEC = Vec<T>::n;
  constexpr int LPR = (D / VEC) < 32 ? (D / VEC) : 32;  // lanes per V row
  constexpr int NV = D / (VEC * LPR);                   // vectors per lane per V row
  constexpr int TPW = 32 / LPR;                         // V rows per warp step
  __shared__ __align__(16) float q_s[G][D];
  __shared__ float p_s[kWarps][32][G];
  __shared__ int64_t row_s[kWarps][32];
  __shared__ float m_s[kWarps][G], l_s[kWarps][G];
  __shared__ __align__(16) float acc_s[kWarps][G][D];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, hk = blockIdx.y / p.subgroups, sg = blockIdx.y % p.subgroups;
  const int chunk = blockIdx.x;
  const int h0 = hk * p.group + sg * G;
  const int ng = min(G, p.group - sg * G);
  const int seq0 = p.indptr[b];
  const int n = p.indptr[b + 1] - seq0;
  const int count = p.sel_pages ? p.sel_counts[b * p.Hk + hk] : n;
  const int begin = chunk * p.chunk_pages;
  const int end = min(count, begin + p.chunk_pages);
  const int last_len = p.last_len[b];

  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    q_s[g][d] = g < ng ? load_any(p.q, p.q_dtype, b * p.qs0 + (h0 + g) * p.qs1 + d * p.qs2) * p.scale_log2
                       : 0.0f;
  }
  __syncthreads();

  const T* K = static_cast<const T*>(p.k);
  const T* V = static_cast<const T*>(p.v);
  float m[G], l[G], acc[G][NV * VEC];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < NV * VEC; ++e) acc[g][e] = 0.0f;
  }

  const int slots = end > begin ? (end - begin) * p.P : 0;
  // Row offset of a token slot (-1: none). The page-table reads of the next iteration are
  // issued one iteration ahead so their latency overlaps this iteration's K/V loads.
  auto row_of = [&](int slot) -> int64_t {
    if (slot >= slots) return -1;
    const int i = begin + slot / p.P, r = slot % p.P;
    const int j = p.sel_pages ? p.sel_pages[(int64_t(b) * p.Hk + hk) * p.max_selected + i] : i;
    const int tokens = j == n - 1 ? last_len : p.P;
    if (j < 0 || j >= n || r >= tokens) return -1;
    const int64_t page = p.indices[seq0 + j];
    return ((page * p.Hk + hk) * p.P + r) * D;
  };
  int64_t row_next = row_of(warp * 32 + lane);
  for (int base = warp * 32; base < slots; base += kWarps * 32) {
    const int64_t row = row_next;
    row_next = row_of(base + kWarps * 32 + lane);
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g) s[g] = 0.0f;
    if (row >= 0) {
      // Batches of 8 independent 16-byte loads in flight per lane; a warp load touches 32 rows
      // (half a sector each), so K goes through L1 (__ldg), which serves the other half.
      constexpr int KB = (D / VEC) < 8 ? (D / VEC) : 8;
#pragma unroll
      for (int c0 = 0; c0 < D / VEC; c0 += KB) {
        uint4 raw[KB];
#pragma unroll
        for (int c = 0; c < KB; ++c) {
          const uint4* src = reinterpret_cast<const uint4*>(K + row + (c0 + c) * VEC);
          raw[c] = p.k_stream ? __ldcs(src) : __ldg(src);
        }
#pragma unroll
        for (int c = 0; c < KB; ++c) {
          float x[VEC];
          unpack16<T>(raw[c], x);
#pragma unroll
          for (int g = 0; g < G; ++g) {
#pragma unroll
            for (int e = 0; e < VEC; e += 4) {
              const float4 qv = *reinterpret_cast<const float4*>(&q_s[g][(c0 + c) * VEC + e]);
              s[g] = fmaf(qv.x, x[e], s[g]);
              s[g] = fmaf(qv.y, x[e + 1], s[g]);
              s[g] = fmaf(qv.z, x[e + 2], s[g]);
              s[g] = fmaf(qv.w, x[e + 3], s[g]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float sv = row >= 0 ? s[g] : -INFINITY;
      const float mnew = fmaxf(m[g], warp_max(sv));
      const float corr = mnew == -INFINITY ? 1.0f : fast_exp2(m[g] - mnew);
      const float pr = row >= 0 ? fast_exp2(sv - mnew) : 0.0f;
      l[g] = l[g] * corr + pr;
      m[g] = mnew;
#pragma unroll
      for (int e = 0; e < NV * VEC; ++e) acc[g][e] *= corr;
      p_s[warp][lane][g] = pr;
    }
    row_s[warp][lane] = row;
    __syncwarp();
    const int sub = lane % LPR;
    // V rows in batches: VB rows x NV vectors of independent loads per lane.
    constexpr int STEPS = 32 / TPW;
    constexpr int VB = STEPS < 8 ? STEPS : 8;
#pragma unroll
    for (int t0 = 0; t0 < STEPS; t0 += VB) {
      uint4 raw[VB][NV];
#pragma unroll
      for (int i = 0; i < VB; ++i) {
        const int64_t vr = row_s[warp][(t0 + i) * TPW + lane / LPR];
#pragma unroll
        for (int nv = 0; nv < NV; ++nv)
          raw[i][nv] = vr >= 0 ? __ldcs(reinterpret_cast<const uint4*>(V + vr + (nv * LPR + sub) * VEC))
                               : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int i = 0; i < VB; ++i) {
        const int t = (t0 + i) * TPW + lane / LPR;
#pragma unroll
        for (int nv = 0; nv < NV; ++nv) {
          float x[VEC];
          unpack16<T>(raw[i][nv], x);
#pragma unroll
          for (int g = 0; g < G; ++g) {
            const float pg = p_s[warp][t][g];
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[g][nv * VEC + e] = fmaf(pg, x[e], acc[g][nv * VEC + e]);
          }
        }
      }
    }
    __syncwarp();
  }

  // Lanes holding the same channels (lane % LPR) saw different tokens: sum them.
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float lw = warp_sum(l[g]);
#pragma unroll
    for (int o = LPR; o < 32; o <<= 1)
#pragma unroll
      for (int e = 0; e < NV * VEC; ++e) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
    if (lane == 0) {
      m_s[warp][g] = m[g];
      l_s[warp][g] = lw;
    }
    if (lane < LPR) {
#pragma unroll
      for (int nv = 0; nv < NV; ++nv)
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc_s[warp][g][(nv * LPR + lane) * VEC + e] = acc[g][nv * VEC + e];
    }
  }
  __syncthreads();

  for (int i = threadIdx.x; i < ng * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, m_s[w][g]);
    float L = 0.0f, o = 0.0f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float f = fast_exp2(m_s[w][g] - M);
        L += l_s[w][g] * f;
        o += acc_s[w][g][d] * f;
      }
    }
    const int hq = h0 + g;
    const float val = L > 0.0f ? o / L : 0.0f;
    const float lse2 = L > 0.0f ? M + __log2f(L) : -INFINITY;
    if (p.chunks == 1) {
      store_any(p.out, p.out_dtype, b * p.os0 + hq * p.os1 + d * p.os2, val);
      if (d == 0 && p.lse) p.lse[b * p.ls0 + hq * p.ls1] = lse2 * kLn2;
    } else {
      const int64_t pi = (int64_t(b) * p.Hq + hq) * p.chunks + chunk;
      p.part_o[pi * D + d] = val;
      if (d == 0) p.part_lse[pi] = lse2;
    }
  }
}

// One block per (sequence, query head): weights exp2(lse_c - max) over the chunks. The
// chunks are spread over the warps (each lane D/32 channels) so hundreds of chunks merge
// with independent loads in flight, not one dependent chain.
constexpr int kMergeWarps = 8;
__global__ void __launch_bounds__(kMergeWarps * 32) merge_kernel(const DecodeParams p, int D) {
  __shared__ float red[kMergeWarps];
  __shared__ float o_s[kMergeWarps][256];
  __shared__ float l_s[kMergeWarps];
  const int bh = blockIdx.x, b = bh / p.Hq, hq = bh % p.Hq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* lse = p.part_lse + int64_t(bh) * p.chunks;
  float M = -INFINITY;
  for (int c = threadIdx.x; c < p.chunks; c += blockDim.x) M = fmaxf(M, lse[c]);
  M = warp_max(M);
  if (lane == 0) red[warp] = M;
  __syncthreads();
  M = -INFINITY;
#pragma unroll
  for (int w = 0; w < kMergeWarps; ++w) M = fmaxf(M, red[w]);
  const int per = D / 32;  // 2, 4 or 8 channels per lane
  float o[8] = {0, 0, 0, 0, 0, 0, 0, 0}, L = 0.0f;
  if (M != -INFINITY) {
#pragma unroll 4
    for (int c = warp; c < p.chunks; c += kMergeWarps) {
      const float w = fast_exp2(lse[c] - M);
      L += w;
      const float* src = p.part_o + (int64_t(bh) * p.chunks + c) * D + lane * per;
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (e < per) o[e] = fmaf(w, src[e], o[e]);
    }
  }
#pragma unroll
  for (int e = 0; e < 8; ++e)
    if (e < per) o_s[warp][lane * per + e] = o[e];
  if (lane == 0) l_s[warp] = L;
  __syncthreads();
  float Lt = 0.0f;
#pragma unroll
  for (int w = 0; w < kMergeWarps; ++w) Lt += l_s[w];
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float od = 0.0f;
#pragma unroll
    for (int w = 0; w < kMergeWarps; ++w) od += o_s[w][d];
    store_any(p.out, p.out_dtype, b * p.os0 + hq * p.os1 + d * p.os2, Lt > 0.0f ? od / Lt : 0.0f);
    if (d == 0 && p.lse) p.lse[b * p.ls0 + hq * p.ls1] = Lt > 0.0f ? (M + __log2f(Lt)) * kLn2 : -INFINITY;
  }
}

// Query heads per block (a template parameter): the group rounded up to 1, 2, 4 or 8;
// larger groups are split into blocks of 8 heads.
int heads_per_block(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }

template <class T, int D>
void launch_typed(const DecodeParams& p, dim3 grid, int group, cudaStream_t stream) {
  const dim3 block(kWarps * 32);
  switch (heads_per_block(group)) {
    case 1: decode_kernel<T, D, 1><<<grid, block, 0, stream>>>(p); break;
    case 2: decode_kernel<T, D, 2><<<grid, block, 0, stream>>>(p); break;
    case 4: decode_kernel<T, D, 4><<<grid, block, 0, stream>>>(p); break;
    default: decode_kernel<T, D, 8><<<grid, block, 0, stream>>>(p); break;
  }
  UNIQUE_CUDA_LAUNCH("decode_kernel");
}


}  // namespace

namespace {
// Resident blocks per SM of the decode kernel a launch will use (cached per instantiation).
int blocks_per_sm(DType dtype, int D, int group) {
  static int cache[3][3][4] = {};
  const int hpb = heads_per_block(group);
  int& c = cache[int(dtype)][D == 64 ? 0 : D == 128 ? 1 : 2][hpb == 1 ? 0 : hpb == 2 ? 1 : hpb == 4 ? 2 : 3];
  if (c) return c;
  int n = 0;
  dispatch_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    auto q = [&](auto kernel) {
      UNIQUE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kWarps * 32, 0));
    };
    auto by_group = [&](auto dtag) {
      constexpr int DD = decltype(dtag)::value;
      switch (hpb) {
        case 1: q(decode_kernel<T, DD, 1>); break;
        case 2: q(decode_kernel<T, DD, 2>); break;
        case 4: q(decode_kernel<T, DD, 4>); break;
        default: q(decode_kernel<T, DD, 8>); break;
      }
    };
    if (D == 64) by_group(std::integral_constant<int, 64>{});
    else if (D == 128) by_group(std::integral_constant<int, 128>{});
    else by_group(std::integral_constant<int, 256>{});
  });
  c = std::max(n, 1);
  return c;
}
}  // namespace

int decode_chunks(int batch, int num_qo_heads, int num_kv_heads, int page_size, int max_list, DType dtype,
                  int head_dim) {
  // Tuning knob for benchmarks: UNIQUE_DECODE_CHUNKS=N forces N chunks per (sequence, head).
  if (const char* e = std::getenv("UNIQUE_DECODE_CHUNKS"); e && std::atoi(e) > 0)
    return std::min(std::atoi(e), std::max(1, max_list));
  const int group = num_qo_heads / num_kv_heads;
  const int sgs = (group + heads_per_block(group) - 1) / heads_per_block(group);
  const int rows = batch * num_kv_heads * sgs;
  // Two full waves of blocks (resident blocks per SM from the occupancy calculator): the
  // largest chunk count whose blocks fit in them, so no wave is partly filled; each chunk
  // at least 64 tokens. (Many more chunks make the merge costly; fewer idle SMs.)
  const int slots = blocks_per_sm(dtype, head_dim, group) * num_sms();
  const int want = std::max(1, 2 * slots / rows);
  const int most = std::max(1, (max_list * page_size + 63) / 64);
  return std::min(want, most);
}

size_t decode_floats(int batch, int num_qo_heads, int head_dim, int chunks) {
  return chunks > 1 ? size_t(batch) * num_qo_heads * chunks * head_dim : 0;
}

void launch_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                   const Selection* sel, const TensorView& out, const TensorView& lse,
                   int max_pages, const DecodeWorkspace& ws, cudaStream_t stream) {
  const int Hq = static_cast<int>(q.shape[1]), Hk = kv.num_kv_heads, D = kv.head_dim;
  if (D != 64 && D != 128 && D != 256)
    throw_arg("kv.head_dim", "64, 128 or 256 on CUDA", D);
  const int group = Hq / Hk;
  const int hpb = heads_per_block(group);
  const int max_list = sel ? std::min(sel->max_selected, max_pages) : max_pages;
  int chunks = decode_chunks(kv.batch, Hq, Hk, kv.page_size, max_list, kv.dtype, D);
  const size_t need = decode_floats(kv.batch, Hq, D, chunks);
  if (need > ws.capacity_floats)  // a plan made for smaller shapes: fewer chunks that fit
    chunks = std::max<int>(1, static_cast<int>(ws.capacity_floats / (size_t(kv.batch) * Hq * D)));
  DecodeParams p{};
  p.k = kv.k;
  p.v = kv.v;
  p.indptr = kv.page_indptr;
  p.indices = kv.page_indices;
  p.last_len = kv.last_page_len;
  p.sel_pages = sel ? sel->pages : nullptr;
  p.sel_counts = sel ? sel->counts : nullptr;
  p.max_selected = sel ? sel->max_selected : 0;
  p.Hk = Hk;
  p.Hq = Hq;
  p.group = group;
  p.subgroups = (group + hpb - 1) / hpb;
  p.P = kv.page_size;
  p.q = q.data;
  p.q_dtype = q.dtype;
  p.qs0 = q.stride[0];
  p.qs1 = q.stride[1];
  p.qs2 = q.stride[2];
  p.out = out.data;
  p.out_dtype = out.dtype;
  p.os0 = out.stride[0];
  p.os1 = out.stride[1];
  p.os2 = out.stride[2];
  p.lse = lse.data ? lse.ptr<float>() : nullptr;
  p.ls0 = lse.data ? lse.stride[0] : 0;
  p.ls1 = lse.data ? lse.stride[1] : 0;
  p.part_o = ws.part_o;
  p.part_lse = ws.part_lse;
  p.chunks = chunks;
  p.chunk_pages = (max_list + chunks - 1) / chunks;
  p.scale_log2 = cfg.scale_for(D) * kLog2e;
  static const bool k_stream = [] {
    const char* e = std::getenv("UNIQUE_DECODE_K_STREAM");
    return e && *e == '1';
  }();
  p.k_stream = k_stream;
  const dim3 grid(chunks, Hk * p.subgroups, kv.batch);
  dispatch_dtype(kv.dtype, [&](auto t) {
    using T = decltype(t);
    switch (D) {
      case 64: launch_typed<T, 64>(p, grid, group, stream); break;
      case 128: launch_typed<T, 128>(p, grid, group, stream); break;
      default: launch_typed<T, 256>(p, grid, group, stream); break;
    }
  });
  if (chunks > 1) {
    merge_kernel<<<kv.batch * Hq, kMergeWarps * 32, 0, stream>>>(p, D);
    UNIQUE_CUDA_LAUNCH("merge_kernel");
  }
}

}  // namespace unique::cuda

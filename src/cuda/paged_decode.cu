// Paged decode attention, flash-decoding style: the page list of each (sequence, KV head)
// (every page, or the selected ones) is cut into `chunks` pieces, one block per piece and
// per group of up to 8 query heads sharing the KV head, so each page is read once and a
// single long sequence still fills the GPU. Each block writes a normalised partial output
// and its log-sum-exp; a second kernel merges the partials (skipped when chunks == 1).
//
// Two kernels share that frame (DecodeBlock, PageRows, combine_warps): decode_mma_kernel on
// tensor cores (16-bit K/V, head dim 64/128, >= 3 query heads per KV head; see its comment)
// and decode_kernel on CUDA cores for everything else, described next.
//
// Inside a block (128 threads) a token is owned by LPT = D / CPL lanes, each holding CPL
// channels (16, or 8 for groups of 8 query heads) of every query head and of the output
// accumulators, so a tile of 128 / LPT tokens covers the block. Each lane streams its own
// 16-byte pieces of K and V through a private multi-stage cp.async ring in shared memory:
// the bytes in flight do not occupy registers (the register-prefetching kernel this replaces
// held ~2 TB/s at 3-4 warps per scheduler), and since a lane only reads what it copied itself
// no barrier is needed inside the loop. Online softmax per lane (its token stream), rescaling
// only when the running maximum grows; lanes are merged once at the end.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "attention/cuda_backend.h"
#include "cuda/common.cuh"
#include "cuda/kernels.h"
#include "cuda/mma.cuh"

namespace unique::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWindow = 128;  // page-table entries resolved into shared memory at a time

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
  int p_shift;  // log2(P) when P is a power of two (no integer division per tile), else -1
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
};

// The block's list entries [begin, end) of one (sequence, KV head) as K/V row offsets. The
// page table is resolved a window of kWindow list entries at a time into shared memory (-1:
// no page), so the loop issues its copies without a chain of dependent global reads
// (selection -> page id -> data) per tile; a window costs one barrier pair. Tiles of TT
// tokens are asked for in increasing order, block-uniformly; a tile never straddles two
// windows (kWindow * P is a multiple of every TT used).
struct PageRows {
  const int32_t* indices;
  const int32_t* sel;
  int32_t* page_s;  // [kWindow] shared
  int P, p_shift, Hk, hk, seq0, n, begin, end, last_len, slots, window = 0;

  __device__ PageRows(const DecodeParams& p, int32_t* page_s_, int b, int hk_, int chunk)
      : indices(p.indices), page_s(page_s_), P(p.P), p_shift(p.p_shift), Hk(p.Hk), hk(hk_) {
    seq0 = p.indptr[b];
    n = p.indptr[b + 1] - seq0;
    const int count = p.sel_pages ? p.sel_counts[b * p.Hk + hk] : n;
    begin = chunk * p.chunk_pages;
    end = min(count, begin + p.chunk_pages);
    last_len = p.last_len[b];
    sel = p.sel_pages ? p.sel_pages + (int64_t(b) * p.Hk + hk) * p.max_selected : nullptr;
    slots = end > begin ? (end - begin) * P : 0;
  }
  __device__ int tiles(int tt) const { return (slots + tt - 1) / tt; }
  __device__ void load_window(int w) {
    for (int t = threadIdx.x; t < kWindow; t += blockDim.x) {
      const int li = begin + w * kWindow + t;
      int32_t page = -1;
      if (li < end) {
        const int j = sel ? sel[li] : li;
        if (j >= 0 && j < n) page = indices[seq0 + j] * 2 + (j == n - 1);  // low bit: last page
      }
      page_s[t] = page;
    }
  }
  __device__ int page_of(int slot) const { return p_shift >= 0 ? slot >> p_shift : slot / P; }
  // Element offset of token `tok` of tile i (tiles of tt tokens) in K / V, -1 for none.
  // Called block-uniformly (it may reload the window).
  template <int D>
  __device__ int64_t row(int i, int tt, int tok) {
    const int li = page_of(i * tt);  // the tile's first list entry, relative to begin
    if (li / kWindow != window && i < tiles(tt)) {
      window = li / kWindow;
      __syncthreads();
      load_window(window);
      __syncthreads();
    }
    const int slot = i * tt + tok;
    if (slot >= slots) return -1;
    const int li_t = page_of(slot);
    const int page = page_s[li_t % kWindow], r = slot - li_t * P;
    if (page < 0 || r >= ((page & 1) ? last_len : P)) return -1;
    return ((int64_t(page >> 1) * Hk + hk) * P + r) * D;
  }
};

// A decode block's place in the grid (chunk, KV head and query-head subgroup, sequence), its
// first query head and head count, and its page rows with the first window loaded. Waits
// first for the kernel it was launched behind (PDL: the selection, queries and page table
// may still be in flight until then).
template <int G>
struct DecodeBlock {
  struct PdlWait {  // the first member: constructed before anything reads device memory
    __device__ PdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    }
  } waited;
  int b, hk, chunk, sg, h0, ng;
  PageRows pr;
  __device__ DecodeBlock(const DecodeParams& p, int32_t* page_s)
      : b(blockIdx.z),
        hk(blockIdx.y / p.subgroups),
        chunk(blockIdx.x),
        sg(blockIdx.y % p.subgroups),
        h0(hk * p.group + sg * G),
        ng(min(G, p.group - sg * G)),
        pr(p, page_s, b, hk, chunk) {
    pr.load_window(0);
  }
};

// The block's output from its warps' partial softmax states (m, l in log2 units; acc
// unnormalised): the normalised output and log-sum-exp when the block is the only chunk,
// else the chunk's partial for merge_kernel.
template <int NW, int G, int D>
__device__ void combine_warps(const DecodeParams& p, const float (&m_s)[NW][G], const float (&l_s)[NW][G],
                              const float (&acc_s)[NW][G][D], int ng, int b, int h0, int chunk) {
  for (int i = threadIdx.x; i < ng * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < NW; ++w) M = fmaxf(M, m_s[w][g]);
    float L = 0.0f, o = 0.0f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < NW; ++w) {
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

// Lanes per token, tokens per tile and pipeline depth of decode_kernel<T, D, G>.
template <class T, int D, int G>
struct DecodeTile {
  static constexpr int CPL = G <= 4 ? 16 : 8;            // channels per lane (registers: 2*G*CPL)
  static constexpr int LPT = D / CPL;                    // lanes per token, 4..32
  static constexpr int TT = kThreads / LPT;              // tokens per tile
  static constexpr int NCH = CPL * int(sizeof(T)) / 16;  // 16-byte pieces per lane per row
  static constexpr int VEC = 16 / int(sizeof(T));
  // Ring stages (32 KB of K+V per block at 16-bit storage). 8 stages were measured no
  // faster on the H100 (the loop is issue-bound, not latency-bound, at 3 blocks per SM).
  static constexpr int S = NCH <= 2 ? 4 : 2;
  static constexpr int NW = kThreads / 32;
  static_assert(LPT >= 1 && LPT <= 32 && NCH >= 1, "unsupported head dim / group");
};

template <class T, int D, int G>
__global__ void __launch_bounds__(kThreads, 3) decode_kernel(const DecodeParams p) {
  using Tile = DecodeTile<T, D, G>;
  constexpr int CPL = Tile::CPL, LPT = Tile::LPT, TT = Tile::TT, NCH = Tile::NCH, VEC = Tile::VEC, S = Tile::S;
  constexpr int NW = Tile::NW;
  // The ring is dead once the loop ends: the warps' partial outputs reuse its memory.
  __shared__ union {
    struct {
      uint4 k[S][NCH][kThreads], v[S][NCH][kThreads];
    } ring;
    float acc[NW][G][D];
  } sm;
  auto& kbuf = sm.ring.k;
  auto& vbuf = sm.ring.v;
  auto& acc_s = sm.acc;
  __shared__ float m_s[NW][G], l_s[NW][G];
  __shared__ __align__(16) float q_s[G][D];
  __shared__ int32_t page_s[kWindow];

  // Launched as a programmatic dependent (PDL): the launch overlaps the previous kernel's tail.
  DecodeBlock<G> blk(p, page_s);
  const int b = blk.b, chunk = blk.chunk, h0 = blk.h0, ng = blk.ng;
  PageRows& pr = blk.pr;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int tok = tid / LPT, part = tid % LPT;
  const T* K = static_cast<const T*>(p.k);
  const T* V = static_cast<const T*>(p.v);
  const int tiles = pr.tiles(TT);
  for (int i = tid; i < G * D; i += kThreads) {
    const int g = i / D, d = i % D;
    q_s[g][d] = g < ng ? load_any(p.q, p.q_dtype, b * p.qs0 + (h0 + g) * p.qs1 + d * p.qs2) * p.scale_log2 : 0.0f;
  }
  __syncthreads();
  // Channel c of piece j of this lane: (j * LPT + part) * VEC + e (a token's LPT lanes read
  // LPT * 16 contiguous bytes per piece: whole cache lines).
  float q[G][CPL];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int j = 0; j < NCH; ++j)
#pragma unroll
      for (int e = 0; e < VEC; ++e) q[g][j * VEC + e] = q_s[g][(j * LPT + part) * VEC + e];

  auto row_of = [&](int i) { return pr.row<D>(i, TT, tok); };
  auto issue = [&](int stage, int64_t row) {
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
      const int64_t e = row >= 0 ? row + (j * LPT + part) * VEC : 0;
      cp_async16(&kbuf[stage][j][tid], K + e, row >= 0 ? 16 : 0);
      cp_async16(&vbuf[stage][j][tid], V + e, row >= 0 ? 16 : 0);
    }
  };

  float m[G], l[G], acc[G][CPL];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < CPL; ++e) acc[g][e] = 0.0f;
  }

  // Prologue: S - 1 tiles in flight. Bit s of `held`: stage s holds a token of this lane.
  int64_t rows[S - 1];
  uint32_t held = 0;
#pragma unroll
  for (int s = 0; s < S - 1; ++s) rows[s] = row_of(s);
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    issue(s, rows[s]);
    cp_async_commit();
    held |= rows[s] >= 0 ? 1u << s : 0u;
  }
  int64_t row_next = row_of(S - 1);  // one tile ahead: the page-table reads overlap a tile
  for (int i = 0; i < tiles; ++i) {
    const int stage = i % S;
    // Refill the stage consumed in the previous iteration (by this lane only) with tile i+S-1.
    const int fill = (i + S - 1) % S;
    asm volatile("" ::: "memory");  // the last tile's reads of that stage stay above the refill
    held = (held & ~(1u << fill)) | (row_next >= 0 ? 1u << fill : 0u);
    issue(fill, row_next);
    cp_async_commit();
    row_next = row_of(i + S);
    cp_async_wait<S - 1>();  // tile i's group has landed
    // No barrier orders this lane's shared reads against its own cp.async writes: keep the
    // compiler from moving the reads above the wait or below the next refill.
    asm volatile("" ::: "memory");
    const bool valid = (held >> stage) & 1u;

    float x[CPL];
#pragma unroll
    for (int j = 0; j < NCH; ++j) unpack16<T>(kbuf[stage][j][tid], x + j * VEC);
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float a = 0.0f;
#pragma unroll
      for (int e = 0; e < CPL; ++e) a = fmaf(q[g][e], x[e], a);
#pragma unroll
      for (int o = LPT / 2; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
      s[g] = a;
    }
    if (valid) {
#pragma unroll
      for (int j = 0; j < NCH; ++j) unpack16<T>(vbuf[stage][j][tid], x + j * VEC);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        if (s[g] > m[g]) {  // rare after the first tokens: the running maximum of a stream
          const float corr = fast_exp2(m[g] - s[g]);
          l[g] *= corr;
#pragma unroll
          for (int e = 0; e < CPL; ++e) acc[g][e] *= corr;
          m[g] = s[g];
        }
        const float pr = fast_exp2(s[g] - m[g]);
        l[g] += pr;
#pragma unroll
        for (int e = 0; e < CPL; ++e) acc[g][e] = fmaf(pr, x[e], acc[g][e]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every lane is done with the ring before acc_s overwrites it

  // Merge the lanes that hold the same channels (same part, other tokens) of this warp...
#pragma unroll
  for (int o = LPT; o < 32; o <<= 1) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[g], o);
      const float lo = __shfl_xor_sync(0xffffffffu, l[g], o);
      const float M = fmaxf(m[g], mo);
      const float fa = M == -INFINITY ? 0.0f : fast_exp2(m[g] - M);
      const float fb = M == -INFINITY ? 0.0f : fast_exp2(mo - M);
      l[g] = l[g] * fa + lo * fb;
#pragma unroll
      for (int e = 0; e < CPL; ++e) {
        const float ao = __shfl_xor_sync(0xffffffffu, acc[g][e], o);
        acc[g][e] = acc[g][e] * fa + ao * fb;
      }
      m[g] = M;
    }
  }
  // ... then the warps through shared memory.
  if (lane < LPT) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (lane == 0) {
        m_s[warp][g] = m[g];
        l_s[warp][g] = l[g];
      }
#pragma unroll
      for (int j = 0; j < NCH; ++j)
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc_s[warp][g][(j * LPT + part) * VEC + e] = acc[g][j * VEC + e];
    }
  }
  __syncthreads();

  combine_warps<NW, G, D>(p, m_s, l_s, acc_s, ng, b, h0, chunk);
}

// Tensor-core variant for groups of 3-8 query heads (blocks of 4 or 8) and 16-bit K/V
// (FlashInfer's use_tensor_cores decode): the group's queries are rows 0..7 of an m16n8k16 A
// operand (rows past the group are zero; rows 8..15 their rounding remainders, below), so a
// warp's 16-token tile at D 128 costs 16 mma for S and 8 for O^T instead of the CUDA-core
// kernel's ~1600 warp instructions. Each warp streams its own tiles (tokens [16 w, 16 w + 16) of each
// 64-token block tile) through a private ring of swizzled K and V tiles, so the loop has no
// block barrier; the warp's lanes read each other's copies, hence __syncwarp after the wait
// and before a refill. Online softmax per row (query head) as in the prefill kernels.
template <class T, int D>
struct DecodeMmaTile {
  static constexpr int NW = kThreads / 32;
  static constexpr int WT = 16;          // tokens per warp tile
  static constexpr int TT = NW * WT;     // tokens per block tile
  static constexpr int CH = D / 8;       // 16-byte chunks per K / V row
  static constexpr int RPI = 32 / CH;    // rows a warp copies per instruction
  static constexpr int CPL = WT / RPI;   // copy instructions per matrix and tile
  static constexpr int S = 2;            // ring stages per warp
  static constexpr int TILE = WT * D;    // elements of one K or V tile
  static constexpr size_t smem = size_t(NW) * S * 2 * TILE * sizeof(T);
};

template <class T, int D, int G>
__global__ void __launch_bounds__(kThreads, 3) decode_mma_kernel(const DecodeParams p) {
  using Tile = DecodeMmaTile<T, D>;
  constexpr int NW = Tile::NW, WT = Tile::WT, TT = Tile::TT, CH = Tile::CH, RPI = Tile::RPI, CPL = Tile::CPL;
  constexpr int S = Tile::S;
  constexpr int TILE = Tile::TILE, MT = D / 16;
  static_assert(G >= 1 && G <= 8 && (D == 64 || D == 128), "decode_mma_kernel: up to 8 heads, D 64 or 128");
  // Ring [NW][S][K, V][WT][D]; dead once the loop ends: the warps' partial outputs reuse it.
  extern __shared__ uint4 smem_raw[];
  T* ring = reinterpret_cast<T*>(smem_raw);
  auto& acc_s = *reinterpret_cast<float(*)[NW][G][D]>(smem_raw);
  __shared__ float m_s[NW][G], l_s[NW][G];
  __shared__ __align__(16) T q_s[16 * D];
  __shared__ int32_t page_s[kWindow];

  DecodeBlock<G> blk(p, page_s);  // a programmatic dependent, as decode_kernel
  const int b = blk.b, chunk = blk.chunk, h0 = blk.h0, ng = blk.ng;
  PageRows& pr = blk.pr;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const T* K = static_cast<const T*>(p.k);
  const T* V = static_cast<const T*>(p.v);
  const int tiles = pr.tiles(TT);
  // A rows 0..7: the heads' queries in T; rows 8..15 (no heads: G <= 8) their rounding
  // remainders, q - T(q), also in T. S row g + 8 is then the remainder's product, and adding
  // it to row g (the same thread's c2, c3) gives q.k to ~16 mantissa bits: fp32 queries (the
  // engine's) keep their precision at no extra MMA; 16-bit queries have a zero remainder.
  for (int i = tid; i < 8 * D; i += kThreads) {
    const int r = i / D, d = i % D;
    const float x = r < ng ? load_any(p.q, p.q_dtype, b * p.qs0 + (h0 + r) * p.qs1 + d * p.qs2) : 0.0f;
    const T hi = from_f<T>(x);
    q_s[swz(r, d / 8, CH) * 8 + d % 8] = hi;
    q_s[swz(r + 8, d / 8, CH) * 8 + d % 8] = from_f<T>(x - to_f(hi));
  }
  __syncthreads();
  uint32_t qf[D / 16][4];
  load_q_fragments<T, D>(q_s, 0, lane, qf);

  // Lane pair (2 t, 2 t + 1) resolves token t's row of the warp's tile; copy c then takes
  // rows [c * RPI, c * RPI + RPI) whole (each lane one 16-byte chunk, the row index from its
  // pair by shuffle), so every copy instruction reads whole 128-byte lines (a first version
  // with a lane pair per row, 32 bytes of 16 rows per instruction, and O = P V in 64
  // accumulator registers streamed dense ~20% slower than the CUDA-core kernel).
  const int my_tok = warp * WT + lane / 2;
  auto row_of = [&](int i) { return int(pr.row<1>(i, TT, my_tok)); };  // in rows: fits int32
  T* my_ring = ring + warp * S * 2 * TILE;
  auto issue = [&](int stage, int row) {
    T* k_s = my_ring + stage * 2 * TILE;
    const int ch = lane % CH;
#pragma unroll
    for (int c = 0; c < CPL; ++c) {
      const int r = c * RPI + lane / CH;
      const int src = __shfl_sync(0xffffffffu, row, 2 * r);
      const int64_t e = src >= 0 ? int64_t(src) * D + ch * 8 : 0;
      cp_async16(k_s + swz(r, ch, CH) * 8, K + e, src >= 0 ? 16 : 0);
      cp_async16(k_s + TILE + swz(r, ch, CH) * 8, V + e, src >= 0 ? 16 : 0);
    }
  };
  // Bit 2 t of a stage's mask: token t of the warp's tile is there (ballot of the lane pairs).
  auto valid_mask = [&](int row) { return __ballot_sync(0xffffffffu, row >= 0); };

  // O^T = V^T P^T: m-tile mt holds channels [16 mt, 16 mt + 16) x heads 0..7 in the C layout
  // (c0, c1: channel g, heads 2 t4 and 2 t4 + 1; c2, c3: channel g + 8): all 32 registers are
  // live, where O = P V with the heads as rows would leave rows 8..15 empty.
  float ot[MT][4] = {};
  float m = -INFINITY, l = 0.0f;  // row g's running maximum (log2 units) and this lane's share of its sum
  uint32_t vm[S];
  int rows[S - 1];
#pragma unroll
  for (int s = 0; s < S - 1; ++s) rows[s] = row_of(s);
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    issue(s, rows[s]);
    cp_async_commit();
    vm[s] = valid_mask(rows[s]);
  }
  int row_next = row_of(S - 1);
  for (int i = 0; i < tiles; ++i) {
    const int stage = i % S, fill = (i + S - 1) % S;
    __syncwarp();  // every lane's reads of the stage being refilled are done
    issue(fill, row_next);
    cp_async_commit();
    vm[S - 1] = valid_mask(row_next);
    row_next = row_of(i + S);
    cp_async_wait<S - 1>();
    __syncwarp();  // the other lanes' copies of tile i are visible
    const T* k_s = my_ring + stage * 2 * TILE;
    float s[2][4] = {};
    qk_tile<T, D, WT>(qf, k_s, lane, s);
#pragma unroll
    for (int n = 0; n < 2; ++n) {  // + the remainder rows' products (see q_s above)
      s[n][0] += s[n][2];
      s[n][1] += s[n][3];
    }
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int t = n * 8 + 2 * t4 + e;
        s[n][e] = (vm[0] >> (2 * t)) & 1u ? s[n][e] * p.scale_log2 : -INFINITY;
        mx = fmaxf(mx, s[n][e]);
      }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    if (__any_sync(0xffffffffu, mx > m)) {  // rare after the first tiles
      const float corr = mx > m ? fast_exp2(m - mx) : 1.0f;  // exp2(-inf) = 0 for the first tokens
      l *= corr;
      m = fmaxf(m, mx);
      // This lane's O^T columns are heads 2 t4 and 2 t4 + 1: their factors from quads 2 t4, 2 t4 + 1.
      const float ca = __shfl_sync(0xffffffffu, corr, 8 * t4), cb = __shfl_sync(0xffffffffu, corr, 8 * t4 + 4);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        ot[mt][0] *= ca;
        ot[mt][1] *= cb;
        ot[mt][2] *= ca;
        ot[mt][3] *= cb;
      }
    }
    const float base = m == -INFINITY ? 0.0f : m;  // no token yet: every weight is exp2(-inf) = 0
    float pw[2][2];
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        pw[n][e] = fast_exp2(s[n][e] - base);
        l += pw[n][e];
      }
    // P^T as the B operand (k = token, n = head): the S accumulators' layout as it stands.
    const uint32_t pb[2] = {pack2<T>(pw[0][0], pw[0][1]), pack2<T>(pw[1][0], pw[1][1])};
    const T* v_s = k_s + TILE;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      uint32_t va[4];  // V^T (channels x tokens) A fragment: ldmatrix.trans of the token-major rows
      const int m8 = lane / 8;
      ldmatrix_x4_trans(va, v_s + swz((m8 / 2) * 8 + lane % 8, mt * 2 + m8 % 2, CH) * 8);
      mma16816<T>(ot[mt], va, pb);
    }
#pragma unroll
    for (int s2 = 0; s2 < S - 1; ++s2) vm[s2] = vm[s2 + 1];
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with its ring before acc_s overwrites it

  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  if (g < G && t4 == 0) {
    m_s[warp][g] = m;
    l_s[warp][g] = l;
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int h = 2 * t4 + (e & 1);
      if (h < G) acc_s[warp][h][mt * 16 + g + 8 * (e / 2)] = ot[mt][e];
    }
  __syncthreads();
  combine_warps<NW, G, D>(p, m_s, l_s, acc_s, ng, b, h0, chunk);
}

// One block per (sequence, query head): weights exp2(lse_c - max) over the chunks. The
// chunks are spread over the warps (each lane D/32 channels) so hundreds of chunks merge
// with independent loads in flight, not one dependent chain.
constexpr int kMergeWarps = 8;
__global__ void __launch_bounds__(kMergeWarps * 32) merge_kernel(const DecodeParams p, int D) {
  __shared__ float red[kMergeWarps];
  __shared__ float o_s[kMergeWarps][256];
  __shared__ float l_s[kMergeWarps];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");  // launched as a PDL dependent of decode_kernel
#endif
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

bool mma_fits(DType kv, int head_dim, int group) {
  return (kv == DType::bf16 || kv == DType::f16) && (head_dim == 64 || head_dim == 128) && heads_per_block(group) >= 4;
}

// Kernels with more than the default 48 KB of dynamic shared memory must say so (per device;
// cheap to repeat).
template <class K>
void allow_dynamic_smem(K kernel, size_t smem) {
  if (smem > 48 * 1024)
    UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
}

// Calls f(kernel, dynamic shared memory bytes) with the instantiation serving `group` on
// the kernel `mma` names (decode_mma_kernel, else decode_kernel).
template <class T, int D, class F>
void with_decode_kernel(int group, bool mma, F&& f) {
  if constexpr ((std::is_same_v<T, bf16> || std::is_same_v<T, f16>) && (D == 64 || D == 128)) {
    if (mma) {
      constexpr size_t smem = DecodeMmaTile<T, D>::smem;
      if (heads_per_block(group) == 4) f(decode_mma_kernel<T, D, 4>, smem);
      else f(decode_mma_kernel<T, D, 8>, smem);
      return;
    }
  }
  switch (heads_per_block(group)) {
    case 1: f(decode_kernel<T, D, 1>, size_t(0)); break;
    case 2: f(decode_kernel<T, D, 2>, size_t(0)); break;
    case 4: f(decode_kernel<T, D, 4>, size_t(0)); break;
    default: f(decode_kernel<T, D, 8>, size_t(0)); break;
  }
}

template <class T, int D>
void launch_typed(const DecodeParams& p, dim3 grid, int group, bool mma, cudaStream_t stream) {
  with_decode_kernel<T, D>(group, mma, [&](auto kernel, size_t smem) {
    allow_dynamic_smem(kernel, smem);
    launch_pdl(kernel, grid, dim3(kThreads), smem, stream, p);
  });
  if (mma) UNIQUE_CUDA_LAUNCH("decode_mma_kernel");
  else UNIQUE_CUDA_LAUNCH("decode_kernel");
}

// Resident blocks per SM of the decode kernel a launch will use (cached per instantiation).
int blocks_per_sm(DType dtype, int D, int group, bool mma) {
  static int cache[4][3][4][2] = {};  // [KV dtype][head dim][heads per block][mma]
  const int hpb = heads_per_block(group);
  int& c = cache[int(dtype)][D == 64 ? 0 : D == 128 ? 1 : 2][hpb == 1 ? 0 : hpb == 2 ? 1 : hpb == 4 ? 2 : 3][mma];
  if (c) return c;
  int n = 0;
  dispatch_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    auto by_group = [&](auto dtag) {
      with_decode_kernel<T, decltype(dtag)::value>(group, mma, [&](auto kernel, size_t smem) {
        allow_dynamic_smem(kernel, smem);
        UNIQUE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, smem));
      });
    };
    if (D == 64) by_group(std::integral_constant<int, 64>{});
    else if (D == 128) by_group(std::integral_constant<int, 128>{});
    else by_group(std::integral_constant<int, 256>{});
  });
  c = std::max(n, 1);
  return c;
}
}  // namespace

const char* decode_kernel_choice(DType kv_dtype, int head_dim, int group) {
  const char* e = std::getenv("UNIQUE_DECODE_KERNEL");
  const std::string want = e && *e ? e : "auto";
  UNIQUE_CHECK_ARG(want == "auto" || want == "simt" || want == "mma", "UNIQUE_DECODE_KERNEL", "auto, simt or mma",
                   want);
  const bool fits = mma_fits(kv_dtype, head_dim, group);
  UNIQUE_CHECK_ARG(fits || want != "mma", "UNIQUE_DECODE_KERNEL",
                   "auto or simt here (mma needs bf16 / fp16 K/V, head dim 64 or 128, at least 3 query heads per KV head)",
                   detail::concat("mma for ", to_string(kv_dtype), " K/V, head dim ", head_dim, ", group ", group));
  return fits && want != "simt" ? "mma" : "simt";
}

namespace {
bool mma_chosen(DType kv_dtype, int head_dim, int group) {
  return std::strcmp(decode_kernel_choice(kv_dtype, head_dim, group), "mma") == 0;
}
}  // namespace

int decode_chunks(int batch, int num_qo_heads, int num_kv_heads, int page_size, int max_list, DType dtype,
                  int head_dim) {
  // Tuning knob for benchmarks and tests: UNIQUE_DECODE_CHUNKS=N forces N chunks per
  // (sequence, head); read per call (a test sets it around a launch).
  if (const char* e = std::getenv("UNIQUE_DECODE_CHUNKS"); e && std::atoi(e) > 0)
    return std::min(std::atoi(e), std::max(1, max_list));
  const int group = num_qo_heads / num_kv_heads;
  const int sgs = (group + heads_per_block(group) - 1) / heads_per_block(group);
  const int rows = batch * num_kv_heads * sgs;
  // One full wave of blocks (resident blocks per SM from the occupancy calculator): the
  // largest chunk count whose blocks fit in it; each chunk at least 64 tokens. A block's
  // copies run ahead of its arithmetic, so long chunks stream at full speed and extra waves
  // only add start-up latency and merge work (2 waves measured 3-12% slower on the H100).
  const bool mma = mma_chosen(dtype, head_dim, group);
  const int slots = blocks_per_sm(dtype, head_dim, group, mma) * num_sms();
  static const int waves = [] {  // tuning knob for benchmarks: UNIQUE_DECODE_WAVES
    const char* e = std::getenv("UNIQUE_DECODE_WAVES");
    return e && std::atoi(e) > 0 ? std::atoi(e) : 1;
  }();
  const int want = std::max(1, waves * slots / rows);
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
  // The tensor-core kernel passes K/V row indices between lanes as int32: a pool of 2^31 rows
  // or more (256 GiB of K at D 64; host-mapped pools) takes the CUDA-core kernel.
  const bool rows_fit = int64_t(kv.num_pages) * Hk * kv.page_size < (int64_t(1) << 31);
  const bool mma = rows_fit && mma_chosen(kv.dtype, D, group);
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
  p.p_shift = (kv.page_size & (kv.page_size - 1)) == 0 ? __builtin_ctz(kv.page_size) : -1;
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
  const dim3 grid(chunks, Hk * p.subgroups, kv.batch);
  dispatch_dtype(kv.dtype, [&](auto t) {
    using T = decltype(t);
    switch (D) {
      case 64: launch_typed<T, 64>(p, grid, group, mma, stream); break;
      case 128: launch_typed<T, 128>(p, grid, group, mma, stream); break;
      default: launch_typed<T, 256>(p, grid, group, mma, stream); break;
    }
  });
  if (chunks > 1) {
    launch_pdl(merge_kernel, dim3(kv.batch * Hq), dim3(kMergeWarps * 32), 0, stream, p, D);
    UNIQUE_CUDA_LAUNCH("merge_kernel");
  }
}

}  // namespace unique::cuda

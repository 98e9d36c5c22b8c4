// Soft-mask attention, the small kernels around the attention passes: page statistics,
// per-row thresholds (top-k boundary of the candidate page scores), the backward's
// delta = rowsum(dout * out), and the finalize pass that adds the page-statistics path to
// dk and casts the fp32 gradient accumulators to the output dtypes.
#include <algorithm>

#include "cuda/soft_mask_common.cuh"

namespace unique::cuda {

namespace soft_mask {
namespace {

// ---- page statistics: one block per (page, KV head, batch), one thread per channel ------
// Writes mu/sigma in fp32 and their hi + lo split (SoftMaskArgs::hl, the B-operand form of
// every tensor-core page score, so no kernel splits them again).
template <class T>
__global__ void stats_kernel(const SoftMaskArgs a, int D) {
  const int j = blockIdx.x, h = blockIdx.y, b = blockIdx.z, d = threadIdx.x;
  const T* K = static_cast<const T*>(a.k);
  float m = 0.0f;
  for (int i = 0; i < a.P; ++i) m += to_f<T>(K[row_off(a.ks, b, int64_t(j) * a.P + i, h) + d]);
  m /= a.P;
  float var = 0.0f;  // two passes: exact for pages whose keys share a large offset
  for (int i = 0; i < a.P; ++i) {
    const float e = to_f<T>(K[row_off(a.ks, b, int64_t(j) * a.P + i, h) + d]) - m;
    var = fmaf(e, e, var);
  }
  const int64_t o = ((int64_t(b) * a.Hkv + h) * a.NC + j) * D + d;
  const float sg = sqrtf(var / a.P);
  a.mu[o] = m;
  a.sig[o] = sg;
  // Channel pairs (d, d + 1) meet in the even lane (D is a multiple of 32).
  const float m1 = __shfl_down_sync(0xffffffffu, m, 1), s1 = __shfl_down_sync(0xffffffffu, sg, 1);
  if (d % 2 == 0) {
    uint4 w;
    split2<T>(m, m1, w.x, w.y);
    split2<T>(sg, s1, w.z, w.w);
    a.hl[o / 2] = w;
    // The page-score B image of the page's 64-key tile: row pi (hi) and 4 + pi (lo) of the
    // tile's pages, channel pair (d, d + 1) of chunk d / 8 (swizzled: wgmma.cuh).
    const int kt = j / a.npg, pi = j % a.npg;
    uint8_t* img = a.pb + (int64_t(b) * a.Hkv + h) * a.NT * (2 * D * 16) + int64_t(kt) * (2 * D * 16) +
                   (d / 64) * 1024 + (d % 8) * 2;
    auto at = [&](int row) { return reinterpret_cast<uint32_t*>(img + row * 128 + ((((d % 64) / 8) ^ row) << 4)); };
    *at(pi) = w.x;
    *at(4 + pi) = w.y;
    *reinterpret_cast<uint32_t*>(reinterpret_cast<uint8_t*>(at(pi)) + D * 16) = w.z;
    *reinterpret_cast<uint32_t*>(reinterpret_cast<uint8_t*>(at(4 + pi)) + D * 16) = w.w;
  }
}

// ---- thresholds ------------------------------------------------------------------------------
// One warp per query row, kRows rows (consecutive t, one query head) per block sharing
// each 32-page tile of mu/sigma staged in shared memory (rows padded by one float against
// bank conflicts: lane = page reads a column). Each warp keeps its row's candidate scores
// in shared memory and selects the k-th and (k+1)-th largest by a bitwise search over
// order-preserving integer keys (32 counting passes, exact, no sorting).
constexpr int kRows = 8;

__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// The kth (1-based) largest key among s[0..n) (kth <= n); the whole warp calls it.
__device__ uint32_t kth_largest(const float* s, int n, int kth, int lane) {
  uint32_t K = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t cand = K | (1u << bit);
    unsigned cnt = 0;
    for (int i = lane; i < n; i += 32) cnt += order_key(s[i]) >= cand;
    cnt = __reduce_add_sync(0xffffffffu, cnt);
    if (cnt >= unsigned(kth)) K = cand;
  }
  return K;
}

// tau of one row from its n candidate scores (whole warp): -inf (no mask) when n <= k,
// else the midpoint of the k-th and (k+1)-th largest.
__device__ float tau_from_scores(const SoftMaskArgs& a, const float* my_scores, int n, int lane) {
  float tau = -INFINITY;  // no mask: n <= k candidates all weigh 1
  if (n > a.kpages) {
    const uint32_t kk = kth_largest(my_scores, n, a.kpages, lane);
    // (k+1)-th largest: kk itself if it occurs more than once among the top k+1, else the
    // largest key below it.
    unsigned ge = 0;
    uint32_t below = 0;
    for (int i = lane; i < n; i += 32) {
      const uint32_t x = order_key(my_scores[i]);
      ge += x >= kk;
      if (x < kk) below = max(below, x);
    }
    ge = __reduce_add_sync(0xffffffffu, ge);
    below = __reduce_max_sync(0xffffffffu, below);
    const uint32_t k1 = ge >= unsigned(a.kpages + 1) ? kk : below;
    tau = 0.5f * (key_value(kk) + key_value(k1));
  }
  return tau;
}

// tau from order keys (order_key of the scores): the keys of one row, n of them, sit in
// shared memory; the warp moves them into registers (R per lane, n <= 32 R) and finds the
// k-th largest by the same bitwise search, one compare per key and bit without shared-memory
// traffic; bits on which all n keys agree are taken without a count.
template <int R>
__device__ float tau_from_keys_reg(const SoftMaskArgs& a, const uint32_t* keys_s, int n, int lane) {
  uint32_t x[R];
  uint32_t all_and = ~0u, all_or = 0u;
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int idx = i * 32 + lane;
    x[i] = idx < n ? keys_s[idx] : 0u;  // 0 is below every finite score's key: never counted
    if (idx < n) {
      all_and &= x[i];
      all_or |= x[i];
    }
  }
  all_and = __reduce_and_sync(0xffffffffu, all_and);
  all_or = __reduce_or_sync(0xffffffffu, all_or);
  const uint32_t differ = all_and ^ all_or;
  uint32_t K = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t m = 1u << bit;
    if (!(differ & m)) {  // every key has this bit = all_and's: so has the k-th largest
      K |= all_and & m;
      continue;
    }
    const uint32_t cand = K | m;
    unsigned cnt = 0;
#pragma unroll
    for (int i = 0; i < R; ++i) cnt += x[i] >= cand;
    cnt = __reduce_add_sync(0xffffffffu, cnt);
    if (cnt >= unsigned(a.kpages)) K = cand;
  }
  unsigned ge = 0;
  uint32_t below = 0;
#pragma unroll
  for (int i = 0; i < R; ++i) {
    ge += x[i] >= K;
    if (x[i] < K) below = max(below, x[i]);
  }
  ge = __reduce_add_sync(0xffffffffu, ge);
  below = __reduce_max_sync(0xffffffffu, below);
  const uint32_t k1 = ge >= unsigned(a.kpages + 1) ? K : below;
  return 0.5f * (key_value(K) + key_value(k1));
}

// As tau_from_scores, on order keys in shared memory (rows with more than 2048 candidates).
__device__ float tau_from_keys_smem(const SoftMaskArgs& a, const uint32_t* keys_s, int n, int lane) {
  uint32_t K = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t cand = K | (1u << bit);
    unsigned cnt = 0;
    for (int i = lane; i < n; i += 32) cnt += keys_s[i] >= cand;
    cnt = __reduce_add_sync(0xffffffffu, cnt);
    if (cnt >= unsigned(a.kpages)) K = cand;
  }
  unsigned ge = 0;
  uint32_t below = 0;
  for (int i = lane; i < n; i += 32) {
    const uint32_t x = keys_s[i];
    ge += x >= K;
    if (x < K) below = max(below, x);
  }
  ge = __reduce_add_sync(0xffffffffu, ge);
  below = __reduce_max_sync(0xffffffffu, below);
  const uint32_t k1 = ge >= unsigned(a.kpages + 1) ? K : below;
  return 0.5f * (key_value(K) + key_value(k1));
}

// tau of one row from the order keys of its n candidate scores (whole warp): -inf (no
// mask) when n <= k, else the midpoint of the k-th and (k+1)-th largest.
__device__ float tau_from_keys(const SoftMaskArgs& a, const uint32_t* keys_s, int n, int lane) {
  if (n <= a.kpages) return -INFINITY;
  if (n <= 4 * 32) return tau_from_keys_reg<4>(a, keys_s, n, lane);
  if (n <= 8 * 32) return tau_from_keys_reg<8>(a, keys_s, n, lane);
  if (n <= 16 * 32) return tau_from_keys_reg<16>(a, keys_s, n, lane);
  if (n <= 32 * 32) return tau_from_keys_reg<32>(a, keys_s, n, lane);
  if (n <= 64 * 32) return tau_from_keys_reg<64>(a, keys_s, n, lane);
  return tau_from_keys_smem(a, keys_s, n, lane);
}

template <class T, int D>
__global__ void __launch_bounds__(kRows * 32) threshold_kernel(const SoftMaskArgs a, int max_cand) {
  extern __shared__ float sm[];
  float* mu_t = sm;                       // [32][D + 1]
  float* sig_t = mu_t + 32 * (D + 1);     // [32][D + 1]
  float* q_s = sig_t + 32 * (D + 1);      // [kRows][D]
  float* scores = q_s + kRows * D;        // [kRows][max_cand]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int hq = blockIdx.y, b = blockIdx.z, h = hq / a.group;
  const int64_t t0 = int64_t(blockIdx.x) * kRows, t = t0 + warp;
  const T* Q = static_cast<const T*>(a.q);
  for (int i = threadIdx.x; i < kRows * D; i += blockDim.x) {
    const int64_t tt = t0 + i / D;
    q_s[i] = tt < a.L ? to_f<T>(Q[row_off(a.qs, b, tt, hq) + i % D]) : 0.0f;
  }
  const int64_t t_last = std::min<int64_t>(t0 + kRows, a.L) - 1;
  const int block_last = last_candidate(a, t_last);
  const int my_last = t < a.L ? last_candidate(a, t) : -1;
  float* my_scores = scores + warp * max_cand;
  for (int j0 = a.sink; j0 <= block_last; j0 += 32) {
    __syncthreads();  // q_s written / the previous tile consumed
    for (int i = threadIdx.x; i < 32 * D; i += blockDim.x) {
      const int pj = i / D, d = i % D, j = j0 + pj;
      float m = 0.0f, s = 0.0f;
      if (j <= block_last) {
        const int64_t o = ((int64_t(b) * a.Hkv + h) * a.NC + j) * D + d;
        m = a.mu[o];
        s = a.sig[o];
      }
      mu_t[pj * (D + 1) + d] = m;
      sig_t[pj * (D + 1) + d] = s;
    }
    __syncthreads();
    const int j = j0 + lane;
    if (j <= my_last) {
      float dot = 0.0f, off = 0.0f;
      const float* qr = q_s + warp * D;
#pragma unroll 8
      for (int d = 0; d < D; ++d) {
        dot = fmaf(qr[d], mu_t[lane * (D + 1) + d], dot);
        off = fmaf(fabsf(qr[d]), sig_t[lane * (D + 1) + d], off);
      }
      my_scores[j - a.sink] = a.scale * (dot + a.alpha * off);
    }
  }
  __syncwarp();
  if (t >= a.L) return;
  const float tau = tau_from_scores(a, my_scores, my_last - a.sink + 1, lane);
  if (lane == 0) a.tau[(int64_t(b) * a.Hq + hq) * a.L + t] = tau;
}

// Tensor-core thresholds: one block of kMRows = 16 query rows (one m16 tile, one query
// head) and kMWarps warps. Scores [q, |q|] x [mu, sigma]^T with mu/sigma split hi + lo
// (SoftMaskArgs::hl, as warp_log_weights), B fragments straight from global memory (L2),
// warp w taking the 8-page column tiles w, w + kMWarps, ...; the scores stay in shared
// memory as order keys; then warp w selects the thresholds of rows w, w + kMWarps
// (tau_from_keys).
constexpr int kMRows = 16;

template <class T, int D, int kMWarps, int kMinBlocks>
__global__ void __launch_bounds__(kMWarps * 32, kMinBlocks) threshold_mma_kernel(const SoftMaskArgs a, int ks) {
  extern __shared__ uint4 smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);                          // [16][D] swizzled
  uint32_t* keys = reinterpret_cast<uint32_t*>(q_s + kMRows * D);  // [16][ks] order keys of the scores
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int hq = blockIdx.y, b = blockIdx.z, h = hq / a.group;
  const int64_t t0 = int64_t(gridDim.x - 1 - blockIdx.x) * kMRows;  // heaviest (most pages) first
  const T* Q = static_cast<const T*>(a.q);
  constexpr int CH = D / 8;
  for (int i = threadIdx.x; i < kMRows * D; i += blockDim.x) {  // q need not be 16-byte aligned here
    const int r = i / D, d = i % D;
    const int64_t tt = t0 + r;
    q_s[swz(r, d / 8, CH) * 8 + d % 8] = tt < a.L ? Q[row_off(a.qs, b, tt, hq) + d] : from_f<T>(0.0f);
  }
  __syncthreads();
  uint32_t qf[D / 16][4];
  load_q_fragments<T, D>(q_s, 0, lane, qf);
  const int64_t t_last = std::min<int64_t>(t0 + kMRows, a.L) - 1;
  const int block_last = last_candidate(a, t_last);
  int row_last[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t tt = t0 + g + 8 * r;
    row_last[r] = tt < a.L ? last_candidate(a, tt) : -1;
  }
  const uint4* hl = a.hl + (int64_t(b) * a.Hkv + h) * a.NC * (D / 2);
  for (int j0 = a.sink + warp * 8; j0 <= block_last; j0 += kMWarps * 8) {
    const int jb = j0 + g;  // this lane's B column (page)
    const bool has = jb <= block_last;
    float dot[4] = {}, off[4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint4 w0 = make_uint4(0, 0, 0, 0), w1 = w0;
      if (has) {
        w0 = hl[int64_t(jb) * (D / 2) + kk * 8 + t4];
        w1 = hl[int64_t(jb) * (D / 2) + kk * 8 + 4 + t4];
      }
      const uint32_t mh[2] = {w0.x, w1.x}, ml[2] = {w0.y, w1.y}, sh[2] = {w0.z, w1.z}, sl[2] = {w0.w, w1.w};
      const uint32_t qa[4] = {qf[kk][0] & 0x7fff7fffu, qf[kk][1] & 0x7fff7fffu, qf[kk][2] & 0x7fff7fffu,
                              qf[kk][3] & 0x7fff7fffu};
      mma16816<T>(dot, qf[kk], mh);
      mma16816<T>(dot, qf[kk], ml);
      mma16816<T>(off, qa, sh);
      mma16816<T>(off, qa, sl);
    }
    // A row's two adjacent keys as one 8-byte store: with the row stride = 8 (mod 32) words
    // the warp's 32 pairs fill the 32 banks twice (two wavefronts for 256 bytes); 4-byte stores
    // at a stride that is a multiple of 32 (L / P a power of two) were 8-way bank conflicts.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int j = j0 + 2 * t4;  // even offset from j0: the pair is 8-byte aligned
      uint32_t* at = keys + (g + 8 * r) * ks + (j - a.sink);
      const uint32_t k0 = order_key(a.scale * (dot[2 * r] + a.alpha * off[2 * r]));
      const uint32_t k1 = order_key(a.scale * (dot[2 * r + 1] + a.alpha * off[2 * r + 1]));
      if (j + 1 <= row_last[r]) *reinterpret_cast<uint2*>(at) = make_uint2(k0, k1);
      else if (j <= row_last[r]) *at = k0;
    }
  }
  __syncthreads();
  for (int r = warp; r < kMRows; r += kMWarps) {
    const int64_t t = t0 + r;
    if (t >= a.L) break;
    const float tau = tau_from_keys(a, keys + r * ks, last_candidate(a, t) - a.sink + 1, lane);
    if (lane == 0) a.tau[(int64_t(b) * a.Hq + hq) * a.L + t] = tau;
  }
}

// ---- delta = rowsum(dout * out), one warp per (row, head) -----------------------------------
// Also the row's lse in log2 units and |q| in contiguous layouts the wgmma backward streams
// with cp.async (SoftMaskArgs::lse2, ::aq).
template <class T>
__global__ void delta_kernel(const SoftMaskArgs a, int D) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= int64_t(a.B) * a.Hq * a.L) return;
  const int64_t t = w % a.L;
  const int hq = static_cast<int>((w / a.L) % a.Hq), b = static_cast<int>(w / (int64_t(a.L) * a.Hq));
  const T* dO = static_cast<const T*>(a.dout);
  float s = 0.0f;
  for (int d = lane; d < D; d += 32)
    s += to_f<T>(dO[row_off(a.dos, b, t, hq) + d]) * load_any(a.out, a.o_dtype, row_off(a.os, b, t, hq) + d);
  s = warp_sum(s);
  if (lane == 0) a.delta[w] = s;  // w = (b * Hq + hq) * L + t
  if (lane == 0) a.lse2[w] = a.lse[b * a.ls.b + t * a.ls.t + hq * a.ls.h] * kLog2e;
  const T* Q = static_cast<const T*>(a.q);
  T* aq = static_cast<T*>(a.aq) + ((int64_t(b) * a.L + t) * a.Hq + hq) * D;
  for (int d = lane; d < D; d += 32) aq[d] = T{uint16_t(Q[row_off(a.qs, b, t, hq) + d].bits & 0x7fffu)};
}

// ---- finalize: one thread per element of dq, then of dk/dv --------------------------------------
__global__ void finalize_kernel(const SoftMaskArgs a, int D) {
  const int64_t nq = int64_t(a.B) * a.L * a.Hq * D, nk = int64_t(a.B) * a.L * a.Hkv * D;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < nq) {
    const int d = int(i % D);
    const int hq = int((i / D) % a.Hq);
    const int64_t t = (i / (int64_t(D) * a.Hq)) % a.L;
    const int b = int(i / (int64_t(D) * a.Hq * a.L));
    store_any(a.dq, a.dq_dtype, row_off(a.dqs, b, t, hq) + d, a.dq_acc[i]);
  }
  if (i < nk) {
    const int d = int(i % D);
    const int h = int((i / D) % a.Hkv);
    const int64_t t = (i / (int64_t(D) * a.Hkv)) % a.L;
    const int b = int(i / (int64_t(D) * a.Hkv * a.L));
    float g = a.dk_acc[i];
    const int j = int(t >> a.pshift);
    if (j < a.NC) {
      // dmu/dk_i = 1/P; dsigma/dk_i = (k_i - mu) / (P sigma), 0 where sigma == 0.
      const int64_t o = ((int64_t(b) * a.Hkv + h) * a.NC + j) * D + d;
      g += a.dmu[o] / a.P;
      const float sg = a.sig[o];
      if (sg > 0.0f)
        g += a.dsig[o] * (load_any(a.k, a.dtype, row_off(a.ks, b, t, h) + d) - a.mu[o]) / (a.P * sg);
    }
    store_any(a.dk, a.dk_dtype, row_off(a.dks, b, t, h) + d, g);
    store_any(a.dv, a.dv_dtype, row_off(a.dvs, b, t, h) + d, a.dv_acc[i]);
  }
}

}  // namespace
}  // namespace soft_mask

using namespace soft_mask;

void launch_soft_mask_stats(const SoftMaskArgs& a, int D, cudaStream_t stream) {
  UNIQUE_CUDA_CHECK(cudaMemsetAsync(a.pb, 0, size_t(a.B) * a.Hkv * a.NT * 2 * D * 16, stream));
  if (a.NC == 0) return;
  const dim3 grid(a.NC, a.Hkv, a.B);
  if (a.dtype == DType::bf16) stats_kernel<bf16><<<grid, D, 0, stream>>>(a, D);
  else stats_kernel<f16><<<grid, D, 0, stream>>>(a, D);
  UNIQUE_CUDA_LAUNCH("soft_mask stats_kernel");
}

template <class T, int D, int kMWarps, int kMinBlocks>
static void launch_threshold_mma(const SoftMaskArgs& a, int ks, size_t smem, cudaStream_t stream) {
  auto kernel = threshold_mma_kernel<T, D, kMWarps, kMinBlocks>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((a.L + kMRows - 1) / kMRows, a.Hq, a.B);
  kernel<<<grid, kMWarps * 32, smem, stream>>>(a, ks);
  UNIQUE_CUDA_LAUNCH("soft_mask threshold_mma_kernel");
}

template <class T, int D>
static void launch_threshold_typed(const SoftMaskArgs& a, cudaStream_t stream) {
  const int max_cand = std::max(a.NC, 1);
  int dev = 0, optin = 0;
  UNIQUE_CUDA_CHECK(cudaGetDevice(&dev));
  UNIQUE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  // Tensor-core kernel while 16 rows of scores fit in shared memory (L / P up to ~3.5K).
  const int ks = (max_cand + 31) / 32 * 32 + 8;  // the scores' row stride, 8 (mod 32) words: no bank conflicts
  const size_t smem_mma = size_t(kMRows) * D * sizeof(T) + size_t(kMRows) * ks * sizeof(float);
  if (smem_mma <= size_t(optin)) {
    // Eight warps and three blocks per SM while two blocks' scores fit in an SM's shared
    // memory: the kernel is latency-bound (Nsight: half the issue slots idle), and more resident
    // blocks overlap one block's selection with another's scores (4K-16K tokens: 1.2-1.5x);
    // past that (32K tokens at page 16) one block of sixteen warps is faster.
    int smem_sm = 0;
    UNIQUE_CUDA_CHECK(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    if (2 * (smem_mma + 1024) <= size_t(smem_sm)) launch_threshold_mma<T, D, 8, 3>(a, ks, smem_mma, stream);
    else launch_threshold_mma<T, D, 16, 1>(a, ks, smem_mma, stream);
    return;
  }
  const size_t smem = (2 * 32 * (D + 1) + kRows * D + size_t(kRows) * max_cand) * sizeof(float);
  UNIQUE_CHECK_ARG(smem <= size_t(optin), "seq_len / page_size",
                   detail::concat("<= ", (size_t(optin) / sizeof(float) - 2 * 32 * (D + 1) - kRows * D) / kRows,
                                  " complete pages (CUDA soft-mask threshold kernel)"),
                   a.NC);
  auto kernel = threshold_kernel<T, D>;
  UNIQUE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((a.L + kRows - 1) / kRows, a.Hq, a.B);
  kernel<<<grid, kRows * 32, smem, stream>>>(a, max_cand);
  UNIQUE_CUDA_LAUNCH("soft_mask threshold_kernel");
}

void launch_soft_mask_threshold(const SoftMaskArgs& a, int D, cudaStream_t stream) {
  if (a.dtype == DType::bf16) {
    if (D == 64) launch_threshold_typed<bf16, 64>(a, stream);
    else launch_threshold_typed<bf16, 128>(a, stream);
  } else {
    if (D == 64) launch_threshold_typed<f16, 64>(a, stream);
    else launch_threshold_typed<f16, 128>(a, stream);
  }
}

void launch_soft_mask_delta(const SoftMaskArgs& a, int D, cudaStream_t stream) {
  const int64_t warps = int64_t(a.B) * a.Hq * a.L;
  const int threads = 256;
  const int64_t blocks = (warps * 32 + threads - 1) / threads;
  if (a.dtype == DType::bf16) delta_kernel<bf16><<<unsigned(blocks), threads, 0, stream>>>(a, D);
  else delta_kernel<f16><<<unsigned(blocks), threads, 0, stream>>>(a, D);
  UNIQUE_CUDA_LAUNCH("soft_mask delta_kernel");
}

void launch_soft_mask_finalize(const SoftMaskArgs& a, int D, cudaStream_t stream) {
  const int64_t n = int64_t(a.B) * a.L * a.Hq * D;  // Hq >= Hkv: covers dk/dv too
  const int threads = 256;
  finalize_kernel<<<unsigned((n + threads - 1) / threads), threads, 0, stream>>>(a, D);
  UNIQUE_CUDA_LAUNCH("soft_mask finalize_kernel");
}

}  // namespace unique::cuda

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
  a.mu[o] = m;
  a.sig[o] = sqrtf(var / a.P);
}

// ---- thresholds ------------------------------------------------------------------------------
// One warp per query row, kRows rows (consecutive t, one query head) per block sharing
// each 32-page tile of mu/sigma staged in shared memory (rows padded by one float against
// bank conflicts: lane = page reads a column). Each warp keeps its row's candidate scores
// in shared memory and selects the k-th and (k+1)-th largest by a radix select over
// order-preserving integer keys (4 histogram passes of 8 bits, exact, no sorting).
constexpr int kRows = 8;

__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// The kth (1-based) largest key among s[0..n) (kth <= n); the whole warp calls it. Radix
// select, 8 bits a pass (4 passes over the scores instead of 32): a 256-bin histogram of
// the next digit among the keys matching the prefix found so far (warp-aggregated shared
// atomics), then the digit whose bin holds the kth.
__device__ uint32_t kth_largest(const float* s, int n, int kth, int lane, unsigned* hist) {
  uint32_t prefix = 0, mask = 0;
  int k = kth;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = lane; i < 256; i += 32) hist[i] = 0;
    __syncwarp();
    for (int i0 = 0; i0 < n; i0 += 32) {
      const int i = i0 + lane;
      uint32_t bin = 256;
      if (i < n) {
        const uint32_t x = order_key(s[i]);
        if ((x & mask) == prefix) bin = (x >> shift) & 255u;
      }
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (bin < 256 && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], unsigned(__popc(peers)));
    }
    __syncwarp();
    // Lane l owns bins 255 - 8l - i (i = 0..7), i.e. the digits in descending order.
    unsigned c[8], sum = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      c[i] = hist[255 - 8 * lane - i];
      sum += c[i];
    }
    unsigned incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    const unsigned excl = incl - sum;
    const bool mine = excl < unsigned(k) && unsigned(k) <= incl;
    int digit = 0;
    unsigned above = 0;
    if (mine) {
      unsigned cum = excl;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (cum + c[i] >= unsigned(k)) {
          digit = 255 - 8 * lane - i;
          above = cum;
          break;
        }
        cum += c[i];
      }
    }
    const int src = __ffs(__ballot_sync(0xffffffffu, mine)) - 1;
    digit = __shfl_sync(0xffffffffu, digit, src);
    above = __shfl_sync(0xffffffffu, above, src);
    prefix |= uint32_t(digit) << shift;
    mask |= 255u << shift;
    k -= int(above);
    __syncwarp();  // hist is cleared by the next pass
  }
  return prefix;
}

template <class T, int D>
__global__ void __launch_bounds__(kRows * 32) threshold_kernel(const SoftMaskArgs a, int max_cand) {
  extern __shared__ float sm[];
  float* mu_t = sm;                       // [32][D + 1]
  float* sig_t = mu_t + 32 * (D + 1);     // [32][D + 1]
  float* q_s = sig_t + 32 * (D + 1);      // [kRows][D]
  float* scores = q_s + kRows * D;        // [kRows][max_cand]
  unsigned* hist = reinterpret_cast<unsigned*>(scores + size_t(kRows) * max_cand);  // [kRows][256]
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
  const int n = my_last - a.sink + 1;
  float tau = -INFINITY;  // no mask: n <= k candidates all weigh 1
  if (n > a.kpages) {
    const uint32_t kk = kth_largest(my_scores, n, a.kpages, lane, hist + warp * 256);
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
  if (lane == 0) a.tau[(int64_t(b) * a.Hq + hq) * a.L + t] = tau;
}

// ---- delta = rowsum(dout * out), one warp per (row, head) -----------------------------------
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
    const int j = int(t / a.P);
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
  if (a.NC == 0) return;
  const dim3 grid(a.NC, a.Hkv, a.B);
  if (a.dtype == DType::bf16) stats_kernel<bf16><<<grid, D, 0, stream>>>(a, D);
  else stats_kernel<f16><<<grid, D, 0, stream>>>(a, D);
  UNIQUE_CUDA_LAUNCH("soft_mask stats_kernel");
}

template <class T, int D>
static void launch_threshold_typed(const SoftMaskArgs& a, cudaStream_t stream) {
  const int max_cand = std::max(a.NC, 1);
  const size_t smem = (2 * 32 * (D + 1) + kRows * D + kRows * 256 + size_t(kRows) * max_cand) * sizeof(float);
  int dev = 0, optin = 0;
  UNIQUE_CUDA_CHECK(cudaGetDevice(&dev));
  UNIQUE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  UNIQUE_CHECK_ARG(smem <= size_t(optin), "seq_len / page_size",
                   detail::concat("<= ", (size_t(optin) / sizeof(float) - 2 * 32 * (D + 1) - kRows * D - kRows * 256) / kRows,
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

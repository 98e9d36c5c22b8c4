// Page statistics on the CPU: the fused append (write tokens, then recompute the stats of
// the pages they landed in) and the from-scratch reference over every page.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"

namespace unique::cpu {

namespace {

// Two-pass statistics of `tokens` stored keys of one (page, head), accumulated in Acc and
// rounded once to the stats dtype. Two passes over at most page_size rows: stable, and
// the same numbers however the page was filled.
// fp8 statistics (stats_dtype e4m3) are accumulated in double whatever Acc is, rounded to
// fp32, then quantized per pair with the pair's power-of-two scale (paged_kv.h): the append
// and the recomputation run the same arithmetic, so their codes and scales are identical.
template <class T, class Acc>
void page_head_stats(const PagedKV& kv, int page, int h, int tokens) {
  const int D = kv.head_dim;
  const T* K = static_cast<const T*>(kv.k) + kv.kv_offset(page, h);
  const int64_t so = kv.stats_offset(page, h);
  const bool fp8 = kv.stats_dtype == DType::e4m3;
  // fp32 rows of this page-head for fp8 (mean, std, min, max), quantized after the loop.
  std::vector<float> rows(fp8 ? size_t(4) * D : 0);
  for (int d = 0; d < D; ++d) {
    float mu_f, sd_f, lo_f, hi_f;
    auto stats = [&](auto acc) {
      using A = decltype(acc);
      A sum = 0, lo = INFINITY, hi = -INFINITY;
      for (int t = 0; t < tokens; ++t) {
        const A x = to_float(K[t * D + d]);
        sum += x;
        lo = std::min(lo, x);
        hi = std::max(hi, x);
      }
      const A mu = sum / tokens;
      A ss = 0;
      for (int t = 0; t < tokens; ++t) {
        const A x = A(to_float(K[t * D + d])) - mu;
        // fp8: an explicit fma, as the CUDA append computes it (no contraction choices).
        if (fp8) ss = std::fma(x, x, ss);
        else ss += x * x;
      }
      mu_f = static_cast<float>(mu);
      sd_f = static_cast<float>(std::sqrt(ss / tokens));
      lo_f = static_cast<float>(lo);
      hi_f = static_cast<float>(hi);
    };
    if (fp8) {
      stats(double{});
      rows[d] = mu_f;
      rows[D + d] = sd_f;
      rows[2 * D + d] = lo_f;
      rows[3 * D + d] = hi_f;
      continue;
    }
    stats(Acc{});
    if (kv.mean) {
      store_from_float(kv.mean, kv.stats_dtype, so + d, mu_f);
      store_from_float(kv.std, kv.stats_dtype, so + d, sd_f);
    }
    if (kv.kmin) {
      store_from_float(kv.kmin, kv.stats_dtype, so + d, lo_f);
      store_from_float(kv.kmax, kv.stats_dtype, so + d, hi_f);
    }
  }
  if (!fp8) return;
  auto quantize_pair = [&](const float* a, const float* b, void* pa, void* pb, int which) {
    float amax = 0.0f;
    for (int d = 0; d < D; ++d) amax = std::max(amax, std::max(std::fabs(a[d]), std::fabs(b[d])));
    const int e = e4m3_scale_exp(amax);
    const float inv = pow2f(-e);
    kv.stats_scale[kv.scale_offset(page, h) + which] = pow2f(e);
    uint8_t* qa = static_cast<uint8_t*>(pa) + so;
    uint8_t* qb = static_cast<uint8_t*>(pb) + so;
    for (int d = 0; d < D; ++d) {
      qa[d] = float_to_e4m3_bits(a[d] * inv);
      qb[d] = float_to_e4m3_bits(b[d] * inv);
    }
  };
  if (kv.mean) quantize_pair(rows.data(), rows.data() + D, kv.mean, kv.std, 0);
  if (kv.kmin) quantize_pair(rows.data() + 2 * D, rows.data() + 3 * D, kv.kmin, kv.kmax, 1);
}

template <class T>
void append_typed(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
                  const int32_t* append_indptr) {
  const int H = kv.num_kv_heads, D = kv.head_dim, P = kv.page_size;
  T* K = static_cast<T*>(kv.k);
  T* V = static_cast<T*>(kv.v);
  const bool stats = kv.mean || kv.kmin;
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int b = 0; b < kv.batch; ++b) {
    for (int h = 0; h < H; ++h) {
      const int64_t len = seq_len(kv, b);
      const int n_new = append_indptr[b + 1] - append_indptr[b];
      if (n_new == 0) continue;
      const int32_t* table = kv.page_indices + kv.page_indptr[b];
      for (int i = 0; i < n_new; ++i) {
        const int64_t pos = len - n_new + i;
        const int64_t dst = kv.kv_offset(table[pos / P], h) + (pos % P) * D;
        const int64_t src = (static_cast<int64_t>(append_indptr[b] + i) * H + h) * D;
        for (int d = 0; d < D; ++d) {
          K[dst + d] = from_float<T>(load_as_float(k_new.data, k_new.dtype, src + d));
          V[dst + d] = from_float<T>(load_as_float(v_new.data, v_new.dtype, src + d));
        }
      }
      if (!stats) continue;
      const int64_t first = (len - n_new) / P, last = (len - 1) / P;
      for (int64_t j = first; j <= last; ++j) {
        const int tokens = static_cast<int>(std::min<int64_t>(P, len - j * P));
        page_head_stats<T, float>(kv, table[j], h, tokens);
      }
    }
  }
}

}  // namespace

void append_kv(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
               const int32_t* append_indptr) {
  dispatch_dtype(kv.dtype, [&](auto t) {
    append_typed<decltype(t)>(kv, k_new, v_new, append_indptr);
  });
}

void recompute_page_stats(const PagedKV& kv) {
  dispatch_dtype(kv.dtype, [&](auto t) {
    using T = decltype(t);
    for (int b = 0; b < kv.batch; ++b) {
      const int n = seq_pages(kv, b);
      for (int j = 0; j < n; ++j)
        for (int h = 0; h < kv.num_kv_heads; ++h)
          page_head_stats<T, double>(kv, kv.page_indices[kv.page_indptr[b] + j], h,
                                     j == n - 1 ? kv.last_page_len[b] : kv.page_size);
    }
  });
}

void load_query_group(const TensorView& q, int b, int kv_head, int group, int head_dim,
                      float* out) {
  for (int i = 0; i < group; ++i) {
    const int hq = kv_head * group + i;
    const int64_t base = b * q.stride[0] + hq * q.stride[1];
    for (int d = 0; d < head_dim; ++d)
      out[i * head_dim + d] = load_as_float(q.data, q.dtype, base + d * q.stride[2]);
  }
}

}  // namespace unique::cpu

// Page statistics on the CPU: fused append (Welford) and the from-scratch reference.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"

namespace unique::cpu {

namespace {

template <class T>
void append_typed(const PagedKV& kv, const TensorView& k_new, const TensorView& v_new,
                  const int32_t* append_indptr) {
  const int H = kv.num_kv_heads, D = kv.head_dim, P = kv.page_size;
  T* K = static_cast<T*>(kv.k);
  T* V = static_cast<T*>(kv.v);
  // One task per (sequence, head): tokens of a page must update its stats in order.
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int b = 0; b < kv.batch; ++b) {
    for (int h = 0; h < H; ++h) {
      const int64_t len = seq_len(kv, b);
      const int n_new = append_indptr[b + 1] - append_indptr[b];
      for (int i = 0; i < n_new; ++i) {
        const int64_t pos = len - n_new + i;
        const int page = kv.page_indices[kv.page_indptr[b] + pos / P];
        const int slot = static_cast<int>(pos % P);
        const int64_t row = static_cast<int64_t>(append_indptr[b] + i) * H + h;
        T* kd = K + kv.kv_offset(page, h) + static_cast<int64_t>(slot) * D;
        T* vd = V + kv.kv_offset(page, h) + static_cast<int64_t>(slot) * D;
        const int64_t so = kv.stats_offset(page, h);
        for (int d = 0; d < D; ++d) {
          const T ks = from_float<T>(load_as_float(k_new.data, k_new.dtype, row * D + d));
          kd[d] = ks;
          vd[d] = from_float<T>(load_as_float(v_new.data, v_new.dtype, row * D + d));
          const float x = to_float(ks);  // statistics describe the keys as stored
          if (kv.mean) {
            float& mu = kv.mean[so + d];
            float& sd = kv.std[so + d];
            if (slot == 0) {
              mu = x;
              sd = 0.0f;
            } else {
              // Welford; M2 is carried as n*std^2 so only mean and std are stored.
              const float m2 = sd * sd * static_cast<float>(slot);
              const float delta = x - mu;
              mu += delta / static_cast<float>(slot + 1);
              sd = std::sqrt(std::max(m2 + delta * (x - mu), 0.0f) / static_cast<float>(slot + 1));
            }
          }
          if (kv.kmin) {
            kv.kmin[so + d] = slot == 0 ? x : std::min(kv.kmin[so + d], x);
            kv.kmax[so + d] = slot == 0 ? x : std::max(kv.kmax[so + d], x);
          }
        }
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
  const int H = kv.num_kv_heads, D = kv.head_dim, P = kv.page_size;
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int j = 0; j < n; ++j) {
      const int page = kv.page_indices[kv.page_indptr[b] + j];
      const int tokens = j == n - 1 ? kv.last_page_len[b] : P;
      for (int h = 0; h < H; ++h) {
        const int64_t base = kv.kv_offset(page, h);
        const int64_t so = kv.stats_offset(page, h);
        for (int d = 0; d < D; ++d) {
          double sum = 0, lo = INFINITY, hi = -INFINITY;
          for (int t = 0; t < tokens; ++t) {
            const double x = load_as_float(kv.k, kv.dtype, base + static_cast<int64_t>(t) * D + d);
            sum += x;
            lo = std::min(lo, x);
            hi = std::max(hi, x);
          }
          const double mu = sum / tokens;
          double ss = 0;
          for (int t = 0; t < tokens; ++t) {
            const double x = load_as_float(kv.k, kv.dtype, base + static_cast<int64_t>(t) * D + d);
            ss += (x - mu) * (x - mu);
          }
          if (kv.mean) {
            kv.mean[so + d] = static_cast<float>(mu);
            kv.std[so + d] = static_cast<float>(std::sqrt(ss / tokens));
          }
          if (kv.kmin) {
            kv.kmin[so + d] = static_cast<float>(lo);
            kv.kmax[so + d] = static_cast<float>(hi);
          }
        }
      }
    }
  }
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

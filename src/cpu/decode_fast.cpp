// Fast CPU paged decode: one task per (sequence, KV head); the query heads of the GQA
// group share every K/V page read; each page is widened to fp32 once, then scored and
// accumulated with vectorised loops and an online (streaming) softmax.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/cpu_kernels.h"

namespace unique::cpu {

namespace {

struct Scratch {
  std::vector<float> q, kbuf, vbuf, logits, acc, m, l;
};

template <class T>
const float* widen(const T* src, int n, std::vector<float>& buf) {
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    float* dst = buf.data();
#pragma omp simd
    for (int i = 0; i < n; ++i) dst[i] = to_float(src[i]);
    return dst;
  }
}

template <class T>
void decode_group(const AttentionConfig& cfg, const PagedKV& kv, const Selection* sel, int b,
                  int h, int group, Scratch& sc) {
  const int D = kv.head_dim, P = kv.page_size, H = kv.num_kv_heads;
  const int n = seq_pages(kv, b);
  const T* K = static_cast<const T*>(kv.k);
  const T* V = static_cast<const T*>(kv.v);
  const int32_t* table = kv.page_indices + kv.page_indptr[b];
  const int32_t* chosen = sel ? sel->pages + (int64_t(b) * H + h) * sel->max_selected : nullptr;
  const int count = sel ? sel->counts[b * H + h] : n;
  std::fill(sc.acc.begin(), sc.acc.end(), 0.0f);
  std::fill(sc.m.begin(), sc.m.end(), -INFINITY);
  std::fill(sc.l.begin(), sc.l.end(), 0.0f);
  for (int c = 0; c < count; ++c) {
    const int j = chosen ? chosen[c] : c;
    const int tokens = j == n - 1 ? kv.last_page_len[b] : P;
    const int64_t off = kv.kv_offset(table[j], h);
    const float* kp = widen(K + off, tokens * D, sc.kbuf);
    const float* vp = widen(V + off, tokens * D, sc.vbuf);
    for (int i = 0; i < group; ++i) {
      const float* qi = &sc.q[i * D];
      float* li = &sc.logits[i * P];
      float page_max = -INFINITY;
      for (int t = 0; t < tokens; ++t) {
        const float* kt = kp + t * D;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int d = 0; d < D; ++d) s += qi[d] * kt[d];
        li[t] = s;
        page_max = std::max(page_max, s);
      }
      const float m_new = std::max(sc.m[i], page_max);
      const float rescale = std::exp(sc.m[i] - m_new);
      float* acc = &sc.acc[i * D];
      float psum = 0.0f;
#pragma omp simd
      for (int d = 0; d < D; ++d) acc[d] *= rescale;
      for (int t = 0; t < tokens; ++t) {
        const float p = std::exp(li[t] - m_new);
        psum += p;
        const float* vt = vp + t * D;
#pragma omp simd
        for (int d = 0; d < D; ++d) acc[d] += p * vt[d];
      }
      sc.l[i] = sc.l[i] * rescale + psum;
      sc.m[i] = m_new;
    }
  }
}

}  // namespace

void paged_decode(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                  const Selection* sel, const TensorView& out, const TensorView& lse) {
  const int H = kv.num_kv_heads, D = kv.head_dim, P = kv.page_size;
  const int group = static_cast<int>(q.shape[1]) / H;
  const float scale = cfg.scale_for(D);
#pragma omp parallel
  {
    Scratch sc;
    sc.q.resize(size_t(group) * D);
    sc.kbuf.resize(size_t(P) * D);
    sc.vbuf.resize(size_t(P) * D);
    sc.logits.resize(size_t(group) * P);
    sc.acc.resize(size_t(group) * D);
    sc.m.resize(group);
    sc.l.resize(group);
#pragma omp for schedule(dynamic) collapse(2)
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < H; ++h) {
        load_query_group(q, b, h, group, D, sc.q.data());
        for (float& x : sc.q) x *= scale;  // logits come out already scaled
        dispatch_dtype(kv.dtype, [&](auto t) { decode_group<decltype(t)>(cfg, kv, sel, b, h, group, sc); });
        for (int i = 0; i < group; ++i) {
          const int hq = h * group + i;
          const float inv = 1.0f / sc.l[i];
          for (int d = 0; d < D; ++d)
            store_from_float(out.data, out.dtype,
                             b * out.stride[0] + hq * out.stride[1] + d * out.stride[2],
                             sc.acc[i * D + d] * inv);
          if (lse.data) lse.ptr<float>()[b * lse.stride[0] + hq * lse.stride[1]] = sc.m[i] + std::log(sc.l[i]);
        }
      }
  }
}

}  // namespace unique::cpu

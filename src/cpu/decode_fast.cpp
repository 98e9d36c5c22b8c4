// Fast CPU paged decode: one task per (sequence, KV head). The G query heads of the GQA
// group share every K/V row: each row is widened to fp32 once per kW-chunk and fed to G
// register-resident accumulators; softmax is streamed per page (online softmax).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/vec.h"

namespace unique::cpu {

namespace {

struct Scratch {
  std::vector<float> q, logits, acc, m, l;
};

// Processes one page for heads [0, G) of the group: logits, online-softmax update, P.V.
// logits holds G rows of kPageMax floats; P <= 256 tokens are processed in slices of 64.
template <class T, int G>
inline void attend_page(const T* __restrict kp, const T* __restrict vp, int tokens, int D,
                        const float* __restrict q, float* __restrict logits, float* __restrict acc,
                        float* m, float* l, int P, const T* pf_k, const T* pf_v) {
  for (int t = 0; t < tokens; ++t) {
    if (pf_k) {  // row t of a page two steps ahead: spreads the prefetches over the work
      prefetch_bytes(pf_k + t * D, D * sizeof(T));
      prefetch_bytes(pf_v + t * D, D * sizeof(T));
    }
    VecF part[G] = {};
    for (int d0 = 0; d0 < D; d0 += kW) {
      const VecF kc = load_widen(kp + t * D + d0);
      for (int i = 0; i < G; ++i) part[i] += load(q + i * D + d0) * kc;
    }
    for (int i = 0; i < G; ++i) logits[i * P + t] = hsum(part[i]);
  }
  float rescale[G];
  for (int i = 0; i < G; ++i) {
    float* li = logits + i * P;
    float page_max = li[0];
    for (int t = 1; t < tokens; ++t) page_max = std::max(page_max, li[t]);
    const float m_new = std::max(m[i], page_max);
    rescale[i] = m[i] == -INFINITY ? 0.0f : exp_nonpos(m[i] - m_new);
    float psum = 0.0f;
    int t = 0;
    for (; t + kW <= tokens; t += kW) {
      const VecF e = exp_nonpos(load(li + t) - m_new);
      store(li + t, e);
      psum += hsum(e);
    }
    for (; t < tokens; ++t) psum += (li[t] = exp_nonpos(li[t] - m_new));
    l[i] = l[i] * rescale[i] + psum;
    m[i] = m_new;
  }
  for (int d0 = 0; d0 < D; d0 += kW) {
    VecF a[G];
    for (int i = 0; i < G; ++i) a[i] = load(acc + i * D + d0) * rescale[i];
    for (int t = 0; t < tokens; ++t) {
      const VecF vc = load_widen(vp + t * D + d0);
      for (int i = 0; i < G; ++i) a[i] += logits[i * P + t] * vc;
    }
    for (int i = 0; i < G; ++i) store(acc + i * D + d0, a[i]);
  }
}

// Heads [h0, h0+G) of KV head h over the pages of sequence b (selected or all).
template <class T, int G>
void decode_heads(const PagedKV& kv, const Selection* sel, int b, int h, const float* q,
                  float* logits, float* acc, float* m, float* l) {
  const int D = kv.head_dim, P = kv.page_size, H = kv.num_kv_heads;
  const int n = seq_pages(kv, b);
  const T* K = static_cast<const T*>(kv.k);
  const T* V = static_cast<const T*>(kv.v);
  const int32_t* table = kv.page_indices + kv.page_indptr[b];
  const int32_t* chosen = sel ? sel->pages + (int64_t(b) * H + h) * sel->max_selected : nullptr;
  const int count = sel ? sel->counts[b * H + h] : n;
  std::fill(acc, acc + G * D, 0.0f);
  std::fill(m, m + G, -INFINITY);
  std::fill(l, l + G, 0.0f);
  for (int c = 0; c < count; ++c) {
    const int j = chosen ? chosen[c] : c;
    const int tokens = j == n - 1 ? kv.last_page_len[b] : P;
    const int64_t off = kv.kv_offset(table[j], h);
    // Pages are scattered blocks of at most a few KB, which the hardware prefetcher does
    // not follow across; without software prefetch the loads wait on DRAM latency.
    const T* pf_k = nullptr;
    const T* pf_v = nullptr;
    if (c + 2 < count) {
      const int64_t ahead = kv.kv_offset(table[chosen ? chosen[c + 2] : c + 2], h);
      pf_k = K + ahead;
      pf_v = V + ahead;
    }
    attend_page<T, G>(K + off, V + off, tokens, D, q, logits, acc, m, l, P, pf_k, pf_v);
  }
}

template <class T>
void decode_group(const PagedKV& kv, const Selection* sel, int b, int h, int group, Scratch& sc) {
  const int D = kv.head_dim;
  for_head_blocks(group, [&](auto g, int i0) {
    decode_heads<T, g()>(kv, sel, b, h, &sc.q[i0 * D], sc.logits.data(), &sc.acc[i0 * D],
                         &sc.m[i0], &sc.l[i0]);
  });
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
    sc.logits.resize(size_t(8) * P);
    sc.acc.resize(size_t(group) * D);
    sc.m.resize(group);
    sc.l.resize(group);
#pragma omp for schedule(dynamic) collapse(2)
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < H; ++h) {
        load_query_group(q, b, h, group, D, sc.q.data());
        for (float& x : sc.q) x *= scale;  // logits come out already scaled
        dispatch_dtype(kv.dtype, [&](auto t) { decode_group<decltype(t)>(kv, sel, b, h, group, sc); });
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

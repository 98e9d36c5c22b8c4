// Fast CPU block-sparse causal prefill (unique::sparse_prefill). One task per (query
// block, KV head[, part of its GQA group]), the heaviest (last) query blocks first. A key
// block kept by any head of the task is widened to fp32 once (K transposed, V as is) and
// reused by those heads; each head runs a flash-attention step on it: S = Q K^T and
// O += P V as register-tiled GEMMs, online softmax per query row, the causal mask only in
// the diagonal block. Blocks no head kept are never read.
#include <omp.h>

#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/prefill_tile.h"

namespace unique::cpu {

namespace {

struct Scratch {
  std::vector<float> q, o, m, l, s, kt, v, krow;
  std::vector<int> cursor;
};

// Key block kb of KV head h, nk rows: Kt [D][ldk] (columns past nk zero) and V [nk][D].
template <class T>
void load_key_block(const PagedKV& kv, const int32_t* table, int h, int64_t s0, int nk, int ldk, Scratch& sc) {
  const int D = kv.head_dim, P = kv.page_size;
  const T* K = static_cast<const T*>(kv.k);
  const T* V = static_cast<const T*>(kv.v);
  float* kt = sc.kt.data();
  for (int c = 0; c < nk; ++c) {
    const int64_t s = s0 + c;
    const int64_t off = kv.kv_offset(table[s / P], h) + (s % P) * D;
    for (int d0 = 0; d0 < D; d0 += kW) {
      store(sc.krow.data() + d0, load_widen(K + off + d0));
      store(sc.v.data() + int64_t(c) * D + d0, load_widen(V + off + d0));
    }
    for (int d = 0; d < D; ++d) kt[int64_t(d) * ldk + c] = sc.krow[d];
  }
  for (int d = 0; d < D; ++d)
    for (int c = nk; c < ldk; ++c) kt[int64_t(d) * ldk + c] = 0.0f;
}

// Online-softmax step of R query rows (absolute positions t0..) over one key block whose
// logits are in s [R][lds]: turns them into probabilities (0 where masked), rescales O.
void softmax_step(float* s, int lds, int R, int nk, int64_t t0, int64_t s0, bool diagonal, float* m, float* l,
                  float* o, int D) {
  for (int r = 0; r < R; ++r) {
    float* row = s + int64_t(r) * lds;
    const int valid = diagonal ? static_cast<int>(std::min<int64_t>(nk, t0 + r - s0 + 1)) : nk;
    int c = 0;
    VecF mv = splat(-INFINITY);
    for (; c + kW <= valid; c += kW) mv = vmax(mv, load(row + c));
    float mx = hmax(mv);
    for (; c < valid; ++c) mx = std::max(mx, row[c]);
    const float m_new = std::max(m[r], mx);
    const float alpha = m[r] == -INFINITY ? 0.0f : exp_nonpos(m[r] - m_new);
    VecF sv{};
    c = 0;
    for (; c + kW <= valid; c += kW) {
      const VecF e = exp_nonpos(load(row + c) - m_new);
      store(row + c, e);
      sv += e;
    }
    float sum = hsum(sv);
    for (; c < valid; ++c) sum += (row[c] = exp_nonpos(row[c] - m_new));
    for (; c < nk; ++c) row[c] = 0.0f;
    l[r] = l[r] * alpha + sum;
    m[r] = m_new;
    if (alpha != 1.0f) {  // 1 exactly when the row max did not move
      float* orow = o + int64_t(r) * D;
      for (int d = 0; d < D; d += kW) store(orow + d, load(orow + d) * alpha);
    }
  }
}

template <class T>
void attend_task(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq, const ChunkGeom& g,
                 const BlockSelection* sel, int i, int h, int hq0, int n, const TensorView& out,
                 const TensorView& lse, Scratch& sc) {
  const int D = g.D, B = g.B, qb = g.pb.first_q_block + i;
  const int64_t ta = g.q_begin(i), tb = g.q_end(i);
  const int R = static_cast<int>(tb - ta);
  const int32_t* table = kv.page_indices + kv.page_indptr[seq];
  load_query_rows(q, ta - g.q0, tb - g.q0, hq0, n, D, cfg.scale_for(D), sc.q.data());
  std::fill(sc.o.begin(), sc.o.begin() + int64_t(n) * R * D, 0.0f);
  std::fill(sc.m.begin(), sc.m.begin() + int64_t(n) * R, -INFINITY);
  std::fill(sc.l.begin(), sc.l.begin() + int64_t(n) * R, 0.0f);
  std::fill(sc.cursor.begin(), sc.cursor.begin() + n, 0);
  // Head j's kept blocks (ascending); without a selection, every block 0..qb, so that
  // top_p >= 1 (which keeps them all) runs exactly the dense arithmetic.
  auto kept = [&](int j, int c) -> int {
    if (!sel) return c <= qb ? c : -1;
    const int64_t row = int64_t(hq0 + j) * sel->num_q_blocks + i;
    return c < sel->counts[row] ? sel->blocks[row * sel->max_kv_blocks + c] : -1;
  };
  for (int kb = 0; kb <= qb; ++kb) {
    bool any = false;
    for (int j = 0; j < n; ++j) any |= kept(j, sc.cursor[j]) == kb;
    if (!any) continue;
    const int64_t s0 = int64_t(kb) * B;
    const int nk = static_cast<int>(std::min<int64_t>(B, g.kv_len - s0));
    const int ldk = round_up(nk, kW);
    load_key_block<T>(kv, table, h, s0, nk, ldk, sc);
    for (int j = 0; j < n; ++j) {
      if (kept(j, sc.cursor[j]) != kb) continue;
      ++sc.cursor[j];
      float* o = sc.o.data() + int64_t(j) * R * D;
      mm_set(sc.q.data() + int64_t(j) * R * D, D, sc.kt.data(), ldk, sc.s.data(), ldk, R, ldk, D);
      softmax_step(sc.s.data(), ldk, R, nk, ta, s0, kb == qb, sc.m.data() + j * R, sc.l.data() + j * R, o, D);
      mm_acc(sc.s.data(), ldk, sc.v.data(), D, o, D, R, D, nk);
    }
  }
  for (int j = 0; j < n; ++j)
    for (int r = 0; r < R; ++r) {
      const int64_t t = ta - g.q0 + r;
      const int hq = hq0 + j;
      const float* o = sc.o.data() + (int64_t(j) * R + r) * D;
      const float inv = 1.0f / sc.l[j * R + r];
      dispatch_dtype(out.dtype, [&](auto tag) {
        using O = decltype(tag);
        O* dst = static_cast<O*>(out.data) + t * out.stride[0] + hq * out.stride[1];
        for (int d = 0; d < D; ++d) dst[d * out.stride[2]] = from_float<O>(o[d] * inv);
      });
      if (lse.data) lse.ptr<float>()[t * lse.stride[0] + hq * lse.stride[1]] = sc.m[j * R + r] + std::log(sc.l[j * R + r]);
    }
}

}  // namespace

void sparse_prefill(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq, int64_t kv_len,
                    const BlockSelection* sel, const TensorView& out, const TensorView& lse) {
  const ChunkGeom g(cfg, q, kv, kv_len);
  const int hpt = g.heads_per_task(omp_get_max_threads());
  const int splits = (g.group + hpt - 1) / hpt;
  const int64_t per_block = int64_t(g.H) * splits, tasks = per_block * g.pb.num_q_blocks;
  // Multiply-adds of the dense causal case: below ~4M a team costs more than it saves.
  const double work = 2.0 * double(q.shape[0]) * double(kv_len) * double(q.shape[1]) * g.D;
#pragma omp parallel if (work >= double(1 << 22))
  {
    Scratch sc;
    sc.q.resize(size_t(hpt) * g.B * g.D);
    sc.o.resize(sc.q.size());
    sc.m.resize(size_t(hpt) * g.B);
    sc.l.resize(sc.m.size());
    sc.s.resize(size_t(g.B) * g.B);
    sc.kt.resize(size_t(g.D) * g.B);
    sc.v.resize(size_t(g.B) * g.D);
    sc.krow.resize(g.D);
    sc.cursor.resize(hpt);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int i = g.pb.num_q_blocks - 1 - static_cast<int>(task / per_block);  // heaviest first
      const int h = static_cast<int>(task % per_block) / splits, part = static_cast<int>(task % per_block) % splits;
      const int hq0 = h * g.group + part * hpt, n = std::min(hpt, g.group - part * hpt);
      dispatch_dtype(kv.dtype, [&](auto tag) {
        attend_task<decltype(tag)>(cfg, q, kv, seq, g, sel, i, h, hq0, n, out, lse, sc);
      });
    }
  }
}

}  // namespace unique::cpu

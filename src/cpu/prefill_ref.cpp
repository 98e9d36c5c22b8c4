// Reference prefill (include/unique/prefill.h): plain loops in double, one query at a time.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "attention/validate.h"
#include "unique/error.h"
#include "unique/prefill.h"

namespace unique::ref {

namespace {

struct Chunk {
  const AttentionConfig& cfg;
  const TensorView& q;
  const PagedKV& kv;
  int seq;
  int64_t kv_len, q0;  // queries are positions [q0, kv_len)
  int Hq, group, D;
  PrefillBlocks pb;

  Chunk(const AttentionConfig& c, const TensorView& qv, const PagedKV& k, int s, int64_t len)
      : cfg(c), q(qv), kv(k), seq(s), kv_len(len), q0(len - qv.shape[0]),
        Hq(static_cast<int>(qv.shape[1])), group(Hq / k.num_kv_heads), D(k.head_dim),
        pb(prefill_blocks(c, qv.shape[0], len)) {}

  double qv(int64_t t, int hq, int d) const {  // t absolute
    return load_as_float(q.data, q.dtype, (t - q0) * q.stride[0] + hq * q.stride[1] + d * q.stride[2]);
  }
  int64_t row(int64_t s, int h) const {  // element offset of key/value position s, KV head h
    const int page = kv.page_indices[kv.page_indptr[seq] + s / kv.page_size];
    return kv.kv_offset(page, h) + (s % kv.page_size) * D;
  }
  double kval(int64_t s, int h, int d) const { return load_as_float(kv.k, kv.dtype, row(s, h) + d); }
  double vval(int64_t s, int h, int d) const { return load_as_float(kv.v, kv.dtype, row(s, h) + d); }
  int block(int64_t t) const { return static_cast<int>(t / cfg.prefill_block); }
  double scale() const { return cfg.scale_for(D); }
};

// Softmax of logits in place; returns the log of the denominator.
double softmax(std::vector<double>& l) {
  const double m = *std::max_element(l.begin(), l.end());
  double sum = 0;
  for (double& x : l) sum += (x = std::exp(x - m));
  for (double& x : l) x /= sum;
  return m + std::log(sum);
}

// [Hq][num_q_blocks][num_kv_blocks]
using Mass = std::vector<double>;

Mass composite_mass(const Chunk& c) {
  const int c_pool = c.cfg.pool, H = c.kv.num_kv_heads, nkb = c.pb.num_kv_blocks;
  const int64_t nck = (c.kv_len + c_pool - 1) / c_pool;
  // Composite keys ck[j][h][d]: means of the key rows of group j.
  std::vector<double> ck(size_t(nck) * H * c.D, 0.0);
  for (int64_t j = 0; j < nck; ++j) {
    const int64_t s0 = j * c_pool, s1 = std::min<int64_t>(s0 + c_pool, c.kv_len);
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < c.D; ++d) {
        double acc = 0;
        for (int64_t s = s0; s < s1; ++s) acc += c.kval(s, h, d);
        ck[(j * H + h) * c.D + d] = acc / double(s1 - s0);
      }
  }
  Mass mass(size_t(c.Hq) * c.pb.num_q_blocks * nkb, 0.0);
  std::vector<int> groups_in_block(c.pb.num_q_blocks, 0);
  for (int64_t g = c.q0 / c_pool; g * c_pool < c.kv_len; ++g) ++groups_in_block[c.block(g * c_pool) - c.pb.first_q_block];
  // Heads in parallel (each writes its own rows): the loops stay plain, the GPU tests'
  // long-sequence cases stay affordable.
#pragma omp parallel for schedule(dynamic)
  for (int hq = 0; hq < c.Hq; ++hq) {
    const int h = hq / c.group;
    for (int64_t g = c.q0 / c_pool; g * c_pool < c.kv_len; ++g) {
      const int64_t t0 = std::max(g * c_pool, c.q0), t1 = std::min((g + 1) * c_pool, c.kv_len);
      std::vector<double> cq(c.D, 0.0);
      for (int64_t t = t0; t < t1; ++t)
        for (int d = 0; d < c.D; ++d) cq[d] += c.qv(t, hq, d) / double(t1 - t0);
      std::vector<double> p(g + 1);
      for (int64_t j = 0; j <= g; ++j) {
        double s = 0;
        for (int d = 0; d < c.D; ++d) s += cq[d] * ck[(j * H + h) * c.D + d];
        p[j] = s * c.scale();
      }
      softmax(p);
      const int i = c.block(g * c_pool) - c.pb.first_q_block;
      double* m = &mass[(size_t(hq) * c.pb.num_q_blocks + i) * nkb];
      for (int64_t j = 0; j <= g; ++j) m[c.block(j * c_pool)] += p[j] / groups_in_block[i];
    }
  }
  return mass;
}

Mass exact_mass(const Chunk& c) {
  const int nkb = c.pb.num_kv_blocks;
  Mass mass(size_t(c.Hq) * c.pb.num_q_blocks * nkb, 0.0);
  std::vector<int> tokens_in_block(c.pb.num_q_blocks, 0);
  for (int64_t t = c.q0; t < c.kv_len; ++t) ++tokens_in_block[c.block(t) - c.pb.first_q_block];
#pragma omp parallel for schedule(dynamic)
  for (int hq = 0; hq < c.Hq; ++hq) {
    const int h = hq / c.group;
    for (int64_t t = c.q0; t < c.kv_len; ++t) {
      std::vector<double> p(t + 1);
      for (int64_t s = 0; s <= t; ++s) {
        double acc = 0;
        for (int d = 0; d < c.D; ++d) acc += c.qv(t, hq, d) * c.kval(s, h, d);
        p[s] = acc * c.scale();
      }
      softmax(p);
      const int i = c.block(t) - c.pb.first_q_block;
      double* m = &mass[(size_t(hq) * c.pb.num_q_blocks + i) * nkb];
      for (int64_t s = 0; s <= t; ++s) m[c.block(s)] += p[s] / tokens_in_block[i];
    }
  }
  return mass;
}

}  // namespace

void prefill_block_mass(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                        int64_t kv_len, bool exact, const TensorView& mass) {
  detail::validate_prefill_call(cfg, q, kv, seq, kv_len, nullptr, nullptr, nullptr);
  UNIQUE_CHECK_ARG(kv.device == Device::cpu, "kv.device", "cpu (reference)", to_string(kv.device));
  const Chunk c(cfg, q, kv, seq, kv_len);
  expect_shape(mass, "mass", {c.Hq, c.pb.num_q_blocks, c.pb.num_kv_blocks});
  expect_dtype(mass, "mass", DType::f32);
  expect_contiguous(mass, "mass");
  expect_device(mass, "mass", Device::cpu);
  const Mass m = exact ? exact_mass(c) : composite_mass(c);
  std::transform(m.begin(), m.end(), mass.ptr<float>(), [](double x) { return static_cast<float>(x); });
}

void select_prefill_blocks(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                           int64_t kv_len, const BlockSelection& out) {
  detail::validate_prefill_call(cfg, q, kv, seq, kv_len, &out, nullptr, nullptr);
  UNIQUE_CHECK_ARG(kv.device == Device::cpu, "kv.device", "cpu (reference)", to_string(kv.device));
  const Chunk c(cfg, q, kv, seq, kv_len);
  const int nkb = c.pb.num_kv_blocks;
  const Mass mass = composite_mass(c);
  for (int hq = 0; hq < c.Hq; ++hq)
    for (int i = 0; i < c.pb.num_q_blocks; ++i) {
      const int qb = c.pb.first_q_block + i;
      const double* m = &mass[(size_t(hq) * c.pb.num_q_blocks + i) * nkb];
      std::vector<int> kept;
      if (cfg.prefill_keeps_all()) {
        kept.resize(qb + 1);
        std::iota(kept.begin(), kept.end(), 0);
      } else {
        std::vector<int> order;
        for (int kb = 1; kb < qb; ++kb) order.push_back(kb);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return m[a] > m[b]; });
        kept = {0};
        double cum = m[0];
        if (qb > 0) {
          kept.push_back(qb);
          cum += m[qb];
        }
        for (int kb : order) {
          if (!cfg.prefill_wants_more(static_cast<int>(kept.size()), cum)) break;
          kept.push_back(kb);
          cum += m[kb];
        }
        std::sort(kept.begin(), kept.end());
      }
      const int64_t r = int64_t(hq) * c.pb.num_q_blocks + i;
      out.counts[r] = static_cast<int>(kept.size());
      int32_t* b = out.blocks + r * out.max_kv_blocks;
      for (int j = 0; j < out.max_kv_blocks; ++j) b[j] = j < int(kept.size()) ? kept[j] : -1;
    }
}

void sparse_prefill(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv, int seq,
                    int64_t kv_len, const BlockSelection* sel, const TensorView& out, const TensorView& lse) {
  detail::validate_prefill_call(cfg, q, kv, seq, kv_len, sel, &out, &lse);
  UNIQUE_CHECK_ARG(kv.device == Device::cpu, "kv.device", "cpu (reference)", to_string(kv.device));
  const Chunk c(cfg, q, kv, seq, kv_len);
#pragma omp parallel for schedule(dynamic)
  for (int hq = 0; hq < c.Hq; ++hq) {
    const int h = hq / c.group;
    for (int64_t t = c.q0; t < c.kv_len; ++t) {
      std::vector<char> visible(c.pb.num_kv_blocks, sel ? 0 : 1);
      if (sel) {
        const int64_t r = int64_t(hq) * sel->num_q_blocks + (c.block(t) - c.pb.first_q_block);
        for (int j = 0; j < sel->counts[r]; ++j) visible[sel->blocks[r * sel->max_kv_blocks + j]] = 1;
      }
      std::vector<int64_t> keys;
      std::vector<double> p;
      for (int64_t s = 0; s <= t; ++s) {
        if (!visible[c.block(s)]) continue;
        double acc = 0;
        for (int d = 0; d < c.D; ++d) acc += c.qv(t, hq, d) * c.kval(s, h, d);
        keys.push_back(s);
        p.push_back(acc * c.scale());
      }
      const double log_den = softmax(p);
      const int64_t tl = t - c.q0;
      for (int d = 0; d < c.D; ++d) {
        double acc = 0;
        for (size_t i = 0; i < keys.size(); ++i) acc += p[i] * c.vval(keys[i], h, d);
        store_from_float(out.data, out.dtype, tl * out.stride[0] + hq * out.stride[1] + d * out.stride[2],
                         static_cast<float>(acc));
      }
      if (lse.data) lse.ptr<float>()[tl * lse.stride[0] + hq * lse.stride[1]] = static_cast<float>(log_den);
    }
  }
}

}  // namespace unique::ref

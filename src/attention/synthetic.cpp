#include "unique/synthetic.h"

#include <algorithm>
#include <cmath>

#include "unique/error.h"

namespace unique {

namespace {

// xoshiro-style fast generator; Gaussian by the sum of four uniforms (variance-scaled).
// Exact normality does not matter here, speed does: 10^9 values for a large workload.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull) {}
  uint64_t next() {
    s ^= s << 7;
    s ^= s >> 9;
    return s * 0x2545f4914f6cdd1dull;
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
  float normal() {
    const uint64_t r = next();
    float sum = 0;
    for (int i = 0; i < 4; ++i) sum += static_cast<float>((r >> (16 * i)) & 0xffff);
    return (sum / 65536.0f - 2.0f) * 1.7320508f;  // var of sum of 4 U(0,1) = 1/3
  }
};

}  // namespace

SyntheticWorkload make_synthetic_workload(const SyntheticSpec& s, void (*progress)(double)) {
  UNIQUE_CHECK_ARG(s.batch >= 1, "batch", ">= 1", s.batch);
  UNIQUE_CHECK_ARG(s.context >= 1, "context", ">= 1 token", s.context);
  UNIQUE_CHECK_ARG(s.num_kv_heads >= 1, "num_kv_heads", ">= 1", s.num_kv_heads);
  UNIQUE_CHECK_ARG(s.num_qo_heads >= 1 && s.num_qo_heads % s.num_kv_heads == 0, "num_qo_heads",
            detail::concat("a multiple of num_kv_heads (", s.num_kv_heads, ")"), s.num_qo_heads);
  const int H = s.num_kv_heads, D = s.head_dim, P = s.page_size, group = s.num_qo_heads / H;
  std::vector<int64_t> lens(s.batch);
  int64_t pages = 0;
  for (int b = 0; b < s.batch; ++b) {
    lens[b] = s.ragged ? std::max<int64_t>(1, s.context - s.context * b / (2 * s.batch)) : s.context;
    pages += (lens[b] + P - 1) / P;
  }
  KVCacheOptions opt;
  opt.num_pages = static_cast<int>(pages);
  opt.num_kv_heads = H;
  opt.page_size = P;
  opt.head_dim = D;
  opt.dtype = s.dtype;
  opt.stats_dtype = s.stats_dtype;
  SyntheticWorkload w;
  w.cache = std::make_unique<KVCache>(opt);
  w.q.resize(size_t(s.batch) * s.num_qo_heads * D);
  w.needle_pages.resize(size_t(s.batch) * H);

  // Per (sequence, head): channel biases with a few large outlier channels, a query
  // direction, the needle pages. Keys = bias + drifting topic + noise, plus the query
  // direction on needle pages and on the first 4 tokens (the attention sink real models
  // show).
  struct HeadModel {
    std::vector<float> bias, dir, topic;
  };
  Rng rng(s.seed);
  std::vector<HeadModel> model(size_t(s.batch) * H);
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < H; ++h) {
      HeadModel& m = model[b * H + h];
      m.bias.resize(D);
      m.dir.resize(D);
      m.topic.assign(D, 0.0f);
      for (int d = 0; d < D; ++d) {
        m.bias[d] = 0.3f * rng.normal() + (d % 32 == 5 ? 6.0f : 0.0f) - (d % 64 == 17 ? 4.0f : 0.0f);
        m.dir[d] = rng.normal();
      }
      const int n = static_cast<int>((lens[b] + P - 1) / P);
      auto& needles = w.needle_pages[b * H + h];
      for (int i = 0; i < s.needles && n > 2; ++i)
        needles.push_back(1 + static_cast<int>(rng.next() % uint64_t(n - 2)));
      for (int i = 0; i < group; ++i) {
        float* q = &w.q[(size_t(b) * s.num_qo_heads + h * group + i) * D];
        // Queries point at the needle direction; outlier channels echo the bias sign.
        for (int d = 0; d < D; ++d)
          q[d] = 2.5f * m.dir[d] + 0.8f * rng.normal() + (d % 32 == 5 ? 1.0f : 0.0f);
      }
    }

  const int64_t chunk = 4096;
  const int64_t max_len = *std::max_element(lens.begin(), lens.end());
  for (int b = 0; b < s.batch; ++b) w.seqs.push_back(w.cache->add_sequence());
  std::vector<float> k, v;
  for (int64_t start = 0; start < max_len; start += chunk) {
    std::vector<int> seqs, counts;
    for (int b = 0; b < s.batch; ++b) {
      const int64_t n = std::min(chunk, lens[b] - start);
      if (n <= 0) continue;
      seqs.push_back(w.seqs[b]);
      counts.push_back(static_cast<int>(n));
    }
    int64_t rows = 0;
    for (int c : counts) rows += c;
    k.resize(size_t(rows) * H * D);
    v.resize(size_t(rows) * H * D);
    int64_t row = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int b = seqs[i] - w.seqs[0];
      for (int64_t t = start; t < start + counts[i]; ++t, ++row) {
        for (int h = 0; h < H; ++h) {
          HeadModel& m = model[b * H + h];
          if (t % (4 * P) == 0)  // topic drifts every 4 pages: neighbouring pages cluster
            for (int d = 0; d < D; ++d) m.topic[d] = 0.85f * m.topic[d] + 0.5f * rng.normal();
          const bool needle = std::find(w.needle_pages[b * H + h].begin(),
                                        w.needle_pages[b * H + h].end(),
                                        static_cast<int>(t / P)) != w.needle_pages[b * H + h].end();
          float* kr = &k[(size_t(row) * H + h) * D];
          float* vr = &v[(size_t(row) * H + h) * D];
          for (int d = 0; d < D; ++d) {
            kr[d] = m.bias[d] + m.topic[d] + 0.7f * rng.normal() +
                    (needle || t < 4 ? 0.3f * m.dir[d] : 0.0f);
            vr[d] = rng.normal();
          }
        }
      }
    }
    w.cache->append(seqs, counts, make_view(k.data(), DType::f32, {rows, H, D}),
                    make_view(v.data(), DType::f32, {rows, H, D}));
    if (progress) progress(std::min(1.0, double(start + chunk) / double(max_len)));
  }
  w.table = w.cache->page_table(w.seqs);
  return w;
}

}  // namespace unique

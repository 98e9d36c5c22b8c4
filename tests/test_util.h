// Shared helpers of the CPU attention tests: seeded random data whose keys look like
// real ones (per-channel offsets and outlier channels, drifting pages), typed buffers,
// poisoning of outputs, error-message checks.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "unique/detail/hash.h"
#include "unique/unique.h"

namespace unique::test {

// ---- error messages -------------------------------------------------------------------

// Runs stmt, expects a unique::Error whose text contains every given substring.
#define EXPECT_ERROR_MSG(stmt, ...)                                                     \
  do {                                                                                  \
    bool thrown_ = false;                                                               \
    try {                                                                               \
      stmt;                                                                             \
    } catch (const ::unique::Error& e_) {                                               \
      thrown_ = true;                                                                   \
      const std::string msg_ = e_.what();                                               \
      for (const char* s_ : {__VA_ARGS__})                                              \
        EXPECT_NE(msg_.find(s_), std::string::npos)                                     \
            << "message \"" << msg_ << "\" lacks \"" << s_ << "\"";                     \
    } catch (const std::exception& e_) {                                                \
      thrown_ = true;                                                                   \
      ADD_FAILURE() << "expected unique::Error, got another exception: " << e_.what();  \
    }                                                                                   \
    if (!thrown_) ADD_FAILURE() << "expected unique::Error from: " #stmt;               \
  } while (0)

// ---- typed host buffers -----------------------------------------------------------------

// Host buffer of n elements of dtype dt, written and read as float.
struct Buf {
  DType dt = DType::f32;
  std::vector<unsigned char> bytes;
  Buf() = default;
  Buf(DType t, size_t n) : dt(t), bytes(n * dtype_size(t)) {}
  size_t size() const { return bytes.size() / dtype_size(dt); }
  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }
  float get(size_t i) const { return load_as_float(bytes.data(), dt, i); }
  void set(size_t i, float x) { store_from_float(bytes.data(), dt, i, x); }
  TensorView view(std::initializer_list<int64_t> shape) { return make_view(data(), dt, shape); }
  // NaN in every element.
  void poison() {
    for (size_t i = 0; i < size(); ++i) set(i, NAN);
  }
};

inline constexpr int32_t kSentinel = 0x5eed5eed;

struct SelBuf {
  std::vector<int32_t> pages, counts;
  Selection sel;
  SelBuf(int batch, int heads, int max_selected)
      : pages(size_t(batch) * heads * max_selected, kSentinel), counts(size_t(batch) * heads, kSentinel) {
    sel.pages = pages.data();
    sel.counts = counts.data();
    sel.batch = batch;
    sel.num_kv_heads = heads;
    sel.max_selected = max_selected;
  }
  void poison() {
    std::fill(pages.begin(), pages.end(), kSentinel);
    std::fill(counts.begin(), counts.end(), kSentinel);
  }
  const int32_t* row(int b, int h) const {
    return pages.data() + (size_t(b) * sel.num_kv_heads + h) * sel.max_selected;
  }
  int count(int b, int h) const { return counts[size_t(b) * sel.num_kv_heads + h]; }
  std::vector<int> chosen(int b, int h) const {
    const int c = count(b, h);
    return std::vector<int>(row(b, h), row(b, h) + std::max(0, std::min(c, sel.max_selected)));
  }
};

// Attention outputs [rows, D] of a fast kernel vs its reference: every element written (no
// NaN), within tol relative to the row's scale; lse within 1e-5 relative (fp32 in both).
inline void expect_outputs_match(const Buf& fo, const Buf& ro, const Buf& fl, const Buf& rl, int64_t rows, int D,
                                 double tol) {
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double scale = 0;
    for (int d = 0; d < D; ++d) scale = std::max(scale, std::fabs(double(ro.get(size_t(r) * D + d))));
    for (int d = 0; d < D; ++d) {
      const double f = fo.get(size_t(r) * D + d), x = ro.get(size_t(r) * D + d);
      if (!(std::fabs(f - x) <= tol * (std::fabs(x) + scale) + 1e-7) && ++bad < 10)
        ADD_FAILURE() << "row " << r << " d " << d << ": fast " << f << " ref " << x;
    }
    const double f = fl.get(r), x = rl.get(r);
    if (!(std::fabs(f - x) <= 1e-5 * std::fabs(x) + 1e-5) && ++bad < 10)
      ADD_FAILURE() << "lse row " << r << ": fast " << f << " ref " << x;
  }
  EXPECT_EQ(bad, 0);
}

// ---- random data --------------------------------------------------------------------------

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  float normal() { return std::normal_distribution<float>(0.0f, 1.0f)(g); }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(g); }
  int range(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g); }  // inclusive
  uint32_t u32() { return static_cast<uint32_t>(g()); }
};

// Per-(sequence, head) key model: keys = channel offset (a few outlier channels with large
// offsets) + a topic that drifts every few pages + noise; a "needle" direction.
struct KeyModel {
  int D = 0;
  std::vector<float> offset, scale, topic, dir;
  void init(Rng& r, int head_dim, bool outliers) {
    D = head_dim;
    offset.resize(D);
    scale.resize(D);
    topic.assign(D, 0.0f);
    dir.resize(D);
    for (int d = 0; d < D; ++d) {
      offset[d] = outliers ? 0.5f * r.normal() : 0.0f;
      scale[d] = outliers ? r.uniform(0.3f, 1.5f) : 1.0f;
      dir[d] = r.normal();
    }
    if (outliers) {
      for (int i = 0; i < 3; ++i) {  // outlier channels: big offset, small or big spread
        const int d = r.range(0, D - 1);
        offset[d] = (i % 2 ? -1.0f : 1.0f) * r.uniform(5.0f, 20.0f);
        scale[d] = i == 2 ? 0.05f : 3.0f;
      }
    }
  }
  void key(Rng& r, int64_t t, int P, float* out) {
    if (t % (3 * P) == 0)
      for (int d = 0; d < D; ++d) topic[d] = 0.8f * topic[d] + 0.6f * r.normal();
    for (int d = 0; d < D; ++d) out[d] = offset[d] + topic[d] + scale[d] * r.normal();
  }
};

// A KVCache filled with `lens[b]` tokens per sequence through KVCache::append, in
// interleaved chunks of random sizes (so the physical pages of a sequence are scattered).
struct CacheCase {
  KVCacheOptions opt;
  std::unique_ptr<KVCache> cache;
  std::vector<int> seqs;
  std::vector<int64_t> lens;
  PageTable table;
  std::vector<KeyModel> models;  // [batch * H]
  // needles[b*H + h]: logical page whose keys were pushed along models[].dir (or -1)
  std::vector<int> needles;
  PagedKV kv() const { return cache->view(table); }
  int batch() const { return static_cast<int>(seqs.size()); }
};

struct CaseSpec {
  std::vector<int64_t> lens{100, 37, 1};
  int num_kv_heads = 2;
  int page_size = 16;
  int head_dim = 64;
  DType dtype = DType::f32;
  DType stats_dtype = DType::f32;
  bool outliers = true;
  bool needle = false;
  float needle_strength = 1.5f;
  int max_chunk = 40;
  int extra_pages = 3;
};

inline CacheCase make_case(const CaseSpec& s, uint64_t seed) {
  Rng r(seed);
  CacheCase c;
  c.lens = s.lens;
  const int B = static_cast<int>(s.lens.size()), H = s.num_kv_heads, D = s.head_dim, P = s.page_size;
  int pages = s.extra_pages;
  for (int64_t l : s.lens) pages += static_cast<int>((l + P - 1) / P);
  c.opt.num_pages = pages;
  c.opt.num_kv_heads = H;
  c.opt.page_size = P;
  c.opt.head_dim = D;
  c.opt.dtype = s.dtype;
  c.opt.stats_dtype = s.stats_dtype;
  c.cache = std::make_unique<KVCache>(c.opt);
  c.models.resize(size_t(B) * H);
  c.needles.assign(size_t(B) * H, -1);
  for (int b = 0; b < B; ++b) {
    c.seqs.push_back(c.cache->add_sequence());
    const int n = static_cast<int>((s.lens[b] + P - 1) / P);
    for (int h = 0; h < H; ++h) {
      c.models[b * H + h].init(r, D, s.outliers);
      if (s.needle && n >= 4) c.needles[b * H + h] = r.range(1, n - 2);
    }
  }
  std::vector<int64_t> done(B, 0);
  for (;;) {
    std::vector<int> seqs, counts;
    for (int b = 0; b < B; ++b) {
      if (done[b] >= s.lens[b]) continue;
      if (r.range(0, 3) == 0 && seqs.size() + 1 < size_t(B)) continue;  // skip this round sometimes
      const int n = static_cast<int>(std::min<int64_t>(r.range(1, s.max_chunk), s.lens[b] - done[b]));
      seqs.push_back(b);
      counts.push_back(n);
    }
    if (seqs.empty()) {
      bool all = true;
      for (int b = 0; b < B; ++b) all = all && done[b] >= s.lens[b];
      if (all) break;
      continue;
    }
    int64_t rows = 0;
    for (int n : counts) rows += n;
    Buf k(DType::f32, size_t(rows) * H * D), v(DType::f32, size_t(rows) * H * D);
    float* kp = reinterpret_cast<float*>(k.data());
    float* vp = reinterpret_cast<float*>(v.data());
    int64_t row = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int b = seqs[i];
      for (int t = 0; t < counts[i]; ++t, ++row) {
        const int64_t pos = done[b] + t;
        for (int h = 0; h < H; ++h) {
          KeyModel& m = c.models[b * H + h];
          float* kr = kp + (row * H + h) * D;
          m.key(r, pos, P, kr);
          if (c.needles[b * H + h] == pos / P)
            for (int d = 0; d < D; ++d) kr[d] += s.needle_strength * m.dir[d];
          for (int d = 0; d < D; ++d) vp[(row * H + h) * D + d] = r.normal();
        }
      }
      done[b] += counts[i];
    }
    std::vector<int> ids;
    for (int b : seqs) ids.push_back(c.seqs[b]);
    c.cache->append(ids, counts, k.view({rows, H, D}), v.view({rows, H, D}));
  }
  c.table = c.cache->page_table(c.seqs);
  return c;
}

// Queries [B, Hq, D] in dtype qt: gaussian, plus (needle cases) the key model's direction.
inline Buf make_queries(const CacheCase& c, int group, DType qt, uint64_t seed, float dir_weight = 0.0f) {
  Rng r(seed ^ 0xabcdef12345ull);
  const int B = c.batch(), H = c.opt.num_kv_heads, D = c.opt.head_dim;
  Buf q(qt, size_t(B) * H * group * D);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < group; ++i)
        for (int d = 0; d < D; ++d)
          q.set((size_t(b) * H * group + h * group + i) * D + d,
                r.normal() + dir_weight * c.models[b * H + h].dir[d]);
  return q;
}

inline std::string case_name(const CaseSpec& s, int group, DType qt, uint64_t seed) {
  std::string lens;
  for (int64_t l : s.lens) lens += std::to_string(l) + ",";
  return "seed=" + std::to_string(seed) + " P=" + std::to_string(s.page_size) +
         " D=" + std::to_string(s.head_dim) + " H=" + std::to_string(s.num_kv_heads) +
         " group=" + std::to_string(group) + " kv=" + to_string(s.dtype) +
         " stats=" + to_string(s.stats_dtype) + " q=" + to_string(qt) + " lens=" + lens;
}

// Per-case seed: a fixed base mixed with a case counter, printed by SCOPED_TRACE.
inline uint64_t case_seed(uint64_t base, uint64_t i) {
  return detail::mix64(base * 1000003ull + i);
}

inline int pages_of(int64_t len, int P) { return static_cast<int>((len + P - 1) / P); }

}  // namespace unique::test

// fp8 (e4m3) page statistics: the scalar encoder/decoder against hand-checked values and an
// independent round-to-nearest-even search, every one of the 256 codes, the power-of-two
// pair scale, append == from-scratch recomputation bit-for-bit (codes and scales) through
// KVCache::append and unique::append_kv, the codes against a quantization of statistics
// computed here from the stored keys, fp8 scores against the float64 reference on the
// dequantized statistics, and the errors for fp8 where it is not supported.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "test_util.h"

namespace unique::test {
namespace {

// Value of an e4m3 code from its fields (independent of the library).
double e4m3_value(uint8_t c) {
  const int sign = c >> 7, e = (c >> 3) & 15, m = c & 7;
  double v;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  if (e == 0) v = std::ldexp(double(m), -9);
  else v = std::ldexp(double(8 + m), e - 10);
  return sign ? -v : v;
}

// Round-to-nearest-even onto the finite codes, saturating at 448 (SATFINITE), NaN -> 0x7f.
uint8_t e4m3_ref(float xf) {
  if (std::isnan(xf)) return 0x7f;
  const uint8_t sign = std::signbit(xf) ? 0x80 : 0;
  const double a = std::fabs(double(xf));
  if (a >= 448.0) return sign | 0x7e;
  uint32_t lo = 0, hi = 0x7e;  // value(lo) <= a < value(hi)
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (e4m3_value(uint8_t(mid)) <= a) lo = mid; else hi = mid;
  }
  const double vl = e4m3_value(uint8_t(lo)), vh = e4m3_value(uint8_t(hi));
  if (vl == a) return sign | uint8_t(lo);
  const double mid = (vl + vh) / 2;
  uint32_t r = a < mid ? lo : a > mid ? hi : ((lo & 1) ? hi : lo);
  return sign | uint8_t(r);
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(Fp8, EncoderHandCheckedValues) {
  struct Case {
    float x;
    uint8_t code;
  };
  const Case cases[] = {
      {0.0f, 0x00}, {-0.0f, 0x80}, {1.0f, 0x38}, {-1.0f, 0xb8}, {2.0f, 0x40}, {0.5f, 0x30},
      {1.125f, 0x39},                       // 1 + 1/8: one mantissa step
      {1.0625f, 0x38},                      // midpoint 1 | 1.125: to even (1.0)
      {1.1875f, 0x3a},                      // midpoint 1.125 | 1.25: to even (1.25)
      {1.0626f, 0x39},                      // just above the midpoint
      {0.1f, 0x1d},                         // 1.6 * 2^-4 -> 1.625 * 2^-4
      {240.0f, 0x77}, {256.0f, 0x78},       // 1.875 * 2^7, 2^8
      {448.0f, 0x7e}, {-448.0f, 0xfe},      // max finite
      {464.0f, 0x7e},                       // midpoint 448 | (480): to even, 448
      {480.0f, 0x7e}, {1e9f, 0x7e},         // saturate
      {INFINITY, 0x7e}, {-INFINITY, 0xfe},  // SATFINITE: inf -> max finite
      {std::ldexp(1.0f, -6), 0x08},         // min normal
      {std::ldexp(7.0f, -9), 0x07},         // max subnormal
      {std::ldexp(15.0f, -10), 0x08},       // midpoint 7 | 8 subnormal units: to even (8 = min normal)
      {std::ldexp(1.0f, -9), 0x01},         // min subnormal
      {std::ldexp(3.0f, -10), 0x02},        // midpoint 1 | 2 units: to even (2)
      {std::ldexp(5.0f, -10), 0x02},        // midpoint 2 | 3 units: to even (2)
      {std::ldexp(1.0f, -10), 0x00},        // midpoint 0 | 1 unit: to even (0)
      {-std::ldexp(1.0f, -10), 0x80},
      {std::nextafter(std::ldexp(1.0f, -10), 1.0f), 0x01},
      {std::numeric_limits<float>::denorm_min(), 0x00},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(int(float_to_e4m3_bits(c.x)), int(c.code)) << std::hexfloat << c.x;
    EXPECT_EQ(int(e4m3_ref(c.x)), int(c.code)) << "reference disagrees with the table at " << std::hexfloat << c.x;
  }
  EXPECT_EQ(int(float_to_e4m3_bits(NAN)), 0x7f);
  EXPECT_EQ(int(float_to_e4m3_bits(-NAN)), 0x7f);  // canonical NaN, as CUDA's conversion
}

TEST(Fp8, AllCodesDecodeAndRoundTrip) {
  int nan = 0;
  for (int c = 0; c < 256; ++c) {
    const float f = e4m3_bits_to_float(uint8_t(c));
    const double want = e4m3_value(uint8_t(c));
    if (std::isnan(want)) {
      ++nan;
      EXPECT_TRUE(std::isnan(f)) << c;
      EXPECT_EQ(int(float_to_e4m3_bits(f)), 0x7f) << c;
      continue;
    }
    EXPECT_EQ(double(f), want) << c;
    EXPECT_EQ(std::signbit(f), bool(c & 0x80)) << c;
    EXPECT_EQ(int(float_to_e4m3_bits(f)), c) << c;
    // The typed helpers and the raw-code load agree.
    EXPECT_EQ(to_float(e4m3{uint8_t(c)}), f);
    const uint8_t byte = uint8_t(c);
    EXPECT_EQ(load_as_float(&byte, DType::e4m3, 0), f);
  }
  EXPECT_EQ(nan, 2);
}

TEST(Fp8, EncoderIsRoundToNearestEvenWithSaturation) {
  const uint64_t seed = 20261124;
  SCOPED_TRACE("seed=" + std::to_string(seed));
  Rng r(seed);
  std::vector<float> xs;
  for (int i = 0; i < 100000; ++i) xs.push_back(bits_float(r.u32()));  // every class
  for (int i = 0; i < 100000; ++i) {
    const float mag = std::ldexp(r.uniform(1.0f, 2.0f), r.range(-12, 9));
    xs.push_back(r.range(0, 1) ? mag : -mag);
  }
  // Exact midpoints between neighbouring codes and their float neighbours.
  for (int c = 0; c < 0x7e; ++c) {
    const float mid = static_cast<float>((e4m3_value(uint8_t(c)) + e4m3_value(uint8_t(c + 1))) / 2);
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  int bad = 0;
  for (float x : xs) {
    const uint8_t got = float_to_e4m3_bits(x), want = e4m3_ref(x);
    if (got != want && ++bad < 20)
      ADD_FAILURE() << "float_to_e4m3_bits(" << std::hexfloat << x << ") = 0x" << std::hex << int(got)
                    << ", expected 0x" << int(want);
  }
  EXPECT_EQ(bad, 0);
}

TEST(Fp8, PairScaleIsTheSmallestPowerOfTwo) {
  EXPECT_EQ(e4m3_scale_exp(448.0f), 0);
  EXPECT_EQ(e4m3_scale_exp(std::nextafter(448.0f, 1e9f)), 1);
  EXPECT_EQ(e4m3_scale_exp(224.0f), -1);
  EXPECT_EQ(e4m3_scale_exp(std::nextafter(224.0f, 1e9f)), 0);
  EXPECT_EQ(e4m3_scale_exp(1.0f), -8);  // 1 / 2^-8 = 256 <= 448 < 512
  EXPECT_EQ(e4m3_scale_exp(-1.0f), -8);
  EXPECT_EQ(e4m3_scale_exp(0.0f), 0);
  EXPECT_EQ(e4m3_scale_exp(INFINITY), 0);
  EXPECT_EQ(e4m3_scale_exp(NAN), 0);
  EXPECT_EQ(e4m3_scale_exp(1e-38f), -120);  // clamped: the scale stays a normal float
  EXPECT_EQ(pow2f(-3), 0.125f);
  EXPECT_EQ(pow2f(10), 1024.0f);
  Rng r(99);
  for (int i = 0; i < 20000; ++i) {
    const float a = std::ldexp(r.uniform(1.0f, 2.0f), r.range(-100, 100));
    const int e = e4m3_scale_exp(a);
    EXPECT_LE(double(a), 448.0 * std::ldexp(1.0, e)) << a;
    EXPECT_GT(double(a), 448.0 * std::ldexp(1.0, e - 1)) << a;
  }
}

TEST(Fp8, NamesSizesAndParsing) {
  EXPECT_EQ(dtype_size(DType::e4m3), 1u);
  EXPECT_STREQ(to_string(DType::e4m3), "fp8");
  for (const char* s : {"fp8", "e4m3", "fp8_e4m3", "float8_e4m3fn"}) EXPECT_EQ(parse_stats_dtype(s), DType::e4m3);
  for (DType t : {DType::f32, DType::f16, DType::bf16}) EXPECT_EQ(parse_stats_dtype(to_string(t)), t);
  EXPECT_ERROR_MSG(parse_dtype("fp8"), "dtype", "page-statistics", "--stats-dtype", "fp8");
  EXPECT_ERROR_MSG(parse_stats_dtype("int8"), "stats dtype", "fp8", "int8");
  EXPECT_ERROR_MSG(dispatch_dtype(DType::e4m3, [](auto) { return 0; }), "fp8", "page-statistics");
}

// ---- statistics ----------------------------------------------------------------------------

struct Fp8Snapshot {
  std::vector<uint8_t> codes[4];  // mean, std, kmin, kmax
  std::vector<float> scale;
};
Fp8Snapshot snap(const PagedKV& kv) {
  const size_t n = size_t(kv.num_pages) * kv.num_kv_heads * kv.head_dim;
  Fp8Snapshot s;
  const void* p[4] = {kv.mean, kv.std, kv.kmin, kv.kmax};
  for (int i = 0; i < 4; ++i)
    if (p[i]) s.codes[i].assign(static_cast<const uint8_t*>(p[i]), static_cast<const uint8_t*>(p[i]) + n);
  s.scale.assign(kv.stats_scale, kv.stats_scale + size_t(kv.num_pages) * kv.num_kv_heads * 2);
  return s;
}

// Codes and scales equal on every page of kv's table.
void expect_fp8_equal(const PagedKV& kv, const Fp8Snapshot& a, const Fp8Snapshot& b, const char* what) {
  int bad = 0;
  const char* names[4] = {"mean", "std", "kmin", "kmax"};
  for (int j = 0; j < kv.page_indptr[kv.batch]; ++j)
    for (int h = 0; h < kv.num_kv_heads; ++h) {
      const int page = kv.page_indices[j];
      for (int w = 0; w < 2; ++w)
        if (!a.codes[2 * w].empty() && a.scale[kv.scale_offset(page, h) + w] != b.scale[kv.scale_offset(page, h) + w] &&
            ++bad <= 10)
          ADD_FAILURE() << what << ": scale " << w << " page " << page << " head " << h << ": "
                        << a.scale[kv.scale_offset(page, h) + w] << " vs " << b.scale[kv.scale_offset(page, h) + w];
      for (int i = 0; i < 4; ++i) {
        if (a.codes[i].empty()) continue;
        for (int d = 0; d < kv.head_dim; ++d) {
          const size_t o = size_t(kv.stats_offset(page, h)) + d;
          if (a.codes[i][o] != b.codes[i][o] && ++bad <= 10)
            ADD_FAILURE() << what << ": " << names[i] << " page " << page << " head " << h << " d " << d << ": 0x"
                          << std::hex << int(a.codes[i][o]) << " vs 0x" << int(b.codes[i][o]);
        }
      }
    }
  EXPECT_EQ(bad, 0);
}

// Statistics computed here in double from the stored keys, then quantized by the scheme of
// paged_kv.h: the codes and scales the library must produce.
void expect_codes_match_formula(const PagedKV& kv) {
  const int D = kv.head_dim;
  int bad = 0;
  for (int b = 0; b < kv.batch; ++b) {
    const int n = seq_pages(kv, b);
    for (int j = 0; j < n; ++j) {
      const int page = kv.page_indices[kv.page_indptr[b] + j];
      const int tokens = j == n - 1 ? kv.last_page_len[b] : kv.page_size;
      for (int h = 0; h < kv.num_kv_heads; ++h) {
        std::vector<float> st[4];
        for (auto& v : st) v.resize(D);
        for (int d = 0; d < D; ++d) {
          double sum = 0, lo = INFINITY, hi = -INFINITY;
          for (int t = 0; t < tokens; ++t) {
            const double x = load_as_float(kv.k, kv.dtype, kv.kv_offset(page, h) + int64_t(t) * D + d);
            sum += x;
            lo = std::min(lo, x);
            hi = std::max(hi, x);
          }
          const double mu = sum / tokens;
          double ss = 0;
          for (int t = 0; t < tokens; ++t) {
            const double x = load_as_float(kv.k, kv.dtype, kv.kv_offset(page, h) + int64_t(t) * D + d) - mu;
            ss = std::fma(x, x, ss);
          }
          st[0][d] = float(mu);
          st[1][d] = float(std::sqrt(ss / tokens));
          st[2][d] = float(lo);
          st[3][d] = float(hi);
        }
        const void* p[4] = {kv.mean, kv.std, kv.kmin, kv.kmax};
        for (int w = 0; w < 2; ++w) {
          double amax = 0;
          for (int d = 0; d < D; ++d) amax = std::max({amax, std::fabs(double(st[2 * w][d])), std::fabs(double(st[2 * w + 1][d]))});
          // Smallest power of two s with amax / s <= 448, found by a plain search.
          int e = -120;
          while (e < 120 && amax > 448.0 * std::ldexp(1.0, e)) ++e;
          if (amax == 0) e = 0;
          const float s = kv.stats_scale[kv.scale_offset(page, h) + w];
          if (double(s) != std::ldexp(1.0, e) && ++bad <= 10)
            ADD_FAILURE() << "scale " << w << " page " << page << " head " << h << ": " << s << " vs 2^" << e;
          for (int i = 2 * w; i < 2 * w + 2; ++i)
            for (int d = 0; d < D; ++d) {
              const uint8_t want = e4m3_ref(static_cast<float>(double(st[i][d]) / std::ldexp(1.0, e)));
              const uint8_t got = static_cast<const uint8_t*>(p[i])[kv.stats_offset(page, h) + d];
              if (got != want && ++bad <= 10)
                ADD_FAILURE() << "stat " << i << " page " << page << " head " << h << " d " << d << ": 0x" << std::hex
                              << int(got) << " vs 0x" << int(want) << " (" << st[i][d] << ")";
            }
        }
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(Fp8Stats, KVCacheAppendEqualsRecomputeBitForBit) {
  uint64_t i = 0;
  for (int P : {16, 32, 64})
    for (int D : {64, 128})
      for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
        CaseSpec s;
        s.page_size = P;
        s.head_dim = D;
        s.dtype = dt;
        s.stats_dtype = DType::e4m3;
        s.num_kv_heads = 2;
        s.lens = {int64_t(3 * P + 5), 1, int64_t(P), int64_t(2 * P - 1)};
        s.max_chunk = i % 2 ? P + 7 : 11;  // small and page-crossing chunks
        const uint64_t seed = case_seed(31, i++);
        SCOPED_TRACE(case_name(s, 1, DType::f32, seed));
        CacheCase c = make_case(s, seed);
        const PagedKV kv = c.kv();
        ASSERT_NE(kv.stats_scale, nullptr);
        const Fp8Snapshot inc = snap(kv);
        // Poison the statistics, then recompute from scratch.
        for (void* p : {kv.mean, kv.std, kv.kmin, kv.kmax})
          std::memset(p, 0x7f, size_t(kv.num_pages) * kv.num_kv_heads * D);
        std::fill(kv.stats_scale, kv.stats_scale + size_t(kv.num_pages) * kv.num_kv_heads * 2, NAN);
        recompute_page_stats(kv);
        expect_fp8_equal(kv, inc, snap(kv), "append vs recompute");
        expect_codes_match_formula(kv);
      }
}

// unique::append_kv on a caller-owned cache (scattered pages, one token at a time and in
// page-crossing chunks), only one pair kept: the other pointers and its scale stay untouched.
TEST(Fp8Stats, AppendKvOnCallerCacheEqualsRecompute) {
  for (int keep = 0; keep < 3; ++keep) {  // 0: both pairs, 1: mean/std only, 2: kmin/kmax only
    const uint64_t seed = case_seed(32, keep);
    SCOPED_TRACE("seed=" + std::to_string(seed) + " keep=" + std::to_string(keep));
    Rng r(seed);
    const int H = 2, D = 64, P = 16, num_pages = 24;
    Buf K(DType::bf16, size_t(num_pages) * H * P * D), V(DType::bf16, K.size());
    std::vector<uint8_t> st[4];
    for (auto& v : st) v.assign(size_t(num_pages) * H * D, 0xee);
    std::vector<float> scale(size_t(num_pages) * H * 2, -1.0f);
    std::vector<int32_t> pages = {17, 3, 9, 22, 0, 11};
    KeyModel m;
    m.init(r, D, true);
    int64_t len = 0;
    const int64_t target = 5 * P + 3;
    PagedKV kv;
    kv.dtype = DType::bf16;
    kv.num_pages = num_pages;
    kv.num_kv_heads = H;
    kv.page_size = P;
    kv.head_dim = D;
    kv.k = K.data();
    kv.v = V.data();
    kv.stats_dtype = DType::e4m3;
    if (keep != 2) {
      kv.mean = st[0].data();
      kv.std = st[1].data();
    }
    if (keep != 1) {
      kv.kmin = st[2].data();
      kv.kmax = st[3].data();
    }
    kv.stats_scale = scale.data();
    kv.batch = 1;
    std::vector<int32_t> indptr(2, 0), last(1);
    kv.page_indptr = indptr.data();
    kv.page_indices = pages.data();
    kv.last_page_len = last.data();
    while (len < target) {
      const int n = static_cast<int>(std::min<int64_t>(len < P ? 1 : r.range(1, P + 5), target - len));
      std::vector<float> kn(size_t(n) * H * D), vn(kn.size());
      for (int t = 0; t < n; ++t)
        for (int h = 0; h < H; ++h) m.key(r, len + t, P, kn.data() + (size_t(t) * H + h) * D);
      for (float& x : vn) x = r.normal();
      len += n;
      indptr[1] = static_cast<int32_t>((len + P - 1) / P);
      last[0] = static_cast<int32_t>(len - (indptr[1] - 1) * int64_t(P));
      const int32_t app[2] = {0, n};
      append_kv(kv, make_view(kn.data(), DType::f32, {n, H, D}), make_view(vn.data(), DType::f32, {n, H, D}), app);
    }
    const Fp8Snapshot inc = snap(kv);
    recompute_page_stats(kv);
    expect_fp8_equal(kv, inc, snap(kv), "append_kv vs recompute");
    if (keep == 0) expect_codes_match_formula(kv);
    // Pairs not kept: their scale slots are untouched.
    for (int j = 0; j < indptr[1]; ++j)
      for (int h = 0; h < H; ++h) {
        const int64_t o = kv.scale_offset(pages[j], h);
        if (keep == 2) {
          EXPECT_EQ(scale[o], -1.0f);
        }
        if (keep == 1) {
          EXPECT_EQ(scale[o + 1], -1.0f);
        }
      }
    // Pages outside the table: untouched.
    for (int p : {1, 2, 23}) EXPECT_EQ(st[0][size_t(p) * H * D], 0xee);
  }
}

// ---- scoring -------------------------------------------------------------------------------

// The reference on fp8 statistics equals the reference on an fp32 copy holding the
// dequantized values (code * scale, exact in fp32): fp8 scoring is scoring of those values.
TEST(Fp8Stats, ReferenceScoresAreScoresOfDequantizedStats) {
  const uint64_t seed = case_seed(33, 0);
  CaseSpec s;
  s.page_size = 16;
  s.head_dim = 64;
  s.dtype = DType::bf16;
  s.stats_dtype = DType::e4m3;
  s.lens = {16 * 9 + 3, 5, 16 * 4};
  s.needle = true;
  SCOPED_TRACE(case_name(s, 4, DType::f32, seed));
  CacheCase c = make_case(s, seed);
  const PagedKV kv = c.kv();
  const size_t n = size_t(kv.num_pages) * kv.num_kv_heads * kv.head_dim;
  std::vector<float> deq[4];
  const void* p[4] = {kv.mean, kv.std, kv.kmin, kv.kmax};
  for (int i = 0; i < 4; ++i) {
    deq[i].resize(n);
    for (int page = 0; page < kv.num_pages; ++page)
      for (int h = 0; h < kv.num_kv_heads; ++h)
        for (int d = 0; d < kv.head_dim; ++d) {
          const size_t o = size_t(kv.stats_offset(page, h)) + d;
          deq[i][o] = load_as_float(p[i], DType::e4m3, o) * kv.stats_scale[kv.scale_offset(page, h) + i / 2];
        }
  }
  PagedKV kf = kv;
  kf.stats_dtype = DType::f32;
  kf.stats_scale = nullptr;
  kf.mean = deq[0].data();
  kf.std = deq[1].data();
  kf.kmin = deq[2].data();
  kf.kmax = deq[3].data();
  const int B = c.batch(), H = s.num_kv_heads, Hq = H * 4, max_pages = max_seq_pages(kv);
  Buf q = make_queries(c, 4, DType::f32, seed, 0.3f);
  for (Estimator e : {Estimator::unique, Estimator::quest, Estimator::mean})
    for (OffsetForm o : {OffsetForm::channel, OffsetForm::norm}) {
      AttentionConfig cfg;
      cfg.page_size = 16;
      cfg.budget_tokens = 64;
      cfg.estimator = e;
      cfg.offset = o;
      cfg.gqa = GqaAggregation::max;
      Buf a(DType::f32, size_t(B) * H * max_pages), b(DType::f32, a.size());
      ref::score_pages(cfg, q.view({B, Hq, 64}), kv, a.view({B, H, max_pages}));
      ref::score_pages(cfg, q.view({B, Hq, 64}), kf, b.view({B, H, max_pages}));
      for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a.get(i), b.get(i)) << to_string(e) << " " << i;
    }
}

// With fp8 statistics the needle page is still found (the case of selection_test's
// NeedlePageIsSelected), and the selection mostly agrees with the bf16 statistics'.
TEST(Fp8Stats, NeedleSelectedAndSelectionCloseToBf16) {
  int total = 0, same = 0;
  for (int ci = 0; ci < 4; ++ci) {
    const uint64_t seed = case_seed(34, ci);
    CaseSpec s;
    s.page_size = 16;
    s.head_dim = 128;
    s.dtype = DType::bf16;
    s.stats_dtype = DType::e4m3;
    s.lens = {16 * 64, 16 * 40 + 7};
    s.needle = true;
    s.needle_strength = 2.0f;
    SCOPED_TRACE(case_name(s, 4, DType::f32, seed));
    CacheCase c = make_case(s, seed);
    const PagedKV kv = c.kv();
    // bf16 statistics of the same keys.
    const size_t n = size_t(kv.num_pages) * kv.num_kv_heads * kv.head_dim;
    Buf bm(DType::bf16, n), bs(DType::bf16, n), blo(DType::bf16, n), bhi(DType::bf16, n);
    PagedKV kb = kv;
    kb.stats_dtype = DType::bf16;
    kb.stats_scale = nullptr;
    kb.mean = bm.data();
    kb.std = bs.data();
    kb.kmin = blo.data();
    kb.kmax = bhi.data();
    recompute_page_stats(kb);
    const int B = c.batch(), H = s.num_kv_heads, Hq = H * 4;
    Buf q = make_queries(c, 4, DType::f32, seed, 1.0f);
    for (Estimator e : {Estimator::unique, Estimator::quest}) {
      AttentionConfig cfg;
      cfg.page_size = 16;
      cfg.budget_tokens = 16 * 8;
      cfg.estimator = e;
      const int ms = cfg.max_selected(max_seq_pages(kv));
      SelBuf s8(B, H, ms), s16(B, H, ms);
      select_pages(cfg, q.view({B, Hq, 128}), kv, s8.sel);
      select_pages(cfg, q.view({B, Hq, 128}), kb, s16.sel);
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h) {
          const std::vector<int> a = s8.chosen(b, h), w = s16.chosen(b, h);
          const int needle = c.needles[b * H + h];
          if (needle >= 0) {
            EXPECT_NE(std::find(a.begin(), a.end(), needle), a.end()) << to_string(e) << " b" << b << " h" << h;
          }
          for (int j : a) same += std::find(w.begin(), w.end(), j) != w.end();
          total += static_cast<int>(a.size());
        }
    }
  }
  // Same page count per row; most pages agree (measured ~0.9+ on these cases).
  EXPECT_GE(double(same) / total, 0.75) << same << "/" << total;
}

// ---- bad input -----------------------------------------------------------------------------

TEST(Fp8Stats, Errors) {
  KVCacheOptions o;
  o.num_pages = 4;
  o.num_kv_heads = 1;
  o.head_dim = 16;
  o.dtype = DType::e4m3;
  EXPECT_ERROR_MSG(KVCache bad(o), "KV cache dtype", "fp8", "page-statistics");
  o.dtype = DType::bf16;
  o.stats_dtype = DType::e4m3;
  KVCache cache(o);
  const int seq = cache.add_sequence();
  std::vector<float> k(3 * 16, 0.5f), v(3 * 16, 0.25f);
  cache.append({seq}, {3}, make_view(k.data(), DType::f32, {3, 1, 16}), make_view(v.data(), DType::f32, {3, 1, 16}));
  const PageTable t = cache.page_table({seq});
  PagedKV kv = cache.view(t);
  ASSERT_NE(kv.stats_scale, nullptr);
  EXPECT_EQ(kv.stats_scale[kv.scale_offset(t.indices[0], 0)], std::ldexp(1.0f, -9));  // amax 0.5
  // fp8 as the dtype of new rows, of the query, of scores.
  std::vector<uint8_t> k8(3 * 16), q8(16);
  const int32_t app[2] = {0, 3};
  EXPECT_ERROR_MSG(append_kv(kv, make_view(k8.data(), DType::e4m3, {3, 1, 16}), make_view(v.data(), DType::f32, {3, 1, 16}), app),
                   "k_new", "fp8");
  AttentionConfig cfg;
  cfg.page_size = 16;
  cfg.budget_tokens = 16;
  std::vector<float> scores(4);
  EXPECT_ERROR_MSG(score_pages(cfg, make_view(q8.data(), DType::e4m3, {1, 1, 16}), kv,
                               make_view(scores.data(), DType::f32, {1, 1, 4})),
                   "q", "fp8");
  std::vector<float> q(16, 1.0f);
  EXPECT_ERROR_MSG(score_pages(cfg, make_view(q.data(), DType::f32, {1, 1, 16}), kv,
                               make_view(scores.data(), DType::e4m3, {1, 1, 4})),
                   "scores", "fp8");
  // fp8 statistics without their scales.
  PagedKV noscale = kv;
  noscale.stats_scale = nullptr;
  EXPECT_ERROR_MSG(score_pages(cfg, make_view(q.data(), DType::f32, {1, 1, 16}), noscale,
                               make_view(scores.data(), DType::f32, {1, 1, 4})),
                   "kv.stats_scale", "fp8");
  EXPECT_ERROR_MSG(append_kv(noscale, make_view(k.data(), DType::f32, {3, 1, 16}), make_view(v.data(), DType::f32, {3, 1, 16}), app),
                   "kv.stats_scale");
  EXPECT_ERROR_MSG(recompute_page_stats(noscale), "kv.stats_scale");
  PagedKV kv8 = kv;
  kv8.dtype = DType::e4m3;
  EXPECT_ERROR_MSG(score_pages(cfg, make_view(q.data(), DType::f32, {1, 1, 16}), kv8,
                               make_view(scores.data(), DType::f32, {1, 1, 4})),
                   "kv.dtype", "fp8");
  // No statistics kept: no scales needed or allocated.
  o.keep_unique_stats = o.keep_quest_stats = false;
  KVCache bare(o);
  const int s2 = bare.add_sequence();
  bare.append({s2}, {3}, make_view(k.data(), DType::f32, {3, 1, 16}), make_view(v.data(), DType::f32, {3, 1, 16}));
  const PageTable t2 = bare.page_table({s2});
  EXPECT_EQ(bare.view(t2).stats_scale, nullptr);
}

}  // namespace
}  // namespace unique::test

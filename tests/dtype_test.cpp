// Scalar conversions of include/unique/dtype.h against independent references: the value
// of every half bit pattern from its fields, and round-to-nearest-even found by a search
// over the representable values (exact midpoints in double).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "test_util.h"

namespace unique::test {
namespace {

// Value of a half bit pattern from its fields (independent of the library).
double half_value(uint16_t h) {
  const int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 0) v = std::ldexp(double(m), -24);
  else if (e == 31) v = m ? std::numeric_limits<double>::quiet_NaN() : INFINITY;
  else v = std::ldexp(double(1024 + m), e - 25);
  return sign ? -v : v;
}
double bf16_value(uint16_t b) {
  const int sign = b >> 15, e = (b >> 7) & 255, m = b & 127;
  double v;
  if (e == 0) v = std::ldexp(double(m), -133);
  else if (e == 255) v = m ? std::numeric_limits<double>::quiet_NaN() : INFINITY;
  else v = std::ldexp(double(128 + m), e - 134);
  return sign ? -v : v;
}

// Round-to-nearest-even of x onto the positive patterns [0, inf_bits] whose values are
// `value` (monotone); the pattern inf_bits counts as the next power of two for rounding
// (IEEE overflow rule). Returns the bits with x's sign.
template <class ValueFn>
uint16_t rne_reference(float xf, uint16_t inf_bits, double inf_as, ValueFn value) {
  const double x = xf;
  const uint16_t sign = std::signbit(xf) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (std::isinf(a)) return sign | inf_bits;
  auto val = [&](uint32_t bits) { return bits == inf_bits ? inf_as : value(uint16_t(bits)); };
  if (a >= inf_as) return sign | inf_bits;
  // Largest pattern lo with val(lo) <= a.
  uint32_t lo = 0, hi = inf_bits;  // val(lo) <= a < val(hi)
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (val(mid) <= a) lo = mid; else hi = mid;
  }
  if (val(lo) == a) return sign | uint16_t(lo);
  const double mid = (val(lo) + val(hi)) / 2;  // exact in double
  uint32_t r;
  if (a < mid) r = lo;
  else if (a > mid) r = hi;
  else r = (lo & 1) ? hi : lo;
  return sign | uint16_t(r);
}

uint16_t f16_ref(float x) { return rne_reference(x, 0x7c00, 65536.0, half_value); }
uint16_t bf16_ref(float x) { return rne_reference(x, 0x7f80, std::ldexp(1.0, 128), bf16_value); }

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(DType, HalfToFloatAllPatternsMatchFieldDecoding) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_bits_to_float(uint16_t(h));
    const double want = half_value(uint16_t(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << h;
    } else {
      EXPECT_EQ(double(f), want) << std::hex << h;
      EXPECT_EQ(std::signbit(f), bool(h & 0x8000)) << std::hex << h;  // -0 stays -0
    }
  }
}

TEST(DType, HalfRoundTripAllPatterns) {
  int nan_count = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_bits_to_float(uint16_t(h));
    const uint16_t back = float_to_f16_bits(f);
    if (((h >> 10) & 31) == 31 && (h & 1023)) {
      ++nan_count;
      EXPECT_TRUE(std::isnan(f16_bits_to_float(back))) << std::hex << h << " -> " << back;
      EXPECT_EQ(back & 0x8000, h & 0x8000) << std::hex << h;
    } else {
      EXPECT_EQ(back, h) << std::hex << h;
    }
  }
  EXPECT_EQ(nan_count, 2 * 1023);
}

TEST(DType, Bf16ToFloatAllPatterns) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_bits_to_float(uint16_t(b));
    const double want = bf16_value(uint16_t(b));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << b;
      EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(f)))) << std::hex << b;
    } else {
      EXPECT_EQ(double(f), want) << std::hex << b;
      EXPECT_EQ(float_to_bf16_bits(f), b) << std::hex << b;
    }
  }
}

// Floats to check: random bit patterns (all classes: NaN, inf, subnormal), random values
// in the half range and in half's subnormal range, and for random representable targets
// the exact midpoints to the next value and their float neighbours.
std::vector<float> probe_floats(bool for_half, uint64_t seed) {
  Rng r(seed);
  std::vector<float> xs;
  for (int i = 0; i < 40000; ++i) xs.push_back(from_bits(r.u32()));
  for (int i = 0; i < 40000; ++i) {
    const float mag = std::ldexp(r.uniform(1.0f, 2.0f), r.range(-30, 17));
    xs.push_back(r.range(0, 1) ? mag : -mag);
  }
  for (int i = 0; i < 20000; ++i) xs.push_back(r.uniform(-1.0f, 1.0f) * 6.2e-5f);  // half subnormals
  for (int i = 0; i < 20000; ++i) {
    const uint16_t bits = uint16_t(r.u32() & (for_half ? 0x7bff : 0x7f7f));
    const double lo = for_half ? half_value(bits) : bf16_value(bits);
    const double hi = bits + 1 == (for_half ? 0x7c00 : 0x7f80)
                          ? (for_half ? 65536.0 : std::ldexp(1.0, 128))
                          : (for_half ? half_value(bits + 1) : bf16_value(bits + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    if (double(mid) != (lo + hi) / 2) continue;  // not representable (cannot happen; defensive)
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (float x : {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 65536.0f, 1e30f, -1e30f,
                  std::numeric_limits<float>::denorm_min(), 5.96e-8f, 2.98e-8f, 2.9802322e-8f,
                  std::numeric_limits<float>::max(), INFINITY, -INFINITY, NAN})
    xs.push_back(x);
  return xs;
}

TEST(DType, FloatToHalfIsRoundToNearestEven) {
  const uint64_t seed = 20261123;
  SCOPED_TRACE("seed=" + std::to_string(seed));
  int bad = 0;
  for (float x : probe_floats(true, seed)) {
    const uint16_t got = float_to_f16_bits(x);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(f16_bits_to_float(got))) << x;
      continue;
    }
    const uint16_t want = f16_ref(x);
    if (got != want && ++bad < 20)
      ADD_FAILURE() << "float_to_f16_bits(" << std::hexfloat << x << ") = 0x" << std::hex << got
                    << ", expected 0x" << want;
  }
  EXPECT_EQ(bad, 0);
}

TEST(DType, FloatToBf16IsRoundToNearestEven) {
  const uint64_t seed = 777;
  SCOPED_TRACE("seed=" + std::to_string(seed));
  int bad = 0;
  for (float x : probe_floats(false, seed)) {
    const uint16_t got = float_to_bf16_bits(x);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(bf16_bits_to_float(got))) << x;
      continue;
    }
    const uint16_t want = bf16_ref(x);
    if (got != want && ++bad < 20)
      ADD_FAILURE() << "float_to_bf16_bits(" << std::hexfloat << x << ") = 0x" << std::hex << got
                    << ", expected 0x" << want;
  }
  EXPECT_EQ(bad, 0);
}

TEST(DType, TypedHelpersAgreeWithBitFunctions) {
  Rng r(5);
  std::vector<unsigned char> buf(8);
  for (int i = 0; i < 2000; ++i) {
    const float x = r.normal() * 100.0f;
    EXPECT_EQ(to_float(from_float<f16>(x)), f16_bits_to_float(float_to_f16_bits(x)));
    EXPECT_EQ(to_float(from_float<bf16>(x)), bf16_bits_to_float(float_to_bf16_bits(x)));
    for (DType t : {DType::f32, DType::f16, DType::bf16}) {
      store_from_float(buf.data(), t, 1, x);
      const float back = load_as_float(buf.data(), t, 1);
      const float want = t == DType::f32 ? x
                         : t == DType::f16 ? f16_bits_to_float(float_to_f16_bits(x))
                                           : bf16_bits_to_float(float_to_bf16_bits(x));
      EXPECT_EQ(back, want);
    }
  }
}

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::f16), 2u);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  for (DType t : {DType::f32, DType::f16, DType::bf16}) EXPECT_EQ(parse_dtype(to_string(t)), t);
  EXPECT_EQ(parse_dtype("bfloat16"), DType::bf16);
  EXPECT_EQ(parse_dtype("float16"), DType::f16);
  EXPECT_ERROR_MSG(parse_dtype("int8"), "dtype", "int8");
}

}  // namespace
}  // namespace unique::test

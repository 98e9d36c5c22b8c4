// The CPU kernels' vector helpers (src/cpu/vec.h) against scalar code: widening loads of
// every storage type against the scalar conversions, and the batched horizontal sum
// against per-vector double sums.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cpu/vec.h"

namespace unique::cpu {
namespace {

template <class T>
void expect_widen_matches_scalar(uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> bits(0, 0xffff);
  T src[kW + 3];
  for (int off = 0; off < 3; ++off) {  // unaligned starts too
    for (auto& x : src) {  // random bit patterns (statistics are finite: no e4m3 NaN code)
      const uint16_t b = static_cast<uint16_t>(bits(rng));
      if constexpr (std::is_same_v<T, e4m3>) x.bits = static_cast<uint8_t>((b & 0x7f) == 0x7f ? b - 1 : b);
      else if constexpr (std::is_same_v<T, float>) x = std::ldexp(float(b) - 32768.0f, -10);
      else x.bits = b;
    }
    const VecF v = load_widen(src + off);
    for (int i = 0; i < kW; ++i) {
      const float want = to_float(src[off + i]);
      if (std::isnan(want)) EXPECT_TRUE(std::isnan(v[i])) << "lane " << i;
      else EXPECT_EQ(v[i], want) << "lane " << i << " offset " << off;
    }
  }
}

TEST(Vec, LoadWidenMatchesScalarConversion) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    expect_widen_matches_scalar<float>(seed);
    expect_widen_matches_scalar<bf16>(seed);
    expect_widen_matches_scalar<f16>(seed);
    expect_widen_matches_scalar<e4m3>(seed);
  }
}

TEST(Vec, Hsum16LaneIsSumOfEachVector) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  for (int trial = 0; trial < 50; ++trial) {
    VecF v[16];
    double want[16];
    for (int m = 0; m < 16; ++m) {
      want[m] = 0;
      for (int i = 0; i < kW; ++i) want[m] += (v[m][i] = u(rng));
    }
    const VecF got = hsum16(v);
    for (int m = 0; m < 16; ++m) EXPECT_NEAR(got[m], want[m], 1e-4) << "vector " << m;
  }
}

}  // namespace
}  // namespace unique::cpu

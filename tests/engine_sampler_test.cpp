// Sampler: greedy, top-k, top-p, temperature and seeds.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "unique/engine/sampler.h"
#include "unique/error.h"

using namespace unique::engine;

namespace {

TEST(Sampler, GreedyTakesArgmaxLowestIdOnTies) {
  Sampler s({}, 0);
  const std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s.sample(l.data(), 4), 1);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  const std::vector<float> l = {0.5f, 0.1f, 2.0f, 1.9f, -3.0f};
  SamplerOptions k1{1.0f, 1, 1.0f, 5};
  SamplerOptions p0{1.0f, 0, 1e-6f, 5};
  Sampler a(k1, 0), b(p0, 0);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.sample(l.data(), 5), 2);
    EXPECT_EQ(b.sample(l.data(), 5), 2);
  }
}

TEST(Sampler, FrequenciesFollowTheTruncatedSoftmax) {
  const std::vector<float> l = {1.0f, 0.0f, 2.0f, -1.0f};
  // top_k = 3 drops id 3; temperature 2 flattens.
  SamplerOptions o{2.0f, 3, 1.0f, 42};
  Sampler s(o, 0);
  std::vector<int> count(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++count[s.sample(l.data(), 4)];
  EXPECT_EQ(count[3], 0);
  const double z = std::exp(0.5) + std::exp(0.0) + std::exp(1.0);
  const double want[3] = {std::exp(0.5) / z, 1.0 / z, std::exp(1.0) / z};
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(count[i] / double(n), want[i], 0.015) << i;
  // Nucleus at temperature 2 over all four: p = (.276, .167, .455, .102). top_p 0.4 keeps
  // {2}; top_p 0.6 keeps {2, 0}.
  Sampler t(SamplerOptions{2.0f, 0, 0.4f, 1}, 0), u(SamplerOptions{2.0f, 0, 0.6f, 1}, 0);
  std::vector<int> cu(4, 0);
  for (int i = 0; i < 2000; ++i) {
    EXPECT_EQ(t.sample(l.data(), 4), 2);
    ++cu[u.sample(l.data(), 4)];
  }
  EXPECT_EQ(cu[1] + cu[3], 0);
  EXPECT_NEAR(cu[0] / 2000.0, 0.276 / (0.276 + 0.455), 0.04);
}

TEST(Sampler, SeedsAndStreamsAreReproducible) {
  std::vector<float> l(100);
  for (int i = 0; i < 100; ++i) l[i] = std::sin(i * 0.37f);
  SamplerOptions o{1.0f, 0, 0.95f, 9};
  Sampler a(o, 3), b(o, 3), c(o, 4);
  std::vector<int> ra, rb, rc;
  for (int i = 0; i < 30; ++i) {
    ra.push_back(a.sample(l.data(), 100));
    rb.push_back(b.sample(l.data(), 100));
    rc.push_back(c.sample(l.data(), 100));
  }
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rc);
}

TEST(Sampler, BadOptionsNameTheField) {
  EXPECT_THROW(Sampler(SamplerOptions{-1.0f, 0, 1.0f, 0}, 0), unique::Error);
  EXPECT_THROW(Sampler(SamplerOptions{1.0f, -2, 1.0f, 0}, 0), unique::Error);
  EXPECT_THROW(Sampler(SamplerOptions{1.0f, 0, 0.0f, 0}, 0), unique::Error);
}

}  // namespace

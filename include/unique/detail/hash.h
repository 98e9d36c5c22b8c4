// Seeded hash for the random estimator; identical on host and device so CPU and CUDA
// select the same "random" pages.
#pragma once
#include <cstdint>

#include "unique/dtype.h"

namespace unique::detail {

// splitmix64 finaliser over (seed, sequence, kv head, page position).
UNIQUE_HD uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A score in [0, 1) with 24 random bits (exact in fp32, so no ties from rounding).
UNIQUE_HD float random_page_score(uint64_t seed, int b, int h, int page) {
  uint64_t x = mix64(seed ^ mix64((static_cast<uint64_t>(b) << 40) ^
                                  (static_cast<uint64_t>(h) << 24) ^ static_cast<uint64_t>(page)));
  return static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
}

}  // namespace unique::detail

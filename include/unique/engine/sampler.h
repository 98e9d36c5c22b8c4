// Token sampling from logits: greedy (temperature 0), or temperature + top-k + top-p with
// a seeded generator (one stream per sequence, so batch results do not depend on order).
#pragma once
#include <cstdint>
#include <random>

namespace unique::engine {

struct SamplerOptions {
  float temperature = 0.0f;  // 0: greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0: no limit
  float top_p = 1.0f;        // nucleus mass in (0, 1]
  uint64_t seed = 0;
  void validate() const;     // throws unique::Error naming the field
};

class Sampler {
 public:
  Sampler(const SamplerOptions& opt, uint64_t stream);
  int sample(const float* logits, int vocab);

 private:
  SamplerOptions opt_;
  std::mt19937_64 rng_;
};

}  // namespace unique::engine

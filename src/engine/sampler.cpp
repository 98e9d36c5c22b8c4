#include "unique/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "unique/error.h"

namespace unique::engine {

void SamplerOptions::validate() const {
  UNIQUE_CHECK_ARG(temperature >= 0 && std::isfinite(temperature), "temperature", ">= 0", temperature);
  UNIQUE_CHECK_ARG(top_k >= 0, "top_k", ">= 0", top_k);
  UNIQUE_CHECK_ARG(top_p > 0 && top_p <= 1, "top_p", "in (0, 1]", top_p);
}

Sampler::Sampler(const SamplerOptions& opt, uint64_t stream)
    : opt_(opt), rng_(opt.seed * 0x9E3779B97F4A7C15ull + stream) {
  opt_.validate();
}

int Sampler::sample(const float* logits, int vocab) {
  if (opt_.temperature == 0.0f) {
    int best = 0;
    for (int i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  std::vector<int> idx(vocab);
  std::iota(idx.begin(), idx.end(), 0);
  int k = opt_.top_k > 0 ? std::min(opt_.top_k, vocab) : vocab;
  auto by_logit = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  if (k < vocab) std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
  else std::sort(idx.begin(), idx.end(), by_logit);
  idx.resize(k);
  std::vector<double> p(k);
  const double mx = logits[idx[0]] / double(opt_.temperature);
  double sum = 0;
  for (int i = 0; i < k; ++i) sum += p[i] = std::exp(logits[idx[i]] / double(opt_.temperature) - mx);
  // Nucleus: smallest prefix whose mass reaches top_p (at least one token).
  int keep = k;
  if (opt_.top_p < 1.0f) {
    double c = 0;
    for (int i = 0; i < k; ++i) {
      c += p[i] / sum;
      if (c >= opt_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (int i = 0; i < keep; ++i) total += p[i];
  const double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  double c = 0;
  for (int i = 0; i < keep; ++i) {
    c += p[i];
    if (r < c) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace unique::engine

// Internal: the float64 core of the soft-mask reference (include/unique/soft_mask.h) on
// plain double arrays, so tests can take finite differences without dtype rounding.
// Layouts (contiguous): q/dq [B][L][Hq][D], k/v/dk/dv [B][L][Hkv][D], out like q,
// lse [B][L][Hq], tau [B][Hq][L] (-inf: no mask for that query).
#pragma once
#include <vector>

#include "unique/config.h"

namespace unique::ref::soft_mask {

struct Problem {
  int B = 1, L = 1, Hq = 1, Hkv = 1, D = 1;
  std::vector<double> q, k, v;
};

// Thresholds tau [B][Hq][L] of the current q, k (the stop-gradient constants).
std::vector<double> thresholds(const AttentionConfig& cfg, const Problem& p);
// Page weights [B][Hq][L][ceil(L/P)] for the given thresholds (see ref::soft_mask_page_weights).
std::vector<double> page_weights(const AttentionConfig& cfg, const Problem& p, const std::vector<double>& tau);
// Forward with the given thresholds; `weights` non-null overrides the page weights (a
// frozen mask, for tests).
void forward(const AttentionConfig& cfg, const Problem& p, const std::vector<double>& tau,
             std::vector<double>& out, std::vector<double>& lse, const std::vector<double>* weights = nullptr);
// Gradients of sum(dout * out) with tau held constant.
void backward(const AttentionConfig& cfg, const Problem& p, const std::vector<double>& tau,
              const std::vector<double>& dout, std::vector<double>& dq, std::vector<double>& dk,
              std::vector<double>& dv);

}  // namespace unique::ref::soft_mask

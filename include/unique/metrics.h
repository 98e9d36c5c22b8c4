// Accuracy metrics of a selection (host, double precision).
#pragma once
#include <vector>

#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/selection.h"
#include "unique/tensor.h"

namespace unique {

// Softmax attention mass of every logical page of sequence b for query head hq (logits
// q.k * scale in double; sums to 1). Host views, not validated (the callers validate): the
// oracle estimator's score, the recall metrics. q is [batch, num_qo_heads, head_dim].
std::vector<double> page_attention_mass(const TensorView& q, const PagedKV& kv, int b, int hq, double scale);

// Mean over (sequence, query head) of the fraction of true softmax attention mass that
// falls on the selected pages. 1 for a dense selection.
double attention_recall(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                        const Selection& sel);

// ||a - b|| / ||b|| over all elements (host views, any dtypes).
double relative_l2(const TensorView& a, const TensorView& b);

}  // namespace unique

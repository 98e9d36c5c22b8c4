// Accuracy metrics of a selection (host, double precision).
#pragma once
#include <vector>

#include "unique/config.h"
#include "unique/paged_kv.h"
#include "unique/selection.h"
#include "unique/tensor.h"

namespace unique {

// Mean over (sequence, query head) of the fraction of true softmax attention mass that
// falls on the selected pages. 1 for a dense selection.
double attention_recall(const AttentionConfig& cfg, const TensorView& q, const PagedKV& kv,
                        const Selection& sel);

// ||a - b|| / ||b|| over all elements (host views, any dtypes).
double relative_l2(const TensorView& a, const TensorView& b);

}  // namespace unique

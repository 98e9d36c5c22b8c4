#include "unique/config.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "unique/error.h"

namespace unique {

int AttentionConfig::max_selected(int num_pages) const {
  if (estimator == Estimator::dense) return num_pages;
  // The last page is always kept, so "recent" is at least 1.
  int n = topk_pages() + sink_pages + std::max(recent_pages, 1);
  return std::min(n, num_pages);
}

float AttentionConfig::scale_for(int head_dim) const {
  return sm_scale > 0.0f ? sm_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

void AttentionConfig::validate() const {
  UNIQUE_CHECK_ARG(page_size == 16 || page_size == 32 || page_size == 64 ||
                (page_size >= 1 && page_size <= 256),
            "page_size", "1..256 (16, 32 or 64 for the fast kernels)", page_size);
  UNIQUE_CHECK_ARG(budget_tokens >= page_size, "budget_tokens",
            detail::concat(">= page_size (", page_size, ")"), budget_tokens);
  UNIQUE_CHECK_ARG(sink_pages >= 0, "sink_pages", ">= 0", sink_pages);
  UNIQUE_CHECK_ARG(recent_pages >= 0, "recent_pages", ">= 0", recent_pages);
  UNIQUE_CHECK_ARG(std::isfinite(alpha), "alpha", "a finite number", alpha);
  UNIQUE_CHECK_ARG(sm_scale >= 0.0f && std::isfinite(sm_scale), "sm_scale", ">= 0 (0 = 1/sqrt(head_dim))",
            sm_scale);
  UNIQUE_CHECK_ARG(prefill_block >= 16 && prefill_block <= 256 && prefill_block % 16 == 0, "prefill_block",
                   "a multiple of 16 in 16..256", prefill_block);
  UNIQUE_CHECK_ARG(pool >= 1 && pool <= prefill_block && prefill_block % pool == 0, "pool",
                   detail::concat("a divisor of prefill_block (", prefill_block, ")"), pool);
  UNIQUE_CHECK_ARG(top_p > 0.0f && top_p <= 1.0f, "top_p", "in (0, 1]", top_p);
  UNIQUE_CHECK_ARG(prefill_top_k == 0 || prefill_top_k >= 2, "prefill_top_k",
                   "0 (the top_p rule) or >= 2 (block 0 and the diagonal are always kept)", prefill_top_k);
  UNIQUE_CHECK_ARG(temperature > 0.0f && std::isfinite(temperature), "temperature", "a finite number > 0",
                   temperature);
}

const char* to_string(Estimator e) {
  switch (e) {
    case Estimator::unique: return "unique";
    case Estimator::quest: return "quest";
    case Estimator::mean: return "mean";
    case Estimator::oracle: return "oracle";
    case Estimator::random: return "random";
    case Estimator::composite: return "composite";
    default: return "dense";
  }
}
const char* to_string(GqaAggregation g) { return g == GqaAggregation::max ? "max" : "softmax_sum"; }
const char* to_string(OffsetForm o) { return o == OffsetForm::channel ? "channel" : "norm"; }
const char* to_string(PrefillMode m) { return m == PrefillMode::dense ? "dense" : "unisparse"; }

Estimator parse_estimator(std::string_view s) {
  for (Estimator e : {Estimator::unique, Estimator::quest, Estimator::mean, Estimator::oracle,
                      Estimator::random, Estimator::dense, Estimator::composite})
    if (s == to_string(e)) return e;
  throw_arg("estimator", "one of unique, quest, mean, oracle, random, dense, composite", std::string(s));
}
GqaAggregation parse_gqa(std::string_view s) {
  if (s == "max") return GqaAggregation::max;
  if (s == "softmax_sum" || s == "sum") return GqaAggregation::softmax_sum;
  throw_arg("gqa", "one of max, softmax_sum", std::string(s));
}
OffsetForm parse_offset(std::string_view s) {
  if (s == "channel") return OffsetForm::channel;
  if (s == "norm") return OffsetForm::norm;
  throw_arg("offset", "one of channel, norm", std::string(s));
}

PrefillMode parse_prefill(std::string_view s) {
  if (s == "dense") return PrefillMode::dense;
  if (s == "unisparse") return PrefillMode::unisparse;
  throw_arg("prefill", "one of dense, unisparse", std::string(s));
}

}  // namespace unique

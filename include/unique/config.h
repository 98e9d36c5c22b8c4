// AttentionConfig: the one set of knobs shared by the library, engine, CLI and Python.
// CLI flags and Python keyword arguments map 1:1 onto these fields.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace unique {

// composite: UniSparse's composite tokens at decode time: a page's keys average-pooled in
// blocks of `pool` tokens, the page scored by its best pooled key (max over blocks of
// q.k_pooled). It reads the keys themselves (an accuracy study, CPU only): stored, the pooled
// keys would cost page_size / pool key rows per page, as mean + std cost two at pool 8 / page 16.
enum class Estimator : uint8_t { unique, quest, mean, oracle, random, dense, composite };
// How the page scores of the query heads sharing one KV head become one score.
//   max:         max over the group's heads of the raw score
//   softmax_sum: sum over heads of softmax_over_pages(sm_scale * score)
enum class GqaAggregation : uint8_t { max, softmax_sum };
// UNIQUE offset term added to q.mean:
//   channel: alpha * sum_d |q_d| * std_d        (default; per-channel bound)
//   norm:    alpha * ||q|| * ||std||
enum class OffsetForm : uint8_t { channel, norm };
// Prefill attention: dense causal, or UniSparse (composite tokens + top-p block selection,
// then block-sparse causal attention). See include/unique/prefill.h.
enum class PrefillMode : uint8_t { dense, unisparse };

struct AttentionConfig {
  int page_size = 16;         // tokens per KV page (16, 32 or 64)
  int budget_tokens = 2048;   // top-k budget in tokens; k = budget_tokens / page_size pages
  int sink_pages = 1;         // first pages always kept
  int recent_pages = 1;       // last pages always kept (the partial last page always is)
  Estimator estimator = Estimator::unique;
  GqaAggregation gqa = GqaAggregation::max;
  OffsetForm offset = OffsetForm::channel;
  float alpha = 1.0f;         // scale of the UNIQUE offset term
  float sm_scale = 0.0f;      // softmax scale; 0 means 1/sqrt(head_dim)
  uint64_t seed = 0;          // for the random estimator
  // Sparse prefill (UniSparse, arXiv 2512.14082).
  PrefillMode prefill = PrefillMode::dense;
  int prefill_block = 64;     // query/key block of the block-sparse prefill, in tokens
  int pool = 8;               // composite-token pooling factor (cq = ck), divides prefill_block;
                              // also the composite decode estimator's block (in tokens)
  float top_p = 0.95f;        // compressed attention mass kept per query block; >= 1 keeps all
  int prefill_top_k = 0;      // > 0: a fixed top-k instead of top_p, the baseline UniSparse compares
                              // with: this many key blocks per query block (>= 2: block 0 and
                              // the diagonal included), the heaviest by the same estimate
  // Sparsity-aware training (include/unique/soft_mask.h): temperature T of the soft page
  // mask sigmoid((s - tau) / T); T -> 0 is hard top-k.
  float temperature = 0.1f;

  int topk_pages() const { return budget_tokens / page_size; }
  // The prefill's block selection keeps every visible key block (sparse prefill == dense).
  bool prefill_keeps_all() const { return prefill_top_k == 0 && top_p >= 1.0f; }
  // Whether a query block that has kept `count` key blocks of estimated mass `mass` (block 0
  // and the diagonal first, then by decreasing mass) keeps the next one.
  bool prefill_wants_more(int count, double mass) const {
    return prefill_top_k > 0 ? count < prefill_top_k : mass < top_p;
  }
  // Upper bound on pages selected per (sequence, KV head) for a sequence of num_pages.
  int max_selected(int num_pages) const;
  float scale_for(int head_dim) const;
  // Throws unique::Error naming the field if a value is out of range.
  void validate() const;
};

const char* to_string(Estimator e);
const char* to_string(GqaAggregation g);
const char* to_string(OffsetForm o);
Estimator parse_estimator(std::string_view s);
GqaAggregation parse_gqa(std::string_view s);
OffsetForm parse_offset(std::string_view s);
const char* to_string(PrefillMode m);
PrefillMode parse_prefill(std::string_view s);

}  // namespace unique

// Shared pieces of the eval runners (src/eval/*.cpp only).
#pragma once
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "unique/engine/engine.h"
#include "unique/engine/model.h"
#include "unique/engine/tokenizer.h"
#include "unique/error.h"
#include "unique/eval/eval.h"
#include "unique/eval/haystack.h"
#include "unique/eval/tasks.h"

namespace unique::eval::detail {

struct Run {
  const EvalOptions& opt;
  const engine::Model& model;
  const engine::Tokenizer& tok;
  std::string model_name;
  DType kv_dtype;
  ResultsFile& out;
  std::FILE* progress;
  EvalSummary& sum;
};

// (estimator, budget) pairs of the sweep; dense once, with budget 0.
std::vector<std::pair<Estimator, int>> sweep_runs(const EvalOptions& o);
AttentionConfig attention_for(const Run& r, int page, Estimator e, int budget, uint64_t seed);
// The identifying fields of a row (depth < 0: null).
Row base_row(const Run& r, const std::string& task, const std::string& variant, const SampleSpec& s, int64_t tokens,
             Estimator e, int budget, int page, bool has_depth);
std::unique_ptr<engine::Engine> make_engine(const Run& r, int page, int64_t max_context);
// " unique@512", " dense": a run in progress lines.
inline std::string run_label(Estimator e, int budget) {
  return e == Estimator::dense ? std::string(" dense") : unique::detail::concat(' ', to_string(e), '@', budget);
}
// Generated text as valid UTF-8 (JSON strings must be): a byte that does not start or
// continue a well-formed sequence becomes '?'. A model may emit any byte token.
std::string utf8_or_marks(const std::string& s);
// prefill_s, and for a UniSparse prefill the fraction of key blocks it kept (prefill_kept).
void set_prefill_fields(Row& row, const engine::Engine& eng, double prefill_s);
// Greedy id of logits.
int argmax(const float* logits, int n);

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run_retrieval(Run& r, const Sample& s, const SampleSpec& spec, int page, bool has_depth);
void run_ppl(Run& r, const SampleSpec& spec, int page, const Haystack& hay);
void run_recall(Run& r, const Sample& s, const SampleSpec& spec, int page);

}  // namespace unique::eval::detail

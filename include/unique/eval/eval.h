// `unique eval`: accuracy of every estimator x budget x page size on one model, through
// the engine's sparse decode path.
//   passkey, needle, kv, vartrack: greedy answers after a prefill of the prompt
//     (all but its last token); the last prompt token and every answer token go through
//     sparse decode. One prefill per (sample, page size), shared by all estimator x
//     budget runs (Engine::fork_sequence).
//   ppl: perplexity of real text; the first ppl_prefix tokens are prefilled, every later
//     token is predicted by a sparse decode step fed the true previous token.
//   recall: on the passkey prompts, dense decode of the answer (teacher forced); at every
//     step and layer each estimator x budget selects pages from the real queries and keys;
//     per head: attention mass on the selected pages, and the relative L2 error of the
//     sparse attention output against the dense one.
// Every prefill is dense, or UniSparse block-sparse with EvalOptions::prefill = unisparse
// (prefill_top_p or a fixed prefill_top_k, prefill_block, pool; not in the first
// dense_layers layers), so sparse prefill + sparse decode can be compared with dense
// prefill + the same decode. Rows record the prefill mode.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "unique/config.h"
#include "unique/dtype.h"
#include "unique/eval/results.h"

namespace unique::eval {

struct EvalOptions {
  std::string model_dir;
  std::vector<std::string> tasks = {"passkey", "needle", "kv", "vartrack", "ppl", "recall"};
  std::vector<Estimator> estimators = {Estimator::unique, Estimator::quest, Estimator::mean,
                                       Estimator::random, Estimator::oracle, Estimator::dense};
  std::vector<int> budgets = {256, 512, 1024, 2048, 4096, 8192};
  std::vector<int> page_sizes = {16, 32, 64};
  std::vector<int64_t> contexts = {4096};
  std::vector<double> depths = {10, 50, 90};  // percent
  std::vector<uint64_t> seeds = {0};
  std::vector<std::string> kv_variants = {"multikey", "multivalue"};
  std::string haystack = "kjv";
  int sink_pages = 1, recent_pages = 1, dense_layers = 0;
  int64_t ppl_prefix = 256;
  int vartrack_hops = 3;
  std::string kv_dtype = "auto";  // auto: fp32 for fp32 weights on the CPU, else bf16
  // cuda: the CUDA engine (weights, KV cache and kernels on the GPU; bf16/fp16 KV). Every task
  // but `recall`, which reads queries and keys on the host (a decode observer).
  Device device = Device::cpu;
  PrefillMode prefill = PrefillMode::dense;  // prompt attention (--prefill)
  float prefill_top_p = 0.95f;               // unisparse: estimated mass kept per query block
  int prefill_top_k = 0;                     // unisparse: > 0 keeps this many blocks instead (baseline)
  int prefill_block = 64, pool = 8;          // unisparse: block and composite pooling, in tokens
  void validate() const;          // unique::Error naming the flag
};

struct EvalSummary {
  int64_t written = 0, skipped = 0;
  double seconds = 0;
};

// Runs the sweep, appending every new row to `out` (rows already there are skipped) and
// printing one progress line per (sample, page size) to `progress` (may be null).
EvalSummary run_eval(const EvalOptions& opt, ResultsFile& out, std::FILE* progress);

}  // namespace unique::eval

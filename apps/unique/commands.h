// Subcommands of the `unique` CLI. Each registers its flags on a CLI11 subcommand and
// returns the process exit code when run.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "unique/config.h"

namespace unique::cli {

using Runner = std::function<int()>;
// Registers `bench-attention`; the returned runner executes it with the parsed flags.
Runner add_bench_attention(CLI::App& app);
// `bench-prefill`: dense vs UniSparse block-sparse prefill on synthetic data (bench_prefill.cpp).
Runner add_bench_prefill(CLI::App& app);
// `bench-prefill --model DIR --prompt-file F`: composite vs exact block mass on a model's
// real queries and keys (bench_prefill_model.cpp; needs the engine).
struct ModelRankOptions {
  std::string model_dir;
  std::vector<std::string> prompt_files;  // files, or "kjv" for the eval's haystack text
  std::vector<int64_t> contexts;
  std::vector<float> top_ps;
  AttentionConfig cfg;   // page size, prefill block, pool (unisparse; validated by the caller)
  int rank_blocks = 16;  // query blocks sampled per layer (0 = all)
};
int run_bench_prefill_model(const ModelRankOptions& o);
// `generate`: text generation from a Hugging Face model directory (generate.cpp).
Runner add_generate(CLI::App& app);
// `bench-decode`: decode throughput of the whole model, dense vs sparse (bench_decode.cpp).
Runner add_bench_decode(CLI::App& app);
// The prompt-attention flags shared by generate, bench-decode and eval: --prefill,
// --prefill-top-p, --prefill-top-k, --prefill-block, --pool.
struct PrefillFlags {
  std::string mode = "dense";
  float top_p = AttentionConfig{}.top_p;
  int top_k = 0, block = AttentionConfig{}.prefill_block, pool = AttentionConfig{}.pool;
  // Sets cfg's prefill, top_p, prefill_top_k, prefill_block and pool (a bad --prefill: unique::Error).
  void apply(AttentionConfig& cfg) const;
};
void add_prefill_flags(CLI::App& app, PrefillFlags& f);
// A unisparse prefill's settings: "top-p 0.95, block 64, pool 8" or "top-k 36 blocks, block 64, pool 8".
std::string prefill_settings(const AttentionConfig& cfg);
// "dense", or "unisparse (" + prefill_settings + ")".
std::string prefill_summary(const AttentionConfig& cfg);
// `make-tiny-model`: writes a small random model directory (model_tools.cpp).
Runner add_make_tiny_model(CLI::App& app);
// `make-retrieval-model`: writes the hand-set induction model (model_tools.cpp).
Runner add_make_retrieval_model(CLI::App& app);
// `eval`: accuracy harness over estimators x budgets x page sizes (eval.cpp).
Runner add_eval(CLI::App& app);
// `make-prompt`: writes a retrieval task's prompt (make_prompt.cpp).
Runner add_make_prompt(CLI::App& app);
// The model directory of a command run without --model: $UNIQUE_MODEL, else the in-house
// demo model models/unique-demo of the source tree (or of the working directory); throws
// unique::Error naming --model when there is none. Says which on stderr as `command`.
std::string demo_model_dir(const char* command);
// `stats-recall`: selection with fp8 vs bf16 page statistics on real keys (stats_recall.cpp).
Runner add_stats_recall(CLI::App& app);
// `tokenize`: token ids of a text with a model's tokenizer.json (model_tools.cpp).
Runner add_tokenize(CLI::App& app);

}  // namespace unique::cli

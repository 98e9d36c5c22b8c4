// `unique`: command-line front end of the UNIQUE sparse-attention library.
#include <cstdio>
#include <exception>
#include <map>

#include "commands.h"
#include "unique/error.h"
#include "unique/version.h"

int main(int argc, char** argv) {
  CLI::App app{
      "unique: top-k sparse attention over a paged KV cache (UNIQUE page statistics).\n"
      "Run `unique <command> --help` for a command's flags."};
  app.set_version_flag("--version", std::string("unique ") + unique::kVersion);
  app.require_subcommand(1);
  std::map<CLI::App*, unique::cli::Runner> runners;
  auto* bench = app.add_subcommand(
      "bench-attention",
      "Synthetic decode workload (real-looking keys, planted needle pages): recall, output\n"
      "error, time per step, GB/s and speed-up over dense for every estimator (CPU).");
  runners[bench] = unique::cli::add_bench_attention(*bench);
  auto* bpre = app.add_subcommand(
      "bench-prefill",
      "Synthetic prefill workload: dense causal vs UniSparse block-sparse prefill for each top_p\n"
      "(kept key blocks, select/attention ms, speed-up, output error, mass rank correlation; CPU).");
  runners[bpre] = unique::cli::add_bench_prefill(*bpre);
#if defined(UNIQUE_WITH_ENGINE)
  auto* gen = app.add_subcommand(
      "generate", "Generate text with a Hugging Face model directory (Llama/Mistral/Qwen2/Qwen3),\n"
                  "sparse attention in the decode steps; ends with prefill and decode tokens/s.");
  runners[gen] = unique::cli::add_generate(*gen);
  auto* bdec = app.add_subcommand(
      "bench-decode", "Decode throughput of a whole model (or random weights of a named shape),\n"
                      "dense vs sparse, against the bytes-limit at the measured bandwidth.");
  runners[bdec] = unique::cli::add_bench_decode(*bdec);
  auto* tiny = app.add_subcommand("make-tiny-model",
                                  "Write a small random Llama-family model directory (no download).");
  runners[tiny] = unique::cli::add_make_tiny_model(*tiny);
  auto* rmodel = app.add_subcommand(
      "make-retrieval-model",
      "Write a 2-layer Llama model whose weights are set by hand to retrieve by induction\n"
      "(copies what followed an earlier occurrence of the last 3 tokens): the eval's default model.");
  runners[rmodel] = unique::cli::add_make_retrieval_model(*rmodel);
  auto* ev = app.add_subcommand(
      "eval", "Accuracy of every estimator x budget x page size through sparse decode: passkey, needle,\n"
              "RULER-style kv and variable tracking, perplexity, per-head attention-mass recall.");
  runners[ev] = unique::cli::add_eval(*ev);
  auto* prompt = app.add_subcommand(
      "make-prompt", "Write one prompt of the eval's retrieval tasks (passkey, needle, kv, vartrack) as text\n"
                     "and print its expected answer, e.g. for `unique generate --prompt-file`.");
  runners[prompt] = unique::cli::add_make_prompt(*prompt);
  auto* tok = app.add_subcommand("tokenize", "Token ids of a text with a model directory's tokenizer.json.");
  runners[tok] = unique::cli::add_tokenize(*tok);
  auto* srec = app.add_subcommand(
      "stats-recall", "fp8 vs bf16 page statistics on a model's real keys: overlap of the selections and the\n"
                      "attention-mass recall of each (passkey prompts, teacher-forced decode, every layer).");
  runners[srec] = unique::cli::add_stats_recall(*srec);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
  } catch (const unique::Error& e) {
    std::fprintf(stderr, "unique: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unique: failed: %s\n", e.what());
    return 1;
  }
  return 0;
}

// The prompt-attention flags of `generate`, `bench-decode` and `eval` (one place, one wording).
#include "commands.h"

namespace unique::cli {

void add_prefill_flags(CLI::App& app, std::string& mode, float& top_p, int& block, int& pool) {
  app.add_option("--prefill", mode,
                 "Prompt (prefill) attention: dense = causal over every key | unisparse = per query block keep "
                 "only the key blocks that hold --prefill-top-p of the attention mass estimated on pooled "
                 "composite tokens (UniSparse); --dense-layers stay dense")
      ->capture_default_str();
  app.add_option("--prefill-top-p", top_p,
                 "unisparse: estimated attention mass each query block keeps, in (0, 1]; 1 keeps every block "
                 "(= dense). Not --top-p, which is the sampler's nucleus mass")
      ->capture_default_str();
  app.add_option("--prefill-block", block, "unisparse: query/key block in tokens (a multiple of 16 in 16..256)")
      ->capture_default_str();
  app.add_option("--pool", pool,
                 "unisparse: consecutive tokens averaged into one composite token (divides --prefill-block); "
                 "also the block of the composite decode estimator")
      ->capture_default_str();
}

}  // namespace unique::cli

// The prompt-attention flags of `generate`, `bench-decode` and `eval` (one place, one wording).
#include <cstdio>

#include "commands.h"

namespace unique::cli {

void PrefillFlags::apply(AttentionConfig& cfg) const {
  cfg.prefill = parse_prefill(mode);
  cfg.top_p = top_p;
  cfg.prefill_top_k = top_k;
  cfg.prefill_block = block;
  cfg.pool = pool;
}

void add_prefill_flags(CLI::App& app, PrefillFlags& f) {
  app.add_option("--prefill", f.mode,
                 "Prompt (prefill) attention: dense = causal over every key | unisparse = per query block keep "
                 "only the key blocks that hold --prefill-top-p of the attention mass estimated on pooled "
                 "composite tokens (UniSparse); --dense-layers stay dense")
      ->capture_default_str();
  app.add_option("--prefill-top-p", f.top_p,
                 "unisparse: estimated attention mass each query block keeps, in (0, 1]; 1 keeps every block "
                 "(= dense). Not --top-p, which is the sampler's nucleus mass")
      ->capture_default_str();
  app.add_option("--prefill-top-k", f.top_k,
                 "unisparse: keep a fixed number of key blocks per query block instead (>= 2: block 0 and the "
                 "diagonal, then the heaviest by the same estimate): the fixed-budget baseline; 0 = use "
                 "--prefill-top-p")
      ->capture_default_str();
  app.add_option("--prefill-block", f.block, "unisparse: query/key block in tokens (a multiple of 16 in 16..256)")
      ->capture_default_str();
  app.add_option("--pool", f.pool,
                 "unisparse: consecutive tokens averaged into one composite token (divides --prefill-block); "
                 "also the block of the composite decode estimator")
      ->capture_default_str();
}

std::string prefill_settings(const AttentionConfig& cfg) {
  char b[96];
  if (cfg.prefill_top_k > 0)
    std::snprintf(b, sizeof b, "top-k %d blocks, block %d, pool %d", cfg.prefill_top_k, cfg.prefill_block, cfg.pool);
  else
    std::snprintf(b, sizeof b, "top-p %.2f, block %d, pool %d", cfg.top_p, cfg.prefill_block, cfg.pool);
  return b;
}

std::string prefill_summary(const AttentionConfig& cfg) {
  if (cfg.prefill != PrefillMode::unisparse) return to_string(cfg.prefill);
  return "unisparse (" + prefill_settings(cfg) + ")";
}

}  // namespace unique::cli

// `unique bench-prefill --model DIR --prompt-file F`: the composite-token block-mass
// estimate against the exact block mass on a real model's queries and keys. The prompt's
// first --context tokens are prefilled densely in one chunk (so every layer's queries are
// the model's own); a prefill observer hands each layer's post-RoPE queries and cached keys
// to sample_block_mass. Per layer: Spearman of estimate vs exact over the sampled query
// blocks (mean and min over heads), and for each top_p the key blocks kept and the exact
// mass they hold, next to a fixed top-k that keeps as many blocks.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "commands.h"
#include "unique/engine/engine.h"
#include "unique/engine/model.h"
#include "unique/engine/tokenizer.h"
#include "unique/error.h"
#include "unique/eval/haystack.h"
#include "unique/prefill_rank.h"

namespace unique::cli {

namespace {

// "kjv": the eval's haystack text (King James Bible, digits and references removed);
// anything else: a file's bytes as they are (source code keeps its indentation).
std::string prompt_text(const std::string& spec) {
  if (spec == "kjv") return eval::load_haystack_text("kjv");
  std::ifstream in(spec, std::ios::binary);
  if (!in) throw_arg("--prompt-file", "kjv or a readable file", spec + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct LayerSummary {
  std::vector<double> head_rho;  // mean Spearman of each head over its rows
  double pooled_rho = 0;         // Spearman of all sampled (query block, key block) masses of a head, mean over heads
  int rows = 0;                  // sampled rows per head
  // per top_p: blocks kept by top-p, visible (dense causal) blocks, exact mass kept by
  // top-p, fixed k, blocks and exact mass of top-k by the estimate, exact mass of top-k
  // by the exact mass itself (the best any k-block rule could do)
  std::vector<int64_t> kept, dense, k, k_kept;
  std::vector<double> mass_p, mass_k, mass_oracle;
  // per top_p: the smallest fixed k whose top-k by the estimate holds top-p's mean exact mass
  // (the baseline at equal accuracy), and the blocks it keeps
  std::vector<int64_t> eq_k, eq_kept;
};

LayerSummary summarize(const std::vector<BlockMassRow>& rows, int Hq, size_t n_top_p) {
  LayerSummary s;
  s.head_rho.assign(Hq, 0.0);
  std::vector<int> per_head(Hq, 0);
  for (const BlockMassRow& r : rows) {
    s.head_rho[r.head] += spearman(r.est.data(), r.exact.data(), static_cast<int>(r.est.size()));
    ++per_head[r.head];
  }
  for (int h = 0; h < Hq; ++h) s.head_rho[h] /= std::max(1, per_head[h]);
  // Pooled: one ranking of every sampled block pair of a head, so it also scores the rows'
  // scales (a far query block spreads its mass thinner), which the per-row figure ignores;
  // both are printed because the paper does not say which one it reports.
  for (int h = 0; h < Hq; ++h) {
    std::vector<float> est, exact;
    for (const BlockMassRow& r : rows)
      if (r.head == h) {
        est.insert(est.end(), r.est.begin(), r.est.end());
        exact.insert(exact.end(), r.exact.begin(), r.exact.end());
      }
    s.pooled_rho += spearman(est.data(), exact.data(), static_cast<int>(est.size())) / Hq;
  }
  s.rows = per_head.empty() ? 0 : per_head[0];
  for (size_t p = 0; p < n_top_p; ++p) {
    int64_t kept = 0, dense = 0, k_kept = 0;
    double mp = 0, mk = 0, mo = 0;
    for (const BlockMassRow& r : rows) {
      kept += static_cast<int64_t>(r.top_p_kept[p].size());
      dense += static_cast<int64_t>(r.exact.size());
      mp += kept_mass(r, r.top_p_kept[p]);
    }
    const int k = matching_k(rows, kept);
    for (const BlockMassRow& r : rows) {
      const std::vector<int> tk = top_k_blocks(r.est, k);
      k_kept += static_cast<int64_t>(tk.size());
      mk += kept_mass(r, tk);
      mo += kept_mass(r, top_k_blocks(r.exact, k));
    }
    const double n = std::max<double>(1, double(rows.size()));
    s.kept.push_back(kept);
    s.dense.push_back(dense);
    s.k.push_back(k);
    s.k_kept.push_back(k_kept);
    s.mass_p.push_back(mp / n);
    s.mass_k.push_back(mk / n);
    s.mass_oracle.push_back(mo / n);
    const int ek = equal_mass_k(rows, mp / n);
    int64_t ek_kept = 0;
    for (const BlockMassRow& r : rows) ek_kept += static_cast<int64_t>(top_k_blocks(r.est, ek).size());
    s.eq_k.push_back(ek);
    s.eq_kept.push_back(ek_kept);
  }
  return s;
}

}  // namespace

int run_bench_prefill_model(const ModelRankOptions& o) {
  UNIQUE_CHECK_ARG(!o.prompt_files.empty(), "--prompt-file", "at least one file (or kjv) with --model", "none");
  UNIQUE_CHECK_ARG(o.rank_blocks >= 0, "--rank-blocks", ">= 0 (0 = every query block)", o.rank_blocks);
  auto model = engine::Model::load(o.model_dir);
  const engine::ModelConfig& mc = model->config();
  const engine::Tokenizer tok = engine::Tokenizer::from_file(o.model_dir + "/tokenizer.json");
  const AttentionConfig& cfg = o.cfg;
  std::fprintf(stderr, "bench-prefill --model %s: %d layers, heads %d/%d, head dim %d, KV bf16, page %d, block %d, pool %d, %d threads\n",
               o.model_dir.c_str(), mc.num_layers, mc.num_heads, mc.num_kv_heads, mc.head_dim, cfg.page_size,
               cfg.prefill_block, cfg.pool, omp_get_max_threads());
  for (const std::string& file : o.prompt_files) {
    const std::string text = prompt_text(file);
    std::vector<int> all = tok.prefix_ids();
    const std::vector<int> body = tok.encode(text, false);
    all.insert(all.end(), body.begin(), body.end());
    for (int64_t L : o.contexts) {
      UNIQUE_CHECK_ARG(L >= 1 && L <= mc.max_position_embeddings, "--context",
                       detail::concat("1..max_position_embeddings (", mc.max_position_embeddings, ")"), L);
      UNIQUE_CHECK_ARG(static_cast<int64_t>(all.size()) >= L, "--prompt-file",
                       detail::concat("at least --context (", L, ") tokens"),
                       detail::concat(file, ": ", all.size(), " tokens"));
      const std::vector<int> prompt(all.begin(), all.begin() + L);
      engine::EngineOptions eo;
      eo.attention.page_size = cfg.page_size;
      eo.attention.budget_tokens = cfg.page_size;
      eo.attention.estimator = Estimator::dense;
      eo.kv_dtype = DType::bf16;  // what the eval and generate keep for 16-bit weights
      eo.stats_dtype = DType::bf16;
      eo.max_context = L;
      eo.prefill_chunk = static_cast<int>(L);  // one chunk: the observer sees every query
      engine::Engine eng(*model, eo);
      const int nqb = static_cast<int>((L + cfg.prefill_block - 1) / cfg.prefill_block);
      const std::vector<int> sample = spread_q_blocks(nqb, o.rank_blocks);
      std::vector<LayerSummary> layers(mc.num_layers);
      eng.set_prefill_observer([&](int layer, const TensorView& q, const PagedKV& kv) {
        layers[layer] = summarize(sample_block_mass(cfg, q, kv, 0, sample, o.top_ps), mc.num_heads, o.top_ps.size());
      });
      const int seq = eng.add_sequence();
      eng.prefill(seq, prompt, nullptr);
      std::printf("\n%s, %lld tokens: Spearman (composite vs exact block mass) over %zu sampled query blocks x %d heads per "
                  "layer (rho: per (head, query block) row over its visible key blocks, mean and min over heads of the heads' means; pooled: over all sampled rows of a head at once, mean over heads); kept = key blocks kept / visible blocks of those rows; mass = exact attention mass on the kept "
                  "blocks (mean over rows); top-k = fixed k blocks per row by the estimate (block 0 and diagonal "
                  "included), k matched to top-p's blocks; oracle = the k blocks of largest exact mass; equal-mass k = the "
                  "smallest fixed k whose top-k by the estimate holds top-p's mean mass, and the blocks it keeps\n",
                  file.c_str(), static_cast<long long>(L), sample.size(), mc.num_heads);
      std::printf("| layer | rho mean | rho min | rho pooled |");
      for (float p : o.top_ps)
        std::printf(" p=%.2f kept | mass | k | top-k kept | top-k mass | oracle mass | equal-mass k | its kept |", p);
      std::printf("\n|---|---|---|---|");
      for (size_t p = 0; p < o.top_ps.size(); ++p) std::printf("---|---|---|---|---|---|---|---|");
      std::printf("\n");
      std::vector<double> rho_all, pooled_all;
      for (int l = 0; l < mc.num_layers; ++l) {
        const LayerSummary& s = layers[l];
        double mean = 0, mn = 1;
        for (double r : s.head_rho) mean += r / double(s.head_rho.size()), mn = std::min(mn, r);
        rho_all.push_back(mean);
        pooled_all.push_back(s.pooled_rho);
        std::printf("| %d | %.3f | %.3f | %.3f |", l, mean, mn, s.pooled_rho);
        for (size_t p = 0; p < o.top_ps.size(); ++p)
          std::printf(" %.1f%% | %.3f | %lld | %.1f%% | %.3f | %.3f | %lld | %.1f%% |",
                      100.0 * double(s.kept[p]) / double(s.dense[p]), s.mass_p[p], static_cast<long long>(s.k[p]),
                      100.0 * double(s.k_kept[p]) / double(s.dense[p]), s.mass_k[p], s.mass_oracle[p],
                      static_cast<long long>(s.eq_k[p]), 100.0 * double(s.eq_kept[p]) / double(s.dense[p]));
        std::printf("\n");
      }
      double m = 0, mp = 0;
      for (size_t l = 0; l < rho_all.size(); ++l) m += rho_all[l] / double(rho_all.size()), mp += pooled_all[l] / double(rho_all.size());
      std::printf("mean over layers: rho %.3f, pooled %.3f\n", m, mp);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace unique::cli

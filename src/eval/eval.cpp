#include "unique/eval/eval.h"

#include <algorithm>
#include <cmath>

#include "eval/eval_internal.h"
#include "unique/error.h"
#include "unique/eval/haystack.h"

namespace unique::eval {

using unique::detail::concat;

void EvalOptions::validate() const {
  static const std::vector<std::string> known = {"passkey", "needle", "kv", "vartrack", "ppl", "recall"};
  UNIQUE_CHECK_ARG(!tasks.empty(), "--tasks", "at least one task", "none");
  for (auto& t : tasks)
    UNIQUE_CHECK_ARG(std::find(known.begin(), known.end(), t) != known.end(), "--tasks",
                     "a comma-separated subset of passkey, needle, kv, vartrack, ppl, recall", t);
  UNIQUE_CHECK_ARG(!estimators.empty(), "--estimators", "at least one estimator", "none");
  UNIQUE_CHECK_ARG(!page_sizes.empty(), "--page-sizes", "at least one page size", "none");
  for (int p : page_sizes)
    UNIQUE_CHECK_ARG(p == 16 || p == 32 || p == 64, "--page-sizes", "values among 16, 32, 64", p);
  const int maxp = *std::max_element(page_sizes.begin(), page_sizes.end());
  const bool sparse = std::any_of(estimators.begin(), estimators.end(), [](Estimator e) { return e != Estimator::dense; });
  UNIQUE_CHECK_ARG(!sparse || !budgets.empty(), "--budgets", "at least one budget", "none");
  for (int b : budgets)
    UNIQUE_CHECK_ARG(b >= maxp && b <= (1 << 24), "--budgets",
                     concat("budgets >= the largest --page-sizes value (", maxp, ")"), b);
  UNIQUE_CHECK_ARG(!contexts.empty(), "--contexts", "at least one context", "none");
  for (int64_t c : contexts) UNIQUE_CHECK_ARG(c >= 256 && c <= (int64_t(1) << 24), "--contexts", "256..16777216 tokens", c);
  UNIQUE_CHECK_ARG(!depths.empty(), "--depths", "at least one depth", "none");
  for (double d : depths)
    UNIQUE_CHECK_ARG(d >= 0 && d <= 100, "--depths", "percentages in 0..100", d);
  UNIQUE_CHECK_ARG(!seeds.empty(), "--seeds", "at least one seed", "none");
  for (auto& v : kv_variants)
    UNIQUE_CHECK_ARG(v == "multikey" || v == "multivalue", "--kv-variants", "multikey and/or multivalue", v);
  UNIQUE_CHECK_ARG(sink_pages >= 0, "--sink", ">= 0", sink_pages);
  UNIQUE_CHECK_ARG(recent_pages >= 0, "--recent", ">= 0", recent_pages);
  UNIQUE_CHECK_ARG(dense_layers >= 0, "--dense-layers", ">= 0", dense_layers);
  UNIQUE_CHECK_ARG(ppl_prefix >= 1, "--ppl-prefix", ">= 1", ppl_prefix);
  for (int64_t c : contexts)
    if (std::find(tasks.begin(), tasks.end(), "ppl") != tasks.end())
      UNIQUE_CHECK_ARG(ppl_prefix + 2 <= c, "--ppl-prefix", concat("<= the smallest context - 2 (", c - 2, ")"),
                       ppl_prefix);
  UNIQUE_CHECK_ARG(vartrack_hops >= 1 && vartrack_hops <= 8, "--vartrack-hops", "1..8", vartrack_hops);
  UNIQUE_CHECK_ARG(prefill_top_p > 0 && prefill_top_p <= 1, "--prefill-top-p", "in (0, 1]", prefill_top_p);
  UNIQUE_CHECK_ARG(prefill_top_k == 0 || prefill_top_k >= 2, "--prefill-top-k",
                   "0 (use --prefill-top-p) or >= 2", prefill_top_k);
  UNIQUE_CHECK_ARG(prefill_block >= 16 && prefill_block <= 256 && prefill_block % 16 == 0, "--prefill-block",
                   "a multiple of 16 in 16..256", prefill_block);
  UNIQUE_CHECK_ARG(pool >= 1 && prefill_block % pool == 0, "--pool",
                   concat("a divisor of --prefill-block (", prefill_block, ")"), pool);
  if (device == Device::cuda) {
    UNIQUE_CHECK_ARG(std::find(tasks.begin(), tasks.end(), "recall") == tasks.end(), "--tasks",
                     "no `recall` with --device cuda (it reads queries and keys on the host: run it on the CPU)",
                     "recall");
    UNIQUE_CHECK_ARG(kv_dtype == "auto" || kv_dtype == "bf16" || kv_dtype == "fp16", "--kv-dtype",
                     "auto, bf16 or fp16 with --device cuda", kv_dtype);
  }
}

namespace detail {

std::vector<std::pair<Estimator, int>> sweep_runs(const EvalOptions& o) {
  std::vector<std::pair<Estimator, int>> v;
  for (Estimator e : o.estimators) {
    if (e == Estimator::dense) {
      v.push_back({e, 0});
      continue;
    }
    for (int b : o.budgets) v.push_back({e, b});
  }
  return v;
}

// The prompt's attention (--prefill and its settings) into c.
static void set_prefill(AttentionConfig& c, const EvalOptions& o) {
  c.prefill = o.prefill;
  c.top_p = o.prefill_top_p;
  c.prefill_top_k = o.prefill_top_k;
  c.prefill_block = o.prefill_block;
  c.pool = o.pool;
}

AttentionConfig attention_for(const Run& r, int page, Estimator e, int budget, uint64_t seed) {
  AttentionConfig c;
  c.page_size = page;
  c.budget_tokens = e == Estimator::dense ? page : budget;
  c.estimator = e;
  c.sink_pages = r.opt.sink_pages;
  c.recent_pages = r.opt.recent_pages;
  c.seed = seed;
  set_prefill(c, r.opt);  // the prompt's attention too: set_attention replaces the whole config
  return c;
}

Row base_row(const Run& r, const std::string& task, const std::string& variant, const SampleSpec& s, int64_t tokens,
             Estimator e, int budget, int page, bool has_depth) {
  Row row;
  row["task"] = task;
  row["variant"] = variant;
  row["model"] = r.model_name;
  row["context"] = s.context;
  row["tokens"] = tokens;
  row["depth"] = has_depth ? Row(std::round(s.depth * 1000.0) / 10.0) : Row(nullptr);
  row["seed"] = s.seed;
  row["estimator"] = to_string(e);
  row["budget"] = budget;
  row["page_size"] = page;
  row["dense_layers"] = r.opt.dense_layers;
  row["sink"] = r.opt.sink_pages;
  row["recent"] = r.opt.recent_pages;
  row["kv_dtype"] = to_string(r.kv_dtype);
  if (r.opt.device == Device::cuda) row["device"] = "cuda";  // CPU rows keep their old keys
  row["prefill"] = to_string(r.opt.prefill);
  if (r.opt.prefill == PrefillMode::unisparse) {
    // Rounded: a float's widening (0.9f = 0.899999976...) would leak into the row key.
    row["prefill_top_p"] = std::round(double(r.opt.prefill_top_p) * 1e4) / 1e4;
    if (r.opt.prefill_top_k > 0) row["prefill_top_k"] = r.opt.prefill_top_k;  // overrides top-p
    row["prefill_block"] = r.opt.prefill_block;
    row["pool"] = r.opt.pool;
  }
  if (e == Estimator::composite) row["pool"] = r.opt.pool;  // its block: part of what was measured
  return row;
}

std::unique_ptr<engine::Engine> make_engine(const Run& r, int page, int64_t max_context) {
  engine::EngineOptions eo;
  eo.attention.page_size = page;
  eo.attention.budget_tokens = page;
  eo.attention.estimator = Estimator::dense;
  eo.keep_all_stats = true;  // one prefill serves every estimator
  eo.device = r.opt.device;
  eo.kv_dtype = r.kv_dtype;
  eo.stats_dtype = r.kv_dtype;
  eo.max_batch = 2;  // the prefilled sequence and one fork
  eo.max_context = max_context;
  eo.prefill_chunk = 512;
  eo.dense_layers = r.opt.dense_layers;
  set_prefill(eo.attention, r.opt);
  return std::make_unique<engine::Engine>(r.model, eo);
}

std::string utf8_or_marks(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (ok) {
      out.append(s, i, n);
      i += n;
    } else {
      out.push_back('?');
      ++i;
    }
  }
  return out;
}

void set_prefill_fields(Row& row, const engine::Engine& eng, double prefill_s) {
  row["prefill_s"] = prefill_s;
  const engine::Engine::PrefillStats& ps = eng.prefill_stats();
  if (ps.blocks_dense > 0) row["prefill_kept"] = double(ps.blocks_kept) / double(ps.blocks_dense);
}

int argmax(const float* logits, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

}  // namespace detail

EvalSummary run_eval(const EvalOptions& opt, ResultsFile& out, std::FILE* progress) {
  opt.validate();
  const auto t0 = std::chrono::steady_clock::now();
  auto model = engine::Model::load(opt.model_dir);
  const engine::ModelConfig& mc = model->config();
  const engine::Tokenizer tok = engine::Tokenizer::from_file(opt.model_dir + "/tokenizer.json");
  for (int64_t c : opt.contexts)
    UNIQUE_CHECK_ARG(c + 64 <= mc.max_position_embeddings, "--contexts",
                     concat("<= max_position_embeddings - 64 of ", opt.model_dir, " (", mc.max_position_embeddings - 64,
                            ")"),
                     c);
  const DType wdt = model->layers().empty() ? DType::f32 : model->layers()[0].q.dtype;
  DType kvdt = wdt == DType::f32 && opt.device == Device::cpu ? DType::f32 : DType::bf16;
  if (opt.kv_dtype != "auto") kvdt = parse_dtype(opt.kv_dtype);
  std::string name = opt.model_dir;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  name = name.substr(name.find_last_of('/') + 1);
  EvalSummary sum;
  detail::Run run{opt, *model, tok, name, kvdt, out, progress, sum};
  const Haystack hay(load_haystack_text(opt.haystack), tok);
  for (const std::string& task : opt.tasks)
    for (int64_t ctx : opt.contexts)
      for (size_t di = 0; di < opt.depths.size(); ++di)
        for (uint64_t seed : opt.seeds) {
          const bool has_depth = task != "ppl" && task != "vartrack";
          if (!has_depth && di > 0) continue;  // depth does not apply: one sample per seed
          SampleSpec spec{ctx, has_depth ? opt.depths[di] / 100.0 : 0.0, seed};
          std::vector<Sample> samples;
          if (task == "passkey" || task == "recall") samples.push_back(make_passkey(hay, tok, spec));
          else if (task == "needle") samples.push_back(make_needle(hay, tok, spec));
          else if (task == "kv")
            for (auto& v : opt.kv_variants) samples.push_back(make_kv(hay, tok, spec, v == "multivalue"));
          else if (task == "vartrack") samples.push_back(make_vartrack(hay, tok, spec, opt.vartrack_hops));
          for (int page : opt.page_sizes) {
            if (task == "ppl") detail::run_ppl(run, spec, page, hay);
            else if (task == "recall") detail::run_recall(run, samples[0], spec, page);
            else
              for (auto& s : samples) detail::run_retrieval(run, s, spec, page, has_depth);
          }
        }
  sum.seconds = detail::seconds_since(t0);
  return sum;
}

}  // namespace unique::eval

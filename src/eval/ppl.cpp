// Perplexity of haystack text through sparse decode (teacher forcing): the first
// ppl_prefix tokens are prefilled densely, then every token is fed to a decode step and
// the logits score the next one.
#include <cmath>

#include "eval/eval_internal.h"
#include "unique/error.h"

namespace unique::eval::detail {

void run_ppl(Run& r, const SampleSpec& spec, int page, const Haystack& hay) {
  std::vector<int> toks = r.tok.prefix_ids();
  const std::vector<int> h = hay.tokens(spec.context - static_cast<int64_t>(toks.size()), spec.seed);
  toks.insert(toks.end(), h.begin(), h.end());
  const int64_t n = static_cast<int64_t>(toks.size()), p = r.opt.ppl_prefix;
  std::vector<std::pair<Estimator, int>> todo;
  for (auto [e, b] : sweep_runs(r.opt)) {
    if (r.out.has(row_key(base_row(r, "ppl", "", spec, n, e, b, page, false)))) ++r.sum.skipped;
    else todo.push_back({e, b});
  }
  if (todo.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  auto eng = make_engine(r, page, n);
  const int base = eng->add_sequence();
  eng->prefill(base, std::vector<int>(toks.begin(), toks.begin() + p), nullptr);
  const double prefill_s = seconds_since(t0);
  const int V = r.model.config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(V));
  std::string line;
  for (auto [e, b] : todo) {
    const auto t1 = std::chrono::steady_clock::now();
    const int seq = eng->fork_sequence(base);
    eng->set_attention(attention_for(r, page, e, b, spec.seed), r.opt.dense_layers);
    double nll = 0;
    for (int64_t t = p; t + 1 < n; ++t) {
      eng->decode({seq}, {toks[size_t(t)]}, logits.data());
      double mx = logits[0];
      for (int i = 1; i < V; ++i) mx = std::max(mx, double(logits[size_t(i)]));
      double z = 0;
      for (int i = 0; i < V; ++i) z += std::exp(double(logits[size_t(i)]) - mx);
      nll += mx + std::log(z) - double(logits[size_t(toks[size_t(t + 1)])]);
    }
    eng->free_sequence(seq);
    const int64_t scored = n - p - 1;
    Row row = base_row(r, "ppl", "", spec, n, e, b, page, false);
    row["nll"] = nll / double(scored);
    row["ppl"] = std::exp(nll / double(scored));
    row["scored_tokens"] = scored;
    row["time_s"] = seconds_since(t1);
    set_prefill_fields(row, *eng, prefill_s);
    r.out.append(row);
    ++r.sum.written;
    line += unique::detail::concat(run_label(e, b), "=", std::round(row["ppl"].get<double>() * 100) / 100);
  }
  if (r.progress)
    std::fprintf(r.progress, "[ppl ctx %lld seed %llu page %d] %lld tokens scored by decode |%s\n",
                 static_cast<long long>(spec.context), static_cast<unsigned long long>(spec.seed), page,
                 static_cast<long long>(n - p - 1), line.c_str());
}

}  // namespace unique::eval::detail

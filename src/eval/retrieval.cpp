// Retrieval tasks (passkey, needle, kv, vartrack) for one sample and page size: one dense
// prefill, then every estimator x budget decodes the answers on a fork of it.
#include <algorithm>

#include "eval/eval_internal.h"
#include "unique/error.h"

namespace unique::eval::detail {

void run_retrieval(Run& r, const Sample& s, const SampleSpec& spec, int page, bool has_depth) {
  const auto runs = sweep_runs(r.opt);
  const int64_t n = static_cast<int64_t>(s.prompt.size());
  std::vector<std::pair<Estimator, int>> todo;
  for (auto [e, b] : runs) {
    const Row row = base_row(r, s.task, s.variant, spec, n, e, b, page, has_depth);
    if (r.out.has(row_key(row))) ++r.sum.skipped;
    else todo.push_back({e, b});
  }
  if (todo.empty()) return;
  int64_t extra = 1;
  for (auto& h : s.hops) extra += static_cast<int64_t>(h.query.size()) + h.max_new_tokens;
  const auto t0 = std::chrono::steady_clock::now();
  auto eng = make_engine(r, page, n + extra);
  const int base = eng->add_sequence();
  // All but the last prompt token: the last one is decoded, so even the first answer
  // token comes from sparse attention.
  eng->prefill(base, std::vector<int>(s.prompt.begin(), s.prompt.end() - 1), nullptr);
  const double prefill_s = seconds_since(t0);
  const int V = r.model.config().vocab_size;
  const auto& eos = r.model.config().eos_token_ids;
  std::vector<float> logits(static_cast<size_t>(V));
  std::string line;
  for (auto [e, b] : todo) {
    const auto t1 = std::chrono::steady_clock::now();
    const int seq = eng->fork_sequence(base);
    eng->set_attention(attention_for(r, page, e, b, spec.seed), r.opt.dense_layers);
    int pending = s.prompt.back();
    double score = 0;
    bool all = true;
    std::string outputs, expected;
    for (size_t h = 0; h < s.hops.size(); ++h) {
      const Hop& hop = s.hops[h];
      for (int t : hop.query) {
        eng->decode({seq}, {pending}, logits.data());
        pending = t;
      }
      // A non-final hop generates exactly its answer's tokens: they stay in the context
      // that the next question extends.
      const bool last = h + 1 == s.hops.size();
      const int budget = last ? hop.max_new_tokens : std::max(1, hop.max_new_tokens - 2);
      std::vector<int> gen;
      for (int i = 0; i < budget; ++i) {
        eng->decode({seq}, {pending}, logits.data());
        pending = argmax(logits.data(), V);
        gen.push_back(pending);
        if (std::find(eos.begin(), eos.end(), pending) != eos.end()) break;
      }
      // A config vocabulary may be padded past the tokenizer's: such ids have no text.
      std::vector<int> known;
      for (int id : gen)
        if (id < r.tok.vocab_size()) known.push_back(id);
      const std::string text = utf8_or_marks(r.tok.decode(known, true));
      const double sc = score_hop(hop, text);
      if (all) score += sc / double(s.hops.size());  // hops resolved in a row
      all = all && sc == 1.0;
      if (h) outputs += " | ", expected += " | ";
      outputs += text;
      expected += hop.expected;
    }
    eng->free_sequence(seq);
    Row row = base_row(r, s.task, s.variant, spec, n, e, b, page, has_depth);
    row["score"] = score;
    row["correct"] = all;
    row["expected"] = expected;
    row["output"] = outputs;
    row["copyable"] = s.copyable;
    row["time_s"] = seconds_since(t1);
    set_prefill_fields(row, *eng, prefill_s);
    r.out.append(row);
    ++r.sum.written;
    line += unique::detail::concat(run_label(e, b), "=", score);
  }
  if (r.progress)
    std::fprintf(r.progress, "[%s%s%s ctx %lld%s seed %llu page %d] prefill %.1f s |%s\n", s.task.c_str(),
                 s.variant.empty() ? "" : "/", s.variant.c_str(), static_cast<long long>(spec.context),
                 has_depth ? unique::detail::concat(" depth ", spec.depth * 100).c_str() : "",
                 static_cast<unsigned long long>(spec.seed), page, prefill_s, line.c_str());
}

}  // namespace unique::eval::detail

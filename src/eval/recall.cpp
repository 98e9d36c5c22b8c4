// Attention-mass recall and output error of every estimator's selection, per layer and
// head, on the model's real queries and keys: the passkey prompt is prefilled, then the
// answer is decoded densely (teacher forced) and each step's queries are scored by every
// estimator x budget without changing the trajectory.
#include <cmath>
#include <map>

#include "eval/eval_internal.h"
#include "unique/decode.h"
#include "unique/error.h"
#include "unique/metrics.h"
#include "unique/selection.h"

namespace unique::eval::detail {

namespace {


struct Acc {
  double recall = 0, err = 0;
  int steps = 0;
};

}  // namespace

void run_recall(Run& r, const Sample& s, const SampleSpec& spec, int page) {
  const engine::ModelConfig& mc = r.model.config();
  const int L = mc.num_layers, Hq = mc.num_heads, Hk = mc.num_kv_heads, D = mc.head_dim, group = Hq / Hk;
  const int64_t n = static_cast<int64_t>(s.prompt.size());
  std::vector<std::pair<Estimator, int>> todo;
  for (auto [e, b] : sweep_runs(r.opt)) {
    bool missing = false;
    for (int l = 0; l < L && !missing; ++l)
      for (int h = 0; h < Hq && !missing; ++h) {
        Row row = base_row(r, "recall", "", spec, n, e, b, page, true);
        row["layer"] = l;
        row["head"] = h;
        missing = !r.out.has(row_key(row));
      }
    if (missing) todo.push_back({e, b});
    else r.sum.skipped += int64_t(L) * Hq;
  }
  if (todo.empty()) return;
  std::vector<int> steps = {s.prompt.back()};
  const std::vector<int> ans = r.tok.encode(" " + s.hops[0].expected, false);
  steps.insert(steps.end(), ans.begin(), ans.end() - 1);
  const auto t0 = std::chrono::steady_clock::now();
  auto eng = make_engine(r, page, n + static_cast<int64_t>(steps.size()) + 1);
  const int seq = eng->add_sequence();
  eng->prefill(seq, std::vector<int>(s.prompt.begin(), s.prompt.end() - 1), nullptr);
  eng->set_attention(attention_for(r, page, Estimator::dense, 0, spec.seed), r.opt.dense_layers);
  std::map<std::tuple<size_t, int, int>, Acc> acc;
  std::vector<int32_t> pages, counts(static_cast<size_t>(Hk));
  std::vector<float> sparse(static_cast<size_t>(Hq) * D);
  eng->set_decode_observer([&](int layer, const TensorView& q, const PagedKV& kv, const TensorView& out) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    std::vector<std::vector<double>> mass(static_cast<size_t>(Hq));
    for (int h = 0; h < Hq; ++h) mass[size_t(h)] = page_attention_mass(q, kv, 0, h, scale);
    for (size_t i = 0; i < todo.size(); ++i) {
      auto [e, b] = todo[i];
      if (e == Estimator::dense) {
        for (int h = 0; h < Hq; ++h) {
          Acc& a = acc[{i, layer, h}];
          a.recall += 1.0;
          a.steps += 1;
        }
        continue;
      }
      const AttentionConfig cfg = attention_for(r, page, e, b, spec.seed);
      const int ms = std::max(1, cfg.max_selected(max_seq_pages(kv)));
      pages.assign(static_cast<size_t>(Hk) * ms, -1);
      Selection sel{pages.data(), counts.data(), 1, Hk, ms, Device::cpu};
      select_pages(cfg, q, kv, sel);
      paged_decode(cfg, q, kv, &sel, make_view(sparse.data(), DType::f32, {1, Hq, D}), TensorView{});
      for (int h = 0; h < Hq; ++h) {
        const int kh = h / group;
        double rec = 0, num = 0, den = 0;
        for (int c = 0; c < counts[size_t(kh)]; ++c) rec += mass[size_t(h)][size_t(pages[size_t(kh) * ms + c])];
        for (int d = 0; d < D; ++d) {
          const double o = load_as_float(out.data, out.dtype, h * out.stride[1] + d * out.stride[2]);
          const double x = sparse[size_t(h) * D + d] - o;
          num += x * x;
          den += o * o;
        }
        Acc& a = acc[{i, layer, h}];
        a.recall += rec;
        a.err += den > 0 ? std::sqrt(num / den) : std::sqrt(num);
        a.steps += 1;
      }
    }
  });
  std::vector<float> logits(static_cast<size_t>(mc.vocab_size));
  for (int t : steps) eng->decode({seq}, {t}, logits.data());
  eng->set_decode_observer(nullptr);
  const double secs = seconds_since(t0);
  std::string line;
  for (size_t i = 0; i < todo.size(); ++i) {
    auto [e, b] = todo[i];
    double mean = 0;
    for (int l = 0; l < L; ++l)
      for (int h = 0; h < Hq; ++h) {
        const Acc& a = acc[{i, l, h}];
        Row row = base_row(r, "recall", "", spec, n, e, b, page, true);
        row["layer"] = l;
        row["head"] = h;
        row["recall"] = std::min(1.0, a.recall / a.steps);
        row["out_err"] = a.err / a.steps;
        row["steps"] = a.steps;
        row["time_s"] = secs / double(todo.size() * L * Hq);
        mean += a.recall / a.steps / double(L * Hq);
        if (!r.out.has(row_key(row))) {
          r.out.append(row);
          ++r.sum.written;
        } else {
          ++r.sum.skipped;
        }
      }
    line += unique::detail::concat(run_label(e, b), "=", std::round(mean * 1000) / 1000);
  }
  if (r.progress)
    std::fprintf(r.progress, "[recall ctx %lld depth %g seed %llu page %d] %zu steps, mean recall |%s\n",
                 static_cast<long long>(spec.context), spec.depth * 100, static_cast<unsigned long long>(spec.seed),
                 page, steps.size(), line.c_str());
}

}  // namespace unique::eval::detail

// `unique stats-recall`: what storing the page statistics in fp8 does to selection, on a
// model's real queries and keys. The passkey prompt of the eval is prefilled (CPU engine,
// bf16 KV), then the answer is decoded densely (teacher forced); at every step and layer
// the statistics of the same keys are rebuilt once in bf16 and once in fp8
// (recompute_page_stats), and each estimator x budget selects pages from both. Reported
// per (page size, estimator, budget), averaged over steps, layers and heads:
//   overlap    |fp8 pages & bf16 pages| / |bf16 pages|, over the top-k pages only (the
//              always-kept sink/recent pages excluded)
//   same       fraction of (step, layer, KV head) rows whose selections are identical
//   recall     attention mass (softmax of the exact logits, double) on the selected pages,
//              for the bf16 and the fp8 selection; per (step, layer, query head) the
//              difference fp8 - bf16: its extremes and the share of |difference| > 0.05
//   bf16 vs fp32: the overlap of the bf16 selection with the fp32 statistics' one, for scale
// --synthetic CONTEXT: the same on include/unique/synthetic.h's workload instead (batch 4,
// 32 query / 8 KV heads, head_dim 128, its queries and planted needle pages), one step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "commands.h"
#include "unique/engine/engine.h"
#include "unique/engine/model.h"
#include "unique/engine/tokenizer.h"
#include "unique/error.h"
#include "unique/eval/haystack.h"
#include "unique/eval/tasks.h"
#include "unique/metrics.h"
#include "unique/page_stats.h"
#include "unique/selection.h"
#include "unique/synthetic.h"

namespace unique::cli {

namespace {

struct Options {
  std::string model, haystack = "kjv", markdown;
  std::vector<int64_t> contexts = {8000};
  std::vector<double> depths = {10, 50, 90};
  std::vector<uint64_t> seeds = {0};
  std::vector<int> page_sizes = {16, 32, 64};
  std::vector<int> budgets = {256, 512, 1024, 2048};
  std::vector<std::string> estimators = {"unique", "quest"};
  int sink = 1, recent = 1;
  int64_t synthetic = 0;  // > 0: the synthetic workload of this context instead of the model
};

struct Acc {
  double overlap = 0, overlap32 = 0, same = 0, rec16 = 0, rec8 = 0, min_delta = INFINITY, max_delta = -INFINITY;
  int64_t rows = 0, head_rows = 0, big = 0;
};

// |a & b| / |b| over the non-forced pages of b.
double topk_overlap(const int32_t* a, int na, const int32_t* b, int nb, int sink, int n, int recent) {
  int topk = 0, common = 0;
  for (int i = 0; i < nb; ++i) {
    const int j = b[i];
    if (j < sink || j >= n - recent) continue;
    ++topk;
    common += std::find(a, a + na, j) != a + na;
  }
  return topk ? double(common) / topk : 1.0;
}


// Statistics storage of one dtype beside the engine's cache, rebuilt from its keys.
struct SideStats {
  std::vector<uint8_t> mean, std, kmin, kmax;
  std::vector<float> scale;
  PagedKV view(const PagedKV& kv, DType st) {
    const size_t n = size_t(kv.num_pages) * kv.num_kv_heads * kv.head_dim * dtype_size(st);
    for (auto* v : {&mean, &std, &kmin, &kmax}) v->resize(n);
    scale.resize(size_t(kv.num_pages) * kv.num_kv_heads * 2);
    PagedKV o = kv;
    o.stats_dtype = st;
    o.mean = mean.data();
    o.std = std.data();
    o.kmin = kmin.data();
    o.kmax = kmax.data();
    o.stats_scale = st == DType::e4m3 ? scale.data() : nullptr;
    recompute_page_stats(o);
    return o;
  }
};

// Selections from bf16, fp8 and fp32 statistics of kv's keys for every estimator x budget,
// accumulated into acc[(page size, estimator, budget)].
void compare(const Options& o, const std::vector<Estimator>& ests, const TensorView& q, const PagedKV& kv, int group,
             std::map<std::tuple<int, int, int>, Acc>& acc) {
  const int Hk = kv.num_kv_heads, Hq = Hk * group, P = kv.page_size;
  SideStats s16, s8, s32;
  const PagedKV k16 = s16.view(kv, DType::bf16), k8 = s8.view(kv, DType::e4m3), k32 = s32.view(kv, DType::f32);
  for (int b = 0; b < kv.batch; ++b) {
    std::vector<std::vector<double>> mass(Hq);
    for (int h = 0; h < Hq; ++h) mass[h] = page_attention_mass(q, kv, b, h, 1.0 / std::sqrt(double(kv.head_dim)));
    const int n = seq_pages(kv, b);
    for (size_t ei = 0; ei < ests.size(); ++ei)
      for (int budget : o.budgets) {
        AttentionConfig cfg;
        cfg.page_size = P;
        cfg.budget_tokens = budget;
        cfg.estimator = ests[ei];
        cfg.sink_pages = o.sink;
        cfg.recent_pages = o.recent;
        const int ms = std::max(1, cfg.max_selected(max_seq_pages(kv)));
        const int B = kv.batch;
        std::vector<int32_t> p16(size_t(B) * Hk * ms), c16(size_t(B) * Hk), p8(p16.size()), c8(c16.size()),
            p32(p16.size()), c32(c16.size());
        select_pages(cfg, q, k16, Selection{p16.data(), c16.data(), B, Hk, ms, Device::cpu});
        select_pages(cfg, q, k8, Selection{p8.data(), c8.data(), B, Hk, ms, Device::cpu});
        select_pages(cfg, q, k32, Selection{p32.data(), c32.data(), B, Hk, ms, Device::cpu});
        Acc& a = acc[{P, int(ei), budget}];
        const int recent = std::max(o.recent, 1);
        for (int h = 0; h < Hk; ++h) {
          const size_t r = size_t(b) * Hk + h;
          const int32_t* a16 = p16.data() + r * ms;
          const int32_t* a8 = p8.data() + r * ms;
          a.overlap += topk_overlap(a8, c8[r], a16, c16[r], o.sink, n, recent);
          a.overlap32 += topk_overlap(a16, c16[r], p32.data() + r * ms, c32[r], o.sink, n, recent);
          a.same += std::equal(a16, a16 + c16[r], a8, a8 + c8[r]) && c16[r] == c8[r];
          ++a.rows;
          for (int i = 0; i < group; ++i) {
            const std::vector<double>& m = mass[h * group + i];
            double r16 = 0, r8 = 0;
            for (int c = 0; c < c16[r]; ++c) r16 += m[a16[c]];
            for (int c = 0; c < c8[r]; ++c) r8 += m[a8[c]];
            a.rec16 += std::min(1.0, r16);
            a.rec8 += std::min(1.0, r8);
            a.min_delta = std::min(a.min_delta, r8 - r16);
            a.max_delta = std::max(a.max_delta, r8 - r16);
            a.big += std::fabs(r8 - r16) > 0.05;
            ++a.head_rows;
          }
        }
      }
  }
}

std::string table(const std::string& title, const std::vector<Estimator>& ests,
                  const std::map<std::tuple<int, int, int>, Acc>& acc) {
  std::string md = title +
      "| page | estimator | budget | top-k overlap fp8 vs bf16 | (bf16 vs fp32) | identical rows fp8/bf16 | "
      "mass recall bf16 | mass recall fp8 | fp8 - bf16 min / max | share abs > 0.05 |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& [key, a] : acc) {
    const auto [P, ei, budget] = key;
    char line[256];
    std::snprintf(line, sizeof line, "| %d | %s | %d | %.4f | %.4f | %.3f | %.4f | %.4f | %+.3f / %+.3f | %.4f |\n", P,
                  to_string(ests[ei]), budget, a.overlap / a.rows, a.overlap32 / a.rows, a.same / a.rows,
                  a.rec16 / a.head_rows, a.rec8 / a.head_rows, a.min_delta, a.max_delta, double(a.big) / a.head_rows);
    md += line;
  }
  return md;
}

void emit(const Options& o, const std::string& md) {
  std::printf("%s", md.c_str());
  if (!o.markdown.empty()) {
    std::FILE* f = std::fopen(o.markdown.c_str(), "a");
    UNIQUE_CHECK_ARG(f != nullptr, "--markdown", "a writable file", o.markdown);
    std::fprintf(f, "%s\n", md.c_str());
    std::fclose(f);
  }
}

int run_synthetic(const Options& o, const std::vector<Estimator>& ests) {
  std::map<std::tuple<int, int, int>, Acc> acc;
  int nseeds = 0;
  for (uint64_t seed : o.seeds)
    for (int P : o.page_sizes) {
      SyntheticSpec sp;
      sp.batch = 4;
      sp.context = o.synthetic;
      sp.page_size = P;
      sp.dtype = DType::bf16;
      sp.stats_dtype = DType::bf16;
      sp.seed = seed;
      const SyntheticWorkload w = make_synthetic_workload(sp);
      compare(o, ests, w.q_view(sp), w.kv(), sp.num_qo_heads / sp.num_kv_heads, acc);
      std::fprintf(stderr, "[stats-recall synthetic ctx %lld seed %llu page %d]\n", static_cast<long long>(sp.context),
                   static_cast<unsigned long long>(seed), P);
      nseeds += P == o.page_sizes[0];
    }
  emit(o, table(unique::detail::concat("fp8 vs bf16 page statistics on the synthetic workload (include/unique/synthetic.h): "
                                       "batch 4 x ", o.synthetic, " tokens, 32 query / 8 KV heads, head_dim 128, bf16 keys, ",
                                       nseeds, " seed(s), one decode query per sequence.\n\n"),
                ests, acc));
  return 0;
}

int run(const Options& o) {
  std::vector<Estimator> ests;
  for (const std::string& e : o.estimators) ests.push_back(parse_estimator(e));
  if (o.synthetic > 0) return run_synthetic(o, ests);
  const std::string dir = o.model.empty() ? demo_model_dir("stats-recall") : o.model;
  auto model = engine::Model::load(dir);
  const engine::ModelConfig& mc = model->config();
  const engine::Tokenizer tok = engine::Tokenizer::from_file(dir + "/tokenizer.json");
  const eval::Haystack hay(eval::load_haystack_text(o.haystack), tok);
  const int Hq = mc.num_heads, Hk = mc.num_kv_heads, D = mc.head_dim, group = Hq / Hk;
  std::map<std::tuple<int, int, int>, Acc> acc;  // (page, estimator index, budget)
  int64_t steps_total = 0;
  for (int64_t ctx : o.contexts)
    for (double depth : o.depths)
      for (uint64_t seed : o.seeds) {
        const eval::Sample s = eval::make_passkey(hay, tok, eval::SampleSpec{ctx, depth / 100.0, seed});
        std::vector<int> steps = {s.prompt.back()};
        const std::vector<int> ans = tok.encode(" " + s.hops[0].expected, false);
        steps.insert(steps.end(), ans.begin(), ans.end() - 1);
        for (int P : o.page_sizes) {
          engine::EngineOptions eo;
          eo.attention.page_size = P;
          eo.attention.budget_tokens = P;
          eo.attention.estimator = Estimator::dense;
          eo.keep_all_stats = true;
          eo.kv_dtype = DType::bf16;
          eo.stats_dtype = DType::bf16;
          eo.max_context = static_cast<int64_t>(s.prompt.size() + steps.size() + 1);
          eo.prefill_chunk = 512;
          engine::Engine eng(*model, eo);
          const int seq = eng.add_sequence();
          eng.prefill(seq, std::vector<int>(s.prompt.begin(), s.prompt.end() - 1), nullptr);
          eng.set_decode_observer([&](int, const TensorView& q, const PagedKV& kv, const TensorView&) {
            compare(o, ests, q, kv, group, acc);
          });
          std::vector<float> logits(mc.vocab_size);
          for (int t : steps) eng.decode({seq}, {t}, logits.data());
          steps_total += static_cast<int64_t>(steps.size());
          std::fprintf(stderr, "[stats-recall ctx %lld depth %g seed %llu page %d] %zu steps x %d layers\n",
                       static_cast<long long>(ctx), depth, static_cast<unsigned long long>(seed), P, steps.size(),
                       mc.num_layers);
        }
      }
  emit(o, table(unique::detail::concat(
                    "fp8 vs bf16 page statistics on ", dir, " (", mc.num_layers, " layers, ", Hq, " query / ", Hk,
                    " KV heads, head_dim ", D, ", bf16 keys): passkey prompts of ", o.contexts.size(),
                    " context(s) x ", o.depths.size(), " depth(s) x ", o.seeds.size(), " seed(s), ",
                    steps_total / std::max<size_t>(1, o.page_sizes.size()),
                    " teacher-forced decode steps per page size, every layer.\n\n"),
                ests, acc));
  return 0;
}

}  // namespace

Runner add_stats_recall(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("--model", o->model, "Model directory (default: $UNIQUE_MODEL, else models/unique-demo)");
  app.add_option("--contexts", o->contexts, "Prompt lengths in tokens")->delimiter(',')->capture_default_str();
  app.add_option("--depths", o->depths, "Pass-key depths in percent")->delimiter(',')->capture_default_str();
  app.add_option("--seeds", o->seeds, "Seeds")->delimiter(',')->capture_default_str();
  app.add_option("--page-sizes", o->page_sizes, "KV page sizes")->delimiter(',')->capture_default_str();
  app.add_option("--budgets", o->budgets, "Top-k budgets in tokens")->delimiter(',')->capture_default_str();
  app.add_option("--estimators", o->estimators, "Estimators: unique, quest, mean")->delimiter(',')->capture_default_str();
  app.add_option("--sink", o->sink, "First pages always attended")->capture_default_str();
  app.add_option("--recent", o->recent, "Last pages always attended")->capture_default_str();
  app.add_option("--haystack", o->haystack, "kjv or a text file")->capture_default_str();
  app.add_option("--markdown", o->markdown, "Append the table to this markdown file");
  app.add_option("--synthetic", o->synthetic,
                 "Context of the synthetic workload (include/unique/synthetic.h) to use instead of the model");
  return [o] { return run(*o); };
}

}  // namespace unique::cli

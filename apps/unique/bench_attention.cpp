// `unique bench-attention`: every estimator on one synthetic workload, against fast dense.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "unique/bandwidth.h"
#include "unique/unique.h"
#include "unique/synthetic.h"

namespace unique::cli {

namespace {

struct Options {
  SyntheticSpec spec;
  AttentionConfig cfg;
  std::string estimators = "unique,quest,mean,random,oracle";
  std::string dtype = "bf16", stats_dtype, gqa = "max", offset = "channel";
  int steps = 5;
  int threads = 0;
  bool json = false;
  bool no_recall = false;
};

template <class F>
double median_ms(int steps, F&& f) {
  f();  // warm-up: first touch of scratch buffers, page-ins
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void progress(double f) {
  if (isatty(2)) std::fprintf(stderr, "\rbuilding KV cache: %3.0f%%", 100 * f);
  if (f >= 1.0 && isatty(2)) std::fprintf(stderr, "\n");
}

// Bytes a selection step reads for `e` (page statistics) on top of the selected K/V.
double stats_bytes(Estimator e, const PagedKV& kv, int64_t pages) {
  const double row = double(kv.num_kv_heads) * kv.head_dim * dtype_size(kv.stats_dtype);
  // fp8: one fp32 scale per (page, KV head) for the pair an estimator reads.
  const double scale = kv.stats_dtype == DType::e4m3 ? double(kv.num_kv_heads) * 4 : 0.0;
  switch (e) {
    case Estimator::unique:
    case Estimator::quest: return (2 * row + scale) * pages;
    case Estimator::mean: return (row + scale) * pages;
    case Estimator::oracle: return double(kv.num_kv_heads) * kv.head_dim * dtype_size(kv.dtype) *
                                   pages * kv.page_size;  // reads every key
    default: return 0;
  }
}

int run(Options o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  o.spec.dtype = parse_dtype(o.dtype);
  o.spec.stats_dtype = o.stats_dtype.empty() ? o.spec.dtype : parse_stats_dtype(o.stats_dtype);
  o.cfg.gqa = parse_gqa(o.gqa);
  o.cfg.offset = parse_offset(o.offset);
  o.cfg.page_size = o.spec.page_size;
  o.cfg.validate();
  std::vector<Estimator> ests;
  std::stringstream ss(o.estimators);
  for (std::string tok; std::getline(ss, tok, ',');) ests.push_back(parse_estimator(tok));

  const SyntheticSpec& s = o.spec;
  std::fprintf(stderr, "workload: batch %d, context %lld, heads %d/%d, head dim %d, page %d, KV %s, stats %s, %d threads\n",
               s.batch, static_cast<long long>(s.context), s.num_qo_heads, s.num_kv_heads, s.head_dim,
               s.page_size, to_string(s.dtype), to_string(s.stats_dtype), omp_get_max_threads());
  SyntheticWorkload w = make_synthetic_workload(s, progress);
  const PagedKV kv = w.kv();
  const TensorView q = w.q_view(s);
  const double copy_peak = measure_host_copy_gbps();
  const double peak = measure_host_read_gbps();  // a decode step only reads

  int64_t total_tokens = 0, total_pages = 0;
  for (int b = 0; b < kv.batch; ++b) {
    total_tokens += seq_len(kv, b);
    total_pages += seq_pages(kv, b);
  }
  const double kv_row = double(kv.num_kv_heads) * kv.head_dim * dtype_size(kv.dtype);
  const double dense_bytes = 2 * kv_row * total_tokens;
  std::vector<float> dense_out(size_t(s.batch) * s.num_qo_heads * s.head_dim), out(dense_out.size());
  const TensorView dense_view = make_view(dense_out.data(), DType::f32, {s.batch, s.num_qo_heads, s.head_dim});
  const TensorView out_view = make_view(out.data(), DType::f32, {s.batch, s.num_qo_heads, s.head_dim});
  AttentionConfig dense_cfg = o.cfg;
  dense_cfg.estimator = Estimator::dense;
  const double dense_ms = median_ms(o.steps, [&] { paged_decode(dense_cfg, q, kv, nullptr, dense_view, {}); });

  nlohmann::json rows = nlohmann::json::array();
  rows.push_back({{"estimator", "dense"}, {"recall", 1.0}, {"rel_err", 0.0}, {"ms", dense_ms},
                  {"select_ms", 0.0}, {"bytes", dense_bytes},
                  {"gbps", dense_bytes / dense_ms / 1e6}, {"speedup", 1.0}, {"ideal_speedup", 1.0}});
  for (Estimator e : ests) {
    if (e == Estimator::dense) continue;
    std::fprintf(stderr, "estimator %s...\n", to_string(e));
    AttentionConfig cfg = o.cfg;
    cfg.estimator = e;
    const int max_sel = cfg.max_selected(max_seq_pages(kv));
    std::vector<int32_t> pages(size_t(s.batch) * s.num_kv_heads * max_sel), counts(size_t(s.batch) * s.num_kv_heads);
    Selection sel{pages.data(), counts.data(), s.batch, s.num_kv_heads, max_sel, Device::cpu};
    const double sel_ms = median_ms(o.steps, [&] { select_pages(cfg, q, kv, sel); });
    const double ms = median_ms(o.steps, [&] {
      select_pages(cfg, q, kv, sel);
      paged_decode(cfg, q, kv, &sel, out_view, {});
    });
    int64_t sel_tokens = 0;
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < kv.num_kv_heads; ++h)
        for (int i = 0; i < counts[b * kv.num_kv_heads + h]; ++i) {
          const int j = pages[(size_t(b) * kv.num_kv_heads + h) * max_sel + i];
          sel_tokens += j == seq_pages(kv, b) - 1 ? kv.last_page_len[b] : kv.page_size;
        }
    const double bytes = stats_bytes(e, kv, total_pages) + 2.0 * kv.head_dim * dtype_size(kv.dtype) * sel_tokens;
    const double recall = o.no_recall ? -1.0 : attention_recall(cfg, q, kv, sel);
    rows.push_back({{"estimator", to_string(e)}, {"recall", recall},
                    {"rel_err", relative_l2(out_view, dense_view)}, {"ms", ms}, {"select_ms", sel_ms},
                    {"bytes", bytes}, {"gbps", bytes / ms / 1e6}, {"speedup", dense_ms / ms},
                    {"ideal_speedup", dense_bytes / bytes}});
  }

  if (o.json) {
    nlohmann::json doc = {{"workload", {{"batch", s.batch}, {"context", s.context}, {"ragged", s.ragged},
                                        {"num_qo_heads", s.num_qo_heads}, {"num_kv_heads", s.num_kv_heads},
                                        {"head_dim", s.head_dim}, {"page_size", s.page_size},
                                        {"dtype", to_string(s.dtype)},
                                        {"stats_dtype", to_string(s.stats_dtype)}, {"seed", s.seed}}},
                          {"config", {{"budget_tokens", o.cfg.budget_tokens}, {"sink_pages", o.cfg.sink_pages},
                                      {"recent_pages", o.cfg.recent_pages}, {"gqa", to_string(o.cfg.gqa)},
                                      {"offset", to_string(o.cfg.offset)}, {"alpha", o.cfg.alpha}}},
                          {"threads", omp_get_max_threads()}, {"copy_peak_gbps", copy_peak}, {"read_peak_gbps", peak}, {"rows", rows}};
    std::printf("%s\n", doc.dump(1).c_str());
    return 0;
  }
  std::printf("measured with %d threads: read peak %.1f GB/s, copy peak %.1f GB/s (read+write)\n",
              omp_get_max_threads(), peak, copy_peak);
  std::printf("%%peak = achieved GB/s over the read peak; ideal = dense bytes / bytes this row reads\n");
  std::printf("%-8s %8s %9s %10s %10s %9s %7s %8s %7s\n", "estim.", "recall", "out err", "ms/step",
              "select ms", "GB/s", "%peak", "speedup", "ideal");
  for (const auto& r : rows) {
    const double recall = r["recall"];
    std::printf("%-8s %8s %9.2e %10.3f %10.3f %9.1f %6.0f%% %7.2fx %6.1fx\n",
                r["estimator"].get<std::string>().c_str(),
                recall < 0 ? "-" : (std::to_string(recall).substr(0, 6)).c_str(), r["rel_err"].get<double>(),
                r["ms"].get<double>(), r["select_ms"].get<double>(), r["gbps"].get<double>(),
                100 * r["gbps"].get<double>() / peak, r["speedup"].get<double>(), r["ideal_speedup"].get<double>());
  }
  return 0;
}

}  // namespace

Runner add_bench_attention(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("--context", o->spec.context, "Tokens per sequence")->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  app.add_option("--batch", o->spec.batch, "Sequences in the batch")->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_flag("--ragged", o->spec.ragged, "Give sequences different lengths (down to half the context)");
  app.add_option("--qo-heads", o->spec.num_qo_heads, "Query heads")->capture_default_str();
  app.add_option("--kv-heads", o->spec.num_kv_heads, "KV heads (GQA group = qo-heads / kv-heads)")->capture_default_str();
  app.add_option("--head-dim", o->spec.head_dim, "Head dimension")->capture_default_str();
  app.add_option("--page-size", o->spec.page_size, "Tokens per KV page")->capture_default_str();
  app.add_option("--budget", o->cfg.budget_tokens, "Top-k budget in tokens (k = budget / page size)")->capture_default_str();
  app.add_option("--sink", o->cfg.sink_pages, "First pages always attended")->capture_default_str();
  app.add_option("--recent", o->cfg.recent_pages, "Last pages always attended (the last page always is)")->capture_default_str();
  app.add_option("--dtype", o->dtype, "KV cache storage: fp32, fp16, bf16")->capture_default_str();
  app.add_option("--stats-dtype", o->stats_dtype,
                 "Page statistics storage: fp32, fp16, bf16, fp8 (e4m3 + a power-of-two scale per page, KV head "
                 "and statistics pair) (default: same as --dtype)");
  app.add_option("--estimator", o->estimators,
                 "Comma-separated estimators: unique, quest, mean, oracle, random")->capture_default_str();
  app.add_option("--gqa", o->gqa, "GQA score aggregation: max or softmax_sum")->capture_default_str();
  app.add_option("--offset", o->offset, "UNIQUE offset form: channel (sum |q|*std) or norm (|q|*|std|)")->capture_default_str();
  app.add_option("--alpha", o->cfg.alpha, "Scale of the UNIQUE std offset")->capture_default_str();
  app.add_option("--needles", o->spec.needles, "Planted needle pages per sequence and KV head")->capture_default_str();
  app.add_option("--steps", o->steps, "Timed decode steps per row (median reported)")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--threads", o->threads, "OpenMP threads (0 = all cores)")->capture_default_str();
  app.add_option("--seed", o->spec.seed, "Workload seed")->capture_default_str();
  app.add_flag("--no-recall", o->no_recall, "Skip the (slow, double precision) attention-recall metric");
  app.add_flag("--json", o->json, "Print one JSON document instead of the table");
  return [o] { return run(*o); };
}

}  // namespace unique::cli

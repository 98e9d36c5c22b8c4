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
double time_ms(F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
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
    case Estimator::oracle:
    case Estimator::composite: return double(kv.num_kv_heads) * kv.head_dim * dtype_size(kv.dtype) *
                                      pages * kv.page_size;  // both read every key
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
  HostReadProbe probe;  // a decode step only reads: the read peak is its ceiling

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

  struct Row {
    AttentionConfig cfg;
    int max_sel = 0;
    std::vector<int32_t> pages, counts;
    Selection sel;
    std::vector<double> sel_ms, ms, speedup;
  };
  std::vector<Row> est_rows;
  for (Estimator e : ests) {
    if (e == Estimator::dense) continue;
    Row r;
    r.cfg = o.cfg;
    r.cfg.estimator = e;
    r.max_sel = r.cfg.max_selected(max_seq_pages(kv));
    r.pages.resize(size_t(s.batch) * s.num_kv_heads * r.max_sel);
    r.counts.resize(size_t(s.batch) * s.num_kv_heads);
    r.sel = Selection{r.pages.data(), r.counts.data(), s.batch, s.num_kv_heads, r.max_sel, Device::cpu};
    est_rows.push_back(std::move(r));
  }
  // Rounds, after one untimed warm-up (first touch of scratch buffers): a read-peak pass,
  // the dense step, each estimator's selection and sparse step. Speeds are medians over
  // rounds; speed-ups and % of peak are ratios within a round, then medians, so that a
  // neighbour's load that comes and goes between rows does not become a ratio.
  std::vector<double> peak_gbps, dense_ms_v, dense_pct;
  for (int round = -1; round < o.steps; ++round) {
    if (isatty(2) && round >= 0) std::fprintf(stderr, "\rtiming: round %d/%d", round + 1, o.steps);
    const double pk = probe.pass_gbps();
    const double dms = time_ms([&] { paged_decode(dense_cfg, q, kv, nullptr, dense_view, {}); });
    std::vector<std::pair<double, double>> times;
    for (Row& r : est_rows) {
      const double sel_ms = time_ms([&] { select_pages(r.cfg, q, kv, r.sel); });
      const double ms = time_ms([&] {
        select_pages(r.cfg, q, kv, r.sel);
        paged_decode(r.cfg, q, kv, &r.sel, out_view, {});
      });
      times.emplace_back(sel_ms, ms);
    }
    if (round < 0) continue;
    peak_gbps.push_back(pk);
    dense_ms_v.push_back(dms);
    dense_pct.push_back(100 * dense_bytes / dms / 1e6 / pk);
    for (size_t i = 0; i < est_rows.size(); ++i) {
      est_rows[i].sel_ms.push_back(times[i].first);
      est_rows[i].ms.push_back(times[i].second);
      est_rows[i].speedup.push_back(dms / times[i].second);
    }
  }
  if (isatty(2)) std::fprintf(stderr, "\n");
  const double peak = median(peak_gbps);
  const double dense_ms = median(dense_ms_v);

  nlohmann::json rows = nlohmann::json::array();
  rows.push_back({{"estimator", "dense"}, {"recall", 1.0}, {"rel_err", 0.0}, {"ms", dense_ms},
                  {"select_ms", 0.0}, {"bytes", dense_bytes}, {"gbps", dense_bytes / dense_ms / 1e6},
                  {"pct_of_read_peak", median(dense_pct)}, {"speedup", 1.0}, {"ideal_speedup", 1.0}});
  for (Row& r : est_rows) {
    const Estimator e = r.cfg.estimator;
    // The selection and output of the last round: recall, error and bytes read.
    int64_t sel_tokens = 0;
    for (int b = 0; b < kv.batch; ++b)
      for (int h = 0; h < kv.num_kv_heads; ++h)
        for (int i = 0; i < r.counts[b * kv.num_kv_heads + h]; ++i) {
          const int j = r.pages[(size_t(b) * kv.num_kv_heads + h) * r.max_sel + i];
          sel_tokens += j == seq_pages(kv, b) - 1 ? kv.last_page_len[b] : kv.page_size;
        }
    paged_decode(r.cfg, q, kv, &r.sel, out_view, {});
    const double bytes = stats_bytes(e, kv, total_pages) + 2.0 * kv.head_dim * dtype_size(kv.dtype) * sel_tokens;
    const double recall = o.no_recall ? -1.0 : attention_recall(r.cfg, q, kv, r.sel);
    std::vector<double> pct;
    for (size_t i = 0; i < r.ms.size(); ++i) pct.push_back(100 * bytes / r.ms[i] / 1e6 / peak_gbps[i]);
    const double ms = median(r.ms);
    rows.push_back({{"estimator", to_string(e)}, {"recall", recall},
                    {"rel_err", relative_l2(out_view, dense_view)}, {"ms", ms}, {"select_ms", median(r.sel_ms)},
                    {"bytes", bytes}, {"gbps", bytes / ms / 1e6}, {"pct_of_read_peak", median(pct)},
                    {"speedup", median(r.speedup)}, {"ideal_speedup", dense_bytes / bytes}});
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
  std::printf("measured with %d threads over %d rounds: read peak %.1f GB/s (median; %.1f-%.1f), copy peak %.1f GB/s (read+write)\n",
              omp_get_max_threads(), o.steps, peak, *std::min_element(peak_gbps.begin(), peak_gbps.end()),
              *std::max_element(peak_gbps.begin(), peak_gbps.end()), copy_peak);
  std::printf("ms: median over rounds; %%peak and speedup: ratios within each round (to the round's read-peak\n"
              "pass and dense step), median over rounds; ideal = dense bytes / bytes this row reads\n");
  std::printf("%-9s %8s %9s %10s %10s %9s %7s %8s %7s\n", "estim.", "recall", "out err", "ms/step",
              "select ms", "GB/s", "%peak", "speedup", "ideal");
  for (const auto& r : rows) {
    const double recall = r["recall"];
    std::printf("%-9s %8s %9.2e %10.3f %10.3f %9.1f %6.0f%% %7.2fx %6.1fx\n",
                r["estimator"].get<std::string>().c_str(),
                recall < 0 ? "-" : (std::to_string(recall).substr(0, 6)).c_str(), r["rel_err"].get<double>(),
                r["ms"].get<double>(), r["select_ms"].get<double>(), r["gbps"].get<double>(),
                r["pct_of_read_peak"].get<double>(), r["speedup"].get<double>(), r["ideal_speedup"].get<double>());
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
  app.add_option("--steps", o->steps, "Timed rounds (each: a read-peak pass, the dense step, every estimator's step); medians reported")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--threads", o->threads, "OpenMP threads (0 = all cores)")->capture_default_str();
  app.add_option("--seed", o->spec.seed, "Workload seed")->capture_default_str();
  app.add_flag("--no-recall", o->no_recall, "Skip the (slow, double precision) attention-recall metric");
  app.add_flag("--json", o->json, "Print one JSON document instead of the table");
  return [o] { return run(*o); };
}

}  // namespace unique::cli

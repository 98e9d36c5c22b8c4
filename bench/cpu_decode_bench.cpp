// Google Benchmark of the CPU decode path: dense vs UNIQUE sparse (selection + attention)
// at 8K-128K context, GQA 32/8, head dim 128, fp32 and bf16 storage, page 16,
// budget 2048 tokens; the selection alone too (it reads the page statistics once).
// Counters: bytes/s read, % of the measured read peak.
// `unique bench-attention` prints the same comparison as a table with recall and error.
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <tuple>

#include "unique/bandwidth.h"
#include "unique/unique.h"
#include "unique/synthetic.h"

namespace {

using namespace unique;

double read_peak() {
  static const double peak = measure_host_read_gbps();
  return peak;
}

// One workload per (context, dtype), built once and shared by the benchmarks.
const SyntheticWorkload& workload(int64_t context, DType dtype, SyntheticSpec* spec_out) {
  static std::map<std::pair<int64_t, int>, std::unique_ptr<SyntheticWorkload>> cache;
  SyntheticSpec s;
  s.batch = 1;
  s.context = context;
  s.dtype = dtype;
  s.stats_dtype = dtype;
  *spec_out = s;
  auto& w = cache[{context, static_cast<int>(dtype)}];
  if (!w) {
    cache.clear();  // keep one large workload in memory at a time
    auto& fresh = cache[{context, static_cast<int>(dtype)}];
    fresh = std::make_unique<SyntheticWorkload>(make_synthetic_workload(s));
    return *fresh;
  }
  return *w;
}

enum class Step { dense, sparse, select };

void run(benchmark::State& state, Step step) {
  const bool sparse = step != Step::dense;
  const int64_t context = state.range(0);
  const DType dtype = state.range(1) ? DType::bf16 : DType::f32;
  SyntheticSpec s;
  const SyntheticWorkload& w = workload(context, dtype, &s);
  const PagedKV kv = w.kv();
  const TensorView q = w.q_view(s);
  std::vector<float> out(size_t(s.batch) * s.num_qo_heads * s.head_dim);
  const TensorView o = make_view(out.data(), DType::f32, {s.batch, s.num_qo_heads, s.head_dim});
  AttentionConfig cfg;
  cfg.estimator = sparse ? Estimator::unique : Estimator::dense;
  const int max_sel = cfg.max_selected(max_seq_pages(kv));
  std::vector<int32_t> pages(size_t(s.batch) * s.num_kv_heads * max_sel), counts(size_t(s.batch) * s.num_kv_heads);
  Selection sel{pages.data(), counts.data(), s.batch, s.num_kv_heads, max_sel, Device::cpu};
  const double kv_row = double(s.num_kv_heads) * s.head_dim * dtype_size(dtype);
  double bytes = 2 * kv_row * context;
  const double stats_bytes = 2 * kv_row / s.page_size * context * dtype_size(s.stats_dtype) / dtype_size(dtype);
  if (step == Step::sparse) bytes = 2 * kv_row * double(s.page_size) * max_sel + stats_bytes;
  if (step == Step::select) bytes = stats_bytes;
  for (auto _ : state) {
    if (sparse) {
      select_pages(cfg, q, kv, sel);
      if (step == Step::sparse) paged_decode(cfg, q, kv, &sel, o, {});
    } else {
      paged_decode(cfg, q, kv, nullptr, o, {});
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes * state.iterations()));
  state.counters["read_peak_GBps"] = read_peak();
  // (bytes per iteration / peak) * iterations / seconds = achieved / peak.
  state.counters["pct_of_read_peak"] = benchmark::Counter(
      bytes * 1e-9 / read_peak() * 100, benchmark::Counter::kIsIterationInvariantRate);
}

void args(benchmark::internal::Benchmark* b) {
  for (int64_t ctx : {8192, 32768, 131072})
    for (int bf : {0, 1}) b->Args({ctx, bf});
  b->ArgNames({"context", "bf16"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK_CAPTURE(run, dense, Step::dense)->Apply(args);
BENCHMARK_CAPTURE(run, unique_sparse, Step::sparse)->Apply(args);
BENCHMARK_CAPTURE(run, unique_select, Step::select)->Apply(args);
BENCHMARK_MAIN();

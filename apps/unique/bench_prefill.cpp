// `unique bench-prefill`: dense causal prefill (sparse_prefill without a selection) against
// UniSparse (select_prefill_blocks + sparse_prefill) for each top_p, on the synthetic
// workload's keys with queries built from them (see make_queries), CPU.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "unique/error.h"
#include "unique/metrics.h"
#include "unique/prefill.h"
#include "unique/prefill_rank.h"
#include "unique/synthetic.h"

namespace unique::cli {

namespace {

struct Options {
  std::string contexts = "2048,8192", top_ps = "0.9,0.95", dtype = "bf16";
  int qo_heads = 32, kv_heads = 8, head_dim = 128, page_size = 16, prefill_block = 64, pool = 8;
  int reps = 1, threads = 0;
  int64_t rank_context = 4096;
  float focus = 1.0f;
  uint64_t seed = 0;
  bool json = false, compare_ref = false;
  std::string model;                       // --model: real activations instead of the synthetic workload
  std::vector<std::string> prompt_files;
  int rank_blocks = 16;
};

template <class T>
std::vector<T> parse_list(const std::string& s, const char* flag) {
  std::vector<T> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) {
    try {
      size_t used = 0;
      const double x = std::stod(t, &used);
      if (used != t.size()) throw std::invalid_argument("");
      v.push_back(static_cast<T>(x));
    } catch (const std::exception&) {
      throw_arg(flag, "a comma-separated list of numbers", s);
    }
  }
  if (v.empty()) throw_arg(flag, "a comma-separated list of numbers", s);
  return v;
}

template <class F>
double median_ms(int reps, F&& f) {
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Prefill queries for every position: q_t = a_i (k_t - mean key) + 0.3 q_dec + noise, with
// q_dec the workload's decode query (it points at the needle pages and the sink) and a_i
// rising over the heads of a group, times `focus` (larger: peakier attention). Keys drift in topic every 4 pages, so a query attends
// mostly to keys of its own topic (nearby), to the sink and the needles: a local-plus-
// retrieval pattern. How sparse real models are differs; this only fixes one pattern.
std::vector<float> make_queries(const SyntheticWorkload& w, const SyntheticSpec& s, int64_t L, float focus) {
  const PagedKV kv = w.kv();
  const int H = s.num_kv_heads, D = s.head_dim, Hq = s.num_qo_heads, group = Hq / H, P = s.page_size;
  std::vector<float> q(size_t(L) * Hq * D), mean(size_t(H) * D, 0.0f), key(D);
  auto key_row = [&](int64_t t, int h) {
    const int64_t off = kv.kv_offset(kv.page_indices[t / P], h) + (t % P) * D;
    for (int d = 0; d < D; ++d) key[d] = load_as_float(kv.k, kv.dtype, off + d);
  };
  for (int h = 0; h < H; ++h)
    for (int64_t t = 0; t < L; ++t) {
      key_row(t, h);
      for (int d = 0; d < D; ++d) mean[h * D + d] += key[d] / float(L);
    }
  uint64_t x = s.seed * 0x9e3779b97f4a7c15ull + 12345;
  auto noise = [&] {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return (static_cast<float>(x >> 40) * (1.0f / 16777216.0f) - 0.5f) * 1.7320508f;  // var 1/4
  };
  for (int64_t t = 0; t < L; ++t)
    for (int h = 0; h < H; ++h) {
      key_row(t, h);
      for (int i = 0; i < group; ++i) {
        const int hq = h * group + i;
        const float a = focus * (0.1f + 0.3f * float(i + 1) / float(group));
        float* row = q.data() + (size_t(t) * Hq + hq) * D;
        for (int d = 0; d < D; ++d) row[d] = a * (key[d] - mean[h * D + d]) + 0.3f * w.q[size_t(hq) * D + d] + noise();
      }
    }
  return q;
}

// Mean Spearman correlation, over (KV head, query block) rows, between the composite-token
// block mass and the exact one. The exact mass is O(L^2) in double, so it is sampled: the
// last two query blocks, the first query head of each GQA group (a strided q view), and
// only when L <= cap. Those rows' composite mass equals the full prefill's: the sampled
// chunk starts on a block (hence pool) boundary.
double rank_correlation(const AttentionConfig& cfg, const std::vector<float>& q, const PagedKV& kv, int64_t L,
                        int Hq, int D) {
  const int H = kv.num_kv_heads, group = Hq / H;
  const int64_t B = cfg.prefill_block, q_len = L - std::max<int64_t>(0, ((L - 1) / B - 1) * B);
  TensorView qv = make_view(q.data() + size_t(L - q_len) * Hq * D, DType::f32, {q_len, H, D});
  qv.stride = {int64_t(Hq) * D, int64_t(group) * D, 1};
  const PrefillBlocks pb = prefill_blocks(cfg, q_len, L);
  std::vector<float> est(size_t(H) * pb.num_q_blocks * pb.num_kv_blocks), exact(est.size());
  const TensorView ev = make_view(est.data(), DType::f32, {H, pb.num_q_blocks, pb.num_kv_blocks});
  const TensorView xv = make_view(exact.data(), DType::f32, {H, pb.num_q_blocks, pb.num_kv_blocks});
  ref::prefill_block_mass(cfg, qv, kv, 0, L, false, ev);
  ref::prefill_block_mass(cfg, qv, kv, 0, L, true, xv);
  double sum = 0;
  int rows = 0;
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < pb.num_q_blocks; ++i) {
      const int n = pb.first_q_block + i + 1;
      if (n < 3) continue;
      const size_t at = (size_t(h) * pb.num_q_blocks + i) * pb.num_kv_blocks;
      sum += spearman(est.data() + at, exact.data() + at, n);
      ++rows;
    }
  return rows ? sum / rows : NAN;
}

int run(const Options& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const std::vector<int64_t> contexts = parse_list<int64_t>(o.contexts, "--context");
  const std::vector<float> top_ps = parse_list<float>(o.top_ps, "--top-p");
  UNIQUE_CHECK_ARG(o.reps >= 1, "--reps", ">= 1", o.reps);
  AttentionConfig base;
  base.page_size = o.page_size;
  base.prefill_block = o.prefill_block;
  base.pool = o.pool;
  base.prefill = PrefillMode::unisparse;
  base.validate();
  for (float p : top_ps) {
    AttentionConfig c = base;
    c.top_p = p;
    c.validate();
  }
  if (!o.model.empty()) {
#ifdef UNIQUE_WITH_ENGINE
    UNIQUE_CHECK_ARG(!o.json, "--json", "not with --model (a markdown table is printed)", "--json");
    ModelRankOptions m;
    m.model_dir = o.model;
    m.prompt_files = o.prompt_files;
    m.contexts = contexts;
    m.top_ps = top_ps;
    m.cfg = base;
    m.rank_blocks = o.rank_blocks;
    return run_bench_prefill_model(m);
#else
    throw_arg("--model", "a build with the engine (OpenBLAS)", o.model);
#endif
  }
  UNIQUE_CHECK_ARG(o.prompt_files.empty(), "--prompt-file", "only with --model", "no --model");
  for (int64_t L : contexts) UNIQUE_CHECK_ARG(L >= 1 && L <= (int64_t(1) << 22), "--context", "1..4194304", L);
  const DType dt = parse_dtype(o.dtype);
  std::fprintf(stderr,
               "bench-prefill: heads %d/%d, head dim %d, page %d, KV %s, prefill block %d, pool %d, focus %.2f, "
               "%d threads, median of %d\n",
               o.qo_heads, o.kv_heads, o.head_dim, o.page_size, to_string(dt), o.prefill_block, o.pool, o.focus,
               omp_get_max_threads(), o.reps);
  nlohmann::json rows = nlohmann::json::array(), ref_rows = nlohmann::json::array();
  if (!o.json)
    std::printf("%8s %6s %7s %10s %12s %10s %9s %9s %10s\n", "context", "top_p", "kept", "select ms", "attention ms",
                "total ms", "vs dense", "out err", "rank corr");
  for (int64_t L : contexts) {
    SyntheticSpec s;
    s.batch = 1;
    s.context = L;
    s.num_qo_heads = o.qo_heads;
    s.num_kv_heads = o.kv_heads;
    s.head_dim = o.head_dim;
    s.page_size = o.page_size;
    s.dtype = dt;
    s.stats_dtype = DType::f32;
    s.seed = o.seed;
    const SyntheticWorkload w = make_synthetic_workload(s);
    const PagedKV kv = w.kv();
    const std::vector<float> q = make_queries(w, s, L, o.focus);
    const int Hq = o.qo_heads, D = o.head_dim;
    const TensorView qv = make_view(q.data(), DType::f32, {L, Hq, D});
    std::vector<float> dense(size_t(L) * Hq * D), out(dense.size());
    const TensorView dv = make_view(dense.data(), DType::f32, {L, Hq, D});
    const TensorView ov = make_view(out.data(), DType::f32, {L, Hq, D});
    const PrefillBlocks pb = prefill_blocks(base, L, L);
    const double dense_ms = median_ms(o.reps, [&] { sparse_prefill(base, qv, kv, 0, L, nullptr, dv, {}); });
    int64_t dense_blocks = 0;
    for (int i = 0; i < pb.num_q_blocks; ++i) dense_blocks += int64_t(Hq) * (pb.first_q_block + i + 1);
    const bool ranked = o.rank_context > 0 && L <= o.rank_context;
    const double corr = ranked ? rank_correlation(base, q, kv, L, Hq, D) : NAN;
    auto emit = [&](const char* label, double top_p, double kept, double sel_ms, double att_ms, double err) {
      const double total = sel_ms + att_ms;
      if (o.json) {
        rows.push_back({{"context", L}, {"top_p", label[0] ? nlohmann::json(label) : nlohmann::json(top_p)},
                        {"kept_fraction", kept}, {"select_ms", sel_ms}, {"attention_ms", att_ms}, {"total_ms", total},
                        {"speedup_vs_dense", dense_ms / total}, {"out_rel_err", err},
                        {"rank_corr", ranked ? nlohmann::json(corr) : nlohmann::json(nullptr)}});
        return;
      }
      char p[16];
      std::snprintf(p, sizeof p, "%.2f", top_p);
      std::printf("%8lld %6s %6.1f%% %10.1f %12.1f %10.1f %8.2fx %9.2e %10s\n", static_cast<long long>(L),
                  label[0] ? label : p, 100 * kept, sel_ms, att_ms, total, dense_ms / total, err,
                  ranked ? std::to_string(corr).substr(0, 5).c_str() : "-");
      std::fflush(stdout);
    };
    emit("dense", 1.0, 1.0, 0.0, dense_ms, 0.0);
    double first_sel_ms = 0;
    for (float top_p : top_ps) {
      AttentionConfig cfg = base;
      cfg.top_p = top_p;
      std::vector<int32_t> blocks(size_t(Hq) * pb.num_q_blocks * pb.num_kv_blocks), counts(size_t(Hq) * pb.num_q_blocks);
      const BlockSelection sel{blocks.data(), counts.data(), Hq, pb.num_q_blocks, pb.num_kv_blocks};
      const double sel_ms = median_ms(o.reps, [&] { select_prefill_blocks(cfg, qv, kv, 0, L, sel); });
      const double att_ms = median_ms(o.reps, [&] { sparse_prefill(cfg, qv, kv, 0, L, &sel, ov, {}); });
      if (top_p == top_ps[0]) first_sel_ms = sel_ms;
      int64_t kept = 0;
      for (int32_t c : counts) kept += c;
      emit("", top_p, double(kept) / double(dense_blocks), sel_ms, att_ms, relative_l2(ov, dv));
    }
    if (o.compare_ref) {  // the reference twins, once each (plain loops in double: slow)
      AttentionConfig cfg = base;
      cfg.top_p = top_ps[0];
      std::vector<int32_t> blocks(size_t(Hq) * pb.num_q_blocks * pb.num_kv_blocks), counts(size_t(Hq) * pb.num_q_blocks);
      const BlockSelection sel{blocks.data(), counts.data(), Hq, pb.num_q_blocks, pb.num_kv_blocks};
      const double ref_sel = median_ms(1, [&] { ref::select_prefill_blocks(cfg, qv, kv, 0, L, sel); });
      const double ref_dense = median_ms(1, [&] { ref::sparse_prefill(cfg, qv, kv, 0, L, nullptr, ov, {}); });
      if (o.json)
        ref_rows.push_back({{"context", L}, {"top_p", cfg.top_p}, {"ref_select_ms", ref_sel}, {"ref_dense_ms", ref_dense},
                            {"select_ms", first_sel_ms}, {"dense_ms", dense_ms}});
      else
        std::printf("%8lld reference: select (top_p %.2f) %.1f ms = %.0fx the fast one, dense %.1f ms = %.0fx\n",
                    static_cast<long long>(L), cfg.top_p, ref_sel, ref_sel / first_sel_ms, ref_dense,
                    ref_dense / dense_ms);
    }
  }
  if (o.json)
    std::printf("%s\n", nlohmann::json{{"workload",
                                        {{"qo_heads", o.qo_heads}, {"kv_heads", o.kv_heads}, {"head_dim", o.head_dim},
                                         {"page_size", o.page_size}, {"dtype", to_string(dt)}, {"seed", o.seed},
                                         {"focus", o.focus}}},
                                       {"config", {{"prefill_block", o.prefill_block}, {"pool", o.pool}}},
                                       {"threads", omp_get_max_threads()},
                                       {"rank_corr_sample",
                                        "last 2 query blocks, first query head of each GQA group, context <= " +
                                            std::to_string(o.rank_context)},
                                       {"rows", rows},
                                       {"reference", ref_rows}}
                            .dump(1)
                            .c_str());
  else
    std::printf("kept: key blocks computed / dense causal blocks; out err: ||sparse - dense|| / ||dense||; rank corr: "
                "Spearman of composite vs exact block mass (last 2 query blocks, one query head per KV head, "
                "contexts <= %lld only)\n",
                static_cast<long long>(o.rank_context));
  return 0;
}

}  // namespace

Runner add_bench_prefill(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("--context", o->contexts, "Comma-separated prompt lengths (the whole prompt is one chunk)")
      ->capture_default_str();
  app.add_option("--top-p", o->top_ps,
                 "Comma-separated top_p values: composite attention mass each query block keeps, in (0, 1]")
      ->capture_default_str();
  app.add_option("--qo-heads", o->qo_heads, "Query heads")->capture_default_str();
  app.add_option("--kv-heads", o->kv_heads, "KV heads (GQA group = qo-heads / kv-heads)")->capture_default_str();
  app.add_option("--head-dim", o->head_dim, "Head dimension")->capture_default_str();
  app.add_option("--page-size", o->page_size, "Tokens per KV page")->capture_default_str();
  app.add_option("--prefill-block", o->prefill_block, "Query/key block of the block-sparse attention, in tokens")
      ->capture_default_str();
  app.add_option("--pool", o->pool, "Tokens pooled into one composite token (divides --prefill-block)")
      ->capture_default_str();
  app.add_option("--dtype", o->dtype, "KV cache storage: fp32, fp16, bf16")->capture_default_str();
  app.add_option("--reps", o->reps, "Timed runs per row (median)")->capture_default_str();
  app.add_option("--rank-context", o->rank_context,
                 "Largest context for the rank-correlation column (exact mass in double, O(L^2); 0 = never)")
      ->capture_default_str();
  app.add_option("--threads", o->threads, "OpenMP threads (0 = all cores)");
  app.add_option("--seed", o->seed, "Workload seed")->capture_default_str();
  app.add_option("--focus", o->focus,
                 "Weight of a query's own (local) key direction: larger gives peakier, more local attention")
      ->capture_default_str();
  app.add_flag("--compare-ref", o->compare_ref,
               "Also time the reference twins (double precision, plain loops; minutes past a few thousand tokens)");
  app.add_flag("--json", o->json, "Print one JSON document instead of the table");
  app.add_option("--model", o->model,
                 "Hugging Face model directory: rank the composite block mass against the exact one on the model's "
                 "own post-RoPE queries and keys of a dense prefill of --prompt-file (per layer), instead of timing "
                 "the synthetic workload");
  app.add_option("--prompt-file", o->prompt_files,
                 "With --model: text file(s) whose first --context tokens are the prompt; kjv = the eval's King "
                 "James haystack");
  app.add_option("--rank-blocks", o->rank_blocks,
                 "With --model: query blocks sampled per layer, spread evenly, the last included (0 = all)")
      ->capture_default_str();
  return [o] { return run(*o); };
}

}  // namespace unique::cli

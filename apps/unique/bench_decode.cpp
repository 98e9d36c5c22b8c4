// `unique bench-decode`: decode throughput of a whole model (all layers + lm_head) with the
// KV cache filled by synthetic keys, dense vs each sparse estimator, against the
// bytes-limit tokens/s at the measured memory bandwidth.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "unique/bandwidth.h"
#include "unique/engine/engine.h"
#include "unique/error.h"

namespace unique::cli {

namespace {

struct BenchOptions {
  std::string gqa = "max", offset = "channel";
  float alpha = 1.0f;
  std::string model, shape, attention = "dense,unique,quest", kv_dtype = "bf16", weights_dtype = "bf16",
              stats_dtype = "auto";
  int64_t context = 4096;
  int batch = 1, budget = 2048, page_size = 16, sink = 1, recent = 1, dense_layers = 0, steps = 8, layers = 0,
      threads = 0;
  bool no_graph = false;
  double bandwidth_gbps = 0;
  bool json = false;
  std::string fill = "synthetic", device = "cpu";
  PrefillFlags prefill;
  int prefill_chunk = 0;
};

engine::ModelConfig shape_config(const std::string& s) {
  engine::ModelConfig c;
  if (s == "llama3-8b") {
    c.arch = engine::Arch::llama;
    c.hidden_size = 4096, c.intermediate_size = 14336, c.num_layers = 32, c.num_heads = 32, c.num_kv_heads = 8;
    c.head_dim = 128, c.vocab_size = 128256, c.rope_theta = 500000, c.rope_scaling = engine::RopeScaling::llama3;
    c.rope_factor = 8, c.rope_low_freq_factor = 1, c.rope_high_freq_factor = 4, c.rope_original_max_position = 8192;
    c.max_position_embeddings = 131072, c.rms_norm_eps = 1e-5;
  } else if (s == "qwen3-8b") {
    c.arch = engine::Arch::qwen3;
    c.hidden_size = 4096, c.intermediate_size = 12288, c.num_layers = 36, c.num_heads = 32, c.num_kv_heads = 8;
    c.head_dim = 128, c.vocab_size = 151936, c.rope_theta = 1000000, c.qk_norm = true;
    c.max_position_embeddings = 131072, c.rms_norm_eps = 1e-6;
  } else if (s == "mistral-7b") {
    c.arch = engine::Arch::mistral;
    c.hidden_size = 4096, c.intermediate_size = 14336, c.num_layers = 32, c.num_heads = 32, c.num_kv_heads = 8;
    c.head_dim = 128, c.vocab_size = 32768, c.rope_theta = 1000000, c.max_position_embeddings = 131072;
  } else if (s == "tiny") {
    c.arch = engine::Arch::llama;
    c.hidden_size = 256, c.intermediate_size = 768, c.num_layers = 4, c.num_heads = 8, c.num_kv_heads = 2;
    c.head_dim = 32, c.vocab_size = 1024, c.rope_theta = 500000, c.max_position_embeddings = 1 << 20;
    c.tie_word_embeddings = true;
  } else {
    throw_arg("--shape", "llama3-8b, qwen3-8b, mistral-7b or tiny", s);
  }
  c.architecture = s;
  return c;
}

// Bytes one decode step reads for the attention of one layer.
double attn_bytes(const engine::Engine& eng, const AttentionConfig& cfg, bool dense, const std::vector<int>& seqs) {
  const KVCacheOptions& k = eng.kv_options();
  const double tok = double(k.num_kv_heads) * k.head_dim * dtype_size(k.dtype);  // K or V of one token
  // One statistics row per page (fp8: plus the pair's fp32 scale per KV head).
  const double row = double(k.num_kv_heads) * (k.head_dim * dtype_size(k.stats_dtype) +
                                               (k.stats_dtype == DType::e4m3 ? 2.0 : 0.0));
  double b = 0;
  for (int s : seqs) {
    const int64_t len = eng.length(s);
    const int64_t pages = (len + k.page_size - 1) / k.page_size;
    if (dense) {
      b += 2 * tok * len;
      continue;
    }
    const int64_t sel = std::min<int64_t>(cfg.max_selected(static_cast<int>(pages)), pages);
    b += 2 * tok * std::min<int64_t>(sel * k.page_size, len);
    switch (cfg.estimator) {
      case Estimator::unique:
      case Estimator::quest: b += 2 * row * pages; break;
      case Estimator::mean: b += row * pages; break;
      case Estimator::oracle:
      case Estimator::composite: b += tok * len; break;  // both read every key
      default: break;
    }
  }
  return b;
}

int run(const BenchOptions& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  UNIQUE_CHECK_ARG(o.model.empty() != o.shape.empty(), "--model/--shape", "exactly one of them", "both or neither");
  UNIQUE_CHECK_ARG(o.context >= 1, "--context", ">= 1", o.context);
  UNIQUE_CHECK_ARG(o.batch >= 1, "--batch", ">= 1", o.batch);
  UNIQUE_CHECK_ARG(o.steps >= 1, "--steps", ">= 1", o.steps);
  UNIQUE_CHECK_ARG(o.fill == "synthetic" || o.fill == "prefill", "--fill", "synthetic or prefill", o.fill);
  UNIQUE_CHECK_ARG(o.device == "cpu" || o.device == "cuda", "--device", "cpu or cuda", o.device);
  const bool gpu = o.device == "cuda";
  UNIQUE_CHECK_ARG(o.fill == "prefill" || parse_prefill(o.prefill.mode) == PrefillMode::dense, "--prefill",
                   "dense with --fill synthetic (it runs no prefill; add --fill prefill)", o.prefill.mode);
  std::unique_ptr<engine::Model> model;
  if (!o.model.empty()) {
    engine::LoadOptions lo;
    lo.max_layers = o.layers;
    model = engine::Model::load(o.model, lo);
  } else {
    engine::ModelConfig c = shape_config(o.shape);
    if (o.layers > 0) c.num_layers = std::min(c.num_layers, o.layers);
    // Speed only: a 128K context plus the timed steps may pass the shape's 128K limit.
    c.max_position_embeddings = std::max<int64_t>(c.max_position_embeddings, 2 * o.context + 1024);
    std::fprintf(stderr, "bench-decode: random %s weights of shape %s (%d layers): speed only, the tokens are meaningless\n",
                 o.weights_dtype.c_str(), o.shape.c_str(), c.num_layers);
    model = engine::Model::random(c, parse_dtype(o.weights_dtype));
  }
  const engine::ModelConfig& mc = model->config();
  std::vector<Estimator> ests;
  std::stringstream ss(o.attention);
  for (std::string t; std::getline(ss, t, ',');) ests.push_back(parse_estimator(t));
  UNIQUE_CHECK_ARG(!ests.empty(), "--attention", "a comma-separated list of estimators", o.attention);
  // Dense first: the other rows' ratio is against it.
  std::stable_partition(ests.begin(), ests.end(), [](Estimator e) { return e == Estimator::dense; });

  engine::EngineOptions eo;
  eo.attention.page_size = o.page_size;
  eo.attention.budget_tokens = static_cast<int>(o.budget);
  eo.attention.sink_pages = o.sink;
  eo.attention.recent_pages = o.recent;
  eo.attention.gqa = parse_gqa(o.gqa);
  eo.attention.offset = parse_offset(o.offset);
  eo.attention.alpha = o.alpha;
  o.prefill.apply(eo.attention);
  // Rows per forward (and per synthetic fill chunk): the GPU wants big GEMMs.
  eo.prefill_chunk = o.prefill_chunk > 0 ? o.prefill_chunk : gpu ? 2048 : 256;
  eo.device = gpu ? Device::cuda : Device::cpu;
  eo.cuda_graph = !o.no_graph;
  eo.dense_layers = o.dense_layers;
  eo.kv_dtype = parse_dtype(o.kv_dtype);
  eo.stats_dtype = o.stats_dtype == "auto" ? eo.kv_dtype : parse_stats_dtype(o.stats_dtype);
  eo.max_batch = o.batch;
  eo.max_context = o.context + int64_t(o.steps + 1) * static_cast<int64_t>(ests.size()) + 4;
  eo.keep_all_stats = true;
  eo.attention.estimator = Estimator::dense;
  engine::Engine eng(*model, eo);
  std::vector<int> seqs;
  const auto f0 = std::chrono::steady_clock::now();
  for (int b = 0; b < o.batch; ++b) {
    seqs.push_back(eng.add_sequence());
    if (o.fill == "synthetic") {
      eng.fill_synthetic(seqs.back(), o.context, static_cast<uint64_t>(b));
      continue;
    }
    std::vector<int> prompt(o.context);
    uint64_t x = 0x9e3779b97f4a7c15ull * (b + 1);
    for (int& t : prompt) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      t = static_cast<int>(x % uint64_t(mc.vocab_size));
    }
    eng.prefill(seqs.back(), prompt, nullptr);
  }
  const double fill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - f0).count();
  std::string filled = "filled with synthetic keys";
  if (o.fill == "prefill") {
    char kept[64];
    const engine::Engine::PrefillStats& ps = eng.prefill_stats();
    std::snprintf(kept, sizeof kept, ": key blocks kept %.1f%%)", 100.0 * ps.blocks_kept / std::max<int64_t>(ps.blocks_dense, 1));
    filled = eo.attention.prefill == PrefillMode::unisparse
                 ? "filled by a unisparse prefill of random tokens (" + prefill_settings(eo.attention) + kept
                 : "filled by a dense prefill of random tokens";
  }
  // The ceiling the bytes-limit uses: host read bandwidth, or the GPU's copy peak.
  const double bw = o.bandwidth_gbps > 0 ? o.bandwidth_gbps : gpu ? measure_device_copy_gbps() : measure_host_read_gbps();
  std::fprintf(stderr,
               "bench-decode: %s, %d layers, hidden %d, heads %d/%d, head dim %d, vocab %d; weights %.2f GB read per step; "
               "KV %s (stats %s) %s (%lld tokens x %d sequences, %.1f s); %s; %s %.1f GB/s%s\n",
               o.model.empty() ? o.shape.c_str() : o.model.c_str(), mc.num_layers, mc.hidden_size, mc.num_heads,
               mc.num_kv_heads, mc.head_dim, mc.vocab_size, model->decode_weight_bytes() / 1e9, to_string(eo.kv_dtype), to_string(eo.stats_dtype),
               filled.c_str(), static_cast<long long>(o.context), o.batch, fill_s,
               gpu ? (o.no_graph ? "CUDA, eager launches" : "CUDA, decode step as a CUDA graph")
                   : (std::to_string(omp_get_max_threads()) + " threads").c_str(),
               gpu ? "copy peak" : "read bandwidth", bw,
               o.bandwidth_gbps > 0 ? " (given)" : " (measured)");
  std::vector<float> logits(size_t(mc.vocab_size) * o.batch);
  std::vector<int> toks(o.batch, 1);
  nlohmann::json rows = nlohmann::json::array();
  // Warm-up before the first row (first touch of scratch buffers, thread pool start):
  // without it the first row measured ~30% slow.
  for (int i = 0; i < 3; ++i) eng.decode(seqs, toks, logits.data());
  double dense_tps = 0;
  if (!o.json)
    std::printf("%-8s %8s %5s %6s %10s %12s %12s %14s %8s %9s\n", "attention", "context", "batch", "page", "ms/step",
                "tokens/s", "MB/step", "limit tok/s", "% limit", "vs dense");
  for (Estimator e : ests) {
    AttentionConfig cfg = eo.attention;
    cfg.estimator = e;
    eng.set_attention(cfg, o.dense_layers);
    eng.decode(seqs, toks, logits.data());  // warm-up
    std::vector<double> ms;
    for (int s = 0; s < o.steps; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      eng.decode(seqs, toks, logits.data());
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2];
    double bytes = static_cast<double>(model->decode_weight_bytes());
    for (int l = 0; l < mc.num_layers; ++l)
      bytes += attn_bytes(eng, cfg, e == Estimator::dense || l < o.dense_layers, seqs);
    const double tps = o.batch / (med / 1e3);
    const double limit = o.batch / (bytes / (bw * 1e9));
    if (e == Estimator::dense) dense_tps = tps;
    const double ratio = dense_tps > 0 ? tps / dense_tps : 0;
    if (o.json) {
      rows.push_back({{"attention", to_string(e)}, {"context", o.context}, {"batch", o.batch}, {"page_size", o.page_size},
                      {"budget", o.budget}, {"ms_per_step", med}, {"tokens_per_s", tps}, {"bytes_per_step", bytes},
                      {"bytes_limit_tokens_per_s", limit}, {"vs_dense", ratio}});
    } else {
      std::printf("%-8s %8lld %5d %6d %10.2f %12.1f %12.1f %14.1f %7.0f%% %8.2fx\n", to_string(e),
                  static_cast<long long>(o.context), o.batch, o.page_size, med, tps, bytes / 1e6, limit, 100 * tps / limit,
                  ratio);
    }
  }
  if (o.json)
    std::printf("%s\n", nlohmann::json{{"speed_only_random_weights", o.model.empty()}, {"bandwidth_gbps", bw},
                                       {"device", o.device},
                                       {"fill", filled}, {"rows", rows}}
                            .dump(2)
                            .c_str());
  return 0;
}

}  // namespace

Runner add_bench_decode(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  app.add_option("--model", o->model, "Hugging Face model directory");
  app.add_option("--shape", o->shape, "Random weights of a shape: llama3-8b | qwen3-8b | mistral-7b | tiny (speed only)");
  app.add_option("--context", o->context, "Tokens per sequence in the KV cache")->capture_default_str();
  app.add_option("--batch", o->batch, "Sequences decoded together")->capture_default_str();
  app.add_option("--attention", o->attention, "Comma-separated estimators (dense first gives the ratio)")->capture_default_str();
  app.add_option("--budget", o->budget, "Top-k budget in tokens")->capture_default_str();
  app.add_option("--page-size", o->page_size, "KV page size")->capture_default_str();
  app.add_option("--sink", o->sink, "Sink pages")->capture_default_str();
  app.add_option("--recent", o->recent, "Recent pages")->capture_default_str();
  app.add_option("--dense-layers", o->dense_layers, "First N layers dense")->capture_default_str();
  app.add_option("--gqa", o->gqa, "GQA aggregation: max | softmax_sum")->capture_default_str();
  app.add_option("--offset", o->offset, "UNIQUE offset form: channel | norm")->capture_default_str();
  app.add_option("--alpha", o->alpha, "UNIQUE offset scale")->capture_default_str();
  app.add_option("--steps", o->steps, "Timed decode steps per estimator (median)")->capture_default_str();
  app.add_option("--layers", o->layers, "Use only the first N layers (0 = all; for machines with little memory)");
  app.add_option("--kv-dtype", o->kv_dtype, "KV cache dtype")->capture_default_str();
  app.add_option("--stats-dtype", o->stats_dtype, "Page statistics dtype: auto (= KV dtype) | fp32 | bf16 | fp16 | fp8 (e4m3, a power-of-two scale per page, KV head and statistics pair)")
      ->capture_default_str();
  app.add_option("--weights-dtype", o->weights_dtype, "Random weights dtype (--shape)")->capture_default_str();
  app.add_option("--bandwidth-gbps", o->bandwidth_gbps, "Memory read bandwidth for the bytes-limit (0 = measure)");
  app.add_option("--threads", o->threads, "OpenMP threads (0 = default)");
  app.add_option("--device", o->device, "cpu | cuda (bytes-limit at the GPU's measured copy peak)")->capture_default_str();
  app.add_flag("--no-graph", o->no_graph, "cuda: launch every kernel of a step instead of replaying a CUDA graph");
  app.add_option("--fill", o->fill,
                 "How the KV cache is filled: synthetic (keys/values drawn directly, no model) | prefill (the "
                 "model's prefill over random token ids, with the --prefill attention)")
      ->capture_default_str();
  app.add_option("--prefill-chunk", o->prefill_chunk,
                 "Prompt tokens per prefill forward / synthetic fill chunk (0 = 256 on the CPU, 2048 on cuda)")
      ->capture_default_str();
  add_prefill_flags(app, o->prefill);
  app.add_flag("--json", o->json, "Print JSON");
  return [o] { return run(*o); };
}

}  // namespace unique::cli

// `unique generate`: prompt(s) -> text with a Hugging Face model directory on the CPU.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "unique/engine/engine.h"
#include "unique/engine/tokenizer.h"
#include "unique/error.h"

namespace unique::cli {

namespace {

struct GenOptions {
  std::string model, device = "cpu", attention = "unique", gqa = "max", offset = "channel", kv_dtype = "auto", weights = "auto",
              stats_dtype = "auto";
  std::vector<std::string> prompts, prompt_files, prompt_ids;
  std::string dump_logits;
  PrefillFlags prefill;
  int max_new_tokens = 64, budget = 2048, page_size = 16, sink = 1, recent = 1, dense_layers = 0;
  int top_k = 0, threads = 0, prefill_chunk = 256;
  int64_t max_context = 0;
  float temperature = 0, top_p = 1, alpha = 1;
  uint64_t seed = 0;
  bool no_special = false, ignore_eos = false, quiet = false;
};

std::vector<int> parse_ids(const std::string& s) {
  std::vector<int> ids;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) {
    if (t.empty()) continue;
    try {
      size_t used = 0;
      const long v = std::stol(t, &used);
      if (used != t.size() || v < 0 || v > (1 << 30)) throw std::invalid_argument("");
      ids.push_back(static_cast<int>(v));
    } catch (const std::exception&) {
      throw_arg("--prompt-ids", "comma-separated token ids", t);
    }
  }
  return ids;
}

// Writes the bytes of s that form complete UTF-8 characters; keeps the tail in `pending`.
void stream_utf8(std::string& pending, const std::string& add) {
  pending += add;
  size_t end = pending.size();
  // Back up over an incomplete trailing sequence (at most 3 bytes).
  for (size_t k = 1; k <= 3 && k <= pending.size(); ++k) {
    const unsigned char c = static_cast<unsigned char>(pending[pending.size() - k]);
    if ((c & 0xC0) == 0x80) continue;
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (need > k) end = pending.size() - k;
    break;
  }
  std::fwrite(pending.data(), 1, end, stdout);
  std::fflush(stdout);
  pending.erase(0, end);
}

int run(GenOptions o) {
  UNIQUE_CHECK_ARG(o.device == "cpu" || o.device == "cuda", "--device", "cpu or cuda", o.device);
  if (o.threads > 0) omp_set_num_threads(o.threads);
  if (o.model.empty()) o.model = demo_model_dir("generate");
  const auto t_load0 = std::chrono::steady_clock::now();
  engine::LoadOptions lo;
  if (o.weights == "fp32") lo.weights_fp32 = true;
  else if (o.weights != "auto") throw_arg("--weights", "auto or fp32", o.weights);
  auto model = engine::Model::load(o.model, lo);
  const engine::ModelConfig& mc = model->config();
  const bool need_tok = !o.prompts.empty() || !o.prompt_files.empty() || !o.quiet;
  std::unique_ptr<engine::Tokenizer> tok;
  if (need_tok) tok = std::make_unique<engine::Tokenizer>(engine::Tokenizer::from_file(o.model + "/tokenizer.json"));
  std::vector<std::vector<int>> prompts;
  std::vector<std::string> texts;
  for (const auto& p : o.prompts) texts.push_back(p);
  for (const auto& f : o.prompt_files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw Error("--prompt-file " + f + ": cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    texts.push_back(ss.str());
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    if (texts[i].empty()) throw_arg("prompt " + std::to_string(i), "a non-empty text", "an empty prompt");
    prompts.push_back(tok->encode(texts[i], !o.no_special));
  }
  for (const auto& s : o.prompt_ids) {
    prompts.push_back(parse_ids(s));
    if (prompts.back().empty()) throw_arg("--prompt-ids", "at least one token id", "none");
  }
  if (prompts.empty()) throw_arg("prompt", "--prompt, --prompt-file or --prompt-ids", "none");
  size_t longest = 0;
  for (auto& p : prompts) longest = std::max(longest, p.size());

  engine::EngineOptions eo;
  eo.attention.estimator = parse_estimator(o.attention);
  eo.attention.page_size = o.page_size;
  eo.attention.budget_tokens = o.budget;
  eo.attention.sink_pages = o.sink;
  eo.attention.recent_pages = o.recent;
  eo.attention.gqa = parse_gqa(o.gqa);
  eo.attention.offset = parse_offset(o.offset);
  eo.attention.alpha = o.alpha;
  eo.attention.seed = o.seed;
  o.prefill.apply(eo.attention);
  eo.dense_layers = o.dense_layers;
  eo.max_batch = static_cast<int>(prompts.size());
  eo.prefill_chunk = o.prefill_chunk;
  const DType wdt = model->layers().empty() ? DType::f32 : model->layers()[0].q.dtype;
  eo.device = o.device == "cuda" ? Device::cuda : Device::cpu;
  // fp32 weights keep an fp32 cache on the CPU; the GPU's prefill wants 16-bit K/V.
  eo.kv_dtype = o.kv_dtype == "auto" ? (wdt == DType::f32 && eo.device == Device::cpu ? DType::f32 : DType::bf16)
                                     : parse_dtype(o.kv_dtype);
  eo.stats_dtype = o.stats_dtype == "auto" ? eo.kv_dtype : parse_stats_dtype(o.stats_dtype);
  eo.max_context = o.max_context > 0 ? o.max_context
                                     : static_cast<int64_t>(longest) + std::max(o.max_new_tokens, 1);
  if (mc.sliding_window > 0 && eo.max_context > mc.sliding_window)
    std::fprintf(stderr, "unique: warning: config.json sliding_window %lld is not applied (full attention)\n",
                 static_cast<long long>(mc.sliding_window));
  engine::Engine eng(*model, eo);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load0).count();

  engine::GenerateOptions go;
  go.max_new_tokens = o.max_new_tokens;
  go.sampler.temperature = o.temperature;
  go.sampler.top_k = o.top_k;
  go.sampler.top_p = o.top_p;
  go.sampler.seed = o.seed;
  if (!o.ignore_eos) go.eos_ids = mc.eos_token_ids;
  go.keep_logits = !o.dump_logits.empty();
  const bool stream = prompts.size() == 1 && !o.quiet;
  std::string pending;
  bool echoed = false;
  // A prompt given inline is echoed before its continuation; a prompt file (long contexts)
  // is named instead of printed.
  auto prompt_header = [&](size_t b) {
    if (b < o.prompts.size()) return texts[b];
    if (b < texts.size())
      return detail::concat("[", o.prompt_files[b - o.prompts.size()], ": ", prompts[b].size(), " tokens] ... ");
    return std::string();
  };
  auto echo_prompt = [&] {
    if (echoed) return;
    echoed = true;
    std::fputs(prompt_header(0).c_str(), stdout);
    std::fflush(stdout);
  };
  auto on_token = [&](int b, int t) {
    if (!stream) return;
    echo_prompt();  // after the checks in generate(), so an error prints nothing else
    if (tok->is_special(t) || t >= tok->vocab_size()) return;  // config vocab may be padded
    stream_utf8(pending, tok->token_bytes(t));
  };
  engine::GenerateResult r = engine::generate(eng, prompts, go, on_token);
  if (stream) {
    echo_prompt();
    std::fwrite(pending.data(), 1, pending.size(), stdout);
    std::fputs("\n", stdout);
  } else if (!o.quiet) {
    for (size_t b = 0; b < prompts.size(); ++b) {
      std::printf("=== prompt %zu (%zu tokens) ===\n", b, prompts[b].size());
      std::fputs(prompt_header(b).c_str(), stdout);
      std::string out;
      for (int t : r.tokens[b])
        if (!tok->is_special(t) && t < tok->vocab_size()) out += tok->token_bytes(t);
      std::fwrite(out.data(), 1, out.size(), stdout);
      std::fputs("\n", stdout);
    }
  }
  if (!o.dump_logits.empty()) {
    nlohmann::json j;
    j["prompts"] = prompts;
    j["tokens"] = r.tokens;
    j["logits"] = r.logits;
    std::ofstream f(o.dump_logits);
    if (!f) throw Error("--dump-logits " + o.dump_logits + ": cannot write");
    f << j.dump();
  }
  const double pf = r.prefill_seconds > 0 ? r.prefill_tokens / r.prefill_seconds : 0;
  const double dc = r.decode_seconds > 0 ? r.decode_tokens / r.decode_seconds : 0;
  const AttentionConfig& ac = eo.attention;
  const std::string prefill_mode = prefill_summary(ac);
  std::printf("[%s %s, %d layers, weights %s, KV %s, stats %s | attention %s, page %d, budget %d, sink %d, recent %d, dense layers %d | prefill %s | %s | load %.2f s]\n",
              engine::to_string(mc.arch), o.model.c_str(), mc.num_layers, to_string(wdt), to_string(eo.kv_dtype), to_string(eo.stats_dtype),
              to_string(ac.estimator), ac.page_size, ac.budget_tokens, ac.sink_pages, ac.recent_pages, eo.dense_layers,
              prefill_mode.c_str(),
              eo.device == Device::cuda ? "cuda, decode steps as CUDA graphs"
                                        : ("cpu, " + std::to_string(omp_get_max_threads()) + " threads").c_str(),
              load_s);
  char kept[64] = "";
  if (r.prefill_blocks_dense > 0)
    std::snprintf(kept, sizeof kept, ", key blocks kept %.1f%%", 100.0 * r.prefill_blocks_kept / r.prefill_blocks_dense);
  std::printf("prefill: %lld tokens in %.3f s (%.1f tokens/s%s) | decode: %lld tokens in %.3f s (%.1f tokens/s)\n",
              static_cast<long long>(r.prefill_tokens), r.prefill_seconds, pf, kept, static_cast<long long>(r.decode_tokens),
              r.decode_seconds, dc);
  return 0;
}

}  // namespace

Runner add_generate(CLI::App& app) {
  auto o = std::make_shared<GenOptions>();
  app.add_option("--model", o->model,
                 "Hugging Face model directory (config.json, *.safetensors, tokenizer.json); default: $UNIQUE_MODEL, else\n"
                 "the in-house demo model models/unique-demo (byte-level Llama, 8K context)");
  app.add_option("--prompt", o->prompts, "Prompt text (repeat for a batch of prompts)");
  app.add_option("--prompt-file", o->prompt_files,
                 "File whose whole content is one prompt (repeatable; named, not echoed, in the output)");
  app.add_option("--prompt-ids", o->prompt_ids, "Comma-separated token ids, bypassing the tokenizer (repeatable)");
  app.add_option("--max-new-tokens", o->max_new_tokens, "Tokens to generate per prompt")->capture_default_str();
  app.add_option("--attention", o->attention, "Decode attention: dense | unique | quest | mean | oracle | random")
      ->capture_default_str();
  app.add_option("--budget", o->budget, "Top-k budget in tokens")->capture_default_str();
  app.add_option("--page-size", o->page_size, "KV page size in tokens")->capture_default_str();
  app.add_option("--sink", o->sink, "First pages always attended")->capture_default_str();
  app.add_option("--recent", o->recent, "Last pages always attended")->capture_default_str();
  app.add_option("--dense-layers", o->dense_layers, "Keep the first N layers dense")->capture_default_str();
  app.add_option("--gqa", o->gqa, "GQA aggregation of page scores: max | softmax_sum")->capture_default_str();
  app.add_option("--alpha", o->alpha, "UNIQUE offset scale")->capture_default_str();
  app.add_option("--offset", o->offset, "UNIQUE offset form: channel | norm")->capture_default_str();
  app.add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
  app.add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0 = all)")->capture_default_str();
  app.add_option("--top-p", o->top_p, "Nucleus mass")->capture_default_str();
  app.add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
  app.add_option("--device", o->device, "cpu | cuda (weights, KV cache and kernels on the GPU)")->capture_default_str();
  app.add_option("--threads", o->threads, "OpenMP threads (0 = default)");
  app.add_option("--kv-dtype", o->kv_dtype,
                 "KV cache dtype: auto (fp32 for fp32 weights on the CPU, else bf16) | fp32 | bf16 | fp16")
      ->capture_default_str();
  app.add_option("--stats-dtype", o->stats_dtype, "Page statistics dtype: auto (= KV dtype) | fp32 | bf16 | fp16 | fp8 (e4m3, a power-of-two scale per page, KV head and statistics pair)")
      ->capture_default_str();
  app.add_option("--weights", o->weights, "auto (as stored, memory-mapped) | fp32 (convert at load)")->capture_default_str();
  app.add_option("--max-context", o->max_context, "KV pool per sequence in tokens (0 = longest prompt + max-new-tokens)");
  app.add_option("--prefill-chunk", o->prefill_chunk, "Prompt tokens per prefill forward")->capture_default_str();
  add_prefill_flags(app, o->prefill);
  app.add_flag("--no-special", o->no_special, "Do not add the tokenizer's special tokens (BOS)");
  app.add_flag("--ignore-eos", o->ignore_eos, "Always generate max-new-tokens tokens");
  app.add_flag("--quiet", o->quiet, "Print only the speed lines");
  app.add_option("--dump-logits", o->dump_logits, "Write prompts, tokens and the logits of every generated token as JSON");
  return [o] { return run(*o); };
}

}  // namespace unique::cli

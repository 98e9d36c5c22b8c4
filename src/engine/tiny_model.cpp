#include "unique/engine/tiny_model.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "unique/engine/safetensors.h"
#include "unique/engine/tokenizer.h"
#include "unique/error.h"

namespace unique::engine {

using nlohmann::json;

const std::string& tiny_corpus() {
  static const std::string text =
      "Long-context decoding is limited by memory bandwidth: every new token reads the whole key "
      "and value cache of every layer. Top-k sparse attention keeps a few statistics for every "
      "page of the cache, the mean and the spread of its keys, scores the pages against the query, "
      "and attends only to the pages that matter. The first pages and the most recent pages are "
      "always kept. With a budget of two thousand tokens out of one hundred thousand, a decode step "
      "reads the statistics and the selected pages instead of the whole cache, and runs many times "
      "faster while the answer stays the same. The quick brown fox jumps over the lazy dog. "
      "Once upon a time there was a small model that wanted to read very long books. It learned "
      "to look at the summary of every page first, and to open only the pages that answered its "
      "question. In 2026 it read 131072 tokens in a few seconds, and it said: \"I'm done, what's next?\"\n"
      "def attention(q, k, v):\n    return softmax(q @ k.T / sqrt(d)) @ v\n";
  return text;
}

namespace {

std::string byte_char(uint8_t b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
  uint32_t cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<uint8_t> random_tensor(int64_t n, DType dt, float stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<uint8_t> out(static_cast<size_t>(n) * dtype_size(dt));
  for (int64_t i = 0; i < n; ++i) store_from_float(out.data(), dt, static_cast<size_t>(i), nd(rng));
  return out;
}

std::vector<uint8_t> const_tensor(int64_t n, DType dt, float v) {
  std::vector<uint8_t> out(static_cast<size_t>(n) * dtype_size(dt));
  for (int64_t i = 0; i < n; ++i) store_from_float(out.data(), dt, static_cast<size_t>(i), v);
  return out;
}

// Output head fitted so that, on the token's own (normalised) embedding, the logits are the
// log bigram probabilities of the built-in text: the random model then writes
// text-like word salad (attention and MLP still perturb it), not random bytes. Least
// squares W^T = (En^T En + lambda I)^-1 En^T Lg, solved by Cholesky in double.
std::vector<uint8_t> bigram_head(const Tokenizer& t, const std::vector<double>& E, int V, int64_t H, DType dt) {
  const std::vector<int> ids = t.encode(tiny_corpus(), false);
  std::vector<double> cnt(static_cast<size_t>(V) * V, 1e-3);
  for (size_t i = 0; i + 1 < ids.size(); ++i) cnt[size_t(ids[i]) * V + ids[i + 1]] += 1;
  std::vector<double> Lg(cnt.size());
  for (int a = 0; a < V; ++a) {
    double sum = 0, mean = 0;
    for (int b = 0; b < V; ++b) sum += cnt[size_t(a) * V + b];
    for (int b = 0; b < V; ++b) mean += Lg[size_t(a) * V + b] = 2.0 * std::log(cnt[size_t(a) * V + b] / sum);
    mean /= V;
    for (int b = 0; b < V; ++b) Lg[size_t(a) * V + b] -= mean;
  }
  std::vector<double> En(E.size());
  for (int a = 0; a < V; ++a) {
    double ss = 0;
    for (int64_t h = 0; h < H; ++h) ss += E[a * H + h] * E[a * H + h];
    const double r = 1.0 / std::sqrt(ss / H + 1e-5);
    for (int64_t h = 0; h < H; ++h) En[a * H + h] = E[a * H + h] * r;
  }
  std::vector<double> A(size_t(H) * H, 0.0), B(size_t(H) * V, 0.0);  // En^T En + lI, En^T Lg
  for (int a = 0; a < V; ++a)
    for (int64_t i = 0; i < H; ++i) {
      const double e = En[a * H + i];
      for (int64_t j = 0; j < H; ++j) A[i * H + j] += e * En[a * H + j];
      for (int b = 0; b < V; ++b) B[i * V + b] += e * Lg[size_t(a) * V + b];
    }
  for (int64_t i = 0; i < H; ++i) A[i * H + i] += 1.0;
  for (int64_t j = 0; j < H; ++j) {  // Cholesky A = L L^T in place (lower)
    for (int64_t k = 0; k < j; ++k) A[j * H + j] -= A[j * H + k] * A[j * H + k];
    A[j * H + j] = std::sqrt(A[j * H + j]);
    for (int64_t i = j + 1; i < H; ++i) {
      for (int64_t k = 0; k < j; ++k) A[i * H + j] -= A[i * H + k] * A[j * H + k];
      A[i * H + j] /= A[j * H + j];
    }
  }
  for (int b = 0; b < V; ++b) {  // solve L L^T x = B[:, b]
    std::vector<double> x(H);
    for (int64_t i = 0; i < H; ++i) {
      double v = B[i * V + b];
      for (int64_t k = 0; k < i; ++k) v -= A[i * H + k] * x[k];
      x[i] = v / A[i * H + i];
    }
    for (int64_t i = H - 1; i >= 0; --i) {
      double v = x[i];
      for (int64_t k = i + 1; k < H; ++k) v -= A[k * H + i] * x[k];
      x[i] = v / A[i * H + i];
    }
    for (int64_t i = 0; i < H; ++i) B[i * V + b] = x[i];
  }
  std::vector<uint8_t> out(static_cast<size_t>(V) * H * dtype_size(dt));
  for (int b = 0; b < V; ++b)
    for (int64_t h = 0; h < H; ++h) store_from_float(out.data(), dt, size_t(b) * H + h, static_cast<float>(B[h * V + b]));
  return out;
}

}  // namespace

std::string make_byte_level_tokenizer_json(const std::string& corpus, int merges) {
  // Words of the corpus as sequences of byte-level symbols.
  std::map<std::vector<std::string>, int> words;
  for (std::string_view w : Tokenizer::split_regex(corpus, Tokenizer::Regex::llama3)) {
    std::vector<std::string> syms;
    for (char c : w) syms.push_back(byte_char(static_cast<uint8_t>(c)));
    ++words[syms];
  }
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(static_cast<uint8_t>(b))] = b;
  json merge_list = json::array();
  int next_id = 256;
  for (int m = 0; m < merges; ++m) {
    std::map<std::pair<std::string, std::string>, int> count;
    for (auto& [syms, n] : words)
      for (size_t i = 0; i + 1 < syms.size(); ++i) count[{syms[i], syms[i + 1]}] += n;
    std::pair<std::string, std::string> best;
    int best_n = 1;  // only pairs seen at least twice
    for (auto& [p, n] : count)
      if (n > best_n) {
        best = p;
        best_n = n;
      }
    if (best.first.empty()) break;
    const std::string merged = best.first + best.second;
    if (!vocab.contains(merged)) vocab[merged] = next_id++;
    merge_list.push_back(best.first + " " + best.second);
    std::map<std::vector<std::string>, int> next;
    for (auto& [syms, n] : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < syms.size(); ++i) {
        if (i + 1 < syms.size() && syms[i] == best.first && syms[i + 1] == best.second) {
          out.push_back(merged);
          ++i;
        } else {
          out.push_back(syms[i]);
        }
      }
      next[out] += n;
    }
    words.swap(next);
  }
  const int bos = next_id, eos = next_id + 1;
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = json::array(
      {{{"id", bos}, {"content", "<|begin_of_text|>"}, {"single_word", false}, {"lstrip", false},
        {"rstrip", false}, {"normalized", false}, {"special", true}},
       {{"id", eos}, {"content", "<|end_of_text|>"}, {"single_word", false}, {"lstrip", false},
        {"rstrip", false}, {"normalized", false}, {"special", true}}});
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                            {{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 1}}}},
                            {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
      {"special_tokens",
       {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {bos}}, {"tokens", {"<|begin_of_text|>"}}}}}}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},          {"dropout", nullptr}, {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},      {"byte_fallback", false}, {"ignore_merges", true},
                {"vocab", vocab},         {"merges", merge_list}};
  return j.dump(1);
}

int64_t write_tiny_model(const std::string& dir, const TinyModelOptions& o) {
  UNIQUE_CHECK_ARG(o.arch == "llama" || o.arch == "mistral" || o.arch == "qwen2" || o.arch == "qwen3", "arch",
                   "llama, mistral, qwen2 or qwen3", o.arch);
  UNIQUE_CHECK_ARG(o.heads % o.kv_heads == 0, "heads", "a multiple of kv_heads", o.heads);
  ::mkdir(dir.c_str(), 0755);
  const std::string tok = make_byte_level_tokenizer_json(tiny_corpus(), o.merges);
  const Tokenizer t = Tokenizer::from_json(tok, "tokenizer.json");
  const int vocab = t.vocab_size();
  const int bos = t.token_id("<|begin_of_text|>"), eos = t.token_id("<|end_of_text|>");
  std::mt19937_64 rng(o.seed + 0x5EED);
  std::vector<TensorToWrite> ts;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, std::vector<uint8_t> data) {
    ts.push_back({name, o.dtype, std::move(shape), std::move(data)});
  };
  const int64_t H = o.hidden, D = o.head_dim, qd = int64_t(o.heads) * D, kd = int64_t(o.kv_heads) * D;
  const float s_in = 1.0f / std::sqrt(float(H)), s_i = 1.0f / std::sqrt(float(o.intermediate));
  // Embeddings N(0, 1); kept in float to fit the output head below.
  std::vector<double> E(static_cast<size_t>(vocab) * H);
  {
    std::normal_distribution<double> nd(0.0, 1.0);
    for (auto& e : E) e = nd(rng);
    std::vector<uint8_t> bytes(E.size() * dtype_size(o.dtype));
    for (size_t i = 0; i < E.size(); ++i) {
      store_from_float(bytes.data(), o.dtype, i, static_cast<float>(E[i]));
      E[i] = load_as_float(bytes.data(), o.dtype, i);  // what the model will read
    }
    add("model.embed_tokens.weight", {vocab, H}, std::move(bytes));
  }
  for (int l = 0; l < o.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, const_tensor(H, o.dtype, 1.0f));
    add(p + "post_attention_layernorm.weight", {H}, const_tensor(H, o.dtype, 1.0f));
    add(p + "self_attn.q_proj.weight", {qd, H}, random_tensor(qd * H, o.dtype, 2 * s_in, rng));
    add(p + "self_attn.k_proj.weight", {kd, H}, random_tensor(kd * H, o.dtype, 2 * s_in, rng));
    add(p + "self_attn.v_proj.weight", {kd, H}, random_tensor(kd * H, o.dtype, s_in, rng));
    add(p + "self_attn.o_proj.weight", {H, qd}, random_tensor(H * qd, o.dtype, 0.5f * s_in, rng));
    if (o.arch == "qwen2") {
      add(p + "self_attn.q_proj.bias", {qd}, random_tensor(qd, o.dtype, 0.1f, rng));
      add(p + "self_attn.k_proj.bias", {kd}, random_tensor(kd, o.dtype, 0.1f, rng));
      add(p + "self_attn.v_proj.bias", {kd}, random_tensor(kd, o.dtype, 0.1f, rng));
    }
    if (o.arch == "qwen3") {
      add(p + "self_attn.q_norm.weight", {D}, const_tensor(D, o.dtype, 1.0f));
      add(p + "self_attn.k_norm.weight", {D}, const_tensor(D, o.dtype, 1.0f));
    }
    add(p + "mlp.gate_proj.weight", {o.intermediate, H}, random_tensor(o.intermediate * H, o.dtype, s_in, rng));
    add(p + "mlp.up_proj.weight", {o.intermediate, H}, random_tensor(o.intermediate * H, o.dtype, s_in, rng));
    add(p + "mlp.down_proj.weight", {H, o.intermediate}, random_tensor(H * o.intermediate, o.dtype, 0.5f * s_i, rng));
  }
  add("model.norm.weight", {H}, const_tensor(H, o.dtype, 1.0f));
  if (!o.tie_embeddings) add("lm_head.weight", {vocab, H}, bigram_head(t, E, vocab, H, o.dtype));
  write_safetensors(dir + "/model.safetensors", ts);

  static const std::map<std::string, std::string> names = {{"llama", "LlamaForCausalLM"},
                                                           {"mistral", "MistralForCausalLM"},
                                                           {"qwen2", "Qwen2ForCausalLM"},
                                                           {"qwen3", "Qwen3ForCausalLM"}};
  json c = {{"architectures", {names.at(o.arch)}},
            {"model_type", o.arch},
            {"hidden_size", o.hidden},
            {"intermediate_size", o.intermediate},
            {"num_hidden_layers", o.layers},
            {"num_attention_heads", o.heads},
            {"num_key_value_heads", o.kv_heads},
            {"head_dim", o.head_dim},
            {"vocab_size", vocab},
            {"max_position_embeddings", o.max_position},
            {"rms_norm_eps", 1e-5},
            {"rope_theta", 500000.0},
            {"hidden_act", "silu"},
            {"tie_word_embeddings", o.tie_embeddings},
            {"bos_token_id", bos},
            {"eos_token_id", eos},
            {"torch_dtype", o.dtype == DType::f32 ? "float32" : o.dtype == DType::f16 ? "float16" : "bfloat16"}};
  if (o.arch == "llama")
    c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  return write_model_dir_files(dir, c.dump(2) + "\n", tok, bos, eos, o.max_position);
}

int64_t write_model_dir_files(const std::string& dir, const std::string& config_json, const std::string& tokenizer_json,
                              int bos, int eos, int64_t max_position) {
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream f(dir + "/" + name);
    if (!f) throw Error("cannot write " + dir + "/" + name);
    f << text;
  };
  write("config.json", config_json);
  write("generation_config.json", json{{"bos_token_id", bos}, {"eos_token_id", eos}}.dump(2) + "\n");
  write("tokenizer.json", tokenizer_json);
  write("tokenizer_config.json",
        json{{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}, {"tokenizer_class", "PreTrainedTokenizerFast"},
             {"model_max_length", max_position}}.dump(2) + "\n");
  struct stat st;
  int64_t bytes = 0;
  for (const char* f : {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"})
    if (::stat((dir + "/" + f).c_str(), &st) == 0) bytes += st.st_size;
  return bytes;
}

}  // namespace unique::engine

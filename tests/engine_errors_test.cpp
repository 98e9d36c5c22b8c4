// Bad input to the engine: clear unique::Error messages naming the file and field.
#include <gtest/gtest.h>

#include <fstream>

#include "engine_test_util.h"
#include "unique/engine/engine.h"
#include "unique/engine/model.h"
#include "unique/engine/safetensors.h"
#include "unique/error.h"

using namespace unique;
using namespace unique::engine;

namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const unique::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG EXCEPTION TYPE: ") + e.what();
  }
  return "NO ERROR";
}

#define EXPECT_ERROR_HAS(expr, ...)                                          \
  do {                                                                       \
    const std::string msg_ = error_of([&] { (void)(expr); });                \
    for (const char* needle_ : {__VA_ARGS__})                                \
      EXPECT_NE(msg_.find(needle_), std::string::npos) << "message: " << msg_; \
  } while (0)

std::string file_text(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

TEST(EngineErrors, MissingFiles) {
  const std::string dir = enginetest::temp_dir("missing");
  EXPECT_ERROR_HAS(Model::load(dir), "config.json", "cannot open");
  enginetest::TinySpec s;
  enginetest::write_tiny(dir, s);
  std::remove((dir + "/model.safetensors").c_str());
  EXPECT_ERROR_HAS(Model::load(dir), "model.safetensors");
}

TEST(EngineErrors, TruncatedSafetensors) {
  const std::string dir = enginetest::temp_dir("trunc");
  enginetest::write_tiny(dir, {});
  const std::string full = file_text(dir + "/model.safetensors");
  for (size_t keep : {size_t(0), size_t(5), size_t(12), full.size() / 2, full.size() - 1}) {
    enginetest::write_text(dir + "/model.safetensors", full.substr(0, keep));
    EXPECT_ERROR_HAS(Model::load(dir), "model.safetensors");
  }
}

TEST(EngineErrors, ShapeAndDtypeMismatch) {
  const std::string dir = enginetest::temp_dir("shape");
  enginetest::write_tiny(dir, {});
  std::string cfg = file_text(dir + "/config.json");
  const std::string good = cfg;
  cfg.replace(cfg.find("\"intermediate_size\": 96"), 23, "\"intermediate_size\": 80");
  enginetest::write_text(dir + "/config.json", cfg);
  EXPECT_ERROR_HAS(Model::load(dir), "model.safetensors", "mlp.gate_proj.weight", "shape", "[80, 64]");
  enginetest::write_text(dir + "/config.json", good);
  // An integer tensor where a float one is expected.
  std::vector<enginetest::StTensor> ts = {{"model.embed_tokens.weight", "I32", {50, 64}, std::vector<uint8_t>(50 * 64 * 4)}};
  enginetest::write_st(dir + "/model.safetensors", ts);
  EXPECT_ERROR_HAS(Model::load(dir), "model.embed_tokens.weight", "dtype", "I32");
}

TEST(EngineErrors, MissingTensorNamesIt) {
  const std::string dir = enginetest::temp_dir("missing_tensor");
  enginetest::TinySpec s;
  s.tie = true;
  enginetest::write_tiny(dir, s);
  std::string cfg = file_text(dir + "/config.json");
  cfg.replace(cfg.find("\"tie_word_embeddings\": true"), 27, "\"tie_word_embeddings\": false");
  enginetest::write_text(dir + "/config.json", cfg);
  EXPECT_ERROR_HAS(Model::load(dir), "lm_head.weight", "tie_word_embeddings");
}

TEST(EngineErrors, ConfigFields) {
  auto cfg = [](const std::string& body) { return parse_model_config(body, "config.json"); };
  const std::string base =
      R"("hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 50)";
  EXPECT_ERROR_HAS(cfg(R"({"architectures": ["GPT2LMHeadModel"], )" + base + "}"), "config.json", "architectures",
                   "GPT2LMHeadModel");
  EXPECT_ERROR_HAS(cfg(R"({"architectures": ["LlamaForCausalLM"]})"), "config.json", "hidden_size", "missing");
  EXPECT_ERROR_HAS(cfg(R"({"architectures": ["LlamaForCausalLM"], "num_key_value_heads": 3, )" + base + "}"),
                   "num_key_value_heads");
  EXPECT_ERROR_HAS(cfg(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": -4})"), "hidden_size");
  EXPECT_ERROR_HAS(cfg(R"({"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "yarn"}, )" + base + "}"),
                   "rope_scaling");
  EXPECT_ERROR_HAS(cfg(R"({"architectures": ["LlamaForCausalLM"], "hidden_act": "gelu", )" + base + "}"), "hidden_act");
  EXPECT_ERROR_HAS(cfg("not json"), "config.json", "invalid JSON");
  const ModelConfig ok = cfg(R"({"architectures": ["Qwen2ForCausalLM"], "eos_token_id": [3, 4], )" + base + "}");
  EXPECT_TRUE(ok.qkv_bias);
  EXPECT_EQ(ok.num_kv_heads, 4);
  EXPECT_EQ(ok.head_dim, 16);
  EXPECT_EQ(ok.eos_token_ids, (std::vector<int>{3, 4}));
  // transformers >= 5: rope_parameters with rope_theta inside.
  const ModelConfig v5 = cfg(R"({"architectures": ["LlamaForCausalLM"], "rope_parameters": {"rope_type": "llama3",
      "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}, )" + base + "}");
  EXPECT_EQ(v5.rope_scaling, RopeScaling::llama3);
  EXPECT_EQ(v5.rope_theta, 500000.0);
  EXPECT_EQ(v5.rope_factor, 32.0);
  EXPECT_ERROR_HAS(cfg(R"({"architectures": ["LlamaForCausalLM"], "rope_parameters": {"rope_type": "yarn"}, )" + base + "}"),
                   "rope_parameters");
}

TEST(EngineErrors, ShardedIndex) {
  const std::string dir = enginetest::temp_dir("sharded");
  enginetest::write_tiny(dir, {});
  // Move the single file to a shard named by an index: loads.
  std::rename((dir + "/model.safetensors").c_str(), (dir + "/model-00001-of-00001.safetensors").c_str());
  SafetensorsFile f(dir + "/model-00001-of-00001.safetensors");
  nlohmann::json idx;
  for (const auto& t : f.tensors()) idx["weight_map"][t.name] = "model-00001-of-00001.safetensors";
  enginetest::write_text(dir + "/model.safetensors.index.json", idx.dump());
  EXPECT_NO_THROW(Model::load(dir));
  idx["weight_map"]["model.norm.weight"] = "../evil.safetensors";
  enginetest::write_text(dir + "/model.safetensors.index.json", idx.dump());
  EXPECT_ERROR_HAS(Model::load(dir), "model.safetensors.index.json", "model.norm.weight", "plain file name");
  idx["weight_map"]["model.norm.weight"] = "missing.safetensors";
  enginetest::write_text(dir + "/model.safetensors.index.json", idx.dump());
  EXPECT_ERROR_HAS(Model::load(dir), "missing.safetensors");
}

TEST(EngineErrors, SafetensorsHeader) {
  auto parse = [](const std::string& header, uint64_t data_bytes) {
    std::string f(8, '\0');
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) f[i] = char((n >> (8 * i)) & 0xFF);
    f += header + std::string(data_bytes, '\0');
    return parse_safetensors_header(reinterpret_cast<const uint8_t*>(f.data()), f.size(), f.size(), "x.safetensors");
  };
  EXPECT_EQ(parse(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 8).size(), 1u);
  EXPECT_ERROR_HAS(parse(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4), "x.safetensors",
                   "data_offsets", "truncated");
  EXPECT_ERROR_HAS(parse(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8), "12 bytes");
  EXPECT_ERROR_HAS(parse(R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", 8), "dtype", "Q4");
  EXPECT_ERROR_HAS(parse(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8), "shape");
  EXPECT_ERROR_HAS(parse(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
                   "overlap");
  EXPECT_ERROR_HAS(parse(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", 8),
                   "shape");
  const std::string bad_len = std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}";
  EXPECT_ERROR_HAS(parse_safetensors_header(reinterpret_cast<const uint8_t*>(bad_len.data()), bad_len.size(),
                                            bad_len.size(), "y.safetensors"),
                   "y.safetensors", "header length");
}

TEST(EngineErrors, PromptProblems) {
  const std::string dir = enginetest::temp_dir("prompt");
  enginetest::write_tiny(dir, {});
  auto model = Model::load(dir);
  EngineOptions eo;
  eo.max_context = 8;
  eo.attention.page_size = 4;
  eo.attention.budget_tokens = 4;
  Engine eng(*model, eo);
  const int s = eng.add_sequence();
  EXPECT_ERROR_HAS(eng.prefill(s, {}, nullptr), "prompt", "empty");
  EXPECT_ERROR_HAS(eng.prefill(s, std::vector<int>(9, 1), nullptr), "max_context", "9 tokens");
  EXPECT_ERROR_HAS(eng.prefill(s, {1, 2, 50}, nullptr), "prompt token 2", "0..49");
  EXPECT_EQ(eng.length(s), 0);  // nothing appended on error
  GenerateOptions go;
  go.max_new_tokens = 4;
  EXPECT_ERROR_HAS(generate(eng, {{1, 2, 3, 4, 5, 6}}, go), "max_context");
  EXPECT_ERROR_HAS(generate(eng, {{}}, go), "prompt 0", "empty");
  EXPECT_ERROR_HAS(generate(eng, {{1}, {2}}, go), "max_batch");
}

}  // namespace

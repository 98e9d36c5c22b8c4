// ModelConfig: the fields of a Hugging Face config.json that the Llama-family forward
// needs, parsed and range-checked (untrusted input).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace unique::engine {

enum class Arch : uint8_t { llama, mistral, qwen2, qwen3 };
const char* to_string(Arch a);

enum class RopeScaling : uint8_t { none, linear, llama3 };

struct ModelConfig {
  Arch arch = Arch::llama;
  std::string architecture;  // as in the file, e.g. "LlamaForCausalLM"
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::none;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0, rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position = 8192;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;   // Qwen2 (always), Llama with attention_bias
  bool qk_norm = false;    // Qwen3: RMSNorm over head_dim on q and k
  int64_t sliding_window = 0;  // 0 = none (we do full attention; see generate's warning)
  std::vector<int> eos_token_ids;
  int bos_token_id = -1;
  std::string torch_dtype;
};

// Parses config.json text; `source` names the file in errors. Throws unique::Error
// naming the field (unsupported architecture, missing or out-of-range sizes,
// num_heads not a multiple of num_kv_heads, unsupported rope_scaling / hidden_act).
ModelConfig parse_model_config(const std::string& text, const std::string& source);

// Inverse frequencies of RoPE for this config (llama3 / linear scaling applied), head_dim/2.
std::vector<double> rope_inv_freq(const ModelConfig& c);

}  // namespace unique::engine

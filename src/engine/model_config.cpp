#include "unique/engine/model_config.h"

#include <cmath>

#include "engine/json_util.h"
#include "unique/error.h"

namespace unique::engine {

using nlohmann::json;
using unique::detail::concat;

const char* to_string(Arch a) {
  switch (a) {
    case Arch::mistral: return "mistral";
    case Arch::qwen2: return "qwen2";
    case Arch::qwen3: return "qwen3";
    default: return "llama";
  }
}

namespace {
void token_ids(const json& j, const char* key, const std::string& src, std::vector<int>& out) {
  const json* v = detail::field(j, key);
  if (!v) return;
  auto one = [&](const json& x) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > (1 << 30))
      throw_arg(src + ": field " + key, "token ids (non-negative integers)", v->dump());
    out.push_back(static_cast<int>(x.get<int64_t>()));
  };
  if (v->is_array()) {
    for (const json& x : *v) one(x);
  } else {
    one(*v);
  }
}
}  // namespace

ModelConfig parse_model_config(const std::string& text, const std::string& src) {
  json j = detail::parse_json(text, src);
  if (!j.is_object()) throw_arg(src, "a JSON object", j.type_name());
  ModelConfig c;
  const json* archs = detail::field(j, "architectures");
  std::string mt = detail::get_str_or(j, "model_type", src, "");
  if (archs && archs->is_array() && !archs->empty() && (*archs)[0].is_string())
    c.architecture = (*archs)[0].get<std::string>();
  else if (archs)
    throw_arg(src + ": field architectures", "a list of names", archs->dump());
  if (c.architecture.empty()) {
    if (mt == "llama") c.architecture = "LlamaForCausalLM";
    else if (mt == "mistral") c.architecture = "MistralForCausalLM";
    else if (mt == "qwen2") c.architecture = "Qwen2ForCausalLM";
    else if (mt == "qwen3") c.architecture = "Qwen3ForCausalLM";
  }
  if (c.architecture == "LlamaForCausalLM") c.arch = Arch::llama;
  else if (c.architecture == "MistralForCausalLM") c.arch = Arch::mistral;
  else if (c.architecture == "Qwen2ForCausalLM") c.arch = Arch::qwen2;
  else if (c.architecture == "Qwen3ForCausalLM") c.arch = Arch::qwen3;
  else
    throw_arg(src + ": field architectures",
              "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM",
              c.architecture.empty() ? std::string("missing") : c.architecture);

  c.hidden_size = static_cast<int>(detail::get_int(j, "hidden_size", src, 1, 1 << 16));
  c.intermediate_size = static_cast<int>(detail::get_int(j, "intermediate_size", src, 1, 1 << 18));
  c.num_layers = static_cast<int>(detail::get_int(j, "num_hidden_layers", src, 1, 1024));
  c.num_heads = static_cast<int>(detail::get_int(j, "num_attention_heads", src, 1, 1024));
  c.num_kv_heads = static_cast<int>(
      detail::get_int_or(j, "num_key_value_heads", src, 1, 1024, c.num_heads));
  c.vocab_size = static_cast<int>(detail::get_int(j, "vocab_size", src, 1, 1 << 24));
  if (c.num_heads % c.num_kv_heads)
    throw_arg(src + ": field num_key_value_heads",
              concat("a divisor of num_attention_heads (", c.num_heads, ")"), c.num_kv_heads);
  const int dflt_hd = c.hidden_size / c.num_heads;
  c.head_dim = static_cast<int>(detail::get_int_or(j, "head_dim", src, 1, 1024, dflt_hd));
  if (!detail::field(j, "head_dim") && c.hidden_size % c.num_heads)
    throw_arg(src + ": field hidden_size", concat("a multiple of num_attention_heads (", c.num_heads, ")"),
              c.hidden_size);
  if (c.head_dim % 2) throw_arg(src + ": field head_dim", "an even number (RoPE pairs)", c.head_dim);
  c.max_position_embeddings = detail::get_int_or(j, "max_position_embeddings", src, 1, int64_t(1) << 40, 1 << 20);
  c.rms_norm_eps = detail::get_num_or(j, "rms_norm_eps", src, 1e-6);
  if (!(c.rms_norm_eps > 0 && c.rms_norm_eps < 1)) throw_arg(src + ": field rms_norm_eps", "in (0, 1)", c.rms_norm_eps);
  c.rope_theta = detail::get_num_or(j, "rope_theta", src, 10000.0);
  if (!(c.rope_theta > 1 && std::isfinite(c.rope_theta))) throw_arg(src + ": field rope_theta", "> 1", c.rope_theta);
  c.tie_word_embeddings = detail::get_bool_or(j, "tie_word_embeddings", src, false);
  const std::string act = detail::get_str_or(j, "hidden_act", src, "silu");
  if (act != "silu") throw_arg(src + ": field hidden_act", "silu", act);
  if (detail::get_bool_or(j, "mlp_bias", src, false)) throw_arg(src + ": field mlp_bias", "false (not supported)", "true");
  c.qkv_bias = c.arch == Arch::qwen2 || detail::get_bool_or(j, "attention_bias", src, false);
  c.qk_norm = c.arch == Arch::qwen3;
  if (c.arch == Arch::qwen3 && detail::get_bool_or(j, "attention_bias", src, false))
    c.qkv_bias = true;
  c.torch_dtype = detail::get_str_or(j, "torch_dtype", src, detail::get_str_or(j, "dtype", src, ""));
  const bool sw_used = c.arch == Arch::mistral ||
                       ((c.arch == Arch::qwen2 || c.arch == Arch::qwen3) &&
                        detail::get_bool_or(j, "use_sliding_window", src, false));
  if (sw_used) c.sliding_window = detail::get_int_or(j, "sliding_window", src, 0, int64_t(1) << 40, 0);

  // transformers >= 5 writes "rope_parameters" (rope_theta inside); older "rope_scaling".
  const json* rs = detail::field(j, "rope_scaling");
  const char* rs_name = "rope_scaling";
  if (const json* rp = detail::field(j, "rope_parameters")) {
    if (!rp->is_object()) throw_arg(src + ": field rope_parameters", "an object", rp->dump());
    c.rope_theta = detail::get_num_or(*rp, "rope_theta", src + ": rope_parameters", c.rope_theta);
    if (!(c.rope_theta > 1 && std::isfinite(c.rope_theta)))
      throw_arg(src + ": field rope_parameters.rope_theta", "> 1", c.rope_theta);
    rs = rp;
    rs_name = "rope_parameters";
  }
  if (rs) {
    if (!rs->is_object()) throw_arg(src + ": field rope_scaling", "an object or null", rs->dump());
    const std::string rsrc = src + ": " + rs_name;
    std::string type = detail::get_str_or(*rs, "rope_type", rsrc, detail::get_str_or(*rs, "type", rsrc, "default"));
    if (type == "default") {
    } else if (type == "linear") {
      c.rope_scaling = RopeScaling::linear;
      c.rope_factor = detail::get_num_or(*rs, "factor", rsrc, 1.0);
    } else if (type == "llama3") {
      c.rope_scaling = RopeScaling::llama3;
      c.rope_factor = detail::get_num_or(*rs, "factor", rsrc, 8.0);
      c.rope_low_freq_factor = detail::get_num_or(*rs, "low_freq_factor", rsrc, 1.0);
      c.rope_high_freq_factor = detail::get_num_or(*rs, "high_freq_factor", rsrc, 4.0);
      c.rope_original_max_position =
          detail::get_int_or(*rs, "original_max_position_embeddings", rsrc, 1, int64_t(1) << 40, 8192);
      if (!(c.rope_high_freq_factor > c.rope_low_freq_factor && c.rope_low_freq_factor > 0))
        throw_arg(rsrc + " high_freq_factor", concat("> low_freq_factor (", c.rope_low_freq_factor, ") > 0"),
                  c.rope_high_freq_factor);
    } else {
      throw_arg(rsrc + " rope_type", "default, linear or llama3", type);
    }
    if (!(c.rope_factor > 0 && std::isfinite(c.rope_factor)))
      throw_arg(rsrc + " factor", "> 0", c.rope_factor);
  }
  token_ids(j, "eos_token_id", src, c.eos_token_ids);
  std::vector<int> bos;
  token_ids(j, "bos_token_id", src, bos);
  if (!bos.empty()) c.bos_token_id = bos[0];
  return c;
}

std::vector<double> rope_inv_freq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<double> f(half);
  for (int i = 0; i < half; ++i) {
    // HF computes inv_freq in fp32: 1 / theta^(2i/d), then the scaling below.
    const float base = static_cast<float>(c.rope_theta);
    const float expo = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    double inv = static_cast<double>(1.0f / std::pow(base, expo));
    if (c.rope_scaling == RopeScaling::linear) inv /= c.rope_factor;
    if (c.rope_scaling == RopeScaling::llama3) {
      const double old_ctx = static_cast<double>(c.rope_original_max_position);
      const double low_wl = old_ctx / c.rope_low_freq_factor, high_wl = old_ctx / c.rope_high_freq_factor;
      const double wl = 2 * M_PI / inv;
      if (wl > low_wl) {
        inv = inv / c.rope_factor;
      } else if (wl >= high_wl) {
        const double s = (old_ctx / wl - c.rope_low_freq_factor) /
                         (c.rope_high_freq_factor - c.rope_low_freq_factor);
        inv = (1 - s) * inv / c.rope_factor + s * inv;
      }
    }
    f[i] = inv;
  }
  return f;
}

}  // namespace unique::engine

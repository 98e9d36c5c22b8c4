// Helpers of the engine tests: a safetensors writer and a tiny random Llama-family model
// kept in float64 for an independent reference forward (no engine code used).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "unique/dtype.h"

namespace enginetest {

// A fresh, empty directory per call (mkdtemp): a name built from the pid alone was reused
// by a later process (pids wrap on a busy CI machine) and then held an earlier test's files.
inline std::string temp_dir(const std::string& name) {
  const char* base = std::getenv("TMPDIR");
  std::string d = std::string(base ? base : "/tmp") + "/unique_engine_test_" + name + "_XXXXXX";
  if (!::mkdtemp(d.data())) throw std::runtime_error("temp_dir: mkdtemp failed for " + d);
  return d;
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

struct StTensor {
  std::string name, dtype;  // "F32", "BF16", "F16", "I32"
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// Independent safetensors writer: u64 LE header length, JSON header, data.
inline void write_st(const std::string& path, const std::vector<StTensor>& ts) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string hs = h.dump();
  std::ofstream f(path, std::ios::binary);
  uint64_t n = hs.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  f << hs;
  for (const auto& t : ts) f.write(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
}

struct TinySpec {
  std::string arch = "LlamaForCausalLM";
  int hidden = 64, inter = 96, layers = 2, heads = 4, kv_heads = 2, head_dim = 16, vocab = 50;
  bool tie = false, llama3_rope = false, bias = false, qk_norm = false;
  double qk_scale = 0.3;  // std of q/k projection entries times sqrt(hidden): larger = peakier attention
  std::string dtype = "F32";  // F32 | BF16 | F16
  uint64_t seed = 1;
};

struct RefLayer {
  std::vector<double> q, k, v, o, gate, up, down, attn_norm, mlp_norm, q_norm, k_norm, qb, kb, vb;
};

struct RefModel {
  TinySpec s;
  std::vector<double> embed, lm_head, final_norm;
  std::vector<RefLayer> layers;

  // Logits of the last position of `tokens` (full causal forward from scratch).
  std::vector<double> logits(const std::vector<int>& tokens) const;
};

// Rounds x through the file dtype so the reference sees the stored values.
inline double through(double x, const std::string& dt) {
  if (dt == "BF16") return unique::bf16_bits_to_float(unique::float_to_bf16_bits(static_cast<float>(x)));
  if (dt == "F16") return unique::f16_bits_to_float(unique::float_to_f16_bits(static_cast<float>(x)));
  return static_cast<float>(x);
}

inline std::vector<uint8_t> encode_as(const std::vector<double>& v, const std::string& dt) {
  std::vector<uint8_t> b;
  for (double x : v) {
    if (dt == "F32") {
      float f = static_cast<float>(x);
      uint8_t t[4];
      std::memcpy(t, &f, 4);
      b.insert(b.end(), t, t + 4);
    } else {
      uint16_t h = dt == "BF16" ? unique::float_to_bf16_bits(static_cast<float>(x)) : unique::float_to_f16_bits(static_cast<float>(x));
      b.push_back(static_cast<uint8_t>(h & 0xFF));
      b.push_back(static_cast<uint8_t>(h >> 8));
    }
  }
  return b;
}

// Writes config.json + model.safetensors of a random model into dir; returns the reference.
inline RefModel write_tiny(const std::string& dir, const TinySpec& s) {
  RefModel m;
  m.s = s;
  std::mt19937_64 rng(s.seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<StTensor> ts;
  auto make = [&](const std::string& name, std::vector<int64_t> shape, double scale, double offset = 0) {
    int64_t n = 1;
    for (auto x : shape) n *= x;
    std::vector<double> v(n);
    for (auto& x : v) x = through(offset + scale * nd(rng), s.dtype);
    ts.push_back({name, s.dtype, shape, encode_as(v, s.dtype)});
    return v;
  };
  const int64_t H = s.hidden, D = s.head_dim, qd = s.heads * D, kd = s.kv_heads * D;
  m.embed = make("model.embed_tokens.weight", {s.vocab, H}, 1.0);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    RefLayer L;
    L.attn_norm = make(p + "input_layernorm.weight", {H}, 0.1, 1.0);
    L.mlp_norm = make(p + "post_attention_layernorm.weight", {H}, 0.1, 1.0);
    L.q = make(p + "self_attn.q_proj.weight", {qd, H}, s.qk_scale / std::sqrt(double(H)));
    L.k = make(p + "self_attn.k_proj.weight", {kd, H}, s.qk_scale / std::sqrt(double(H)));
    L.v = make(p + "self_attn.v_proj.weight", {kd, H}, 1.0 / std::sqrt(double(H)));
    L.o = make(p + "self_attn.o_proj.weight", {H, qd}, 1.0 / std::sqrt(double(qd)));
    if (s.bias) {
      L.qb = make(p + "self_attn.q_proj.bias", {qd}, 0.2);
      L.kb = make(p + "self_attn.k_proj.bias", {kd}, 0.2);
      L.vb = make(p + "self_attn.v_proj.bias", {kd}, 0.2);
    }
    if (s.qk_norm) {
      L.q_norm = make(p + "self_attn.q_norm.weight", {D}, 0.1, 1.0);
      L.k_norm = make(p + "self_attn.k_norm.weight", {D}, 0.1, 1.0);
    }
    L.gate = make(p + "mlp.gate_proj.weight", {s.inter, H}, 1.0 / std::sqrt(double(H)));
    L.up = make(p + "mlp.up_proj.weight", {s.inter, H}, 1.0 / std::sqrt(double(H)));
    L.down = make(p + "mlp.down_proj.weight", {H, s.inter}, 1.0 / std::sqrt(double(s.inter)));
    m.layers.push_back(L);
  }
  m.final_norm = make("model.norm.weight", {H}, 0.1, 1.0);
  if (!s.tie) m.lm_head = make("lm_head.weight", {s.vocab, H}, 1.0 / std::sqrt(double(H)));
  else m.lm_head = m.embed;
  write_st(dir + "/model.safetensors", ts);
  nlohmann::json c = {{"architectures", {s.arch}},
                      {"hidden_size", s.hidden},
                      {"intermediate_size", s.inter},
                      {"num_hidden_layers", s.layers},
                      {"num_attention_heads", s.heads},
                      {"num_key_value_heads", s.kv_heads},
                      {"head_dim", s.head_dim},
                      {"vocab_size", s.vocab},
                      {"max_position_embeddings", 4096},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0},
                      {"tie_word_embeddings", s.tie},
                      {"attention_bias", s.bias},
                      {"eos_token_id", 2},
                      {"bos_token_id", 1},
                      {"hidden_act", "silu"}};
  if (s.llama3_rope)
    c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 64}};
  write_text(dir + "/config.json", c.dump(2));
  return m;
}

inline void ref_rmsnorm(const double* x, const std::vector<double>& w, int64_t n, double* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const double r = 1.0 / std::sqrt(ss / n + 1e-5);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * r * w[i];
}

inline void ref_matvec(const std::vector<double>& W, const double* x, int64_t rows, int64_t cols, double* y) {
  for (int64_t r = 0; r < rows; ++r) {
    double a = 0;
    for (int64_t c = 0; c < cols; ++c) a += W[r * cols + c] * x[c];
    y[r] = a;
  }
}

inline std::vector<double> RefModel::logits(const std::vector<int>& tokens) const {
  const int64_t T = tokens.size(), H = s.hidden, D = s.head_dim, qd = s.heads * D, kd = s.kv_heads * D;
  // RoPE frequencies in float64 (the llama3 rule written out from the Llama 3.1 report).
  std::vector<double> inv(D / 2);
  for (int i = 0; i < D / 2; ++i) {
    double f = std::pow(10000.0, -2.0 * i / D);
    if (s.llama3_rope) {
      const double wl = 2 * M_PI / f, low_wl = 64.0 / 1.0, high_wl = 64.0 / 4.0;
      if (wl > low_wl) f /= 8.0;
      else if (wl >= high_wl) {
        const double sm = (64.0 / wl - 1.0) / (4.0 - 1.0);
        f = (1 - sm) * f / 8.0 + sm * f;
      }
    }
    inv[i] = f;
  }
  std::vector<double> x(T * H);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < H; ++i) x[t * H + i] = embed[tokens[t] * H + i];
  std::vector<double> h(H), Q(T * qd), K(T * kd), V(T * kd), att(qd), o(H), g(s.inter), u(s.inter), dn(H);
  for (const RefLayer& L : layers) {
    for (int64_t t = 0; t < T; ++t) {
      ref_rmsnorm(&x[t * H], L.attn_norm, H, h.data());
      ref_matvec(L.q, h.data(), qd, H, &Q[t * qd]);
      ref_matvec(L.k, h.data(), kd, H, &K[t * kd]);
      ref_matvec(L.v, h.data(), kd, H, &V[t * kd]);
      if (s.bias) {
        for (int64_t i = 0; i < qd; ++i) Q[t * qd + i] += L.qb[i];
        for (int64_t i = 0; i < kd; ++i) K[t * kd + i] += L.kb[i], V[t * kd + i] += L.vb[i];
      }
      auto rot = [&](double* p, int heads, const std::vector<double>* norm) {
        for (int hh = 0; hh < heads; ++hh) {
          double* v = p + hh * D;
          if (norm) ref_rmsnorm(v, *norm, D, v);
          for (int i = 0; i < D / 2; ++i) {
            const double a = v[i], b = v[i + D / 2], c = std::cos(t * inv[i]), sn = std::sin(t * inv[i]);
            v[i] = a * c - b * sn;
            v[i + D / 2] = b * c + a * sn;
          }
        }
      };
      rot(&Q[t * qd], s.heads, s.qk_norm ? &L.q_norm : nullptr);
      rot(&K[t * kd], s.kv_heads, s.qk_norm ? &L.k_norm : nullptr);
    }
    for (int64_t t = 0; t < T; ++t) {
      for (int hh = 0; hh < s.heads; ++hh) {
        const int kh = hh / (s.heads / s.kv_heads);
        std::vector<double> sc(t + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int e = 0; e < D; ++e) d += Q[t * qd + hh * D + e] * K[j * kd + kh * D + e];
          sc[j] = d / std::sqrt(double(D));
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (auto& v : sc) sum += v = std::exp(v - mx);
        for (int e = 0; e < D; ++e) {
          double a = 0;
          for (int64_t j = 0; j <= t; ++j) a += sc[j] * V[j * kd + kh * D + e];
          att[hh * D + e] = a / sum;
        }
      }
      ref_matvec(L.o, att.data(), H, qd, o.data());
      for (int64_t i = 0; i < H; ++i) x[t * H + i] += o[i];
      ref_rmsnorm(&x[t * H], L.mlp_norm, H, h.data());
      ref_matvec(L.gate, h.data(), s.inter, H, g.data());
      ref_matvec(L.up, h.data(), s.inter, H, u.data());
      for (int i = 0; i < s.inter; ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      ref_matvec(L.down, g.data(), H, s.inter, dn.data());
      for (int64_t i = 0; i < H; ++i) x[t * H + i] += dn[i];
    }
  }
  ref_rmsnorm(&x[(T - 1) * H], final_norm, H, h.data());
  std::vector<double> out(s.vocab);
  ref_matvec(lm_head, h.data(), s.vocab, H, out.data());
  return out;
}

}  // namespace enginetest

#include "unique/engine/retrieval_model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "unique/engine/model_config.h"
#include "unique/engine/safetensors.h"
#include "unique/engine/tiny_model.h"
#include "unique/engine/tokenizer.h"
#include "unique/error.h"

namespace unique::engine {

using nlohmann::json;
using unique::detail::concat;

const std::string& retrieval_corpus() {
  // Plain English in the register of the haystacks (King James Bible, instructions of the
  // eval tasks), so that frequent words are single tokens and an n-gram of 3 tokens spans
  // several words. Written for this file.
  static const std::string text =
      "And it came to pass in those days, that the king of the land called all the people unto him, and "
      "said unto them: Hear now the word which I shall speak unto you this day. For the Lord your God "
      "hath given you the house of your fathers, and the children of Israel shall dwell in the land "
      "which he sware unto them. Then the men of the city went out, and they came up to the gate, and "
      "the elders sat there with the priests and the Levites. And the Lord spake unto Moses, saying, "
      "Speak unto the children of Israel, that they bring me an offering of every man that giveth it "
      "willingly with his heart. Thou shalt love thy neighbour as thyself, and thou shalt not hate thy "
      "brother in thine heart. Behold, I will send my messenger before thy face, which shall prepare "
      "thy way before thee. Blessed are they that mourn: for they shall be comforted. Blessed are the "
      "meek: for they shall inherit the earth. Therefore whosoever heareth these sayings of mine, and "
      "doeth them, I will liken him unto a wise man, which built his house upon a rock. And the rain "
      "descended, and the floods came, and the winds blew, and beat upon that house; and it fell not: "
      "for it was founded upon a rock. Now when Jesus was born in Bethlehem of Judaea in the days of "
      "Herod the king, behold, there came wise men from the east to Jerusalem. And David the son of "
      "Jesse was the servant of Saul, and the spirit of the Lord departed from him. These are the "
      "generations of the sons of Noah, Shem, Ham, and Japheth: and unto them were sons born after the "
      "flood. And the earth was without form, and void; and darkness was upon the face of the deep. And "
      "God said, Let there be light: and there was light. And God saw the light, that it was good. The "
      "heavens declare the glory of God; and the firmament sheweth his handywork. Day unto day uttereth "
      "speech, and night unto night sheweth knowledge. My son, hear the instruction of thy father, and "
      "forsake not the law of thy mother. Wisdom is the principal thing; therefore get wisdom: and with "
      "all thy getting get understanding. A soft answer turneth away wrath: but grievous words stir up "
      "anger. Every good gift and every perfect gift is from above. Let not your heart be troubled: ye "
      "believe in God, believe also in me. In my Father's house are many mansions. Go ye therefore, and "
      "teach all nations. For God so loved the world, that he gave his only begotten Son. Give us this "
      "day our daily bread, and forgive us our debts, as we forgive our debtors. Whatsoever ye would "
      "that men should do to you, do ye even so to them.\n"
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I "
      "will quiz you about the important information there. The pass key is the number. Remember it. "
      "What is the pass key? The pass key is the number you were told to remember.\n"
      "Some special magic numbers are hidden within the following text. Make sure to memorize them. I "
      "will quiz you about the numbers afterwards. The special magic number for the key is the value. "
      "What is the special magic number for the key? What are all the special magic numbers for the "
      "key? The special magic numbers for the key are the values. One of the special magic numbers for "
      "the key is a value.\n"
      "VAR A = B. VAR B = C. VAR C = D. The value of VAR D is the value of VAR C = the value of VAR B = "
      "the value of VAR A.\n"
      "Memorize and track the chain of variable assignment hidden in the following text. Question: what "
      "is the value of the variable? Answer: the value of the variable is the number it was assigned, "
      "directly or through other variables. The secret code of the purple lantern is a sequence of "
      "words. What is the secret code? The secret code is written below.\n"
      "Long documents are read one page at a time. A reader who wants one fact looks at the summary of "
      "every page first, and then opens only the pages that answer the question. The first pages and "
      "the most recent pages are always kept, because they hold the instructions and the question. When "
      "the budget is small, the reader must choose well, or the answer is lost. When the budget is "
      "large, every page can be read, and the answer is the same as if nothing had been skipped.\n";
  return text;
}

void RetrievalModelOptions::validate() const {
  UNIQUE_CHECK_ARG(code_dim >= 8 && code_dim <= 256, "code_dim", "8..256", code_dim);
  UNIQUE_CHECK_ARG(head_dim >= 32 && head_dim <= 1024 && head_dim % 2 == 0, "head_dim", "an even number in 32..1024",
                   head_dim);
  UNIQUE_CHECK_ARG(3 * code_dim <= head_dim, "head_dim", concat(">= 3 x code_dim (", 3 * code_dim, ")"), head_dim);
  UNIQUE_CHECK_ARG(rope_theta > 1 && std::isfinite(rope_theta), "rope_theta", "> 1", rope_theta);
  UNIQUE_CHECK_ARG(max_position >= 16 && max_position <= (int64_t(1) << 24), "max_position", "16..16777216",
                   max_position);
  UNIQUE_CHECK_ARG(merges >= 0 && merges <= 20000, "merges", "0..20000", merges);
  for (auto [v, name] : {std::pair{position_logit, "position_logit"}, {match_logit, "match_logit"},
                         {sink_logit, "sink_logit"}, {output_logit, "output_logit"}})
    UNIQUE_CHECK_ARG(v > 0 && v < 1e4, name, "in (0, 1e4)", v);
}

namespace {

// Row-major fp32 matrix being filled by hand.
struct Mat {
  int64_t rows, cols;
  std::vector<float> a;
  Mat(int64_t r, int64_t c) : rows(r), cols(c), a(static_cast<size_t>(r * c), 0.0f) {}
  float& at(int64_t r, int64_t c) { return a[static_cast<size_t>(r * cols + c)]; }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out(a.size() * 4);
    for (size_t i = 0; i < a.size(); ++i) store_from_float(out.data(), DType::f32, i, a[i]);
    return out;
  }
};

// (peak - max off-peak) / peak of f(delta) = sum_i A_i cos((delta - j) w_i) over
// delta in [0, L], delta != j, for offsets j = 1..3, with the angles rounded as the
// engine's fp32 RoPE rounds them (position * inv_freq in fp32, per side).
double position_gap(const std::vector<double>& w, const std::vector<double>& A, int64_t L) {
  double worst = 1.0;
  for (int j = 1; j <= 3; ++j) {
    const int64_t t = L;  // the query at the far end sees every distance
    std::vector<float> qa(w.size());
    for (size_t i = 0; i < w.size(); ++i) qa[i] = static_cast<float>(t) * static_cast<float>(w[i]);
    for (int64_t s = 0; s <= t; ++s) {
      if (t - s == j) continue;
      double f = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        const float ka = static_cast<float>(s) * static_cast<float>(w[i]);
        f += A[i] * std::cos(double(qa[i]) - double(ka) - j * w[i]);
      }
      worst = std::min(worst, 1.0 - f);
    }
  }
  return worst;
}

}  // namespace

RetrievalModelInfo write_retrieval_model(const std::string& dir, const RetrievalModelOptions& o) {
  o.validate();
  RetrievalModelInfo info;
  const int d = o.code_dim, D = o.head_dim, half = D / 2, heads = 4;
  const int64_t H = ((5 * d + 1 + 63) / 64) * 64;
  info.hidden = static_cast<int>(H);
  const int E = 0, O = 4 * d, C = 5 * d;
  auto P = [d](int j) { return j * d; };  // P1..P3

  ModelConfig mc;
  mc.head_dim = D;
  mc.rope_theta = o.rope_theta;
  const std::vector<double> w = rope_inv_freq(mc);  // the engine's own frequencies
  // Fast pairs carry the positional heads; amplitudes grow with the frequency, which
  // maximised the smallest peak gap in a sweep (the fastest pairs separate neighbours,
  // the slower ones far distances).
  std::vector<int> fast;
  std::vector<double> fw, A;
  for (int i = 0; i < half; ++i)
    if (w[i] >= 0.01 && w[i] <= 1.01) fast.push_back(i), fw.push_back(w[i]);
  UNIQUE_CHECK_ARG(fast.size() >= 4, "rope_theta", "a value leaving >= 4 RoPE pairs between 0.01 and 1 rad/token",
                   o.rope_theta);
  double sum = 0;
  for (double x : fw) sum += x;
  for (double x : fw) A.push_back(x / sum);
  info.fast_pairs = static_cast<int>(fast.size());
  info.min_position_gap = position_gap(fw, A, o.max_position);
  UNIQUE_CHECK_ARG(o.position_logit * info.min_position_gap >= 20, "position_logit x min positional gap",
                   concat(">= 20 nats up to max_position ", o.max_position),
                   concat(o.position_logit * info.min_position_gap, " (gap ", info.min_position_gap, ")"));
  // Slow pairs carry content: the 3d/2 slowest pairs, which must barely rotate over the
  // whole context (their cosine multiplies every n-gram match score).
  const int need_pairs = (3 * d + 1) / 2;
  std::vector<int> slow_dims;  // content coordinate m -> head coordinate
  for (int i = half - need_pairs; i < half; ++i) {
    slow_dims.push_back(i);
    slow_dims.push_back(i + half);
  }
  UNIQUE_CHECK_ARG(half - need_pairs > fast.back(), "head_dim", concat("enough RoPE pairs for ", fast.size(),
                   " positional + ", need_pairs, " content pairs"), D);
  info.slow_pairs = need_pairs;
  info.max_content_drift = w[half - need_pairs] * static_cast<double>(o.max_position);
  UNIQUE_CHECK_ARG(info.max_content_drift <= 0.05, "rope_theta",
                   concat("a value whose content pairs rotate <= 0.05 rad over max_position ", o.max_position),
                   concat(o.rope_theta, " (", info.max_content_drift, " rad)"));

  const std::string tok_json = make_byte_level_tokenizer_json(retrieval_corpus(), o.merges);
  const Tokenizer tok = Tokenizer::from_json(tok_json, "tokenizer.json");
  const int V = tok.vocab_size();
  info.vocab = V;
  const int bos = tok.token_id("<|begin_of_text|>"), eos = tok.token_id("<|end_of_text|>");

  // Token codes: random unit vectors (near-orthogonal: |cos| ~ 1/sqrt(d)).
  std::mt19937_64 rng(o.seed + 0xC0DE5);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> code(static_cast<size_t>(V) * d);
  for (int v = 0; v < V; ++v) {
    double ss = 0;
    for (int m = 0; m < d; ++m) {
      const double x = nd(rng);
      code[size_t(v) * d + m] = x;
      ss += x * x;
    }
    for (int m = 0; m < d; ++m) code[size_t(v) * d + m] /= std::sqrt(ss);
  }
  auto cd = [&](int v, int m) { return code[size_t(v) * d + m]; };

  // Every block of the stream has norm r, so RMSNorm divides by a known constant:
  // layer 0 sees E and c (rms 1), layer 1 sees E, P1..P3 and c (rms sqrt(2.5)).
  const double r = std::sqrt(double(H) / 2.0), rms1 = std::sqrt(2.5), r1 = r / rms1;
  std::vector<TensorToWrite> ts;
  auto add = [&](const std::string& name, const Mat& m) {
    ts.push_back({name, DType::f32, {m.rows, m.cols}, m.bytes()});
  };
  auto add_vec = [&](const std::string& name, int64_t n, float v) {
    Mat m(1, n);
    std::fill(m.a.begin(), m.a.end(), v);
    ts.push_back({name, DType::f32, {n}, m.bytes()});
  };
  Mat embed(V, H);
  for (int v = 0; v < V; ++v) {
    for (int m = 0; m < d; ++m) embed.at(v, E + m) = static_cast<float>(r * cd(v, m));
    embed.at(v, C) = static_cast<float>(r);
  }
  add("model.embed_tokens.weight", embed);
  const double sqD = std::sqrt(double(D));
  const int I = 64;
  for (int l = 0; l < 2; ++l) {
    const double in = l == 0 ? r : r1;  // |block| after the input norm
    Mat q(int64_t(heads) * D, H), k(int64_t(heads) * D, H), v(int64_t(heads) * D, H), out(H, int64_t(heads) * D);
    if (l == 0) {
      for (int j = 1; j <= 3; ++j) {
        const int64_t h0 = int64_t(j - 1) * D;
        const double G = o.position_logit * sqD;
        for (size_t f = 0; f < fast.size(); ++f) {
          const int i = fast[f];
          q.at(h0 + i, C) = static_cast<float>(G * A[f] * std::cos(j * w[i]) / in);
          q.at(h0 + i + half, C) = static_cast<float>(-G * A[f] * std::sin(j * w[i]) / in);
          k.at(h0 + i, C) = static_cast<float>(1.0 / in);
        }
        for (int m = 0; m < d; ++m) {
          v.at(h0 + m, E + m) = static_cast<float>(1.0 / in);
          out.at(P(j) + m, h0 + m) = static_cast<float>(r);
        }
      }
    } else {
      // n-gram induction heads: head 0 matches 3 tokens, head 1 two, head 2 one; the
      // copied code goes to O with weights 1, 1/2, 1/4 (longer matches win).
      const double a = std::sqrt(o.match_logit * sqD);
      for (int h = 0; h < 3; ++h) {
        const int n = 3 - h;
        const int64_t h0 = int64_t(h) * D;
        for (int b = 0; b < n; ++b)
          for (int m = 0; m < d; ++m) {
            const int64_t hd = h0 + slow_dims[size_t(b) * d + m];
            q.at(hd, (b == 0 ? E : P(b)) + m) = static_cast<float>(a / in);
            k.at(hd, P(b + 1) + m) = static_cast<float>(a / in);
          }
        for (int m = 0; m < d; ++m) {
          v.at(h0 + m, E + m) = static_cast<float>(1.0 / in);
          out.at(O + m, h0 + m) = static_cast<float>(r / double(1 << h));
        }
      }
    }
    // Head 3: attention sink on BOS (query from c, key from E), no output.
    const int64_t h3 = int64_t(3) * D;
    const double g = o.sink_logit * sqD;
    for (int m = 0; m < d; ++m) {
      q.at(h3 + slow_dims[m], C) = static_cast<float>(g * cd(bos, m) / in);
      k.at(h3 + slow_dims[m], E + m) = static_cast<float>(1.0 / in);
    }
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add_vec(p + "input_layernorm.weight", H, 1.0f);
    add_vec(p + "post_attention_layernorm.weight", H, 1.0f);
    add(p + "self_attn.q_proj.weight", q);
    add(p + "self_attn.k_proj.weight", k);
    add(p + "self_attn.v_proj.weight", v);
    add(p + "self_attn.o_proj.weight", out);
    add(p + "mlp.gate_proj.weight", Mat(I, H));
    add(p + "mlp.up_proj.weight", Mat(I, H));
    add(p + "mlp.down_proj.weight", Mat(H, I));
  }
  add_vec("model.norm.weight", H, 1.0f);
  // The final norm sees the four blocks, c and O (|O| between 0 and ~1.75 r): divide by
  // the middle of that range so a lone trigram copy scores about output_logit.
  const double rmsf = std::sqrt(3.0);
  Mat head(V, H);
  for (int t = 0; t < V; ++t)
    for (int m = 0; m < d; ++m) head.at(t, O + m) = static_cast<float>(o.output_logit * cd(t, m) * rmsf / r);
  add("lm_head.weight", head);

  ::mkdir(dir.c_str(), 0755);
  write_safetensors(dir + "/model.safetensors", ts);
  json c = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_size", H},
            {"intermediate_size", I},
            {"num_hidden_layers", 2},
            {"num_attention_heads", heads},
            {"num_key_value_heads", heads},
            {"head_dim", D},
            {"vocab_size", V},
            {"max_position_embeddings", o.max_position},
            {"rms_norm_eps", 1e-5},
            {"rope_theta", o.rope_theta},
            {"hidden_act", "silu"},
            {"attention_bias", false},
            {"mlp_bias", false},
            {"tie_word_embeddings", false},
            {"bos_token_id", bos},
            {"eos_token_id", eos},
            {"torch_dtype", "float32"},
            {"unique_retrieval_model",
             {{"code_dim", d}, {"position_logit", o.position_logit}, {"match_logit", o.match_logit},
              {"sink_logit", o.sink_logit}, {"output_logit", o.output_logit}, {"seed", o.seed},
              {"merges", o.merges}, {"min_position_gap", info.min_position_gap},
              {"max_content_drift", info.max_content_drift}}}};
  info.bytes = write_model_dir_files(dir, c.dump(2) + "\n", tok_json, bos, eos, o.max_position);
  return info;
}

}  // namespace unique::engine

#include "unique/engine/engine.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "engine/cuda/cuda_engine.h"
#include "unique/decode.h"
#include "unique/error.h"
#include "unique/prefill.h"
#include "unique/selection.h"

namespace unique::engine {

using unique::detail::concat;

void EngineOptions::validate() const {
  attention.validate();
  UNIQUE_CHECK_ARG(dense_layers >= 0, "dense_layers", ">= 0", dense_layers);
  UNIQUE_CHECK_ARG(max_batch >= 1, "max_batch", ">= 1", max_batch);
  UNIQUE_CHECK_ARG(max_context >= 1, "max_context", ">= 1", max_context);
  UNIQUE_CHECK_ARG(prefill_chunk >= 1, "prefill_chunk", ">= 1", prefill_chunk);
}

struct Engine::Scratch {
  std::vector<float> x, h, q, k, v, att, g, u, rows, sel_scores;
  std::vector<int32_t> sel_pages, sel_counts, pf_blocks, pf_counts;
};

Engine::Engine(const Model& model, const EngineOptions& opt) : model_(model), opt_(opt), s_(std::make_unique<Scratch>()) {
  opt_.validate();
  const ModelConfig& c = model.config();
  const int P = opt_.attention.page_size;
  const int64_t pages_per_seq = (opt_.max_context + P - 1) / P;
  UNIQUE_CHECK_ARG(pages_per_seq * opt_.max_batch < (int64_t(1) << 31), "max_context x max_batch",
                   "fewer than 2^31 pages", pages_per_seq * opt_.max_batch);
  KVCacheOptions& ko = kv_opt_;
  ko.num_pages = static_cast<int>(pages_per_seq * opt_.max_batch);
  ko.num_kv_heads = c.num_kv_heads;
  ko.page_size = P;
  ko.head_dim = c.head_dim;
  ko.dtype = opt_.kv_dtype;
  ko.stats_dtype = opt_.stats_dtype;
  const Estimator e = opt_.attention.estimator;
  ko.keep_unique_stats = opt_.keep_all_stats || e == Estimator::unique || e == Estimator::mean;
  ko.keep_quest_stats = opt_.keep_all_stats || e == Estimator::quest;
  if (opt_.device == Device::cuda) {
    ko.device = Device::cuda;
    cuda_ = std::make_unique<CudaEngine>(model, opt_, ko);
    return;
  }
  for (int l = 0; l < c.num_layers; ++l) caches_.push_back(std::make_unique<KVCache>(ko));
  // Start the OpenMP team now, not inside the first timed forward.
#pragma omp parallel
  { (void)omp_get_thread_num(); }
}

Engine::~Engine() = default;

const KVCache& Engine::cache(int layer) const {
  UNIQUE_CHECK_ARG(!cuda_, "Engine::cache", "the CPU backend (the CUDA backend's pages live on the GPU)", "cuda");
  UNIQUE_CHECK_ARG(layer >= 0 && layer < static_cast<int>(caches_.size()), "layer",
                   concat("0..", caches_.size() - 1), layer);
  return *caches_[layer];
}

void Engine::set_decode_observer(DecodeObserver f) {
  UNIQUE_CHECK_ARG(!(cuda_ && f), "decode observer", "the CPU backend (it reads queries and keys on the host)",
                   "--device cuda");
  observer_ = std::move(f);
}

void Engine::set_prefill_observer(PrefillObserver f) {
  UNIQUE_CHECK_ARG(!(cuda_ && f), "prefill observer", "the CPU backend (it reads queries and keys on the host)",
                   "--device cuda");
  prefill_observer_ = std::move(f);
}

void Engine::set_attention(const AttentionConfig& cfg, int dense_layers) {
  cfg.validate();
  UNIQUE_CHECK_ARG(cfg.page_size == opt_.attention.page_size, "page_size", opt_.attention.page_size, cfg.page_size);
  UNIQUE_CHECK_ARG(dense_layers >= 0, "dense_layers", ">= 0", dense_layers);
  const KVCacheOptions& ko = kv_opt_;
  const Estimator e = cfg.estimator;
  UNIQUE_CHECK_ARG(!((e == Estimator::unique || e == Estimator::mean) && !ko.keep_unique_stats) &&
                       !(e == Estimator::quest && !ko.keep_quest_stats),
                   "estimator", "one whose page statistics the cache keeps (EngineOptions::keep_all_stats)",
                   to_string(e));
  opt_.attention = cfg;
  opt_.dense_layers = dense_layers;
  if (cuda_) cuda_->set_options(opt_);
}

int Engine::add_sequence() {
  if (cuda_) return cuda_->add_sequence();
  int id = -1;
  for (auto& c : caches_) id = c->add_sequence();
  return id;
}

void Engine::free_sequence(int seq) {
  if (cuda_) return cuda_->free_sequence(seq);
  for (auto& c : caches_) c->free_sequence(seq);
}

int Engine::fork_sequence(int seq) {
  const int64_t len = length(seq);
  const int P = opt_.attention.page_size;
  const int64_t need = (len + P - 1) / P;
  if (need > free_pages())
    throw_arg("KV cache pool", concat(need, " free pages to fork sequence ", seq), free_pages());
  if (cuda_) return cuda_->fork_sequence(seq);
  const int id = add_sequence();
  if (len == 0) return id;
  const int64_t Hk = model_.config().num_kv_heads, D = model_.config().head_dim;
  std::vector<float> k(static_cast<size_t>(len * Hk * D)), v(k.size());
  for (auto& c : caches_) {
    const PageTable table = c->page_table({seq});
    const PagedKV kv = c->view(table);
    for (int64_t j = 0; j < len; ++j)
      for (int64_t h = 0; h < Hk; ++h) {
        const int64_t src = kv.kv_offset(kv.page_indices[j / P], h) + (j % P) * D;
        float* kd = k.data() + (j * Hk + h) * D;
        float* vd = v.data() + (j * Hk + h) * D;
        for (int64_t e = 0; e < D; ++e) {
          kd[e] = load_as_float(kv.k, kv.dtype, src + e);
          vd[e] = load_as_float(kv.v, kv.dtype, src + e);
        }
      }
    c->append({id}, {static_cast<int>(len)}, make_view(k.data(), DType::f32, {len, Hk, D}),
              make_view(v.data(), DType::f32, {len, Hk, D}));
  }
  return id;
}

int64_t Engine::length(int seq) const { return cuda_ ? cuda_->length(seq) : caches_[0]->length(seq); }
int Engine::seq_pages(int seq) const {
  return cuda_ ? cuda_->seq_pages(seq) : static_cast<int>(caches_[0]->pages(seq).size());
}
int Engine::free_pages() const { return cuda_ ? cuda_->free_pages() : caches_[0]->free_pages(); }

void Engine::check_append(int seq, int64_t n) const {
  const int64_t len = length(seq) + n;
  const ModelConfig& c = model_.config();
  if (len > opt_.max_context)
    throw_arg("sequence length", concat("<= max_context (", opt_.max_context, " tokens, the KV pool per sequence; --max-context)"),
              concat(len, " tokens"));
  if (len > c.max_position_embeddings)
    throw_arg("sequence length", concat("<= max_position_embeddings of config.json (", c.max_position_embeddings, ")"),
              concat(len, " tokens"));
  const int P = opt_.attention.page_size;
  const int64_t need = (len + P - 1) / P - seq_pages(seq);
  if (need > free_pages()) throw_arg("KV cache pool", concat(need, " free pages for sequence ", seq), free_pages());
}

namespace {

void rmsnorm(const float* x, const float* w, int64_t n, double eps, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float r = static_cast<float>(1.0 / std::sqrt(ss / double(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * r * w[i];
}

void rope(float* v, int heads, int D, int64_t pos, const std::vector<double>& inv_freq) {
  const int half = D / 2;
  for (int i = 0; i < half; ++i) {
    // As Hugging Face: the angle is a float32 product, its cos/sin rounded to float32.
    const float ang = static_cast<float>(pos) * static_cast<float>(inv_freq[i]);
    const float c = static_cast<float>(std::cos(double(ang))), s = static_cast<float>(std::sin(double(ang)));
    for (int h = 0; h < heads; ++h) {
      float* p = v + int64_t(h) * D;
      const float a = p[i], b = p[i + half];
      p[i] = a * c - b * s;
      p[i + half] = b * c + a * s;
    }
  }
}

}  // namespace

void Engine::forward(const std::vector<int>& seqs, const std::vector<int>& counts, const std::vector<int>& tokens,
                     bool decode, const std::vector<int64_t>& out_rows, float* logits) {
  if (cuda_) return cuda_->forward(seqs, counts, tokens, decode, out_rows, logits, prefill_stats_);
  const ModelConfig& c = model_.config();
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int Hq = c.num_heads, Hk = c.num_kv_heads;
  const int64_t qd = Hq * D, kd = Hk * D;
  Scratch& s = *s_;
  s.x.resize(T * H);
  s.h.resize(T * H);
  s.q.resize(T * qd);
  s.k.resize(T * kd);
  s.v.resize(T * kd);
  s.att.resize(T * qd);
  s.g.resize(T * I);
  s.u.resize(T * I);
  // Position of every row.
  std::vector<int64_t> pos(T);
  {
    int64_t r = 0;
    for (size_t i = 0; i < seqs.size(); ++i)
      for (int j = 0; j < counts[i]; ++j) pos[r++] = length(seqs[i]) + j;
  }
  for (int64_t t = 0; t < T; ++t) embedding_row(model_.embed(), tokens[t], s.x.data() + t * H);
  AttentionConfig cfg = opt_.attention;
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = model_.layers()[l];
#pragma omp parallel for schedule(static) if (T >= 16)
    for (int64_t t = 0; t < T; ++t) rmsnorm(s.x.data() + t * H, w.attn_norm.data(), H, c.rms_norm_eps, s.h.data() + t * H);
    linear(s.h.data(), T, w.q, s.q.data());
    linear(s.h.data(), T, w.k, s.k.data());
    linear(s.h.data(), T, w.v, s.v.data());
#pragma omp parallel for schedule(static) if (T >= 16)
    for (int64_t t = 0; t < T; ++t) {
      float* q = s.q.data() + t * qd;
      float* k = s.k.data() + t * kd;
      float* v = s.v.data() + t * kd;
      if (c.qkv_bias) {
        for (int64_t i = 0; i < qd; ++i) q[i] += w.q_bias[i];
        for (int64_t i = 0; i < kd; ++i) k[i] += w.k_bias[i];
        for (int64_t i = 0; i < kd; ++i) v[i] += w.v_bias[i];
      }
      if (c.qk_norm) {
        for (int h = 0; h < Hq; ++h) rmsnorm(q + h * D, w.q_norm.data(), D, c.rms_norm_eps, q + h * D);
        for (int h = 0; h < Hk; ++h) rmsnorm(k + h * D, w.k_norm.data(), D, c.rms_norm_eps, k + h * D);
      }
      rope(q, Hq, static_cast<int>(D), pos[t], model_.rope_inv_freq());
      rope(k, Hk, static_cast<int>(D), pos[t], model_.rope_inv_freq());
    }
    KVCache& cache = *caches_[l];
    cache.append(seqs, counts, make_view(s.k.data(), DType::f32, {T, Hk, D}),
                 make_view(s.v.data(), DType::f32, {T, Hk, D}));
    const PageTable table = cache.page_table(seqs);
    const PagedKV kv = cache.view(table);
    if (decode) {
      const int B = static_cast<int>(seqs.size());
      const TensorView qv = make_view(s.q.data(), DType::f32, {B, Hq, D});
      const TensorView ov = make_view(s.att.data(), DType::f32, {B, Hq, D});
      const bool dense = cfg.estimator == Estimator::dense || l < opt_.dense_layers;
      if (dense) {
        paged_decode(cfg, qv, kv, nullptr, ov, TensorView{});
      } else {
        const int ms = std::max(1, cfg.max_selected(max_seq_pages(kv)));
        s.sel_pages.resize(size_t(B) * Hk * ms);
        s.sel_counts.resize(size_t(B) * Hk);
        Selection sel{s.sel_pages.data(), s.sel_counts.data(), B, Hk, ms, Device::cpu};
        select_pages(cfg, qv, kv, sel);
        paged_decode(cfg, qv, kv, &sel, ov, TensorView{});
      }
      if (observer_) observer_(l, qv, kv, ov);
    } else {
      // Prefill of one sequence over its cached keys (earlier chunks and this one), read in
      // the cache dtype as decode reads them: UniSparse block-sparse attention, or dense
      // causal attention (no selection) in dense mode and in the first dense_layers layers.
      const int64_t L = seq_len(kv, 0);
      const TensorView qv = make_view(s.q.data(), DType::f32, {T, Hq, D});
      const TensorView ov = make_view(s.att.data(), DType::f32, {T, Hq, D});
      if (prefill_observer_) prefill_observer_(l, qv, kv);
      if (cfg.prefill == PrefillMode::unisparse && l >= opt_.dense_layers) {
        // Key blocks chosen per (query head, query block) from composite tokens.
        const PrefillBlocks pb = prefill_blocks(cfg, T, L);
        s.pf_blocks.resize(size_t(Hq) * pb.num_q_blocks * pb.num_kv_blocks);
        s.pf_counts.resize(size_t(Hq) * pb.num_q_blocks);
        const BlockSelection sel{s.pf_blocks.data(), s.pf_counts.data(), Hq, pb.num_q_blocks, pb.num_kv_blocks,
                                 Device::cpu};
        select_prefill_blocks(cfg, qv, kv, 0, L, sel);
        sparse_prefill(cfg, qv, kv, 0, L, &sel, ov, TensorView{});
        for (int32_t n : s.pf_counts) prefill_stats_.blocks_kept += n;
        for (int i = 0; i < pb.num_q_blocks; ++i)
          prefill_stats_.blocks_dense += int64_t(Hq) * (pb.first_q_block + i + 1);
      } else {
        sparse_prefill(cfg, qv, kv, 0, L, nullptr, ov, TensorView{});
      }
    }
    linear(s.att.data(), T, w.o, s.h.data());
    for (int64_t i = 0; i < T * H; ++i) s.x[i] += s.h[i];
#pragma omp parallel for schedule(static) if (T >= 16)
    for (int64_t t = 0; t < T; ++t) rmsnorm(s.x.data() + t * H, w.mlp_norm.data(), H, c.rms_norm_eps, s.h.data() + t * H);
    linear(s.h.data(), T, w.gate, s.g.data());
    linear(s.h.data(), T, w.up, s.u.data());
#pragma omp parallel for schedule(static) if (T * I >= (int64_t(1) << 16))
    for (int64_t i = 0; i < T * I; ++i) {
      const float g = s.g[i];
      s.g[i] = g / (1.0f + std::exp(-g)) * s.u[i];
    }
    linear(s.g.data(), T, w.down, s.h.data());
    for (int64_t i = 0; i < T * H; ++i) s.x[i] += s.h[i];
  }
  if (out_rows.empty() || !logits) return;
  const int64_t R = static_cast<int64_t>(out_rows.size());
  s.rows.resize(R * H);
  for (int64_t r = 0; r < R; ++r)
    rmsnorm(s.x.data() + out_rows[r] * H, model_.final_norm().data(), H, c.rms_norm_eps, s.rows.data() + r * H);
  linear(s.rows.data(), R, model_.lm_head(), logits);
}

void Engine::prefill(int seq, const std::vector<int>& tokens, float* logits_last) {
  UNIQUE_CHECK_ARG(!tokens.empty(), "prompt", "at least one token", "an empty prompt");
  const int V = model_.config().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i)
    UNIQUE_CHECK_ARG(tokens[i] >= 0 && tokens[i] < V, concat("prompt token ", i), concat("an id in 0..", V - 1), tokens[i]);
  check_append(seq, static_cast<int64_t>(tokens.size()));
  const int64_t n = static_cast<int64_t>(tokens.size());
  for (int64_t start = 0; start < n; start += opt_.prefill_chunk) {
    const int64_t cnt = std::min<int64_t>(opt_.prefill_chunk, n - start);
    std::vector<int> chunk(tokens.begin() + start, tokens.begin() + start + cnt);
    const bool last = start + cnt == n;
    forward({seq}, {static_cast<int>(cnt)}, chunk, false, last ? std::vector<int64_t>{cnt - 1} : std::vector<int64_t>{},
            last ? logits_last : nullptr);
  }
}

void Engine::decode(const std::vector<int>& seqs, const std::vector<int>& tokens, float* logits) {
  UNIQUE_CHECK_ARG(seqs.size() == tokens.size(), "tokens.size()", seqs.size(), tokens.size());
  UNIQUE_CHECK_ARG(!seqs.empty(), "seqs", "at least one sequence", "none");
  const int V = model_.config().vocab_size;
  for (size_t i = 0; i < seqs.size(); ++i) {
    UNIQUE_CHECK_ARG(length(seqs[i]) > 0, concat("sequence ", seqs[i]), "a prefilled sequence", "empty");
    UNIQUE_CHECK_ARG(tokens[i] >= 0 && tokens[i] < V, concat("token ", i), concat("an id in 0..", V - 1), tokens[i]);
    check_append(seqs[i], 1);
  }
  std::vector<int64_t> rows(seqs.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
  forward(seqs, std::vector<int>(seqs.size(), 1), tokens, true, rows, logits);
}

void Engine::fill_synthetic(int seq, int64_t tokens, uint64_t seed) {
  check_append(seq, tokens);
  if (cuda_) return cuda_->fill_synthetic(seq, tokens, seed);
  const ModelConfig& c = model_.config();
  const int64_t D = c.head_dim, Hk = c.num_kv_heads, chunk = 1024;
  std::vector<float> k, v;
  for (int l = 0; l < c.num_layers; ++l) {
    for (int64_t start = 0; start < tokens; start += chunk) {
      const int64_t n = std::min(chunk, tokens - start);
      k.resize(n * Hk * D);
      v.resize(n * Hk * D);
#pragma omp parallel
      {
        uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t(l) << 40) ^ uint64_t(start) ^
                     (uint64_t(omp_get_thread_num() + 1) * 0xBF58476D1CE4E5B9ull);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n * Hk * D; ++i) {
          x ^= x << 13; x ^= x >> 7; x ^= x << 17;
          const float r = static_cast<float>(x >> 40) * (1.0f / 16777216.0f) - 0.5f;
          k[i] = 3.4f * r + 0.5f * static_cast<float>((i % D) % 7) - 1.5f;
          v[i] = 3.4f * r;
        }
      }
      caches_[l]->append({seq}, {static_cast<int>(n)}, make_view(k.data(), DType::f32, {n, Hk, D}),
                         make_view(v.data(), DType::f32, {n, Hk, D}));
    }
  }
}

GenerateResult generate(Engine& engine, const std::vector<std::vector<int>>& prompts, const GenerateOptions& opt,
                        const std::function<void(int, int)>& on_token) {
  opt.sampler.validate();
  UNIQUE_CHECK_ARG(!prompts.empty(), "prompts", "at least one prompt", "none");
  UNIQUE_CHECK_ARG(static_cast<int>(prompts.size()) <= engine.options().max_batch, "prompts",
                   concat("at most max_batch (", engine.options().max_batch, ")"), prompts.size());
  UNIQUE_CHECK_ARG(opt.max_new_tokens >= 0, "max_new_tokens", ">= 0", opt.max_new_tokens);
  const int V = engine.model().config().vocab_size;
  for (size_t i = 0; i < prompts.size(); ++i) {
    UNIQUE_CHECK_ARG(!prompts[i].empty(), concat("prompt ", i), "at least one token", "an empty prompt");
    const int64_t need = static_cast<int64_t>(prompts[i].size()) + std::max(opt.max_new_tokens - 1, 0);
    UNIQUE_CHECK_ARG(need <= engine.options().max_context, concat("prompt ", i, " length + max_new_tokens"),
                     concat("<= max_context (", engine.options().max_context, " tokens; the KV pool per sequence)"),
                     need);
    UNIQUE_CHECK_ARG(need <= engine.model().config().max_position_embeddings,
                     concat("prompt ", i, " length + max_new_tokens"),
                     concat("<= max_position_embeddings of config.json (",
                            engine.model().config().max_position_embeddings, ")"),
                     need);
  }
  GenerateResult res;
  const int B = static_cast<int>(prompts.size());
  res.tokens.resize(B);
  if (opt.keep_logits) res.logits.resize(B);
  std::vector<int> seq(B);
  std::vector<Sampler> samplers;
  for (int b = 0; b < B; ++b) samplers.emplace_back(opt.sampler, static_cast<uint64_t>(b));
  std::vector<float> logits(size_t(V) * B);
  std::vector<char> live(B, 1);
  auto accept = [&](int b, const float* lg) {
    if (opt.keep_logits) res.logits[b].emplace_back(lg, lg + V);
    const int tok = samplers[b].sample(lg, V);
    res.tokens[b].push_back(tok);
    if (on_token) on_token(b, tok);
    if (std::find(opt.eos_ids.begin(), opt.eos_ids.end(), tok) != opt.eos_ids.end() ||
        static_cast<int>(res.tokens[b].size()) >= opt.max_new_tokens)
      live[b] = 0;
  };
  const Engine::PrefillStats pf0 = engine.prefill_stats();
  auto t0 = std::chrono::steady_clock::now();
  for (int b = 0; b < B; ++b) {
    seq[b] = engine.add_sequence();
    engine.prefill(seq[b], prompts[b], logits.data());
    res.prefill_tokens += static_cast<int64_t>(prompts[b].size());
    if (opt.max_new_tokens > 0) accept(b, logits.data());
    else live[b] = 0;
  }
  auto t1 = std::chrono::steady_clock::now();
  res.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  res.prefill_blocks_kept = engine.prefill_stats().blocks_kept - pf0.blocks_kept;
  res.prefill_blocks_dense = engine.prefill_stats().blocks_dense - pf0.blocks_dense;
  for (;;) {
    std::vector<int> ids, toks, which;
    for (int b = 0; b < B; ++b)
      if (live[b]) {
        ids.push_back(seq[b]);
        toks.push_back(res.tokens[b].back());
        which.push_back(b);
      }
    if (ids.empty()) break;
    engine.decode(ids, toks, logits.data());
    res.decode_tokens += static_cast<int64_t>(ids.size());
    for (size_t i = 0; i < which.size(); ++i) accept(which[i], logits.data() + i * V);
  }
  res.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  for (int b = 0; b < B; ++b) engine.free_sequence(seq[b]);
  return res;
}

}  // namespace unique::engine

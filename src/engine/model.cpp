#include "unique/engine/model.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <type_traits>

#include "engine/blas_util.h"
#include "engine/json_util.h"
#include "unique/error.h"

namespace unique::engine {

using unique::detail::concat;

namespace {

std::vector<float> to_f32_vector(const TensorStore::Ref& r) {
  std::vector<float> v(static_cast<size_t>(r.entry->numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    if (r.entry->dtype == DType::f32) {
      std::memcpy(&v[i], r.data + 4 * i, 4);
    } else {
      uint16_t b;
      std::memcpy(&b, r.data + 2 * i, 2);
      v[i] = r.entry->dtype == DType::bf16 ? bf16_bits_to_float(b) : f16_bits_to_float(b);
    }
  }
  return v;
}

struct Loader {
  const TensorStore& store;
  const LoadOptions& opt;
  const std::string& dir;

  TensorStore::Ref get(const std::string& name, std::vector<int64_t> shape, bool required = true) const {
    TensorStore::Ref r = store.find(name);
    if (!r.entry) {
      if (!required) return r;
      throw Error(concat(dir, ": tensor '", name, "' is missing from the safetensors files (config.json expects shape ",
                         shape_str(shape), ")"));
    }
    if (!r.entry->float_dtype)
      throw_arg(r.file->path() + ": tensor '" + name + "' dtype", "F32, F16 or BF16", r.entry->dtype_name);
    if (r.entry->shape != shape)
      throw_arg(r.file->path() + ": tensor '" + name + "' shape", shape_str(shape) + " (from config.json)",
                shape_str(r.entry->shape));
    return r;
  }
  static std::string shape_str(const std::vector<int64_t>& s) {
    std::string o = "[";
    for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
    return o + "]";
  }
  Weight matrix(const std::string& name, int64_t rows, int64_t cols) const {
    TensorStore::Ref r = get(name, {rows, cols});
    Weight w;
    w.rows = rows;
    w.cols = cols;
    const DType dt = r.entry->dtype;
    const bool aligned = reinterpret_cast<uintptr_t>(r.data) % dtype_size(dt) == 0;
    if (opt.weights_fp32 && dt != DType::f32) {
      std::vector<float> v = to_f32_vector(r);
      w.owned.resize(v.size() * 4);
      std::memcpy(w.owned.data(), v.data(), w.owned.size());
      w.dtype = DType::f32;
      w.data = w.owned.data();
    } else if (!aligned) {  // untrusted offsets may misalign; copy rather than misread
      w.owned.assign(r.data, r.data + rows * cols * dtype_size(dt));
      w.dtype = dt;
      w.data = w.owned.data();
    } else {
      w.dtype = dt;
      w.data = r.data;
    }
    return w;
  }
  std::vector<float> vec(const std::string& name, int64_t n, bool required = true) const {
    TensorStore::Ref r = get(name, {n}, required);
    if (!r.entry) return {};
    return to_f32_vector(r);
  }
};

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& opt) {
  auto m = std::make_unique<Model>();
  const std::string cfg_path = dir + "/config.json";
  m->cfg_ = parse_model_config(detail::read_file(cfg_path, "model config", 16u << 20), cfg_path);
  ModelConfig& c = m->cfg_;
  const std::string gen_path = dir + "/generation_config.json";
  if (detail::file_exists(gen_path)) {
    // generation_config.json's eos_token_id takes precedence (Llama 3 instruct lists several).
    nlohmann::json g = detail::parse_json(detail::read_file(gen_path, "generation config", 16u << 20), gen_path);
    if (const auto* e = detail::field(g, "eos_token_id")) {
      std::vector<int> ids;
      auto one = [&](const nlohmann::json& x) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > (1 << 30))
          throw_arg(gen_path + ": field eos_token_id", "token ids", e->dump());
        ids.push_back(static_cast<int>(x.get<int64_t>()));
      };
      if (e->is_array()) for (const auto& x : *e) one(x);
      else one(*e);
      c.eos_token_ids = ids;
    }
  }
  m->store_ = std::make_unique<TensorStore>(dir);
  Loader L{*m->store_, opt, dir};
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t qd = int64_t(c.num_heads) * D, kd = int64_t(c.num_kv_heads) * D;
  const int nl = opt.max_layers > 0 ? std::min(opt.max_layers, c.num_layers) : c.num_layers;
  c.num_layers = nl;
  m->embed_ = L.matrix("model.embed_tokens.weight", c.vocab_size, H);
  for (int l = 0; l < nl; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights w;
    w.q = L.matrix(p + "self_attn.q_proj.weight", qd, H);
    w.k = L.matrix(p + "self_attn.k_proj.weight", kd, H);
    w.v = L.matrix(p + "self_attn.v_proj.weight", kd, H);
    w.o = L.matrix(p + "self_attn.o_proj.weight", H, qd);
    w.gate = L.matrix(p + "mlp.gate_proj.weight", I, H);
    w.up = L.matrix(p + "mlp.up_proj.weight", I, H);
    w.down = L.matrix(p + "mlp.down_proj.weight", H, I);
    w.attn_norm = L.vec(p + "input_layernorm.weight", H);
    w.mlp_norm = L.vec(p + "post_attention_layernorm.weight", H);
    if (c.qkv_bias) {
      w.q_bias = L.vec(p + "self_attn.q_proj.bias", qd);
      w.k_bias = L.vec(p + "self_attn.k_proj.bias", kd);
      w.v_bias = L.vec(p + "self_attn.v_proj.bias", kd);
    }
    if (c.qk_norm) {
      w.q_norm = L.vec(p + "self_attn.q_norm.weight", D);
      w.k_norm = L.vec(p + "self_attn.k_norm.weight", D);
    }
    m->layers_.push_back(std::move(w));
  }
  m->final_norm_ = L.vec("model.norm.weight", H);
  if (!c.tie_word_embeddings) {
    if (!m->store_->find("lm_head.weight").entry)
      throw Error(concat(dir, ": tensor 'lm_head.weight' is missing and config.json has tie_word_embeddings false"));
    m->lm_head_ = L.matrix("lm_head.weight", c.vocab_size, H);
  }
  m->inv_freq_ = engine::rope_inv_freq(c);
  return m;
}

std::unique_ptr<Model> Model::random(const ModelConfig& cfg, DType dtype, uint64_t seed) {
  auto m = std::make_unique<Model>();
  m->cfg_ = cfg;
  const ModelConfig& c = m->cfg_;
  auto make = [&](int64_t rows, int64_t cols, uint64_t s) {
    Weight w;
    w.rows = rows;
    w.cols = cols;
    w.dtype = dtype;
    w.owned.resize(w.bytes());
    const int64_t n = rows * cols;
#pragma omp parallel
    {
      // Cheap per-thread generator: uniform with std 0.02 (speed runs only).
      uint64_t x = s * 0x9E3779B97F4A7C15ull + 1234567 + omp_get_thread_num() * 0xBF58476D1CE4E5B9ull;
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        const float f = (static_cast<float>(x >> 40) * (1.0f / 16777216.0f) - 0.5f) * 0.0693f;
        store_from_float(w.owned.data(), dtype, static_cast<size_t>(i), f);
      }
    }
    w.data = w.owned.data();
    return w;
  };
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t qd = int64_t(c.num_heads) * D, kd = int64_t(c.num_kv_heads) * D;
  uint64_t s = seed;
  m->embed_ = make(c.vocab_size, H, s++);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights w;
    w.q = make(qd, H, s++);
    w.k = make(kd, H, s++);
    w.v = make(kd, H, s++);
    w.o = make(H, qd, s++);
    w.gate = make(I, H, s++);
    w.up = make(I, H, s++);
    w.down = make(H, I, s++);
    w.attn_norm.assign(H, 1.0f);
    w.mlp_norm.assign(H, 1.0f);
    if (c.qkv_bias) {
      w.q_bias.assign(qd, 0.0f);
      w.k_bias.assign(kd, 0.0f);
      w.v_bias.assign(kd, 0.0f);
    }
    if (c.qk_norm) {
      w.q_norm.assign(D, 1.0f);
      w.k_norm.assign(D, 1.0f);
    }
    m->layers_.push_back(std::move(w));
  }
  m->final_norm_.assign(H, 1.0f);
  if (!c.tie_word_embeddings) m->lm_head_ = make(c.vocab_size, H, s++);
  m->inv_freq_ = engine::rope_inv_freq(c);
  return m;
}

size_t Model::decode_weight_bytes() const {
  size_t b = lm_head().bytes();
  for (const auto& l : layers_)
    b += l.q.bytes() + l.k.bytes() + l.v.bytes() + l.o.bytes() + l.gate.bytes() + l.up.bytes() + l.down.bytes();
  return b;
}

size_t Model::total_weight_bytes() const {
  return decode_weight_bytes() + (cfg_.tie_word_embeddings ? 0 : embed_.bytes());
}

namespace {

// y[M, N] = x[M, K] W^T for a 16-bit W and few rows M (decode): every weight row is read
// once, converted in registers, and applied to all M inputs. M is a template parameter so
// the accumulators stay in vector registers.
template <int M, class T>
void gemv16_m(const float* x, const T* w, int64_t K, int64_t N, float* y) {
  constexpr int W = 16;
// Small matrices stay on one thread: every parallel region is a barrier, and on a busy
  // machine a barrier waiting for a descheduled thread costs a time slice.
#pragma omp parallel for schedule(static) if (N * K >= (int64_t(1) << 18))
  for (int64_t n = 0; n < N; ++n) {
    const T* row = w + n * K;
    float acc[M][W] = {};
    int64_t k = 0;
    for (; k + W <= K; k += W) {
      float wf[W];
      for (int j = 0; j < W; ++j) wf[j] = to_float(row[k + j]);
      for (int m = 0; m < M; ++m)
        for (int j = 0; j < W; ++j) acc[m][j] += wf[j] * x[m * K + k + j];
    }
    for (int m = 0; m < M; ++m) {
      float s = 0;
      for (int j = 0; j < W; ++j) s += acc[m][j];
      for (int64_t kk = k; kk < K; ++kk) s += to_float(row[kk]) * x[m * K + kk];
      y[m * N + n] = s;
    }
  }
}

#if defined(__AVX512F__)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns inside its own AVX-512 intrinsics (_mm512_undefined_epi32's self-init).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// bf16 rows widened in registers (bf16 = the top half of an fp32), two accumulator
// chains per input row to hide the FMA latency.
template <int M>
void gemv_bf16_avx512(const float* x, const uint16_t* w, int64_t K, int64_t N, float* y) {
// Small matrices stay on one thread: every parallel region is a barrier, and on a busy
  // machine a barrier waiting for a descheduled thread costs a time slice.
#pragma omp parallel for schedule(static) if (N * K >= (int64_t(1) << 18))
  for (int64_t n = 0; n < N; ++n) {
    const uint16_t* row = w + n * K;
    __m512 a0[M], a1[M];
    for (int m = 0; m < M; ++m) a0[m] = a1[m] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      const __m512 w0 = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k))), 16));
      const __m512 w1 = _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k + 16))), 16));
      for (int m = 0; m < M; ++m) {
        a0[m] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + m * K + k), a0[m]);
        a1[m] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + m * K + k + 16), a1[m]);
      }
    }
    for (int m = 0; m < M; ++m) {
      // (not _mm512_reduce_add_ps: GCC 12 warns inside its implementation)
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, _mm512_add_ps(a0[m], a1[m]));
      float s = 0;
      for (float v : lanes) s += v;
      for (int64_t kk = k; kk < K; ++kk) s += bf16_bits_to_float(row[kk]) * x[m * K + kk];
      y[m * N + n] = s;
    }
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

template <class T>
void gemv16(const float* x, int64_t M, const T* w, int64_t K, int64_t N, float* y) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, bf16>) {
    const auto* u = reinterpret_cast<const uint16_t*>(w);
    switch (M) {
      case 1: return gemv_bf16_avx512<1>(x, u, K, N, y);
      case 2: return gemv_bf16_avx512<2>(x, u, K, N, y);
      case 3: return gemv_bf16_avx512<3>(x, u, K, N, y);
      case 4: return gemv_bf16_avx512<4>(x, u, K, N, y);
      default: break;
    }
  }
#endif
  switch (M) {
    case 1: return gemv16_m<1>(x, w, K, N, y);
    case 2: return gemv16_m<2>(x, w, K, N, y);
    case 3: return gemv16_m<3>(x, w, K, N, y);
    case 4: return gemv16_m<4>(x, w, K, N, y);
    default:
      for (int64_t m = 0; m < M; m += 4) {
        const int64_t mm = std::min<int64_t>(4, M - m);
        // Rows m..m+mm of y are written with stride N: run on a packed copy.
        std::vector<float> tmp(static_cast<size_t>(mm * N));
        gemv16(x + m * K, mm, w, K, N, tmp.data());
        std::copy(tmp.begin(), tmp.end(), y + m * N);
      }
  }
}

}  // namespace

// Weak: the GPU preset links the reference BLAS (a small library that travels to the GPU
// machine), which has no threads to set.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

void detail::blas_single_threaded() {
  static const bool once = [] {
    if (openblas_set_num_threads) openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

void linear(const float* x, int64_t M, const Weight& w, float* y) {
  const int64_t K = w.cols, N = w.rows;
  if (M <= 0) return;
  detail::blas_single_threaded();
  if (w.dtype != DType::f32 && M <= 8) {
    if (w.dtype == DType::bf16) gemv16(x, M, static_cast<const bf16*>(w.data), K, N, y);
    else gemv16(x, M, static_cast<const f16*>(w.data), K, N, y);
    return;
  }
  // Each thread computes a block of output columns (weight rows) with a single-threaded
  // BLAS call; 16-bit weights are converted to fp32 panels of at most kPanel rows first.
  constexpr int64_t kPanel = 128;
#pragma omp parallel if (M * N * K >= (int64_t(1) << 20))
  {
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t per = (N + nt - 1) / nt;
    const int64_t lo = std::min(N, tid * per), hi = std::min(N, lo + per);
    std::vector<float> panel;
    for (int64_t n0 = lo; n0 < hi; n0 += (w.dtype == DType::f32 ? hi - lo : kPanel)) {
      const int64_t nb = w.dtype == DType::f32 ? hi - lo : std::min(kPanel, hi - n0);
      const float* W;
      if (w.dtype == DType::f32) {
        W = static_cast<const float*>(w.data) + n0 * K;
      } else {
        panel.resize(static_cast<size_t>(nb * K));
        const uint16_t* src = static_cast<const uint16_t*>(w.data) + n0 * K;
        if (w.dtype == DType::bf16)
          for (int64_t i = 0; i < nb * K; ++i) panel[i] = bf16_bits_to_float(src[i]);
        else
          for (int64_t i = 0; i < nb * K; ++i) panel[i] = f16_bits_to_float(src[i]);
        W = panel.data();
      }
      if (M == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(nb), static_cast<int>(K), 1.0f, W,
                    static_cast<int>(K), x, 1, 0.0f, y + n0, 1);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(nb),
                    static_cast<int>(K), 1.0f, x, static_cast<int>(K), W, static_cast<int>(K), 0.0f, y + n0,
                    static_cast<int>(N));
    }
  }
}

void embedding_row(const Weight& w, int64_t row, float* out) {
  UNIQUE_CHECK_ARG(row >= 0 && row < w.rows, "token id", concat("0..", w.rows - 1, " (vocab_size)"), row);
  for (int64_t i = 0; i < w.cols; ++i) out[i] = load_as_float(w.data, w.dtype, static_cast<size_t>(row * w.cols + i));
}

}  // namespace unique::engine

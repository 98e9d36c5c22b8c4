// The engine's CUDA backend: the Llama-family forward with everything in GPU memory.
//
// Per layer: RMSNorm -> one QKV GEMM (the three projections concatenated at upload) ->
// bias / q-k-norm / RoPE kernel -> the library's append (K/V + page statistics) ->
// attention (prefill: unique::sparse_prefill, dense or UniSparse; decode: a DecodePlan,
// sparse or dense by layer) -> O GEMM accumulating into the fp32 residual (beta = 1) ->
// RMSNorm -> one gate|up GEMM -> SwiGLU kernel -> down GEMM into the residual.
// GEMMs are cuBLAS with fp32 accumulation and fp32 output; their inputs are in the weights'
// dtype (bf16 models: bf16 activations into the GEMMs, as transformers runs them).
//
// Host state is only the page allocator and the per-step page table. A step uploads its
// small int32 metadata (tokens, positions, page table) into fixed device buffers, so the
// decode step of a batch size is captured once as a CUDA graph and replayed: no launch
// overhead per kernel, ~10 kernels x layers per token.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "cuda/common.cuh"
#include "engine/cuda/cuda_engine.h"
#include "engine/cuda/model_kernels.h"
#include "unique/decode_plan.h"
#include "unique/error.h"
#include "unique/page_stats.h"
#include "unique/prefill.h"
#include "unique/stream.h"

namespace unique::engine {

using unique::detail::concat;

namespace {

namespace k = ::unique::engine::cuda;

void check_cublas(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw RuntimeError(concat("cuBLAS error in ", call, ": ", cublasGetStatusName(s), " (", cublasGetStatusString(s), ")"));
}
#define ENGINE_CUBLAS(call) check_cublas((call), #call)

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

// Device allocations of the engine, freed together; out-of-memory errors name the buffer.
class DeviceArena {
 public:
  ~DeviceArena() {
    for (void* p : ptrs_) cudaFree(p);
  }
  template <class T = void>
  T* alloc(size_t bytes, const char* what) {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 16));
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw RuntimeError(concat("CUDA engine: cannot allocate ", what, " (", bytes / 1e6, " MB; ", free_b / 1e6,
                                " MB of ", total_b / 1e6, " MB free): ", cudaGetErrorString(e),
                                ". Lower --max-context / --batch or use a smaller model."));
    }
    ptrs_.push_back(p);
    return static_cast<T*>(p);
  }

 private:
  std::vector<void*> ptrs_;
};

// Makes the library launch on the engine's stream for one call, then restores the caller's
// (the library's stream is per host thread; the engine's dies with the engine).
class StreamScope {
 public:
  explicit StreamScope(cudaStream_t s) : prev_(cuda_stream()) { set_cuda_stream(s); }
  ~StreamScope() { set_cuda_stream(prev_); }
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  void* prev_;
};

// A host weight converted to `dt` and copied to dst.
void upload(const Weight& w, DType dt, void* dst, cudaStream_t stream) {
  if (w.dtype == dt) {
    UNIQUE_CUDA_CHECK(cudaMemcpyAsync(dst, w.data, w.bytes(), cudaMemcpyHostToDevice, stream));
    UNIQUE_CUDA_CHECK(cudaStreamSynchronize(stream));  // w.data may be a memory map; keep it simple
    return;
  }
  const int64_t n = w.rows * w.cols, chunk = int64_t(1) << 22;
  std::vector<uint8_t> buf(static_cast<size_t>(std::min(n, chunk)) * dtype_size(dt));
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t m = std::min(chunk, n - s);
    for (int64_t i = 0; i < m; ++i) store_from_float(buf.data(), dt, size_t(i), load_as_float(w.data, w.dtype, s + i));
    UNIQUE_CUDA_CHECK(cudaMemcpy(static_cast<uint8_t*>(dst) + s * dtype_size(dt), buf.data(), m * dtype_size(dt),
                           cudaMemcpyHostToDevice));
  }
}

float* upload_floats(DeviceArena& arena, const std::vector<float>& v, const char* what) {
  if (v.empty()) return nullptr;
  float* d = arena.alloc<float>(v.size() * 4, what);
  UNIQUE_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
  return d;
}

struct DeviceLayer {
  void *qkv = nullptr, *o = nullptr, *gate_up = nullptr, *down = nullptr;
  float *attn_norm = nullptr, *mlp_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr, *qkv_bias = nullptr;
  void *k = nullptr, *v = nullptr, *mean = nullptr, *std = nullptr, *kmin = nullptr, *kmax = nullptr;
  float* stats_scale = nullptr;  // fp8 statistics only: [num_pages, Hk, 2]
};

// Offsets (int32 elements) of the step metadata in one host/device buffer pair.
struct MetaLayout {
  int64_t tokens, pos, indptr, indices, last_len, append_indptr, out_rows, total;
  MetaLayout(int64_t rows, int64_t max_batch, int64_t max_pages) {
    tokens = 0;
    pos = tokens + rows;
    indptr = pos + rows;
    indices = indptr + max_batch + 1;
    last_len = indices + max_batch * max_pages;
    append_indptr = last_len + max_batch;
    out_rows = append_indptr + max_batch + 1;
    total = out_rows + std::max(max_batch, rows);
  }
};

}  // namespace

struct CudaEngine::Impl {
  const Model& model;
  EngineOptions opt;
  KVCacheOptions kvo;
  int64_t rows_cap = 0;   // rows of one forward: max(prefill_chunk, max_batch)
  int pages_per_seq = 0;  // page-table row capacity
  DType wdt = DType::bf16;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  DeviceArena arena;

  // weights
  void *embed = nullptr, *lm_head = nullptr;
  float *final_norm = nullptr, *inv_freq = nullptr;
  std::vector<DeviceLayer> layers;

  // scratch
  float *x = nullptr, *qkv = nullptr, *q = nullptr, *knew = nullptr, *vnew = nullptr, *gu = nullptr, *logits = nullptr;
  void *h = nullptr, *att = nullptr;
  int32_t *meta_d = nullptr, *meta_h = nullptr;  // meta_h pinned
  float* logits_h = nullptr;                     // pinned
  int32_t *pf_blocks = nullptr, *pf_counts = nullptr;
  size_t pf_cap = 0;
  MetaLayout meta{1, 1, 1};

  // host page allocator
  std::vector<int32_t> free_pages;
  std::vector<std::vector<int32_t>> seq_pages;
  std::vector<int64_t> seq_len;
  std::vector<bool> seq_live;

  std::map<std::pair<int, bool>, std::unique_ptr<DecodePlan>> plans;  // (batch, dense)
  std::map<int, cudaGraphExec_t> graphs;                                // batch -> decode step

  Impl(const Model& m, const EngineOptions& o, const KVCacheOptions& kv) : model(m), opt(o), kvo(kv) {}
  ~Impl() {
    drop_graphs();
    if (blas) cublasDestroy(blas);
    if (meta_h) cudaFreeHost(meta_h);
    if (logits_h) cudaFreeHost(logits_h);
    if (stream) cudaStreamDestroy(stream);
  }
  void drop_graphs() {
    for (auto& [b, g] : graphs) cudaGraphExecDestroy(g);
    graphs.clear();
  }

  void init();
  void upload_weights();
  PagedKV layer_kv(int l, int batch) const;
  void gemm(const void* w, const void* xin, int M, int N, int K, float* y, float beta) const;
  void layers_forward(int T, int batch, bool decode, int64_t kv_len, int n_out, Engine::PrefillStats* stats);
  DecodePlan& plan_for(int batch, bool dense);
  void write_table(const std::vector<int>& seqs, const std::vector<int64_t>& lens);
  void upload_meta(int rows, int batch, int n_out);
  void ensure_pages(int seq, int64_t len);
};

void CudaEngine::Impl::init() {
  const ModelConfig& c = model.config();
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    cudaGetLastError();
    throw_arg("device", "a visible CUDA GPU for --device cuda", "none found");
  }
  UNIQUE_CHECK_ARG(kvo.dtype == DType::bf16 || kvo.dtype == DType::f16, "kv_dtype",
                   "bf16 or fp16 with --device cuda (the prefill runs on tensor cores)", to_string(kvo.dtype));
  UNIQUE_CHECK_ARG(c.head_dim == 64 || c.head_dim == 128, "head_dim", "64 or 128 with --device cuda", c.head_dim);
  UNIQUE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  ENGINE_CUBLAS(cublasCreate(&blas));
  ENGINE_CUBLAS(cublasSetStream(blas, stream));
  // A fixed workspace: cuBLAS allocates nothing inside a graph capture.
  const size_t ws = size_t(32) << 20;
  ENGINE_CUBLAS(cublasSetWorkspace(blas, arena.alloc(ws, "cuBLAS workspace"), ws));

  wdt = model.embed().dtype;
  upload_weights();

  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t qd = int64_t(c.num_heads) * D, kd = int64_t(c.num_kv_heads) * D;
  rows_cap = std::max<int64_t>(opt.prefill_chunk, opt.max_batch);
  const size_t ws_ = dtype_size(wdt);
  x = arena.alloc<float>(rows_cap * H * 4, "activations");
  qkv = arena.alloc<float>(rows_cap * (qd + 2 * kd) * 4, "activations");
  q = arena.alloc<float>(rows_cap * qd * 4, "activations");
  knew = arena.alloc<float>(rows_cap * kd * 4, "activations");
  vnew = arena.alloc<float>(rows_cap * kd * 4, "activations");
  gu = arena.alloc<float>(rows_cap * 2 * I * 4, "activations");
  h = arena.alloc(rows_cap * std::max(H, I) * ws_, "activations");
  att = arena.alloc(rows_cap * qd * ws_, "activations");
  logits = arena.alloc<float>(int64_t(opt.max_batch) * c.vocab_size * 4, "logits");
  UNIQUE_CUDA_CHECK(cudaMallocHost(&logits_h, size_t(opt.max_batch) * c.vocab_size * 4));

  pages_per_seq = static_cast<int>((opt.max_context + kvo.page_size - 1) / kvo.page_size);
  meta = MetaLayout(rows_cap, opt.max_batch, pages_per_seq);
  meta_d = arena.alloc<int32_t>(meta.total * 4, "page table");
  UNIQUE_CUDA_CHECK(cudaMallocHost(&meta_h, meta.total * 4));

  // The KV pool: every layer has the same pages (one allocator).
  const size_t page_elems = size_t(kvo.num_kv_heads) * kvo.page_size * kvo.head_dim;
  const size_t kv_bytes = size_t(kvo.num_pages) * page_elems * dtype_size(kvo.dtype);
  const size_t st_bytes = size_t(kvo.num_pages) * kvo.num_kv_heads * kvo.head_dim * dtype_size(kvo.stats_dtype);
  for (DeviceLayer& L : layers) {
    L.k = arena.alloc(kv_bytes, "the KV cache pool");
    L.v = arena.alloc(kv_bytes, "the KV cache pool");
    if (kvo.keep_unique_stats) {
      L.mean = arena.alloc(st_bytes, "page statistics");
      L.std = arena.alloc(st_bytes, "page statistics");
    }
    if (kvo.keep_quest_stats) {
      L.kmin = arena.alloc(st_bytes, "page statistics");
      L.kmax = arena.alloc(st_bytes, "page statistics");
    }
    if (kvo.stats_dtype == DType::e4m3 && (kvo.keep_unique_stats || kvo.keep_quest_stats))
      L.stats_scale = arena.alloc<float>(int64_t(kvo.num_pages) * kvo.num_kv_heads * 2 * 4, "page statistics");
  }
  for (int p = kvo.num_pages - 1; p >= 0; --p) free_pages.push_back(p);
}

void CudaEngine::Impl::upload_weights() {
  const ModelConfig& c = model.config();
  const int64_t D = c.head_dim;
  const int64_t qd = int64_t(c.num_heads) * D, kd = int64_t(c.num_kv_heads) * D;
  const size_t es = dtype_size(wdt);
  auto matrix = [&](std::initializer_list<const Weight*> parts, const char* what) {
    int64_t rows = 0;
    for (const Weight* w : parts) rows += w->rows;
    uint8_t* d = arena.alloc<uint8_t>(rows * (*parts.begin())->cols * es, what);
    int64_t r0 = 0;
    for (const Weight* w : parts) {
      upload(*w, wdt, d + r0 * w->cols * es, stream);
      r0 += w->rows;
    }
    return static_cast<void*>(d);
  };
  embed = matrix({&model.embed()}, "weights");
  lm_head = c.tie_word_embeddings ? embed : matrix({&model.lm_head()}, "weights");
  final_norm = upload_floats(arena, model.final_norm(), "weights");
  std::vector<float> invf;
  for (double f : model.rope_inv_freq()) invf.push_back(static_cast<float>(f));
  inv_freq = upload_floats(arena, invf, "weights");
  for (const LayerWeights& w : model.layers()) {
    DeviceLayer L;
    L.qkv = matrix({&w.q, &w.k, &w.v}, "weights");
    L.o = matrix({&w.o}, "weights");
    L.gate_up = matrix({&w.gate, &w.up}, "weights");
    L.down = matrix({&w.down}, "weights");
    L.attn_norm = upload_floats(arena, w.attn_norm, "weights");
    L.mlp_norm = upload_floats(arena, w.mlp_norm, "weights");
    L.q_norm = upload_floats(arena, w.q_norm, "weights");
    L.k_norm = upload_floats(arena, w.k_norm, "weights");
    if (c.qkv_bias) {
      std::vector<float> b(w.q_bias);
      b.insert(b.end(), w.k_bias.begin(), w.k_bias.end());
      b.insert(b.end(), w.v_bias.begin(), w.v_bias.end());
      UNIQUE_CHECK_ARG(static_cast<int64_t>(b.size()) == qd + 2 * kd, "qkv bias", qd + 2 * kd, b.size());
      L.qkv_bias = upload_floats(arena, b, "weights");
    }
    layers.push_back(L);
  }
}

PagedKV CudaEngine::Impl::layer_kv(int l, int batch) const {
  const DeviceLayer& L = layers[l];
  PagedKV kv;
  kv.dtype = kvo.dtype;
  kv.device = Device::cuda;
  kv.num_pages = kvo.num_pages;
  kv.num_kv_heads = kvo.num_kv_heads;
  kv.page_size = kvo.page_size;
  kv.head_dim = kvo.head_dim;
  kv.k = L.k;
  kv.v = L.v;
  kv.stats_dtype = kvo.stats_dtype;
  kv.mean = L.mean;
  kv.std = L.std;
  kv.kmin = L.kmin;
  kv.kmax = L.kmax;
  kv.stats_scale = L.stats_scale;
  kv.batch = batch;
  kv.page_indptr = meta_d + meta.indptr;
  kv.page_indices = meta_d + meta.indices;
  kv.last_page_len = meta_d + meta.last_len;
  kv.max_pages_per_seq = pages_per_seq;
  return kv;
}

// y[M, N] = beta * y + x[M, K] W[N, K]^T; W and x in wdt, y fp32. Row-major y is the
// column-major N x M product W x.
void CudaEngine::Impl::gemm(const void* w, const void* xin, int M, int N, int K, float* y, float beta) const {
  const float alpha = 1.0f;
  const cudaDataType_t t = cuda_type(wdt);
  ENGINE_CUBLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, w, t, K, xin, t, K, &beta, y, CUDA_R_32F, N,
                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

DecodePlan& CudaEngine::Impl::plan_for(int batch, bool dense) {
  auto& p = plans[{batch, dense}];
  if (!p) {
    p = std::make_unique<DecodePlan>();
    AttentionConfig cfg = opt.attention;
    if (dense) cfg.estimator = Estimator::dense;
    const ModelConfig& c = model.config();
    p->plan(cfg, DecodeShape{batch, c.num_heads, c.num_kv_heads, c.head_dim, pages_per_seq, kvo.dtype});
  }
  return *p;
}

void CudaEngine::Impl::layers_forward(int T, int batch, bool decode, int64_t kv_len, int n_out,
                                      Engine::PrefillStats* stats) {
  const ModelConfig& c = model.config();
  const int H = c.hidden_size, D = c.head_dim, I = c.intermediate_size, Hq = c.num_heads, Hk = c.num_kv_heads;
  const int qd = Hq * D, kd = Hk * D;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const AttentionConfig& cfg = opt.attention;
  k::embed(embed, wdt, meta_d + meta.tokens, T, H, x, stream);
  for (int l = 0; l < c.num_layers; ++l) {
    const DeviceLayer& L = layers[l];
    k::rmsnorm(x, nullptr, T, H, L.attn_norm, eps, h, wdt, stream);
    gemm(L.qkv, h, T, qd + 2 * kd, H, qkv, 0.f);
    k::QkvPostArgs a;
    a.qkv = qkv;
    a.bias = L.qkv_bias;
    a.q_norm = L.q_norm;
    a.k_norm = L.k_norm;
    a.pos = meta_d + meta.pos;
    a.inv_freq = inv_freq;
    a.eps = eps;
    a.rows = T, a.Hq = Hq, a.Hk = Hk, a.D = D;
    a.q = q, a.k = knew, a.v = vnew;
    k::qkv_post(a, stream);
    const PagedKV kv = layer_kv(l, batch);
    append_kv(kv, make_view(knew, DType::f32, {T, Hk, D}, Device::cuda),
              make_view(vnew, DType::f32, {T, Hk, D}, Device::cuda), meta_d + meta.append_indptr);
    const bool dense_layer = cfg.estimator == Estimator::dense || l < opt.dense_layers;
    const TensorView qv = make_view(q, DType::f32, {T, Hq, D}, Device::cuda);
    const TensorView ov = make_view(att, wdt, {T, Hq, D}, Device::cuda);
    if (decode) {
      plan_for(batch, dense_layer).run(qv, kv, ov, TensorView{}, stream);
    } else if (cfg.prefill == PrefillMode::unisparse && l >= opt.dense_layers) {
      const PrefillBlocks pb = prefill_blocks(cfg, T, kv_len);
      const size_t need = size_t(Hq) * pb.num_q_blocks * pb.num_kv_blocks;
      if (need > pf_cap) {  // grows rarely: chunks have a fixed size, contexts grow by chunks
        pf_cap = std::max(need, 2 * pf_cap);
        pf_blocks = arena.alloc<int32_t>(pf_cap * 4, "prefill block selection");
        pf_counts = arena.alloc<int32_t>(pf_cap * 4, "prefill block selection");
      }
      const BlockSelection sel{pf_blocks, pf_counts, Hq, pb.num_q_blocks, pb.num_kv_blocks, Device::cuda};
      select_prefill_blocks(cfg, qv, kv, 0, kv_len, sel);
      sparse_prefill(cfg, qv, kv, 0, kv_len, &sel, ov, TensorView{});
      std::vector<int32_t> counts(size_t(Hq) * pb.num_q_blocks);
      UNIQUE_CUDA_CHECK(cudaMemcpyAsync(counts.data(), pf_counts, counts.size() * 4, cudaMemcpyDeviceToHost, stream));
      UNIQUE_CUDA_CHECK(cudaStreamSynchronize(stream));
      for (int32_t n : counts) stats->blocks_kept += n;
      for (int i = 0; i < pb.num_q_blocks; ++i) stats->blocks_dense += int64_t(Hq) * (pb.first_q_block + i + 1);
    } else {
      sparse_prefill(cfg, qv, kv, 0, kv_len, nullptr, ov, TensorView{});
    }
    gemm(L.o, att, T, H, qd, x, 1.f);
    k::rmsnorm(x, nullptr, T, H, L.mlp_norm, eps, h, wdt, stream);
    gemm(L.gate_up, h, T, 2 * I, H, gu, 0.f);
    k::silu_mul(gu, T, I, h, wdt, stream);
    gemm(L.down, h, T, H, I, x, 1.f);
  }
  if (n_out == 0) return;
  k::rmsnorm(x, meta_d + meta.out_rows, n_out, H, final_norm, eps, h, wdt, stream);
  gemm(lm_head, h, n_out, c.vocab_size, H, logits, 0.f);
}

void CudaEngine::Impl::ensure_pages(int seq, int64_t len) {
  const int64_t need = (len + kvo.page_size - 1) / kvo.page_size;
  auto& pages = seq_pages[seq];
  while (static_cast<int64_t>(pages.size()) < need) {
    if (free_pages.empty()) throw_arg("KV cache pool", concat("a free page for sequence ", seq), "none left");
    pages.push_back(free_pages.back());
    free_pages.pop_back();
  }
}

// Page table of `seqs` at lengths `lens` into the host metadata.
void CudaEngine::Impl::write_table(const std::vector<int>& seqs, const std::vector<int64_t>& lens) {
  int32_t* indptr = meta_h + meta.indptr;
  int32_t* indices = meta_h + meta.indices;
  int32_t* last = meta_h + meta.last_len;
  indptr[0] = 0;
  for (size_t b = 0; b < seqs.size(); ++b) {
    const int64_t n = (lens[b] + kvo.page_size - 1) / kvo.page_size;
    std::copy(seq_pages[seqs[b]].begin(), seq_pages[seqs[b]].begin() + n, indices + indptr[b]);
    indptr[b + 1] = indptr[b] + static_cast<int32_t>(n);
    last[b] = static_cast<int32_t>(lens[b] - (n - 1) * kvo.page_size);
  }
}

// Copies the used part of every metadata section to the device.
void CudaEngine::Impl::upload_meta(int rows, int batch, int n_out) {
  auto put = [&](int64_t off, int64_t n) {
    if (n > 0)
      UNIQUE_CUDA_CHECK(cudaMemcpyAsync(meta_d + off, meta_h + off, n * 4, cudaMemcpyHostToDevice, stream));
  };
  put(meta.tokens, rows);
  put(meta.pos, rows);
  put(meta.indptr, batch + 1);
  put(meta.indices, meta_h[meta.indptr + batch]);
  put(meta.last_len, batch);
  put(meta.append_indptr, batch + 1);
  put(meta.out_rows, n_out);
}

CudaEngine::CudaEngine(const Model& model, const EngineOptions& opt, const KVCacheOptions& kv)
    : p_(std::make_unique<Impl>(model, opt, kv)) {
  p_->init();
}

CudaEngine::~CudaEngine() = default;

void CudaEngine::set_options(const EngineOptions& opt) {
  p_->opt = opt;
  p_->drop_graphs();
  p_->plans.clear();
}

int CudaEngine::add_sequence() {
  Impl& s = *p_;
  for (size_t i = 0; i < s.seq_live.size(); ++i)
    if (!s.seq_live[i]) {
      s.seq_live[i] = true;
      s.seq_len[i] = 0;
      return static_cast<int>(i);
    }
  s.seq_live.push_back(true);
  s.seq_len.push_back(0);
  s.seq_pages.emplace_back();
  return static_cast<int>(s.seq_live.size() - 1);
}

void CudaEngine::free_sequence(int seq) {
  Impl& s = *p_;
  UNIQUE_CHECK_ARG(seq >= 0 && seq < static_cast<int>(s.seq_live.size()) && s.seq_live[seq], "seq",
                   "a live sequence id", seq);
  for (auto it = s.seq_pages[seq].rbegin(); it != s.seq_pages[seq].rend(); ++it) s.free_pages.push_back(*it);
  s.seq_pages[seq].clear();
  s.seq_len[seq] = 0;
  s.seq_live[seq] = false;
}

int64_t CudaEngine::length(int seq) const {
  UNIQUE_CHECK_ARG(seq >= 0 && seq < static_cast<int>(p_->seq_live.size()) && p_->seq_live[seq], "seq",
                   "a live sequence id", seq);
  return p_->seq_len[seq];
}
int CudaEngine::seq_pages(int seq) const {
  length(seq);
  return static_cast<int>(p_->seq_pages[seq].size());
}
int CudaEngine::free_pages() const { return static_cast<int>(p_->free_pages.size()); }

int CudaEngine::fork_sequence(int seq) {
  Impl& s = *p_;
  const int64_t len = length(seq);
  const int n = static_cast<int>(s.seq_pages[seq].size());
  // Source and destination page ids go through the metadata buffer's index area.
  UNIQUE_CHECK_ARG(2 * int64_t(n) <= int64_t(s.opt.max_batch) * s.pages_per_seq, "fork_sequence",
                   "a sequence of at most half the pool", concat(n, " pages"));
  const int id = add_sequence();
  s.ensure_pages(id, len);
  s.seq_len[id] = len;
  if (n == 0) return id;
  int32_t* src = s.meta_h + s.meta.indices;
  std::copy(s.seq_pages[seq].begin(), s.seq_pages[seq].end(), src);
  std::copy(s.seq_pages[id].begin(), s.seq_pages[id].end(), src + n);
  UNIQUE_CUDA_CHECK(cudaMemcpyAsync(s.meta_d + s.meta.indices, src, 2 * n * 4, cudaMemcpyHostToDevice, s.stream));
  const int32_t* sd = s.meta_d + s.meta.indices;
  const int64_t kv_row = int64_t(s.kvo.num_kv_heads) * s.kvo.page_size * s.kvo.head_dim * dtype_size(s.kvo.dtype);
  const int64_t st_row = int64_t(s.kvo.num_kv_heads) * s.kvo.head_dim * dtype_size(s.kvo.stats_dtype);
  for (DeviceLayer& L : s.layers) {
    for (void* base : {L.k, L.v}) k::copy_rows(base, kv_row, sd, sd + n, n, s.stream);
    for (void* base : {L.mean, L.std, L.kmin, L.kmax})
      if (base) k::copy_rows(base, st_row, sd, sd + n, n, s.stream);
    if (L.stats_scale) k::copy_rows(L.stats_scale, int64_t(s.kvo.num_kv_heads) * 2 * 4, sd, sd + n, n, s.stream);
  }
  UNIQUE_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  return id;
}

void CudaEngine::forward(const std::vector<int>& seqs, const std::vector<int>& counts, const std::vector<int>& tokens,
                         bool decode, const std::vector<int64_t>& out_rows, float* logits,
                         Engine::PrefillStats& stats) {
  Impl& s = *p_;
  const int B = static_cast<int>(seqs.size());
  const int T = static_cast<int>(tokens.size());
  UNIQUE_CHECK_ARG(T <= s.rows_cap, "tokens of one forward", concat("<= ", s.rows_cap), T);
  const StreamScope on_stream(s.stream);
  std::vector<int64_t> lens(B);
  int32_t* tok = s.meta_h + s.meta.tokens;
  int32_t* pos = s.meta_h + s.meta.pos;
  int32_t* ai = s.meta_h + s.meta.append_indptr;
  ai[0] = 0;
  int r = 0;
  for (int b = 0; b < B; ++b) {
    lens[b] = s.seq_len[seqs[b]] + counts[b];
    s.ensure_pages(seqs[b], lens[b]);
    for (int j = 0; j < counts[b]; ++j, ++r) {
      tok[r] = tokens[r];
      pos[r] = static_cast<int32_t>(s.seq_len[seqs[b]] + j);
    }
    ai[b + 1] = r;
  }
  s.write_table(seqs, lens);
  const int n_out = logits ? static_cast<int>(out_rows.size()) : 0;
  for (int i = 0; i < n_out; ++i) s.meta_h[s.meta.out_rows + i] = static_cast<int32_t>(out_rows[i]);
  s.upload_meta(T, B, n_out);
  const bool graph = decode && s.opt.cuda_graph && n_out == B;
  if (graph) {
    auto it = s.graphs.find(B);
    if (it == s.graphs.end()) {
      // Plans first: their allocations cannot happen inside a capture.
      s.plan_for(B, true);
      if (s.opt.attention.estimator != Estimator::dense && s.opt.dense_layers < s.model.config().num_layers)
        s.plan_for(B, false);
      cudaGraph_t g = nullptr;
      UNIQUE_CUDA_CHECK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeThreadLocal));
      try {
        s.layers_forward(T, B, true, 0, n_out, nullptr);
      } catch (...) {
        cudaStreamEndCapture(s.stream, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      UNIQUE_CUDA_CHECK(cudaStreamEndCapture(s.stream, &g));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
      cudaGraphDestroy(g);
      UNIQUE_CUDA_CHECK(e);
      it = s.graphs.emplace(B, exec).first;
    }
    UNIQUE_CUDA_CHECK(cudaGraphLaunch(it->second, s.stream));
  } else {
    s.layers_forward(T, B, decode, decode ? 0 : lens[0], n_out, &stats);
  }
  if (n_out > 0) {
    const size_t bytes = size_t(n_out) * s.model.config().vocab_size * 4;
    UNIQUE_CUDA_CHECK(cudaMemcpyAsync(s.logits_h, s.logits, bytes, cudaMemcpyDeviceToHost, s.stream));
    UNIQUE_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    std::memcpy(logits, s.logits_h, bytes);
  } else {
    UNIQUE_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  }
  for (int b = 0; b < B; ++b) s.seq_len[seqs[b]] = lens[b];
}

void CudaEngine::fill_synthetic(int seq, int64_t tokens, uint64_t seed) {
  Impl& s = *p_;
  const ModelConfig& c = s.model.config();
  const StreamScope on_stream(s.stream);
  const int Hk = c.num_kv_heads, D = c.head_dim;
  for (int64_t start = 0; start < tokens; start += s.rows_cap) {
    const int n = static_cast<int>(std::min<int64_t>(s.rows_cap, tokens - start));
    const int64_t len = s.seq_len[seq] + n;
    s.ensure_pages(seq, len);
    s.write_table({seq}, {len});
    s.meta_h[s.meta.append_indptr] = 0;
    s.meta_h[s.meta.append_indptr + 1] = n;
    s.upload_meta(0, 1, 0);
    for (int l = 0; l < c.num_layers; ++l) {
      k::synthetic_kv(seed * 1000003 + l, start, n, Hk, D, s.knew, s.vnew, s.stream);
      append_kv(s.layer_kv(l, 1), make_view(s.knew, DType::f32, {n, Hk, D}, Device::cuda),
                make_view(s.vnew, DType::f32, {n, Hk, D}, Device::cuda), s.meta_d + s.meta.append_indptr);
    }
    UNIQUE_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    s.seq_len[seq] = len;
  }
}

}  // namespace unique::engine

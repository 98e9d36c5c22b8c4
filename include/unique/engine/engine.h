// The Llama-family forward over a paged KV cache, and the generation loop. Two backends
// behind one class (EngineOptions::device):
//   cpu:  one unique::KVCache per layer (keeps the page statistics), OpenBLAS GEMMs.
//   cuda: weights, KV pages and statistics in GPU memory; cuBLAS GEMMs, fused
//         RMSNorm / q-k-norm + RoPE / SwiGLU kernels, the library's CUDA append, prefill
//         and DecodePlan kernels; each decode step of a batch shape is one CUDA graph
//         (src/engine/cuda/).
//   prefill: chunks of one sequence's prompt; GEMMs through OpenBLAS; K/V appended to the
//            cache, then causal attention over the sequence's cached keys: dense (two
//            sgemms per head), or with AttentionConfig::prefill == unisparse
//            unique::select_prefill_blocks + unique::sparse_prefill (dense for the first
//            dense_layers layers).
//   decode:  one token for each sequence of a batch; unique::select_pages +
//            unique::paged_decode with the estimator of EngineOptions::attention (dense
//            for the first dense_layers layers or Estimator::dense).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "unique/config.h"
#include "unique/engine/model.h"
#include "unique/engine/sampler.h"
#include "unique/kv_cache.h"

namespace unique::engine {

class CudaEngine;  // src/engine/cuda/cuda_engine.h

struct EngineOptions {
  AttentionConfig attention;     // page_size, budget, sink, recent, estimator, ...
  int dense_layers = 0;          // first N layers always use dense attention (decode and prefill)
  DType kv_dtype = DType::f32;   // KV cache storage
  DType stats_dtype = DType::f32;  // page statistics (bf16 halves the bytes selection reads, fp8 quarters them)
  int max_batch = 1;             // sequences alive at once
  int64_t max_context = 4096;    // tokens per sequence (prompt + generated): sizes the pool
  int prefill_chunk = 256;       // prompt tokens per forward during prefill
  bool keep_all_stats = false;   // keep mean/std and min/max (to switch estimators later)
  Device device = Device::cpu;   // cuda: the GPU backend (needs a CUDA build and a GPU)
  bool cuda_graph = true;        // cuda: replay each decode step as a CUDA graph
  void validate() const;
};

class Engine {
 public:
  Engine(const Model& model, const EngineOptions& opt);
  ~Engine();
  const EngineOptions& options() const { return opt_; }
  // Switches the decode attention (same page size; the cache must keep the estimator's
  // statistics: see keep_all_stats).
  void set_attention(const AttentionConfig& cfg, int dense_layers);
  const Model& model() const { return model_; }

  int add_sequence();
  void free_sequence(int seq);
  // A new sequence holding a copy of seq's keys and values in every layer (statistics
  // recomputed from them): one prefill shared by several decode runs (the eval's sweeps).
  // Throws unique::Error when the pool has too few free pages (nothing allocated then).
  int fork_sequence(int seq);
  int64_t length(int seq) const;
  // Pages a sequence holds and the pool's free pages (both backends).
  int seq_pages(int seq) const;
  int free_pages() const;

  // Appends `tokens` to sequence seq (chunked forward); writes the logits of the last
  // token to logits_last [vocab] (may be null). Throws unique::Error before changing
  // anything when the tokens are empty, an id is out of range, or the sequence would
  // exceed max_context / the model's max_position_embeddings.
  void prefill(int seq, const std::vector<int>& tokens, float* logits_last);
  // One token for each sequence in seqs; logits [seqs.size(), vocab].
  void decode(const std::vector<int>& seqs, const std::vector<int>& tokens, float* logits);

  // Appends synthetic keys/values (uniform, std ~1, keys with a per-channel offset; speed
  // runs only)
  // to every layer of seq, without running the model.
  void fill_synthetic(int seq, int64_t tokens, uint64_t seed);
  // The KV cache of a layer (CPU backend; the CUDA backend throws unique::Error).
  const KVCache& cache(int layer) const;
  // Layout of every layer's cache (both backends).
  const KVCacheOptions& kv_options() const { return kv_opt_; }

  // Key blocks of the UniSparse prefill layers since construction: kept by the selection,
  // and what dense causal attention would compute (query heads x visible blocks).
  struct PrefillStats {
    int64_t blocks_kept = 0, blocks_dense = 0;
  };
  const PrefillStats& prefill_stats() const { return prefill_stats_; }

  // Called in every decode step for every layer after its attention: the queries
  // [batch, num_heads, head_dim] (RoPE applied), the cache of the layer (this step's token
  // included) and the attention output [batch, num_heads, head_dim]. Lets the eval measure
  // selections on the model's real queries and keys. Empty function: none.
  using DecodeObserver = std::function<void(int layer, const TensorView& q, const PagedKV& kv, const TensorView& out)>;
  void set_decode_observer(DecodeObserver f);  // CPU backend only

  // Called in every prefill chunk for every layer once the chunk's keys are appended,
  // before its attention: the chunk's queries [chunk tokens, num_heads, head_dim] (fp32,
  // RoPE applied) and the layer's cache as a batch of one (sequence 0 = the prefilled
  // sequence, every token so far). Lets tools study the prefill's real queries and keys
  // (bench-prefill --model: composite vs exact block mass). Empty function: none.
  using PrefillObserver = std::function<void(int layer, const TensorView& q, const PagedKV& kv)>;
  void set_prefill_observer(PrefillObserver f);  // CPU backend only

 private:
  struct Scratch;
  const Model& model_;
  EngineOptions opt_;
  KVCacheOptions kv_opt_;
  std::vector<std::unique_ptr<KVCache>> caches_;  // CPU backend
  std::unique_ptr<CudaEngine> cuda_;             // CUDA backend
  std::unique_ptr<Scratch> s_;
  PrefillStats prefill_stats_;
  DecodeObserver observer_;
  PrefillObserver prefill_observer_;

  void check_append(int seq, int64_t n) const;
  // Runs all layers on rows x [T, hidden]; rows belong to `seqs` with `counts` tokens each
  // (prefill: one seq; decode: counts all 1). logits for rows `out_rows`.
  void forward(const std::vector<int>& seqs, const std::vector<int>& counts, const std::vector<int>& tokens,
               bool decode, const std::vector<int64_t>& out_rows, float* logits);
};

struct GenerateOptions {
  int max_new_tokens = 64;
  SamplerOptions sampler;
  std::vector<int> eos_ids;  // stop tokens (empty: run to max_new_tokens)
  bool keep_logits = false;  // record the logits of every generated token (tests, parity checks)
};

struct GenerateResult {
  std::vector<std::vector<int>> tokens;  // generated tokens per prompt (EOS included)
  std::vector<std::vector<std::vector<float>>> logits;  // [prompt][step][vocab] if keep_logits
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0;
  // UniSparse prefill (0 when dense): key blocks kept / dense causal key blocks, summed
  // over the sparse layers, query heads and query blocks of every prompt.
  int64_t prefill_blocks_kept = 0, prefill_blocks_dense = 0;
};

// Generates for a batch of prompts (different lengths allowed): prefill each, then decode
// all live sequences together until EOS or max_new_tokens. on_token(prompt_index, token)
// is called for every generated token as soon as it is known.
GenerateResult generate(Engine& engine, const std::vector<std::vector<int>>& prompts,
                        const GenerateOptions& opt,
                        const std::function<void(int, int)>& on_token = nullptr);

}  // namespace unique::engine

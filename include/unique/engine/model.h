// Llama-family model weights (Llama 2/3, Mistral, Qwen2, Qwen3) loaded from a Hugging Face
// directory, and the GEMM entry point the forward uses.
//
// Weight dtype choice (CPU): matrices stay in the dtype of the file and are read from the
// memory map where possible (fp32 directly; bf16/fp16 without a copy). Decode (few rows)
// runs a fused 16-bit-to-fp32 GEMV kernel over the 16-bit weights, so a decode step reads
// 2 bytes per parameter; prefill (many rows) converts 256-row panels to fp32 and calls
// cblas_sgemm. LoadOptions::weights_fp32 converts everything to fp32 at load instead
// (twice the memory and decode bytes, exact fp32 GEMMs). Norm weights and biases are
// always fp32 copies.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "unique/dtype.h"
#include "unique/engine/model_config.h"
#include "unique/engine/safetensors.h"

namespace unique::engine {

// Row-major matrix [rows, cols] (a PyTorch Linear weight [out_features, in_features]).
struct Weight {
  const void* data = nullptr;
  DType dtype = DType::f32;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> owned;  // backing store when not memory-mapped
  size_t bytes() const { return static_cast<size_t>(rows * cols) * dtype_size(dtype); }
};

struct LayerWeights {
  Weight q, k, v, o, gate, up, down;
  std::vector<float> attn_norm, mlp_norm, q_norm, k_norm, q_bias, k_bias, v_bias;
};

struct LoadOptions {
  bool weights_fp32 = false;  // convert 16-bit weights to fp32 at load
  int max_layers = 0;         // > 0: load only the first N layers (benchmarks, debugging)
};

class Model {
 public:
  // Loads config.json, generation_config.json (EOS) and the safetensors weights of dir.
  // Every tensor is checked against the config (name, shape, float dtype); errors name
  // the file and tensor or field.
  static std::unique_ptr<Model> load(const std::string& dir, const LoadOptions& opt = {});
  // Random weights (uniform, std 0.02; norms 1) of the given config in `dtype`: speed only.
  static std::unique_ptr<Model> random(const ModelConfig& cfg, DType dtype, uint64_t seed = 1);

  const ModelConfig& config() const { return cfg_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const Weight& embed() const { return embed_; }
  const Weight& lm_head() const { return cfg_.tie_word_embeddings ? embed_ : lm_head_; }
  const std::vector<float>& final_norm() const { return final_norm_; }
  const std::vector<double>& rope_inv_freq() const { return inv_freq_; }
  // Bytes a decode step reads for the weights (all matrices incl. lm_head, not the embedding).
  size_t decode_weight_bytes() const;
  size_t total_weight_bytes() const;

 private:
  ModelConfig cfg_;
  std::unique_ptr<TensorStore> store_;
  std::vector<LayerWeights> layers_;
  Weight embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<double> inv_freq_;
};

// y[M, N] = x[M, K] * W^T (W [N, K]); fp32 activations. Threads: OpenMP / OpenBLAS.
void linear(const float* x, int64_t M, const Weight& w, float* y);
// Row `row` of an embedding matrix as fp32.
void embedding_row(const Weight& w, int64_t row, float* out);

}  // namespace unique::engine

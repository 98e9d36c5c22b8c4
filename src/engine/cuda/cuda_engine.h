// Internal: the CUDA backend of unique::engine::Engine (engine.h says what it does). The
// Engine validates every argument on the host, then calls these. Plain C++ (no CUDA types),
// so engine.cpp compiles without nvcc; a build without CUDA gets cuda_engine_stub.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "unique/engine/engine.h"

namespace unique::engine {

class CudaEngine {
 public:
  // Throws unique::Error (no GPU, unsupported KV dtype/head dim) or unique::RuntimeError
  // (CUDA failure, e.g. out of memory, naming what was being allocated).
  CudaEngine(const Model& model, const EngineOptions& opt, const KVCacheOptions& kv);
  ~CudaEngine();
  // New attention settings (page size unchanged): drops the decode plans and graphs.
  void set_options(const EngineOptions& opt);

  int add_sequence();
  void free_sequence(int seq);
  int fork_sequence(int seq);  // the caller checked the pool has the pages
  int64_t length(int seq) const;
  int seq_pages(int seq) const;
  int free_pages() const;

  // As Engine::forward; prefill chunks add their UniSparse block counts to `stats`.
  void forward(const std::vector<int>& seqs, const std::vector<int>& counts, const std::vector<int>& tokens,
               bool decode, const std::vector<int64_t>& out_rows, float* logits, Engine::PrefillStats& stats);
  void fill_synthetic(int seq, int64_t tokens, uint64_t seed);

 private:
  struct Impl;
  std::unique_ptr<Impl> p_;
};

}  // namespace unique::engine

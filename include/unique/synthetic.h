// Synthetic decode workloads whose keys look like real ones: per-channel outlier
// dimensions, keys that drift smoothly so neighbouring pages cluster, and planted
// "needle" pages and an attention sink (the first tokens) that the query attends to. Used by the CLI benchmark, the benchmarks
// and tests; deterministic for a seed.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "unique/kv_cache.h"

namespace unique {

struct SyntheticSpec {
  int batch = 4;
  int64_t context = 32768;   // tokens per sequence (before ragged shortening)
  bool ragged = false;       // sequence b gets context * (1 - b/(2*batch)) tokens
  int num_qo_heads = 32;
  int num_kv_heads = 8;
  int head_dim = 128;
  int page_size = 16;
  DType dtype = DType::bf16;
  DType stats_dtype = DType::bf16;
  int needles = 4;           // pages per (sequence, KV head) planted to match the query
  uint64_t seed = 0;
};

struct SyntheticWorkload {
  std::unique_ptr<KVCache> cache;
  std::vector<int> seqs;
  PageTable table;
  std::vector<float> q;                     // [batch, num_qo_heads, head_dim] fp32
  std::vector<std::vector<int>> needle_pages;  // [batch * num_kv_heads] logical positions
  PagedKV kv() const { return cache->view(table); }
  TensorView q_view(const SyntheticSpec& s) const {
    return make_view(q.data(), DType::f32, {s.batch, s.num_qo_heads, s.head_dim});
  }
};

// Builds the cache by appending the sequences in chunks (so page stats are produced
// by the incremental path). `progress`, if set, is called with the fraction done.
SyntheticWorkload make_synthetic_workload(const SyntheticSpec& spec,
                                          void (*progress)(double) = nullptr);

}  // namespace unique

// KVCache: owning storage for a paged KV cache plus a page allocator and per-sequence
// page lists. Produces PagedKV descriptors for a batch of its sequences.
// Appends keep the page statistics (mean/std and min/max) up to date.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "unique/paged_kv.h"
#include "unique/tensor.h"

namespace unique {

struct KVCacheOptions {
  int num_pages = 0;       // pool size
  int num_kv_heads = 8;
  int page_size = 16;
  int head_dim = 128;
  DType dtype = DType::bf16;
  DType stats_dtype = DType::f32;  // page statistics storage (bf16: half the selection bytes;
                                   // fp8 (e4m3): a quarter, plus an fp32 scale per page, head, pair)
  Device device = Device::cpu;
  bool keep_unique_stats = true;  // mean/std
  bool keep_quest_stats = true;   // min/max
};

// Host page table of a batch, kept alive next to the PagedKV that points into it.
struct PageTable {
  std::vector<int32_t> indptr{0};
  std::vector<int32_t> indices;
  std::vector<int32_t> last_page_len;
  int batch() const { return static_cast<int>(last_page_len.size()); }
};

class KVCache {
 public:
  explicit KVCache(const KVCacheOptions& opt);
  ~KVCache();
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;

  const KVCacheOptions& options() const { return opt_; }
  int free_pages() const { return static_cast<int>(free_.size()); }

  int add_sequence();                 // returns a sequence id
  void free_sequence(int seq);        // returns its pages to the pool
  int64_t length(int seq) const;
  const std::vector<int32_t>& pages(int seq) const;

  // Appends tokens to sequences: k_new/v_new [sum(counts), num_kv_heads, head_dim]
  // (any dtype, converted to the cache dtype), rows grouped by sequence in `seqs` order.
  // Allocates pages as needed (throws unique::Error when the pool is exhausted, before
  // changing anything) and updates the page statistics of every touched page.
  void append(const std::vector<int>& seqs, const std::vector<int>& counts,
              const TensorView& k_new, const TensorView& v_new);

  // Page table for a batch of sequences (host vectors).
  PageTable page_table(const std::vector<int>& seqs) const;
  // Descriptor over this cache's storage and `table` (which must outlive it).
  PagedKV view(const PageTable& table) const;

 private:
  struct Storage;
  KVCacheOptions opt_;
  std::unique_ptr<Storage> mem_;
  std::vector<int32_t> free_;
  std::vector<std::vector<int32_t>> seq_pages_;
  std::vector<int64_t> seq_len_;
  std::vector<bool> seq_live_;
  void check_seq(int seq) const;
};

}  // namespace unique

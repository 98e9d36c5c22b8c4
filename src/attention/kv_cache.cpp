#include "unique/kv_cache.h"

#include <cstring>
#include <numeric>
#include <utility>

#include "attention/host_buffer.h"
#include "unique/error.h"
#include "unique/page_stats.h"

namespace unique {

struct KVCache::Storage {
  detail::HostBuffer k, v, mean, std, kmin, kmax, scale;
};

KVCache::KVCache(const KVCacheOptions& opt) : opt_(opt), mem_(std::make_unique<Storage>()) {
  UNIQUE_CHECK_ARG(opt.num_pages > 0, "num_pages", "> 0", opt.num_pages);
  UNIQUE_CHECK_ARG(opt.num_kv_heads > 0, "num_kv_heads", "> 0", opt.num_kv_heads);
  UNIQUE_CHECK_ARG(opt.page_size >= 1 && opt.page_size <= 256, "page_size", "1..256", opt.page_size);
  UNIQUE_CHECK_ARG(opt.head_dim > 0 && opt.head_dim % 16 == 0 && opt.head_dim <= 512, "head_dim",
            "a multiple of 16 in 16..512", opt.head_dim);
  UNIQUE_CHECK_ARG(opt.device == Device::cpu, "device", "cpu (KVCache owns host memory)",
            to_string(opt.device));
  expect_compute_dtype(opt.dtype, "KV cache dtype");
  const size_t tokens = size_t(opt.num_pages) * opt.num_kv_heads * opt.page_size;
  const size_t rows = size_t(opt.num_pages) * opt.num_kv_heads * opt.head_dim;
  mem_->k = detail::HostBuffer(tokens * opt.head_dim * dtype_size(opt.dtype));
  mem_->v = detail::HostBuffer(tokens * opt.head_dim * dtype_size(opt.dtype));
  if (opt.keep_unique_stats) {
    mem_->mean = detail::HostBuffer(rows * dtype_size(opt.stats_dtype));
    mem_->std = detail::HostBuffer(rows * dtype_size(opt.stats_dtype));
  }
  if (opt.keep_quest_stats) {
    mem_->kmin = detail::HostBuffer(rows * dtype_size(opt.stats_dtype));
    mem_->kmax = detail::HostBuffer(rows * dtype_size(opt.stats_dtype));
  }
  if (opt.stats_dtype == DType::e4m3 && (opt.keep_unique_stats || opt.keep_quest_stats))
    mem_->scale = detail::HostBuffer(size_t(opt.num_pages) * opt.num_kv_heads * 2 * sizeof(float));
  // Hand out low page ids first.
  free_.resize(opt.num_pages);
  std::iota(free_.rbegin(), free_.rend(), 0);
}

KVCache::~KVCache() = default;

void KVCache::check_seq(int seq) const {
  UNIQUE_CHECK_ARG(seq >= 0 && seq < static_cast<int>(seq_live_.size()) && seq_live_[seq], "sequence id",
            "a live sequence", seq);
}

int KVCache::add_sequence() {
  seq_pages_.emplace_back();
  seq_len_.push_back(0);
  seq_live_.push_back(true);
  return static_cast<int>(seq_live_.size()) - 1;
}

void KVCache::free_sequence(int seq) {
  check_seq(seq);
  for (int32_t p : seq_pages_[seq]) free_.push_back(p);
  seq_pages_[seq].clear();
  seq_len_[seq] = 0;
  seq_live_[seq] = false;
}

int64_t KVCache::length(int seq) const {
  check_seq(seq);
  return seq_len_[seq];
}

const std::vector<int32_t>& KVCache::pages(int seq) const {
  check_seq(seq);
  return seq_pages_[seq];
}

void KVCache::append(const std::vector<int>& seqs, const std::vector<int>& counts,
                     const TensorView& k_new, const TensorView& v_new) {
  UNIQUE_CHECK_ARG(seqs.size() == counts.size(), "counts.size()", seqs.size(), counts.size());
  UNIQUE_CHECK_ARG(!seqs.empty(), "seqs", "at least one sequence", "none");
  std::vector<int32_t> append_indptr{0};
  int64_t pages_needed = 0;
  std::vector<char> seen(seq_live_.size(), 0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    check_seq(seqs[i]);
    UNIQUE_CHECK_ARG(!seen[seqs[i]], "seqs", "distinct sequence ids", seqs[i]);
    seen[seqs[i]] = 1;
    UNIQUE_CHECK_ARG(counts[i] >= 0, detail::concat("counts[", i, "]"), ">= 0", counts[i]);
    const int64_t len = seq_len_[seqs[i]] + counts[i];
    pages_needed += (len + opt_.page_size - 1) / opt_.page_size -
                    static_cast<int64_t>(seq_pages_[seqs[i]].size());
    append_indptr.push_back(append_indptr.back() + counts[i]);
  }
  expect_shape(k_new, "k_new", {append_indptr.back(), opt_.num_kv_heads, opt_.head_dim});
  expect_shape(v_new, "v_new", {append_indptr.back(), opt_.num_kv_heads, opt_.head_dim});
  // Everything append_kv would refuse is refused here, before lengths and pages change.
  for (const auto& [t, name] : {std::pair{&k_new, "k_new"}, std::pair{&v_new, "v_new"}}) {
    expect_contiguous(*t, name);
    expect_device(*t, name, opt_.device);
    expect_not_null(*t, name);
  }
  UNIQUE_CHECK_ARG(pages_needed <= free_pages(), "KV cache pool",
            detail::concat(pages_needed, " free pages for this append"), free_pages());
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto& pages = seq_pages_[seqs[i]];
    seq_len_[seqs[i]] += counts[i];
    while (static_cast<int64_t>(pages.size()) * opt_.page_size < seq_len_[seqs[i]]) {
      pages.push_back(free_.back());
      free_.pop_back();
    }
  }
  // Sequences that get no token and are still empty stay out of the page table.
  std::vector<int> batch;
  std::vector<int32_t> indptr{0};
  for (size_t i = 0; i < seqs.size(); ++i)
    if (seq_len_[seqs[i]] > 0) {
      batch.push_back(seqs[i]);
      indptr.push_back(append_indptr[i + 1]);
    }
  if (batch.empty()) return;
  PageTable table = page_table(batch);
  append_kv(view(table), k_new, v_new, indptr.data());
}

PageTable KVCache::page_table(const std::vector<int>& seqs) const {
  PageTable t;
  for (int s : seqs) {
    check_seq(s);
    UNIQUE_CHECK_ARG(seq_len_[s] > 0, detail::concat("sequence ", s), "at least one token", "empty");
    const auto& p = seq_pages_[s];
    t.indices.insert(t.indices.end(), p.begin(), p.end());
    t.indptr.push_back(static_cast<int32_t>(t.indices.size()));
    t.last_page_len.push_back(static_cast<int32_t>(seq_len_[s] - (p.size() - 1) * opt_.page_size));
  }
  return t;
}

PagedKV KVCache::view(const PageTable& table) const {
  PagedKV kv;
  kv.dtype = opt_.dtype;
  kv.device = opt_.device;
  kv.num_pages = opt_.num_pages;
  kv.num_kv_heads = opt_.num_kv_heads;
  kv.page_size = opt_.page_size;
  kv.head_dim = opt_.head_dim;
  kv.k = mem_->k.data();
  kv.v = mem_->v.data();
  kv.stats_dtype = opt_.stats_dtype;
  kv.mean = mem_->mean.data();
  kv.std = mem_->std.data();
  kv.kmin = mem_->kmin.data();
  kv.kmax = mem_->kmax.data();
  kv.stats_scale = mem_->scale.data<float>();
  kv.batch = table.batch();
  kv.page_indptr = table.indptr.data();
  kv.page_indices = table.indices.data();
  kv.last_page_len = table.last_page_len.data();
  return kv;
}

}  // namespace unique

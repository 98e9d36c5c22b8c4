// Shared helpers of the GPU tests: device buffers, a device mirror of a host PagedKV.
#pragma once
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "test_util.h"
#include "unique/stream.h"
#include "unique/unique.h"

namespace unique::test {

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess) << #x
#define SKIP_WITHOUT_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device"

// Device buffer, freed on scope exit.
struct Dev {
  void* p = nullptr;
  size_t n = 0;
  Dev() = default;
  explicit Dev(size_t bytes) : n(bytes) {
    if (cudaMalloc(&p, std::max<size_t>(bytes, 16)) != cudaSuccess) throw std::runtime_error("cudaMalloc");
  }
  Dev(const void* host, size_t bytes) : Dev(bytes) { up(host, bytes); }
  Dev(Dev&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; }
  Dev& operator=(Dev&& o) noexcept {
    std::swap(p, o.p);
    std::swap(n, o.n);
    return *this;
  }
  ~Dev() {
    if (p) cudaFree(p);
  }
  void up(const void* host, size_t bytes) {
    if (cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) throw std::runtime_error("H2D");
  }
  void down(void* host, size_t bytes) const {
    if (cudaMemcpy(host, p, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) throw std::runtime_error("D2H");
  }
  void poison() { cudaMemset(p, 0xff, n); }  // NaN for floats, -1 for ints
  template <class T> T* as() const { return static_cast<T*>(p); }
};

// A device mirror of a host PagedKV (pool, stats, page table).
struct DevKV {
  Dev k, v, mean, std, kmin, kmax, scale, indptr, indices, last;
  PagedKV kv;
  DevKV(const PagedKV& h) {
    const size_t e = size_t(h.num_pages) * h.num_kv_heads * h.page_size * h.head_dim;
    const size_t s = size_t(h.num_pages) * h.num_kv_heads * h.head_dim;
    const size_t es = dtype_size(h.dtype), ss = dtype_size(h.stats_dtype);
    kv = h;
    kv.device = Device::cuda;
    k = Dev(h.k, e * es);
    v = Dev(h.v, e * es);
    kv.k = k.p;
    kv.v = v.p;
    if (h.mean) {
      mean = Dev(h.mean, s * ss);
      std = Dev(h.std, s * ss);
      kv.mean = mean.p;
      kv.std = std.p;
    }
    if (h.kmin) {
      kmin = Dev(h.kmin, s * ss);
      kmax = Dev(h.kmax, s * ss);
      kv.kmin = kmin.p;
      kv.kmax = kmax.p;
    }
    if (h.stats_scale) {  // fp8 statistics: [num_pages, num_kv_heads, 2] fp32
      scale = Dev(h.stats_scale, size_t(h.num_pages) * h.num_kv_heads * 2 * 4);
      kv.stats_scale = scale.as<float>();
    }
    indptr = Dev(h.page_indptr, (h.batch + 1) * 4);
    const int nnz = h.page_indptr[h.batch];
    indices = Dev(h.page_indices, std::max(nnz, 1) * 4);
    last = Dev(h.last_page_len, h.batch * 4);
    kv.page_indptr = indptr.as<int32_t>();
    kv.page_indices = indices.as<int32_t>();
    kv.last_page_len = last.as<int32_t>();
    kv.max_pages_per_seq = max_seq_pages(h);
  }
};

inline TensorView dview(const Dev& d, DType t, std::initializer_list<int64_t> shape) {
  return make_view(d.p, t, shape, Device::cuda);
}

// Sets environment variables for one scope and unsets them after (the launchers read their
// kernel overrides, e.g. UNIQUE_PREFILL_KERNEL, on every call); a null value sets nothing.
struct ScopedEnv {
  // Sets (or, for a null value, unsets) each variable; restores the previous values on exit.
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      const char* before = std::getenv(name);
      saved_.push_back({name, before != nullptr, before ? before : ""});
      if (value) setenv(name, value, 1);
      else unsetenv(name);
    }
  }
  ~ScopedEnv() {
    for (const Saved& v : saved_) {
      if (v.was_set) setenv(v.name, v.value.c_str(), 1);
      else unsetenv(v.name);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  struct Saved {
    const char* name;
    bool was_set;
    std::string value;
  };
  std::vector<Saved> saved_;
};

}  // namespace unique::test

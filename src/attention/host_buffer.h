// Internal: zero-filled host allocation for large KV pools, 2 MB aligned and advised for
// transparent huge pages: scattered page reads then miss the TLB far less often.
#pragma once
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace unique::detail {

class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(std::size_t bytes) : size_(bytes) {
    if (bytes == 0) return;
    constexpr std::size_t kHuge = std::size_t(2) << 20;
    const std::size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    ptr_ = std::aligned_alloc(kHuge, rounded);
    if (!ptr_) throw std::bad_alloc();
    madvise(ptr_, rounded, MADV_HUGEPAGE);  // advisory: fine if the kernel declines
    std::memset(ptr_, 0, bytes);
  }
  ~HostBuffer() { std::free(ptr_); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  HostBuffer(HostBuffer&& o) noexcept : ptr_(o.ptr_), size_(o.size_) { o.ptr_ = nullptr; o.size_ = 0; }
  HostBuffer& operator=(HostBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    return *this;
  }
  template <class T = void>
  T* data() const { return static_cast<T*>(ptr_); }
  std::size_t size() const { return size_; }

 private:
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace unique::detail

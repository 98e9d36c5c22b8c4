// Internal: a grow-only device buffer for the plan-less CUDA entry points' workspaces.
// Growing calls cudaMalloc (which synchronises): DecodePlan owns fixed workspaces instead.
#pragma once
#include <cstddef>

#include "cuda/common.cuh"

namespace unique::cuda {

struct GrowBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  bool zeroed = false;  // zero new allocations (kernels that expect zeroed counters)
  void* get(size_t need) {
    if (need <= bytes) return ptr;
    if (ptr) UNIQUE_CUDA_CHECK(cudaFree(ptr));
    ptr = nullptr;
    bytes = 0;
    UNIQUE_CUDA_CHECK(cudaMalloc(&ptr, need));
    if (zeroed) UNIQUE_CUDA_CHECK(cudaMemset(ptr, 0, need));
    bytes = need;
    return ptr;
  }
};

}  // namespace unique::cuda

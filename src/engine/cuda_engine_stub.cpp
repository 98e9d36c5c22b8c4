// The CUDA backend's entry points in a build without CUDA: constructing one is a clear
// error, so Engine needs no #ifdefs.
#ifndef UNIQUE_WITH_CUDA
#include "engine/cuda/cuda_engine.h"
#include "unique/error.h"

namespace unique::engine {

struct CudaEngine::Impl {};

CudaEngine::CudaEngine(const Model&, const EngineOptions&, const KVCacheOptions&) {
  throw_arg("device", "cpu (this build has no CUDA: configure with -DUNIQUE_CUDA=ON where nvcc is found)", "cuda");
}
CudaEngine::~CudaEngine() = default;
void CudaEngine::set_options(const EngineOptions&) {}
int CudaEngine::add_sequence() { return -1; }
void CudaEngine::free_sequence(int) {}
int CudaEngine::fork_sequence(int) { return -1; }
int64_t CudaEngine::length(int) const { return 0; }
int CudaEngine::seq_pages(int) const { return 0; }
int CudaEngine::free_pages() const { return 0; }
void CudaEngine::forward(const std::vector<int>&, const std::vector<int>&, const std::vector<int>&, bool,
                         const std::vector<int64_t>&, float*, Engine::PrefillStats&) {}
void CudaEngine::fill_synthetic(int, int64_t, uint64_t) {}

}  // namespace unique::engine
#endif

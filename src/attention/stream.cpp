#include "unique/stream.h"

#ifdef UNIQUE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace unique {

namespace {
thread_local void* g_stream = nullptr;
}

void set_cuda_stream(void* stream) { g_stream = stream; }
void* cuda_stream() { return g_stream; }

bool cuda_available() {
#ifdef UNIQUE_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
#else
  return false;
#endif
}

}  // namespace unique

#include "cuda/kernel_choice.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda/common.cuh"

namespace unique::cuda {

const char* requested_kernel(const char* env) {
  const char* e = std::getenv(env);
  if (!e || !*e || std::strcmp(e, "auto") == 0) return "auto";
  UNIQUE_CHECK_ARG(std::strcmp(e, "mma") == 0 || std::strcmp(e, "wgmma") == 0, env, "auto, mma or wgmma", e);
  return e;
}

const char* sm90_unavailable() {
#ifndef UNIQUE_CUDA_SM90A
  return "this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES without 90a)";
#else
  int dev = 0, major = 0;
  UNIQUE_CUDA_CHECK(cudaGetDevice(&dev));
  UNIQUE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major == 9 ? nullptr : "the device is not sm_90";
#endif
}

const char* choose_kernel(const char* env, const char* why_not) {
  const char* want = requested_kernel(env);
  if (std::strcmp(want, "mma") == 0) return "mma";
  const char* why = sm90_unavailable();
  if (!why) why = why_not;
  if (std::strcmp(want, "wgmma") == 0 && why)
    UNIQUE_CHECK_ARG(false, env, "a kernel that can run", std::string("wgmma: ") + why);
  return why ? "mma" : "wgmma";
}

}  // namespace unique::cuda

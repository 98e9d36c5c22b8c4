// fp8 (e4m3) conversions on the device against the library's host encoder/decoder
// (include/unique/dtype.h, the CPU's statistics path): every one of the 2^32 floats through
// cvt.rn.satfinite.e4m3 (__nv_cvt_float_to_fp8, what the CUDA append stores) and the
// host-side float_to_e4m3_bits run on the device, and every code through the score
// kernel's widening (src/cuda/fp8.cuh) against e4m3_bits_to_float.
#include <cuda_fp8.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cuda/fp8.cuh"
#include "unique/dtype.h"

namespace {

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

__global__ void encode_all(uint64_t begin, uint64_t count, unsigned long long* bad, uint32_t* first) {
  const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    const uint32_t u = static_cast<uint32_t>(begin + i);
    const float f = __uint_as_float(u);
    const uint8_t hw = __nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
    const uint8_t sw = unique::float_to_e4m3_bits(f);
    if (hw != sw && atomicAdd(bad, 1ull) == 0) *first = u;
  }
}

__global__ void decode_all(float* widened, float* lib) {
  const int c = threadIdx.x;  // 256 threads: one code each
  // Every 16-code group as one 16-byte load, code c at byte c % 16.
  if (c % 16 == 0) {
    uint8_t bytes[16];
    for (int i = 0; i < 16; ++i) bytes[i] = static_cast<uint8_t>(c + i);
    uint4 u;
    memcpy(&u, bytes, 16);
    float x[16];
    unique::cuda::unpack16_e4m3(u, x);
    for (int i = 0; i < 16; ++i) widened[c + i] = x[i];
  }
  lib[c] = unique::e4m3_bits_to_float(static_cast<uint8_t>(c));
}

TEST(GpuFp8, HardwareEncoderEqualsHostEncoderOnAllFloats) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  unsigned long long* bad = nullptr;
  uint32_t* first = nullptr;
  ASSERT_EQ(cudaMalloc(&bad, 8), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&first, 4), cudaSuccess);
  ASSERT_EQ(cudaMemset(bad, 0, 8), cudaSuccess);
  ASSERT_EQ(cudaMemset(first, 0, 4), cudaSuccess);
  encode_all<<<4096, 256>>>(0, uint64_t(1) << 32, bad, first);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  unsigned long long nbad = 0;
  uint32_t u = 0;
  cudaMemcpy(&nbad, bad, 8, cudaMemcpyDeviceToHost);
  cudaMemcpy(&u, first, 4, cudaMemcpyDeviceToHost);
  float f;
  std::memcpy(&f, &u, 4);
  EXPECT_EQ(nbad, 0ull) << "first mismatch at bits 0x" << std::hex << u << " (" << std::hexfloat << f
                        << "): device 0x" << int(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3))
                        << " (host emulation), library 0x" << int(unique::float_to_e4m3_bits(f));
  cudaFree(bad);
  cudaFree(first);
}

TEST(GpuFp8, WideningEqualsHostDecoderOnAllCodes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  float *w = nullptr, *l = nullptr;
  ASSERT_EQ(cudaMalloc(&w, 256 * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&l, 256 * 4), cudaSuccess);
  decode_all<<<1, 256>>>(w, l);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> hw(256), hl(256);
  cudaMemcpy(hw.data(), w, 256 * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(hl.data(), l, 256 * 4, cudaMemcpyDeviceToHost);
  for (int c = 0; c < 256; ++c) {
    const float want = unique::e4m3_bits_to_float(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(hw[c]) && std::isnan(hl[c])) << c;
      continue;
    }
    EXPECT_EQ(hw[c], want) << "widening, code " << c;
    EXPECT_EQ(hl[c], want) << "device e4m3_bits_to_float, code " << c;
    EXPECT_EQ(std::signbit(hw[c]), std::signbit(want)) << c;
  }
  cudaFree(w);
  cudaFree(l);
}

}  // namespace

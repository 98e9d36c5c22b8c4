// fp8 (e4m3) page statistics on the device: 16 codes of one 16-byte load widened to fp32
// by the hardware conversion (cvt.rn.f16x2.e4m3x2, exact: every e4m3 value is a half),
// then half2 -> float2. The codes are scaled values: the caller applies the page's pair
// scale (PagedKV::stats_scale) once, after its dot products.
#pragma once
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace unique::cuda {

// Two codes (low byte first) -> two floats.
__device__ __forceinline__ float2 e4m3x2_to_float2(uint16_t w) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

// 8 codes (an 8-byte load) -> x[0..8).
__device__ __forceinline__ void unpack8_e4m3(const uint2 u, float* x) {
  const uint32_t w[2] = {u.x, u.y};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float2 lo = e4m3x2_to_float2(static_cast<uint16_t>(w[i] & 0xffffu));
    const float2 hi = e4m3x2_to_float2(static_cast<uint16_t>(w[i] >> 16));
    x[4 * i] = lo.x;
    x[4 * i + 1] = lo.y;
    x[4 * i + 2] = hi.x;
    x[4 * i + 3] = hi.y;
  }
}

// 16 codes (a 16-byte load, element i in byte i) -> x[0..16).
__device__ __forceinline__ void unpack16_e4m3(const uint4 u, float* x) {
  unpack8_e4m3(make_uint2(u.x, u.y), x);
  unpack8_e4m3(make_uint2(u.z, u.w), x + 8);
}

}  // namespace unique::cuda

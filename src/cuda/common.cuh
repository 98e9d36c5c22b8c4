// Shared CUDA helpers of the kernels in src/cuda: checked calls (errors become
// unique::RuntimeError naming the failing call), dtype conversions on the device, 16-byte
// vector loads and warp reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "unique/dtype.h"
#include "unique/error.h"

namespace unique::cuda {

[[noreturn]] void throw_cuda(cudaError_t err, const char* call, const char* file, int line);

// Every runtime call and every launch goes through one of these two.
#define UNIQUE_CUDA_CHECK(call)                                                  \
  do {                                                                           \
    cudaError_t err_ = (call);                                                   \
    if (err_ != cudaSuccess) ::unique::cuda::throw_cuda(err_, #call, __FILE__, __LINE__); \
  } while (0)
#define UNIQUE_CUDA_LAUNCH(name)                                                 \
  do {                                                                           \
    cudaError_t err_ = cudaGetLastError();                                       \
    if (err_ != cudaSuccess) ::unique::cuda::throw_cuda(err_, "launch of " name, __FILE__, __LINE__); \
  } while (0)

int num_sms();  // of the current device (cached per device)

// ---- scalars ----------------------------------------------------------------------------

__device__ __forceinline__ float load_any(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::bf16: return __uint_as_float(uint32_t(static_cast<const uint16_t*>(p)[i]) << 16);
    case DType::f16: return __half2float(__ushort_as_half(static_cast<const uint16_t*>(p)[i]));
    default: return static_cast<const float*>(p)[i];
  }
}
__device__ __forceinline__ void store_any(void* p, DType t, int64_t i, float x) {
  switch (t) {
    case DType::bf16:
      static_cast<uint16_t*>(p)[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x));
      break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = __half_as_ushort(__float2half_rn(x)); break;
    default: static_cast<float*>(p)[i] = x;
  }
}

template <class T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<bf16>(bf16 x) { return __uint_as_float(uint32_t(x.bits) << 16); }
template <> __device__ __forceinline__ float to_f<f16>(f16 x) { return __half2float(__ushort_as_half(x.bits)); }
template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return bf16{__bfloat16_as_ushort(__float2bfloat16_rn(x))}; }
template <> __device__ __forceinline__ f16 from_f<f16>(float x) { return f16{__half_as_ushort(__float2half_rn(x))}; }

// ---- 16-byte vectors ------------------------------------------------------------------------

template <class T> struct Vec { static constexpr int n = 16 / sizeof(T); };

// Widens 16 bytes (n = 16/sizeof(T) elements) to floats.
template <class T>
__device__ __forceinline__ void unpack16(const uint4 u, float* x) {
  if constexpr (sizeof(T) == 4) {
    x[0] = __uint_as_float(u.x); x[1] = __uint_as_float(u.y);
    x[2] = __uint_as_float(u.z); x[3] = __uint_as_float(u.w);
  } else {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (std::is_same_v<T, bf16>) {
        x[2 * i] = __uint_as_float(w[i] << 16);
        x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
      } else {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
        x[2 * i] = f.x;
        x[2 * i + 1] = f.y;
      }
    }
  }
}
// 16-byte load through the read-only path, widened.
template <class T>
__device__ __forceinline__ void load16(const T* p, float* x) {
  unpack16<T>(__ldg(reinterpret_cast<const uint4*>(p)), x);
}
// Streaming variant for data read once (KV pages): evict first.
template <class T>
__device__ __forceinline__ void load16_stream(const T* p, float* x) {
  unpack16<T>(__ldcs(reinterpret_cast<const uint4*>(p)), x);
}

// ---- math -------------------------------------------------------------------------------------

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent of the
// previous kernel in the stream (PDL, sm_90): its launch and block setup overlap that
// kernel's tail. The kernel must execute `griddepcontrol.wait` before reading anything the
// previous kernel writes. Errors are left to UNIQUE_CUDA_LAUNCH / the returned status.
template <class... Params, class... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                const Args&... args) {
  cudaLaunchConfig_t lc{};
  lc.gridDim = grid;
  lc.blockDim = block;
  lc.dynamicSmemBytes = smem;
  lc.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = attr;
  lc.numAttrs = 1;
  UNIQUE_CUDA_CHECK(cudaLaunchKernelEx(&lc, kernel, args...));
}

// f(T{}, std::integral_constant<int, D>{}) for the tensor-core kernels' storage types (bf16,
// else fp16) and head dims (64, else 128): the launchers' one dispatch from runtime values.
template <class F>
void dispatch_16bit_hd(DType t, int head_dim, F&& f) {
  using D64 = std::integral_constant<int, 64>;
  using D128 = std::integral_constant<int, 128>;
  if (t == DType::bf16) {
    if (head_dim == 64) f(bf16{}, D64{});
    else f(bf16{}, D128{});
  } else {
    if (head_dim == 64) f(f16{}, D64{});
    else f(f16{}, D128{});
  }
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

}  // namespace unique::cuda

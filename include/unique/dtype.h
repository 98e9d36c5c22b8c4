// Element types and devices, and scalar conversions usable on host and device.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#if defined(__CUDACC__)
#define UNIQUE_HD __host__ __device__ __forceinline__
#else
#define UNIQUE_HD inline
#endif

namespace unique {

enum class DType : uint8_t { f32, f16, bf16 };
enum class Device : uint8_t { cpu, cuda };

std::size_t dtype_size(DType t);
const char* to_string(DType t);
const char* to_string(Device d);
DType parse_dtype(std::string_view s);  // "fp32|f32|float32", "fp16|f16|float16", "bf16|bfloat16"

// bf16 = upper 16 bits of an IEEE float; round-to-nearest-even on the way down.
UNIQUE_HD float bf16_bits_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
UNIQUE_HD uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// IEEE half <-> float without relying on compiler extensions (host reference path).
UNIQUE_HD float f16_bits_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) { mant <<= 1; --exp; }
      u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}
UNIQUE_HD uint16_t float_to_f16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t au = u & 0x7fffffffu;
  if (au > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (au >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (au < 0x38800000u) {  // subnormal or zero in half: round via float add trick
    float a;
    memcpy(&a, &au, 4);
    a += 0.5f;  // 2^-1: aligns the half subnormal ulp (2^-24) to float ulp of 0.5
    uint32_t r;
    memcpy(&r, &a, 4);
    return static_cast<uint16_t>(sign | (r - 0x3f000000u));
  }
  uint32_t mant_odd = (au >> 13) & 1u;
  au += 0xc8000fffu + mant_odd;  // rebias exponent (-112<<23) and round to nearest even
  return static_cast<uint16_t>(sign | (au >> 13));
}

struct bf16 { uint16_t bits; };
struct f16 { uint16_t bits; };

UNIQUE_HD float to_float(float x) { return x; }
UNIQUE_HD float to_float(bf16 x) { return bf16_bits_to_float(x.bits); }
UNIQUE_HD float to_float(f16 x) { return f16_bits_to_float(x.bits); }

template <class T> UNIQUE_HD T from_float(float x);
template <> UNIQUE_HD float from_float<float>(float x) { return x; }
template <> UNIQUE_HD bf16 from_float<bf16>(float x) { return bf16{float_to_bf16_bits(x)}; }
template <> UNIQUE_HD f16 from_float<f16>(float x) { return f16{float_to_f16_bits(x)}; }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<f16>() { return DType::f16; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }

// Calls f(T{}) with T the C++ type of dtype t: one dispatch point for dtype templates.
template <class F>
decltype(auto) dispatch_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f16: return f(f16{});
    case DType::bf16: return f(bf16{});
    default: return f(float{});
  }
}

// Load element i of a buffer of dtype t as float (slow path for references and metrics).
inline float load_as_float(const void* p, DType t, std::size_t i) {
  switch (t) {
    case DType::f16: return to_float(static_cast<const f16*>(p)[i]);
    case DType::bf16: return to_float(static_cast<const bf16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
inline void store_from_float(void* p, DType t, std::size_t i, float x) {
  switch (t) {
    case DType::f16: static_cast<f16*>(p)[i] = from_float<f16>(x); break;
    case DType::bf16: static_cast<bf16*>(p)[i] = from_float<bf16>(x); break;
    default: static_cast<float*>(p)[i] = x;
  }
}

}  // namespace unique

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

// e4m3 (fp8, OCP E4M3FN: bias 7, no infinities, 0x7f/0xff NaN, max 448) is a storage type
// for page statistics only (PagedKV::stats_dtype, with PagedKV::stats_scale): every
// tensor argument (q, K/V, outputs) and every KV dtype rejects it, and dispatch_dtype
// throws on it. Its codes are exact scaled values: see e4m3_scale_exp below.
enum class DType : uint8_t { f32, f16, bf16, e4m3 };
enum class Device : uint8_t { cpu, cuda };

std::size_t dtype_size(DType t);
const char* to_string(DType t);  // fp32, fp16, bf16, fp8
const char* to_string(Device d);
// Dtypes of tensors and KV caches: "fp32|f32|float32", "fp16|f16|float16", "bf16|bfloat16".
// "fp8" is refused with a message that names --stats-dtype / stats_dtype.
DType parse_dtype(std::string_view s);
// Dtypes of page statistics: parse_dtype's, and "fp8|e4m3|fp8_e4m3|float8_e4m3fn".
DType parse_stats_dtype(std::string_view s);
// Throws unique::Error "<arg>: expected fp32, fp16 or bf16, got fp8 (fp8 is a page-statistics
// storage type only)" when t is e4m3.
void expect_compute_dtype(DType t, const char* arg);
[[noreturn]] void throw_stats_only_dtype(DType t, const char* arg);

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

// fp8 e4m3 with round-to-nearest-even and saturation to +-448 (inf too): bit-for-bit
// CUDA's __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) (cvt.rn.satfinite.e4m3x2.f32).
// NaN -> 0x7f, |x| <= 2^-10 -> signed zero.
UNIQUE_HD uint8_t float_to_e4m3_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint32_t a = u & 0x7fffffffu;
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  if (a > 0x7f800000u) return 0x7f;                          // NaN
  if (a <= 0x3a800000u) return sign;                         // <= 2^-10 (half the min subnormal)
  if (a > 0x43e80000u) return static_cast<uint8_t>(sign | 0x7eu);  // > 448 + 16: saturate
  const int e = static_cast<int>(a >> 23) - 127 + 7;         // e4m3 biased exponent
  uint32_t mant = (a >> 20) & 7u;
  if (a >= 0x3c800000u) {                                    // >= 2^-6: normal
    uint32_t r = (static_cast<uint32_t>(e) << 3) | mant;
    const uint32_t rest = a & 0xfffffu;
    if (rest > 0x80000u || (rest == 0x80000u && (mant & 1u))) ++r;
    return static_cast<uint8_t>(sign | r);
  }
  const int shift = 1 - e;                                   // subnormal: 1..4
  mant |= 8u;
  uint32_t r = mant >> shift;
  const uint32_t rest = (a | 0x800000u) & ((0x100000u << shift) - 1u);
  const uint32_t half = 0x80000u << shift;
  if (rest > half || (rest == half && (r & 1u))) ++r;
  return static_cast<uint8_t>(sign | r);
}
// Exact: every code is a float. 0x7f/0xff decode to NaN.
UNIQUE_HD float e4m3_bits_to_float(uint8_t b) {
  const uint32_t e = (b >> 3) & 15u, m = b & 7u;
  uint32_t u;
  if (e == 15u && m == 7u) {
    u = 0x7fc00000u;
  } else if (e == 0) {
    float f = static_cast<float>(m) * 0.001953125f;  // m * 2^-9, exact
    memcpy(&u, &f, 4);
  } else {
    u = ((e + 120u) << 23) | (m << 20);
  }
  u |= static_cast<uint32_t>(b & 0x80u) << 24;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
// 2^e as a float, e in [-126, 127].
UNIQUE_HD float pow2f(int e) {
  const uint32_t u = static_cast<uint32_t>(e + 127) << 23;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
// Scale of one fp8 statistics pair (mean/std or kmin/kmax of a page and KV head): the
// smallest power of two s with amax / s <= 448 (amax = max |x| over both rows), in
// [2^-120, 2^120]; 1 when amax is 0 or not finite. Stored code = e4m3(x * (1/s)); value =
// code * s. A power of two makes the scaling exact (the only error is the e4m3 rounding,
// relative 2^-4, the same as any fp8 scale gives to normal codes) and the quantization
// a pure function of the fp32 statistics, bit-identical on the CPU and the GPU.
UNIQUE_HD int e4m3_scale_exp(float amax) {
  uint32_t u;
  memcpy(&u, &amax, 4);
  u &= 0x7fffffffu;
  if (u == 0 || u >= 0x7f800000u) return 0;
  int e = static_cast<int>(u >> 23) - 127 - 8;  // amax / 2^e in [256, 512) for normal amax
  if (e < -120) return -120;
  if (e > 119) e = 119;
  float a;
  memcpy(&a, &u, 4);
  if (a > 448.0f * pow2f(e)) ++e;
  return e;
}

struct bf16 { uint16_t bits; };
struct f16 { uint16_t bits; };
struct e4m3 { uint8_t bits; };

UNIQUE_HD float to_float(float x) { return x; }
UNIQUE_HD float to_float(bf16 x) { return bf16_bits_to_float(x.bits); }
UNIQUE_HD float to_float(f16 x) { return f16_bits_to_float(x.bits); }
UNIQUE_HD float to_float(e4m3 x) { return e4m3_bits_to_float(x.bits); }

template <class T> UNIQUE_HD T from_float(float x);
template <> UNIQUE_HD float from_float<float>(float x) { return x; }
template <> UNIQUE_HD bf16 from_float<bf16>(float x) { return bf16{float_to_bf16_bits(x)}; }
template <> UNIQUE_HD f16 from_float<f16>(float x) { return f16{float_to_f16_bits(x)}; }
template <> UNIQUE_HD e4m3 from_float<e4m3>(float x) { return e4m3{float_to_e4m3_bits(x)}; }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<f16>() { return DType::f16; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<e4m3>() { return DType::e4m3; }

// Calls f(T{}) with T the C++ type of dtype t (fp32, fp16, bf16): one dispatch point for
// dtype templates. e4m3 throws (the kernels that read fp8 statistics dispatch it themselves).
template <class F>
decltype(auto) dispatch_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f16: return f(f16{});
    case DType::bf16: return f(bf16{});
    case DType::e4m3: throw_stats_only_dtype(t, "dtype");
    default: return f(float{});
  }
}

// dispatch_dtype plus e4m3: for kernels that read page statistics.
template <class F>
decltype(auto) dispatch_stats_dtype(DType t, F&& f) {
  if (t == DType::e4m3) return f(e4m3{});
  return dispatch_dtype(t, static_cast<F&&>(f));
}

// Load element i of a buffer of dtype t as float (slow path for references and metrics).
// For e4m3 this is the raw code's value (no statistics scale applied).
inline float load_as_float(const void* p, DType t, std::size_t i) {
  switch (t) {
    case DType::f16: return to_float(static_cast<const f16*>(p)[i]);
    case DType::bf16: return to_float(static_cast<const bf16*>(p)[i]);
    case DType::e4m3: return to_float(static_cast<const e4m3*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
inline void store_from_float(void* p, DType t, std::size_t i, float x) {
  switch (t) {
    case DType::f16: static_cast<f16*>(p)[i] = from_float<f16>(x); break;
    case DType::bf16: static_cast<bf16*>(p)[i] = from_float<bf16>(x); break;
    case DType::e4m3: static_cast<e4m3*>(p)[i] = from_float<e4m3>(x); break;
    default: static_cast<float*>(p)[i] = x;
  }
}

}  // namespace unique

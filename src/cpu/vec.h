// Internal: fixed-width float vectors (GCC/Clang vector extensions, lowered to AVX-512,
// AVX2 or SSE by -march) and the few operations the CPU kernels need. Kernels keep
// per-head accumulators as VecF[G] with compile-time G, so a K/V chunk is widened to
// fp32 once and used by every head of a GQA group.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "unique/dtype.h"

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace unique::cpu {

inline constexpr int kW = 16;  // floats per vector chunk
typedef float VecF __attribute__((vector_size(kW * sizeof(float))));
typedef uint32_t VecU __attribute__((vector_size(kW * sizeof(uint32_t))));
typedef uint16_t VecH __attribute__((vector_size(kW * sizeof(uint16_t))));
typedef int32_t VecI __attribute__((vector_size(kW * sizeof(int32_t))));

inline VecF load(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, VecF v) { std::memcpy(p, &v, sizeof v); }
inline VecF splat(float x) { return VecF{} + x; }

// kW consecutive elements of type T as fp32.
template <class T>
inline VecF load_widen(const T* src) {
  if constexpr (std::is_same_v<T, float>) {
    return load(src);
  } else if constexpr (std::is_same_v<T, bf16>) {
#if defined(__AVX512F__)
    // One zero-extending load + one shift; the generic form below splits into halves. (The
    // zero-masked intrinsics here and below: GCC 12 warns on the plain ones' undefined
    // pass-through operand.)
    const __m512i u = _mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
    return reinterpret_cast<VecF>(reinterpret_cast<VecU>(u) << 16);
#else
    VecH h;
    std::memcpy(&h, src, sizeof h);
    return reinterpret_cast<VecF>(__builtin_convertvector(h, VecU) << 16);
#endif
  } else if constexpr (std::is_same_v<T, e4m3>) {
    // fp8 e4m3 code -> fp32 bits: sign to bit 31, exponent and mantissa to bits 20..26;
    // times 2^120 rebiases (7 -> 127) and turns fp32 subnormals into the e4m3 subnormals.
    // Exact for every finite code (0x7f/0xff, NaN, read as +-480: statistics are finite).
#if defined(__AVX512F__)
    // One zero-extending load (the generic conversion below is assembled piecewise).
    const VecU u = reinterpret_cast<VecU>(
        _mm512_maskz_cvtepu8_epi32(0xffff, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src))));
#else
    typedef uint8_t VecB __attribute__((vector_size(kW)));
    VecB b;
    std::memcpy(&b, src, sizeof b);
    const VecU u = __builtin_convertvector(b, VecU);
#endif
    const VecU bits = ((u & 0x7fu) << 20) | ((u & 0x80u) << 24);
    return reinterpret_cast<VecF>(bits) * 0x1p120f;
  } else {
#if defined(__AVX512F__)
    return reinterpret_cast<VecF>(
        _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))));
#else
    alignas(64) float f[kW];
#if defined(__F16C__)
    for (int i = 0; i < kW; i += 8)
      _mm256_store_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#else
    for (int i = 0; i < kW; ++i) f[i] = to_float(src[i]);
#endif
    return load(f);
#endif
  }
}

// Tree reduction: log2(kW) shuffle+add steps instead of kW dependent scalar adds.
inline float hsum(VecF v) {
  typedef float V8 __attribute__((vector_size(32)));
  typedef float V4 __attribute__((vector_size(16)));
  const V8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  const V4 c = b + __builtin_shufflevector(b, b, 2, 3, 0, 1);
  return c[0] + c[1];
}

namespace detail {
// One halving step of hsum16: pairs (a, b) of vectors whose lanes come in blocks of H
// partial sums; the result holds blocks of H/2 partial sums of both, each lane one add.
template <int H, int... L>
inline VecF fold(VecF a, VecF b, std::integer_sequence<int, L...>) {
  return __builtin_shufflevector(a, b, ((L / H) % 2 == 0 ? L : kW + L - H)...) +
         __builtin_shufflevector(a, b, ((L / H) % 2 == 0 ? L + H : kW + L)...);
}
}  // namespace detail

// Lane m of the result = the sum of the lanes of v[m] (v is clobbered). 15 two-shuffle
// folds instead of 16 horizontal sums: a scorer that keeps 16 accumulators (pages x
// heads) reduces them all at once.
inline VecF hsum16(VecF* v) {
  static_assert(kW == 16);
  constexpr auto lanes = std::make_integer_sequence<int, kW>{};
  for (int k = 0; k < 8; ++k) v[k] = detail::fold<8>(v[k], v[k + 8], lanes);
  for (int k = 0; k < 4; ++k) v[k] = detail::fold<4>(v[k], v[k + 4], lanes);
  for (int k = 0; k < 2; ++k) v[k] = detail::fold<2>(v[k], v[k + 2], lanes);
  return detail::fold<1>(v[0], v[1], lanes);
}

// Asks for the n bytes at p to be brought towards the core (L2), one line at a time.
inline void prefetch_bytes(const void* p, int n) {
  const char* c = static_cast<const char*>(p);
  for (int i = 0; i < n; i += 64) __builtin_prefetch(c + i, 0, 2);
}
inline float hmax(VecF v) {
  float s = v[0];
  for (int j = 1; j < kW; ++j) s = s > v[j] ? s : v[j];
  return s;
}
inline VecF vabs(VecF v) { return reinterpret_cast<VecF>(reinterpret_cast<VecU>(v) & 0x7fffffffu); }
inline VecF vmax(VecF a, VecF b) { return a > b ? a : b; }

// e^x for x <= 0 (softmax after max subtraction), relative error < 1e-7, all lanes at
// once. Range reduction x = n*ln2 + r, |r| <= ln2/2, Taylor to degree 7.
inline VecF exp_nonpos(VecF x) {
  x = vmax(x, splat(-87.0f));
  // Round to nearest by the 1.5*2^23 trick.
  const VecF n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  const VecF r = x - n * 0.693145752f - n * 1.42860677e-6f;
  VecF p = splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const VecI bits = (__builtin_convertvector(n, VecI) + 127) << 23;
  return p * reinterpret_cast<VecF>(bits);
}
inline float exp_nonpos(float x) { return exp_nonpos(splat(x))[0]; }

// Calls f(std::integral_constant<int, G>{}, first_head) over a GQA group split into blocks
// of 8/4/2/1 heads, so kernels get a compile-time head count whatever the group size.
template <class F>
inline void for_head_blocks(int group, F&& f) {
  for (int i0 = 0; i0 < group;) {
    const int left = group - i0;
    if (left >= 8) { f(std::integral_constant<int, 8>{}, i0); i0 += 8; }
    else if (left >= 4) { f(std::integral_constant<int, 4>{}, i0); i0 += 4; }
    else if (left >= 2) { f(std::integral_constant<int, 2>{}, i0); i0 += 2; }
    else { f(std::integral_constant<int, 1>{}, i0); i0 += 1; }
  }
}

}  // namespace unique::cpu

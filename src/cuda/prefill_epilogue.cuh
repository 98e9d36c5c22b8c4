// The end of both prefill attention kernels (mma.sync and wgmma): a thread's two rows (r: g,
// g + 8 of its warp's 16) are reduced over the 4 lanes that share them, normalised, and
// written with their log-sum-exp; rows outside the chunk [q0, kv_len) are not written.
#pragma once
#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "cuda/prefill_kernels.h"

namespace unique::cuda {

template <int D>
__device__ __forceinline__ void write_prefill_rows(const PrefillAttentionArgs& a, int hq, int t4,
                                                   const int64_t (&row)[2], float (&o)[D / 8][4], const float (&m)[2],
                                                   float (&l)[2]) {
  quad_sum(l);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t t = row[r];
    if (t < a.q0 || t >= a.kv_len) continue;
    const float inv = 1.0f / l[r];
    const int64_t base = (t - a.q0) * a.o_s0 + hq * a.o_s1;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      const int d = nt * 8 + 2 * t4;
      store_any(a.out, a.o_dtype, base + d * a.o_s2, o[nt][2 * r] * inv);
      store_any(a.out, a.o_dtype, base + (d + 1) * a.o_s2, o[nt][2 * r + 1] * inv);
    }
    if (a.lse && t4 == 0) a.lse[(t - a.q0) * a.l_s0 + hq * a.l_s1] = (m[r] + log2f(l[r])) * kLn2;
  }
}

}  // namespace unique::cuda

// Internal: the CUDA soft-mask attention kernels (include/unique/soft_mask.h on the GPU)
// and the one argument block they all read. Pipeline:
//   forward:  page stats (mu, sigma) -> thresholds tau -> attention (out, lse)
//   backward: page stats -> [thresholds] -> delta = rowsum(dout * out) -> attention backward
//             (fp32 dq/dk/dv/dmu/dsigma accumulators) -> finalize (dk += stats path; casts)
// The backward recomputes the stats; the thresholds only when the caller did not keep the
// forward's tau (deterministic either way, so they equal the forward's).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "unique/config.h"
#include "unique/tensor.h"

namespace unique::cuda {

// Strides in elements of a [B, L, H, D] view (D stride is 1) and of lse [B, L, Hq].
struct Strides4 {
  int64_t b = 0, t = 0, h = 0;
};

struct SoftMaskArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  Strides4 qs, ks, vs;
  DType dtype = DType::bf16;  // of q, k, v (and dout, out in the backward)
  void* out = nullptr;
  DType o_dtype = DType::bf16;
  Strides4 os;
  float* lse = nullptr;
  Strides4 ls;  // .h unused: lse[b * ls.b + t * ls.t + h * ls.h]
  int B = 1, L = 1, Hq = 1, Hkv = 1, group = 1, P = 16, NC = 0;  // NC = complete pages L / P
  int pshift = 4, npg = 4;  // log2(P) and pages per 64-key tile (64 / P): no divisions in the kernels
  int sink = 1, recent = 1, kpages = 1;
  float scale = 1.0f, scale_log2 = 1.0f, alpha = 1.0f, inv_T = 10.0f;
  // Workspace (fp32): mu, sigma [B][Hkv][NC][D]; tau [B][Hq][L] (-inf: no mask).
  float* mu = nullptr;
  float* sig = nullptr;
  float* tau = nullptr;
  // The same statistics split x = hi + lo into the input type (the tensor-core operand
  // form of every page-score product): hl[B][Hkv][NC][D / 2], one uint4 per channel pair
  // (2c, 2c + 1) = {mu hi pair, mu lo pair, sigma hi pair, sigma lo pair}, low half = 2c.
  uint4* hl = nullptr;
  // The same split statistics as the wgmma kernels' page-score B operand, one image per 64-key
  // tile: pb[B][Hkv][NT = ceil(L / 64)] of [mu, sigma][D / 64 slabs][8 rows][128 B], K-major
  // and 128-byte swizzled (wgmma.cuh): rows 0-3 the hi halves of the tile's pages 0-3, 4-7
  // their lo halves; zeros for pages a tile does not have or that are incomplete.
  uint8_t* pb = nullptr;
  int NT = 0;
  // Backward only.
  const void* dout = nullptr;
  Strides4 dos;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  DType dq_dtype = DType::bf16, dk_dtype = DType::bf16, dv_dtype = DType::bf16;
  Strides4 dqs, dks, dvs;
  float* delta = nullptr;                               // [B][Hq][L]
  float* lse2 = nullptr;                                // [B][Hq][L]: lse * log2(e) (delta kernel)
  void* aq = nullptr;                                   // [B][L][Hq][D] |q| in q's dtype (delta kernel)
  float* dq_acc = nullptr;                              // [B][L][Hq][D]
  float* dk_acc = nullptr;                              // [B][L][Hkv][D]
  float* dv_acc = nullptr;                              // [B][L][Hkv][D]
  float* dmu = nullptr;                                 // [B][Hkv][NC][D]
  float* dsig = nullptr;                                // [B][Hkv][NC][D]
};

// Fills everything but the workspace pointers from validated views.
SoftMaskArgs make_soft_mask_args(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const TensorView& out, const TensorView& lse);

void launch_soft_mask_stats(const SoftMaskArgs& a, int D, cudaStream_t stream);
void launch_soft_mask_threshold(const SoftMaskArgs& a, int D, cudaStream_t stream);
void launch_soft_mask_forward(const SoftMaskArgs& a, int D, cudaStream_t stream);
void launch_soft_mask_delta(const SoftMaskArgs& a, int D, cudaStream_t stream);
// The forward and backward attention kernels run the wgmma versions (soft_mask_*_sm90.cu) on
// sm_90 devices in builds with sm_90a code, else the mma.sync ones; UNIQUE_SOFT_MASK_KERNEL=
// mma|wgmma forces one (wgmma where it cannot run is an error).
void launch_soft_mask_backward(const SoftMaskArgs& a, int D, cudaStream_t stream);
// The name of the attention kernels the launchers run ("wgmma" or "mma").
const char* soft_mask_kernel(int D);
// The sm_90a kernels (internal to the launchers).
size_t soft_mask_forward_sm90_smem(int D);
size_t soft_mask_backward_sm90_smem(int D);
void launch_soft_mask_forward_sm90(const SoftMaskArgs& a, int D, cudaStream_t stream);
void launch_soft_mask_backward_sm90(const SoftMaskArgs& a, int D, cudaStream_t stream);
void launch_soft_mask_finalize(const SoftMaskArgs& a, int D, cudaStream_t stream);

}  // namespace unique::cuda

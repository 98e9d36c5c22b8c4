// Soft-mask attention for sparsity-aware training (UNIQUE, arXiv 2605.27740): causal
// self-attention in which every key page is weighted by a sigmoid of its page score
// relative to the query's top-k boundary, so the model learns under the sparsity it will
// see at inference (hard top-k) while gradients still flow into q and k through the scores.
//
// Semantics (per batch row b; P = cfg.page_size, T = cfg.temperature, a = cfg.alpha,
// c = cfg.scale_for(D)):
//   q [B, L, Hq, D], k/v [B, L, Hkv, D] (any strides; torch's [B, H, L, D] is a strided
//   view), GQA: query head h reads KV head h / (Hq / Hkv). Query t sees keys s <= t.
//   Page j = tokens [jP, jP + P). For query t, its own page is pt = t / P. Candidate pages
//   are the complete pages j < pt with j >= sink_pages and j <= pt - max(recent_pages, 1)
//   (the own page is always kept; recent_pages = 0 keeps only the own page). Every other
//   visible page (sink, recent, own) has weight 1.
//   Page statistics over the P keys of page j (KV head of h): mean mu_j and population
//   std sigma_j = sqrt(mean((k - mu_j)^2)) per channel.
//   Score of candidate j:  s_tj = c * (q_t . mu_j + a * sum_d |q_td| * sigma_jd).
//   k_pages = budget_tokens / P. With n candidates: n <= k_pages -> all weight 1 (no mask);
//   else tau_t = midpoint of the k-th and (k+1)-th largest candidate scores (a constant:
//   no gradient), and m_tj = sigmoid((s_tj - tau_t) / T). As T -> 0 this is hard top-k.
//   Logits z_ts = c * q_t . k_s + log m_t,page(s) (s <= t; log-sigmoid, computed stably),
//   p = softmax_s(z), out_t = sum_s p_ts v_s, lse_t = log sum_s exp(z_ts) (natural log).
//   Backward: dq, dk, dv of sum(dout * out), including the path through s into q and
//   through mu_j and sigma_j into k (dsigma/dk_i = (k_i - mu) / (P sigma), 0 where
//   sigma == 0); tau gets none. OffsetForm::norm is not supported here (Error).
//
// Tensors: out like q (any float dtype), lse [B, L, Hq] fp32; dout/dq like q, dk/dv like k.
// All on one device; CPU runs the float64 reference, CUDA the kernels (bf16/fp16 q/k/v,
// head_dim 64 or 128, page_size 16/32/64; launched on unique::cuda_stream(), no host sync).
// The backward reads out and lse of the matching forward (the CPU reference recomputes
// them and only checks their shapes).
// tau (optional, both passes): fp32 [B, Hq, L], contiguous, on q's device. The forward
// writes the thresholds tau_t there (-inf where the query keeps all its candidates); given
// to the matching backward (same q, k, cfg), the CUDA backward reads them instead of
// recomputing (the top-k pre-pass is ~10% of fwd+bwd at 32K); the CPU reference always
// recomputes in float64 and checks only the shape. Passing a tau that is not the forward's
// for these q, k and cfg gives gradients of a different mask (no error).
#pragma once
#include <vector>

#include "unique/config.h"
#include "unique/tensor.h"

namespace unique {

// The CUDA kernels the two functions below run on the current device for this head_dim:
// "wgmma" (Hopper, in builds with sm_90a code), "mma" (other GPUs, or with the environment
// variable UNIQUE_SOFT_MASK_KERNEL=mma; =wgmma forces the Hopper kernels and is an error where
// they cannot run), or "none" (a build without CUDA).
const char* soft_mask_cuda_kernel(int head_dim);

void soft_mask_attention_forward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const TensorView& out, const TensorView& lse,
                                 const TensorView* tau = nullptr);

void soft_mask_attention_backward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                  const TensorView& v, const TensorView& out, const TensorView& lse,
                                  const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                  const TensorView& dv, const TensorView* tau = nullptr);

// Checks shared by every backend (throw unique::Error naming the argument, expected vs
// actual). dout == nullptr: forward (dq/dk/dv ignored, may be null pointers); tau checked
// when not null.
void validate_soft_mask_args(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                             const TensorView& v, const TensorView& out, const TensorView& lse,
                             const TensorView* dout = nullptr, const TensorView* dq = nullptr,
                             const TensorView* dk = nullptr, const TensorView* dv = nullptr,
                             const TensorView* tau = nullptr);

namespace ref {
// float64 reference of both passes (host tensors of any float dtype).
void soft_mask_attention_forward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const TensorView& out, const TensorView& lse);
void soft_mask_attention_backward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                  const TensorView& v, const TensorView& out, const TensorView& lse,
                                  const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                  const TensorView& dv);
// Page weights w[b][h][t][j] (Hq heads, ceil(L / P) pages, flattened in that order): m for
// candidates, 1 for sink/recent/own pages, 0 for pages after t's own page. For tests.
std::vector<double> soft_mask_page_weights(const AttentionConfig& cfg, const TensorView& q,
                                           const TensorView& k);
// Thresholds tau[b][h][t] (-inf: no mask for that query), as the forward's tau output.
std::vector<double> soft_mask_thresholds(const AttentionConfig& cfg, const TensorView& q, const TensorView& k);
}  // namespace ref

}  // namespace unique

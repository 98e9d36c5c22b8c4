// GPU benchmark of soft-mask attention (include/unique/soft_mask.h): forward, backward and
// forward+backward milliseconds (median of CUDA-event-timed runs; the backward reads the
// forward's saved thresholds tau, as the autograd function does; fwd_bwd_no_tau_ms:
// recomputed instead) and TFLOP/s counted as
// causal attention flops (fwd 2 matmuls, bwd 5 matmuls of L^2/2 x D per query head), for
// L in {4096, 8192, 16384, 32768}, B 1, Hq 32 / Hkv 8, D 128, bf16, P 16 and 64, budget L/16,
// then the training shape of scripts/train (B 4, 6 / 6 heads, D 64, L 8192).
// kernel names the attention kernels (wgmma on sm_90: soft_mask_{forward,backward}_sm90.cu);
// fwd_mma_ms / bwd_mma_ms time the mma.sync ones in the same run (UNIQUE_SOFT_MASK_KERNEL=mma).
// Each row also gets a per-kernel breakdown (stats / thresholds / attention / delta /
// finalize, from a separate serialised run; src/cuda/soft_mask_profile.h).
// One JSON line per row with --json (read by bench/gpu/compare_soft_mask.py).
//
//   unique_bench_soft_mask [--json] [--reps N] [--max-len L]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "cuda/soft_mask_kernels.h"
#include "cuda/soft_mask_profile.h"
#include "unique/soft_mask.h"
#include "unique/stream.h"

using namespace unique;

namespace {

void fill_random_bf16(void* dst, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> h(n);
  for (auto& x : h) x = float_to_bf16_bits(nd(rng));
  CK(cudaMemcpy(dst, h.data(), n * 2, cudaMemcpyHostToDevice));
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  int reps = 5;
  long max_len = 32768;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--max-len") && i + 1 < argc) max_len = std::atol(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--json] [--reps N] [--max-len L]\n", argv[0]);
      return 2;
    }
  }
  struct Shape {
    int B, Hq, Hkv, D;
    long L;
  };
  const Shape shapes[] = {{1, 32, 8, 128, 4096},  {1, 32, 8, 128, 8192}, {1, 32, 8, 128, 16384},
                          {1, 32, 8, 128, 32768}, {4, 6, 6, 64, 8192}};
  if (!json)
    std::printf("%2s %3s %3s %3s %7s %3s %7s %9s %9s %9s %9s %9s\n", "B", "Hq", "Hkv", "D", "L", "P", "budget",
                "fwd ms", "bwd ms", "f+b ms", "fwd TF/s", "f+b TF/s");
  for (const Shape& sh : shapes) {
    const int B = sh.B, Hq = sh.Hq, Hkv = sh.Hkv, D = sh.D;
    const long L = sh.L;
    if (L > max_len) continue;
    const size_t nq = size_t(B) * L * Hq * D, nk = size_t(B) * L * Hkv * D;
    void *q, *k, *v, *o, *go, *dq, *dk, *dv;
    float *lse, *tau;
    CK(cudaMalloc(&q, nq * 2));
    CK(cudaMalloc(&k, nk * 2));
    CK(cudaMalloc(&v, nk * 2));
    CK(cudaMalloc(&o, nq * 2));
    CK(cudaMalloc(&go, nq * 2));
    CK(cudaMalloc(&dq, nq * 2));
    CK(cudaMalloc(&dk, nk * 2));
    CK(cudaMalloc(&dv, nk * 2));
    CK(cudaMalloc(&lse, size_t(B) * L * Hq * 4));
    CK(cudaMalloc(&tau, size_t(B) * L * Hq * 4));
    fill_random_bf16(q, nq, 1);
    fill_random_bf16(k, nk, 2);
    fill_random_bf16(v, nk, 3);
    fill_random_bf16(go, nq, 4);
    auto view = [&](void* p, int H) { return make_view(p, DType::bf16, {B, L, H, D}, Device::cuda); };
    const TensorView Q = view(q, Hq), K = view(k, Hkv), V = view(v, Hkv), O = view(o, Hq), GO = view(go, Hq);
    const TensorView GQ = view(dq, Hq), GK = view(dk, Hkv), GV = view(dv, Hkv);
    const TensorView LSE = make_view(lse, DType::f32, {B, L, Hq}, Device::cuda);
    const TensorView TAU = make_view(tau, DType::f32, {B, Hq, L}, Device::cuda);
    for (int P : {16, 64}) {
      AttentionConfig cfg;
      cfg.page_size = P;
      cfg.budget_tokens = int(L / 16);
      cfg.temperature = 0.1f;
      auto fwd = [&] { soft_mask_attention_forward(cfg, Q, K, V, O, LSE, &TAU); };
      auto bwd = [&] { soft_mask_attention_backward(cfg, Q, K, V, O, LSE, GO, GQ, GK, GV, &TAU); };
      auto fwd_nt = [&] { soft_mask_attention_forward(cfg, Q, K, V, O, LSE); };
      auto bwd_nt = [&] { soft_mask_attention_backward(cfg, Q, K, V, O, LSE, GO, GQ, GK, GV); };
      auto none = [](int) {};
      const double f_ms = median_event_ms(fwd, reps, 1, none);
      fwd();
      const double b_ms = median_event_ms(bwd, reps, 1, none);
      const double fb_ms = median_event_ms([&] { fwd(); bwd(); }, reps, 1, none);
      const double fb_nt_ms = median_event_ms([&] { fwd_nt(); bwd_nt(); }, reps, 1, none);
      const char* kernel = cuda::soft_mask_kernel(D);
      double f_mma_ms = f_ms, b_mma_ms = b_ms;
      if (std::strcmp(kernel, "mma") != 0) {
        setenv("UNIQUE_SOFT_MASK_KERNEL", "mma", 1);
        f_mma_ms = median_event_ms(fwd, reps, 1, none);
        b_mma_ms = median_event_ms(bwd, reps, 1, none);
        unsetenv("UNIQUE_SOFT_MASK_KERNEL");
      }
      // Causal: half of the L x L score matrix; 2 flops per multiply-add.
      // Per-kernel breakdown (events between the kernels; a separate, serialised run).
      cuda::soft_mask_profile_enable(true);
      for (int i = 0; i < reps; ++i) fwd();
      const cuda::SoftMaskProfile pf = cuda::soft_mask_profile_take();
      for (int i = 0; i < reps; ++i) bwd();
      const cuda::SoftMaskProfile pb = cuda::soft_mask_profile_take();
      cuda::soft_mask_profile_enable(false);
      const double nf = std::max(pf.fwd_calls, 1), nb = std::max(pb.bwd_calls, 1);
      char brk[512];
      std::snprintf(brk, sizeof brk,
                    "\"fwd_stats_ms\": %.4f, \"fwd_threshold_ms\": %.4f, \"fwd_attn_ms\": %.4f, "
                    "\"bwd_stats_ms\": %.4f, \"bwd_threshold_ms\": %.4f, \"bwd_delta_ms\": %.4f, "
                    "\"bwd_attn_ms\": %.4f, \"bwd_finalize_ms\": %.4f",
                    pf.stats / nf, pf.threshold / nf, pf.forward / nf, pb.stats / nb, pb.threshold / nb,
                    pb.delta / nb, pb.backward / nb, pb.finalize / nb);
      const double mm = 2.0 * double(L) * double(L) / 2.0 * D * Hq * B;
      const double f_tf = 2 * mm / (f_ms * 1e9), fb_tf = 7 * mm / (fb_ms * 1e9);
      if (json)
        std::printf("{\"B\": %d, \"Hq\": %d, \"Hkv\": %d, \"D\": %d, \"L\": %ld, \"page_size\": %d, "
                    "\"budget\": %d, \"fwd_ms\": %.4f, \"bwd_ms\": %.4f, \"fwd_bwd_ms\": %.4f, "
                    "\"fwd_bwd_no_tau_ms\": %.4f, \"fwd_tflops\": %.2f, \"fwd_bwd_tflops\": %.2f, "
                    "\"kernel\": \"%s\", \"fwd_mma_ms\": %.4f, \"bwd_mma_ms\": %.4f, %s}\n",
                    B, Hq, Hkv, D, L, P, cfg.budget_tokens, f_ms, b_ms, fb_ms, fb_nt_ms, f_tf, fb_tf, kernel, f_mma_ms,
                    b_mma_ms, brk);
      else
        std::printf("%2d %3d %3d %3d %7ld %3d %7d %9.3f %9.3f %9.3f %9.1f %9.1f\n    kernels %s (mma.sync: fwd %.3f, bwd "
                    "%.3f ms); breakdown (ms): %s\n",
                    B, Hq, Hkv, D, L, P, cfg.budget_tokens, f_ms, b_ms, fb_ms, f_tf, fb_tf, kernel, f_mma_ms, b_mma_ms,
                    brk);
      std::fflush(stdout);
    }
    for (void* p : {q, k, v, o, go, dq, dk, dv, static_cast<void*>(lse), static_cast<void*>(tau)}) CK(cudaFree(p));
  }
  return 0;
}

// GPU prefill benchmark: dense causal prefill vs UniSparse (selection + block-sparse
// attention) over a paged bf16 cache, 32 query / 8 KV heads, head dim 128, page 16, one
// sequence of L tokens prefilled in one chunk. Keys and queries are synthetic with the
// structure real attention has (a topic per 512-token segment that the segment's queries
// share, plus an attention sink on the first tokens), so top-p keeps a data-dependent
// fraction of the blocks; that fraction is printed, and it is what the speed-up rests on.
// Times: median of --reps CUDA-event-timed runs. JSON lines with --json FILE
// (bench/gpu/compare_baselines.py adds torch SDPA's flash prefill on the same shapes).
//
// --kept F,... adds rows at a fixed kept fraction (the first block, the diagonal and evenly
// spread others per query block): real models keep far more than these synthetic keys
// (~50% at top_p 0.95 on the in-house model at 8K), and those rows time the attention there.
// On sm_90 the default attention kernel is the wgmma one; a "dense-mma" row times the
// mma.sync kernel in the same run (UNIQUE_PREFILL_KERNEL=mma).
//
//   unique_bench_prefill [--contexts 32768,65536,131072] [--top-p 0.9,0.95] [--kept 0.25,0.5] [--reps N] [--json F]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/prefill_kernels.h"
#include "unique/stream.h"
#include "unique/unique.h"

#include "bench_util.h"

using namespace unique;


namespace {

constexpr int kHq = 32, kH = 8, kD = 128, kP = 16, kSegment = 512;

__device__ float hash_normal(uint64_t i, uint32_t seed) {
  float acc = 0.0f;
  for (int r = 0; r < 4; ++r) {
    uint32_t x = uint32_t(i * 0x9e3779b97f4a7c15ull >> 32) ^ (seed + r * 0x85ebca6bu);
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    acc += (x & 0xffffff) * (1.0f / 16777216.0f);
  }
  return (acc - 2.0f) * 1.7320508f;  // ~N(0, 1)
}

// Keys: topic of the token's segment (per KV head) + noise; the first 16 tokens carry a
// shared "sink" direction. Queries: their segment's topic + the sink direction + noise.
__global__ void fill_keys(uint16_t* k, uint16_t* v, int64_t L, float topic_w) {
  const int64_t n = L * kH * kD;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % kD, h = (i / kD) % kH, s = i / (kD * kH);
    // HND pages: page s / P, head h, row s % P (page ids are the identity here)
    const int64_t at = ((s / kP) * kH + h) * kP * kD + (s % kP) * kD + d;
    const float topic = hash_normal((s / kSegment) * 4096 + h * kD + d, 11);
    const float sink = s < 16 ? 3.0f * hash_normal(h * kD + d, 13) : 0.0f;
    k[at] = float_to_bf16_bits(topic_w * topic + sink + hash_normal(i, 17));
    v[at] = float_to_bf16_bits(hash_normal(i, 19));
  }
}
__global__ void fill_queries(uint16_t* q, int64_t L, float topic_w) {
  const int64_t n = L * kHq * kD;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % kD, hq = (i / kD) % kHq, t = i / (kD * kHq);
    const int64_t h = hq / (kHq / kH);
    const float topic = hash_normal((t / kSegment) * 4096 + h * kD + d, 11);
    const float sink = hash_normal(h * kD + d, 13);
    q[i] = float_to_bf16_bits(topic_w * topic + 0.5f * sink + hash_normal(i, 23));
  }
}

template <class F>
double median_ms(F&& f, int reps) {
  return median_event_ms(f, reps, 1, [](int) {});
}

std::vector<double> parse_list(const char* s) {
  std::vector<double> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(std::atof(x.c_str()));
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<double> contexts = {32768, 65536, 131072}, top_ps = {0.9, 0.95}, kept_fracs;
  int reps = 5;
  float topic_w = 0.6f;  // how strongly a segment's queries and keys share a direction
  std::string json;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--contexts") && i + 1 < argc) contexts = parse_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--top-p") && i + 1 < argc) top_ps = parse_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--kept") && i + 1 < argc) kept_fracs = parse_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!std::strcmp(argv[i], "--topic") && i + 1 < argc) topic_w = float(std::atof(argv[++i]));
    else {
      std::fprintf(stderr,
                   "usage: %s [--contexts 32768,65536,131072] [--top-p 0.9,0.95] [--kept F,...] [--topic W] [--reps N]\n"
                   "          [--json FILE]\n"
                   "  --kept F   also time the attention over a fixed fraction F of the causal key blocks\n"
                   "  --topic W  weight of the segment topic in keys and queries (default 0.6; smaller = flatter\n"
                   "             attention, more blocks kept)\n",
                   argv[0]);
      return 2;
    }
  }
  if (!cuda_available()) {
    std::fprintf(stderr, "unique_bench_prefill: no CUDA device\n");
    return 1;
  }
  FILE* js = json.empty() ? nullptr : std::fopen(json.c_str(), "w");
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const char* kernel = cuda::prefill_attention_kernel(kD, int64_t(contexts.empty() ? 1 : contexts[0]), false);
  std::printf("device: %s | heads %d/%d, head dim %d, page %d, bf16, one sequence prefilled in one chunk, topic %.2f\n"
              "attention kernel: %s\n",
              prop.name, kHq, kH, kD, kP, topic_w, kernel);
  std::printf("%8s %6s %9s %10s %10s %10s %8s %9s\n", "context", "top_p", "kept", "select ms", "attn ms", "total ms",
              "speedup", "TFLOP/s");
  for (double ctx : contexts) {
    const int64_t L = int64_t(ctx);
    const int pages = int((L + kP - 1) / kP);
    void *k, *v, *q, *out;
    int32_t *indptr, *indices, *last;
    CK(cudaMalloc(&k, size_t(pages) * kH * kP * kD * 2));
    CK(cudaMalloc(&v, size_t(pages) * kH * kP * kD * 2));
    CK(cudaMalloc(&q, size_t(L) * kHq * kD * 2));
    CK(cudaMalloc(&out, size_t(L) * kHq * kD * 2));
    std::vector<int32_t> h_indices(pages);
    for (int p = 0; p < pages; ++p) h_indices[p] = p;
    const int32_t h_indptr[2] = {0, pages}, h_last = int32_t(L - int64_t(pages - 1) * kP);
    CK(cudaMalloc(&indptr, 8));
    CK(cudaMalloc(&indices, pages * 4));
    CK(cudaMalloc(&last, 4));
    CK(cudaMemcpy(indptr, h_indptr, 8, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(indices, h_indices.data(), pages * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(last, &h_last, 4, cudaMemcpyHostToDevice));
    fill_keys<<<2048, 256>>>(static_cast<uint16_t*>(k), static_cast<uint16_t*>(v), L, topic_w);
    fill_queries<<<2048, 256>>>(static_cast<uint16_t*>(q), L, topic_w);
    CK(cudaGetLastError());

    PagedKV kv;
    kv.dtype = DType::bf16;
    kv.device = Device::cuda;
    kv.num_pages = pages;
    kv.num_kv_heads = kH;
    kv.page_size = kP;
    kv.head_dim = kD;
    kv.k = k;
    kv.v = v;
    kv.batch = 1;
    kv.page_indptr = indptr;
    kv.page_indices = indices;
    kv.last_page_len = last;
    kv.max_pages_per_seq = pages;
    const TensorView qv = make_view(q, DType::bf16, {L, kHq, kD}, Device::cuda);
    const TensorView ov = make_view(out, DType::bf16, {L, kHq, kD}, Device::cuda);

    AttentionConfig cfg;
    cfg.page_size = kP;
    const double flops = 4.0 * kD * kHq * double(L) * double(L + 1) / 2;
    const double dense_ms = median_ms([&] { sparse_prefill(cfg, qv, kv, 0, L, nullptr, ov, {}); }, reps);
    std::printf("%8lld %6s %8.1f%% %10s %10.2f %10.2f %7.2fx %9.1f\n", (long long)L, "dense", 100.0, "-", dense_ms,
                dense_ms, 1.0, flops / dense_ms * 1e-9);
    if (js)
      std::fprintf(js, "{\"kind\":\"prefill\",\"context\":%lld,\"topic\":%.3f,\"mode\":\"dense\",\"ms\":%.4f,\"tflops\":%.2f}\n",
                   (long long)L, topic_w, dense_ms, flops / dense_ms * 1e-9);
    if (!std::strcmp(kernel, "wgmma")) {  // the mma.sync kernel in the same run
      setenv("UNIQUE_PREFILL_KERNEL", "mma", 1);
      const double mma_ms = median_ms([&] { sparse_prefill(cfg, qv, kv, 0, L, nullptr, ov, {}); }, reps);
      unsetenv("UNIQUE_PREFILL_KERNEL");
      std::printf("%8lld %6s %8.1f%% %10s %10.2f %10.2f %7.2fx %9.1f\n", (long long)L, "d-mma", 100.0, "-", mma_ms,
                  mma_ms, dense_ms / mma_ms, flops / mma_ms * 1e-9);
      if (js)
        std::fprintf(js,
                     "{\"kind\":\"prefill\",\"context\":%lld,\"topic\":%.3f,\"mode\":\"dense-mma\",\"ms\":%.4f,"
                     "\"tflops\":%.2f}\n",
                     (long long)L, topic_w, mma_ms, flops / mma_ms * 1e-9);
    }
    double sel_ms = 0;
    for (double tp : top_ps) {
      cfg.top_p = float(tp);
      const PrefillBlocks pb = prefill_blocks(cfg, L, L);
      int32_t *blocks, *counts;
      CK(cudaMalloc(&blocks, size_t(kHq) * pb.num_q_blocks * pb.num_kv_blocks * 4));
      CK(cudaMalloc(&counts, size_t(kHq) * pb.num_q_blocks * 4));
      const BlockSelection sel{blocks, counts, kHq, pb.num_q_blocks, pb.num_kv_blocks, Device::cuda};
      sel_ms = median_ms([&] { select_prefill_blocks(cfg, qv, kv, 0, L, sel); }, reps);
      const double att_ms = median_ms([&] { sparse_prefill(cfg, qv, kv, 0, L, &sel, ov, {}); }, reps);
      std::vector<int32_t> h_counts(size_t(kHq) * pb.num_q_blocks);
      CK(cudaMemcpy(h_counts.data(), counts, h_counts.size() * 4, cudaMemcpyDeviceToHost));
      double kept = 0, all = 0;
      for (int hq = 0; hq < kHq; ++hq)
        for (int i = 0; i < pb.num_q_blocks; ++i) {
          kept += h_counts[size_t(hq) * pb.num_q_blocks + i];
          all += i + 1;
        }
      const double total = sel_ms + att_ms;
      std::printf("%8lld %6.2f %8.1f%% %10.2f %10.2f %10.2f %7.2fx %9s\n", (long long)L, tp, 100 * kept / all, sel_ms,
                  att_ms, total, dense_ms / total, "-");
      if (js)
        std::fprintf(js,
                     "{\"kind\":\"prefill\",\"context\":%lld,\"topic\":%.3f,\"mode\":\"unisparse\",\"top_p\":%.3f,\"kept\":%.4f,"
                     "\"select_ms\":%.4f,\"attn_ms\":%.4f,\"ms\":%.4f,\"dense_ms\":%.4f}\n",
                     (long long)L, topic_w, tp, kept / all, sel_ms, att_ms, total, dense_ms);
      CK(cudaFree(blocks));
      CK(cudaFree(counts));
    }
    // Fixed kept fractions: per query block i (i + 1 causal blocks) the first block, the
    // diagonal and evenly spread others, round(f * (i + 1)) in all.
    for (double f : kept_fracs) {
      const PrefillBlocks pb = prefill_blocks(cfg, L, L);
      std::vector<int32_t> h_blocks(size_t(kHq) * pb.num_q_blocks * pb.num_kv_blocks, 0),
          h_counts(size_t(kHq) * pb.num_q_blocks);
      double kept = 0, all = 0;
      for (int i = 0; i < pb.num_q_blocks; ++i) {
        const int n = i + 1, want = std::clamp(int(std::lround(f * n)), std::min(n, 2), n);
        std::vector<int32_t> row;
        for (int j = 0; j < want; ++j) row.push_back(want == 1 ? 0 : int32_t(int64_t(j) * (n - 1) / (want - 1)));
        row.erase(std::unique(row.begin(), row.end()), row.end());
        for (int hq = 0; hq < kHq; ++hq) {
          const size_t r = size_t(hq) * pb.num_q_blocks + i;
          h_counts[r] = int32_t(row.size());
          std::copy(row.begin(), row.end(), h_blocks.begin() + r * pb.num_kv_blocks);
        }
        kept += row.size();
        all += n;
      }
      int32_t *blocks, *counts;
      CK(cudaMalloc(&blocks, h_blocks.size() * 4));
      CK(cudaMalloc(&counts, h_counts.size() * 4));
      CK(cudaMemcpy(blocks, h_blocks.data(), h_blocks.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(counts, h_counts.data(), h_counts.size() * 4, cudaMemcpyHostToDevice));
      const BlockSelection sel{blocks, counts, kHq, pb.num_q_blocks, pb.num_kv_blocks, Device::cuda};
      const double att_ms = median_ms([&] { sparse_prefill(cfg, qv, kv, 0, L, &sel, ov, {}); }, reps);
      const double total = sel_ms + att_ms;
      std::printf("%8lld %6s %8.1f%% %10.2f %10.2f %10.2f %7.2fx %9s\n", (long long)L, "fixed", 100 * kept / all,
                  sel_ms, att_ms, total, dense_ms / total, "-");
      if (js)
        std::fprintf(js,
                     "{\"kind\":\"prefill\",\"context\":%lld,\"topic\":%.3f,\"mode\":\"fixed-kept\",\"kept\":%.4f,"
                     "\"select_ms\":%.4f,\"attn_ms\":%.4f,\"ms\":%.4f,\"dense_ms\":%.4f}\n",
                     (long long)L, topic_w, kept / all, sel_ms, att_ms, total, dense_ms);
      CK(cudaFree(blocks));
      CK(cudaFree(counts));
    }
    for (void* p : {k, v, q, out}) CK(cudaFree(p));
    for (int32_t* p : {indptr, indices, last}) CK(cudaFree(p));
  }
  if (js) std::fclose(js);
  return 0;
}

// GPU decode benchmark: dense and sparse (select + decode) paged decode through
// unique::DecodePlan, against the device-to-device copy peak measured in the same run.
// Every timed rep follows an L2 flush (a 256 MiB memset) and is timed alone with CUDA
// events; the median is reported. Prints a table and writes JSON lines (--json FILE) that
// bench/gpu/compare_baselines.py joins with FlashInfer / torch SDPA timings.
//
//   unique_bench_gpu [--quick] [--json out.jsonl] [--reps N] [--shapes BxCTX,...] [--dense-only]
//                    [--select-only]
// --select-only: the UNIQUE estimator at budget 2048 alone, selection timed alone (no dense or
// decode rows; the KV pool is not filled), for quick A/B runs of the selection kernels.
// --unique-only: the UNIQUE estimator at budget 2048 alone (step, select, decode; no dense row),
// for quick A/B runs and profiler captures of one sparse step's kernels.
// --stats-dtype fp8: the page statistics as e4m3 codes with one fp32 scale per (page, KV
// head, statistics pair) (default bf16); rows then carry "stats_dtype":"fp8" in the JSON.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "unique/decode_plan.h"
#include "unique/unique.h"

#include "bench_util.h"

using namespace unique;


__global__ void fill_kernel(uint16_t* p, size_t n, uint32_t seed, float scale, float offset) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    const float u = (x & 0xffffff) * (1.0f / 16777216.0f) - 0.5f;
    p[i] = float_to_bf16_bits(offset + scale * u);
  }
}
void fill(void* p, size_t n, uint32_t seed, float scale = 2.0f, float offset = 0.0f) {
  fill_kernel<<<1024, 256>>>(static_cast<uint16_t*>(p), n, seed, scale, offset);
  CK(cudaGetLastError());
}
// Random finite e4m3 codes (|value| <= 240: 0x7f/0xff, the NaNs, never appear).
__global__ void fill_fp8_kernel(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    p[i] = uint8_t(x & 0xf7u);
  }
}
__global__ void fill_f32_kernel(float* p, size_t n, float v) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) p[i] = v;
}
// Statistics of dtype sdt: bf16 as before, fp8 as random codes.
void fill_stats(void* p, size_t n, DType sdt, uint32_t seed, float scale = 2.0f, float offset = 0.0f) {
  if (sdt == DType::e4m3) fill_fp8_kernel<<<1024, 256>>>(static_cast<uint8_t*>(p), n, seed);
  else fill_kernel<<<1024, 256>>>(static_cast<uint16_t*>(p), n, seed, scale, offset);
  CK(cudaGetLastError());
}

// Reads the flush buffer (the store never happens: the sum of the words is not ~0 here).
__global__ void read_flush_kernel(const uint4* p, size_t n, unsigned* sink) {
  unsigned s = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = p[i];
    s += v.x ^ v.y ^ v.z ^ v.w;
  }
  if (s == 0xdeadbeefu) *sink = s;
}

// L2 flush before every timed rep: by default a 256 MiB memset (what Triton's and FlashInfer's
// benchmarks do); it leaves L2 full of dirty lines, so a kernel's first ~50 MB of reads also
// pay their write-back. UNIQUE_BENCH_FLUSH=read reads the buffer instead (L2 full of clean
// lines, as after a layer's weight reads in a real decode step).
struct Timer {
  void* flush = nullptr;
  size_t flush_bytes = size_t(256) << 20;
  bool read_flush = false;
  Timer() {
    CK(cudaMalloc(&flush, flush_bytes));
    CK(cudaMemset(flush, 1, flush_bytes));
    const char* e = std::getenv("UNIQUE_BENCH_FLUSH");
    read_flush = e && std::string(e) == "read";
  }
  template <class F>
  double median_us(F&& f, int reps) {
    return 1e3 * median_event_ms(f, reps, 3, [&](int i) {
      if (read_flush) {
        read_flush_kernel<<<1024, 256>>>(static_cast<const uint4*>(flush), flush_bytes / 16,
                                         static_cast<unsigned*>(flush));
        CK(cudaGetLastError());
      } else {
        CK(cudaMemsetAsync(flush, i & 0xff, flush_bytes));
      }
    });
  }
};

int main(int argc, char** argv) {
  bool quick = false, dense_only = false, select_only = false, unique_only = false;
  std::string shape_list;
  int reps = 30;
  std::string json;
  DType sdt = DType::bf16;  // page statistics: bf16 or fp8
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!std::strcmp(argv[i], "--dense-only")) dense_only = true;
    else if (!std::strcmp(argv[i], "--select-only")) select_only = true;
    else if (!std::strcmp(argv[i], "--unique-only")) unique_only = true;
    else if (!std::strcmp(argv[i], "--stats-dtype") && i + 1 < argc) sdt = parse_stats_dtype(argv[++i]);
    else if (!std::strcmp(argv[i], "--shapes") && i + 1 < argc) shape_list = argv[++i];  // "1x131072,8x32768"
  }
  FILE* js = json.empty() ? nullptr : std::fopen(json.c_str(), "w");
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  Timer timer;

  // copy peak: 1 GiB device-to-device, bytes read + written
  double peak;
  {
    const size_t n = size_t(1) << 30;
    void *x, *y;
    CK(cudaMalloc(&x, n));
    CK(cudaMalloc(&y, n));
    CK(cudaMemset(x, 1, n));
    const double us = timer.median_us([&] { CK(cudaMemcpyAsync(y, x, n, cudaMemcpyDeviceToDevice)); }, 10);
    peak = 2.0 * n / (us * 1e-6) / 1e9;
    CK(cudaFree(x));
    CK(cudaFree(y));
  }
  std::printf("device: %s, %d SMs; copy peak %.0f GB/s (read+write)\n", prop.name, prop.multiProcessorCount, peak);
  std::printf("page statistics: %s\n", to_string(sdt));
  // UNIQUE_DECODE_KERNEL=simt|mma picks the decode kernel (the same call can time both).
  std::printf("decode kernel: %s\n", unique::cuda::decode_kernel_choice(DType::bf16, 128, 4));
  const double st_size = double(dtype_size(sdt));
  // UNIQUE_BENCH_PAGES=contig: physical pages in sequence order instead of a stride permutation.
  const char* pages_env = std::getenv("UNIQUE_BENCH_PAGES");
  const bool contig = pages_env && std::string(pages_env) == "contig";
  std::printf("L2 flush before each rep: %s\n", timer.read_flush ? "read 256 MiB (clean L2)" : "memset 256 MiB (dirty L2)");
  if (js) std::fprintf(js, "{\"kind\":\"peak\",\"device\":\"%s\",\"copy_GBps\":%.1f}\n", prop.name, peak);

  const int Hq = 32, Hk = 8, D = 128;
  struct Shape {
    int B;
    int ctx;
  };
  std::vector<Shape> shapes = {{1, 8192}, {1, 32768}, {1, 131072}, {1, 262144}, {8, 8192},
                               {8, 32768}, {8, 131072}, {32, 8192}, {32, 32768}, {32, 131072}};
  if (quick) shapes = {{1, 131072}, {8, 131072}};
  if (!shape_list.empty()) {
    shapes.clear();
    for (size_t pos = 0; pos < shape_list.size();) {
      size_t end = shape_list.find(',', pos);
      if (end == std::string::npos) end = shape_list.size();
      const std::string item = shape_list.substr(pos, end - pos);
      const size_t x = item.find('x');
      shapes.push_back({std::atoi(item.substr(0, x).c_str()), std::atoi(item.substr(x + 1).c_str())});
      pos = end + 1;
    }
  }
  std::printf("%-5s %-7s %-3s %-6s %-8s %10s %9s %6s %9s %9s %9s %7s\n", "batch", "context", "P", "budget", "variant",
              "time_us", "GB/s", "%peak", "bytes_MB", "sel_us", "dec_us", "ideal_x");
  for (const Shape& sh : shapes) {
    for (int P : {16, 32}) {
      if (dense_only && P == 32) continue;
      const int pages = sh.ctx / P;
      const size_t total_pages = size_t(sh.B) * pages;
      const size_t kv_elems = total_pages * Hk * P * D, st_elems = total_pages * Hk * D;
      void *k, *v, *mean, *sd, *kmin, *kmax;
      float* sscale = nullptr;
      CK(cudaMalloc(&k, kv_elems * 2));
      CK(cudaMalloc(&v, kv_elems * 2));
      CK(cudaMalloc(&mean, st_elems * dtype_size(sdt)));
      CK(cudaMalloc(&sd, st_elems * dtype_size(sdt)));
      CK(cudaMalloc(&kmin, st_elems * dtype_size(sdt)));
      CK(cudaMalloc(&kmax, st_elems * dtype_size(sdt)));
      if (!select_only) {
        fill(k, kv_elems, 1);
        fill(v, kv_elems, 2);
      }
      fill_stats(mean, st_elems, sdt, 3);
      fill_stats(sd, st_elems, sdt, 4, 0.5f, 0.5f);
      fill_stats(kmin, st_elems, sdt, 5, 1.0f, -1.0f);
      fill_stats(kmax, st_elems, sdt, 6, 1.0f, 1.0f);
      if (sdt == DType::e4m3) {
        CK(cudaMalloc(&sscale, total_pages * Hk * 2 * 4));
        fill_f32_kernel<<<1024, 256>>>(sscale, total_pages * Hk * 2, 1.0f / 128);
        CK(cudaGetLastError());
      }
      // page table: physical pages shuffled with a fixed stride permutation
      std::vector<int32_t> indptr(sh.B + 1), indices(total_pages), last(sh.B, P);
      for (int b = 0; b <= sh.B; ++b) indptr[b] = b * pages;
      for (size_t i = 0; i < total_pages; ++i) indices[i] = contig ? int32_t(i) : int32_t((i * 7919) % total_pages);
      int32_t *d_indptr, *d_indices, *d_last;
      CK(cudaMalloc(&d_indptr, indptr.size() * 4));
      CK(cudaMalloc(&d_indices, indices.size() * 4));
      CK(cudaMalloc(&d_last, last.size() * 4));
      CK(cudaMemcpy(d_indptr, indptr.data(), indptr.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(d_indices, indices.data(), indices.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(d_last, last.data(), last.size() * 4, cudaMemcpyHostToDevice));
      PagedKV kv;
      kv.dtype = DType::bf16;
      kv.device = Device::cuda;
      kv.num_pages = int(total_pages);
      kv.num_kv_heads = Hk;
      kv.page_size = P;
      kv.head_dim = D;
      kv.k = k;
      kv.v = v;
      kv.stats_dtype = sdt;
      kv.stats_scale = sscale;
      kv.mean = mean;
      kv.std = sd;
      kv.kmin = kmin;
      kv.kmax = kmax;
      kv.batch = sh.B;
      kv.page_indptr = d_indptr;
      kv.page_indices = d_indices;
      kv.last_page_len = d_last;
      kv.max_pages_per_seq = pages;
      void *q, *out;
      CK(cudaMalloc(&q, size_t(sh.B) * Hq * D * 2));
      CK(cudaMalloc(&out, size_t(sh.B) * Hq * D * 2));
      fill(q, size_t(sh.B) * Hq * D, 7);
      const TensorView qv = make_view(q, DType::bf16, {sh.B, Hq, D}, Device::cuda);
      const TensorView ov = make_view(out, DType::bf16, {sh.B, Hq, D}, Device::cuda);
      const double dense_bytes = 2.0 * kv_elems * 2;
      auto row = [&](const char* variant, int budget, double us, double bytes, double sel_us, double dec_us,
                     double ideal) {
        std::printf("%-5d %-7d %-3d %-6d %-8s %10.1f %9.0f %6.1f %9.1f %9.1f %9.1f %7.1f\n", sh.B, sh.ctx, P, budget,
                    variant, us, bytes / (us * 1e-6) / 1e9, 100.0 * bytes / (us * 1e-6) / 1e9 / peak, bytes / 1e6,
                    sel_us, dec_us, ideal);
        if (js)
          std::fprintf(js,
                       "{\"kind\":\"ours\",\"batch\":%d,\"context\":%d,\"page\":%d,\"budget\":%d,\"variant\":\"%s\","
                       "\"us\":%.2f,\"bytes\":%.0f,\"select_us\":%.2f,\"decode_us\":%.2f,\"ideal_x\":%.2f%s}\n",
                       sh.B, sh.ctx, P, budget, variant, us, bytes, sel_us, dec_us, ideal,
                       sdt == DType::e4m3 ? ",\"stats_dtype\":\"fp8\"" : "");
      };
      if (!select_only && !unique_only) {
        AttentionConfig cfg;
        cfg.page_size = P;
        cfg.estimator = Estimator::dense;
        DecodePlan plan;
        plan.plan(cfg, DecodeShape{sh.B, Hq, Hk, D, pages});
        const double us = timer.median_us([&] { plan.run(qv, kv, ov, TensorView{}, nullptr); }, reps);
        row("dense", 0, us, dense_bytes, 0, us, 1.0);
      }
      for (int budget : {1024, 2048, 4096}) {
        if (dense_only || budget >= sh.ctx / 2) continue;
        if (P == 32 && budget != 2048) continue;
        for (Estimator e : {Estimator::unique, Estimator::quest, Estimator::mean, Estimator::random}) {
          if (budget != 2048 && e != Estimator::unique) continue;
          if ((select_only || unique_only) && (budget != 2048 || e != Estimator::unique)) continue;
          AttentionConfig cfg;
          cfg.page_size = P;
          cfg.budget_tokens = budget;
          cfg.estimator = e;
          DecodePlan plan;
          plan.plan(cfg, DecodeShape{sh.B, Hq, Hk, D, pages});
          const double us =
              select_only ? 0.0 : timer.median_us([&] { plan.run(qv, kv, ov, TensorView{}, nullptr); }, reps);
          const double sel_us = timer.median_us([&] { plan.select(qv, kv, nullptr); }, reps);
          // The sparse attention alone, over the selection the last select left.
          const double dec_us =
              timer.median_us([&] { paged_decode(cfg, qv, kv, &plan.selection(), ov, TensorView{}); }, reps);
          const int selected = std::min(pages, cfg.max_selected(pages));
          const int stat_arrays = e == Estimator::random ? 0 : e == Estimator::mean ? 1 : 2;
          // Statistics rows (fp8: plus one fp32 scale per page-head for the pair read).
          const double st_bytes = stat_arrays == 0 ? 0.0
                                  : double(st_elems) * st_size * stat_arrays +
                                        (sdt == DType::e4m3 ? double(total_pages) * Hk * 4 : 0.0);
          const double bytes = st_bytes + double(sh.B) * selected * Hk * P * D * 2 * 2;
          row(to_string(e), budget, us, bytes, sel_us, dec_us, dense_bytes / bytes);
          if (e == Estimator::unique && budget == 2048) {
            const double stats_bytes = st_bytes;
            // read-once time of the statistics at the copy peak (which counts read + write)
            const double read_us = stats_bytes / (peak * 1e9) * 1e6;
            std::printf("      select vs reading the stats once at copy peak: %.1f us / %.1f us = %.2fx\n", sel_us,
                        read_us, sel_us / read_us);
            if (js)
              std::fprintf(js,
                           "{\"kind\":\"select\",\"batch\":%d,\"context\":%d,\"page\":%d,\"select_us\":%.2f,"
                           "\"stats_read_us\":%.2f%s}\n",
                           sh.B, sh.ctx, P, sel_us, read_us, sdt == DType::e4m3 ? ",\"stats_dtype\":\"fp8\"" : "");
          }
        }
      }
      for (void* p : {k, v, mean, sd, kmin, kmax, q, out}) CK(cudaFree(p));
      if (sscale) CK(cudaFree(sscale));
      CK(cudaFree(d_indptr));
      CK(cudaFree(d_indices));
      CK(cudaFree(d_last));
    }
  }
  if (js) std::fclose(js);
  return 0;
}

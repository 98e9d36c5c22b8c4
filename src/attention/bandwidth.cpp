#include "unique/bandwidth.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "attention/cuda_backend.h"
#include "attention/host_buffer.h"
#include "cpu/vec.h"

namespace unique {

double measure_host_copy_gbps(std::size_t bytes, int reps) {
  std::vector<char> a(bytes), b(bytes);
  // Touch both buffers from the threads that will copy them (first-touch placement).
#pragma omp parallel for schedule(static)
  for (long i = 0; i < static_cast<long>(bytes); i += 4096) {
    a[i] = static_cast<char>(i);
    b[i] = 0;
  }
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel
    {
      const int nt = omp_get_num_threads(), id = omp_get_thread_num();
      const std::size_t chunk = (bytes + nt - 1) / nt;
      const std::size_t lo = std::min(bytes, chunk * id), hi = std::min(bytes, lo + chunk);
      std::memcpy(b.data() + lo, a.data() + lo, hi - lo);
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * static_cast<double>(bytes) / best / 1e9;
}

HostReadProbe::HostReadProbe(std::size_t bytes) {
  using cpu::kW;
  n_ = static_cast<long>(bytes / sizeof(float) / (16 * kW) * (16 * kW));
  buf_ = std::make_unique<detail::HostBuffer>(n_ * sizeof(float));
  float* a = buf_->data<float>();
  const long n = n_;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) a[i] = static_cast<float>(i & 7);
}

HostReadProbe::~HostReadProbe() = default;

double HostReadProbe::pass_gbps() {
  using cpu::kW;
  using cpu::VecF;
  const long n = n_;
  const float* a = buf_->data<float>();
  auto t0 = std::chrono::steady_clock::now();
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (long i = 0; i < n; i += 16 * kW) {
    // Independent accumulators keep the adds off the critical path: memory bound.
    VecF s0{}, s1{}, s2{}, s3{};
    for (int j = 0; j < 16 * kW; j += 4 * kW) {
      s0 += cpu::load(&a[i + j]);
      s1 += cpu::load(&a[i + j + kW]);
      s2 += cpu::load(&a[i + j + 2 * kW]);
      s3 += cpu::load(&a[i + j + 3 * kW]);
    }
    total += cpu::hsum(s0 + s1 + s2 + s3);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sink_ += total;
  if (sink_ < 0) std::abort();  // keeps the reads observable
  return static_cast<double>(n_ * sizeof(float)) / s / 1e9;
}

double measure_host_read_gbps(std::size_t bytes, int reps) {
  HostReadProbe probe(bytes);
  double best = 0;
  for (int r = 0; r < reps; ++r) best = std::max(best, probe.pass_gbps());
  return best;
}

double measure_device_copy_gbps(std::size_t bytes, int reps) { return cuda_backend::measure_copy_gbps(bytes, reps); }

}  // namespace unique

#include "unique/bandwidth.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

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

}  // namespace unique

// Host memory bandwidth, measured the way the benchmarks count it: a multi-threaded
// copy of a buffer much larger than the last-level cache, bytes read + bytes written.
#pragma once
#include <cstddef>

namespace unique {
// Returns GB/s (1e9 bytes). `bytes` per buffer; best of `reps` runs.
double measure_host_copy_gbps(std::size_t bytes = std::size_t(1) << 29, int reps = 5);
}  // namespace unique

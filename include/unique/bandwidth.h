// Host memory bandwidth ceilings, measured the way the benchmarks count bytes, with
// buffers much larger than the last-level cache and all OpenMP threads.
#pragma once
#include <cstddef>

namespace unique {
// Copy: bytes read + bytes written per second (GB/s = 1e9 B/s), best of `reps`.
double measure_host_copy_gbps(std::size_t bytes = std::size_t(1) << 29, int reps = 5);
// Read-only stream (what a decode step does): bytes read per second, best of `reps`.
double measure_host_read_gbps(std::size_t bytes = std::size_t(1) << 30, int reps = 5);
// GPU copy peak: a device-to-device cudaMemcpyAsync of `bytes`, bytes read + written per
// second, best of `reps` (CUDA builds with a GPU; throws unique::Error otherwise).
double measure_device_copy_gbps(std::size_t bytes = std::size_t(1) << 30, int reps = 5);
}  // namespace unique

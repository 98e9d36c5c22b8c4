// Host memory bandwidth ceilings, measured the way the benchmarks count bytes, with
// buffers much larger than the last-level cache and all OpenMP threads.
#pragma once
#include <cstddef>
#include <memory>

namespace unique {
namespace detail {
class HostBuffer;
}
// A buffer much larger than the last-level cache, streamed by one read pass per call with
// all OpenMP threads, allocated like the KV cache (2 MiB-aligned, transparent huge pages
// asked for) so the ceiling and the decode read the same kind of memory. measure_host_read_gbps keeps its best pass; a benchmark keeps one
// and times a pass next to each step it times, so every speed is set against the peak of
// the same moment (other tenants of a virtual machine move it by tens of percent).
class HostReadProbe {
 public:
  explicit HostReadProbe(std::size_t bytes = std::size_t(1) << 30);
  ~HostReadProbe();
  double pass_gbps();  // bytes read per second by one pass (GB/s = 1e9 B/s)

 private:
  std::unique_ptr<detail::HostBuffer> buf_;
  long n_ = 0;  // floats
  double sink_ = 0;
};

// Copy: bytes read + bytes written per second (GB/s = 1e9 B/s), best of `reps`.
double measure_host_copy_gbps(std::size_t bytes = std::size_t(1) << 29, int reps = 5);
// Read-only stream (what a decode step does): bytes read per second, best of `reps`.
double measure_host_read_gbps(std::size_t bytes = std::size_t(1) << 30, int reps = 5);
// GPU copy peak: a device-to-device cudaMemcpyAsync of `bytes`, bytes read + written per
// second, best of `reps` (CUDA builds with a GPU; throws unique::Error otherwise).
double measure_device_copy_gbps(std::size_t bytes = std::size_t(1) << 30, int reps = 5);
}  // namespace unique

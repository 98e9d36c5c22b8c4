// Internal benchmarking hook: per-kernel times of the soft-mask pipeline. While enabled,
// every soft_mask forward/backward call records CUDA events between its kernels, waits
// for them, and adds the milliseconds up here (so it serialises the stream: timing only).
#pragma once

namespace unique::cuda {

struct SoftMaskProfile {
  double stats = 0, threshold = 0, forward = 0, delta = 0, backward = 0, finalize = 0;  // ms, summed
  int fwd_calls = 0, bwd_calls = 0;
};

void soft_mask_profile_enable(bool on);
// The sums since the last take (or enable), then resets them.
SoftMaskProfile soft_mask_profile_take();

}  // namespace unique::cuda

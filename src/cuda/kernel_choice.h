// Internal: which implementation of a kernel family runs — the Hopper one (wgmma, sm_90a
// code) or the portable mma.sync one — with an environment variable that forces either
// (tests run both; benchmarks compare them).
#pragma once

namespace unique::cuda {

// The value of environment variable `env`: "auto" (unset or empty), "mma" or "wgmma";
// anything else is an error naming the variable.
const char* requested_kernel(const char* env);

// Why sm_90a code cannot run on the current device, or nullptr when it can.
const char* sm90_unavailable();

// "wgmma" or "mma" for a family whose own extra condition is `why_not` (nullptr: none):
// `env` decides where set, else wgmma wherever it can run. Forcing wgmma where it cannot
// run is an error that says why.
const char* choose_kernel(const char* env, const char* why_not);

}  // namespace unique::cuda

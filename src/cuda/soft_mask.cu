// unique::cuda_backend soft-mask entry points: argument block from the validated views, a
// grow-only workspace (page stats, thresholds, fp32 gradient accumulators), and the kernel
// sequence of src/cuda/soft_mask_kernels.h.
#include <algorithm>
#include <cmath>
#include <mutex>

#include "attention/cuda_backend.h"
#include "cuda/common.cuh"
#include "cuda/grow_buffer.h"
#include "cuda/kernel_choice.h"
#include "cuda/soft_mask_kernels.h"
#include "cuda/soft_mask_profile.h"

namespace unique {

namespace cuda {

namespace {
Strides4 strides_of(const TensorView& t) { return {t.stride[0], t.stride[1], t.stride[2]}; }

// cp.async moves 16-byte rows: the base and every row start must be 16-byte aligned.
void expect_rows_16b(const TensorView& t, const char* arg) {
  const int64_t e = int64_t(dtype_size(t.dtype));
  const bool ok = reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && (t.stride[0] * e) % 16 == 0 &&
                  (t.stride[1] * e) % 16 == 0 && (t.stride[2] * e) % 16 == 0;
  UNIQUE_CHECK_ARG(ok, detail::concat(arg, " alignment"), "16-byte aligned data and strides (CUDA)",
                   detail::concat("strides [", t.stride[0], ", ", t.stride[1], ", ", t.stride[2], "]"));
}
}  // namespace

const char* soft_mask_kernel(int D) {
  int dev = 0, smem_max = 0;
  UNIQUE_CUDA_CHECK(cudaGetDevice(&dev));
  UNIQUE_CUDA_CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const bool fits = std::max(soft_mask_forward_sm90_smem(D), soft_mask_backward_sm90_smem(D)) <= size_t(smem_max);
  return choose_kernel("UNIQUE_SOFT_MASK_KERNEL", fits ? nullptr : "its shared memory does not fit this device");
}

SoftMaskArgs make_soft_mask_args(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const TensorView& out, const TensorView& lse) {
  expect_rows_16b(k, "k");
  expect_rows_16b(v, "v");
  SoftMaskArgs a;
  a.q = q.data;
  a.k = k.data;
  a.v = v.data;
  a.qs = strides_of(q);
  a.ks = strides_of(k);
  a.vs = strides_of(v);
  a.dtype = q.dtype;
  a.out = out.data;
  a.o_dtype = out.dtype;
  a.os = strides_of(out);
  a.lse = lse.ptr<float>();
  a.ls = {lse.stride[0], lse.stride[1], lse.stride[2]};
  a.B = int(q.shape[0]);
  a.L = int(q.shape[1]);
  a.Hq = int(q.shape[2]);
  a.Hkv = int(k.shape[2]);
  a.group = a.Hq / a.Hkv;
  a.P = cfg.page_size;
  a.NC = a.L / a.P;
  a.pshift = 0;
  while ((1 << a.pshift) < a.P) ++a.pshift;  // P is 16, 32 or 64 (validated)
  a.npg = 64 / a.P;
  a.NT = (a.L + 63) / 64;
  a.sink = cfg.sink_pages;
  a.recent = cfg.recent_pages;
  a.kpages = cfg.topk_pages();
  const int D = int(q.shape[3]);
  a.scale = cfg.scale_for(D);
  a.scale_log2 = a.scale * kLog2e;
  a.alpha = cfg.alpha;
  a.inv_T = 1.0f / cfg.temperature;
  return a;
}

}  // namespace cuda

namespace cuda {
namespace {
struct ProfileState {
  bool on = false;
  SoftMaskProfile sums;
  cudaEvent_t ev[7] = {};
};
ProfileState& profile_state() {
  static ProfileState* p = new ProfileState;
  return *p;
}
// Marks stage boundaries: mark(st, i) records event i; done(st, n, out) waits and adds
// the n - 1 intervals to out[0..n-1).
void profile_mark(cudaStream_t st, int i) {
  ProfileState& p = profile_state();
  if (!p.on) return;
  if (!p.ev[i]) UNIQUE_CUDA_CHECK(cudaEventCreate(&p.ev[i]));
  UNIQUE_CUDA_CHECK(cudaEventRecord(p.ev[i], st));
}
void profile_done(int n, double* const* out) {
  ProfileState& p = profile_state();
  if (!p.on) return;
  UNIQUE_CUDA_CHECK(cudaEventSynchronize(p.ev[n - 1]));
  for (int i = 0; i + 1 < n; ++i) {
    float ms = 0;
    UNIQUE_CUDA_CHECK(cudaEventElapsedTime(&ms, p.ev[i], p.ev[i + 1]));
    *out[i] += ms;
  }
}
}  // namespace

void soft_mask_profile_enable(bool on) {
  profile_state().on = on;
  profile_state().sums = {};
}
SoftMaskProfile soft_mask_profile_take() {
  const SoftMaskProfile r = profile_state().sums;
  profile_state().sums = {};
  return r;
}
}  // namespace cuda

namespace cuda_backend {

namespace {
struct Scratch {
  std::mutex mu;
  cuda::GrowBuffer buf;
};
Scratch& scratch() {
  static Scratch* s = new Scratch;  // never freed: outlives static destruction order
  return *s;
}
// Carves fp32 arrays out of one buffer, each 256-byte aligned.
struct Carver {
  size_t used = 0;
  char* base = nullptr;
  float* take(size_t n) {
    float* p = reinterpret_cast<float*>(base + used);
    used += (n * sizeof(float) + 255) / 256 * 256;
    return p;
  }
};
// Lays out the workspace (base == nullptr: just sizes it).
size_t carve(cuda::SoftMaskArgs& a, int D, bool backward, void* base) {
  Carver c{0, static_cast<char*>(base)};
  const size_t stats = size_t(a.B) * a.Hkv * std::max(a.NC, 1) * D, rows = size_t(a.B) * a.Hq * a.L;
  a.mu = c.take(stats);
  a.sig = c.take(stats);
  a.hl = reinterpret_cast<uint4*>(c.take(2 * stats));
  a.pb = reinterpret_cast<uint8_t*>(c.take(size_t(a.B) * a.Hkv * a.NT * 2 * D * 16 / sizeof(float)));
  a.tau = c.take(rows);
  if (backward) {
    a.delta = c.take(rows);
    a.lse2 = c.take(rows);
    a.aq = c.take(rows * D / 2);  // 16-bit
    a.dq_acc = c.take(rows * D);
    a.dk_acc = c.take(size_t(a.B) * a.L * a.Hkv * D);
    a.dv_acc = c.take(size_t(a.B) * a.L * a.Hkv * D);
    a.dmu = c.take(stats);
    a.dsig = c.take(stats);
  }
  return c.used;
}
}  // namespace

void soft_mask_forward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse, float* tau, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int D = int(q.shape[3]);
  cuda::SoftMaskArgs a = cuda::make_soft_mask_args(cfg, q, k, v, out, lse);
  Scratch& s = scratch();
  std::lock_guard<std::mutex> lock(s.mu);
  carve(a, D, false, s.buf.get(carve(a, D, false, nullptr)));
  if (tau) a.tau = tau;  // the threshold kernel writes the caller's tensor
  cuda::profile_mark(st, 0);
  cuda::launch_soft_mask_stats(a, D, st);
  cuda::profile_mark(st, 1);
  cuda::launch_soft_mask_threshold(a, D, st);
  cuda::profile_mark(st, 2);
  cuda::launch_soft_mask_forward(a, D, st);
  cuda::profile_mark(st, 3);
  cuda::SoftMaskProfile& ps = cuda::profile_state().sums;
  double* const outs[3] = {&ps.stats, &ps.threshold, &ps.forward};
  cuda::profile_done(4, outs);
  if (cuda::profile_state().on) ++ps.fwd_calls;
}

void soft_mask_backward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout, const TensorView& dq,
                        const TensorView& dk, const TensorView& dv, const float* tau, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int D = int(q.shape[3]);
  cuda::expect_rows_16b(q, "q");
  cuda::expect_rows_16b(dout, "dout");
  cuda::SoftMaskArgs a = cuda::make_soft_mask_args(cfg, q, k, v, out, lse);
  a.dout = dout.data;
  a.dos = cuda::strides_of(dout);
  a.dq = dq.data;
  a.dk = dk.data;
  a.dv = dv.data;
  a.dq_dtype = dq.dtype;
  a.dk_dtype = dk.dtype;
  a.dv_dtype = dv.dtype;
  a.dqs = cuda::strides_of(dq);
  a.dks = cuda::strides_of(dk);
  a.dvs = cuda::strides_of(dv);
  Scratch& s = scratch();
  std::lock_guard<std::mutex> lock(s.mu);
  const size_t bytes = carve(a, D, true, nullptr);
  carve(a, D, true, s.buf.get(bytes));
  // The accumulators (everything after tau) start at zero.
  char* zero_from = reinterpret_cast<char*>(a.dq_acc);
  UNIQUE_CUDA_CHECK(cudaMemsetAsync(zero_from, 0, bytes - size_t(zero_from - static_cast<char*>(s.buf.ptr)), st));
  cuda::profile_mark(st, 0);
  cuda::launch_soft_mask_stats(a, D, st);
  cuda::profile_mark(st, 1);
  if (tau) a.tau = const_cast<float*>(tau);  // the forward's thresholds (only read)
  else cuda::launch_soft_mask_threshold(a, D, st);
  cuda::profile_mark(st, 2);
  cuda::launch_soft_mask_delta(a, D, st);
  cuda::profile_mark(st, 3);
  cuda::launch_soft_mask_backward(a, D, st);
  cuda::profile_mark(st, 4);
  cuda::launch_soft_mask_finalize(a, D, st);
  cuda::profile_mark(st, 5);
  cuda::SoftMaskProfile& ps = cuda::profile_state().sums;
  double* const outs[5] = {&ps.stats, &ps.threshold, &ps.delta, &ps.backward, &ps.finalize};
  cuda::profile_done(6, outs);
  if (cuda::profile_state().on) ++ps.bwd_calls;
}

const char* soft_mask_kernel(int head_dim) { return cuda::soft_mask_kernel(head_dim); }

}  // namespace cuda_backend

}  // namespace unique

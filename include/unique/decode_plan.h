// DecodePlan: FlashInfer-style plan/run split for the CUDA decode step.
//
//   DecodePlan plan;
//   plan.plan(cfg, shape);            // once per batch shape: allocates every workspace
//   plan.run(q, kv, out, lse, stream); // per step: select (sparse) + decode; no allocation,
//                                      // no host synchronisation -> capturable in a CUDA graph
//
// run() checks on the host that its arguments fit the planned shape (throws unique::Error);
// the device page table may change between runs as long as every sequence keeps at most
// shape.max_pages_per_seq pages. The selection of the last run stays readable through
// selection() (device memory) until the next run. Available only in CUDA builds.
#pragma once
#include <memory>

#include "unique/config.h"
#include "unique/dtype.h"
#include "unique/paged_kv.h"
#include "unique/selection.h"
#include "unique/tensor.h"

namespace unique {

struct DecodeShape {
  int batch = 1;
  int num_qo_heads = 32;
  int num_kv_heads = 8;
  int head_dim = 128;
  int max_pages_per_seq = 0;  // bound on the pages of any sequence in the runs to come
  DType dtype = DType::bf16;  // KV cache dtype (sizes the split-KV schedule)
};

class DecodePlan {
 public:
  DecodePlan();
  ~DecodePlan();
  DecodePlan(DecodePlan&&) noexcept;
  DecodePlan& operator=(DecodePlan&&) noexcept;
  DecodePlan(const DecodePlan&) = delete;
  DecodePlan& operator=(const DecodePlan&) = delete;

  // cfg.estimator == dense plans a dense step (no selection). Throws unique::Error for bad
  // arguments and unique::RuntimeError when CUDA fails (allocation included).
  void plan(const AttentionConfig& cfg, const DecodeShape& shape);
  // q [batch, num_qo_heads, head_dim]; out likewise; lse [batch, num_qo_heads] fp32 or
  // null data. stream: a cudaStream_t (nullptr = legacy default stream).
  void run(const TensorView& q, const PagedKV& kv, const TensorView& out, const TensorView& lse,
           void* stream) const;
  // Only the selection (sparse plans): the first half of run().
  void select(const TensorView& q, const PagedKV& kv, void* stream) const;

  bool planned() const;
  const AttentionConfig& config() const;
  const DecodeShape& shape() const;
  const Selection& selection() const;  // device pointers; empty for dense plans
  std::size_t workspace_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace unique

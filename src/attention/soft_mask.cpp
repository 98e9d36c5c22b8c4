// Soft-mask attention (include/unique/soft_mask.h): argument checks, then the float64
// reference on the CPU or the CUDA kernels on the GPU.
#include "unique/soft_mask.h"

#include <utility>

#include "attention/cuda_backend.h"
#include "unique/error.h"
#include "unique/stream.h"

namespace unique {

namespace {

void expect_float_input(const TensorView& t, const char* arg, const TensorView& q) {
  expect_not_null(t, arg);
  expect_device(t, arg, q.device);
  if (q.device == Device::cuda)
    UNIQUE_CHECK_ARG(t.dtype == q.dtype, detail::concat(arg, ".dtype"),
                     detail::concat(to_string(q.dtype), " (the dtype of q)"), to_string(t.dtype));
}

}  // namespace

void validate_soft_mask_args(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                             const TensorView& v, const TensorView& out, const TensorView& lse,
                             const TensorView* dout, const TensorView* dq, const TensorView* dk,
                             const TensorView* dv, const TensorView* tau) {
  cfg.validate();
  UNIQUE_CHECK_ARG(cfg.offset == OffsetForm::channel, "offset", "channel (soft-mask attention)",
                   to_string(cfg.offset));
  expect_not_null(q, "q");
  expect_shape(q, "q", {-1, -1, -1, -1});
  UNIQUE_CHECK_ARG(q.shape[0] >= 1, "q batch (dim 0)", ">= 1", q.shape[0]);
  UNIQUE_CHECK_ARG(q.shape[1] >= 1, "q seq_len (dim 1)", ">= 1", q.shape[1]);
  UNIQUE_CHECK_ARG(q.shape[2] >= 1, "q num_qo_heads (dim 2)", ">= 1", q.shape[2]);
  UNIQUE_CHECK_ARG(q.shape[3] >= 1, "q head_dim (dim 3)", ">= 1", q.shape[3]);
  const int64_t B = q.shape[0], L = q.shape[1], Hq = q.shape[2], D = q.shape[3];
  expect_float_input(k, "k", q);
  expect_shape(k, "k", {B, L, -1, D});
  const int64_t Hkv = k.shape[2];
  UNIQUE_CHECK_ARG(Hkv >= 1 && Hq % Hkv == 0, "k num_kv_heads (dim 2)",
                   detail::concat("a divisor of num_qo_heads (", Hq, ")"), Hkv);
  expect_float_input(v, "v", q);
  expect_shape(v, "v", {B, L, Hkv, D});
  expect_not_null(out, "out");
  expect_device(out, "out", q.device);
  expect_shape(out, "out", {B, L, Hq, D});
  expect_not_null(lse, "lse");
  expect_device(lse, "lse", q.device);
  expect_dtype(lse, "lse", DType::f32);
  expect_shape(lse, "lse", {B, L, Hq});
  if (q.device == Device::cuda) {
    UNIQUE_CHECK_ARG(q.dtype == DType::bf16 || q.dtype == DType::f16, "q.dtype",
                     "bf16 or fp16 (the CUDA soft-mask kernels run on tensor cores)", to_string(q.dtype));
    UNIQUE_CHECK_ARG(D == 64 || D == 128, "q head_dim (dim 3)", "64 or 128 (CUDA soft-mask kernels)", D);
    UNIQUE_CHECK_ARG(cfg.page_size == 16 || cfg.page_size == 32 || cfg.page_size == 64, "page_size",
                     "16, 32 or 64 (CUDA soft-mask kernels)", cfg.page_size);
    // The kernels address a query/key/value element with 16-byte row loads.
    for (auto [t, name] : {std::pair{&q, "q"}, std::pair{&k, "k"}, std::pair{&v, "v"}})
      UNIQUE_CHECK_ARG(t->stride[3] == 1, detail::concat(name, " stride of head_dim"), "1 (CUDA)", t->stride[3]);
  }
  if (tau) {
    expect_not_null(*tau, "tau");
    expect_device(*tau, "tau", q.device);
    expect_dtype(*tau, "tau", DType::f32);
    expect_shape(*tau, "tau", {B, Hq, L});
    expect_contiguous(*tau, "tau");
  }
  if (!dout) return;
  expect_float_input(*dout, "dout", q);
  expect_shape(*dout, "dout", {B, L, Hq, D});
  expect_not_null(*dq, "dq");
  expect_device(*dq, "dq", q.device);
  expect_shape(*dq, "dq", {B, L, Hq, D});
  expect_not_null(*dk, "dk");
  expect_device(*dk, "dk", q.device);
  expect_shape(*dk, "dk", {B, L, Hkv, D});
  expect_not_null(*dv, "dv");
  expect_device(*dv, "dv", q.device);
  expect_shape(*dv, "dv", {B, L, Hkv, D});
  if (q.device == Device::cuda) {
    expect_float_input(out, "out", q);
    UNIQUE_CHECK_ARG(dout->stride[3] == 1 && out.stride[3] == 1, "dout/out stride of head_dim", "1 (CUDA)",
                     detail::concat(dout->stride[3], "/", out.stride[3]));
  }
}

const char* soft_mask_cuda_kernel(int head_dim) { return cuda_backend::soft_mask_kernel(head_dim); }

void soft_mask_attention_forward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                 const TensorView& v, const TensorView& out, const TensorView& lse,
                                 const TensorView* tau) {
  validate_soft_mask_args(cfg, q, k, v, out, lse, nullptr, nullptr, nullptr, nullptr, tau);
  if (q.device == Device::cuda) {
    cuda_backend::soft_mask_forward(cfg, q, k, v, out, lse, tau ? tau->ptr<float>() : nullptr, cuda_stream());
    return;
  }
  ref::soft_mask_attention_forward(cfg, q, k, v, out, lse);
  if (tau) {
    const std::vector<double> t = ref::soft_mask_thresholds(cfg, q, k);
    for (size_t i = 0; i < t.size(); ++i) tau->ptr<float>()[i] = static_cast<float>(t[i]);
  }
}

void soft_mask_attention_backward(const AttentionConfig& cfg, const TensorView& q, const TensorView& k,
                                  const TensorView& v, const TensorView& out, const TensorView& lse,
                                  const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                  const TensorView& dv, const TensorView* tau) {
  validate_soft_mask_args(cfg, q, k, v, out, lse, &dout, &dq, &dk, &dv, tau);
  if (q.device == Device::cuda)
    cuda_backend::soft_mask_backward(cfg, q, k, v, out, lse, dout, dq, dk, dv, tau ? tau->ptr<float>() : nullptr,
                                     cuda_stream());
  else
    ref::soft_mask_attention_backward(cfg, q, k, v, out, lse, dout, dq, dk, dv);
}

}  // namespace unique

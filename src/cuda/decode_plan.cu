// DecodePlan (include/unique/decode_plan.h): every buffer a decode step needs is
// allocated in plan(); run() only launches (score+select, decode, merge).
#include "unique/decode_plan.h"

#include <algorithm>
#include <vector>

#include "attention/validate.h"
#include "cuda/common.cuh"
#include "cuda/kernels.h"
#include "unique/decode.h"

namespace unique {

struct DecodePlan::Impl {
  AttentionConfig cfg;
  DecodeShape shape;
  Selection sel;
  cuda::SelectWorkspace sws;
  cuda::DecodeWorkspace dws;
  std::vector<void*> allocs;
  size_t bytes = 0;

  void* alloc(size_t n) {
    if (n == 0) return nullptr;
    void* p = nullptr;
    UNIQUE_CUDA_CHECK(cudaMalloc(&p, n));
    allocs.push_back(p);
    bytes += n;
    UNIQUE_CUDA_CHECK(cudaMemset(p, 0, n));
    return p;
  }
  ~Impl() {
    for (void* p : allocs) cudaFree(p);  // no throw from a destructor
  }
};

DecodePlan::DecodePlan() = default;
DecodePlan::~DecodePlan() = default;
DecodePlan::DecodePlan(DecodePlan&&) noexcept = default;
DecodePlan& DecodePlan::operator=(DecodePlan&&) noexcept = default;

void DecodePlan::plan(const AttentionConfig& cfg, const DecodeShape& s) {
  cfg.validate();
  UNIQUE_CHECK_ARG(s.batch > 0, "shape.batch", "> 0", s.batch);
  UNIQUE_CHECK_ARG(s.num_kv_heads > 0, "shape.num_kv_heads", "> 0", s.num_kv_heads);
  UNIQUE_CHECK_ARG(s.num_qo_heads > 0 && s.num_qo_heads % s.num_kv_heads == 0, "shape.num_qo_heads",
                   detail::concat("a positive multiple of num_kv_heads (", s.num_kv_heads, ")"),
                   s.num_qo_heads);
  UNIQUE_CHECK_ARG(s.head_dim == 64 || s.head_dim == 128 || s.head_dim == 256, "shape.head_dim",
                   "64, 128 or 256", s.head_dim);
  UNIQUE_CHECK_ARG(s.max_pages_per_seq > 0, "shape.max_pages_per_seq", "> 0", s.max_pages_per_seq);
  cuda::check_cuda_estimator(cfg);
  auto impl = std::make_unique<Impl>();
  impl->cfg = cfg;
  impl->shape = s;
  const bool sparse = cfg.estimator != Estimator::dense;
  int max_list = s.max_pages_per_seq;
  if (sparse) {
    const int ms = cfg.max_selected(s.max_pages_per_seq);
    impl->sel.batch = s.batch;
    impl->sel.num_kv_heads = s.num_kv_heads;
    impl->sel.max_selected = ms;
    impl->sel.device = Device::cuda;
    impl->sel.pages = static_cast<int32_t*>(impl->alloc(size_t(s.batch) * s.num_kv_heads * ms * 4));
    impl->sel.counts = static_cast<int32_t*>(impl->alloc(size_t(s.batch) * s.num_kv_heads * 4));
    const cuda::SelectSizes z = cuda::select_sizes(s.batch, s.num_qo_heads, s.num_kv_heads, s.max_pages_per_seq);
    impl->sws.agg = static_cast<float*>(impl->alloc(z.agg_floats * 4));
    const bool raw = cfg.estimator == Estimator::oracle || cfg.gqa == GqaAggregation::softmax_sum ||
                     s.num_qo_heads / s.num_kv_heads > 8;
    impl->sws.raw = raw ? static_cast<float*>(impl->alloc(z.raw_floats * 4)) : nullptr;
    max_list = ms;
  }
  const int chunks = cuda::decode_chunks(s.batch, s.num_qo_heads, s.num_kv_heads, cfg.page_size, max_list,
                                         s.dtype, s.head_dim);
  const size_t floats = cuda::decode_floats(s.batch, s.num_qo_heads, s.head_dim, chunks);
  impl->dws.part_o = static_cast<float*>(impl->alloc(floats * 4));
  impl->dws.part_lse = static_cast<float*>(impl->alloc(floats / s.head_dim * 4));
  impl->dws.capacity_floats = floats;
  impl_ = std::move(impl);
}

namespace {
void check_run(const DecodePlan& plan, const TensorView& q, const PagedKV& kv) {
  UNIQUE_CHECK_ARG(plan.planned(), "DecodePlan", "plan() before run()", "not planned");
  const DecodeShape& s = plan.shape();
  UNIQUE_CHECK_ARG(kv.device == Device::cuda, "kv.device", "cuda", to_string(kv.device));
  UNIQUE_CHECK_ARG(kv.batch == s.batch, "kv.batch", detail::concat("the planned batch ", s.batch), kv.batch);
  UNIQUE_CHECK_ARG(kv.num_kv_heads == s.num_kv_heads, "kv.num_kv_heads", s.num_kv_heads, kv.num_kv_heads);
  UNIQUE_CHECK_ARG(kv.head_dim == s.head_dim, "kv.head_dim", s.head_dim, kv.head_dim);
  UNIQUE_CHECK_ARG(kv.dtype == s.dtype, "kv.dtype", to_string(s.dtype), to_string(kv.dtype));
  UNIQUE_CHECK_ARG(kv.max_pages_per_seq > 0 && kv.max_pages_per_seq <= s.max_pages_per_seq,
                   "kv.max_pages_per_seq", detail::concat("1..", s.max_pages_per_seq, " (planned)"),
                   kv.max_pages_per_seq);
  UNIQUE_CHECK_ARG(q.shape[1] == s.num_qo_heads, "q num_qo_heads", s.num_qo_heads, q.shape[1]);
  detail::validate_scoring(plan.config(), q, kv);
}
}  // namespace

void DecodePlan::select(const TensorView& q, const PagedKV& kv, void* stream) const {
  check_run(*this, q, kv);
  if (impl_->cfg.estimator == Estimator::dense) return;
  validate_selection(impl_->sel, kv, impl_->cfg);
  cuda::launch_score_select(impl_->cfg, q, kv, impl_->shape.max_pages_per_seq, impl_->sws, nullptr, 0,
                            &impl_->sel, static_cast<cudaStream_t>(stream));
}

void DecodePlan::run(const TensorView& q, const PagedKV& kv, const TensorView& out, const TensorView& lse,
                     void* stream) const {
  check_run(*this, q, kv);
  const bool sparse = impl_->cfg.estimator != Estimator::dense;
  const Selection* sel = sparse ? &impl_->sel : nullptr;
  validate_decode_args(impl_->cfg, q, kv, sel, out, lse);
  if (sparse)
    cuda::launch_score_select(impl_->cfg, q, kv, impl_->shape.max_pages_per_seq, impl_->sws, nullptr, 0, sel,
                              static_cast<cudaStream_t>(stream));
  cuda::launch_decode(impl_->cfg, q, kv, sel, out, lse, impl_->shape.max_pages_per_seq, impl_->dws,
                      static_cast<cudaStream_t>(stream));
}

bool DecodePlan::planned() const { return impl_ != nullptr; }
const AttentionConfig& DecodePlan::config() const { return impl_->cfg; }
const DecodeShape& DecodePlan::shape() const { return impl_->shape; }
const Selection& DecodePlan::selection() const { return impl_->sel; }
std::size_t DecodePlan::workspace_bytes() const { return impl_ ? impl_->bytes : 0; }

}  // namespace unique

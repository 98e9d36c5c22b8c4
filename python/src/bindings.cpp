// unique_attn._core: thin nanobind bindings over the attention library. Arrays arrive as
// nanobind ndarrays (DLPack / buffer protocol, zero-copy, CPU or CUDA) and become
// TensorViews and one PagedKV; every check of shapes, page tables and config is the
// library's own. The public API (argument conversion, CUDA stream, plan/run) lives in the
// Python package; these functions are private to it.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <string>

#include "unique/config.h"
#include "unique/decode.h"
#include "unique/error.h"
#include "unique/page_stats.h"
#include "unique/paged_kv.h"
#include "unique/selection.h"
#include "unique/soft_mask.h"
#include "unique/stream.h"
#include "unique/tensor.h"
#include "unique/version.h"

// DecodePlan (CUDA builds): plan-time workspaces, so wrapper runs on the GPU neither allocate
// nor share the plan-less path's cached workspace (CUDA graphs, several streams).
#if defined(UNIQUE_WITH_CUDA) && __has_include("unique/decode_plan.h")
#include <cuda_runtime_api.h>

#include "unique/decode_plan.h"
#define UNIQUE_PY_DECODE_PLAN 1
#endif

namespace nb = nanobind;
using namespace unique;

namespace {

using Array = nb::ndarray<>;
// Inputs the library only reads (q, new K/V rows, page tables): read-only arrays welcome.
using InArray = nb::ndarray<nb::ro>;

// A dtype problem: surfaces as Python TypeError (every other argument error is ValueError).
struct DTypeError : Error {
  using Error::Error;
};

std::string dtype_name(const nb::dlpack::dtype& dt) {
  const char* kind = "?";
  switch (static_cast<nb::dlpack::dtype_code>(dt.code)) {
    case nb::dlpack::dtype_code::Int: kind = "int"; break;
    case nb::dlpack::dtype_code::UInt: kind = "uint"; break;
    case nb::dlpack::dtype_code::Float: kind = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: kind = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: kind = "complex"; break;
    case nb::dlpack::dtype_code::Bool: kind = "bool"; break;
    default: break;
  }
  return std::string(kind) + std::to_string(dt.bits);
}

// uint16 is bf16: the Python layer passes NumPy bfloat16 (ml_dtypes, which DLPack cannot
// carry) as a uint16 view, and rejects integer arrays before they get here.
template <class A>
DType float_dtype(const A& a, const char* arg) {
  const auto dt = a.dtype();
  const auto code = static_cast<nb::dlpack::dtype_code>(dt.code);
  if (dt.lanes == 1) {
    if (code == nb::dlpack::dtype_code::Float && dt.bits == 32) return DType::f32;
    if (code == nb::dlpack::dtype_code::Float && dt.bits == 16) return DType::f16;
    if (code == nb::dlpack::dtype_code::Bfloat && dt.bits == 16) return DType::bf16;
    if (code == nb::dlpack::dtype_code::UInt && dt.bits == 16) return DType::bf16;
  }
  throw DTypeError(detail::concat(arg, ": expected dtype float32, float16 or bfloat16, got ",
                                  dtype_name(dt)));
}

template <class A>
Device device_of(const A& a, const char* arg) {
  if (a.device_type() == nb::device::cpu::value) return Device::cpu;
  if (a.device_type() == nb::device::cuda::value) return Device::cuda;
  throw Error(detail::concat(arg, ": expected a CPU or CUDA array, got DLPack device type ",
                             a.device_type()));
}

template <class A>
TensorView view_of(const A& a, const char* arg) {
  UNIQUE_CHECK_ARG(a.is_valid(), arg, "an array", "None");
  UNIQUE_CHECK_ARG(a.ndim() <= static_cast<size_t>(TensorView::kMaxDims), arg,
                   detail::concat("at most ", TensorView::kMaxDims, " dims"), a.ndim());
  TensorView t;
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.dtype = float_dtype(a, arg);
  t.device = device_of(a, arg);
  t.ndim = static_cast<int>(a.ndim());
  for (int i = 0; i < t.ndim; ++i) {
    t.shape[i] = static_cast<int64_t>(a.shape(i));
    t.stride[i] = a.stride(i);
  }
  return t;
}

template <class A>
TensorView f32_view(const A& a, const char* arg) {
  TensorView t = view_of(a, arg);
  if (t.dtype != DType::f32)
    throw DTypeError(detail::concat(arg, ": expected dtype float32, got ", dtype_name(a.dtype())));
  return t;
}

template <class A>
const int32_t* int32_data(const A& a, const char* arg, Device device, int64_t* len) {
  UNIQUE_CHECK_ARG(a.is_valid(), arg, "an int32 array", "None");
  if (!(a.dtype() == nb::dtype<int32_t>()))
    throw DTypeError(detail::concat(arg, ": expected dtype int32, got ", dtype_name(a.dtype())));
  UNIQUE_CHECK_ARG(a.ndim() == 1, arg, "a 1-D array", detail::concat(a.ndim(), "-D"));
  UNIQUE_CHECK_ARG(a.shape(0) <= 1 || a.stride(0) == 1, arg, "a contiguous array", "strided");
  const Device d = device_of(a, arg);
  UNIQUE_CHECK_ARG(d == device, arg, detail::concat("device ", to_string(device), " (the cache's)"),
                   detail::concat("device ", to_string(d)));
  *len = static_cast<int64_t>(a.shape(0));
  return static_cast<const int32_t*>(a.data());
}

void* stats_data(const Array& a, const char* arg, const TensorView& k, DType* stats_dtype,
                 bool* have_dtype) {
  if (!a.is_valid()) return nullptr;
  TensorView s = view_of(a, arg);
  expect_shape(s, arg, {k.shape[0], k.shape[1], k.shape[3]});
  expect_contiguous(s, arg);
  expect_device(s, arg, k.device);
  if (*have_dtype && s.dtype != *stats_dtype)
    throw DTypeError(detail::concat(arg, ": expected dtype ", to_string(*stats_dtype),
                                    " (the other statistics'), got ", to_string(s.dtype)));
  *stats_dtype = s.dtype;
  *have_dtype = true;
  return s.data;
}

// One PagedKV over the caller's arrays. Sizes come from k_cache [pages, heads, P, D].
PagedKV make_kv(const Array& k_cache, const Array& v_cache, const Array& mean, const Array& std_,
                const Array& kmin, const Array& kmax, const InArray& page_indptr,
                const InArray& page_indices, const InArray& last_page_len, int max_pages_per_seq) {
  TensorView k = view_of(k_cache, "k_cache");
  TensorView v = view_of(v_cache, "v_cache");
  expect_shape(k, "k_cache", {-1, -1, -1, -1});
  expect_shape(v, "v_cache", {k.shape[0], k.shape[1], k.shape[2], k.shape[3]});
  expect_contiguous(k, "k_cache");
  expect_contiguous(v, "v_cache");
  expect_device(v, "v_cache", k.device);
  if (v.dtype != k.dtype)
    throw DTypeError(detail::concat("v_cache: expected dtype ", to_string(k.dtype),
                                    " (k_cache's), got ", to_string(v.dtype)));
  PagedKV kv;
  kv.dtype = k.dtype;
  kv.device = k.device;
  kv.num_pages = static_cast<int>(k.shape[0]);
  kv.num_kv_heads = static_cast<int>(k.shape[1]);
  kv.page_size = static_cast<int>(k.shape[2]);
  kv.head_dim = static_cast<int>(k.shape[3]);
  kv.k = k.data;
  kv.v = v.data;
  bool have = false;
  kv.mean = stats_data(mean, "mean", k, &kv.stats_dtype, &have);
  kv.std = stats_data(std_, "std", k, &kv.stats_dtype, &have);
  kv.kmin = stats_data(kmin, "kmin", k, &kv.stats_dtype, &have);
  kv.kmax = stats_data(kmax, "kmax", k, &kv.stats_dtype, &have);
  int64_t n_indptr = 0, n_indices = 0, n_last = 0;
  kv.page_indptr = int32_data(page_indptr, "page_indptr", kv.device, &n_indptr);
  kv.page_indices = int32_data(page_indices, "page_indices", kv.device, &n_indices);
  kv.last_page_len = int32_data(last_page_len, "last_page_len", kv.device, &n_last);
  UNIQUE_CHECK_ARG(n_indptr >= 2, "page_indptr", "batch + 1 >= 2 entries", n_indptr);
  kv.batch = static_cast<int>(n_indptr - 1);
  UNIQUE_CHECK_ARG(n_last == kv.batch, "last_page_len", detail::concat(kv.batch, " entries (batch)"),
                   n_last);
  kv.max_pages_per_seq = max_pages_per_seq;
  if (kv.device == Device::cpu) {
    // The host can read the CSR: make sure no indptr entry points past page_indices.
    validate_paged_kv(kv, false);
    UNIQUE_CHECK_ARG(kv.page_indptr[kv.batch] <= n_indices, "page_indptr[batch]",
                     detail::concat("<= len(page_indices) (", n_indices, ")"),
                     kv.page_indptr[kv.batch]);
  }
  return kv;
}

Selection make_selection(const Array& pages, const Array& counts, const PagedKV& kv) {
  Selection s;
  UNIQUE_CHECK_ARG(pages.is_valid() && pages.ndim() == 3, "selection pages",
                   "an int32 array [batch, num_kv_heads, max_selected]",
                   pages.is_valid() ? detail::concat(pages.ndim(), "-D") : std::string("None"));
  UNIQUE_CHECK_ARG(counts.is_valid() && counts.ndim() == 2, "selection counts",
                   "an int32 array [batch, num_kv_heads]",
                   counts.is_valid() ? detail::concat(counts.ndim(), "-D") : std::string("None"));
  if (!(pages.dtype() == nb::dtype<int32_t>()) || !(counts.dtype() == nb::dtype<int32_t>()))
    throw DTypeError("selection: expected dtype int32 for pages and counts");
  UNIQUE_CHECK_ARG(pages.shape(0) == static_cast<size_t>(kv.batch) &&
                       pages.shape(1) == static_cast<size_t>(kv.num_kv_heads),
                   "selection pages", detail::concat("shape [", kv.batch, ", ", kv.num_kv_heads, ", *]"),
                   detail::concat("shape [", pages.shape(0), ", ", pages.shape(1), ", ", pages.shape(2), "]"));
  UNIQUE_CHECK_ARG(counts.shape(0) == static_cast<size_t>(kv.batch) &&
                       counts.shape(1) == static_cast<size_t>(kv.num_kv_heads),
                   "selection counts", detail::concat("shape [", kv.batch, ", ", kv.num_kv_heads, "]"),
                   detail::concat("shape [", counts.shape(0), ", ", counts.shape(1), "]"));
  const bool pc = pages.stride(2) == 1 && pages.stride(1) == static_cast<int64_t>(pages.shape(2)) &&
                  pages.stride(0) == static_cast<int64_t>(pages.shape(1) * pages.shape(2));
  const bool cc = counts.stride(1) == 1 && counts.stride(0) == static_cast<int64_t>(counts.shape(1));
  UNIQUE_CHECK_ARG(pc && cc, "selection", "contiguous pages and counts", "strided");
  s.pages = static_cast<int32_t*>(pages.data());
  s.counts = static_cast<int32_t*>(counts.data());
  s.batch = kv.batch;
  s.num_kv_heads = kv.num_kv_heads;
  s.max_selected = static_cast<int>(pages.shape(2));
  s.device = device_of(pages, "selection pages");
  UNIQUE_CHECK_ARG(device_of(counts, "selection counts") == s.device, "selection counts",
                   detail::concat("device ", to_string(s.device)), "another device");
  return s;
}

AttentionConfig make_config(int page_size, int budget, int sink, int recent,
                            const std::string& estimator, const std::string& gqa,
                            const std::string& offset, float alpha, float sm_scale, uint64_t seed) {
  AttentionConfig c;
  c.page_size = page_size;
  c.budget_tokens = budget;
  c.sink_pages = sink;
  c.recent_pages = recent;
  c.estimator = parse_estimator(estimator);
  c.gqa = parse_gqa(gqa);
  c.offset = parse_offset(offset);
  c.alpha = alpha;
  c.sm_scale = sm_scale;
  c.seed = seed;
  c.validate();
  return c;
}

// AttentionConfig of the soft-mask bindings (the fields the soft mask reads).
AttentionConfig soft_mask_config(int page_size, int budget_tokens, int sink_pages, int recent_pages,
                                 float temperature, float alpha, float sm_scale) {
  AttentionConfig cfg;
  cfg.page_size = page_size;
  cfg.budget_tokens = budget_tokens;
  cfg.sink_pages = sink_pages;
  cfg.recent_pages = recent_pages;
  cfg.temperature = temperature;
  cfg.alpha = alpha;
  cfg.sm_scale = sm_scale;
  return cfg;
}

struct StreamGuard {
  explicit StreamGuard(uintptr_t s) : prev(cuda_stream()) {
    set_cuda_stream(reinterpret_cast<void*>(s));
  }
  ~StreamGuard() { set_cuda_stream(prev); }
  void* prev;
};

// Same argument list for every op that reads the cache (Python passes them positionally).
#define UNIQUE_KV_PARAMS                                                                    \
  const Array &k_cache, const Array &v_cache, const Array &mean, const Array &std_,        \
      const Array &kmin, const Array &kmax, const InArray &page_indptr,                    \
      const InArray &page_indices, const InArray &last_page_len, int max_pages_per_seq
#define UNIQUE_KV_ARGS \
  k_cache, v_cache, mean, std_, kmin, kmax, page_indptr, page_indices, last_page_len, max_pages_per_seq
#define UNIQUE_KV_NB_ARGS                                                                   \
  nb::arg("k_cache"), nb::arg("v_cache"), nb::arg("mean").none(), nb::arg("std").none(),    \
      nb::arg("kmin").none(), nb::arg("kmax").none(), nb::arg("page_indptr"),               \
      nb::arg("page_indices"), nb::arg("last_page_len"), nb::arg("max_pages_per_seq")

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "UNIQUE attention library bindings (private: use the unique_attn package)";
  m.attr("__version__") = kVersion;
  // Objects still referenced at interpreter exit (a DecodePlan held by a model registry,
  // say) are not leaks worth a report.
  nb::set_leak_warnings(false);

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const DTypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const Error& e) {
      // The library's own dtype checks read "<arg>: expected dtype X, got dtype Y".
      const std::string msg = e.what();
      PyErr_SetString(msg.find(": expected dtype ") != std::string::npos ? PyExc_TypeError
                                                                          : PyExc_ValueError,
                      e.what());
    } catch (const RuntimeError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

#ifndef UNIQUE_PY_DECODE_PLAN
  m.attr("has_decode_plan") = false;
#endif
  m.def("cuda_available", &cuda_available, "Built with CUDA and at least one GPU visible.");
  m.def("soft_mask_cuda_kernel", &soft_mask_cuda_kernel, nb::arg("head_dim"),
        "The soft-mask CUDA kernels on the current device: 'wgmma', 'mma' or 'none' (no CUDA build).");
  m.def("built_with_cuda", [] {
#ifdef UNIQUE_WITH_CUDA
    return true;
#else
    return false;
#endif
  });

  m.def(
      "validate_config",
      [](int page_size, int budget, int sink, int recent, const std::string& estimator,
         const std::string& gqa, const std::string& offset, float alpha, float sm_scale,
         uint64_t seed, int num_pages) {
        return make_config(page_size, budget, sink, recent, estimator, gqa, offset, alpha,
                           sm_scale, seed)
            .max_selected(num_pages);
      },
      nb::arg("page_size"), nb::arg("budget"), nb::arg("sink"), nb::arg("recent"),
      nb::arg("estimator"), nb::arg("gqa"), nb::arg("offset"), nb::arg("alpha"),
      nb::arg("sm_scale"), nb::arg("seed"), nb::arg("num_pages"),
      "Validates an AttentionConfig; returns max_selected(num_pages).");

#define UNIQUE_CFG_PARAMS                                                                    \
  int budget, int sink, int recent, const std::string &estimator, const std::string &gqa,    \
      const std::string &offset, float alpha, float sm_scale, uint64_t seed
#define UNIQUE_CFG_NB_ARGS                                                                   \
  nb::arg("budget"), nb::arg("sink"), nb::arg("recent"), nb::arg("estimator"), nb::arg("gqa"), \
      nb::arg("offset"), nb::arg("alpha"), nb::arg("sm_scale"), nb::arg("seed")
#define UNIQUE_CFG(kv) \
  make_config((kv).page_size, budget, sink, recent, estimator, gqa, offset, alpha, sm_scale, seed)

  m.def(
      "append_kv",
      [](UNIQUE_KV_PARAMS, const InArray& k_new, const InArray& v_new, const InArray& append_indptr,
         uintptr_t stream) {
        PagedKV kv = make_kv(UNIQUE_KV_ARGS);
        TensorView kn = view_of(k_new, "k");
        TensorView vn = view_of(v_new, "v");
        int64_t n = 0;
        const int32_t* ai = int32_data(append_indptr, "append_indptr", kv.device, &n);
        UNIQUE_CHECK_ARG(n == kv.batch + 1, "append_indptr", detail::concat(kv.batch + 1, " entries (batch + 1)"), n);
        nb::gil_scoped_release nogil;
        StreamGuard g(stream);
        append_kv(kv, kn, vn, ai);
      },
      UNIQUE_KV_NB_ARGS, nb::arg("k"), nb::arg("v"), nb::arg("append_indptr"), nb::arg("stream"));

  m.def(
      "score_pages",
      [](UNIQUE_CFG_PARAMS, const InArray& q, UNIQUE_KV_PARAMS, const Array& scores, uintptr_t stream) {
        PagedKV kv = make_kv(UNIQUE_KV_ARGS);
        AttentionConfig cfg = UNIQUE_CFG(kv);
        TensorView qv = view_of(q, "q");
        TensorView sv = f32_view(scores, "scores");
        nb::gil_scoped_release nogil;
        StreamGuard g(stream);
        score_pages(cfg, qv, kv, sv);
      },
      UNIQUE_CFG_NB_ARGS, nb::arg("q"), UNIQUE_KV_NB_ARGS, nb::arg("scores"), nb::arg("stream"));

  m.def(
      "select_pages",
      [](UNIQUE_CFG_PARAMS, const InArray& q, UNIQUE_KV_PARAMS, const Array& sel_pages,
         const Array& sel_counts, uintptr_t stream) {
        PagedKV kv = make_kv(UNIQUE_KV_ARGS);
        AttentionConfig cfg = UNIQUE_CFG(kv);
        TensorView qv = view_of(q, "q");
        Selection sel = make_selection(sel_pages, sel_counts, kv);
        nb::gil_scoped_release nogil;
        StreamGuard g(stream);
        select_pages(cfg, qv, kv, sel);
      },
      UNIQUE_CFG_NB_ARGS, nb::arg("q"), UNIQUE_KV_NB_ARGS, nb::arg("sel_pages"),
      nb::arg("sel_counts"), nb::arg("stream"));

  // Sparse decode = select into (sel_pages, sel_counts), then attend; dense when select is
  // false and no selection is given.
  m.def(
      "paged_decode",
      [](UNIQUE_CFG_PARAMS, const InArray& q, UNIQUE_KV_PARAMS, const Array& sel_pages,
         const Array& sel_counts, bool select, const Array& out, const Array& lse,
         uintptr_t stream) {
        PagedKV kv = make_kv(UNIQUE_KV_ARGS);
        AttentionConfig cfg = UNIQUE_CFG(kv);
        TensorView qv = view_of(q, "q");
        TensorView ov = view_of(out, "out");
        TensorView lv;
        if (lse.is_valid()) lv = f32_view(lse, "lse");
        Selection sel;
        const bool sparse = sel_pages.is_valid();
        if (sparse) sel = make_selection(sel_pages, sel_counts, kv);
        nb::gil_scoped_release nogil;
        StreamGuard g(stream);
        if (select) select_pages(cfg, qv, kv, sel);
        paged_decode(cfg, qv, kv, sparse ? &sel : nullptr, ov, lv);
      },
      UNIQUE_CFG_NB_ARGS, nb::arg("q"), UNIQUE_KV_NB_ARGS, nb::arg("sel_pages").none(),
      nb::arg("sel_counts").none(), nb::arg("select"), nb::arg("out"), nb::arg("lse").none(),
      nb::arg("stream"));

#ifdef UNIQUE_PY_DECODE_PLAN
  m.attr("has_decode_plan") = true;
  nb::class_<DecodePlan>(m, "DecodePlan")
      .def(nb::init<>())
      .def(
          "plan",
          [](DecodePlan& p, int page_size, UNIQUE_CFG_PARAMS, int batch, int num_qo_heads,
             int num_kv_heads, int head_dim, int max_pages_per_seq, const std::string& dtype) {
            AttentionConfig cfg = make_config(page_size, budget, sink, recent, estimator, gqa,
                                              offset, alpha, sm_scale, seed);
            DecodeShape shape;
            shape.batch = batch;
            shape.num_qo_heads = num_qo_heads;
            shape.num_kv_heads = num_kv_heads;
            shape.head_dim = head_dim;
            shape.max_pages_per_seq = max_pages_per_seq;
            // KV dtype of the runs to come, where this DecodeShape has the field.
            auto set_dtype = [](auto& sh, DType d) {
              if constexpr (requires { sh.dtype = d; }) sh.dtype = d;
            };
            set_dtype(shape, parse_dtype(dtype));
            nb::gil_scoped_release nogil;
            p.plan(cfg, shape);
          },
          nb::arg("page_size"), UNIQUE_CFG_NB_ARGS, nb::arg("batch"), nb::arg("num_qo_heads"),
          nb::arg("num_kv_heads"), nb::arg("head_dim"), nb::arg("max_pages_per_seq"), nb::arg("dtype"))
      .def(
          "run",
          [](const DecodePlan& p, const InArray& q, UNIQUE_KV_PARAMS, const Array& out,
             const Array& lse, uintptr_t stream) {
            PagedKV kv = make_kv(UNIQUE_KV_ARGS);
            TensorView qv = view_of(q, "q");
            TensorView ov = view_of(out, "out");
            TensorView lv;
            if (lse.is_valid()) lv = f32_view(lse, "lse");
            nb::gil_scoped_release nogil;
            p.run(qv, kv, ov, lv, reinterpret_cast<void*>(stream));
          },
          nb::arg("q"), UNIQUE_KV_NB_ARGS, nb::arg("out"), nb::arg("lse").none(), nb::arg("stream"))
      .def(
          "selection",
          [](nb::handle self) {
            // Views of the plan's device buffers, kept alive by the plan object.
            const Selection& s = nb::cast<const DecodePlan&>(self).selection();
            int dev = 0;
            cudaGetDevice(&dev);
            using Out = nb::ndarray<int32_t, nb::device::cuda>;
            return nb::make_tuple(
                Out(s.pages, {size_t(s.batch), size_t(s.num_kv_heads), size_t(s.max_selected)}, self,
                    {}, nb::dtype<int32_t>(), nb::device::cuda::value, dev),
                Out(s.counts, {size_t(s.batch), size_t(s.num_kv_heads)}, self, {},
                    nb::dtype<int32_t>(), nb::device::cuda::value, dev));
          },
          "(pages [batch, num_kv_heads, max_selected], counts [batch, num_kv_heads]) int32 device "
          "views of the last run's selection (sparse plans).")
      .def_prop_ro("workspace_bytes", &DecodePlan::workspace_bytes);
#endif

  // Soft-mask attention for sparsity-aware training (include/unique/soft_mask.h). Arrays
  // [B, L, H, D] (strided OK: torch's [B, H, L, D].transpose(1, 2)), lse [B, L, Hq] fp32,
  // tau (optional) [B, Hq, L] fp32 contiguous: written by the forward, read by the backward.
#define UNIQUE_SM_PARAMS \
  int page_size, int budget_tokens, int sink_pages, int recent_pages, float temperature, float alpha, float sm_scale
#define UNIQUE_SM_NB_ARGS                                                                                   \
  nb::arg("page_size"), nb::arg("budget_tokens"), nb::arg("sink_pages"), nb::arg("recent_pages"),         \
      nb::arg("temperature"), nb::arg("alpha"), nb::arg("sm_scale")
  m.def(
      "soft_mask_forward",
      [](const InArray& q, const InArray& k, const InArray& v, const Array& out, const Array& lse,
                         UNIQUE_SM_PARAMS, uintptr_t stream, std::optional<Array> tau) {
        const AttentionConfig cfg =
            soft_mask_config(page_size, budget_tokens, sink_pages, recent_pages, temperature, alpha, sm_scale);
        const TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v");
        const TensorView ov = view_of(out, "out"), lv = f32_view(lse, "lse");
        const TensorView tv = tau ? f32_view(*tau, "tau") : TensorView{};
        nb::gil_scoped_release nogil;
        StreamGuard g(stream);
        soft_mask_attention_forward(cfg, qv, kv, vv, ov, lv, tau ? &tv : nullptr);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"), UNIQUE_SM_NB_ARGS,
      nb::arg("stream"), nb::arg("tau") = nb::none());
  m.def(
      "soft_mask_backward",
      [](const InArray& q, const InArray& k, const InArray& v, const InArray& out,
                         const InArray& lse, const InArray& dout, const Array& dq, const Array& dk, const Array& dv,
                         UNIQUE_SM_PARAMS, uintptr_t stream, std::optional<InArray> tau) {
        const AttentionConfig cfg =
            soft_mask_config(page_size, budget_tokens, sink_pages, recent_pages, temperature, alpha, sm_scale);
        const TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v");
        const TensorView ov = view_of(out, "out"), lv = f32_view(lse, "lse"), gov = view_of(dout, "dout");
        const TensorView gq = view_of(dq, "dq"), gk = view_of(dk, "dk"), gv = view_of(dv, "dv");
        const TensorView tv = tau ? f32_view(*tau, "tau") : TensorView{};
        nb::gil_scoped_release nogil;
        StreamGuard g(stream);
        soft_mask_attention_backward(cfg, qv, kv, vv, ov, lv, gov, gq, gk, gv, tau ? &tv : nullptr);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"), nb::arg("dout"), nb::arg("dq"),
      nb::arg("dk"), nb::arg("dv"), UNIQUE_SM_NB_ARGS, nb::arg("stream"), nb::arg("tau") = nb::none());

  m.def(
      "recompute_page_stats",
      [](UNIQUE_KV_PARAMS) {
        PagedKV kv = make_kv(UNIQUE_KV_ARGS);
        nb::gil_scoped_release nogil;
        recompute_page_stats(kv);
      },
      UNIQUE_KV_NB_ARGS);
}

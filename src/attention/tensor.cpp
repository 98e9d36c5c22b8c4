#include "unique/tensor.h"

#include <sstream>

#include "unique/error.h"

namespace unique {

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t expect = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && stride[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

std::string TensorView::shape_str() const {
  std::ostringstream os;
  os << '[';
  for (int i = 0; i < ndim; ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                     Device device) {
  TensorView t;
  UNIQUE_CHECK_ARG(shape.size() <= TensorView::kMaxDims, "make_view shape",
            detail::concat("at most ", TensorView::kMaxDims, " dims"), shape.size());
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t st = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.stride[d] = st;
    st *= t.shape[d];
  }
  return t;
}

TensorView make_view(const void* data, DType dtype, std::initializer_list<int64_t> shape,
                     Device device) {
  return make_view(const_cast<void*>(data), dtype, shape, device);
}

void expect_shape(const TensorView& t, const char* arg, std::initializer_list<int64_t> shape) {
  expect_compute_dtype(t.dtype, arg);  // fp8 is a page-statistics storage type only
  bool ok = t.ndim == static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) {
    if (ok && s >= 0 && t.shape[i] != s) ok = false;
    ++i;
  }
  if (!ok) {
    std::ostringstream want;
    want << "shape [";
    i = 0;
    for (int64_t s : shape) {
      want << (i++ ? ", " : "");
      if (s < 0) want << '*'; else want << s;
    }
    want << ']';
    throw_arg(arg, want.str(), "shape " + t.shape_str());
  }
}

void expect_dtype(const TensorView& t, const char* arg, DType dtype) {
  UNIQUE_CHECK_ARG(t.dtype == dtype, arg, detail::concat("dtype ", to_string(dtype)),
            detail::concat("dtype ", to_string(t.dtype)));
}

void expect_device(const TensorView& t, const char* arg, Device device) {
  UNIQUE_CHECK_ARG(t.device == device, arg, detail::concat("device ", to_string(device)),
            detail::concat("device ", to_string(t.device)));
}

void expect_contiguous(const TensorView& t, const char* arg) {
  UNIQUE_CHECK_ARG(t.is_contiguous(), arg, "a contiguous tensor", "strided " + t.shape_str());
}

void expect_not_null(const TensorView& t, const char* arg) {
  UNIQUE_CHECK_ARG(t.data != nullptr || t.numel() == 0, arg, "non-null data", "null");
}

}  // namespace unique

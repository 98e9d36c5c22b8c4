#include "unique/dtype.h"

#include "unique/error.h"

namespace unique {

std::size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

const char* to_string(DType t) {
  switch (t) {
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
    default: return "fp32";
  }
}

const char* to_string(Device d) { return d == Device::cuda ? "cuda" : "cpu"; }

DType parse_dtype(std::string_view s) {
  if (s == "fp32" || s == "f32" || s == "float32" || s == "float") return DType::f32;
  if (s == "fp16" || s == "f16" || s == "float16" || s == "half") return DType::f16;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  throw_arg("dtype", "one of fp32, fp16, bf16", std::string(s));
}

}  // namespace unique

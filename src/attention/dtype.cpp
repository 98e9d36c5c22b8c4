#include "unique/dtype.h"

#include "unique/error.h"

namespace unique {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::e4m3: return 1;
    default: return 2;
  }
}

const char* to_string(DType t) {
  switch (t) {
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
    case DType::e4m3: return "fp8";
    default: return "fp32";
  }
}

const char* to_string(Device d) { return d == Device::cuda ? "cuda" : "cpu"; }

namespace {
bool is_fp8_name(std::string_view s) {
  return s == "fp8" || s == "e4m3" || s == "fp8_e4m3" || s == "float8_e4m3fn";
}
}  // namespace

DType parse_dtype(std::string_view s) {
  if (s == "fp32" || s == "f32" || s == "float32" || s == "float") return DType::f32;
  if (s == "fp16" || s == "f16" || s == "float16" || s == "half") return DType::f16;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  if (is_fp8_name(s))
    throw_arg("dtype", "one of fp32, fp16, bf16 (fp8 is a page-statistics dtype only: --stats-dtype)",
              std::string(s));
  throw_arg("dtype", "one of fp32, fp16, bf16", std::string(s));
}

DType parse_stats_dtype(std::string_view s) {
  if (is_fp8_name(s)) return DType::e4m3;
  if (s == "fp32" || s == "f32" || s == "float32" || s == "float") return DType::f32;
  if (s == "fp16" || s == "f16" || s == "float16" || s == "half") return DType::f16;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  throw_arg("stats dtype", "one of fp32, fp16, bf16, fp8", std::string(s));
}

void throw_stats_only_dtype(DType t, const char* arg) {
  throw_arg(arg, "fp32, fp16 or bf16 (fp8 is a page-statistics storage type only)", to_string(t));
}

void expect_compute_dtype(DType t, const char* arg) {
  if (t == DType::e4m3) throw_stats_only_dtype(t, arg);
}

}  // namespace unique

// Non-owning tensor view: pointer + shape + strides (in elements) + dtype + device.
// Every public entry point takes views and validates them with the helpers below.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "unique/dtype.h"

namespace unique {

struct TensorView {
  static constexpr int kMaxDims = 6;
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> stride{};

  int64_t numel() const;
  bool is_contiguous() const;
  std::string shape_str() const;  // "[2, 8, 128]"
  template <class T> T* ptr() const { return static_cast<T*>(data); }
};

// Contiguous (row-major) view over data.
TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                     Device device = Device::cpu);
TensorView make_view(const void* data, DType dtype, std::initializer_list<int64_t> shape,
                     Device device = Device::cpu);

// Validation: each throws unique::Error naming `arg` with expected vs actual.
// A shape entry of -1 matches any extent. expect_shape also refuses dtype fp8 (e4m3 is a
// page-statistics storage type, never a tensor argument's dtype).
void expect_shape(const TensorView& t, const char* arg, std::initializer_list<int64_t> shape);
void expect_dtype(const TensorView& t, const char* arg, DType dtype);
void expect_device(const TensorView& t, const char* arg, Device device);
void expect_contiguous(const TensorView& t, const char* arg);
void expect_not_null(const TensorView& t, const char* arg);

}  // namespace unique

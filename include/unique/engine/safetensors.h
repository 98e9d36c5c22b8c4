// Safetensors files: header parsing (untrusted input: every size and offset is checked
// before use), read-only memory mapping, and the tensor index of a model directory
// (one model.safetensors or shards listed by model.safetensors.index.json).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "unique/dtype.h"

namespace unique::engine {

// One tensor entry of a safetensors header. dtype_name is the file's string ("BF16",
// "F32", "I64", ...); dtype is set when it is F32/F16/BF16 (float_dtype true).
struct TensorEntry {
  std::string name;
  std::string dtype_name;
  bool float_dtype = false;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const;
};

// Parses the header of a safetensors file from its first bytes. `bytes`/`size` may be the
// whole file or a prefix; `file_size` is the size of the whole file. Checks: the 8-byte
// header length fits the file and 100 MB, the header is a JSON object of entries with a
// known dtype, non-negative shape, data_offsets [begin, end] inside the data section with
// end - begin == numel * element size, and no two tensors overlapping.
// Throws unique::Error naming `source` (the file name) and the offending field.
std::vector<TensorEntry> parse_safetensors_header(const uint8_t* bytes, size_t size,
                                                  uint64_t file_size, const std::string& source,
                                                  uint64_t* data_start = nullptr);

// A read-only memory-mapped safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // throws unique::Error naming path
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  const TensorEntry* find(const std::string& name) const;
  const uint8_t* data(const TensorEntry& t) const { return base_ + data_start_ + t.begin; }

 private:
  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<TensorEntry> tensors_;
  std::map<std::string, size_t> by_name_;
};

// All tensors of a model directory: model.safetensors, or the shards named by
// model.safetensors.index.json (shard names must be plain file names in the directory).
class TensorStore {
 public:
  explicit TensorStore(const std::string& dir);
  struct Ref {
    const TensorEntry* entry = nullptr;
    const uint8_t* data = nullptr;
    const SafetensorsFile* file = nullptr;
  };
  // Null entry when absent.
  Ref find(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Ref> index_;
};

// Writes a safetensors file (used by `unique make-tiny-model`). Tensors in the given order;
// data must hold numel * dtype_size bytes.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors);

}  // namespace unique::engine

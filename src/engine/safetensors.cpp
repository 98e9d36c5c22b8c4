#include "unique/engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include "engine/json_util.h"
#include "unique/error.h"

namespace unique::engine {

using nlohmann::json;
using unique::detail::concat;

namespace {
constexpr uint64_t kMaxHeader = 100ull << 20;

// Element size of a safetensors dtype name; 0 when unknown.
size_t st_dtype_size(const std::string& d) {
  static const std::pair<const char*, size_t> table[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
      {"I8", 1},  {"U64", 8}, {"U32", 4}, {"U16", 2},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1},
      {"F8_E5M2", 1}};
  for (auto& [n, s] : table)
    if (d == n) return s;
  return 0;
}
}  // namespace

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::vector<TensorEntry> parse_safetensors_header(const uint8_t* bytes, size_t size,
                                                  uint64_t file_size, const std::string& source,
                                                  uint64_t* data_start) {
  if (size < 8 || file_size < 8)
    throw_arg(source, "a safetensors file (8-byte header length first)",
              concat(file_size, " bytes (truncated)"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxHeader) throw_arg(source + ": header length", concat("<= ", kMaxHeader), n);
  if (n > file_size - 8)
    throw_arg(source + ": header length", concat("<= ", file_size - 8, " (file size - 8; truncated file?)"), n);
  if (n > size - 8) throw_arg(source + ": header length", concat("<= ", size - 8, " bytes available"), n);
  const uint64_t data_size = file_size - 8 - n;
  json h = detail::parse_json(
      std::string_view(reinterpret_cast<const char*>(bytes + 8), static_cast<size_t>(n)),
      source + " (safetensors header)");
  if (!h.is_object()) throw_arg(source + ": header", "a JSON object", h.type_name());
  std::vector<TensorEntry> out;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string where = source + ": tensor '" + it.key() + "'";
    const json& e = it.value();
    if (!e.is_object()) throw_arg(where, "an object", e.type_name());
    TensorEntry t;
    t.name = it.key();
    const json* dt = detail::field(e, "dtype");
    if (!dt || !dt->is_string()) throw_arg(where + " dtype", "a string", dt ? dt->dump() : "missing");
    t.dtype_name = dt->get<std::string>();
    const size_t esz = st_dtype_size(t.dtype_name);
    if (!esz) throw_arg(where + " dtype", "a safetensors dtype (F32, F16, BF16, ...)", t.dtype_name);
    if (t.dtype_name == "F32" || t.dtype_name == "F16" || t.dtype_name == "BF16") {
      t.float_dtype = true;
      t.dtype = t.dtype_name == "F32" ? DType::f32 : t.dtype_name == "F16" ? DType::f16 : DType::bf16;
    }
    const json* sh = detail::field(e, "shape");
    if (!sh || !sh->is_array() || sh->size() > 8)
      throw_arg(where + " shape", "an array of at most 8 sizes", sh ? sh->dump() : "missing");
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned()) throw_arg(where + " shape", "non-negative integers", sh->dump());
      const uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40)) throw_arg(where + " shape", "sizes < 2^40", sh->dump());
      if (v && numel > (1ull << 50) / v) throw_arg(where + " shape", "fewer than 2^50 elements", sh->dump());
      numel *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    const json* off = detail::field(e, "data_offsets");
    if (!off || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      throw_arg(where + " data_offsets", "[begin, end] of non-negative integers", off ? off->dump() : "missing");
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.begin > t.end || t.end > data_size)
      throw_arg(where + " data_offsets",
                concat("0 <= begin <= end <= ", data_size, " (data section size; truncated file?)"),
                off->dump());
    if (t.end - t.begin != numel * esz)
      throw_arg(where + " data_offsets", concat(numel * esz, " bytes (shape x dtype size)"),
                concat(t.end - t.begin, " bytes"));
    out.push_back(std::move(t));
  }
  std::vector<const TensorEntry*> sorted;
  for (auto& t : out)
    if (t.end > t.begin) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i]->begin < sorted[i - 1]->end)
      throw_arg(source + ": tensor '" + sorted[i]->name + "' data_offsets",
                concat("no overlap with tensor '", sorted[i - 1]->name, "'"), "overlapping ranges");
  if (data_start) *data_start = 8 + n;
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(concat("weights file ", path, ": cannot open (missing or unreadable)"));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(concat("weights file ", path, ": not a regular file"));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    throw_arg("weights file " + path, "a safetensors file (at least 8 bytes)", concat(size_, " bytes (truncated)"));
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw RuntimeError(concat("weights file ", path, ": mmap failed"));
  base_ = static_cast<const uint8_t*>(p);
  ::madvise(p, size_, MADV_WILLNEED);  // start reading ahead; the forward touches it all
  try {
    tensors_ = parse_safetensors_header(base_, size_, size_, path, &data_start_);
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(base_), size_);
    throw;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_[tensors_[i].name] = i;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

TensorStore::TensorStore(const std::string& dir) {
  const std::string single = dir + "/model.safetensors";
  const std::string index = dir + "/model.safetensors.index.json";
  std::vector<std::string> shards;
  if (detail::file_exists(index)) {
    json j = detail::parse_json(detail::read_file(index, "index", 64u << 20), index);
    const json* wm = detail::field(j, "weight_map");
    if (!wm || !wm->is_object()) throw_arg(index + ": field weight_map", "an object", wm ? wm->dump() : "missing");
    std::set<std::string> seen;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it->is_string()) throw_arg(index + ": weight_map['" + it.key() + "']", "a file name", it->dump());
      const std::string f = it->get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos || f == "." || f == "..")
        throw_arg(index + ": weight_map['" + it.key() + "']", "a plain file name in the model directory", f);
      if (seen.insert(f).second) shards.push_back(f);
    }
    if (shards.empty()) throw_arg(index + ": field weight_map", "at least one tensor", "none");
    for (const auto& f : shards) files_.push_back(std::make_unique<SafetensorsFile>(dir + "/" + f));
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      const std::string f = it->get<std::string>();
      for (auto& file : files_)
        if (file->path() == dir + "/" + f) {
          const TensorEntry* e = file->find(it.key());
          if (!e)
            throw Error(concat(index, ": tensor '", it.key(), "' is listed in ", f, " but ", file->path(),
                               " does not contain it"));
          index_[it.key()] = Ref{e, file->data(*e), file.get()};
        }
    }
  } else if (detail::file_exists(single)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& e : files_[0]->tensors()) index_[e.name] = Ref{&e, files_[0]->data(e), files_[0].get()};
  } else {
    throw Error(concat("model directory ", dir, ": neither model.safetensors nor model.safetensors.index.json found"));
  }
}

TensorStore::Ref TensorStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? Ref{} : it->second;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> n;
  for (auto& [k, v] : index_) n.push_back(k);
  return n;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  json h = json::object();
  uint64_t off = 0;
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (auto s : t.shape) numel *= static_cast<uint64_t>(s);
    UNIQUE_CHECK_ARG(t.data.size() == numel * dtype_size(t.dtype), "tensor " + t.name + " data size",
                     numel * dtype_size(t.dtype), t.data.size());
    h[t.name] = {{"dtype", t.dtype == DType::f32 ? "F32" : t.dtype == DType::f16 ? "F16" : "BF16"},
                 {"shape", t.shape},
                 {"data_offsets", {off, off + t.data.size()}}};
    off += t.data.size();
  }
  std::string hs = h.dump();
  while ((hs.size() + 8) % 8) hs.push_back(' ');  // data section 8-byte aligned
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error("cannot write " + path);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t(hs.size()) >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(hs.data(), static_cast<std::streamsize>(hs.size()));
  for (const auto& t : tensors) f.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
  if (!f) throw Error("write failed: " + path);
}

}  // namespace unique::engine

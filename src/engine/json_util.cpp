#include "engine/json_util.h"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>

#include "unique/error.h"

namespace unique::engine::detail {

using nlohmann::json;

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  int depth = 0;
  bool in_str = false, esc = false;
  for (char c : text) {
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        throw_arg(source, unique::detail::concat("JSON nesting depth <= ", kMaxJsonDepth), "deeper nesting");
    } else if (c == ']' || c == '}') --depth;
  }
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw Error(unique::detail::concat(source, ": invalid JSON: ", e.what()));
  }
}

std::string read_file(const std::string& path, const std::string& what, size_t max_bytes) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(unique::detail::concat(what, " ", path, ": cannot open (missing or unreadable)"));
  f.seekg(0, std::ios::end);
  const auto n = f.tellg();
  if (n < 0) throw Error(unique::detail::concat(what, " ", path, ": cannot read"));
  if (static_cast<uint64_t>(n) > max_bytes)
    throw_arg(what + " " + path, unique::detail::concat("at most ", max_bytes, " bytes"),
              unique::detail::concat(static_cast<uint64_t>(n), " bytes"));
  std::string s(static_cast<size_t>(n), '\0');
  f.seekg(0);
  f.read(s.data(), n);
  if (!f) throw Error(unique::detail::concat(what, " ", path, ": read failed"));
  return s;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

const nlohmann::json* field(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t get_int_or(const nlohmann::json& obj, const char* key, const std::string& source,
                   int64_t lo, int64_t hi, int64_t dflt) {
  const json* v = field(obj, key);
  if (!v) return dflt;
  const std::string name = source + ": field " + key;
  if (!v->is_number_integer()) throw_arg(name, "an integer", v->dump());
  int64_t x;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) throw_arg(name, unique::detail::concat(lo, "..", hi), u);
    x = static_cast<int64_t>(u);
  } else {
    x = v->get<int64_t>();
  }
  if (x < lo || x > hi) throw_arg(name, unique::detail::concat(lo, "..", hi), x);
  return x;
}

int64_t get_int(const nlohmann::json& obj, const char* key, const std::string& source, int64_t lo,
                int64_t hi) {
  if (!field(obj, key)) throw Error(unique::detail::concat(source, ": field ", key, ": missing"));
  return get_int_or(obj, key, source, lo, hi, 0);
}

double get_num_or(const nlohmann::json& obj, const char* key, const std::string& source, double dflt) {
  const json* v = field(obj, key);
  if (!v) return dflt;
  if (!v->is_number()) throw_arg(source + ": field " + key, "a number", v->dump());
  return v->get<double>();
}

std::string get_str_or(const nlohmann::json& obj, const char* key, const std::string& source,
                       const std::string& dflt) {
  const json* v = field(obj, key);
  if (!v) return dflt;
  if (!v->is_string()) throw_arg(source + ": field " + key, "a string", v->dump());
  return v->get<std::string>();
}

bool get_bool_or(const nlohmann::json& obj, const char* key, const std::string& source, bool dflt) {
  const json* v = field(obj, key);
  if (!v) return dflt;
  if (!v->is_boolean()) throw_arg(source + ": field " + key, "true or false", v->dump());
  return v->get<bool>();
}

}  // namespace unique::engine::detail

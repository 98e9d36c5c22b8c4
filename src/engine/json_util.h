// JSON parsing of untrusted files: nesting depth is bounded before nlohmann's recursive
// parser sees the text, and parse errors become unique::Error naming the file.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace unique::engine::detail {

inline constexpr int kMaxJsonDepth = 64;

nlohmann::json parse_json(std::string_view text, const std::string& source);
std::string read_file(const std::string& path, const std::string& what, size_t max_bytes);
bool file_exists(const std::string& path);

// Typed field access with errors "<source>: field <key>: expected ..., got ...".
const nlohmann::json* field(const nlohmann::json& obj, const char* key);
int64_t get_int(const nlohmann::json& obj, const char* key, const std::string& source,
                int64_t lo, int64_t hi);
int64_t get_int_or(const nlohmann::json& obj, const char* key, const std::string& source,
                   int64_t lo, int64_t hi, int64_t dflt);
double get_num_or(const nlohmann::json& obj, const char* key, const std::string& source, double dflt);
std::string get_str_or(const nlohmann::json& obj, const char* key, const std::string& source,
                       const std::string& dflt);
bool get_bool_or(const nlohmann::json& obj, const char* key, const std::string& source, bool dflt);

}  // namespace unique::engine::detail

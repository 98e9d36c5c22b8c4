// The eval's results file: one JSON object per line (JSONL), appended as rows are
// measured, read back to skip rows already present (resume), and exported as CSV and a
// markdown summary.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace unique::eval {

using Row = nlohmann::json;

// The fields that identify a row (its "key" field is built from them): task, variant,
// model, context, depth, seed, estimator, budget, page_size, dense_layers, sink, recent,
// kv_dtype, layer, head; for a UniSparse prefill also prefill, prefill_top_p,
// prefill_block, pool and, when set, prefill_top_k (a dense prefill, or a row without the
// prefill field, adds nothing: older files keep their keys).
std::string row_key(const Row& r);

// Checks one row against the schema: required fields with their JSON types, task-specific
// metrics, value ranges. Throws unique::Error naming `where` (file:line) and the field.
void validate_row(const Row& r, const std::string& where);
// One line of a results file, parsed and validated (errors name `where`).
Row parse_row(const std::string& line, const std::string& where);

class ResultsFile {
 public:
  // Reads and validates an existing file (missing: empty). Errors name path:line.
  explicit ResultsFile(std::string path);
  bool has(const std::string& key) const { return keys_.count(key) > 0; }
  // Validates, sets r["key"], appends the line and flushes (a killed run keeps its rows).
  void append(Row r);
  const std::vector<Row>& rows() const { return rows_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<Row> rows_;
  std::set<std::string> keys_;
};

// All rows as CSV (a fixed column order, then any extra fields sorted by name).
std::string to_csv(const std::vector<Row>& rows);
// Markdown tables: per task (variant) and page size, mean score (retrieval tasks),
// perplexity (ppl) or mean recall / output error (recall) per estimator x budget, with
// the number of samples averaged.
std::string to_markdown(const std::vector<Row>& rows);

}  // namespace unique::eval

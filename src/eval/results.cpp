#include "unique/eval/results.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <tuple>

#include "unique/error.h"

namespace unique::eval {

using unique::detail::concat;

namespace {

const char* kTasks[] = {"passkey", "needle", "kv", "vartrack", "ppl", "recall"};
const char* kEstimators[] = {"unique", "quest", "mean", "oracle", "random", "dense", "composite"};

std::string num(const Row& r, const char* f) {
  if (!r.contains(f) || r[f].is_null()) return "-";
  return r[f].is_string() ? r[f].get<std::string>() : r[f].dump();
}

bool unisparse_prefill(const Row& r) {
  return r.contains("prefill") && r["prefill"].is_string() && r["prefill"].get<std::string>() == "unisparse";
}

}  // namespace

std::string row_key(const Row& r) {
  std::string k;
  for (const char* f : {"task", "variant", "model", "context", "depth", "seed", "estimator", "budget", "page_size",
                        "dense_layers", "sink", "recent", "kv_dtype", "layer", "head"}) {
    if (!k.empty()) k += '|';
    k += num(r, f);
  }
  // A dense prefill adds nothing: rows written before the prefill field existed (all dense)
  // keep their keys, and a dense row of today resumes them.
  if (unisparse_prefill(r)) {
    for (const char* f : {"prefill", "prefill_top_p", "prefill_block", "pool"}) k += '|' + num(r, f);
    if (r.contains("prefill_top_k")) k += "|top-k " + num(r, "prefill_top_k");
  } else if (num(r, "estimator") == "composite") {  // the composite estimator's block (the same --pool)
    k += '|' + num(r, "pool");
  }
  // Likewise the device: CPU rows (no field) keep their keys; CUDA rows are other results.
  if (r.contains("device") && r["device"] != "cpu") k += '|' + num(r, "device");
  return k;
}

void validate_row(const Row& r, const std::string& where) {
  UNIQUE_CHECK_ARG(r.is_object(), where, "a JSON object", r.type_name());
  auto need = [&](const char* f, bool ok, const char* what) {
    UNIQUE_CHECK_ARG(r.contains(f), where, concat("field \"", f, "\""), "none");
    UNIQUE_CHECK_ARG(ok, concat(where, ": field ", f), what, r[f].dump());
  };
  auto is_int = [&](const char* f) { return r.contains(f) && r[f].is_number_integer(); };
  auto is_num = [&](const char* f) { return r.contains(f) && r[f].is_number(); };
  need("task", r.contains("task") && r["task"].is_string() &&
                   std::find(std::begin(kTasks), std::end(kTasks), r["task"].get<std::string>()) != std::end(kTasks),
       "one of passkey, needle, kv, vartrack, ppl, recall");
  need("estimator", r.contains("estimator") && r["estimator"].is_string() &&
                        std::find(std::begin(kEstimators), std::end(kEstimators),
                                  r["estimator"].get<std::string>()) != std::end(kEstimators),
       "one of unique, quest, mean, oracle, random, dense, composite");
  need("model", r.contains("model") && r["model"].is_string(), "a string");
  need("variant", r.contains("variant") && r["variant"].is_string(), "a string");
  need("context", is_int("context") && r["context"].get<int64_t>() > 0, "an integer > 0");
  need("tokens", is_int("tokens") && r["tokens"].get<int64_t>() > 0, "an integer > 0");
  need("depth", r.contains("depth") && (r["depth"].is_null() || (is_num("depth") && r["depth"].get<double>() >= 0 &&
                                                                 r["depth"].get<double>() <= 100)),
       "null or a number in 0..100 (percent)");
  need("seed", is_int("seed") && r["seed"].get<int64_t>() >= 0, "an integer >= 0");
  need("budget", is_int("budget") && r["budget"].get<int64_t>() >= 0, "an integer >= 0 (0: dense)");
  need("page_size", is_int("page_size") && r["page_size"].get<int64_t>() >= 1, "an integer >= 1");
  need("dense_layers", is_int("dense_layers") && r["dense_layers"].get<int64_t>() >= 0, "an integer >= 0");
  need("sink", is_int("sink") && r["sink"].get<int64_t>() >= 0, "an integer >= 0");
  need("recent", is_int("recent") && r["recent"].get<int64_t>() >= 0, "an integer >= 0");
  need("kv_dtype", r.contains("kv_dtype") && r["kv_dtype"].is_string(), "a string (fp32, bf16, fp16)");
  need("time_s", is_num("time_s") && r["time_s"].get<double>() >= 0, "a number >= 0");
  if (r.contains("device"))  // optional: absent = cpu
    need("device", r["device"].is_string() && (r["device"] == "cpu" || r["device"] == "cuda"), "cpu or cuda");
  // Optional (absent in rows older than it: dense). unisparse carries its settings.
  if (r.contains("prefill")) {
    need("prefill", r["prefill"].is_string() && (r["prefill"] == "dense" || r["prefill"] == "unisparse"),
         "dense or unisparse");
    if (unisparse_prefill(r)) {
      need("prefill_top_p", is_num("prefill_top_p") && r["prefill_top_p"].get<double>() > 0 &&
                                r["prefill_top_p"].get<double>() <= 1,
           "a number in (0, 1]");
      need("prefill_block", is_int("prefill_block") && r["prefill_block"].get<int64_t>() >= 1, "an integer >= 1");
      need("pool", is_int("pool") && r["pool"].get<int64_t>() >= 1, "an integer >= 1");
      if (r.contains("prefill_top_k"))  // optional: absent = the top-p rule
        need("prefill_top_k", is_int("prefill_top_k") && r["prefill_top_k"].get<int64_t>() >= 2, "an integer >= 2");
    }
  }
  if (r["estimator"] == "composite")
    need("pool", is_int("pool") && r["pool"].get<int64_t>() >= 1, "an integer >= 1");
  const std::string task = r["task"];
  if (task == "ppl") {
    need("nll", is_num("nll") && std::isfinite(r["nll"].get<double>()), "a finite number");
    need("ppl", is_num("ppl") && r["ppl"].get<double>() >= 1, "a number >= 1");
    need("scored_tokens", is_int("scored_tokens") && r["scored_tokens"].get<int64_t>() > 0, "an integer > 0");
  } else if (task == "recall") {
    need("layer", is_int("layer") && r["layer"].get<int64_t>() >= 0, "an integer >= 0");
    need("head", is_int("head") && r["head"].get<int64_t>() >= 0, "an integer >= 0");
    need("recall", is_num("recall") && r["recall"].get<double>() >= -1e-9 && r["recall"].get<double>() <= 1 + 1e-9,
         "a number in [0, 1]");
    need("out_err", is_num("out_err") && r["out_err"].get<double>() >= 0, "a number >= 0");
    need("steps", is_int("steps") && r["steps"].get<int64_t>() > 0, "an integer > 0");
  } else {
    need("score", is_num("score") && r["score"].get<double>() >= 0 && r["score"].get<double>() <= 1,
         "a number in [0, 1]");
    need("correct", r.contains("correct") && r["correct"].is_boolean(), "true or false");
    need("expected", r.contains("expected") && r["expected"].is_string(), "a string");
    need("output", r.contains("output") && r["output"].is_string(), "a string");
    need("copyable", r.contains("copyable") && r["copyable"].is_boolean(), "true or false");
  }
  if (r.contains("key"))
    UNIQUE_CHECK_ARG(r["key"].is_string() && r["key"].get<std::string>() == row_key(r), concat(where, ": field key"),
                     row_key(r), r["key"].dump());
}

ResultsFile::ResultsFile(std::string path) : path_(std::move(path)) {
  std::ifstream f(path_);
  if (!f) return;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (line.empty()) continue;
    Row r = parse_row(line, concat(path_, ":", n));
    keys_.insert(row_key(r));
    rows_.push_back(std::move(r));
  }
}

Row parse_row(const std::string& line, const std::string& where) {
  Row r = Row::parse(line, nullptr, false);
  UNIQUE_CHECK_ARG(!r.is_discarded(), where, "one JSON object per line", "invalid JSON");
  validate_row(r, where);
  return r;
}

void ResultsFile::append(Row r) {
  r["key"] = row_key(r);
  validate_row(r, path_ + " (new row)");
  std::ofstream f(path_, std::ios::app);
  if (!f) throw Error(concat("--out ", path_, ": cannot write"));
  f << r.dump(-1, ' ', false, Row::error_handler_t::replace) << "\n";
  f.flush();
  keys_.insert(r["key"].get<std::string>());
  rows_.push_back(std::move(r));
}

namespace {

std::string cell(const Row& r, const std::string& f) {
  if (!r.contains(f) || r[f].is_null()) return "";
  if (r[f].is_string()) {
    std::string s = r[f];
    bool quote = s.find_first_of(",\"\n") != std::string::npos;
    std::string o;
    for (char c : s) {
      if (c == '"') o += "\"\"";
      else o.push_back(c);
    }
    if (!quote) return o;
    o.insert(o.begin(), '"');
    o.push_back('"');
    return o;
  }
  return r[f].dump();
}

}  // namespace

std::string to_csv(const std::vector<Row>& rows) {
  std::vector<std::string> cols = {"task", "variant", "model", "context", "tokens", "depth", "seed", "estimator",
                                   "budget", "page_size", "dense_layers", "score", "correct", "nll", "ppl", "layer",
                                   "head", "recall", "out_err", "expected", "output"};
  std::set<std::string> extra;
  for (auto& r : rows)
    for (auto it = r.begin(); it != r.end(); ++it)
      if (std::find(cols.begin(), cols.end(), it.key()) == cols.end() && it.key() != "key") extra.insert(it.key());
  cols.insert(cols.end(), extra.begin(), extra.end());
  std::string out;
  for (size_t i = 0; i < cols.size(); ++i) {
    if (i) out += ',';
    out += cols[i];
  }
  out += "\n";
  for (auto& r : rows) {
    for (size_t i = 0; i < cols.size(); ++i) {
      if (i) out += ',';
      out += cell(r, cols[i]);
    }
    out += "\n";
  }
  return out;
}

std::string to_markdown(const std::vector<Row>& rows) {
  // (task/variant, page, context) -> estimator -> budget -> (sum, n)
  struct Acc {
    double sum = 0, sum2 = 0;
    int n = 0;
  };
  using Key = std::tuple<std::string, int64_t, int64_t>;
  std::map<Key, std::map<std::string, std::map<int64_t, Acc>>> t;
  std::map<Key, std::set<int64_t>> budgets;
  for (auto& r : rows) {
    std::string task = r["task"];
    const std::string variant = r["variant"];
    if (!variant.empty()) task.append("/").append(variant);
    // Sparse-prefill rows get tables of their own, next to the dense-prefill ones.
    if (unisparse_prefill(r))
      task += r.contains("prefill_top_k") ? ", prefill unisparse top-k " + num(r, "prefill_top_k") + " blocks"
                                          : ", prefill unisparse top-p " + num(r, "prefill_top_p");
    const Key k{task, r["page_size"].get<int64_t>(), r["context"].get<int64_t>()};
    const int64_t b = r["budget"];
    double v = 0, v2 = 0;
    if (r["task"] == "ppl") v = r["nll"];
    else if (r["task"] == "recall") v = r["recall"], v2 = r["out_err"];
    else v = r["score"];
    Acc& a = t[k][r["estimator"]][b];
    a.sum += v;
    a.sum2 += v2;
    a.n += 1;
    budgets[k].insert(b);
  }
  std::ostringstream os;
  os << std::fixed;
  for (auto& [k, ests] : t) {
    const std::string& task = std::get<0>(k);
    // The table's task label may carry a prefill suffix after the task name.
    const bool ppl = task.rfind("ppl", 0) == 0, rec = task.rfind("recall", 0) == 0;
    os << "\n**" << task << "**, context " << std::get<2>(k) << ", page " << std::get<1>(k)
       << (ppl ? " — perplexity (exp of the mean NLL)" : rec ? " — attention-mass recall / relative output error, mean over layers x heads x samples"
                                                                 : " — mean score (1 = exact answer)")
       << "\n\n| estimator |";
    std::vector<int64_t> bs(budgets[k].begin(), budgets[k].end());
    for (int64_t b : bs) os << " " << (b == 0 ? std::string("all") : std::to_string(b)) << " |";
    os << " n |\n|---|";
    for (size_t i = 0; i < bs.size(); ++i) os << "---|";
    os << "---|\n";
    for (const char* e : kEstimators) {
      auto it = ests.find(e);
      if (it == ests.end()) continue;
      os << "| " << e << " |";
      int n = 0;
      for (int64_t b : bs) {
        auto jt = it->second.find(b);
        if (jt == it->second.end()) {
          os << " |";
          continue;
        }
        const Acc& a = jt->second;
        n = std::max(n, a.n);
        if (ppl) os << " " << std::setprecision(2) << std::exp(a.sum / a.n) << " |";
        else if (rec) os << " " << std::setprecision(3) << a.sum / a.n << " / " << a.sum2 / a.n << " |";
        else os << " " << std::setprecision(2) << a.sum / a.n << " |";
      }
      os << " " << n << " |\n";
    }
  }
  return os.str();
}

}  // namespace unique::eval

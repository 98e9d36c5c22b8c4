// `unique eval`: the accuracy harness (src/eval) from the command line.
#include <omp.h>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "unique/error.h"
#include "unique/eval/eval.h"

namespace unique::cli {

namespace {

struct Flags {
  std::string model, tasks = "passkey,needle,kv,vartrack,ppl,recall", estimators = "unique,quest,mean,random,oracle,dense",
              budgets = "256,512,1024,2048,4096,8192", page_sizes = "16,32,64", contexts = "4096", depths = "10,50,90",
              seeds = "0", kv_variants = "multikey,multivalue", out = "eval_results.jsonl", csv, plot, markdown,
              haystack = "kjv", kv_dtype = "auto", python, device = "cpu";
  int sink = 1, recent = 1, dense_layers = 0, vartrack_hops = 3, threads = 0;
  int64_t ppl_prefix = 256;
  bool quiet = false;
  PrefillFlags prefill;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) v.push_back(t);
  return v;
}

template <class T>
std::vector<T> numbers(const std::string& flag, const std::string& s) {
  std::vector<T> v;
  for (const std::string& t : split(s)) {
    try {
      size_t used = 0;
      const long double x = std::stold(t, &used);
      // Range before any cast: a float-to-integer conversion out of range is undefined.
      if (used != t.size() || !std::isfinite(x) || x < static_cast<long double>(std::numeric_limits<T>::lowest()) ||
          x > static_cast<long double>(std::numeric_limits<T>::max()))
        throw std::invalid_argument(t);
      if (std::is_integral_v<T> && (x < 0 || x != std::floor(x))) throw std::invalid_argument(t);
      v.push_back(static_cast<T>(x));
    } catch (const std::exception&) {
      throw_arg(flag, std::is_integral_v<T> ? "comma-separated non-negative integers" : "comma-separated numbers", t);
    }
  }
  return v;
}

std::string python() {
  if (const char* p = std::getenv("PYTHON")) return p;
  struct stat st;
  // Debian's interpreter has Debian's python3-matplotlib; a pyenv shim first on PATH may not.
  if (::stat("/usr/bin/python3", &st) == 0) return "/usr/bin/python3";
  return "python3";
}

std::string quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) {
    if (c == '\'') o += "'\\''";
    else o.push_back(c);
  }
  return o + "'";
}

int run(const Flags& f) {
  if (f.threads > 0) omp_set_num_threads(f.threads);
  eval::EvalOptions o;
  o.model_dir = f.model.empty() ? demo_model_dir("eval") : f.model;
  o.tasks = split(f.tasks);
  o.estimators.clear();
  for (auto& e : split(f.estimators)) o.estimators.push_back(parse_estimator(e));
  o.budgets = numbers<int>("--budgets", f.budgets);
  o.page_sizes = numbers<int>("--page-sizes", f.page_sizes);
  o.contexts = numbers<int64_t>("--contexts", f.contexts);
  o.depths = numbers<double>("--depths", f.depths);
  o.seeds = numbers<uint64_t>("--seeds", f.seeds);
  o.kv_variants = split(f.kv_variants);
  o.haystack = f.haystack;
  o.sink_pages = f.sink;
  o.recent_pages = f.recent;
  o.dense_layers = f.dense_layers;
  o.ppl_prefix = f.ppl_prefix;
  o.vartrack_hops = f.vartrack_hops;
  o.kv_dtype = f.kv_dtype;
  UNIQUE_CHECK_ARG(f.device == "cpu" || f.device == "cuda", "--device", "cpu or cuda", f.device);
  o.device = f.device == "cuda" ? Device::cuda : Device::cpu;
  UNIQUE_CHECK_ARG(f.prefill.mode == "dense" || f.prefill.mode == "unisparse", "--prefill", "dense or unisparse",
                   f.prefill.mode);
  o.prefill = parse_prefill(f.prefill.mode);
  o.prefill_top_p = f.prefill.top_p;
  o.prefill_top_k = f.prefill.top_k;
  o.prefill_block = f.prefill.block;
  o.pool = f.prefill.pool;
  o.validate();
  eval::ResultsFile out(f.out);
  const eval::EvalSummary s = eval::run_eval(o, out, f.quiet ? nullptr : stderr);
  std::printf("eval: %lld rows written, %lld already in %s, %.1f s\n", static_cast<long long>(s.written),
              static_cast<long long>(s.skipped), f.out.c_str(), s.seconds);
  if (!f.csv.empty()) {
    std::ofstream c(f.csv);
    if (!c) throw_arg("--csv", "a writable file", f.csv);
    c << eval::to_csv(out.rows());
    std::printf("eval: wrote %s (%zu rows)\n", f.csv.c_str(), out.rows().size());
  }
  if (!f.markdown.empty()) {
    std::ofstream m(f.markdown, std::ios::app);
    if (!m) throw_arg("--markdown", "a writable file", f.markdown);
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::localtime(&now));
    m << "\n### `unique eval` " << date << ": all " << out.rows().size() << " rows of " << f.out << "\n"
      << eval::to_markdown(out.rows());
    std::printf("eval: appended tables to %s\n", f.markdown.c_str());
  }
  if (!f.plot.empty()) {
    const std::string script = std::string(UNIQUE_SOURCE_DIR) + "/scripts/plot_eval.py";
    const std::string py = f.python.empty() ? python() : f.python;
    const std::string cmd = quote(py) + " " + quote(script) + " " + quote(f.out) + " " + quote(f.plot);
    const int rc = std::system(cmd.c_str());
    if (rc != 0)
      throw_arg("--plot", "scripts/plot_eval.py to succeed (Debian python3-matplotlib: scripts/install-deps)",
                unique::detail::concat("exit status ", rc, " of ", cmd));
  }
  return 0;
}

}  // namespace

Runner add_eval(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  app.add_option("--model", f->model,
                 "Hugging Face model directory. Default: $UNIQUE_MODEL, else the in-house demo model\n"
                 "models/unique-demo (byte-level Llama trained to 8K with passkey retrieval); the hand-set\n"
                 "induction model of make-retrieval-model is another choice");
  app.add_option("--tasks", f->tasks,
                 "Comma-separated: passkey (5-digit pass key in real text), needle (3-word secret code),\n"
                 "kv (RULER multi-key / multi-value), vartrack (variable chains, one hop per question),\n"
                 "ppl (perplexity, every token through sparse decode), recall (per layer/head attention-mass\n"
                 "recall and output error of each selection vs dense)")
      ->capture_default_str();
  app.add_option("--estimators", f->estimators, "Comma-separated: unique, quest, mean, random, oracle, dense, composite (pooled key blocks of "
                 "--pool tokens, CPU only)")
      ->capture_default_str();
  app.add_option("--budgets", f->budgets, "Comma-separated top-k budgets in tokens (each >= the largest page size)")
      ->capture_default_str();
  app.add_option("--page-sizes", f->page_sizes, "Comma-separated KV page sizes: 16, 32, 64")->capture_default_str();
  app.add_option("--contexts", f->contexts, "Comma-separated prompt lengths in tokens")->capture_default_str();
  app.add_option("--depths", f->depths, "Comma-separated needle depths in percent of the haystack (0..100)")
      ->capture_default_str();
  app.add_option("--seeds", f->seeds, "Comma-separated seeds (haystack position, keys, values)")->capture_default_str();
  app.add_option("--out", f->out, "Results file (JSONL); rows already in it are skipped (resume)")
      ->capture_default_str();
  app.add_option("--csv", f->csv, "Also write every row of the results file as CSV");
  app.add_option("--plot", f->plot,
                 "Write PNG plots into this directory (scripts/plot_eval.py, needs python3-matplotlib):\n"
                 "score vs budget per estimator, recall heatmaps layer x head");
  app.add_option("--python", f->python, "Interpreter for --plot (default: $PYTHON, /usr/bin/python3, python3)");
  app.add_option("--markdown", f->markdown, "Append summary tables (estimator x budget) to this markdown file");
  app.add_option("--haystack", f->haystack,
                 "kjv (King James Bible, Debian package bible-kjv-text) or a text file; digits are removed")
      ->capture_default_str();
  app.add_option("--kv-variants", f->kv_variants, "kv task variants: multikey, multivalue")->capture_default_str();
  app.add_option("--vartrack-hops", f->vartrack_hops, "Assignments in the asked variable chain")->capture_default_str();
  app.add_option("--ppl-prefix", f->ppl_prefix, "ppl: tokens prefilled before decode starts scoring")
      ->capture_default_str();
  app.add_option("--sink", f->sink, "First pages always attended")->capture_default_str();
  app.add_option("--recent", f->recent, "Last pages always attended")->capture_default_str();
  app.add_option("--dense-layers", f->dense_layers, "Keep the first N layers dense")->capture_default_str();
  app.add_option("--kv-dtype", f->kv_dtype,
                 "KV cache dtype: auto (fp32 for fp32 weights on the CPU, else bf16) | fp32 | bf16 | fp16")
      ->capture_default_str();
  app.add_option("--device", f->device,
                 "cpu | cuda: the CUDA engine (bf16/fp16 KV; every task but recall) for long contexts")
      ->capture_default_str();
  add_prefill_flags(app, f->prefill);
  app.add_option("--threads", f->threads, "OpenMP threads (0 = default; 1 is fastest for small models on a busy machine)");
  app.add_flag("--quiet", f->quiet, "No progress lines on stderr");
  return [f] { return run(*f); };
}

}  // namespace unique::cli

// `unique make-prompt`: one prompt of the eval's retrieval tasks (src/eval/tasks.cpp) as a
// text file, so `unique generate --prompt-file` (or any other engine) can be checked by hand.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "commands.h"
#include "unique/engine/tokenizer.h"
#include "unique/error.h"
#include "unique/eval/haystack.h"
#include "unique/eval/tasks.h"

namespace unique::cli {

namespace {

struct PromptOptions {
  std::string model, task = "passkey", haystack = "kjv", out;
  int64_t context = 8000;
  double depth = 50;
  uint64_t seed = 0;
};

int run(const PromptOptions& o) {
  UNIQUE_CHECK_ARG(o.context >= 256, "--context", "at least 256 tokens", o.context);
  UNIQUE_CHECK_ARG(o.depth >= 0 && o.depth <= 100, "--depth", "a percentage in 0..100", o.depth);
  const std::string model = o.model.empty() ? demo_model_dir("make-prompt") : o.model;
  const engine::Tokenizer tok = engine::Tokenizer::from_file(model + "/tokenizer.json");
  const eval::Haystack hay(eval::load_haystack_text(o.haystack), tok);
  const eval::SampleSpec spec{o.context, o.depth / 100.0, o.seed};
  eval::Sample s;
  if (o.task == "passkey") s = eval::make_passkey(hay, tok, spec);
  else if (o.task == "needle") s = eval::make_needle(hay, tok, spec);
  else if (o.task == "kv") s = eval::make_kv(hay, tok, spec, false);
  else if (o.task == "vartrack") s = eval::make_vartrack(hay, tok, spec);
  else throw_arg("--task", "passkey, needle, kv or vartrack", o.task);
  // generate adds the tokenizer's special tokens (BOS) itself.
  const std::string text = tok.decode(s.prompt, /*skip_special=*/true);
  if (o.out.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
  } else {
    std::ofstream f(o.out, std::ios::binary);
    UNIQUE_CHECK_ARG(f.good(), "--out", "a writable file", o.out);
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    UNIQUE_CHECK_ARG(f.good(), "--out", "a writable file", o.out);
  }
  std::fprintf(stderr, "make-prompt: %s, %zu tokens, depth %.0f%%, seed %llu%s%s; expected answer: %s\n", o.task.c_str(),
               s.prompt.size(), o.depth, static_cast<unsigned long long>(o.seed), o.out.empty() ? "" : " -> ",
               o.out.c_str(), s.hops.empty() ? "" : s.hops[0].expected.c_str());
  return 0;
}

}  // namespace

Runner add_make_prompt(CLI::App& app) {
  auto o = std::make_shared<PromptOptions>();
  app.add_option("--model", o->model, "Model directory whose tokenizer.json counts the tokens (default: the demo model)");
  app.add_option("--task", o->task, "passkey | needle | kv (multi-key) | vartrack")->capture_default_str();
  app.add_option("--context", o->context, "Prompt length in tokens")->capture_default_str();
  app.add_option("--depth", o->depth, "Needle depth in percent of the haystack")->capture_default_str();
  app.add_option("--seed", o->seed, "Haystack position, keys and values")->capture_default_str();
  app.add_option("--haystack", o->haystack, "kjv (Debian package bible-kjv-text) or a text file")->capture_default_str();
  app.add_option("--out", o->out, "Output file (default: stdout); the expected answer goes to stderr");
  return [o] { return run(*o); };
}

}  // namespace unique::cli

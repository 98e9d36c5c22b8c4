// `unique make-tiny-model` and `unique tokenize`.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "commands.h"
#include "unique/engine/retrieval_model.h"
#include "unique/engine/tiny_model.h"
#include "unique/engine/tokenizer.h"
#include "unique/error.h"

namespace unique::cli {

Runner add_make_tiny_model(CLI::App& app) {
  auto o = std::make_shared<engine::TinyModelOptions>();
  auto out = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("bf16");
  auto untied = std::make_shared<bool>(false);
  app.add_option("--out", *out, "Output directory")->required();
  app.add_option("--arch", o->arch, "llama | mistral | qwen2 | qwen3")->capture_default_str();
  app.add_option("--hidden", o->hidden, "Hidden size")->capture_default_str();
  app.add_option("--layers", o->layers, "Layers")->capture_default_str();
  app.add_option("--heads", o->heads, "Query heads")->capture_default_str();
  app.add_option("--kv-heads", o->kv_heads, "KV heads")->capture_default_str();
  app.add_option("--head-dim", o->head_dim, "Head dimension (multiple of 16)")->capture_default_str();
  app.add_option("--intermediate", o->intermediate, "MLP size")->capture_default_str();
  app.add_option("--merges", o->merges, "BPE merges learned for the tokenizer")->capture_default_str();
  app.add_option("--dtype", *dtype, "fp32 | fp16 | bf16")->capture_default_str();
  app.add_option("--seed", o->seed, "Weights seed")->capture_default_str();
  app.add_flag("--tied", *untied, "Tie lm_head to the embeddings (default: separate lm_head)");
  return [o, out, dtype, untied] {
    o->dtype = parse_dtype(*dtype);
    o->tie_embeddings = *untied;
    const int64_t bytes = engine::write_tiny_model(*out, *o);
    std::printf("wrote %s: %s, hidden %d, %d layers, heads %d/%d, head dim %d, %s, %.1f MB (random weights)\n",
                out->c_str(), o->arch.c_str(), o->hidden, o->layers, o->heads, o->kv_heads, o->head_dim,
                dtype->c_str(), bytes / 1e6);
    return 0;
  };
}

Runner add_make_retrieval_model(CLI::App& app) {
  auto o = std::make_shared<engine::RetrievalModelOptions>();
  auto out = std::make_shared<std::string>();
  app.add_option("--out", *out, "Output directory")->required();
  app.add_option("--code-dim", o->code_dim, "Token code dimension d (hidden = 5d + 1 rounded up to 64)")
      ->capture_default_str();
  app.add_option("--head-dim", o->head_dim, "Head dimension (>= 3 x code dim)")->capture_default_str();
  app.add_option("--rope-theta", o->rope_theta, "RoPE base")->capture_default_str();
  app.add_option("--max-position", o->max_position, "Context the construction is checked for")->capture_default_str();
  app.add_option("--merges", o->merges, "BPE merges learned from the built-in text")->capture_default_str();
  app.add_option("--position-logit", o->position_logit, "Layer 0: logit of the wanted offset")->capture_default_str();
  app.add_option("--match-logit", o->match_logit, "Layer 1: logit per matching n-gram token")->capture_default_str();
  app.add_option("--output-logit", o->output_logit, "LM head: logit of a copied token")->capture_default_str();
  app.add_option("--seed", o->seed, "Token codes seed")->capture_default_str();
  return [o, out] {
    const engine::RetrievalModelInfo i = engine::write_retrieval_model(*out, *o);
    std::printf("wrote %s: llama, hidden %d, 2 layers, heads 4/4, head dim %d, vocab %d, fp32, %.1f MB "
                "(hand-set induction weights; positional gap %.3f of the peak up to %lld tokens, content drift %.4f rad)\n",
                out->c_str(), i.hidden, o->head_dim, i.vocab, i.bytes / 1e6, i.min_position_gap,
                static_cast<long long>(o->max_position), i.max_content_drift);
    return 0;
  };
}

Runner add_tokenize(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  auto ids = std::make_shared<std::string>();
  auto no_special = std::make_shared<bool>(false);
  app.add_option("--model", *model, "Model directory (or a tokenizer.json file)")->required();
  auto file = std::make_shared<std::string>();
  app.add_option("--text", *text, "Text to encode");
  app.add_option("--file", *file, "File whose content to encode");
  CLI::Option* dec = app.add_option("--decode", *ids, "Comma-separated ids to decode instead (may be empty)");
  app.add_flag("--no-special", *no_special, "Do not add special tokens (BOS)");
  return [=] {
    const std::string path = model->size() > 5 && model->substr(model->size() - 5) == ".json" ? *model : *model + "/tokenizer.json";
    const engine::Tokenizer tok = engine::Tokenizer::from_file(path);
    if (dec->count() > 0) {
      std::vector<int> v;
      std::stringstream ss(*ids);
      for (std::string t; std::getline(ss, t, ',');) {
        if (t.empty()) continue;
        char* end = nullptr;
        const long id = std::strtol(t.c_str(), &end, 10);
        if (*end || id < 0 || id >= tok.vocab_size())
          throw_arg("--decode", "comma-separated ids in 0.." + std::to_string(tok.vocab_size() - 1), t);
        v.push_back(static_cast<int>(id));
      }
      std::printf("%s\n", nlohmann::json(tok.decode(v)).dump().c_str());
      return 0;
    }
    std::string input = *text;
    if (!file->empty()) {
      std::ifstream f(*file, std::ios::binary);
      if (!f) throw Error("--file " + *file + ": cannot open");
      input.assign(std::istreambuf_iterator<char>(f), {});
    }
    std::printf("%s\n", nlohmann::json(tok.encode(input, !*no_special)).dump().c_str());
    return 0;
  };
}

}  // namespace unique::cli

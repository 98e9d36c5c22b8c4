// A small random Llama-family model in Hugging Face layout (config.json,
// generation_config.json, model.safetensors, tokenizer.json), written without any
// download: the tokenizer is a byte-level BPE (Llama 3 pre-tokenizer) trained here on a
// built-in English text. The weights are random, so its text is gibberish: it exercises
// the whole pipeline (`unique make-tiny-model`, README main job), not quality.
#pragma once
#include <cstdint>
#include <string>

#include "unique/dtype.h"

namespace unique::engine {

struct TinyModelOptions {
  std::string arch = "llama";  // llama | mistral | qwen2 | qwen3
  int hidden = 256;
  int layers = 4;
  int heads = 8;
  int kv_heads = 2;
  int head_dim = 32;
  int intermediate = 768;
  int merges = 768;            // BPE merges learned from the built-in text
  DType dtype = DType::bf16;
  uint64_t seed = 0;
  bool tie_embeddings = false;
  int64_t max_position = 32768;
};

// Writes the model into dir (created if missing). Returns the number of bytes written.
int64_t write_tiny_model(const std::string& dir, const TinyModelOptions& opt);

// tokenizer.json text of a byte-level BPE with `merges` merges learned from `corpus`,
// special tokens <|begin_of_text|> (BOS, added by the post-processor) and <|end_of_text|>.
std::string make_byte_level_tokenizer_json(const std::string& corpus, int merges);
// The built-in training text.
const std::string& tiny_corpus();

// The files of a Hugging Face model directory next to its model.safetensors:
// config.json, generation_config.json, tokenizer.json, tokenizer_config.json (BOS/EOS as
// the byte-level tokenizer above names them). Returns the directory's bytes, weights
// included. Throws unique::Error naming a file it cannot write.
int64_t write_model_dir_files(const std::string& dir, const std::string& config_json, const std::string& tokenizer_json,
                              int bos, int eos, int64_t max_position);

}  // namespace unique::engine

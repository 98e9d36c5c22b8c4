// libFuzzer: encode arbitrary bytes with a fixed byte-level BPE tokenizer (each of the
// three pre-tokenizer regexes); decoding must give the input back exactly, and the regex
// split must cover the input without gaps; NFC must be idempotent.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "unique/engine/tiny_model.h"
#include "unique/engine/tokenizer.h"

using unique::engine::Tokenizer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer tok = Tokenizer::from_json(
      unique::engine::make_byte_level_tokenizer_json(unique::engine::tiny_corpus(), 300), "tiny");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto r : {Tokenizer::Regex::gpt2, Tokenizer::Regex::llama3, Tokenizer::Regex::qwen2}) {
    std::string joined;
    for (auto piece : Tokenizer::split_regex(text, r)) {
      if (piece.empty()) std::abort();
      joined.append(piece);
    }
    if (joined != text) std::abort();
  }
  const std::string n = Tokenizer::nfc(text);
  if (Tokenizer::nfc(n) != n) std::abort();  // NFC is idempotent
  if (tok.decode(tok.encode(text, false)) != text) {
    // Added-token text inside the input legitimately maps to the special token.
    if (text.find("<|") == std::string_view::npos) std::abort();
  }
  return 0;
}

// libFuzzer: tokenizer.json loader; a tokenizer that loads must encode and decode text.
#include <cstdint>
#include <string>

#include "unique/engine/tokenizer.h"
#include "unique/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto t = unique::engine::Tokenizer::from_json(std::string_view(reinterpret_cast<const char*>(data), size), "tokenizer.json");
    for (const char* s : {"Hello world!  123 I'm\n\n x", "h\xC3\xA9llo \xE4\xBD\xA0\xE5\xA5\xBD", "\xFF\xFE", ""}) {
      try {
        auto ids = t.encode(s);
        (void)t.decode(ids);
      } catch (const unique::Error&) {  // e.g. a character neither in the vocabulary nor unk
      }
    }
  } catch (const unique::Error&) {
  }
  return 0;
}

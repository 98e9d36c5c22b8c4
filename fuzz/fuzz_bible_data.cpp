// libFuzzer: the bible-kjv-text data file decoder (header, window table, LZW codes).
#include <cstdint>
#include <vector>

#include "unique/error.h"
#include "unique/eval/haystack.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)unique::eval::decode_bible_data(std::vector<uint8_t>(data, data + size), "bible.data");
  } catch (const unique::Error&) {
  }
  return 0;
}

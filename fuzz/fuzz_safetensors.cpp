// libFuzzer: safetensors header parser on arbitrary bytes (the whole input is the file).
#include <cstdint>

#include "unique/engine/safetensors.h"
#include "unique/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto ts = unique::engine::parse_safetensors_header(data, size, size, "fuzz.safetensors");
    for (const auto& t : ts) (void)t.numel();
  } catch (const unique::Error&) {
  }
  return 0;
}

// libFuzzer: config.json parser (and the RoPE frequencies it feeds).
#include <cstdint>
#include <string>

#include "unique/engine/model_config.h"
#include "unique/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto c = unique::engine::parse_model_config(std::string(reinterpret_cast<const char*>(data), size), "config.json");
    (void)unique::engine::rope_inv_freq(c);
  } catch (const unique::Error&) {
  }
  return 0;
}

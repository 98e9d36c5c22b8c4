// libFuzzer: a line of the eval's results file (JSON, schema, row key, CSV/markdown export).
#include <cstdint>
#include <string>

#include "unique/error.h"
#include "unique/eval/results.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const unique::eval::Row r =
        unique::eval::parse_row(std::string(reinterpret_cast<const char*>(data), size), "results.jsonl:1");
    (void)unique::eval::row_key(r);
    (void)unique::eval::to_csv({r});
    (void)unique::eval::to_markdown({r});
  } catch (const unique::Error&) {
  }
  return 0;
}

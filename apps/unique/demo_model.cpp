// The in-house demo model (models/unique-demo): the default --model of the commands that
// read a model directory.
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "commands.h"
#include "unique/error.h"

namespace unique::cli {

namespace {
bool has_model(const std::string& dir) {
  struct stat st;
  return ::stat((dir + "/config.json").c_str(), &st) == 0;
}
}  // namespace

std::string demo_model_dir(const char* command) {
  if (const char* env = std::getenv("UNIQUE_MODEL"); env && *env) return env;
  // The source tree this binary was built from, then the working directory (a binary
  // carried to another machine runs there from a copy of the repository).
  for (const std::string& dir : {std::string(UNIQUE_SOURCE_DIR) + "/models/unique-demo", std::string("models/unique-demo")})
    if (has_model(dir)) {
      std::fprintf(stderr, "%s: no --model: using the in-house demo model %s\n", command, dir.c_str());
      return dir;
    }
  throw_arg("--model", "a model directory (no --model: $UNIQUE_MODEL or the demo model models/unique-demo of the "
                       "source tree " UNIQUE_SOURCE_DIR ")",
            "none found");
}

}  // namespace unique::cli

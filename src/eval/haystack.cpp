#include "unique/eval/haystack.h"

#include <sys/stat.h>

#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>

#include "unique/error.h"

namespace unique::eval {

using unique::detail::concat;

std::string clean_text(const std::string& raw) {
  std::string out;
  out.reserve(raw.size());
  size_t i = 0;
  bool space = true;  // drop leading whitespace; collapse runs
  while (i < raw.size()) {
    const size_t eol = std::min(raw.find('\n', i), raw.size());
    size_t b = i;
    // A verse reference ("Ge1:1", "1Co13:4") opens the line: a first word of letters and
    // digits around one colon.
    const size_t sp = raw.find(' ', b);
    if (sp != std::string::npos && sp < eol) {
      const std::string w = raw.substr(b, sp - b);
      const size_t colon = w.find(':');
      bool ref = colon != std::string::npos && colon + 1 < w.size() && colon > 0;
      for (char c : w) ref = ref && (std::isalnum(static_cast<unsigned char>(c)) || c == ':');
      if (ref && std::isdigit(static_cast<unsigned char>(w[colon - 1])) &&
          std::isdigit(static_cast<unsigned char>(w[colon + 1])))
        b = sp + 1;
    }
    for (size_t k = b; k < eol; ++k) {
      const unsigned char c = static_cast<unsigned char>(raw[k]);
      if (std::isdigit(c)) continue;
      if (std::isspace(c)) {
        if (!space) out.push_back(' ');
        space = true;
      } else {
        out.push_back(static_cast<char>(c));
        space = false;
      }
    }
    if (!space) out.push_back(' ');
    space = true;
    i = eol + 1;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string load_haystack_text(const std::string& spec) {
  const std::string path = spec == "kjv" ? std::string(kKjvPath) : spec;
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    if (spec == "kjv")
      throw_arg("--haystack", concat("the King James Bible of Debian package bible-kjv-text at ", kKjvPath,
                                     " (scripts/install-deps installs it) or a text file"),
                concat("kjv: ", kKjvPath, ": cannot open"));
    throw_arg("--haystack", "kjv or a readable text file", concat(path, ": cannot open"));
  }
  char magic[4] = {};
  f.read(magic, 4);
  f.close();
  std::string raw;
  if (std::string(magic, 4) == "EC02") {
    raw = read_bible_data(path);
  } else {
    std::ifstream g(path, std::ios::binary);
    raw.assign(std::istreambuf_iterator<char>(g), {});
  }
  std::string text = clean_text(raw);
  UNIQUE_CHECK_ARG(text.size() >= 1000, "--haystack", "a text of >= 1000 characters after cleaning",
                   concat(path, ": ", text.size()));
  return text;
}

std::vector<int> Haystack::tokens(int64_t n, uint64_t seed) const {
  UNIQUE_CHECK_ARG(n >= 0, "haystack tokens", ">= 0", n);
  if (n == 0) return {};
  // splitmix64 of the seed picks the start; the text wraps around when too short.
  uint64_t z = seed + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  size_t start = static_cast<size_t>(z % text_.size());
  const size_t dot = text_.find(". ", start);
  start = dot == std::string::npos ? 0 : dot + 2;
  size_t chars = static_cast<size_t>(n) * 6 + 64;
  for (;;) {
    std::string chunk;
    size_t at = start;
    while (chunk.size() < chars) {
      const size_t take = std::min(chars - chunk.size(), text_.size() - at);
      chunk.append(text_, at, take);
      at = 0;
      if (chunk.size() < chars) chunk.push_back(' ');
    }
    std::vector<int> t = tok_.encode(chunk, false);
    if (static_cast<int64_t>(t.size()) > n) {
      t.resize(static_cast<size_t>(n));
      return t;
    }
    chars *= 2;
  }
}

size_t Haystack::sentence_boundary(const std::vector<int>& toks, double frac) const {
  const double want = frac * static_cast<double>(toks.size());
  size_t best = frac < 0.5 ? 0 : toks.size();
  double best_d = std::abs(static_cast<double>(best) - want);
  for (size_t i = 1; i < toks.size(); ++i) {
    const std::string b = tok_.token_bytes(toks[i - 1]);
    if (b.empty() || b.back() != '.') continue;
    const double dd = std::abs(static_cast<double>(i) - want);
    if (dd < best_d) best = i, best_d = dd;
  }
  return best;
}

}  // namespace unique::eval

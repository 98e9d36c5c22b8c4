// Long real text for the eval's haystacks: the King James Bible of Debian's
// bible-kjv-text package (/usr/lib/bible.data, LZW-compressed windows) or any text file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "unique/engine/tokenizer.h"

namespace unique::eval {

// Default location of the bible-kjv-text data file.
inline constexpr const char* kKjvPath = "/usr/lib/bible.data";

// Decodes a bible-kjv-text data file ("EC02" header: 80-byte description, big-endian
// window size and count, window offsets; each window compress(1)-style LZW, 9..16-bit
// codes). Untrusted input: sizes, offsets and every code are checked; errors name `path`.
std::string read_bible_data(const std::string& path);
// The same for the file's bytes; `path` names them in errors.
std::string decode_bible_data(const std::vector<uint8_t>& bytes, const std::string& path);

// The haystack text of a --haystack value: "kjv" (kKjvPath), a bible.data file, or a
// plain text file. Cleaned for the tasks: verse references and every digit removed (the
// needles' numbers must be the only digits), whitespace runs collapsed to one space.
// Throws unique::Error naming --haystack with what was expected.
std::string load_haystack_text(const std::string& spec);

// Removes digits and verse references ("Ge1:1 "), collapses whitespace.
std::string clean_text(const std::string& raw);

// Tokens of the haystack, taken from a seeded position at a sentence start.
class Haystack {
 public:
  Haystack(std::string text, const engine::Tokenizer& tok) : text_(std::move(text)), tok_(tok) {}
  // n tokens of continuous text starting at a sentence start chosen by seed.
  std::vector<int> tokens(int64_t n, uint64_t seed) const;
  // Index in [0, toks.size()] nearest to frac * size where a sentence ends (a token
  // ending in '.'); 0 and size are always allowed.
  size_t sentence_boundary(const std::vector<int>& toks, double frac) const;
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  const engine::Tokenizer& tok_;
};

}  // namespace unique::eval

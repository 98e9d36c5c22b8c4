// The eval's retrieval tasks: prompts built from haystack tokens and planted needles, and
// the scoring of a model's greedy answers.
//   passkey   LongLoRA-style pass key (5 digits) at a depth of real text
//   needle    a sentence with a 3-word secret code at a depth
//   kv        RULER-style multi-key (4 keys, one asked) or multi-value (one key, 4 values)
//   vartrack  RULER-style variable tracking: a chain VAR A = number, VAR B = A, VAR C = B
//             (plus a distractor chain), resolved one hop per question
// Keys and values are redrawn (up to 64 times) until every answer token follows a
// 3-token context that occurs nowhere else in the prompt with another continuation, so
// an n-gram copier (the retrieval model) can answer; real models are unaffected.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "unique/engine/tokenizer.h"
#include "unique/eval/haystack.h"

namespace unique::eval {

enum class AnswerKind : uint8_t { number, words, all_numbers };

struct Hop {
  std::vector<int> query;    // tokens decoded before this hop's answer (empty for hop 0: in the prompt)
  std::string expected;      // answer text (all_numbers: values separated by spaces)
  AnswerKind kind = AnswerKind::number;
  int max_new_tokens = 8;
};

struct Sample {
  std::string task, variant;
  std::vector<int> prompt;   // BOS + instructions + haystack with needles + first question
  std::vector<Hop> hops;
  bool copyable = true;      // see above
};

struct SampleSpec {
  int64_t context = 4096;    // prompt tokens
  double depth = 0.5;        // fraction of the haystack before the needle (ignored by vartrack)
  uint64_t seed = 0;
};

Sample make_passkey(const Haystack& hay, const engine::Tokenizer& tok, const SampleSpec& s);
Sample make_needle(const Haystack& hay, const engine::Tokenizer& tok, const SampleSpec& s);
Sample make_kv(const Haystack& hay, const engine::Tokenizer& tok, const SampleSpec& s, bool multivalue);
Sample make_vartrack(const Haystack& hay, const engine::Tokenizer& tok, const SampleSpec& s, int hops = 3);

// Score in [0, 1] of one hop's generated text: number: 1 if the first run of digits equals
// the expected number; words: 1 if the first words (letters only, case-insensitive) equal
// the expected ones; all_numbers: fraction of the expected numbers among the digit runs.
double score_hop(const Hop& hop, const std::string& output);

}  // namespace unique::eval

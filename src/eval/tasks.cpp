#include "unique/eval/tasks.h"

#include <algorithm>
#include <cctype>
#include <random>
#include <unordered_map>

#include "unique/error.h"

namespace unique::eval {

using unique::detail::concat;

namespace {

// Words unlikely in the haystacks, so that "the {adj} {noun} is" is new to the text.
const std::vector<std::string> kAdj = {"purple", "silent", "frozen", "electric", "velvet", "crimson", "hollow", "amber",
                                       "rusty", "golden", "misty", "copper", "sleepy", "brave", "lucky", "wooden",
                                       "fuzzy", "gentle", "hidden", "orange", "silver", "windy", "cosmic", "rapid"};
const std::vector<std::string> kNoun = {"lantern", "violin", "glacier", "pepper", "compass", "kettle", "penguin",
                                        "rocket", "teapot", "volcano", "walnut", "zeppelin", "pelican", "marble",
                                        "trumpet", "cactus", "harbor", "falcon", "pumpkin", "ladder", "meadow",
                                        "tractor", "biscuit", "dolphin"};

// Seeded by task, context, depth, seed and attempt; std::hash of libstdc++ is stable,
// another standard library draws other (equally valid) samples.
struct Rng {
  std::mt19937_64 g;
  Rng(const std::string& task, const SampleSpec& s, int attempt)
      : g(std::hash<std::string>{}(concat(task, '|', s.context, '|', s.depth, '|', s.seed, '|', attempt))) {}
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g); }
  const std::string& pick(const std::vector<std::string>& v) { return v[size_t(uniform(0, int(v.size()) - 1))]; }
  std::string digits(int n) {
    std::string s(1, char('1' + uniform(0, 8)));
    while (static_cast<int>(s.size()) < n) s.push_back(char('0' + uniform(0, 9)));
    return s;
  }
  std::string upper(int n) {
    std::string s;
    while (static_cast<int>(s.size()) < n) s.push_back(char('A' + uniform(0, 25)));
    return s;
  }
};

// Prompt under construction: pieces of tokens, some marked as answers.
struct Builder {
  const engine::Tokenizer& tok;
  std::vector<std::vector<int>> pieces;
  std::vector<char> is_answer;
  int add(const std::string& text, bool answer = false) {
    pieces.push_back(tok.encode(text, false));
    is_answer.push_back(answer);
    return static_cast<int>(pieces.size()) - 1;
  }
  int64_t size() const {
    int64_t n = 0;
    for (auto& p : pieces) n += static_cast<int64_t>(p.size());
    return n;
  }
};

// Every answer token's 3-token context continues with that token only, anywhere.
bool copy_path_unique(const std::vector<int>& p, const std::vector<std::pair<size_t, size_t>>& spans) {
  auto key = [&](size_t i) {
    return (uint64_t(uint32_t(p[i - 3])) << 42) ^ (uint64_t(uint32_t(p[i - 2])) << 21) ^ uint64_t(uint32_t(p[i - 1]));
  };
  std::unordered_map<uint64_t, int> next;
  next.reserve(p.size());
  for (size_t i = 3; i < p.size(); ++i) {
    auto [it, fresh] = next.emplace(key(i), p[i]);
    if (!fresh && it->second != p[i]) it->second = -1;
  }
  for (auto [a, b] : spans)
    for (size_t i = std::max<size_t>(a, 3); i < b; ++i)
      if (next[key(i)] != p[i]) return false;
  return true;
}

// Lays out BOS + intro + haystack (with the needles at the given fractions, in order) +
// question, the haystack filling the context exactly. needle_pieces[i] are piece indices
// of needle i inside b (contiguous), question_from the first question piece.
Sample assemble(const std::string& task, const Haystack& hay, const engine::Tokenizer& tok, const SampleSpec& s,
                Builder& b, int intro, const std::vector<std::pair<int, int>>& needles, std::vector<double> fracs,
                int question_from) {
  const int64_t fixed = b.size() + static_cast<int64_t>(tok.prefix_ids().size());
  UNIQUE_CHECK_ARG(s.context > fixed + 16, "--contexts", concat(">= ", fixed + 17, " tokens for task ", task),
                   s.context);
  const std::vector<int> h = hay.tokens(s.context - fixed, s.seed);
  std::vector<size_t> at;
  for (double f : fracs) at.push_back(hay.sentence_boundary(h, f));
  Sample out;
  out.task = task;
  std::vector<int>& p = out.prompt;
  p = tok.prefix_ids();
  auto put = [&](int piece) { p.insert(p.end(), b.pieces[piece].begin(), b.pieces[piece].end()); };
  std::vector<std::pair<size_t, size_t>> spans;
  put(intro);
  size_t hpos = 0;
  for (size_t n = 0; n < needles.size(); ++n) {
    p.insert(p.end(), h.begin() + long(hpos), h.begin() + long(at[n]));
    hpos = at[n];
    for (int k = needles[n].first; k < needles[n].second; ++k) {
      const size_t a = p.size();
      put(k);
      if (b.is_answer[size_t(k)]) spans.push_back({a, p.size()});
    }
  }
  p.insert(p.end(), h.begin() + long(hpos), h.end());
  for (int k = question_from; k < static_cast<int>(b.pieces.size()); ++k) put(k);
  out.copyable = copy_path_unique(p, spans);
  return out;
}

int answer_budget(const engine::Tokenizer& tok, const std::string& text) {
  return static_cast<int>(tok.encode(" " + text, false).size()) + 2;
}

template <class F>
Sample first_copyable(F make) {
  Sample s;
  for (int attempt = 0; attempt < 64; ++attempt) {
    s = make(attempt);
    if (s.copyable) break;
  }
  return s;
}

}  // namespace

Sample make_passkey(const Haystack& hay, const engine::Tokenizer& tok, const SampleSpec& s) {
  return first_copyable([&](int attempt) {
    Rng r("passkey", s, attempt);
    const std::string key = r.digits(5);
    Builder b{tok, {}, {}};
    const int intro = b.add(
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.");
    const int n0 = b.add(" The pass key is");
    b.add(" " + key, true);
    b.add(". Remember it. " + key + " is the pass key.");
    const int q = b.add(" What is the pass key? The pass key is");
    Sample out = assemble("passkey", hay, tok, s, b, intro, {{n0, q}}, {s.depth}, q);
    out.hops.push_back({{}, key, AnswerKind::number, answer_budget(tok, key)});
    return out;
  });
}

Sample make_needle(const Haystack& hay, const engine::Tokenizer& tok, const SampleSpec& s) {
  return first_copyable([&](int attempt) {
    Rng r("needle", s, attempt);
    const std::string thing = r.pick(kAdj) + " " + r.pick(kNoun);
    std::string code = r.pick(kNoun);
    while (code.find(' ') == std::string::npos || std::count(code.begin(), code.end(), ' ') < 2) {
      const std::string w = r.pick(kNoun);
      if (code.find(w) == std::string::npos) code += " " + w;
    }
    Builder b{tok, {}, {}};
    const int intro = b.add(
        "A secret code is hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the secret code there.");
    const int n0 = b.add(" The secret code of the " + thing + " is");
    b.add(" " + code, true);
    b.add(".");
    const int q = b.add(" What is the secret code of the " + thing + "? The secret code of the " + thing + " is");
    Sample out = assemble("needle", hay, tok, s, b, intro, {{n0, q}}, {s.depth}, q);
    out.hops.push_back({{}, code, AnswerKind::words, answer_budget(tok, code)});
    return out;
  });
}

Sample make_kv(const Haystack& hay, const engine::Tokenizer& tok, const SampleSpec& s, bool multivalue) {
  return first_copyable([&](int attempt) {
    Rng r(multivalue ? "kv-multivalue" : "kv-multikey", s, attempt);
    const int n = 4;
    std::vector<std::string> keys, values;
    while (static_cast<int>(keys.size()) < (multivalue ? 1 : n)) {
      const std::string k = r.pick(kAdj) + "-" + r.pick(kNoun);
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    }
    while (static_cast<int>(values.size()) < n) values.push_back(r.digits(7));
    Builder b{tok, {}, {}};
    const int intro = b.add(
        "Some special magic numbers are hidden within the following text. Make sure to memorize them. "
        "I will quiz you about the numbers afterwards.");
    std::vector<std::pair<int, int>> needles;
    std::vector<double> fracs;
    for (int i = 0; i < n; ++i) {
      const std::string& key = keys[multivalue ? 0 : size_t(i)];
      const int a = b.add((multivalue ? " One of the special magic numbers for " : " The special magic number for ") + key +
                          " is");
      b.add(" " + values[size_t(i)], true);
      b.add(".");
      needles.push_back({a, a + 3});
    }
    // The asked needle (multi-key: needle 0) sits at the depth; the others anywhere.
    const int asked = multivalue ? 0 : r.uniform(0, n - 1);
    for (int i = 0; i < n; ++i) fracs.push_back(i == asked ? s.depth : r.uniform(0, 1000) / 1000.0);
    std::vector<size_t> order(n);
    for (int i = 0; i < n; ++i) order[size_t(i)] = size_t(i);
    std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return fracs[x] < fracs[y]; });
    std::vector<std::pair<int, int>> ns;
    std::vector<double> fs;
    for (size_t i : order) ns.push_back(needles[i]), fs.push_back(fracs[i]);
    const std::string& qk = keys[multivalue ? 0 : size_t(asked)];
    const int q = multivalue ? b.add(" What are all the special magic numbers for " + qk +
                                     "? The special magic numbers for " + qk + " are")
                             : b.add(" What is the special magic number for " + qk + "? The special magic number for " +
                                     qk + " is");
    Sample out = assemble("kv", hay, tok, s, b, intro, ns, fs, q);
    out.variant = multivalue ? "multivalue" : "multikey";
    if (multivalue) {
      std::string all;
      for (auto& v : values) {
        if (!all.empty()) all += ' ';
        all += v;
      }
      out.hops.push_back({{}, all, AnswerKind::all_numbers, n * answer_budget(tok, values[0])});
      out.copyable = false;  // four continuations of one context: no copier lists them all
    } else {
      out.hops.push_back({{}, values[size_t(asked)], AnswerKind::number, answer_budget(tok, values[size_t(asked)])});
    }
    return out;
  });
}

Sample make_vartrack(const Haystack& hay, const engine::Tokenizer& tok, const SampleSpec& s, int hops) {
  UNIQUE_CHECK_ARG(hops >= 1 && hops <= 8, "vartrack hops", "1..8", hops);
  return first_copyable([&](int attempt) {
    Rng r("vartrack", s, attempt);
    std::vector<std::string> names;
    while (static_cast<int>(names.size()) < 2 * hops) {
      const std::string v = r.upper(5);
      if (std::find(names.begin(), names.end(), v) == names.end()) names.push_back(v);
    }
    const std::string num = r.digits(5), other = r.digits(5);
    Builder b{tok, {}, {}};
    const int intro = b.add("Memorize and track the chain of variable assignments hidden in the following text.");
    // Chain X (asked) and chain Y (distractor), interleaved in text order.
    std::vector<std::pair<int, int>> needles;
    std::vector<double> fracs;
    for (int i = 0; i < hops; ++i)
      for (int c = 0; c < 2; ++c) {
        const std::string& lhs = names[size_t(c * hops + i)];
        const std::string rhs = i == 0 ? (c == 0 ? num : other) : names[size_t(c * hops + i - 1)];
        const int a = b.add(" VAR " + lhs + " =");
        b.add(" " + rhs, c == 0);
        b.add(".");
        needles.push_back({a, a + 3});
        fracs.push_back((i * 2 + c + 0.5) / (2.0 * hops) + (r.uniform(0, 100) - 50) / 1000.0 / hops);
      }
    const std::string& top = names[size_t(hops - 1)];
    const int q = b.add(" Question: what is the value of VAR " + top + "? Answer: VAR " + top + " =");
    Sample out = assemble("vartrack", hay, tok, s, b, intro, needles, fracs, q);
    for (int i = hops - 1; i >= 0; --i) {
      Hop h;
      h.expected = i == 0 ? num : names[size_t(i - 1)];
      h.kind = i == 0 ? AnswerKind::number : AnswerKind::words;
      h.max_new_tokens = answer_budget(tok, h.expected);
      if (i != hops - 1) h.query = tok.encode(". VAR " + names[size_t(i)] + " =", false);
      out.hops.push_back(h);
    }
    return out;
  });
}

namespace {

std::vector<std::string> digit_runs(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      cur.push_back(c);
    } else if (!cur.empty()) {
      out.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      cur.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    } else if (!cur.empty()) {
      out.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

double score_hop(const Hop& hop, const std::string& output) {
  switch (hop.kind) {
    case AnswerKind::number: {
      const auto runs = digit_runs(output);
      return !runs.empty() && runs[0] == hop.expected ? 1.0 : 0.0;
    }
    case AnswerKind::words: {
      const auto want = words(hop.expected), got = words(output);
      if (got.size() < want.size()) return 0.0;
      return std::equal(want.begin(), want.end(), got.begin()) ? 1.0 : 0.0;
    }
    case AnswerKind::all_numbers: {
      const auto want = digit_runs(hop.expected), got = digit_runs(output);
      double hit = 0;
      for (auto& w : want) hit += std::find(got.begin(), got.end(), w) != got.end();
      return want.empty() ? 0.0 : hit / double(want.size());
    }
  }
  return 0.0;
}

}  // namespace unique::eval

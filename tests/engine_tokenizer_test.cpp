// Tokenizer: the hand-written pre-tokenizer regexes, byte-level BPE and SentencePiece BPE
// with byte fallback on tiny hand-written tokenizer.json files; answers derived by hand.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "unique/engine/tokenizer.h"
#include "unique/error.h"

using namespace unique::engine;
using nlohmann::json;

namespace {

using V = std::vector<std::string>;

V split(const std::string& s, Tokenizer::Regex r) {
  V out;
  for (auto p : Tokenizer::split_regex(s, r)) out.emplace_back(p);
  return out;
}

TEST(PreTokenizer, Llama3Regex) {
  EXPECT_EQ(split("Hello world!!  123456 I'm\n\n  x", Tokenizer::Regex::llama3),
            (V{"Hello", " world", "!!", " ", " ", "123", "456", " I", "'m", "\n\n", " ", " x"}));
  // Case-insensitive contractions; punctuation run swallows following newlines.
  EXPECT_EQ(split("WE'RE ok.\n\nend   ", Tokenizer::Regex::llama3),
            (V{"WE", "'RE", " ok", ".\n\n", "end", "   "}));
  // Unicode letters and Arabic-Indic digits (Nd), CJK, a leading non-letter before a word.
  EXPECT_EQ(split("h\xC3\xA9llo w\xC3\xB6rld \xE4\xBD\xA0\xE5\xA5\xBD \xD9\xA1\xD9\xA2\xD9\xA3\xD9\xA4 $x",
                  Tokenizer::Regex::llama3),
            (V{"h\xC3\xA9llo", " w\xC3\xB6rld", " \xE4\xBD\xA0\xE5\xA5\xBD", " ", "\xD9\xA1\xD9\xA2\xD9\xA3",
               "\xD9\xA4", " $", "x"}));
  EXPECT_EQ(split(" \t\n a", Tokenizer::Regex::llama3), (V{" \t\n", " a"}));
}

TEST(PreTokenizer, Gpt2Regex) {
  EXPECT_EQ(split("Hello world!!  123456 I'm\n\n  x", Tokenizer::Regex::gpt2),
            (V{"Hello", " world", "!!", " ", " 123456", " I", "'m", "\n\n ", " x"}));
  // Case-sensitive contractions: 'RE is not one.
  EXPECT_EQ(split("WE'RE", Tokenizer::Regex::gpt2), (V{"WE", "'", "RE"}));
}

TEST(PreTokenizer, Qwen2RegexSplitsSingleDigits) {
  EXPECT_EQ(split("x 2026!", Tokenizer::Regex::qwen2), (V{"x", " ", "2", "0", "2", "6", "!"}));
}

TEST(PreTokenizer, InvalidUtf8BytesAreKept) {
  const std::string s = "a\xFF\xFE b";
  std::string joined;
  for (auto& p : split(s, Tokenizer::Regex::llama3)) joined += p;
  EXPECT_EQ(joined, s);
}

// NFC answers from Python's unicodedata.normalize("NFC", ...): composition, Hangul,
// canonical reordering, singletons, blocked composition. (The implementation was also
// compared with Python on 200000 random strings of decomposable/combining code points.)
TEST(Normalizer, Nfc) {
  EXPECT_EQ(Tokenizer::nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(Tokenizer::nfc("\x65\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(Tokenizer::nfc("\x41\xCC\x8A\xCC\x81"), "\xC7\xBA");
  EXPECT_EQ(Tokenizer::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");
  EXPECT_EQ(Tokenizer::nfc("\x61\xCC\xA8\xCC\x81\xCC\xA3"), "\xC4\x85\xCC\xA3\xCC\x81");
  EXPECT_EQ(Tokenizer::nfc("\xE2\x84\xAB"), "\xC3\x85");
  EXPECT_EQ(Tokenizer::nfc("\xCD\x84"), "\xCC\x88\xCC\x81");
  EXPECT_EQ(Tokenizer::nfc("\xC3\xA9\xCC\x80\xCC\xA3"), "\xE1\xBA\xB9\xCC\x81\xCC\x80");
  EXPECT_EQ(Tokenizer::nfc("\xEA\xB0\x80\xE1\x86\xA8\x20\x78"), "\xEA\xB0\x81\x20\x78");
  EXPECT_EQ(Tokenizer::nfc("\x71\xCC\x87\xCC\xA3"), "\x71\xCC\xA3\xCC\x87");
  EXPECT_EQ(Tokenizer::nfc("bad \xFF\xCC\x81 byte"), "bad \xFF\xCC\x81 byte");
}

json byte_level_json();

TEST(Normalizer, NfcNormalizerAppliesBeforeBpe) {
  json j = byte_level_json();
  j["normalizer"] = {{"type", "NFC"}};
  const Tokenizer t = Tokenizer::from_json(j.dump(), "test.json");
  // "e" + COMBINING ACUTE becomes U+00E9 (bytes C3 A9) before the byte-level model.
  EXPECT_EQ(t.encode("e\xCC\x81", false), (std::vector<int>{0xC3, 0xA9}));
}

// GPT-2 byte map written out independently: printable bytes map to themselves, the
// others to 256, 257, ... in byte order.
std::string byte_char(int b) {
  static std::vector<int> cp;
  if (cp.empty()) {
    int n = 0;
    for (int x = 0; x < 256; ++x) {
      bool keep = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
      cp.push_back(keep ? x : 256 + n++);
    }
  }
  const int c = cp[b];
  std::string s;
  if (c < 0x80) s.push_back(char(c));
  else {
    s.push_back(char(0xC0 | (c >> 6)));
    s.push_back(char(0x80 | (c & 0x3F)));
  }
  return s;
}

json byte_level_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  const std::string G = byte_char(' ');  // "Ġ"
  // merges (rank order): Ġ t, h e, Ġt he, i n, Ġ in
  vocab[G + "t"] = 256;
  vocab["he"] = 257;
  vocab[G + "the"] = 258;
  vocab["in"] = 259;
  vocab[G + "in"] = 260;
  json j;
  j["added_tokens"] = json::array({{{"id", 261}, {"content", "<|bos|>"}, {"special", true}},
                                   {{"id", 262}, {"content", "<|end|>"}, {"special", true}}});
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Split"},
                     {"pattern",
                      {{"Regex",
                        R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
                     {"behavior", "Isolated"},
                     {"invert", false}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", json::array({{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                                                 {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                         {"special_tokens", {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {261}}, {"tokens", {"<|bos|>"}}}}}}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["model"] = {{"type", "BPE"},
                {"vocab", vocab},
                {"merges", json::array({G + " t", "h e", json::array({G + "t", "he"}), "i n", G + " in"})},
                {"ignore_merges", false}};
  return j;
}

TEST(ByteLevelBpe, KnownAnswers) {
  const Tokenizer t = Tokenizer::from_json(byte_level_json().dump(), "test.json");
  EXPECT_EQ(t.kind(), Tokenizer::Kind::byte_level);
  // " the in" -> [" the", " in"]: Ġ t h e -> Ġt h e -> Ġt he -> Ġthe; Ġ i n -> Ġ in -> Ġin.
  EXPECT_EQ(t.encode(" the in", false), (std::vector<int>{258, 260}));
  // BOS from the template; "thin": t h i n -> "h e" absent; i n -> in: t h in.
  EXPECT_EQ(t.encode("thin"), (std::vector<int>{261, 't', 'h', 259}));
  // Special token split out; bytes of "é" (C3 A9) are the byte tokens 0xC3, 0xA9.
  EXPECT_EQ(t.encode("a<|end|>\xC3\xA9", false), (std::vector<int>{'a', 262, 0xC3, 0xA9}));
  EXPECT_EQ(t.decode({261, 258, 260, 262}), "<|bos|> the in<|end|>");
  EXPECT_EQ(t.decode({261, 258, 260, 262}, true), " the in");
}

TEST(ByteLevelBpe, RoundTrips) {
  const Tokenizer t = Tokenizer::from_json(byte_level_json().dump(), "test.json");
  for (std::string s : {"", "hello", "  leading and trailing  ", "tabs\tand\nnew\r\nlines\n\n\n",
                        "digits 1234567890 and 3.14159", "unicode: h\xC3\xA9llo \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80",
                        "special <|end|> inside <|bos|>", "invalid \xFF\xC0 bytes", "'s 'T 're I'LL"}) {
    EXPECT_EQ(t.decode(t.encode(s, false)), s) << s;
  }
}

TEST(ByteLevelBpe, AddedTokenLstripRstripAbsorbWhitespace) {
  json j = byte_level_json();
  j["added_tokens"][1]["lstrip"] = true;
  j["added_tokens"][1]["rstrip"] = true;
  const Tokenizer t = Tokenizer::from_json(j.dump(), "test.json");
  EXPECT_EQ(t.encode("a  <|end|> \n b", false), (std::vector<int>{'a', 262, 'b'}));
  const Tokenizer plain = Tokenizer::from_json(byte_level_json().dump(), "test.json");
  // Without stripping the spaces stay: "a", " " | <|end|> | " b" -> Ġ (id 32), b.
  EXPECT_EQ(plain.encode("a <|end|> b", false), (std::vector<int>{'a', 32, 262, 32, 'b'}));
}

TEST(ByteLevelBpe, IgnoreMergesTakesWholeWords) {
  json j = byte_level_json();
  j["model"]["vocab"]["thin"] = 263;
  j["model"]["ignore_merges"] = true;
  const Tokenizer t = Tokenizer::from_json(j.dump(), "test.json");
  EXPECT_EQ(t.encode("thin", false), (std::vector<int>{263}));
}

json spm_json(bool metaspace) {
  json vocab = json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  char buf[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab[buf] = 3 + b;
  }
  const std::string S = "\xE2\x96\x81";
  int id = 259;
  for (std::string tok : {S, std::string("h"), std::string("e"), std::string("l"), std::string("o"), std::string("w"),
                          std::string("r"), std::string("d"), S + "h", std::string("ll"), S + "he", S + "hell", S + "hello"})
    vocab[tok] = id++;
  json j;
  j["added_tokens"] = json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                   {{"id", 1}, {"content", "<s>"}, {"special", true}},
                                   {{"id", 2}, {"content", "</s>"}, {"special", true}}});
  if (metaspace) {
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", S}, {"prepend_scheme", "first"}, {"split", false}};
  } else {
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", S}},
                                                    {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", S}}})}};
    j["pre_tokenizer"] = nullptr;
  }
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                 {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  j["decoder"] = {{"type", "Sequence"}};
  j["model"] = {{"type", "BPE"},
                {"vocab", vocab},
                {"unk_token", "<unk>"},
                {"byte_fallback", true},
                {"fuse_unk", true},
                {"merges", json::array({S + " h", "l l", S + "h e", S + "he ll", S + "hell o"})}};
  return j;
}

TEST(SentencePieceBpe, KnownAnswers) {
  for (bool meta : {false, true}) {
    const Tokenizer t = Tokenizer::from_json(spm_json(meta).dump(), "spm.json");
    EXPECT_EQ(t.kind(), Tokenizer::Kind::sentencepiece);
    // "▁hello▁world": ▁ h -> ▁h; l l -> ll; ▁h e -> ▁he; ▁he ll -> ▁hell; ▁hell o -> ▁hello;
    // then ▁ w o r l d stay single (ids 259, 264, 263, 265, 262, 266).
    EXPECT_EQ(t.encode("hello world"), (std::vector<int>{1, 271, 259, 264, 263, 265, 262, 266})) << meta;
    // "i" and "你" (E4 BD A0) are not in the vocabulary: byte fallback <0x69>, <0xE4> <0xBD> <0xA0>.
    EXPECT_EQ(t.encode("hi \xE4\xBD\xA0", false), (std::vector<int>{267, 3 + 0x69, 259, 3 + 0xE4, 3 + 0xBD, 3 + 0xA0}));
    EXPECT_EQ(t.decode({1, 267, 3 + 0x69, 259, 3 + 0xE4, 3 + 0xBD, 3 + 0xA0}, true), "hi \xE4\xBD\xA0");
    for (std::string s : {"hello world", "hello  world  ", "\xE4\xBD\xA0\xE5\xA5\xBD hello", "tab\there\nnew line",
                          "12345 digits"})
      EXPECT_EQ(t.decode(t.encode(s), true), s) << s;
    // Streaming pieces keep the space the decoder strips at the start.
    EXPECT_EQ(t.token_bytes(271), " hello");
  }
}

TEST(TokenizerErrors, NameTheField) {
  auto expect_err = [](const std::string& text, const std::string& needle) {
    try {
      Tokenizer::from_json(text, "tok.json");
      ADD_FAILURE() << "no error for " << text.substr(0, 80);
    } catch (const unique::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("tok.json"), std::string::npos) << e.what();
    }
  };
  expect_err("{", "invalid JSON");
  expect_err("[1]", "JSON object");
  expect_err(R"({"model": {"type": "WordPiece", "vocab": {}}})", "model.type");
  expect_err(R"({"model": {"type": "BPE", "vocab": {"a": -1}}})", "model.vocab");
  expect_err(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})", "model.merges[0]");
  json j = byte_level_json();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+";
  expect_err(j.dump(), "pre-tokenizer regex");
  expect_err(std::string(100, '[') + std::string(100, ']'), "nesting depth");
}

}  // namespace

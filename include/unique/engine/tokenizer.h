// Tokenizer loaded from a Hugging Face tokenizer.json (untrusted input, checked):
//   - byte-level BPE (GPT-2, Llama 3, Qwen 2/3): the pre-tokenizer regex of those models
//     implemented by hand over Unicode letter/number tables, GPT-2 byte-to-unicode map,
//     ignore_merges (Llama 3);
//   - SentencePiece-style BPE (Llama 2, Mistral): "▁" for spaces (Prepend/Replace normalizer
//     or Metaspace pre-tokenizer), merges, <0xXX> byte fallback;
//   - added / special tokens (split out before the model, leftmost-longest), the
//     TemplateProcessing post-processor (BOS) when add_special_tokens is set.
//   - the NFC normalizer (Qwen), implemented here from generated Unicode tables.
// Not implemented: other normalizers (NFKC, Lowercase, ...), single_word of added tokens
// (lstrip/rstrip strip ASCII whitespace only), WordPiece/Unigram models.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace unique::engine {

class Tokenizer {
 public:
  enum class Kind : uint8_t { byte_level, sentencepiece };
  enum class Regex : uint8_t { none, gpt2, llama3, qwen2 };

  // Parses tokenizer.json text; errors (unique::Error) name `source` and the field.
  static Tokenizer from_json(std::string_view text, const std::string& source);
  static Tokenizer from_file(const std::string& path);

  // Token ids of text; add_special_tokens applies the post-processor template (e.g. BOS).
  std::vector<int> encode(std::string_view text, bool add_special_tokens = true) const;
  // Text of ids. skip_special drops special added tokens. SentencePiece: the leading space
  // that the normalizer prepended is stripped.
  std::string decode(const std::vector<int>& ids, bool skip_special = false) const;
  // Bytes one token contributes when it continues a text (streaming): no stripping.
  std::string token_bytes(int id) const;

  int vocab_size() const { return static_cast<int>(id_to_token_.size()); }
  int token_id(const std::string& token) const;  // -1 when absent
  bool is_special(int id) const;
  Kind kind() const { return kind_; }
  Regex regex() const { return regex_; }
  const std::vector<int>& prefix_ids() const { return prefix_; }

  // Pre-tokenizer split of the byte-level regexes (exposed for tests): byte ranges of text.
  static std::vector<std::string_view> split_regex(std::string_view text, Regex r);
  // Unicode normalization form C of UTF-8 text (invalid bytes pass through unchanged).
  static std::string nfc(std::string_view text);

 private:
  struct Merge {
    int rank;
    int new_id;
  };
  struct Added {
    std::string content;
    int id;
    bool special;
    bool lstrip, rstrip;  // absorb (ASCII) whitespace on that side into the token
  };
  Kind kind_ = Kind::byte_level;
  Regex regex_ = Regex::none;
  bool add_prefix_space_ = false;    // byte level
  bool sp_prepend_ = false;          // sentencepiece: prepend ▁ to each segment
  bool sp_prepend_first_only_ = false;
  bool sp_split_ = false;            // Metaspace split on ▁
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  bool fuse_unk_ = false;
  bool nfc_ = false;
  int unk_id_ = -1;
  std::unordered_map<std::string, int> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<Added> added_;          // sorted by content length, longest first
  bool added_first_[256] = {};        // first bytes of added tokens (fast reject)
  std::vector<char> special_;         // per id
  std::vector<int> prefix_, suffix_;  // post-processor template
  int byte_ids_[256];                 // <0xXX> ids (sentencepiece) or byte-char ids (byte level)

  void bpe(std::string_view word, std::vector<int>& out) const;
  void encode_segment(std::string_view seg, bool first, std::vector<int>& out) const;
};

}  // namespace unique::engine

#include "unique/engine/tokenizer.h"

#include <algorithm>
#include <iterator>
#include <cstring>
#include <queue>

#include "engine/json_util.h"
#include "unique/error.h"

namespace unique::engine {

using nlohmann::json;
using unique::detail::concat;

namespace {

struct CodeRange {
  uint32_t lo, hi;
};
struct CccRange {
  uint32_t lo, hi, ccc;
};
struct Decomp {
  uint32_t cp, a, b;
};
struct Compose {
  uint32_t a, b, c;
};
#include "engine/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodeRange (&r)[N], uint32_t cp) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (cp < r[mid].lo) hi = mid;
    else if (cp > r[mid].hi) lo = mid + 1;
    else return true;
  }
  return false;
}

constexpr uint32_t kInvalid = 0xFFFFFFFFu;  // an undecodable byte: "other" class

bool is_letter(uint32_t c) { return c != kInvalid && (c < 0x80 ? ((c | 32) >= 'a' && (c | 32) <= 'z') : in_ranges(kLetterRanges, c)); }
bool is_number(uint32_t c) { return c != kInvalid && (c < 0x80 ? (c >= '0' && c <= '9') : in_ranges(kNumberRanges, c)); }
// Unicode White_Space (what \s matches in the Rust/Oniguruma regexes of tokenizers).
bool is_space(uint32_t c) {
  return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}
bool is_other(uint32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); }
bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

struct Cp {
  uint32_t c;
  uint32_t pos;  // byte offset
};

// Decodes UTF-8; every byte of an invalid sequence becomes one kInvalid code point.
std::vector<Cp> decode_utf8(std::string_view s) {
  std::vector<Cp> out;
  out.reserve(s.size() + 1);
  size_t i = 0;
  const auto* b = reinterpret_cast<const uint8_t*>(s.data());
  while (i < s.size()) {
    uint32_t c = b[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    if (ok && len > 1) {
      c &= (0x7F >> len);
      for (int k = 1; k < len; ++k) {
        if ((b[i + k] & 0xC0) != 0x80) { ok = false; break; }
        c = (c << 6) | (b[i + k] & 0x3F);
      }
      // Overlong, surrogate or out of range encodings are invalid.
      if (ok && ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
                 c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)))
        ok = false;
    }
    if (!ok) {
      out.push_back({kInvalid, static_cast<uint32_t>(i)});
      ++i;
      continue;
    }
    out.push_back({c, static_cast<uint32_t>(i)});
    i += len;
  }
  out.push_back({0, static_cast<uint32_t>(s.size())});  // sentinel
  return out;
}

void append_utf8(std::string& s, uint32_t c) {
  if (c < 0x80) {
    s.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (c >> 6)));
    s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (c >> 12)));
    s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (c >> 18)));
    s.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// ---- NFC (Unicode normalization form C), for the NFC normalizer of Qwen tokenizers ----
constexpr uint32_t kRawByte = 0x80000000u;  // an undecodable input byte, kept as is
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint32_t ccc_of(uint32_t c) {
  if (c < 0x300 || (c & kRawByte)) return 0;
  size_t lo = 0, hi = std::size(kCccRanges);
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (c < kCccRanges[mid].lo) hi = mid;
    else if (c > kCccRanges[mid].hi) lo = mid + 1;
    else return kCccRanges[mid].ccc;
  }
  return 0;
}

void decompose(uint32_t c, std::vector<uint32_t>& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const uint32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (c >= 0xC0 && !(c & kRawByte)) {
    const Decomp* e = std::lower_bound(std::begin(kDecomps), std::end(kDecomps), c,
                                       [](const Decomp& d, uint32_t x) { return d.cp < x; });
    if (e != std::end(kDecomps) && e->cp == c) {
      decompose(e->a, out);
      if (e->b) decompose(e->b, out);
      return;
    }
  }
  out.push_back(c);
}

uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const Compose* e = std::lower_bound(std::begin(kComposes), std::end(kComposes), std::pair(a, b),
                                      [](const Compose& x, std::pair<uint32_t, uint32_t> k) {
                                        return x.a != k.first ? x.a < k.first : x.b < k.second;
                                      });
  return (e != std::end(kComposes) && e->a == a && e->b == b) ? e->c : 0;
}

// GPT-2's byte <-> printable code point map.
struct ByteMap {
  uint32_t to_cp[256];
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      to_cp[b] = printable ? b : 256 + n++;
      to_byte[to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

const std::string kSpm = "\xE2\x96\x81";  // U+2581 ▁

uint64_t pair_key(int a, int b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

// Length (in code points) of a contraction at i: 's 't 're 've 'm 'll 'd; 0 if none.
int contraction(const std::vector<Cp>& cp, size_t i, size_t n, bool icase) {
  if (cp[i].c != '\'' || i + 1 >= n) return 0;
  auto lower = [&](uint32_t c) -> uint32_t {
    if (!icase) return c;
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's';  // LATIN SMALL LETTER LONG S folds to s
    return c;
  };
  const uint32_t a = lower(cp[i + 1].c);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 < n) {
    const uint32_t b = lower(cp[i + 2].c);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  return 0;
}

}  // namespace

std::vector<std::string_view> Tokenizer::split_regex(std::string_view text, Regex r) {
  std::vector<std::string_view> out;
  if (r == Regex::none) {
    if (!text.empty()) out.push_back(text);
    return out;
  }
  const std::vector<Cp> cp = decode_utf8(text);
  const size_t n = cp.size() - 1;
  auto emit = [&](size_t a, size_t b) { out.push_back(text.substr(cp[a].pos, cp[b].pos - cp[a].pos)); };
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    const uint32_t c = cp[i].c, c1 = i + 1 < n ? cp[i + 1].c : kInvalid;
    const bool has1 = i + 1 < n;
    if (int k = contraction(cp, i, n, r != Regex::gpt2)) {
      j = i + k;
    } else if (r == Regex::gpt2) {
      // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
      const size_t s = (c == ' ' && has1) ? i + 1 : i;
      const uint32_t cs = cp[s].c;
      if (s < n && is_letter(cs)) {
        for (j = s; j < n && is_letter(cp[j].c);) ++j;
      } else if (s < n && is_number(cs)) {
        for (j = s; j < n && is_number(cp[j].c);) ++j;
      } else if (s < n && is_other(cs)) {
        for (j = s; j < n && is_other(cp[j].c);) ++j;
      }
    } else {
      // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
      if (is_letter(c)) {
        for (j = i; j < n && is_letter(cp[j].c);) ++j;
      } else if (!is_crlf(c) && !is_number(c) && has1 && is_letter(c1)) {
        for (j = i + 1; j < n && is_letter(cp[j].c);) ++j;
      } else if (is_number(c)) {
        const size_t lim = r == Regex::llama3 ? 3 : 1;
        for (j = i; j < n && j - i < lim && is_number(cp[j].c);) ++j;
      } else {
        const size_t s = (c == ' ' && has1 && is_other(c1)) ? i + 1 : i;
        if (is_other(cp[s].c) && s < n) {
          for (j = s; j < n && is_other(cp[j].c);) ++j;
          while (j < n && is_crlf(cp[j].c)) ++j;
        } else if (is_space(c)) {
          size_t e = i;
          while (e < n && is_space(cp[e].c)) ++e;
          size_t last_nl = n;
          for (size_t k = i; k < e; ++k)
            if (is_crlf(cp[k].c)) last_nl = k;
          if (last_nl != n) j = last_nl + 1;
        }
      }
    }
    if (j == i) {
      // \s+(?!\S) | \s+  (and anything no alternative took, which cannot happen)
      size_t e = i;
      while (e < n && is_space(cp[e].c)) ++e;
      if (e == i) {
        j = i + 1;
      } else if (e < n && e - i >= 2) {
        j = e - 1;
      } else {
        j = e;
      }
    }
    emit(i, j);
    i = j;
  }
  return out;
}

std::string Tokenizer::nfc(std::string_view text) {
  const std::vector<Cp> cps = decode_utf8(text);
  bool simple = true;  // every code point below U+0300 is NFC-stable
  for (size_t i = 0; i + 1 < cps.size() && simple; ++i) simple = cps[i].c < 0x300 || cps[i].c == kInvalid;
  if (simple) return std::string(text);
  std::vector<uint32_t> d;
  for (size_t i = 0; i + 1 < cps.size(); ++i) {
    if (cps[i].c == kInvalid) d.push_back(kRawByte | static_cast<uint8_t>(text[cps[i].pos]));
    else decompose(cps[i].c, d);
  }
  // Canonical order: stable sort of every run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (!ccc_of(d[i])) { ++i; continue; }
    size_t j = i;
    while (j < d.size() && ccc_of(d[j])) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](uint32_t a, uint32_t b) { return ccc_of(a) < ccc_of(b); });
    i = j;
  }
  // Canonical composition (the algorithm of UAX #15).
  if (!d.empty()) {
    size_t starter = 0, out = 1;
    uint32_t last = ccc_of(d[0]) ? 256 : 0;
    for (size_t i = 1; i < d.size(); ++i) {
      const uint32_t c = d[i], cc = ccc_of(c);
      const uint32_t comp = (d[starter] & kRawByte) || (c & kRawByte) ? 0 : compose(d[starter], c);
      if (comp && (last < cc || last == 0)) {
        d[starter] = comp;
      } else {
        if (cc == 0) starter = out;
        last = cc;
        d[out++] = c;
      }
    }
    d.resize(out);
  }
  std::string r;
  for (uint32_t c : d) {
    if (c & kRawByte) r.push_back(static_cast<char>(c & 0xFF));
    else append_utf8(r, c);
  }
  return r;
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  return from_json(detail::read_file(path, "tokenizer", 256u << 20), path);
}

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& src) {
  const json j = detail::parse_json(text, src);
  if (!j.is_object()) throw_arg(src, "a JSON object", j.type_name());
  Tokenizer t;
  std::fill(std::begin(t.byte_ids_), std::end(t.byte_ids_), -1);
  const json* model = detail::field(j, "model");
  if (!model || !model->is_object()) throw_arg(src + ": field model", "an object", model ? model->dump() : "missing");
  const std::string mtype = detail::get_str_or(*model, "type", src + ": model", "BPE");
  if (mtype != "BPE") throw_arg(src + ": field model.type", "BPE", mtype);
  const json* vocab = detail::field(*model, "vocab");
  if (!vocab || !vocab->is_object()) throw_arg(src + ": field model.vocab", "an object", vocab ? vocab->type_name() : "missing");
  constexpr int64_t kMaxId = 1 << 21;  // real vocabularies are < 300K; bounds the id table
  auto set_token = [&](const std::string& tok, int64_t id, const char* where) {
    if (id < 0 || id >= kMaxId) throw_arg(src + ": " + where + " '" + tok + "'", concat("an id in 0..", kMaxId - 1), id);
    if (static_cast<size_t>(id) >= t.id_to_token_.size()) t.id_to_token_.resize(id + 1);
    t.id_to_token_[id] = tok;
    t.vocab_[tok] = static_cast<int>(id);
  };
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it->is_number_integer()) throw_arg(src + ": model.vocab['" + it.key() + "']", "an integer id", it->dump());
    set_token(it.key(), it->get<int64_t>(), "model.vocab");
  }
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const std::string v = detail::get_str_or(*model, k, src + ": model", "");
    if (!v.empty()) throw_arg(src + ": field model." + k, "empty or null (not supported)", v);
  }
  t.byte_fallback_ = detail::get_bool_or(*model, "byte_fallback", src + ": model", false);
  t.ignore_merges_ = detail::get_bool_or(*model, "ignore_merges", src + ": model", false);
  t.fuse_unk_ = detail::get_bool_or(*model, "fuse_unk", src + ": model", false);
  if (const json* unk = detail::field(*model, "unk_token")) {
    if (!unk->is_string()) throw_arg(src + ": field model.unk_token", "a string or null", unk->dump());
    auto it = t.vocab_.find(unk->get<std::string>());
    if (it == t.vocab_.end()) throw_arg(src + ": field model.unk_token", "a token of model.vocab", unk->get<std::string>());
    t.unk_id_ = it->second;
  }

  // Added tokens may extend the vocabulary.
  if (const json* added = detail::field(j, "added_tokens")) {
    if (!added->is_array()) throw_arg(src + ": field added_tokens", "an array", added->type_name());
    for (const json& a : *added) {
      const std::string content = detail::get_str_or(a, "content", src + ": added_tokens[]", "");
      if (content.empty()) throw_arg(src + ": added_tokens[].content", "a non-empty string", a.dump());
      const int64_t id = detail::get_int(a, "id", src + ": added_tokens[]", 0, kMaxId - 1);
      const bool special = detail::get_bool_or(a, "special", src + ": added_tokens[]", false);
      const bool lstrip = detail::get_bool_or(a, "lstrip", src + ": added_tokens[]", false);
      const bool rstrip = detail::get_bool_or(a, "rstrip", src + ": added_tokens[]", false);
      set_token(content, id, "added_tokens");
      t.added_.push_back({content, static_cast<int>(id), special, lstrip, rstrip});
      t.added_first_[static_cast<uint8_t>(content[0])] = true;
    }
  }
  std::stable_sort(t.added_.begin(), t.added_.end(),
                   [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });
  t.special_.assign(t.id_to_token_.size(), 0);
  for (const auto& a : t.added_)
    if (a.special) t.special_[a.id] = 1;

  // Merges: "a b" strings or ["a", "b"] pairs.
  if (const json* merges = detail::field(*model, "merges")) {
    if (!merges->is_array()) throw_arg(src + ": field model.merges", "an array", merges->type_name());
    int rank = 0;
    for (const json& m : *merges) {
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) throw_arg(src + ": model.merges[" + std::to_string(rank) + "]", "\"a b\"", s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        throw_arg(src + ": model.merges[" + std::to_string(rank) + "]", "\"a b\" or [a, b]", m.dump());
      }
      auto ia = t.vocab_.find(a), ib = t.vocab_.find(b), ic = t.vocab_.find(a + b);
      if (ia == t.vocab_.end() || ib == t.vocab_.end() || ic == t.vocab_.end())
        throw_arg(src + ": model.merges[" + std::to_string(rank) + "]", "tokens of model.vocab (a, b and a+b)",
                  a + " " + b);
      t.merges_.emplace(pair_key(ia->second, ib->second), Merge{rank, ic->second});
      ++rank;
    }
  }

  // Normalizer / pre-tokenizer decide the kind.
  bool byte_level = false, spm = false;
  auto parse_normalizer = [&](const json& n, auto&& self) -> void {
    const std::string type = detail::get_str_or(n, "type", src + ": normalizer", "");
    if (type == "Sequence") {
      const json* list = detail::field(n, "normalizers");
      if (!list || !list->is_array()) throw_arg(src + ": normalizer.normalizers", "an array", "missing");
      for (const json& x : *list) self(x, self);
    } else if (type == "Prepend") {
      const std::string p = detail::get_str_or(n, "prepend", src + ": normalizer", "");
      if (p != kSpm) throw_arg(src + ": normalizer Prepend.prepend", "\"\u2581\"", p);
      t.sp_prepend_ = true;
      spm = true;
    } else if (type == "Replace") {
      const json* pat = detail::field(n, "pattern");
      const std::string content = detail::get_str_or(n, "content", src + ": normalizer", "");
      if (!pat || detail::get_str_or(*pat, "String", src + ": normalizer Replace.pattern", "") != " " || content != kSpm)
        throw_arg(src + ": normalizer Replace", "pattern \" \" -> \"\u2581\"", n.dump());
      spm = true;
    } else if (type == "NFC") {
      t.nfc_ = true;
    } else {
      throw_arg(src + ": field normalizer.type", "Sequence, Prepend, Replace or NFC", type);
    }
  };
  if (const json* n = detail::field(j, "normalizer")) parse_normalizer(*n, parse_normalizer);

  auto parse_pre = [&](const json& p, auto&& self) -> void {
    const std::string type = detail::get_str_or(p, "type", src + ": pre_tokenizer", "");
    const std::string where = src + ": pre_tokenizer " + type;
    if (type == "Sequence") {
      const json* list = detail::field(p, "pretokenizers");
      if (!list || !list->is_array()) throw_arg(src + ": pre_tokenizer.pretokenizers", "an array", "missing");
      for (const json& x : *list) self(x, self);
    } else if (type == "ByteLevel") {
      byte_level = true;
      t.add_prefix_space_ = detail::get_bool_or(p, "add_prefix_space", where, false);
      if (detail::get_bool_or(p, "use_regex", where, true)) {
        if (t.regex_ != Regex::none) throw_arg(where, "one regex split", "two");
        t.regex_ = Regex::gpt2;
      }
    } else if (type == "Split") {
      const json* pat = detail::field(p, "pattern");
      const std::string re = pat ? detail::get_str_or(*pat, "Regex", where + " pattern", "") : "";
      const std::string behavior = detail::get_str_or(p, "behavior", where, "");
      if (behavior != "Isolated" || detail::get_bool_or(p, "invert", where, false))
        throw_arg(where, "behavior Isolated, invert false", p.dump());
      static const std::string kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
      static const std::string kLlama3 =
          R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
      static const std::string kQwen2 =
          R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
      Regex r = re == kGpt2 ? Regex::gpt2 : re == kLlama3 ? Regex::llama3 : re == kQwen2 ? Regex::qwen2 : Regex::none;
      if (r == Regex::none)
        throw_arg(where + " pattern.Regex", "the GPT-2, Llama 3 or Qwen 2 pre-tokenizer regex", re.substr(0, 200));
      if (t.regex_ != Regex::none) throw_arg(where, "one regex split", "two");
      t.regex_ = r;
    } else if (type == "Metaspace") {
      const std::string rep = detail::get_str_or(p, "replacement", where, kSpm);
      if (rep != kSpm) throw_arg(where + " replacement", "\"\u2581\"", rep);
      std::string scheme = detail::get_str_or(p, "prepend_scheme", where, "");
      if (scheme.empty()) scheme = detail::get_bool_or(p, "add_prefix_space", where, true) ? "always" : "never";
      if (scheme != "always" && scheme != "first" && scheme != "never")
        throw_arg(where + " prepend_scheme", "always, first or never", scheme);
      t.sp_prepend_ = scheme != "never";
      t.sp_prepend_first_only_ = scheme == "first";
      t.sp_split_ = detail::get_bool_or(p, "split", where, true);
      spm = true;
    } else {
      throw_arg(src + ": field pre_tokenizer.type", "ByteLevel, Split, Metaspace or Sequence", type);
    }
  };
  if (const json* p = detail::field(j, "pre_tokenizer")) parse_pre(*p, parse_pre);
  if (byte_level && spm) throw_arg(src + ": pre_tokenizer", "byte-level or SentencePiece style, not both", "both");
  if (!byte_level && !spm) {
    // Llama 2 style without a normalizer (rare) or a byte-level model whose decoder says so.
    const json* d = detail::field(j, "decoder");
    const std::string dt = d ? detail::get_str_or(*d, "type", src + ": decoder", "") : "";
    if (dt == "ByteLevel") byte_level = true;
    else spm = true;
  }
  t.kind_ = byte_level ? Kind::byte_level : Kind::sentencepiece;
  if (t.kind_ == Kind::byte_level) {
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_utf8(s, byte_map().to_cp[b]);
      auto it = t.vocab_.find(s);
      t.byte_ids_[b] = it == t.vocab_.end() ? -1 : it->second;
    }
  } else {
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      auto it = t.vocab_.find(buf);
      t.byte_ids_[b] = it == t.vocab_.end() ? -1 : it->second;
    }
  }

  // Post-processor: TemplateProcessing (possibly inside a Sequence).
  auto parse_post = [&](const json& p, auto&& self) -> void {
    const std::string type = detail::get_str_or(p, "type", src + ": post_processor", "");
    if (type == "Sequence") {
      const json* list = detail::field(p, "processors");
      if (list && list->is_array())
        for (const json& x : *list) self(x, self);
    } else if (type == "TemplateProcessing") {
      const json* single = detail::field(p, "single");
      const json* specials = detail::field(p, "special_tokens");
      if (!single || !single->is_array()) throw_arg(src + ": post_processor.single", "an array", "missing");
      bool after = false;
      for (const json& item : *single) {
        if (detail::field(item, "Sequence")) {
          after = true;
          continue;
        }
        const json* st = detail::field(item, "SpecialToken");
        if (!st) throw_arg(src + ": post_processor.single[]", "Sequence or SpecialToken", item.dump());
        const std::string name = detail::get_str_or(*st, "id", src + ": post_processor SpecialToken", "");
        const json* spec = specials ? detail::field(*specials, name.c_str()) : nullptr;
        const json* ids = spec ? detail::field(*spec, "ids") : nullptr;
        std::vector<int> v;
        if (ids && ids->is_array()) {
          for (const json& x : *ids) {
            if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= kMaxId)
              throw_arg(src + ": post_processor.special_tokens['" + name + "'].ids", "token ids", ids->dump());
            v.push_back(static_cast<int>(x.get<int64_t>()));
          }
        } else {
          const int id = t.token_id(name);
          if (id < 0) throw_arg(src + ": post_processor special token", "a known token", name);
          v.push_back(id);
        }
        auto& dst = after ? t.suffix_ : t.prefix_;
        dst.insert(dst.end(), v.begin(), v.end());
      }
    }
  };
  if (const json* p = detail::field(j, "post_processor")) parse_post(*p, parse_post);
  for (int id : t.prefix_)
    if (id >= static_cast<int>(t.id_to_token_.size())) throw_arg(src + ": post_processor token id", concat("< ", t.id_to_token_.size()), id);
  for (int id : t.suffix_)
    if (id >= static_cast<int>(t.id_to_token_.size())) throw_arg(src + ": post_processor token id", concat("< ", t.id_to_token_.size()), id);
  if (t.vocab_.empty()) throw_arg(src + ": field model.vocab", "at least one token", "none");
  return t;
}

int Tokenizer::token_id(const std::string& token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

bool Tokenizer::is_special(int id) const {
  return id >= 0 && id < static_cast<int>(special_.size()) && special_[id];
}

// BPE over one word: initial symbols, then repeatedly the lowest-rank merge (leftmost on
// ties), as tokenizers' Word::merge_all does with its priority queue.
void Tokenizer::bpe(std::string_view word, std::vector<int>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(std::string(word));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Sym {
    int id;
    int prev, next;
    bool alive;
  };
  std::vector<Sym> syms;
  const std::vector<Cp> cps = decode_utf8(word);
  const size_t n = cps.size() - 1;
  auto push = [&](int id) {
    const int idx = static_cast<int>(syms.size());
    syms.push_back({id, idx - 1, idx + 1, true});
  };
  std::string ch;
  for (size_t i = 0; i < n; ++i) {
    ch.assign(word.substr(cps[i].pos, cps[i + 1].pos - cps[i].pos));
    auto it = vocab_.find(ch);
    if (it != vocab_.end()) {
      push(it->second);
    } else if (byte_fallback_ && std::all_of(ch.begin(), ch.end(), [&](char c) { return byte_ids_[uint8_t(c)] >= 0; })) {
      for (char c : ch) push(byte_ids_[uint8_t(c)]);
    } else if (unk_id_ >= 0) {
      if (fuse_unk_ && !syms.empty() && syms.back().id == unk_id_) continue;
      push(unk_id_);
    } else {
      throw Error(concat("tokenizer: character '", ch, "' is not in the vocabulary and there is no unk_token or byte fallback"));
    }
  }
  if (syms.empty()) return;
  syms.back().next = -1;
  struct Cand {
    int rank, pos, new_id;
    bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand> q;
  auto consider = [&](int a) {
    if (a < 0) return;
    const int b = syms[a].next;
    if (b < 0) return;
    auto it = merges_.find(pair_key(syms[a].id, syms[b].id));
    if (it != merges_.end()) q.push({it->second.rank, a, it->second.new_id});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) consider(i);
  while (!q.empty()) {
    const Cand c = q.top();
    q.pop();
    Sym& a = syms[c.pos];
    if (!a.alive || a.next < 0) continue;
    Sym& b = syms[a.next];
    auto it = merges_.find(pair_key(a.id, b.id));
    if (it == merges_.end() || it->second.new_id != c.new_id || it->second.rank != c.rank) continue;
    a.id = c.new_id;
    b.alive = false;
    a.next = b.next;
    if (b.next >= 0) syms[b.next].prev = c.pos;
    consider(a.prev);
    consider(c.pos);
  }
  for (int i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

void Tokenizer::encode_segment(std::string_view seg, bool first, std::vector<int>& out) const {
  if (seg.empty()) return;
  std::string normalized;
  if (nfc_) {
    normalized = nfc(seg);
    seg = normalized;
  }
  if (kind_ == Kind::byte_level) {
    std::string text;
    if (add_prefix_space_ && first && seg[0] != ' ') text = " ";
    text.append(seg);
    std::string mapped;
    for (std::string_view w : split_regex(text, regex_)) {
      mapped.clear();
      for (char c : w) append_utf8(mapped, byte_map().to_cp[uint8_t(c)]);
      bpe(mapped, out);
    }
    return;
  }
  std::string s;
  if (sp_prepend_ && (!sp_prepend_first_only_ || first)) s = kSpm;
  for (char c : seg) {
    if (c == ' ') s += kSpm;
    else s.push_back(c);
  }
  if (!sp_split_) {
    bpe(s, out);
    return;
  }
  // Metaspace split: each piece starts at a ▁ (merged with what follows).
  size_t start = 0;
  for (size_t p = s.find(kSpm, 1); p != std::string::npos; p = s.find(kSpm, p + 1)) {
    if (p > start) bpe(std::string_view(s).substr(start, p - start), out);
    start = p;
  }
  bpe(std::string_view(s).substr(start), out);
}

std::vector<int> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int> out;
  if (add_special_tokens) out = prefix_;
  size_t seg_start = 0, i = 0;
  bool first = true;
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (i < text.size()) {
    const Added* hit = nullptr;
    if (added_first_[static_cast<uint8_t>(text[i])])
      for (const auto& a : added_)
        if (text.compare(i, a.content.size(), a.content) == 0) {
          hit = &a;
          break;  // longest first
        }
    if (!hit) {
      ++i;
      continue;
    }
    size_t seg_end = i;
    if (hit->lstrip)
      while (seg_end > seg_start && ws(text[seg_end - 1])) --seg_end;
    encode_segment(text.substr(seg_start, seg_end - seg_start), first, out);
    if (seg_end > seg_start) first = false;
    out.push_back(hit->id);
    first = false;
    i += hit->content.size();
    if (hit->rstrip)
      while (i < text.size() && ws(text[i])) ++i;
    seg_start = i;
  }
  encode_segment(text.substr(seg_start), first, out);
  if (add_special_tokens) out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

std::string Tokenizer::token_bytes(int id) const {
  if (id < 0 || id >= static_cast<int>(id_to_token_.size())) throw_arg("token id", concat("0..", id_to_token_.size() - 1), id);
  const std::string& tok = id_to_token_[id];
  for (const auto& a : added_)
    if (a.id == id) return tok;
  std::string out;
  if (kind_ == Kind::byte_level) {
    const std::vector<Cp> cps = decode_utf8(tok);
    for (size_t i = 0; i + 1 < cps.size(); ++i) {
      auto it = byte_map().to_byte.find(cps[i].c);
      if (it != byte_map().to_byte.end()) out.push_back(static_cast<char>(it->second));
      else out.append(tok.substr(cps[i].pos, cps[i + 1].pos - cps[i].pos));
    }
    return out;
  }
  if (tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>') {
    for (int b = 0; b < 256; ++b)
      if (byte_ids_[b] == id) return std::string(1, static_cast<char>(b));
  }
  for (size_t p = 0; p < tok.size();) {
    if (tok.compare(p, kSpm.size(), kSpm) == 0) {
      out.push_back(' ');
      p += kSpm.size();
    } else {
      out.push_back(tok[p++]);
    }
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int>& ids, bool skip_special) const {
  std::string out;
  bool at_start = true;
  for (int id : ids) {
    if (skip_special && is_special(id)) continue;
    std::string b = token_bytes(id);
    if (kind_ == Kind::sentencepiece && sp_prepend_ && at_start && !b.empty() && b[0] == ' ' && !is_special(id))
      b.erase(0, 1);
    if (!is_special(id)) at_start = false;
    out += b;
  }
  return out;
}

}  // namespace unique::engine

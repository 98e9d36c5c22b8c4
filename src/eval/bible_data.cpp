// Reader of Debian's bible-kjv-text data file. Layout (bible-kjv's tsl.h): "EC" "02",
// an 80-byte description, window size and window count (4-byte big-endian), count + 1
// window offsets, a compress(1) header (magic 1F 9D, flags byte: max code bits, block
// mode), then the windows: each an LZW code stream as compress(1) writes it (9..maxbits
// bits, CLEAR = 256 in block mode) that decodes to window-size bytes of text.
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "unique/error.h"
#include "unique/eval/haystack.h"

namespace unique::eval {

using unique::detail::concat;

namespace {

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return (uint32_t(b[at]) << 24) | (uint32_t(b[at + 1]) << 16) | (uint32_t(b[at + 2]) << 8) | uint32_t(b[at + 3]);
}

// Decodes one LZW stream as compress(1) writes it. Codes are packed LSB first in groups
// of n_bits bytes (8 codes); when the code width grows or a CLEAR arrives, the rest of the
// current group is skipped, as the writer padded it.
void lzw_decode(const uint8_t* in, size_t size, int maxbits, bool block, size_t limit, const std::string& where,
                std::string& out) {
  const size_t start = out.size();
  const int first = block ? 257 : 256;
  std::vector<uint16_t> prefix(size_t(1) << maxbits, 0);
  std::vector<uint8_t> suffix(size_t(1) << maxbits, 0);
  for (int c = 0; c < 256; ++c) suffix[c] = static_cast<uint8_t>(c);
  std::vector<uint8_t> stack;
  size_t pos = 0, group_start = 0, group_bits = 0, bit = 0;
  int n_bits = 9, free_ent = first;
  auto group_end = [&] { return std::min(size, group_start + size_t(n_bits)); };
  auto next_code = [&]() -> int {
    // A group holds n_bits codes' worth of bytes; its last partial code is padding.
    if (bit + size_t(n_bits) > group_bits) {
      group_start = pos;
      if (group_start >= size) return -1;
      pos = group_end();
      group_bits = (pos - group_start) * 8;
      bit = 0;
      if (group_bits < size_t(n_bits)) return -1;
    }
    uint32_t v = 0;
    for (int k = 0; k < n_bits; ++k) {
      const size_t b = bit + size_t(k);
      v |= uint32_t((in[group_start + b / 8] >> (b % 8)) & 1) << k;
    }
    bit += size_t(n_bits);
    return static_cast<int>(v);
  };
  auto grow = [&] {  // a wider code starts a new group
    bit = group_bits;
  };
  int old = next_code();
  if (old < 0) return;
  UNIQUE_CHECK_ARG(old < 256, where, "a literal first code", old);
  uint8_t fin = static_cast<uint8_t>(old);
  out.push_back(static_cast<char>(fin));
  for (;;) {
    if (free_ent > (1 << n_bits) - 1 && n_bits < maxbits) {
      ++n_bits;
      grow();
    }
    int code = next_code();
    if (code < 0) break;
    if (code == 256 && block) {
      free_ent = first - 1;
      n_bits = 9;
      grow();
      code = next_code();
      if (code < 0) break;
      // After a clear the table restarts: the next code must be a literal.
      UNIQUE_CHECK_ARG(code < 256, where, "a literal after CLEAR", code);
      fin = static_cast<uint8_t>(code);
      out.push_back(static_cast<char>(fin));
      old = code;
      free_ent = first;
      continue;
    }
    UNIQUE_CHECK_ARG(code <= free_ent, where, concat("a code <= ", free_ent), code);
    const int incode = code;
    stack.clear();
    if (code == free_ent) {
      stack.push_back(fin);
      code = old;
    }
    while (code >= 256) {
      stack.push_back(suffix[code]);
      code = prefix[code];
      UNIQUE_CHECK_ARG(stack.size() <= (size_t(1) << maxbits), where, "an acyclic code table", "a cycle");
    }
    fin = suffix[code];
    stack.push_back(fin);
    UNIQUE_CHECK_ARG(out.size() - start + stack.size() <= limit, where, concat("<= ", limit, " decoded bytes"),
                     "more");
    out.append(stack.rbegin(), stack.rend());
    if (free_ent < (1 << maxbits)) {
      prefix[free_ent] = static_cast<uint16_t>(old);
      suffix[free_ent] = fin;
      ++free_ent;
    }
    old = incode;
  }
}

}  // namespace

std::string read_bible_data(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_arg(path, "a readable bible-kjv-text data file", "cannot open");
  const std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), {});
  return decode_bible_data(b, path);
}

std::string decode_bible_data(const std::vector<uint8_t>& b, const std::string& path) {
  UNIQUE_CHECK_ARG(b.size() >= 92 && b[0] == 'E' && b[1] == 'C' && b[2] == '0' && b[3] == '2', path,
                   "a file starting with \"EC02\" (bible-kjv-text format 02)", "other bytes");
  const uint32_t wsize = be32(b, 84), wnum = be32(b, 88);
  UNIQUE_CHECK_ARG(wsize >= 64 && wsize <= (1u << 24), path + " window size", "64..16777216", wsize);
  UNIQUE_CHECK_ARG(wnum >= 1 && 92 + (uint64_t(wnum) + 1) * 4 <= b.size(), path + " window count",
                   "a table that fits the file", wnum);
  std::vector<uint32_t> off(wnum + 1);
  for (uint32_t i = 0; i <= wnum; ++i) off[i] = be32(b, 92 + size_t(i) * 4);
  const size_t table_end = 92 + (size_t(wnum) + 1) * 4;
  UNIQUE_CHECK_ARG(b.size() >= table_end + 3 && b[table_end] == 0x1F && b[table_end + 1] == 0x9D, path,
                   "a compress(1) header (1F 9D) after the window table", "other bytes");
  const int maxbits = b[table_end + 2] & 0x1F;
  const bool block = (b[table_end + 2] & 0x80) != 0;
  UNIQUE_CHECK_ARG(maxbits >= 9 && maxbits <= 16, path + " code bits", "9..16", maxbits);
  std::string out;
  // A hint only: the header's sizes are not trusted for an allocation (a fuzzed header asked
  // for 4 GB); compress(1) text rarely expands more than 8x.
  out.reserve(std::min<size_t>(size_t(wsize) * wnum, b.size() * 8));
  for (uint32_t w = 0; w < wnum; ++w) {
    const std::string where = concat(path, " window ", w);
    UNIQUE_CHECK_ARG(off[w] >= table_end + 3 && off[w] <= off[w + 1] && off[w + 1] <= b.size(), where + " offsets",
                     "increasing and inside the file", concat(off[w], "..", off[w + 1]));
    const size_t before = out.size();
    lzw_decode(b.data() + off[w], off[w + 1] - off[w], maxbits, block, wsize, where, out);
    UNIQUE_CHECK_ARG(out.size() - before == wsize || w + 1 == wnum, where, concat(wsize, " bytes"),
                     out.size() - before);
  }
  return out;
}

}  // namespace unique::eval

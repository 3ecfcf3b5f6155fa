// Folding and word splitting for search indexes (annals/actors/xapian_projection.hpp): the
// same function on both sides, the index and the query, so that `jose` finds `José`.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "annals/actors/xapian_projection.hpp"

namespace annals::actors {

namespace {

// The base letters, in lower case, of U+00C0 to U+017F; "" keeps the character (the
// multiplication and division signs).
constexpr const char* latin_base[] = {
  "a", "a", "a",  "a",  "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i",  "i",  // U+00C0
  "d", "n", "o",  "o",  "o", "o", "o",  "",  "o", "u", "u", "u", "u", "y", "th", "ss", // U+00D0
  "a", "a", "a",  "a",  "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i",  "i",  // U+00E0
  "d", "n", "o",  "o",  "o", "o", "o",  "",  "o", "u", "u", "u", "u", "y", "th", "y",  // U+00F0
  "a", "a", "a",  "a",  "a", "a", "c",  "c", "c", "c", "c", "c", "c", "c", "d",  "d",  // U+0100
  "d", "d", "e",  "e",  "e", "e", "e",  "e", "e", "e", "e", "e", "g", "g", "g",  "g",  // U+0110
  "g", "g", "g",  "g",  "h", "h", "h",  "h", "i", "i", "i", "i", "i", "i", "i",  "i",  // U+0120
  "i", "i", "ij", "ij", "j", "j", "k",  "k", "k", "l", "l", "l", "l", "l", "l",  "l",  // U+0130
  "l", "l", "l",  "n",  "n", "n", "n",  "n", "n", "n", "n", "n", "o", "o", "o",  "o",  // U+0140
  "o", "o", "oe", "oe", "r", "r", "r",  "r", "r", "r", "s", "s", "s", "s", "s",  "s",  // U+0150
  "s", "s", "t",  "t",  "t", "t", "t",  "t", "u", "u", "u", "u", "u", "u", "u",  "u",  // U+0160
  "u", "u", "u",  "u",  "w", "w", "y",  "y", "y", "z", "z", "z", "z", "z", "z",  "s",  // U+0170
};
static_assert(sizeof(latin_base) / sizeof(latin_base[0]) == 0x180 - 0xC0);

constexpr std::size_t max_word = 64;

// The length of the UTF-8 sequence at `s[i]` and its code point; 0 for an invalid one.
std::size_t decode(std::string_view s, std::size_t i, std::uint32_t& cp) {
  auto b = static_cast<unsigned char>(s[i]);
  std::size_t n = b < 0x80           ? 1
                  : (b >> 5) == 0x6  ? 2
                  : (b >> 4) == 0xE  ? 3
                  : (b >> 3) == 0x1E ? 4
                                     : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  cp = n == 1 ? b : n == 2 ? (b & 0x1Fu) : n == 3 ? (b & 0x0Fu) : (b & 0x07u);
  for (std::size_t k = 1; k < n; ++k) {
    auto c = static_cast<unsigned char>(s[i + k]);
    if ((c >> 6) != 0x2)
      return 0;
    cp = (cp << 6) | (c & 0x3Fu);
  }
  static constexpr std::uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < least[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

bool is_word_byte(char c) {
  auto b = static_cast<unsigned char>(c);
  return b >= 0x80 || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

} // namespace

std::string search_fold(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    std::uint32_t cp = 0;
    auto n = decode(text, i, cp);
    if (n == 0) { // an invalid byte: dropped
      ++i;
      continue;
    }
    if (cp >= 'A' && cp <= 'Z')
      out += static_cast<char>(cp - 'A' + 'a');
    else if (cp >= 0xC0 && cp < 0x180 && *latin_base[cp - 0xC0] != '\0')
      out += latin_base[cp - 0xC0];
    else if (cp >= 0x300 && cp < 0x370) // combining accents (decomposed text): dropped
      ;
    else
      out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

std::vector<std::string> search_words(std::string_view text) {
  auto folded = search_fold(text);
  std::vector<std::string> words;
  std::string_view s = folded;
  for (std::size_t i = 0; i < s.size();) {
    if (!is_word_byte(s[i])) {
      ++i;
      continue;
    }
    auto j = i;
    while (j < s.size() && is_word_byte(s[j]))
      ++j;
    auto end = j;
    if (end - i > max_word) { // cut at a character boundary
      end = i + max_word;
      while (end > i && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80)
        --end;
    }
    words.emplace_back(s.substr(i, end - i));
    i = j;
  }
  return words;
}

} // namespace annals::actors

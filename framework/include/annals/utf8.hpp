#pragma once

#include <cstddef>
#include <string_view>

namespace annals {

/// The length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
/// surrogates, nothing above U+10FFFF) at the start of `s`, or 0 when there is none
/// (also for an empty `s`).
constexpr std::size_t utf8_sequence(std::string_view s) noexcept {
  if (s.empty())
    return 0;
  auto byte = [&s](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  auto c = byte(0);
  if (c < 0x80)
    return 1;
  std::size_t n = c >= 0xc2 && c <= 0xdf   ? 2
                  : c >= 0xe0 && c <= 0xef ? 3
                  : c >= 0xf0 && c <= 0xf4 ? 4
                                           : 0;
  if (n == 0 || s.size() < n)
    return 0;
  // The second byte's range depends on the first; the others are plain continuation bytes.
  unsigned char low = 0x80;
  unsigned char high = 0xbf;
  if (c == 0xe0)
    low = 0xa0;
  else if (c == 0xed)
    high = 0x9f;
  else if (c == 0xf0)
    low = 0x90;
  else if (c == 0xf4)
    high = 0x8f;
  if (byte(1) < low || byte(1) > high)
    return 0;
  for (std::size_t i = 2; i < n; ++i)
    if (byte(i) < 0x80 || byte(i) > 0xbf)
      return 0;
  return n;
}

/// The offset of the first byte of `s` that does not start a well-formed UTF-8 sequence,
/// or `s.size()` when all of `s` is valid UTF-8.
constexpr std::size_t utf8_invalid_at(std::string_view s) noexcept {
  std::size_t at = 0;
  while (at < s.size()) {
    auto n = utf8_sequence(s.substr(at));
    if (n == 0)
      return at;
    at += n;
  }
  return at;
}

} // namespace annals

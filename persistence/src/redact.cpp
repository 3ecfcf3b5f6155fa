#include "annals/persistence/redact.hpp"

#include <cctype>

namespace annals::persistence {

namespace {

bool is_key_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
}

// Replaces the value of every `password=` (a keyword that starts the text or follows a
// space, `?` or `&`) up to the end of the value: a space in keyword form (or the closing
// quote of a quoted value), `&` in a query.
std::string mask_password_values(std::string s) {
  constexpr std::string_view key = "password=";
  for (std::size_t pos = 0; (pos = s.find(key, pos)) != std::string::npos;) {
    if (pos > 0 && is_key_char(s[pos - 1])) { // e.g. `sslpassword=` is another keyword
      pos += key.size();
      continue;
    }
    auto begin = pos + key.size();
    auto end = begin;
    if (end < s.size() && s[end] == '\'') {
      ++end;
      while (end < s.size() && s[end] != '\'') {
        if (s[end] == '\\' && end + 1 < s.size())
          ++end;
        ++end;
      }
      if (end < s.size())
        ++end;
    } else {
      while (end < s.size() && s[end] != ' ' && s[end] != '&')
        ++end;
    }
    s.replace(begin, end - begin, "***");
    pos = begin + 3;
  }
  return s;
}

} // namespace

std::string redact_secrets(std::string_view address) {
  std::string s{address};
  auto scheme = s.find("://");
  if (scheme != std::string::npos) {
    // user[:password]@ up to the first '/', '?' or '#' after the scheme
    auto auth = scheme + 3;
    auto auth_end = s.find_first_of("/?#", auth);
    if (auth_end == std::string::npos)
      auth_end = s.size();
    auto at = s.rfind('@', auth_end);
    if (at != std::string::npos && at >= auth) {
      auto colon = s.find(':', auth);
      if (colon != std::string::npos && colon < at)
        s.erase(colon, at - colon);
    }
  }
  return mask_password_values(std::move(s));
}

std::string one_line(std::string_view text) {
  std::string s;
  for (char c : text) {
    bool space = c == '\n' || c == '\r' || c == '\t' || c == ' ';
    if (space && (s.empty() || s.back() == ' '))
      continue;
    s += space ? ' ' : c;
  }
  while (!s.empty() && s.back() == ' ')
    s.pop_back();
  return s;
}

} // namespace annals::persistence

#include "service/http.hpp"

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>

#include <boost/beast/core/string.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "annals/utf8.hpp"
#include "service/http/wire.hpp"

namespace service::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

namespace {

/// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD:
/// text from a request (a path, a header) may hold any bytes, a JSON string may not.
std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    auto n = annals::utf8_sequence(s);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      n = 1;
    } else {
      out.append(s.data(), n);
    }
    s.remove_prefix(n);
  }
  return out;
}

bool is_token_char(unsigned char c) {
  if (c >= '0' && c <= '9')
    return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
    return true;
  return std::string_view{"!#$%&'*+-.^_`|~"}.find(static_cast<char>(c)) != std::string_view::npos;
}

bool valid_field_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return is_token_char(static_cast<unsigned char>(c));
  });
}

bool valid_field_value(std::string_view value) {
  return value.find_first_of(std::string_view{"\r\n\0", 3}) == std::string_view::npos;
}

bool valid_response(const response& r) {
  if (r.status < 200 || r.status > 599 || !valid_field_value(r.content_type))
    return false;
  return std::all_of(r.headers.begin(), r.headers.end(), [](const auto& field) {
    return valid_field_name(field.first) && valid_field_value(field.second);
  });
}

bool has_close_token(std::string_view value) {
  // Connection is a comma-separated list of tokens.
  while (!value.empty()) {
    auto comma = value.find(',');
    auto token = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
      token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t'))
      token.remove_suffix(1);
    if (beast::iequals(token, "close"))
      return true;
  }
  return false;
}

} // namespace

namespace wire {

wire_response to_wire(response r, unsigned version, bool head, bool& close) {
  if (!valid_response(r))
    r = json_error(500, "internal_error", "the request handler produced an invalid response");
  wire_response m;
  m.version(version);
  m.result(r.status);
  for (auto& [name, value] : r.headers) {
    if (beast::iequals(name, "content-length") || beast::iequals(name, "transfer-encoding"))
      continue;
    if (beast::iequals(name, "connection")) {
      close = close || has_close_token(value);
      continue;
    }
    m.insert(name, value);
  }
  if (!r.content_type.empty())
    m.set(bhttp::field::content_type, r.content_type);
  if (r.status != 204 && r.status != 304) {
    m.content_length(r.body.size());
    if (!head)
      m.body() = std::move(r.body);
  }
  if (close)
    m.set(bhttp::field::connection, "close");
  else
    m.keep_alive(true);
  return m;
}

} // namespace wire

response json_error(unsigned status, std::string_view code, std::string_view message) {
  boost::json::object body;
  body["error"] = valid_utf8(code);
  body["message"] = valid_utf8(message);
  response r;
  r.status = status;
  r.body = boost::json::serialize(body) + "\n"; // a line, as every JSON body the service sends
  return r;
}

} // namespace service::http

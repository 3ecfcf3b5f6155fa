#include "service/http.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include "service/http/wire.hpp"

namespace service::http {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using error_code = boost::system::error_code;

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/// Decodes %XX escapes (and '+' as a space when `plus_is_space`); nullopt for a truncated or
/// non-hex escape.
std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size())
        return std::nullopt;
      int hi = hex_digit(in[i + 1]);
      int lo = hex_digit(in[i + 2]);
      if (hi < 0 || lo < 0)
        return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

/// Fills path, segments and query of `out` from a request target in origin form
/// ("/a/b?x=1"), absolute form ("http://host/a/b?x=1") or asterisk form ("*"). Returns false
/// for an unusable target.
bool parse_target(std::string_view target, request& out) {
  std::string_view rest = target;
  if (rest == "*") {
    out.path = "*";
    return true;
  }
  if (rest.empty())
    return false;
  if (rest.front() != '/') {
    auto scheme_end = rest.find("://");
    if (scheme_end == std::string_view::npos || scheme_end == 0)
      return false;
    rest.remove_prefix(scheme_end + 3);
    auto path_start = rest.find_first_of("/?#");
    rest = path_start == std::string_view::npos ? std::string_view{} : rest.substr(path_start);
  }
  if (auto hash = rest.find('#'); hash != std::string_view::npos)
    rest = rest.substr(0, hash);
  std::string_view raw_path = rest;
  std::string_view raw_query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    raw_path = rest.substr(0, q);
    raw_query = rest.substr(q + 1);
  }
  if (raw_path.empty())
    raw_path = "/";
  auto path = percent_decode(raw_path, false);
  if (!path)
    return false;
  out.path = std::move(*path);
  // Segments are decoded one by one so that an encoded '/' stays inside its segment.
  while (!raw_path.empty()) {
    auto slash = raw_path.find('/');
    auto raw_segment = raw_path.substr(0, slash);
    raw_path = slash == std::string_view::npos ? std::string_view{} : raw_path.substr(slash + 1);
    if (raw_segment.empty())
      continue;
    auto segment = percent_decode(raw_segment, false);
    if (!segment)
      return false;
    out.segments.push_back(std::move(*segment));
  }
  while (!raw_query.empty()) {
    auto amp = raw_query.find('&');
    auto pair = raw_query.substr(0, amp);
    raw_query = amp == std::string_view::npos ? std::string_view{} : raw_query.substr(amp + 1);
    if (pair.empty())
      continue;
    auto eq = pair.find('=');
    auto name = percent_decode(pair.substr(0, eq), true);
    auto value = eq == std::string_view::npos ? std::optional<std::string>{std::string{}}
                                              : percent_decode(pair.substr(eq + 1), true);
    if (!name || !value)
      return false;
    if (name->empty())
      continue;
    out.query[std::move(*name)] = std::move(*value);
  }
  return true;
}

} // namespace

namespace wire {

std::string to_lower(std::string_view in) {
  std::string out(in);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  return out;
}

void apply_limits(request_parser& parser, std::size_t body_limit) {
  parser.body_limit(body_limit);
  parser.header_limit(header_limit);
}

bool to_request(bhttp::request<bhttp::string_body>& msg, request& out) {
  if (!parse_target(msg.target(), out))
    return false;
  out.method = std::string(msg.method_string());
  out.target = std::string(msg.target());
  collect_fields(msg, out.headers);
  out.body = std::move(msg.body());
  return true;
}

std::optional<refusal> refusal_for(error_code ec, std::size_t body_limit) {
  if (ec == bhttp::error::body_limit)
    return refusal{413, "payload_too_large",
                   "the request body exceeds " + std::to_string(body_limit) + " bytes"};
  if (ec == bhttp::error::header_limit)
    return refusal{431, "headers_too_large", "the request header exceeds the limit"};
  static const auto& http_category = bhttp::make_error_code(bhttp::error::bad_method).category();
  if (ec.category() == http_category && ec != bhttp::error::end_of_stream
      && ec != bhttp::error::partial_message)
    return refusal{400, "bad_request", "malformed request: " + ec.message()};
  return std::nullopt;
}

refusal bad_target() {
  return {400, "bad_request", "malformed request target"};
}

} // namespace wire

std::string request::header(std::string_view lower_name) const {
  auto it = headers.find(std::string(lower_name));
  return it == headers.end() ? std::string{} : it->second;
}

result<request> parse_request(std::string_view raw, std::size_t body_limit, std::size_t* used) {
  auto refused = [](const wire::refusal& why) {
    return result<request>::failure(std::to_string(why.status) + " " + std::string{why.code} + ": "
                                    + why.message);
  };
  wire::request_parser parser;
  wire::apply_limits(parser, body_limit);
  asio::const_buffer rest{raw.data(), raw.size()};
  error_code ec;
  while (!parser.is_done()) {
    auto n = parser.put(rest, ec);
    rest += n;
    if (ec == bhttp::error::need_more)
      ec = {};
    if (!ec && n == 0) {
      // The parser cannot go on with what is left: the bytes end here.
      parser.put_eof(ec);
      if (!ec && !parser.is_done())
        ec = bhttp::error::partial_message;
    }
    if (ec) {
      if (auto why = wire::refusal_for(ec, body_limit))
        return refused(*why);
      return result<request>::failure("the request ends before it is complete: " + ec.message());
    }
  }
  auto msg = parser.release();
  request r;
  if (!wire::to_request(msg, r))
    return refused(wire::bad_target());
  if (used != nullptr)
    *used = raw.size() - rest.size();
  return r;
}

} // namespace service::http

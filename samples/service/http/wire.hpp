#pragma once

// What the HTTP server and parse_request share: reading a request with Beast's parser and
// its limits, the refusals of a request the handler never sees, and turning a response into
// the message written on the wire. Internal to annals_http (it includes Beast).

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

#include "service/http.hpp"

namespace service::http::wire {

/// The largest request header block (request line and fields).
constexpr std::uint32_t header_limit = 16 * 1024;

using request_parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

/// Sets the limits every request is read with.
void apply_limits(request_parser& parser, std::size_t body_limit);

/// `in` with ASCII letters in lower case.
std::string to_lower(std::string_view in);

/// Adds the header fields of `msg` to `out` under lower-cased names; a repeated field is
/// joined to the earlier value with ", ".
template <class Message>
void collect_fields(const Message& msg, std::map<std::string, std::string>& out) {
  for (const auto& field : msg) {
    auto [it, inserted] = out.emplace(to_lower(field.name_string()), field.value());
    if (!inserted) {
      it->second += ", ";
      it->second.append(field.value().data(), field.value().size());
    }
  }
}

/// Fills `out` from a parsed message; false for an unusable request target.
bool to_request(boost::beast::http::request<boost::beast::http::string_body>& msg, request& out);

/// Why a request is refused before it reaches the handler.
struct refusal {
  unsigned status;
  std::string_view code;
  std::string message;
};

/// The refusal for a read that failed with `ec`, or nullopt when the peer closed, reset or
/// timed out (nothing to answer).
std::optional<refusal> refusal_for(boost::system::error_code ec, std::size_t body_limit);

/// The refusal of a request whose target cannot be decoded.
refusal bad_target();

using wire_response = boost::beast::http::response<boost::beast::http::string_body>;

/// Turns `r` into a message for an HTTP/`version` request (`head`: a HEAD request, the body
/// is left out). A response that is not valid (see `response`) becomes a 500
/// "internal_error". `close` is set when the handler asked for "Connection: close";
/// Content-Length, Transfer-Encoding and Connection are always the server's own.
wire_response to_wire(response r, unsigned version, bool head, bool& close);

} // namespace service::http::wire

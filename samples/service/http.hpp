#pragma once

// A small HTTP/1.1 server layer: it parses requests, hands them to one handler and writes
// the handler's responses back. Boost.Beast and Boost.Asio stay inside http/, so this
// header is cheap to include.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "service/result.hpp"

namespace service::http {

/// One parsed request.
struct request {
  /// The request method as sent, e.g. "GET" or "POST".
  std::string method;
  /// The raw request target, e.g. "/accounts/a1/events?from=2".
  std::string target;
  /// The percent-decoded path, without the query.
  std::string path;
  /// The path split on '/', each segment percent-decoded; empty segments are dropped. A
  /// "%2F" inside a segment stays part of that segment.
  std::vector<std::string> segments;
  /// Percent-decoded query parameters, '+' read as a space. A parameter without '=' maps to
  /// the empty string; when a name repeats, the last value wins.
  std::map<std::string, std::string> query;
  /// Header fields with lower-cased names; repeated fields are joined with ", ".
  std::map<std::string, std::string> headers;
  std::string body;

  /// The value of the header `lower_name` (lower-case), or "" when absent.
  std::string header(std::string_view lower_name) const;
};

/// The answer to one request. Content-Length is computed from `body` (204 and 304 carry
/// neither); an empty `content_type` omits the Content-Type field. Extra `headers` are added
/// as given, except Content-Length, Transfer-Encoding and Connection, which the server owns
/// ("Connection: close" among them closes the connection after this response). A status
/// outside 200-599, or a header name or value that is not a valid field (CR, LF, NUL), turns
/// the response into a 500 "internal_error".
struct response {
  unsigned status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
};

/// A response with `status` and the body {"error":code,"message":message} and a newline.
/// Bytes of `code` or `message` that are not valid UTF-8 (a message may quote a request's
/// path) become U+FFFD, so the body is always valid JSON.
response json_error(unsigned status, std::string_view code, std::string_view message);

/// Parses the first request in `raw` the way the server parses what a connection sends: the
/// same parser, header limit, body limit and target decoding, so the request equals the one the
/// handler would see. Bytes after that request are left alone; `used`, when given, receives
/// the number of bytes the request took (a pipelined next request starts there). Fails, with a
/// message saying why,
/// for a malformed request or target (the server answers 400 "bad_request"), a body above
/// `body_limit` (413 "payload_too_large"), an oversized header block (431
/// "headers_too_large"), and bytes that end before the request does (the server waits for
/// more).
result<request> parse_request(std::string_view raw, std::size_t body_limit = 64 * 1024,
                              std::size_t* used = nullptr);

/// Completes one request. It may be called from any thread; the first call wins and later
/// calls are ignored. When every copy is destroyed without a call, the request is answered
/// with 500 "internal_error".
using responder = std::function<void(response)>;

/// Called once for every well-formed request, on one of the server's threads; it should
/// return quickly and may pass the responder on to finish the request elsewhere. An exception
/// escaping the handler is answered with 500 "internal_error" (unless it already responded).
using handler = std::function<void(request, responder)>;

struct server_options {
  std::string host = "127.0.0.1";
  /// 0 binds any free port; server::port() reports the one chosen.
  unsigned short port = 8080;
  /// Threads running the I/O and the handler; 0 counts as 1.
  std::size_t threads = 2;
  /// The largest accepted request body; a larger one is answered with 413.
  std::size_t body_limit = 64 * 1024;
  /// How long a connection may wait for (or take to send) the next request, and the bound on
  /// writing a response.
  std::chrono::seconds idle_timeout{30};
};

/// An HTTP/1.1 server with keep-alive. Requests on one connection are handled one after
/// another: the next request is read once the previous response is written.
///
/// Error responses produced by the server itself (JSON, see json_error): 400 "bad_request"
/// for a malformed request, 413 "payload_too_large" for a body above the limit, 431
/// "headers_too_large" for an oversized header block, 500 "internal_error" when the handler
/// throws, drops its responder or produces an invalid response. 400, 413 and 431 close the
/// connection.
class server {
public:
  /// Binds `options.host:options.port`, listens and starts serving on `options.threads`
  /// threads. A bind or listen failure (e.g. the address is in use) is returned as an error.
  static result<std::unique_ptr<server>> open(server_options options, handler on_request);

  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Calls stop().
  ~server();

  /// The bound port.
  unsigned short port() const;

  /// Closes the listening socket: new connections are refused, open connections keep
  /// working (including new requests on them).
  void stop_accepting();

  /// Blocks until no request is in progress, i.e. every request handed to the handler has
  /// had its responder called and its response written (or dropped because the connection
  /// is gone). Returns false when that does not happen within `bound`.
  bool wait_idle(std::chrono::milliseconds bound);

  /// Stops accepting, closes every connection, discards responses that are still pending and
  /// joins the threads. Idempotent. Called from the handler, it joins the other threads and
  /// leaves the calling one to finish on its own.
  void stop();

  /// The number of responses written completely, including the server's own error
  /// responses.
  std::uint64_t requests_served() const;

private:
  struct impl;

  explicit server(std::unique_ptr<impl> state);

  std::unique_ptr<impl> impl_;
};

} // namespace service::http

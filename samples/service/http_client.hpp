#pragma once

// A minimal blocking HTTP/1.1 client for tests and tools. Boost.Beast and Boost.Asio stay
// inside http_client.cpp.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "service/result.hpp"

namespace service::http {

struct client_response {
  unsigned status = 0;
  std::string body;
  /// Header fields with lower-cased names; repeated fields are joined with ", ".
  std::map<std::string, std::string> headers;
};

/// Sends requests over one keep-alive connection, opened on first use and reopened when the
/// server has closed it. Not thread-safe: use one client per thread.
///
/// Retries: a request is sent a second time (on a new connection) only when the reused
/// connection turned out to be closed before the request could have been processed:
///  - the connection is checked before sending; if the server has closed it (or it holds
///    unexpected bytes) a new one is opened and nothing has been sent on the old one;
///  - writing the request failed: the server cannot have received the complete request;
///  - the server closed the connection without sending a single byte of the response, and
///    the method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE). For other methods the
///    server may have acted on the request, so the error is returned instead.
/// A fresh connection is never retried, and neither is a timeout or a response that ended
/// part-way.
class client {
public:
  client(std::string host, unsigned short port);
  ~client();

  client(client&&) noexcept;
  client& operator=(client&&) noexcept;

  /// Sends one request and reads the response, within `timeout` overall (connecting and a
  /// retry included). A Host field is added unless given; a non-empty body without a
  /// Content-Type field is sent as application/json. Errors (connect, I/O, timeout, a
  /// malformed response, header names or values with CR/LF) come back as the result's error.
  result<client_response> request(std::string_view method, std::string_view target,
                                  std::string_view body = {},
                                  std::vector<std::pair<std::string, std::string>> headers = {},
                                  std::chrono::milliseconds timeout = std::chrono::seconds{10});

  /// Closes the connection, if open; the next request opens a new one.
  void close();

  /// How many connections this client has opened so far.
  std::uint64_t connections_opened() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Connects, writes `bytes`, shuts down the sending side and returns everything the server
/// sends until it closes the connection or `timeout` passes. Returns "" when the connection
/// cannot be made.
std::string raw_exchange(std::string_view host, unsigned short port, std::string bytes,
                         std::chrono::milliseconds timeout = std::chrono::seconds{5});

} // namespace service::http

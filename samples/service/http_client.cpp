#include "service/http_client.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "service/http/wire.hpp"

namespace service::http {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using clock_type = asio::steady_timer::clock_type;

/// The largest response body the client accepts.
constexpr std::uint64_t response_body_limit = 64 * 1024 * 1024;

std::vector<tcp::endpoint> resolve(asio::io_context& ioc, const std::string& host,
                                   unsigned short port, error_code& ec) {
  std::vector<tcp::endpoint> endpoints;
  auto address = asio::ip::make_address(host, ec);
  if (!ec) {
    endpoints.emplace_back(address, port);
    return endpoints;
  }
  tcp::resolver resolver{ioc};
  auto found = resolver.resolve(host, std::to_string(port), ec);
  if (!ec)
    for (const auto& entry : found)
      endpoints.push_back(entry.endpoint());
  return endpoints;
}

/// Runs `ioc` until the operations started on it have completed.
void run(asio::io_context& ioc) {
  ioc.restart();
  ioc.run();
}

error_code connect(asio::io_context& ioc, beast::tcp_stream& stream, const std::string& host,
                   unsigned short port, clock_type::time_point deadline) {
  error_code ec;
  auto endpoints = resolve(ioc, host, port, ec);
  if (ec)
    return ec;
  stream.expires_at(deadline);
  stream.async_connect(endpoints, [&ec](error_code e, const tcp::endpoint&) { ec = e; });
  run(ioc);
  return ec;
}

std::string describe(error_code ec) {
  if (ec == beast::error::timeout)
    return "timed out";
  return ec.message();
}

bool valid_field(const std::pair<std::string, std::string>& field) {
  constexpr std::string_view forbidden{"\r\n\0", 3};
  return !field.first.empty() && field.first.find_first_of(forbidden) == std::string::npos
         && field.first.find_first_of(" :\t") == std::string::npos
         && field.second.find_first_of(forbidden) == std::string::npos;
}

bool idempotent(std::string_view method) {
  for (std::string_view m : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
    if (method == m)
      return true;
  return false;
}

bool closed_by_peer(error_code ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof
         || ec == asio::error::connection_reset || ec == asio::error::connection_aborted
         || ec == asio::error::broken_pipe;
}

/// What one attempt on one connection produced.
struct attempt {
  std::optional<client_response> response;
  error_code ec;
  /// Whether a second attempt on a new connection is safe (see client).
  bool retryable = false;
};

} // namespace

struct client::impl {
  std::string host;
  unsigned short port;
  asio::io_context ioc{1};
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  std::uint64_t opened = 0;

  impl(std::string h, unsigned short p) : host(std::move(h)), port(p) {}

  void drop() {
    if (stream) {
      error_code ec;
      stream->socket().shutdown(tcp::socket::shutdown_both, ec);
      stream->close();
      stream.reset();
    }
    buffer.clear();
  }

  /// Whether the open connection still looks usable: no end of stream, error or unexpected
  /// data is waiting on it.
  bool alive() {
    if (!stream || !stream->socket().is_open() || buffer.size() != 0)
      return false;
    auto& socket = stream->socket();
    error_code ec;
    socket.non_blocking(true, ec);
    if (ec)
      return false;
    char byte = 0;
    socket.receive(asio::buffer(&byte, 1), tcp::socket::message_peek, ec);
    error_code ignored;
    socket.non_blocking(false, ignored);
    return ec == asio::error::would_block;
  }

  error_code open(clock_type::time_point deadline) {
    stream.emplace(ioc);
    buffer.clear();
    auto ec = connect(ioc, *stream, host, port, deadline);
    if (ec) {
      drop();
      return ec;
    }
    ++opened;
    error_code ignored;
    stream->socket().set_option(tcp::no_delay(true), ignored);
    return {};
  }

  attempt exchange(bhttp::request<bhttp::string_body>& req, bool head,
                   clock_type::time_point deadline) {
    attempt out;
    stream->expires_at(deadline);
    bhttp::async_write(*stream, req, [&out](error_code e, std::size_t) { out.ec = e; });
    run(ioc);
    if (out.ec) {
      // The request did not reach the server completely, so it cannot have been processed.
      out.retryable = out.ec != beast::error::timeout;
      return out;
    }
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(response_body_limit);
    parser.skip(head);
    stream->expires_at(deadline);
    bhttp::async_read(*stream, buffer, parser, [&out](error_code e, std::size_t) { out.ec = e; });
    run(ioc);
    if (out.ec) {
      out.retryable =
        !parser.got_some() && closed_by_peer(out.ec) && idempotent(req.method_string());
      return out;
    }
    auto msg = parser.release();
    client_response res;
    res.status = msg.result_int();
    res.body = std::move(msg.body());
    wire::collect_fields(msg, res.headers);
    if (!msg.keep_alive())
      drop();
    out.response = std::move(res);
    return out;
  }
};

client::client(std::string host, unsigned short port)
  : impl_(std::make_unique<impl>(std::move(host), port)) {}

client::~client() = default;
client::client(client&&) noexcept = default;
client& client::operator=(client&&) noexcept = default;

result<client_response> client::request(std::string_view method, std::string_view target,
                                        std::string_view body,
                                        std::vector<std::pair<std::string, std::string>> headers,
                                        std::chrono::milliseconds timeout) {
  using failure = result<client_response>;
  auto deadline = clock_type::now() + timeout;
  if (method.empty() || method.find_first_of(" \r\n") != std::string_view::npos)
    return failure::failure("invalid method");
  if (target.empty() || target.find_first_of(" \r\n") != std::string_view::npos)
    return failure::failure("invalid target");
  bhttp::request<bhttp::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  bool has_host = false;
  bool has_type = false;
  for (const auto& field : headers) {
    if (!valid_field(field))
      return failure::failure("invalid header field: " + field.first);
    has_host = has_host || beast::iequals(field.first, "host");
    has_type = has_type || beast::iequals(field.first, "content-type");
    req.insert(field.first, field.second);
  }
  auto& host = impl_->host;
  if (!has_host)
    req.set(bhttp::field::host, (host.find(':') != std::string::npos ? "[" + host + "]" : host)
                                  + ":" + std::to_string(impl_->port));
  if (!body.empty() && !has_type)
    req.set(bhttp::field::content_type, "application/json");
  req.body() = std::string(body);
  req.prepare_payload();
  bool head = method == "HEAD";

  for (int round = 0;; ++round) {
    if (impl_->stream && !impl_->alive())
      impl_->drop();
    bool reused = impl_->stream.has_value();
    if (!reused) {
      if (auto ec = impl_->open(deadline))
        return failure::failure("cannot connect to " + host + ":" + std::to_string(impl_->port)
                                + ": " + describe(ec));
    }
    auto out = impl_->exchange(req, head, deadline);
    if (out.response)
      return std::move(*out.response);
    impl_->drop();
    if (!(reused && round == 0 && out.retryable))
      return failure::failure(std::string(method) + " " + std::string(target) + ": "
                              + describe(out.ec));
  }
}

void client::close() {
  impl_->drop();
}

std::uint64_t client::connections_opened() const {
  return impl_->opened;
}

std::string raw_exchange(std::string_view host, unsigned short port, std::string bytes,
                         std::chrono::milliseconds timeout) {
  auto deadline = clock_type::now() + timeout;
  asio::io_context ioc{1};
  beast::tcp_stream stream{ioc};
  if (connect(ioc, stream, std::string(host), port, deadline))
    return {};
  // A failed write still leaves whatever the server answered (e.g. an early error) readable.
  stream.expires_at(deadline);
  asio::async_write(stream, asio::buffer(bytes), [](error_code, std::size_t) {});
  run(ioc);
  error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  std::string out;
  std::array<char, 4096> chunk{};
  for (;;) {
    std::size_t n = 0;
    stream.expires_at(deadline);
    stream.async_read_some(asio::buffer(chunk), [&](error_code e, std::size_t k) {
      ec = e;
      n = k;
    });
    run(ioc);
    out.append(chunk.data(), n);
    if (ec)
      break;
  }
  return out;
}

} // namespace service::http

#include "service/http.hpp"

#include "annals/utf8.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_map>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
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
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

namespace service::http {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

/// The largest request header block (request line and fields).
constexpr std::uint32_t header_limit = 16 * 1024;
/// After a response that closes the connection the server stops sending and reads (and
/// discards) what the peer still sends, so that the peer sees the response instead of a
/// reset; this bounds that phase in time and bytes.
constexpr std::chrono::seconds linger_time{2};
constexpr std::size_t linger_limit = 1024 * 1024;
/// The pause before accepting again after running out of descriptors or memory.
constexpr std::chrono::milliseconds accept_retry_delay{100};

// -- target parsing ------------------------------------------------------------------------

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

std::string to_lower(std::string_view in) {
  std::string out(in);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  return out;
}

// -- request reading -----------------------------------------------------------------------

using request_parser = bhttp::request_parser<bhttp::string_body>;

/// Sets the limits every request is read with.
void apply_limits(request_parser& parser, std::size_t body_limit) {
  parser.body_limit(body_limit);
  parser.header_limit(header_limit);
}

/// Fills `out` from a parsed message; false for an unusable request target.
bool to_request(bhttp::request<bhttp::string_body>& msg, request& out) {
  if (!parse_target(msg.target(), out))
    return false;
  out.method = std::string(msg.method_string());
  out.target = std::string(msg.target());
  for (const auto& field : msg) {
    auto [it, inserted] = out.headers.emplace(to_lower(field.name_string()), field.value());
    if (!inserted) {
      it->second += ", ";
      it->second.append(field.value().data(), field.value().size());
    }
  }
  out.body = std::move(msg.body());
  return true;
}

/// Why a request is refused before it reaches the handler.
struct refusal {
  unsigned status;
  std::string_view code;
  std::string message;
};

/// The refusal for a read that failed with `ec`, or nullopt when the peer closed, reset or
/// timed out (nothing to answer).
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

const refusal bad_target{400, "bad_request", "malformed request target"};

// -- response building ---------------------------------------------------------------------

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

using wire_response = bhttp::response<bhttp::string_body>;

/// Turns `r` into a message. `close` is set when the handler asked for "Connection: close";
/// Content-Length, Transfer-Encoding and Connection are always the server's own.
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

// -- server state --------------------------------------------------------------------------

class session;

/// The state shared by the server, its threads, its connections and outstanding responders.
/// Asynchronous handlers refer to it by plain pointer: they live inside `ioc`, which it owns.
struct core : std::enable_shared_from_this<core> {
  core(server_options opts, handler h)
    : options(std::move(opts)), on_request(std::move(h)),
      ioc(static_cast<int>(std::max<std::size_t>(options.threads, 1))) {}

  const server_options options;
  const handler on_request;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> served{0};

  std::mutex idle_mutex;
  std::condition_variable idle_cv;
  std::size_t in_flight = 0;

  std::mutex sessions_mutex;
  bool admitting = true;
  std::uint64_t next_session = 0;
  std::unordered_map<std::uint64_t, std::weak_ptr<session>> sessions;

  std::mutex acceptor_mutex;
  unsigned short port = 0;

  // Declared after everything above: handlers destroyed together with the io_context may
  // still use those members. The I/O objects below are destroyed before the io_context.
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  asio::steady_timer accept_retry{ioc};

  void begin_request() {
    std::lock_guard<std::mutex> guard{idle_mutex};
    ++in_flight;
  }

  void end_request() {
    {
      std::lock_guard<std::mutex> guard{idle_mutex};
      --in_flight;
    }
    idle_cv.notify_all();
  }

  bool wait_idle(std::chrono::milliseconds bound) {
    std::unique_lock<std::mutex> lock{idle_mutex};
    return idle_cv.wait_for(lock, bound, [this] { return in_flight == 0; });
  }

  /// Registers a new connection; false once the server is stopping.
  bool admit(const std::shared_ptr<session>& s, std::uint64_t& id) {
    std::lock_guard<std::mutex> guard{sessions_mutex};
    if (!admitting)
      return false;
    id = next_session++;
    sessions.emplace(id, s);
    return true;
  }

  void forget(std::uint64_t id) {
    std::lock_guard<std::mutex> guard{sessions_mutex};
    sessions.erase(id);
  }

  /// Refuses further connections and returns the live ones.
  std::vector<std::shared_ptr<session>> close_admission() {
    std::lock_guard<std::mutex> guard{sessions_mutex};
    admitting = false;
    std::vector<std::shared_ptr<session>> live;
    for (auto& [id, weak] : sessions)
      if (auto s = weak.lock())
        live.push_back(std::move(s));
    return live;
  }

  void do_accept();
  void on_accept(error_code ec, tcp::socket socket);

  void close_listener() {
    std::lock_guard<std::mutex> guard{acceptor_mutex};
    error_code ec;
    accept_retry.cancel();
    acceptor.close(ec);
  }
};

/// One connection. All its work runs on its strand; deliver() and abort() may be called from
/// any thread and post onto it.
class session : public std::enable_shared_from_this<session> {
public:
  session(core& owner, tcp::socket socket)
    : core_(owner), strand_(socket.get_executor()), stream_(std::move(socket)) {}

  session(const session&) = delete;
  session& operator=(const session&) = delete;

  ~session() {
    if (awaiting_)
      core_.end_request();
    if (admitted_)
      core_.forget(id_);
  }

  void start() {
    error_code ec;
    stream_.socket().set_option(tcp::no_delay(true), ec);
    if (!core_.admit(shared_from_this(), id_)) {
      stream_.close();
      return;
    }
    admitted_ = true;
    asio::dispatch(strand_, [self = shared_from_this()] { self->do_read(); });
  }

  /// Queues the response to the pending request; dropped once the server is stopping.
  void deliver(response r) {
    if (core_.stopping)
      return;
    asio::post(strand_, [self = shared_from_this(), r = std::move(r)]() mutable {
      self->write_reply(std::move(r));
    });
  }

  /// Closes the connection and gives up on a pending request.
  void abort() {
    asio::post(strand_, [self = shared_from_this()] {
      self->close_now();
      self->finish_request();
    });
  }

private:
  void do_read() {
    if (closed_)
      return;
    parser_.emplace();
    apply_limits(*parser_, core_.options.body_limit);
    header_seen_ = false;
    stream_.expires_after(core_.options.idle_timeout);
    read_some();
  }

  // The request is read piecewise until the parser is done: one read primitive serves header
  // and body alike, and the deadline set before the header (and again before the body)
  // covers every piece.
  void read_some() {
    bhttp::async_read_some(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(error_code ec) {
    if (ec)
      return on_read_error(ec);
    if (parser_->is_done())
      return dispatch_request();
    if (!header_seen_ && parser_->is_header_done()) {
      header_seen_ = true;
      stream_.expires_after(core_.options.idle_timeout);
      const auto& req = parser_->get();
      if (req.version() >= 11 && beast::iequals(req[bhttp::field::expect], "100-continue")) {
        static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
        asio::async_write(stream_, asio::buffer(interim.data(), interim.size()),
                          [self = shared_from_this()](error_code write_ec, std::size_t) {
                            if (write_ec)
                              return self->close_now();
                            self->read_some();
                          });
        return;
      }
    }
    read_some();
  }

  void on_read_error(error_code ec) {
    parser_.reset();
    if (auto refused = refusal_for(ec, core_.options.body_limit))
      return reject(*refused);
    // The peer closed, reset or timed out.
    close_now();
  }

  void dispatch_request() {
    auto msg = parser_->release();
    parser_.reset();
    request r;
    if (!to_request(msg, r))
      return reject(bad_target);
    version_ = msg.version();
    keep_alive_ = msg.keep_alive();
    head_ = msg.method() == bhttp::verb::head;
    awaiting_ = true;
    core_.begin_request();
    stream_.expires_never();
    auto reply = std::make_shared<reply_state>(core_.shared_from_this(), shared_from_this());
    try {
      core_.on_request(std::move(r), [reply](response res) { reply->deliver(std::move(res)); });
    } catch (...) {
      reply->deliver(json_error(500, "internal_error", "the request handler failed"));
    }
  }

  /// Answers a request the handler never saw and closes the connection afterwards.
  void reject(const refusal& why) {
    bool close = true;
    send(to_wire(json_error(why.status, why.code, why.message), 11, false, close), true, false);
  }

  void write_reply(response r) {
    if (!awaiting_)
      return;
    if (closed_ || core_.stopping)
      return finish_request();
    bool close = !keep_alive_;
    auto msg = to_wire(std::move(r), version_, head_, close);
    send(std::move(msg), close, true);
  }

  void send(wire_response msg, bool close, bool counted) {
    reply_.emplace(std::move(msg));
    stream_.expires_after(core_.options.idle_timeout);
    bhttp::async_write(stream_, *reply_,
                       [self = shared_from_this(), close, counted](error_code ec, std::size_t) {
                         self->on_write(ec, close, counted);
                       });
  }

  void on_write(error_code ec, bool close, bool counted) {
    reply_.reset();
    if (!ec)
      core_.served.fetch_add(1);
    if (counted)
      finish_request();
    if (ec)
      return close_now();
    if (close || core_.stopping)
      return graceful_close();
    do_read();
  }

  void finish_request() {
    if (!awaiting_)
      return;
    awaiting_ = false;
    core_.end_request();
  }

  void graceful_close() {
    if (closed_)
      return;
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec)
      return close_now();
    lingered_ = 0;
    stream_.expires_after(linger_time);
    linger();
  }

  void linger() {
    stream_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](error_code ec, std::size_t n) {
                              self->lingered_ += n;
                              if (ec || self->lingered_ > linger_limit)
                                return self->close_now();
                              self->linger();
                            });
  }

  void close_now() {
    if (closed_)
      return;
    closed_ = true;
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  /// Backs one responder: the first deliver() wins, and the destructor answers with a 500 if
  /// nobody did. It keeps the core (and so the io_context) alive for as long as the session
  /// it points to.
  struct reply_state {
    reply_state(std::shared_ptr<core> c, std::shared_ptr<session> s)
      : owner(std::move(c)), target(std::move(s)) {}

    reply_state(const reply_state&) = delete;
    reply_state& operator=(const reply_state&) = delete;

    ~reply_state() {
      try {
        deliver(json_error(500, "internal_error", "the request handler did not respond"));
      } catch (...) {
        // Out of memory while building the fallback; the request ends with the session.
      }
    }

    void deliver(response r) {
      if (!answered.exchange(true))
        target->deliver(std::move(r));
    }

    std::shared_ptr<core> owner; // released after `target`
    std::shared_ptr<session> target;
    std::atomic<bool> answered{false};
  };

  core& core_;
  asio::any_io_executor strand_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<request_parser> parser_;
  std::optional<wire_response> reply_;
  std::array<char, 4096> discard_{};
  std::size_t lingered_ = 0;
  std::uint64_t id_ = 0;
  unsigned version_ = 11;
  bool admitted_ = false;
  bool keep_alive_ = false;
  bool head_ = false;
  bool header_seen_ = false;
  bool awaiting_ = false;
  bool closed_ = false;
};

void core::do_accept() {
  std::lock_guard<std::mutex> guard{acceptor_mutex};
  if (!acceptor.is_open())
    return;
  acceptor.async_accept(asio::make_strand(ioc), [this](error_code ec, tcp::socket socket) {
    on_accept(ec, std::move(socket));
  });
}

void core::on_accept(error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted)
    return;
  if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space
      || ec == asio::error::no_memory) {
    // Accepting again at once would spin; connections wait in the backlog meanwhile.
    std::lock_guard<std::mutex> guard{acceptor_mutex};
    if (!acceptor.is_open())
      return;
    accept_retry.expires_after(accept_retry_delay);
    accept_retry.async_wait([this](error_code wait_ec) {
      if (!wait_ec)
        do_accept();
    });
    return;
  }
  if (!ec && !stopping) {
    try {
      std::make_shared<session>(*this, std::move(socket))->start();
    } catch (const std::exception&) {
      // Out of memory: the socket closes with the failed session.
    }
  }
  do_accept();
}

} // namespace

// -- public API ----------------------------------------------------------------------------

std::string request::header(std::string_view lower_name) const {
  auto it = headers.find(std::string(lower_name));
  return it == headers.end() ? std::string{} : it->second;
}

response json_error(unsigned status, std::string_view code, std::string_view message) {
  boost::json::object body;
  body["error"] = valid_utf8(code);
  body["message"] = valid_utf8(message);
  response r;
  r.status = status;
  r.body = boost::json::serialize(body) + "\n"; // a line, as every JSON body the service sends
  return r;
}

result<request> parse_request(std::string_view raw, std::size_t body_limit, std::size_t* used) {
  auto refused = [](const refusal& why) {
    return result<request>::failure(std::to_string(why.status) + " " + std::string{why.code} + ": "
                                    + why.message);
  };
  request_parser parser;
  apply_limits(parser, body_limit);
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
      if (auto why = refusal_for(ec, body_limit))
        return refused(*why);
      return result<request>::failure("the request ends before it is complete: " + ec.message());
    }
  }
  auto msg = parser.release();
  request r;
  if (!to_request(msg, r))
    return refused(bad_target);
  if (used != nullptr)
    *used = raw.size() - rest.size();
  return r;
}

struct server::impl {
  std::shared_ptr<core> state;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::mutex stop_mutex;
  bool stopped = false;
};

server::server(std::unique_ptr<impl> state) : impl_(std::move(state)) {}

server::~server() {
  stop();
}

result<std::unique_ptr<server>> server::open(server_options options, handler on_request) {
  using failure = result<std::unique_ptr<server>>;
  if (!on_request)
    return failure::failure("no request handler");
  auto host = options.host;
  auto port = options.port;
  auto where = host + ":" + std::to_string(port);
  auto c = std::make_shared<core>(std::move(options), std::move(on_request));
  std::vector<tcp::endpoint> endpoints;
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (!ec) {
    endpoints.emplace_back(address, port);
  } else {
    tcp::resolver resolver{c->ioc};
    auto found = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
    if (ec)
      return failure::failure("cannot resolve " + where + ": " + ec.message());
    for (const auto& entry : found)
      endpoints.push_back(entry.endpoint());
  }
  std::string last_error = "no address";
  for (const auto& endpoint : endpoints) {
    error_code ignored;
    c->acceptor.open(endpoint.protocol(), ec);
    if (!ec)
      c->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec)
      c->acceptor.bind(endpoint, ec);
    if (!ec)
      c->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (!ec)
      break;
    last_error = ec.message();
    c->acceptor.close(ignored);
  }
  if (!c->acceptor.is_open())
    return failure::failure("cannot listen on " + where + ": " + last_error);
  c->port = c->acceptor.local_endpoint(ec).port();
  if (ec)
    return failure::failure("cannot listen on " + where + ": " + ec.message());

  auto state = std::make_unique<impl>();
  state->state = c;
  state->work.emplace(c->ioc.get_executor());
  std::unique_ptr<server> result_server{new server(std::move(state))};
  c->do_accept();
  try {
    for (std::size_t i = 0; i < std::max<std::size_t>(c->options.threads, 1); ++i)
      result_server->impl_->threads.emplace_back([c] {
        for (;;) {
          try {
            c->ioc.run();
            return;
          } catch (...) {
            // A handler threw; keep serving the others.
          }
        }
      });
  } catch (const std::system_error& e) {
    result_server->stop();
    return failure::failure(std::string{"cannot start server threads: "} + e.what());
  }
  return result_server;
}

unsigned short server::port() const {
  return impl_->state->port;
}

void server::stop_accepting() {
  impl_->state->close_listener();
}

bool server::wait_idle(std::chrono::milliseconds bound) {
  return impl_->state->wait_idle(bound);
}

std::uint64_t server::requests_served() const {
  return impl_->state->served.load();
}

void server::stop() {
  if (!impl_)
    return;
  std::lock_guard<std::mutex> guard{impl_->stop_mutex};
  if (impl_->stopped)
    return;
  impl_->stopped = true;
  auto& c = *impl_->state;
  c.stopping = true;
  c.close_listener();
  for (auto& s : c.close_admission())
    s->abort();
  // With the work guard gone the threads return once the aborted connections have wound
  // down. A thread calling stop() from inside a handler cannot join itself; it is detached
  // and finishes on its own (it shares ownership of the core).
  impl_->work.reset();
  auto self = std::this_thread::get_id();
  for (auto& t : impl_->threads) {
    if (t.get_id() == self)
      t.detach();
    else if (t.joinable())
      t.join();
  }
}

} // namespace service::http

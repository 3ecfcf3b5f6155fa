#include "service/http.hpp"

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
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "service/http/wire.hpp"

namespace service::http {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using wire::refusal;
using wire::request_parser;
using wire::wire_response;

/// After a response that closes the connection the server stops sending and reads (and
/// discards) what the peer still sends, so that the peer sees the response instead of a
/// reset; this bounds that phase in time and bytes.
constexpr std::chrono::seconds linger_time{2};
constexpr std::size_t linger_limit = 1024 * 1024;
/// The pause before accepting again after running out of descriptors or memory.
constexpr std::chrono::milliseconds accept_retry_delay{100};

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
    wire::apply_limits(*parser_, core_.options.body_limit);
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
    if (auto refused = wire::refusal_for(ec, core_.options.body_limit))
      return reject(*refused);
    // The peer closed, reset or timed out.
    close_now();
  }

  void dispatch_request() {
    auto msg = parser_->release();
    parser_.reset();
    request r;
    if (!wire::to_request(msg, r))
      return reject(wire::bad_target());
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
    send(wire::to_wire(json_error(why.status, why.code, why.message), 11, false, close), true,
         false);
  }

  void write_reply(response r) {
    if (!awaiting_)
      return;
    if (closed_ || core_.stopping)
      return finish_request();
    bool close = !keep_alive_;
    auto msg = wire::to_wire(std::move(r), version_, head_, close);
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

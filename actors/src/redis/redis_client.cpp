// Connections to Redis through hiredis: URL parsing, a blocking client whose replies are
// values, and the pipelined round trips the sink is built on.

#include "redis/redis_connection.hpp"

#include <charconv>
#include <utility>

#include "annals/persistence/redact.hpp"

namespace annals::actors {

namespace {

caf::error url_error(std::string_view url, const std::string& what) {
  return make_error(projection_errc::read_model_failed,
                    "Redis URL '" + persistence::redact_secrets(std::string{url}) + "': " + what);
}

redis_value to_value(const redisReply* r) {
  redis_value v;
  if (r == nullptr)
    return v;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      v.type = redis_value::kind::integer;
      v.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      v.type = redis_value::kind::string;
      v.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      v.type = redis_value::kind::status;
      v.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      v.type = redis_value::kind::error;
      v.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      v.type = redis_value::kind::array;
      for (std::size_t i = 0; i < r->elements; ++i)
        v.elements.push_back(to_value(r->element[i]));
      break;
    default:
      break;
  }
  return v;
}

timeval to_timeval(std::chrono::milliseconds d) {
  auto ms = std::max<long long>(1, d.count());
  return timeval{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
}

} // namespace

std::string redis_address::to_string() const {
  return host + ":" + std::to_string(port) + "/" + std::to_string(db);
}

caf::expected<redis_address> parse_redis_url(std::string_view url) {
  constexpr std::string_view scheme = "redis://";
  if (!url.starts_with(scheme))
    return url_error(url, "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]");
  auto rest = url.substr(scheme.size());
  redis_address a;
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    auto cred = rest.substr(0, at);
    rest = rest.substr(at + 1);
    auto colon = cred.find(':');
    if (colon == std::string_view::npos)
      return url_error(url, "credentials must be USER:PASSWORD or :PASSWORD");
    a.user = std::string{cred.substr(0, colon)};
    a.password = std::string{cred.substr(colon + 1)};
  }
  std::string_view db;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
  }
  std::string_view port;
  if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    port = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
  }
  if (rest.empty())
    return url_error(url, "no host");
  a.host = std::string{rest};
  if (!port.empty()) {
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc{} || end != port.data() + port.size() || p == 0 || p > 65535)
      return url_error(url, "the port must be a number in 1..65535");
    a.port = static_cast<std::uint16_t>(p);
  }
  if (!db.empty()) {
    auto [end, ec] = std::from_chars(db.data(), db.data() + db.size(), a.db);
    if (ec != std::errc{} || end != db.data() + db.size() || a.db < 0)
      return url_error(url, "the database must be a number");
  }
  return a;
}

std::string redis_offset_key(std::string_view prefix) {
  return std::string{prefix} + "annals.offset";
}

std::uint64_t redis_offset_of(const redis_value& v) {
  if (v.type != redis_value::kind::string)
    return 0;
  std::uint64_t n = 0;
  std::from_chars(v.text.data(), v.text.data() + v.text.size(), n);
  return n;
}

// --- redis_connection

redis_connection::~redis_connection() {
  close();
}

void redis_connection::close() {
  if (ctx_ != nullptr)
    redisFree(ctx_);
  ctx_ = nullptr;
}

caf::error redis_connection::open(const redis_address& addr, std::chrono::milliseconds timeout) {
  close();
  where_ = addr.to_string();
  ctx_ = redisConnectWithTimeout(addr.host.c_str(), addr.port, to_timeval(timeout));
  if (ctx_ == nullptr)
    return fail("cannot connect", "out of memory");
  if (ctx_->err != 0) {
    auto why = std::string{ctx_->errstr};
    close();
    return fail("cannot connect", why);
  }
  redisSetTimeout(ctx_, to_timeval(timeout));
  redisEnableKeepAlive(ctx_);
  std::vector<std::vector<std::string>> hello;
  if (!addr.password.empty()) {
    if (addr.user.empty())
      hello.push_back({"AUTH", addr.password});
    else
      hello.push_back({"AUTH", addr.user, addr.password});
  }
  if (addr.db != 0)
    hello.push_back({"SELECT", std::to_string(addr.db)});
  // A server still loading its append-only file answers PING with -LOADING.
  hello.push_back({"PING"});
  auto replies = pipeline(hello);
  if (!replies)
    return std::move(replies.error());
  for (const auto& r : *replies) {
    if (r.type == redis_value::kind::error) {
      close();
      return fail("the server refused the connection", r.text);
    }
  }
  return {};
}

caf::expected<std::vector<redis_value>>
redis_connection::pipeline(const std::vector<std::vector<std::string>>& commands) {
  if (ctx_ == nullptr)
    return fail("no connection", "not connected");
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const auto& cmd : commands) {
    argv.clear();
    lens.clear();
    for (const auto& a : cmd) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data())
        != REDIS_OK)
      return lost("cannot queue a command");
  }
  std::vector<redis_value> out;
  out.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* reply = nullptr;
    if (redisGetReply(ctx_, &reply) != REDIS_OK)
      return lost("lost the server while waiting for a reply");
    out.push_back(to_value(static_cast<redisReply*>(reply)));
    freeReplyObject(reply);
  }
  return out;
}

caf::error redis_connection::lost(std::string_view what) {
  auto why = ctx_ != nullptr && ctx_->err != 0 ? std::string{ctx_->errstr} : "connection lost";
  close();
  return fail(what, why);
}

caf::error redis_connection::fail(std::string_view what, std::string_view detail) const {
  return make_error(projection_errc::read_model_failed, std::string{what} + " on Redis " + where_
                                                          + ": " + persistence::one_line(detail));
}

// --- redis_client

struct redis_client::impl {
  redis_connection conn;
};

caf::expected<redis_client> redis_client::connect(std::string_view url,
                                                  std::chrono::milliseconds timeout) {
  auto addr = parse_redis_url(url);
  if (!addr)
    return std::move(addr.error());
  auto ptr = std::make_unique<impl>();
  if (auto err = ptr->conn.open(*addr, timeout))
    return err;
  return redis_client{std::move(ptr)};
}

redis_client::redis_client(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {}
redis_client::redis_client(redis_client&&) noexcept = default;
redis_client& redis_client::operator=(redis_client&&) noexcept = default;
redis_client::~redis_client() = default;

caf::expected<redis_value> redis_client::command(std::span<const std::string> argv) {
  auto r = impl_->conn.pipeline({std::vector<std::string>(argv.begin(), argv.end())});
  if (!r)
    return std::move(r.error());
  return std::move(r->front());
}

caf::expected<redis_value> redis_client::command(std::initializer_list<std::string_view> argv) {
  std::vector<std::string> owned(argv.begin(), argv.end());
  return command(std::span<const std::string>{owned});
}

caf::expected<std::vector<redis_value>>
redis_client::transaction(const std::vector<std::vector<std::string>>& commands) {
  std::vector<std::vector<std::string>> all;
  all.reserve(commands.size() + 2);
  all.push_back({"MULTI"});
  all.insert(all.end(), commands.begin(), commands.end());
  all.push_back({"EXEC"});
  auto r = impl_->conn.pipeline(all);
  if (!r)
    return std::move(r.error());
  auto& exec = r->back();
  if (exec.type != redis_value::kind::array) {
    std::string why = exec.type == redis_value::kind::error ? exec.text : "EXEC answered nil";
    for (std::size_t i = 1; i + 1 < r->size(); ++i)
      if ((*r)[i].type == redis_value::kind::error)
        why += " (" + commands[i - 1].front() + ": " + (*r)[i].text + ")";
    return impl_->conn.fail("the transaction was refused", why);
  }
  return std::move(exec.elements);
}

bool redis_client::connected() const noexcept {
  return impl_ && impl_->conn.connected();
}

std::string redis_client::where() const {
  return impl_ ? impl_->conn.where() : std::string{};
}

} // namespace annals::actors

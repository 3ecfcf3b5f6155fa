#pragma once

/// @file
/// Exactly-once projections into Redis (library `annals::actors_redis`, built when hiredis
/// is found; links libhiredis): read models as Redis keys (hashes, sorted sets, counters)
/// under a key prefix of their own, with the projection's offset in the key
/// `<prefix>annals.offset` beside them.
///
/// ```cpp
/// class top_scorers
///   : public annals::actors::typed_redis_projection<top_scorers, match::football_match> {
/// public:
///   void on(const match::goal_scored& e, const annals::actors::envelope&,
///           annals::actors::redis_batch& b) {
///     b.command({"ZINCRBY", b.key("goals"), "1", e.player});
///   }
/// };
///
/// auto proj = annals::actors::spawn_projection(
///   sys, journal, std::make_shared<top_scorers>(),
///   annals::actors::redis_projection_options{.name = "scorers",
///                                            .url = "redis://127.0.0.1:6379"});
/// ```
///
/// A handler does not talk to Redis: its `on` members queue write commands into the
/// batch's transaction (`redis_batch::command`). Inside a Redis transaction nothing can be
/// read back, so a handler never sees the result of a command; models whose update needs a
/// read (a balance check) fold with commands that compute on the server (`HINCRBY`,
/// `ZINCRBY`, `INCRBY`, `SETNX`, ...).
///
/// How a batch runs (WATCH / MULTI / EXEC, no Lua script): the handler folds the batch's
/// events into a list of commands first, without a round trip; then `WATCH` on the offset
/// key and `GET` of it (another offset than the one this instance left stops it with
/// `projection_errc::offset_moved`, nothing applied), then `MULTI`, the handler's
/// commands, `SET` of the offset to the batch's last event, `EXEC`. An `EXEC` answered
/// nil means the offset key changed after the `WATCH`: another instance wrote, and this
/// one stops with `offset_moved`, nothing applied. Why not a Lua script: the handler's
/// commands would have to travel as script arguments and be re-dispatched by the script
/// (`redis.call(unpack(...))`), a script runs with the whole server blocked, and it gives
/// no more atomicity than `MULTI`/`EXEC`: in both, commands Redis refuses when they are
/// queued (an unknown command, a wrong number of arguments) abort the whole transaction,
/// while a command that fails when it runs (e.g. `HINCRBY` on a key that holds a string)
/// does not undo the others. The sink then reports `read_model_failed` naming the command
/// and stops; model and offset still agree (that command changed nothing).
///
/// A handler that throws on an event: the commands of the events before it are applied
/// with their offset, and the projection stops at the event before it with
/// `projection_errc::handler_failed`.
///
/// A lost connection (the server restarted, a network cut): the batch is tried again on a
/// new connection, with a growing pause, for up to `retry_for`; an `EXEC` whose reply was
/// lost is settled by reading the stored offset back (the batch's own last offset: it was
/// applied; the offset before it: it was not, and is sent again). Past `retry_for` the
/// projection fails with `read_model_failed` naming the server; `rebuild()` or a new
/// `spawn_projection` starts it again.
///
/// A rebuild deletes every key under the prefix (found with `SCAN`), then stores offset 0.
///
/// Durability: the model and the offset change in one `EXEC`, so they agree at any moment
/// in the server's memory. What survives a crash of the Redis server is its persistence
/// configuration's business: with `appendonly yes` and `appendfsync always` an `EXEC` is
/// on disk before it is answered (the tests run the server so); with the default
/// `appendfsync everysec` a crash of the machine may lose up to a second of batches, the
/// model and its offset together (the projection then replays them: still consistent,
/// never doubled); without persistence a restart empties both, and the projection
/// rebuilds from offset 0.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/actors/projection.hpp"
#include "annals/actors/typed_projection.hpp"

namespace annals::actors {

/// The write commands of one batch, sent to Redis inside its `MULTI` ... `EXEC`.
class redis_batch {
public:
  explicit redis_batch(std::string prefix) : prefix_(std::move(prefix)) {}

  /// Queues one command, e.g. `b.command({"HINCRBY", b.key("match:m-1"), "home", "1"})`.
  /// Its reply is never seen (see the file comment).
  void command(std::initializer_list<std::string_view> argv) {
    commands_.emplace_back(argv.begin(), argv.end());
  }

  /// Queues one command given as a list of arguments.
  void command(std::vector<std::string> argv) {
    commands_.push_back(std::move(argv));
  }

  /// The projection's key `name`: the key prefix followed by `name`. Keep every key of the
  /// model under the prefix: a rebuild deletes exactly those.
  std::string key(std::string_view name) const {
    return prefix_ + std::string{name};
  }

  /// The key prefix of the projection.
  const std::string& prefix() const noexcept {
    return prefix_;
  }

  /// The commands queued so far.
  const std::vector<std::vector<std::string>>& commands() const noexcept {
    return commands_;
  }

  /// Drops the commands queued after the first `n` (the runtime does it for an event whose
  /// handler threw).
  void truncate(std::size_t n) {
    if (n < commands_.size())
      commands_.resize(n);
  }

private:
  std::string prefix_;
  std::vector<std::vector<std::string>> commands_;
};

/// The read model of an exactly-once projection into Redis; subclass it. Each call runs on
/// the projection's own thread. Report failures by throwing: the event's commands are
/// dropped and the projection stops at the event before.
class redis_projection_handler {
public:
  virtual ~redis_projection_handler();

  /// Folds one event (one that passed the filter) into commands queued on `batch`.
  virtual void apply(redis_batch& batch, const persistence::event_record& rec) = 0;
};

/// The base of a typed exactly-once handler into Redis: as `typed_sqlite_projection`, with
/// `void on(const E&, const envelope&, redis_batch&)` members.
template <class Derived, named_aggregate A>
class typed_redis_projection : public redis_projection_handler {
public:
  /// Decodes and dispatches one record to `Derived::on` (typed_projection.hpp says how).
  void apply(redis_batch& batch, const persistence::event_record& rec) final {
    detail::connection_on_caller<Derived, redis_batch&> call{static_cast<Derived&>(*this), batch};
    static_assert(
      detail::accepts_any<decltype(call)>(static_cast<typename A::event_type*>(nullptr)),
      "a typed_redis_projection needs at least one public `void on(const E&, const "
      "annals::actors::envelope&, annals::actors::redis_batch&)` for an event type E of the "
      "aggregate");
    detail::dispatch_typed<A>(rec, call);
  }
};

/// Where a Redis server is: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` parsed.
struct redis_address {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string user;     ///< empty: `AUTH PASSWORD` (or no `AUTH` without a password)
  std::string password; ///< empty: no `AUTH`
  int db = 0;           ///< `SELECT`ed after connecting when not 0

  /// `HOST:PORT/DB`, for messages (no credentials).
  std::string to_string() const;
};

/// Parses `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`; fails with
/// `projection_errc::read_model_failed` naming what is wrong (credentials redacted).
caf::expected<redis_address> parse_redis_url(std::string_view url);

/// Options of `spawn_projection` for an exactly-once projection into Redis.
struct redis_projection_options {
  /// Names the projection in status replies and errors.
  std::string name;
  /// The server, `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`.
  std::string url = "redis://127.0.0.1:6379";
  /// The prefix of every key of the model and of its offset key; empty: `<name>:`.
  std::string key_prefix;
  /// Which events reach the handler.
  event_filter filter = event_filter::all();
  /// Most events read from the journal per catch-up page (one transaction each).
  std::size_t page_size = 512;
  /// Most live commits waiting in the projection's mailbox; see `projection_options`.
  std::size_t max_queued_batches = 1024;
  /// How long connecting to the server, and then any one reply, may take.
  std::chrono::milliseconds connect_timeout{10'000};
  /// How long the start, a batch or a reset keeps retrying on a lost connection (or a
  /// server still loading its data) before the projection fails.
  std::chrono::milliseconds retry_for{10'000};
};

/// Starts an exactly-once projection of `journal` into Redis at `opts.url`. Start-up errors
/// (an unreachable server, a malformed URL) show up as state `failed` in the status, never
/// as an exception.
projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<redis_projection_handler> handler,
                            redis_projection_options opts);

/// The key of the offset stored for the projection whose key prefix is `prefix`.
std::string redis_offset_key(std::string_view prefix);

/// One reply of Redis, as a value.
struct redis_value {
  enum class kind : std::uint8_t { nil, integer, string, status, error, array };
  kind type = kind::nil;
  std::int64_t integer = 0;
  std::string text; ///< a string, a status or an error message
  std::vector<redis_value> elements;

  bool is_nil() const noexcept {
    return type == kind::nil;
  }
};

/// A blocking connection to Redis for the readers of a model (query code, tools, tests):
/// commands with their replies as values. Not thread-safe: one user at a time.
///
/// ```cpp
/// auto c = annals::actors::redis_client::connect("redis://127.0.0.1:6379");
/// auto top = c->transaction({{"ZRANGE", "scorers:goals", "0", "9", "WITHSCORES"},
///                            {"GET", annals::actors::redis_offset_key("scorers:")}});
/// ```
class redis_client {
public:
  /// Connects (and authenticates, selects the database); fails with
  /// `projection_errc::read_model_failed` naming the server.
  static caf::expected<redis_client>
  connect(std::string_view url, std::chrono::milliseconds timeout = std::chrono::seconds{10});

  redis_client(redis_client&&) noexcept;
  redis_client& operator=(redis_client&&) noexcept;
  ~redis_client();

  /// Runs one command. A reply of type error is a value (`kind::error`), not a failure; a
  /// lost connection fails with `read_model_failed` (then `connected()` is false).
  caf::expected<redis_value> command(std::span<const std::string> argv);
  caf::expected<redis_value> command(std::initializer_list<std::string_view> argv);

  /// Runs `commands` in one `MULTI` ... `EXEC` and returns their replies (a consistent
  /// read of several keys). Fails with `read_model_failed` when Redis refuses the
  /// transaction.
  caf::expected<std::vector<redis_value>>
  transaction(const std::vector<std::vector<std::string>>& commands);

  /// False once the connection is lost; connect again then.
  bool connected() const noexcept;

  /// `HOST:PORT/DB` of the server.
  std::string where() const;

  struct impl;

private:
  explicit redis_client(std::unique_ptr<impl> ptr);
  std::unique_ptr<impl> impl_;
};

/// Reads the offset stored under `prefix` from a value `GET redis_offset_key(prefix)`
/// returned (0 for nil).
std::uint64_t redis_offset_of(const redis_value& v);

} // namespace annals::actors

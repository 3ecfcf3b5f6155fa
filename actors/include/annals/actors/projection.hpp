#pragma once

/// @file
/// Projections: actors that fold the journal's committed events, in offset order, into a
/// read model.
///
/// A projection catches up from its stored offset by reading the journal in pages, and
/// follows the journal's live commit stream afterwards; the switch neither skips nor
/// repeats an event, also while writers are busy. Two kinds exist:
///
/// - **At-least-once** (`projection_handler`): the read model lives anywhere (memory,
///   files, another service). The offset is stored in an `offset_store` after each batch;
///   after a crash the events since the last stored offset arrive again, and the handler
///   sees each record's offset to de-duplicate.
/// - **Exactly-once** (`sqlite_projection_handler`): the read model lives in a SQLite file.
///   Each batch runs in one transaction that also writes the offset into the same file, so
///   the model and the offset always agree and each event is applied exactly once, also
///   across a crash.
///
/// Most handlers fold the events of one aggregate type and derive from
/// `typed_projection` or `typed_sqlite_projection` (typed_projection.hpp): one `on` per
/// event type, decoding and filtering done by annals. The untyped interfaces below see
/// every stored record as it is:
///
/// ```cpp
/// class balances : public annals::actors::projection_handler {
/// public:
///   void apply(const annals::persistence::event_record& rec) override {
///     auto ev = bank_codec::decode(rec.name, rec.version, rec.payload);
///     if (!ev)
///       throw std::runtime_error{annals::render(ev.error())};
///     ...
///   }
///   void reset() override { totals_.clear(); }
/// };
///
/// auto proj = annals::actors::spawn_projection(
///   sys, journal, std::make_shared<balances>(),
///   {.name = "balances", .filter = event_filter::aggregate_type<bank::account>()});
/// auto st = proj.await_offset(head, std::chrono::seconds{5});  // read your writes
/// ```
///
/// Threads: each projection is a detached CAF actor, i.e. it has a thread of its own, and
/// every handler call, offset-store call and read-model transaction runs on it (so they may
/// block on I/O without stalling CAF's scheduler). Journal callbacks only post messages to
/// that actor. docs/projections.md has the details.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/describe/enum.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/meta/type_name.hpp>

#include "annals/actors/offset_store.hpp"
#include "annals/error.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/persistence/sqlite_read_model.hpp"
#include "annals/persistence_id.hpp"

struct sqlite3;

namespace caf {
class actor;
class actor_system;
} // namespace caf

namespace annals::actors {

/// Errors of projections (category `projection`).
enum class projection_errc : std::uint8_t {
  handler_failed = 1,  ///< the handler threw; the context names the event and the exception
  offset_store_failed, ///< loading or saving the offset failed
  read_model_failed,   ///< the read-model SQLite file refused an operation
  journal_failed,      ///< a journal read failed or broke the offset order
  stopped,             ///< the projection is stopped
  timeout,             ///< a bounded wait ran out
  offset_moved,        ///< the stored offset is not where this projection left it: another
                       ///< instance writes the same model; the context names both offsets
};
BOOST_DESCRIBE_ENUM(projection_errc, handler_failed, offset_store_failed, read_model_failed,
                    journal_failed, stopped, timeout, offset_moved)
constexpr std::string_view error_category(projection_errc) {
  return "projection";
}

/// Which events a projection's handler sees. Events outside the filter still advance the
/// projection's offset (offsets are global), they just skip the handler.
///
/// ```cpp
/// auto f = event_filter::aggregate_type<bank::account>();  // persistence ids "account|..."
/// ```
class event_filter {
public:
  /// Every event.
  static event_filter all() {
    return event_filter{};
  }

  /// Events whose persistence id starts with `prefix`.
  static event_filter persistence_id_prefix(std::string prefix) {
    event_filter f;
    f.prefix_ = std::move(prefix);
    return f;
  }

  /// Events of one aggregate type: persistence ids of the form `type|id`.
  static event_filter aggregate_type(std::string_view type) {
    return persistence_id_prefix(persistence_id::prefix_of(type));
  }

  /// Events of aggregate type `A` (named by its `static constexpr name`).
  template <class A>
  static event_filter aggregate_type() {
    return aggregate_type(std::string_view{A::name});
  }

  /// Events that carry `tag`.
  static event_filter tag(std::string tag) {
    event_filter f;
    f.tag_ = std::move(tag);
    return f;
  }

  /// True if the handler should see `rec`.
  bool matches(const persistence::event_record& rec) const;

private:
  std::string prefix_;
  std::string tag_;
};

/// The read model of an at-least-once projection; subclass it.
///
/// All calls come from the projection's own thread, one at a time, in offset order. Code on
/// other threads that reads the model needs its own synchronisation.
///
/// ```cpp
/// class offsets_seen : public annals::actors::projection_handler {
/// public:
///   void apply(const annals::persistence::event_record& rec) override {
///     if (rec.offset <= last_)  // delivered again after a restart: skip
///       return;
///     last_ = rec.offset;
///     ...
///   }
/// private:
///   std::uint64_t last_ = 0;
/// };
/// ```
class projection_handler {
public:
  virtual ~projection_handler();

  /// Folds one event (one that passed the filter) into the model. Throwing stops the
  /// projection; the stored offset stays on the last event that did not throw.
  virtual void apply(const persistence::event_record& rec) = 0;

  /// Clears the model before a rebuild replays the journal from the start. The default
  /// does nothing; a handler that de-duplicates by offset must clear that bookkeeping here
  /// too, or it would ignore the whole replay.
  virtual void reset();
};

/// The read model of an exactly-once projection into SQLite; subclass it. It is the
/// journal layer's `persistence::sqlite_read_model` (sqlite_read_model.hpp), so the same
/// model also runs inline, inside the SQLite journal's append transactions.
///
/// The runtime owns the connection to the read-model file. Each method runs inside a
/// transaction that the runtime begins and commits together with the projection's offset,
/// on the projection's own thread. Report SQLite failures by throwing: the transaction is
/// rolled back to the last good event.
///
/// ```cpp
/// class balance_table : public annals::actors::sqlite_projection_handler {
///   void create_schema(sqlite3* db) override { exec(db, "CREATE TABLE IF NOT EXISTS ..."); }
///   void apply(sqlite3* db, const event_record& rec) override { ... UPSERT ... }
///   void reset(sqlite3* db) override { exec(db, "DELETE FROM balances"); }
/// };
/// ```
using sqlite_projection_handler = persistence::sqlite_read_model;

/// Where a projection is in its life.
enum class projection_state : std::uint8_t {
  catching_up, ///< reading stored events from the journal in pages
  running,     ///< up to date, applying live commits as they come
  failed,      ///< stopped by an error (see `projection_status::error`)
};
BOOST_DESCRIBE_ENUM(projection_state, catching_up, running, failed)

/// A projection's answer to a status query.
struct projection_status {
  std::string name;
  std::uint64_t offset = 0;  ///< last event processed (applied or filtered out)
  std::uint64_t head = 0;    ///< the journal's head offset when the query was answered
  std::uint64_t lag = 0;     ///< `head - offset` (0 if the projection is ahead of it)
  std::uint64_t applied = 0; ///< events handed to the handler since the actor started
  /// Live commits not queued because the projection was behind (read from the journal
  /// instead); a rising count means the handler is slower than the writers.
  std::uint64_t live_dropped = 0;
  projection_state state = projection_state::catching_up;
  std::string error; ///< why it failed, empty otherwise

  friend bool operator==(const projection_status&, const projection_status&) = default;
};

/// Renders a state as its name, e.g. `running`.
std::string to_string(projection_state st);

/// CAF serialisation of `projection_status` (the reply of `projection_status_atom`).
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, projection_status& x) {
  return f(caf::meta::type_name("annals::actors::projection_status"), x.name, x.offset, x.head,
           x.lag, x.applied, x.live_dropped, x.state, x.error);
}

/// Messages a projection's actor understands (what the blocking members of `projection`
/// send), for CAF clients that must not block:
///
/// - `(projection_status_atom)` -> `projection_status`
/// - `(projection_await_atom, std::uint64_t offset, std::uint64_t timeout_ms)` ->
///   `projection_status` once `offset` is processed, or an error (failed, timeout)
/// - `(projection_rebuild_atom)` -> `caf::ok_atom` once the model is reset
/// - an exit message (`caf::anon_send_exit`) stops it
///
/// ```cpp
/// self->request(proj.actor(), caf::duration{1s}, projection_status_atom::value)
///   .then([](const projection_status& st) { ... });
/// ```
using projection_status_atom = caf::atom_constant<caf::atom("prj_status")>;
using projection_await_atom = caf::atom_constant<caf::atom("prj_await")>;
using projection_rebuild_atom = caf::atom_constant<caf::atom("prj_rebld")>;

/// Options of `spawn_projection` for an at-least-once projection.
struct projection_options {
  /// Names the projection in the offset store, in status replies and in errors.
  std::string name;
  /// Which events reach the handler.
  event_filter filter = event_filter::all();
  /// Where the offset is kept; a fresh `memory_offset_store` if empty.
  offset_store_ptr offsets;
  /// Most events read from the journal per catch-up page (one batch each).
  std::size_t page_size = 512;
  /// Most live commits waiting in the projection's mailbox. Beyond it, commits are not
  /// queued; the projection reads them from the journal instead (memory stays bounded when
  /// the handler is slower than the writers).
  std::size_t max_queued_batches = 1024;
};

/// Options of `spawn_projection` for an exactly-once projection into SQLite.
struct sqlite_projection_options {
  /// Names the projection in the `projection_offsets` table, in status replies and errors.
  std::string name;
  /// The read-model file (WAL mode); created if missing. May be the journal's own file.
  std::string path;
  /// Which events reach the handler.
  event_filter filter = event_filter::all();
  /// Most events read from the journal per catch-up page (one transaction each).
  std::size_t page_size = 512;
  /// Most live commits waiting in the projection's mailbox; see `projection_options`.
  std::size_t max_queued_batches = 1024;
  /// `synchronous=FULL` instead of `NORMAL`. Either way model and offset commit together;
  /// with `NORMAL` a power loss may roll both back to an earlier, still consistent, point.
  bool fsync_each_batch = false;
  /// How long a transaction waits for another connection's writes on the same file.
  std::chrono::milliseconds busy_timeout{10'000};
};

/// The owning handle of a running projection: its destructor stops the projection (see
/// `stop`), so a handle must not outlive its `caf::actor_system`; and a running projection
/// keeps `~actor_system` waiting, so stop (or destroy) handles before the system.
///
/// The blocking members are for plain code (main, tests, tools); they park the calling
/// thread, so never call them from a CAF actor. Actors talk to `actor()` directly with the
/// messages listed in docs/projections.md.
class projection {
public:
  projection() = default;
  projection(projection&&) noexcept;
  projection& operator=(projection&&) noexcept;
  projection(const projection&) = delete;
  projection& operator=(const projection&) = delete;
  ~projection();

  /// The name given in the options.
  const std::string& name() const;

  /// False for a default-constructed or moved-from handle.
  bool valid() const noexcept {
    return impl_ != nullptr;
  }

  /// The current status, with the journal's head and the lag; waits at most `timeout`.
  ///
  /// ```cpp
  /// auto st = proj.status();
  /// if (st && st->state == annals::actors::projection_state::failed)
  ///   std::cerr << st->error << '\n';
  /// ```
  [[nodiscard]] caf::expected<projection_status>
  status(std::chrono::milliseconds timeout = std::chrono::seconds{10}) const;

  /// Waits until the projection has processed `offset` (then returns its status), has
  /// failed (returns its error), or `timeout` passed (`projection_errc::timeout`).
  ///
  /// ```cpp
  /// auto res = journal_append(...);               // res->last_offset
  /// proj.await_offset(res->last_offset, 5s);     // the read model now shows it
  /// ```
  [[nodiscard]] caf::expected<projection_status>
  await_offset(std::uint64_t offset, std::chrono::milliseconds timeout) const;

  /// Clears the model (`reset`), stores offset 0 and replays the whole journal; also
  /// restarts a failed projection. Returns once the reset is done (not the replay).
  [[nodiscard]] caf::error rebuild(std::chrono::milliseconds timeout = std::chrono::seconds{
                                     10}) const;

  /// Stops the projection after the batch in progress and waits (at most 30 s) until its
  /// actor has ended, so that a projection restarted under the same name never overlaps
  /// the old one; idempotent. The stored offset stays where that batch left it.
  void stop();

  /// The projection's actor, for CAF clients.
  caf::actor actor() const;

  /// Internal state; made by `spawn_projection`.
  struct impl;
  explicit projection(std::shared_ptr<impl> ptr);

private:
  std::shared_ptr<impl> impl_;
};

/// Starts an at-least-once projection of `journal` into `handler`'s read model.
///
/// The returned handle owns the projection. Start-up errors (e.g. an unreadable offset)
/// show up as state `failed` in the status, never as an exception.
projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<projection_handler> handler, projection_options opts);

/// Starts an exactly-once projection of `journal` into the SQLite file `opts.path`.
projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<sqlite_projection_handler> handler,
                            sqlite_projection_options opts);

} // namespace annals::actors

#pragma once

/// @file
/// Typed projection handlers: one `on` member per event type of one aggregate, instead of
/// a loop that decodes stored records by hand.
///
/// ```cpp
/// class owner_index : public annals::actors::typed_projection<owner_index, bank::account> {
/// public:
///   void on(const bank::opened& e, const annals::actors::envelope& env) {
///     owners_[std::string{env.entity_id()}] = e.owner;
///   }
///   void on(const bank::closed&, const annals::actors::envelope& env) { ... }
///   // no `on` for deposited or withdrawn: those events are skipped
/// };
///
/// auto proj = annals::actors::spawn_projection(sys, journal, std::make_shared<owner_index>(),
///                                              {.name = "owners"});
/// ```
///
/// For a read model in SQLite (exactly once: the model and the offset commit in one
/// transaction), derive from `typed_sqlite_projection` instead; its `on` members also get
/// the connection of that transaction:
///
/// ```cpp
/// class balances : public annals::actors::typed_sqlite_projection<balances, bank::account> {
/// public:
///   void create_schema(sqlite3* db) override { ... }
///   void reset(sqlite3* db) override { ... }
///   void on(const bank::deposited& e, const annals::actors::envelope& env, sqlite3* db) { ... }
/// };
/// ```
///
/// What annals does for a typed handler, for every record the projection hands it:
/// - records of other aggregate types (persistence ids not starting with `A::name|`) are
///   skipped, so the handler works with any `event_filter`, `all()` included (giving it
///   `event_filter::aggregate_type<A>()` only saves the skipped calls);
/// - the record is decoded with `A::codec_type` (upcasters included);
/// - an event type of `A` for which the handler declares no `on` is skipped;
/// - a record that does not decode (an unknown event name, a payload its codec refuses)
///   stops the projection: the handler throws `annals::rejected` with
///   `journal.corrupt_row` naming the persistence id and sequence number, and the
///   projection's status error (`projection.handler_failed`) carries that text. The stored
///   offset stays on the event before, so nothing is skipped silently.
///
/// The `on` members must be public (the base calls them) and take the event by const
/// reference; an `on` whose signature does not match is not called, so each handler must
/// declare at least one matching `on` (checked at compile time).

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "annals/actors/projection.hpp"
#include "annals/aggregate.hpp"
#include "annals/error.hpp"
#include "annals/named_aggregate.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/persistence_id.hpp"

struct sqlite3;

namespace annals::actors {

/// Where an event came from, for a typed handler: a view of its stored record. Valid only
/// during the `on` call it is passed to; copy what you keep.
class envelope {
public:
  explicit envelope(const persistence::event_record& rec) noexcept
    : rec_(&rec), entity_id_(persistence_id::entity_of(rec.persistence_id)) {}

  /// The aggregate's id (`acc-42` for persistence id `account|acc-42`).
  std::string_view entity_id() const noexcept {
    return entity_id_;
  }

  /// The stream the event belongs to, `type|entity`.
  const std::string& persistence_id() const noexcept {
    return rec_->persistence_id;
  }

  /// The event's position in its stream, from 1; after it, the aggregate's version is `seq`.
  std::uint64_t seq() const noexcept {
    return rec_->seq;
  }

  /// The event's global journal offset (what `projection::await_offset` waits for).
  std::uint64_t offset() const noexcept {
    return rec_->offset;
  }

  /// Commit time, microseconds since the Unix epoch.
  std::int64_t timestamp_us() const noexcept {
    return rec_->timestamp_us;
  }

  /// Commit time as a `system_clock` time point.
  std::chrono::system_clock::time_point timestamp() const noexcept {
    return std::chrono::system_clock::time_point{
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
        std::chrono::microseconds{rec_->timestamp_us})};
  }

  /// The idempotency key of the command that persisted the event; empty if it had none.
  const std::string& command_id() const noexcept {
    return rec_->metadata.command_id;
  }

  /// The correlation id the command carried (e.g. `transfer:t1`); empty if none.
  const std::string& correlation_id() const noexcept {
    return rec_->metadata.correlation_id;
  }

  /// The event's tags.
  const std::vector<std::string>& tags() const noexcept {
    return rec_->tags;
  }

  /// The stored record itself (name, version, JSON payload).
  const persistence::event_record& record() const noexcept {
    return *rec_;
  }

private:
  const persistence::event_record* rec_;
  std::string_view entity_id_;
};

// `actors::` throughout: detail::envelope is the host's command message.
namespace detail {

/// Decodes `rec` as an event of `A` and calls `call(event, envelope)` with it, unless the
/// record belongs to another aggregate type or `call` does not accept that event type.
/// Throws `annals::rejected` (`journal.corrupt_row`) for a record that does not decode.
template <named_aggregate A, class Call>
void dispatch_typed(const persistence::event_record& rec, Call&& call) {
  constexpr std::string_view type = aggregate_name<A>();
  std::string_view pid = rec.persistence_id;
  if (pid.size() <= type.size() || pid.compare(0, type.size(), type) != 0
      || pid[type.size()] != persistence_id::separator)
    return;
  auto ev = A::codec_type::decode(rec.name, rec.version, rec.payload);
  if (!ev)
    throw rejected{make_error(persistence::journal_errc::corrupt_row,
                              "persistence id " + rec.persistence_id + ", seq "
                                + std::to_string(rec.seq) + ": " + render(ev.error()))};
  actors::envelope env{rec};
  std::visit(
    [&](const auto& e) {
      if constexpr (std::is_invocable_v<Call&, decltype(e), const actors::envelope&>)
        call(e, env);
    },
    *ev);
}

/// Calls `self.on(e, env)` for the event types `Derived` has an `on` for. A class, not a
/// lambda: clang 14 crashes on a lambda whose trailing return type names a capture.
template <class Derived>
struct on_caller {
  Derived& self;
  template <class E>
  auto operator()(const E& e, const actors::envelope& env) const
    -> decltype(std::declval<Derived&>().on(e, env)) {
    return self.on(e, env);
  }
};

/// Calls `self.on(e, env, db)` with the read model's connection `db` (`sqlite3*`,
/// `PGconn*`), as `on_caller` does.
template <class Derived, class Connection>
struct connection_on_caller {
  Derived& self;
  Connection db;
  template <class E>
  auto operator()(const E& e, const actors::envelope& env) const
    -> decltype(std::declval<Derived&>().on(e, env, std::declval<Connection>())) {
    return self.on(e, env, db);
  }
};

template <class Call, class... Es>
constexpr bool accepts_any(std::variant<Es...>*) {
  return (std::is_invocable_v<Call&, const Es&, const actors::envelope&> || ...);
}

} // namespace detail

/// The base of a typed at-least-once handler; see the file comment. `Derived` declares
/// `void on(const E&, const envelope&)` for the event types of `A` it folds, and may
/// override `reset()` (called before a rebuild).
///
/// Delivery is at least once: after a crash, events since the last stored offset arrive
/// again. A model that must not count them twice remembers `env.offset()` and skips
/// anything at or below it.
template <class Derived, named_aggregate A>
class typed_projection : public projection_handler {
public:
  /// Decodes and dispatches one record to `Derived::on`; see the file comment.
  void apply(const persistence::event_record& rec) final {
    detail::on_caller<Derived> call{static_cast<Derived&>(*this)};
    static_assert(
      detail::accepts_any<decltype(call)>(static_cast<typename A::event_type*>(nullptr)),
      "a typed_projection needs at least one public `void on(const E&, const "
      "annals::actors::envelope&)` for an event type E of the aggregate");
    detail::dispatch_typed<A>(rec, call);
  }
};

/// The base of a typed exactly-once handler into SQLite; see the file comment. `Derived`
/// declares `void on(const E&, const envelope&, sqlite3* db)` for the event types of `A`
/// it folds, and overrides `create_schema` (optional) and `reset` as for any
/// `sqlite_projection_handler`. Each `on` runs inside the batch's transaction; throw to
/// roll it back (the projection stops with the exception's text).
template <class Derived, named_aggregate A>
class typed_sqlite_projection : public sqlite_projection_handler {
public:
  /// Decodes and dispatches one record to `Derived::on`; see the file comment.
  void apply(sqlite3* db, const persistence::event_record& rec) final {
    detail::connection_on_caller<Derived, sqlite3*> call{static_cast<Derived&>(*this), db};
    static_assert(
      detail::accepts_any<decltype(call)>(static_cast<typename A::event_type*>(nullptr)),
      "a typed_sqlite_projection needs at least one public `void on(const E&, const "
      "annals::actors::envelope&, sqlite3*)` for an event type E of the aggregate");
    detail::dispatch_typed<A>(rec, call);
  }
};

} // namespace annals::actors

#pragma once

/// @file
/// Exactly-once projections into PostgreSQL (library `annals::actors_postgres`, built with
/// the PostgreSQL journal; links libpq).
///
/// As `sqlite_projection_handler` does for a SQLite file: each batch of events runs in one
/// transaction on the read model's database that also moves the projection's row in the
/// table `projection_offsets` there, so the model and its offset commit together and each
/// event is applied exactly once, also across a crash of the process or of the server.
///
/// ```cpp
/// class balance_table
///   : public annals::actors::typed_postgres_projection<balance_table, bank::account> {
/// public:
///   void create_schema(PGconn* db) override { exec(db, "CREATE TABLE IF NOT EXISTS ..."); }
///   void reset(PGconn* db) override { exec(db, "DELETE FROM balances"); }
///   void on(const bank::deposited& e, const annals::actors::envelope& env, PGconn* db) {
///     ... PQexecParams(db, "UPDATE balances SET ...", ...) ...
///   }
/// };
///
/// auto proj = annals::actors::spawn_projection(
///   sys, journal, std::make_shared<balance_table>(),
///   annals::actors::postgres_projection_options{
///     .name = "balances", .conninfo = "postgresql://bank@127.0.0.1:5432/bank"});
/// ```
///
/// How a batch runs: `BEGIN`, a transaction-level advisory lock on the projection's name
/// (instances of one projection on one database take turns), a read of the stored offset
/// (another offset than the one this instance left stops it with
/// `projection_errc::offset_moved`, nothing applied), one savepoint per event (a throwing
/// handler rolls back its event alone and stops the projection at the event before), the
/// offset moved by compare-and-set, `COMMIT`. A lost connection fails the batch with
/// `projection_errc::read_model_failed` naming the server; whether a COMMIT that was sent
/// took effect is read back from the stored offset when the projection starts again
/// (`rebuild()` restarts a failed projection; so does a new `spawn_projection`).
///
/// The model may live in the journal's own database (annals-bank does that when its
/// journal is on PostgreSQL) or in any other.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "annals/actors/projection.hpp"
#include "annals/actors/typed_projection.hpp"

struct pg_conn; // libpq's PGconn

namespace annals::actors {

/// The read model of an exactly-once projection into PostgreSQL; subclass it. Each method
/// runs inside a transaction that the runtime begins and commits together with the
/// projection's offset, on the projection's own thread. Report failures by throwing (e.g.
/// `throw std::runtime_error{PQerrorMessage(db)}`): the event is rolled back and the
/// projection stops at the event before.
class postgres_projection_handler {
public:
  virtual ~postgres_projection_handler();

  /// Creates the model's tables if missing; runs once at start, in its own transaction.
  virtual void create_schema(pg_conn* db);

  /// Folds one event (one that passed the filter) into the model.
  virtual void apply(pg_conn* db, const persistence::event_record& rec) = 0;

  /// Deletes the model's rows before a rebuild; commits together with offset 0.
  virtual void reset(pg_conn* db) = 0;
};

/// The base of a typed exactly-once handler into PostgreSQL: as `typed_sqlite_projection`,
/// with `void on(const E&, const envelope&, PGconn* db)` members.
template <class Derived, named_aggregate A>
class typed_postgres_projection : public postgres_projection_handler {
public:
  /// Decodes and dispatches one record to `Derived::on` (typed_projection.hpp says how).
  void apply(pg_conn* db, const persistence::event_record& rec) final {
    detail::connection_on_caller<Derived, pg_conn*> call{static_cast<Derived&>(*this), db};
    static_assert(
      detail::accepts_any<decltype(call)>(static_cast<typename A::event_type*>(nullptr)),
      "a typed_postgres_projection needs at least one public `void on(const E&, const "
      "annals::actors::envelope&, PGconn*)` for an event type E of the aggregate");
    detail::dispatch_typed<A>(rec, call);
  }
};

/// Options of `spawn_projection` for an exactly-once projection into PostgreSQL.
struct postgres_projection_options {
  /// Names the projection in the `projection_offsets` table, in status replies and errors.
  std::string name;
  /// The read model's database: a libpq connection string or URI, e.g.
  /// `postgresql://bank@127.0.0.1:5432/bank`.
  std::string conninfo;
  /// Which events reach the handler.
  event_filter filter = event_filter::all();
  /// Most events read from the journal per catch-up page (one transaction each).
  std::size_t page_size = 512;
  /// Most live commits waiting in the projection's mailbox; see `projection_options`.
  std::size_t max_queued_batches = 1024;
  /// How long connecting to the server may take.
  std::chrono::milliseconds connect_timeout{10'000};
};

/// Starts an exactly-once projection of `journal` into the PostgreSQL database
/// `opts.conninfo`. Start-up errors (an unreachable server, a failing `create_schema`)
/// show up as state `failed` in the status, never as an exception.
projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<postgres_projection_handler> handler,
                            postgres_projection_options opts);

/// Creates the table `projection_offsets` (name, offset) in the database of `db` if
/// missing, as the projections do; for readers that must find it before any projection
/// ran. Throws `std::runtime_error` with the server's message.
void create_postgres_offsets_table(pg_conn* db);

/// The offset projection `name` stored in the database of `db` (0 if none); run it in the
/// same transaction as the read of the model to get the offset the rows are at. Throws
/// `std::runtime_error` with the server's message.
std::uint64_t postgres_stored_offset(pg_conn* db, const std::string& name);

} // namespace annals::actors

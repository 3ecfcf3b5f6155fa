#pragma once

/// @file
/// A read model kept in tables of a SQLite file, written by SQL inside a transaction that
/// annals begins and commits. The same model runs two ways:
///
/// - **asynchronously**, as an exactly-once projection (`annals::actors::spawn_projection`
///   with `sqlite_projection_options`, where it is called `sqlite_projection_handler`): the
///   projection's own thread folds committed events into the model, in batches that commit
///   with the projection's offset; a command's reply may come before the model has its
///   events (`projection::await_offset` waits for them);
/// - **inline**, inside the journal's own append transaction (`sqlite_options::
///   inline_projections`): the model is written in the same savepoint as the events, so the
///   events and the model commit together, an acknowledged append implies the model has it,
///   and a model that throws fails the append, with nothing written.
///
/// ```cpp
/// class balance_table
///   : public annals::actors::typed_sqlite_projection<balance_table, bank::account> {
/// public:
///   void create_schema(sqlite3* db) override { exec(db, "CREATE TABLE IF NOT EXISTS ..."); }
///   void reset(sqlite3* db) override { exec(db, "DELETE FROM balances"); }
///   void on(const bank::deposited& e, const annals::actors::envelope& env, sqlite3* db) { ... }
/// };
///
/// // inline: the journal keeps the table in step with every append
/// auto journal = annals::persistence::sqlite_journal::open(
///   {.path = "bank.journal",
///    .inline_projections = {{"balances", std::make_shared<balance_table>()}}});
/// ```

#include <memory>
#include <string>

#include "annals/persistence/journal.hpp"

struct sqlite3;

namespace annals::persistence {

/// A read model in SQLite tables; subclass it (or `annals::actors::typed_sqlite_projection`).
/// Every call runs inside a transaction annals owns, on one thread at a time; report
/// failures by throwing (the event's work is rolled back).
class sqlite_read_model {
public:
  virtual ~sqlite_read_model();

  /// Creates the model's tables if missing; runs once at start, in its own transaction.
  virtual void create_schema(sqlite3* db);

  /// Folds one event into the model. An asynchronous projection calls it for the events
  /// that pass its filter; an inline projection for every event appended (a typed model
  /// skips the other aggregate types itself).
  virtual void apply(sqlite3* db, const event_record& rec) = 0;

  /// Deletes the model's rows before a rebuild replays the journal.
  virtual void reset(sqlite3* db) = 0;
};

/// A read model that the SQLite journal writes inside its append transactions; see the
/// file comment and `sqlite_options::inline_projections`.
struct sqlite_inline_projection {
  /// Names the model's row in the file's `projection_offsets` table, and the model in
  /// errors and in `sqlite_journal::rebuild_inline`.
  std::string name;
  std::shared_ptr<sqlite_read_model> model;
};

} // namespace annals::persistence

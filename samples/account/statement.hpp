#pragma once

// The `statement` read model: one row per event of an account (opened, deposit,
// withdrawal, closed) with the balance after it, kept by an exactly-once projection (the
// rows and the projection's offset commit together). A line's balance is the balance of
// the account's previous line plus this line's movement, so the table alone explains every
// balance.
//
// It folds account events only (events of other aggregates are skipped); an account event
// that does not decode stops the projection.

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>
#include <sqlite3.h>

#include "account/account.hpp"
#include "annals/actors/projection.hpp"
#include "annals/actors/typed_projection.hpp"
#include "annals/error.hpp"

namespace bank {

/// One line of an account's statement.
struct statement_line {
  std::uint64_t seq = 0;         // the event's position in the account's stream
  std::uint64_t offset = 0;      // the event's global journal offset
  std::string kind;              // opened, deposit, withdrawal or closed
  std::int64_t amount = 0;       // cents moved; 0 for opened and closed
  std::int64_t balance = 0;      // the balance after this line
  std::string correlation_id;    // e.g. `transfer:<id>`; empty for a direct command
  std::int64_t timestamp_ms = 0; // commit time, milliseconds since the Unix epoch

  friend bool operator==(const statement_line&, const statement_line&) = default;
};

/// What one account event does to its statement: the line's kind and amount, and the signed
/// change of the balance (shared by the SQLite and PostgreSQL statement models).
struct statement_movement {
  const char* kind;
  std::int64_t amount;
  std::int64_t delta;
};
inline statement_movement movement_of(const opened&) {
  return {"opened", 0, 0};
}
inline statement_movement movement_of(const deposited& e) {
  return {"deposit", e.cents, e.cents};
}
inline statement_movement movement_of(const withdrawn& e) {
  return {"withdrawal", e.cents, -e.cents};
}
inline statement_movement movement_of(const closed&) {
  return {"closed", 0, 0};
}

namespace statement_detail {

struct finalize_stmt {
  void operator()(sqlite3_stmt* stmt) const {
    sqlite3_finalize(stmt);
  }
};
using stmt_ptr = std::unique_ptr<sqlite3_stmt, finalize_stmt>;

// A text column as a string; NULL reads as empty.
inline std::string column_string(sqlite3_stmt* stmt, int col) {
  auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, col));
  return text != nullptr
           ? std::string{text, static_cast<std::size_t>(sqlite3_column_bytes(stmt, col))}
           : std::string{};
}

} // namespace statement_detail

class statement_projection
  : public annals::actors::typed_sqlite_projection<statement_projection, account> {
public:
  void create_schema(sqlite3* db) override {
    exec(db, "CREATE TABLE IF NOT EXISTS statement (account_id TEXT NOT NULL,"
             " seq INTEGER NOT NULL, \"offset\" INTEGER NOT NULL, kind TEXT NOT NULL,"
             " amount INTEGER NOT NULL, balance INTEGER NOT NULL,"
             " correlation_id TEXT NOT NULL, timestamp INTEGER NOT NULL,"
             " PRIMARY KEY (account_id, seq))");
  }

  void reset(sqlite3* db) override {
    exec(db, "DELETE FROM statement");
  }

  // Every account event is a line; `movement_of` says what it does to the balance.
  template <class E>
  void on(const E& e, const annals::actors::envelope& env, sqlite3* db) {
    auto m = movement_of(e);
    auto id = env.entity_id();
    auto balance = last_balance(db, id) + m.delta;
    auto stmt = prepare(db, "INSERT INTO statement (account_id, seq, \"offset\", kind, amount,"
                            " balance, correlation_id, timestamp)"
                            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    sqlite3_bind_text(stmt.get(), 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt.get(), 2, static_cast<sqlite3_int64>(env.seq()));
    sqlite3_bind_int64(stmt.get(), 3, static_cast<sqlite3_int64>(env.offset()));
    sqlite3_bind_text(stmt.get(), 4, m.kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt.get(), 5, m.amount);
    sqlite3_bind_int64(stmt.get(), 6, balance);
    sqlite3_bind_text(stmt.get(), 7, env.correlation_id().c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt.get(), 8, to_epoch_ms(env.timestamp_us()));
    if (sqlite3_step(stmt.get()) != SQLITE_DONE)
      fail(db);
  }

  /// Microseconds since the Unix epoch to whole milliseconds, rounded down.
  static std::int64_t to_epoch_ms(std::int64_t us) {
    return std::chrono::floor<std::chrono::milliseconds>(std::chrono::microseconds{us}).count();
  }

private:
  // The balance on the account's latest line, 0 if it has none yet.
  static std::int64_t last_balance(sqlite3* db, std::string_view id) {
    auto stmt =
      prepare(db, "SELECT balance FROM statement WHERE account_id = ?1 ORDER BY seq DESC LIMIT 1");
    sqlite3_bind_text(stmt.get(), 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    switch (sqlite3_step(stmt.get())) {
      case SQLITE_ROW:
        return sqlite3_column_int64(stmt.get(), 0);
      case SQLITE_DONE:
        return 0;
      default:
        fail(db);
    }
  }

  static statement_detail::stmt_ptr prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK)
      fail(db);
    return statement_detail::stmt_ptr{stmt};
  }

  static void exec(sqlite3* db, const char* sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      fail(db);
  }

  [[noreturn]] static void fail(sqlite3* db) {
    throw std::runtime_error{std::string{"statement: "} + sqlite3_errmsg(db)};
  }
};

/// The statement of one account, ordered by sequence number; empty for an account without
/// lines. Keeps no state of its own, so any thread may call it with a connection that
/// thread may use (e.g. its own read-only connection to the read-model file); the lines
/// come from one read, i.e. one consistent state of the table. Errors are
/// `projection.read_model_failed` with SQLite's message (e.g. before the projection has
/// created the table).
inline caf::expected<std::vector<statement_line>> read_statement(sqlite3* db,
                                                                 std::string_view account_id) {
  using annals::actors::projection_errc;
  if (db == nullptr)
    return annals::make_error(projection_errc::read_model_failed, "statement: no connection");
  auto failed = [db] {
    return annals::make_error(projection_errc::read_model_failed,
                              std::string{"statement: "} + sqlite3_errmsg(db));
  };
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db,
                         "SELECT seq, \"offset\", kind, amount, balance, correlation_id, timestamp"
                         " FROM statement WHERE account_id = ?1 ORDER BY seq",
                         -1, &raw, nullptr)
      != SQLITE_OK)
    return failed();
  statement_detail::stmt_ptr stmt{raw};
  sqlite3_bind_text(stmt.get(), 1, account_id.data(), static_cast<int>(account_id.size()),
                    SQLITE_TRANSIENT);
  std::vector<statement_line> lines;
  for (;;) {
    auto rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_DONE)
      return lines;
    if (rc != SQLITE_ROW)
      return failed();
    auto* s = stmt.get();
    lines.push_back(statement_line{
      .seq = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0)),
      .offset = static_cast<std::uint64_t>(sqlite3_column_int64(s, 1)),
      .kind = statement_detail::column_string(s, 2),
      .amount = sqlite3_column_int64(s, 3),
      .balance = sqlite3_column_int64(s, 4),
      .correlation_id = statement_detail::column_string(s, 5),
      .timestamp_ms = sqlite3_column_int64(s, 6),
    });
  }
}

} // namespace bank

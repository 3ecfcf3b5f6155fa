#pragma once

// The `balances` read model: one row per account in a SQLite table, kept by an
// exactly-once projection (the row change and the projection's offset commit together).

#include <cstdint>
#include <stdexcept>
#include <string>

#include <sqlite3.h>

#include "account/account.hpp"
#include "annals/actors/typed_projection.hpp"

namespace bank {

class balances_projection
  : public annals::actors::typed_sqlite_projection<balances_projection, account> {
public:
  using envelope = annals::actors::envelope;

  void create_schema(sqlite3* db) override {
    exec(db, "CREATE TABLE IF NOT EXISTS balances (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
             " balance INTEGER NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL)");
  }

  void reset(sqlite3* db) override {
    exec(db, "DELETE FROM balances");
  }

  void on(const opened& e, const envelope& env, sqlite3* db) {
    run(db, "INSERT INTO balances VALUES (?1, ?2, 0, 'open', ?4)", env, e.owner, 0);
  }
  void on(const deposited& e, const envelope& env, sqlite3* db) {
    run(db, "UPDATE balances SET balance = balance + ?3, version = ?4 WHERE id = ?1", env, "",
        e.cents);
  }
  void on(const withdrawn& e, const envelope& env, sqlite3* db) {
    run(db, "UPDATE balances SET balance = balance - ?3, version = ?4 WHERE id = ?1", env, "",
        e.cents);
  }
  void on(const closed&, const envelope& env, sqlite3* db) {
    run(db, "UPDATE balances SET status = 'closed', version = ?4 WHERE id = ?1", env, "", 0);
  }

private:
  static void exec(sqlite3* db, const char* sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      throw std::runtime_error{std::string{"balances: "} + sqlite3_errmsg(db)};
  }

  // Binds ?1 the account id, ?2 text, ?3 amount, ?4 the version (the event's seq).
  static void run(sqlite3* db, const char* sql, const envelope& env, const std::string& text,
                  std::int64_t amount) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK)
      throw std::runtime_error{std::string{"balances: "} + sqlite3_errmsg(db)};
    // Every statement names ?4 (its highest index), so all four can be bound.
    auto id = env.entity_id();
    sqlite3_bind_text(stmt, 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, text.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 3, amount);
    sqlite3_bind_int64(stmt, 4, static_cast<sqlite3_int64>(env.seq()));
    auto rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
      throw std::runtime_error{std::string{"balances: "} + sqlite3_errmsg(db)};
  }
};

} // namespace bank

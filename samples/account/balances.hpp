#pragma once

// The `balances` read model: one row per account in a SQLite table, kept by an
// exactly-once projection (the row change and the projection's offset commit together).

#include <cstdint>
#include <stdexcept>
#include <string>
#include <variant>

#include <sqlite3.h>

#include "account/account.hpp"
#include "annals/actors/projection.hpp"
#include "annals/error.hpp"

namespace bank {

class balances_projection : public annals::actors::sqlite_projection_handler {
public:
  void create_schema(sqlite3* db) override {
    exec(db, "CREATE TABLE IF NOT EXISTS balances (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
             " balance INTEGER NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL)");
  }

  void apply(sqlite3* db, const annals::persistence::event_record& rec) override {
    auto ev = account::codec_type::decode(rec.name, rec.version, rec.payload);
    if (!ev)
      throw std::runtime_error{annals::render(ev.error())};
    auto id = rec.persistence_id.substr(rec.persistence_id.find('|') + 1);
    std::visit([&](const auto& e) { on(db, id, rec.seq, e); }, *ev);
  }

  void reset(sqlite3* db) override {
    exec(db, "DELETE FROM balances");
  }

private:
  static void on(sqlite3* db, const std::string& id, std::uint64_t seq, const opened& e) {
    run(db, "INSERT INTO balances VALUES (?1, ?2, 0, 'open', ?4)", id, e.owner, 0, seq);
  }
  static void on(sqlite3* db, const std::string& id, std::uint64_t seq, const deposited& e) {
    run(db, "UPDATE balances SET balance = balance + ?3, version = ?4 WHERE id = ?1", id, "",
        e.cents, seq);
  }
  static void on(sqlite3* db, const std::string& id, std::uint64_t seq, const withdrawn& e) {
    run(db, "UPDATE balances SET balance = balance - ?3, version = ?4 WHERE id = ?1", id, "",
        e.cents, seq);
  }
  static void on(sqlite3* db, const std::string& id, std::uint64_t seq, const closed&) {
    run(db, "UPDATE balances SET status = 'closed', version = ?4 WHERE id = ?1", id, "", 0, seq);
  }

  static void exec(sqlite3* db, const char* sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      throw std::runtime_error{std::string{"balances: "} + sqlite3_errmsg(db)};
  }

  // Binds ?1 id, ?2 text, ?3 amount, ?4 version.
  static void run(sqlite3* db, const char* sql, const std::string& id, const std::string& text,
                  std::int64_t amount, std::uint64_t version) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK)
      throw std::runtime_error{std::string{"balances: "} + sqlite3_errmsg(db)};
    // Every statement names ?4 (its highest index), so all four can be bound.
    sqlite3_bind_text(stmt, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, text.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 3, amount);
    sqlite3_bind_int64(stmt, 4, static_cast<sqlite3_int64>(version));
    auto rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
      throw std::runtime_error{std::string{"balances: "} + sqlite3_errmsg(db)};
  }
};

} // namespace bank

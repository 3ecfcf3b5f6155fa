#include "sqlite/handles.hpp"

namespace annals::persistence::sqlite {

connection::~connection() {
  if (db)
    sqlite3_close_v2(db);
}

caf::error sqlite_failure(int rc, sqlite3* db, const std::string& what, const std::string& path) {
  std::string ctx = what;
  ctx += " (";
  ctx += path;
  ctx += "): ";
  ctx += db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  // An I/O error says which system call failed.
  switch (db ? sqlite3_extended_errcode(db) : rc) {
    case SQLITE_IOERR_WRITE:
      ctx += " (write failed)";
      break;
    case SQLITE_IOERR_FSYNC:
    case SQLITE_IOERR_DIR_FSYNC:
      ctx += " (fsync failed)";
      break;
    case SQLITE_IOERR_READ:
    case SQLITE_IOERR_SHORT_READ:
      ctx += " (read failed)";
      break;
    case SQLITE_IOERR_TRUNCATE:
      ctx += " (truncate failed)";
      break;
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return make_error(journal_errc::disk_full, std::move(ctx));
    case SQLITE_READONLY:
      return make_error(journal_errc::read_only, std::move(ctx));
    case SQLITE_NOTADB:
      return make_error(journal_errc::not_a_journal, std::move(ctx));
    default:
      return make_error(journal_errc::storage_error, std::move(ctx));
  }
}

caf::error last_failure(sqlite3* db, const std::string& what, const std::string& path) {
  return sqlite_failure(sqlite3_extended_errcode(db), db, what, path);
}

caf::error closed_error(const std::string& path) {
  return make_error(journal_errc::closed, "journal " + path + " is closed");
}

caf::expected<statement> prepare(sqlite3* db, const char* sql, const std::string& path) {
  statement stmt;
  auto rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt.ptr, nullptr);
  if (rc != SQLITE_OK)
    return sqlite_failure(rc, db, std::string{"preparing `"} + sql + "`", path);
  return stmt;
}

caf::error exec(sqlite3* db, const char* sql, const std::string& path) {
  auto rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK)
    return sqlite_failure(rc, db, std::string{"running `"} + sql + "`", path);
  return {};
}

caf::expected<std::int64_t> query_int(sqlite3* db, const char* sql, const std::string& path) {
  auto stmt = prepare(db, sql, path);
  if (!stmt)
    return std::move(stmt.error());
  auto rc = sqlite3_step(*stmt);
  if (rc == SQLITE_ROW)
    return sqlite3_column_int64(*stmt, 0);
  if (rc == SQLITE_DONE)
    return std::int64_t{0};
  return sqlite_failure(rc, db, std::string{"running `"} + sql + "`", path);
}

caf::expected<std::string> query_text(sqlite3* db, const char* sql, const std::string& path) {
  auto stmt = prepare(db, sql, path);
  if (!stmt)
    return std::move(stmt.error());
  auto rc = sqlite3_step(*stmt);
  if (rc == SQLITE_ROW) {
    auto txt = sqlite3_column_text(*stmt, 0);
    return std::string{txt ? reinterpret_cast<const char*>(txt) : ""};
  }
  if (rc == SQLITE_DONE)
    return std::string{};
  return sqlite_failure(rc, db, std::string{"running `"} + sql + "`", path);
}

caf::expected<std::uint64_t> read_count(sqlite3* db, sqlite3_stmt* stmt, const std::string& path,
                                        const char* what) {
  reset_guard guard{stmt};
  auto rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW)
    return static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 0));
  if (rc == SQLITE_DONE)
    return std::uint64_t{0};
  return sqlite_failure(rc, db, what, path);
}

caf::expected<connection> open_connection(const std::string& path, int flags,
                                          std::chrono::milliseconds busy_timeout) {
  connection conn;
  auto rc = sqlite3_open_v2(path.c_str(), &conn.db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK)
    return sqlite_failure(rc, conn.db, "opening", path);
  sqlite3_extended_result_codes(conn.db, 1);
  sqlite3_busy_timeout(conn.db, static_cast<int>(busy_timeout.count()));
  return conn;
}

} // namespace annals::persistence::sqlite

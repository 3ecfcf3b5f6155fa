#include "journal_file.hpp"

#include <filesystem>

#include <sqlite3.h>

#include "annals/error.hpp"
#include "annals/persistence/sqlite_format.hpp"

namespace annals::tools::detail {

namespace fs = std::filesystem;
using persistence::journal_errc;

connection::~connection() {
  if (db_)
    sqlite3_close_v2(db_);
}

std::string sqlite_message(sqlite3* db, int rc, const std::string& what, const std::string& path) {
  std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return path + " is locked by another connection (" + msg + ")";
    case SQLITE_NOTADB:
      return path + " is not an annals journal (" + msg + ")";
    case SQLITE_CANTOPEN:
      return path + ": cannot open (" + msg + ")";
    default:
      return path + ": " + what + ": " + msg;
  }
}

void remove_database_files(const std::string& path) {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"})
    fs::remove(path + suffix, ec);
}

connection open_connection(const std::string& path, int flags, int busy_ms) {
  sqlite3* raw = nullptr;
  auto rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  connection conn{raw};
  if (rc != SQLITE_OK)
    fail(sqlite_message(raw, rc, "opening", path));
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, busy_ms);
  return conn;
}

statement::statement(sqlite3* db, std::string_view sql, std::string path)
  : db_(db), path_(std::move(path)) {
  auto rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  if (rc != SQLITE_OK)
    fail(sqlite_message(db, rc, "preparing `" + std::string{sql} + "`", path_));
}

statement::~statement() {
  sqlite3_finalize(stmt_);
}

statement& statement::bind(int index, std::int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}

statement& statement::bind(int index, std::string_view value) {
  sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
  return *this;
}

statement& statement::bind_blob(int index, const void* data, int size) {
  sqlite3_bind_blob(stmt_, index, data, size, SQLITE_TRANSIENT);
  return *this;
}

statement& statement::bind_null(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}

statement& statement::bind_optional(int index, std::string_view value) {
  return value.empty() ? bind_null(index) : bind(index, value);
}

bool statement::step() {
  auto rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW)
    return true;
  if (rc == SQLITE_DONE)
    return false;
  auto msg = sqlite_message(db_, rc, std::string{"running `"} + sqlite3_sql(stmt_) + "`", path_);
  sqlite3_reset(stmt_);
  fail(std::move(msg));
}

void statement::run() {
  while (step()) {
  }
}

void statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::int64_t statement::int64(int col) const {
  return sqlite3_column_int64(stmt_, col);
}

std::string statement::text(int col) const {
  auto txt = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  if (!txt)
    return {};
  return std::string(txt, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)));
}

bool statement::is_null(int col) const {
  return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
}

void exec(sqlite3* db, const std::string& sql, const std::string& path) {
  char* msg = nullptr;
  auto rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg);
  sqlite3_free(msg);
  if (rc != SQLITE_OK)
    fail(sqlite_message(db, rc, "running `" + sql + "`", path));
}

std::int64_t scalar(sqlite3* db, const std::string& sql, const std::string& path) {
  statement stmt{db, sql, path};
  return stmt.step() ? stmt.int64(0) : 0;
}

void read_event(const statement& stmt, persistence::event_record& rec, const std::string& path) {
  if (auto err = persistence::sqlite_format::read_event(stmt.get(), path, rec))
    fail(context_of(err));
}

read_transaction::read_transaction(sqlite3* db, const std::string& path) : db_(db) {
  exec(db, "BEGIN", path);
}

read_transaction::~read_transaction() {
  sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
}

std::uint64_t journal_file::head() const {
  return static_cast<std::uint64_t>(
    scalar(db(), "SELECT coalesce(max(global_offset), 0) FROM events", path));
}

std::string journal_message(const caf::error& err, const std::string& path) {
  auto ctx = context_of(err);
  if (is(err, journal_errc::not_a_journal)) {
    if (ctx.find("not an annals journal") != std::string::npos)
      return ctx;
    auto prefix = path + " is ";
    if (ctx.rfind(prefix, 0) == 0)
      ctx.erase(0, prefix.size());
    return path + " is not an annals journal (" + ctx + ")";
  }
  // SQLite's words for SQLITE_BUSY and SQLITE_LOCKED.
  if (ctx.find("database is locked") != std::string::npos
      || ctx.find("database table is locked") != std::string::npos)
    return path + " is locked by another connection (" + ctx + ")";
  return ctx;
}

journal_file open_journal(const std::string& path) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (!fs::exists(st))
    fail(path + ": no such file");
  if (fs::is_directory(st))
    fail(path + " is a directory, not an annals journal");
  // A reader waits this long for a lock before the tool reports the file locked.
  constexpr std::chrono::milliseconds busy{2'000};
  auto journal = persistence::sqlite_journal::open_read_only(path, busy);
  if (!journal)
    fail(journal_message(journal.error(), path));
  journal_file result{path, std::move(*journal), {}};
  result.conn = open_connection(path, SQLITE_OPEN_READONLY, static_cast<int>(busy.count()));
  exec(result.db(), "PRAGMA query_only = 1", path);
  return result;
}

} // namespace annals::tools::detail

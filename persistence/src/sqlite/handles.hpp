#pragma once

// Owning wrappers of SQLite handles, the statement helpers every part of the SQLite journal
// uses, and the one mapping from a SQLite failure to a journal error.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/persistence/sqlite_journal.hpp"

#include <sqlite3.h>

namespace annals::persistence::sqlite {

/// A prepared statement, finalized with the object.
struct statement {
  sqlite3_stmt* ptr = nullptr;

  statement() = default;
  statement(statement&& other) noexcept : ptr(std::exchange(other.ptr, nullptr)) {}
  statement& operator=(statement&& other) noexcept {
    std::swap(ptr, other.ptr);
    return *this;
  }
  ~statement() {
    sqlite3_finalize(ptr);
  }
  operator sqlite3_stmt*() const {
    return ptr;
  }
};

/// A connection, closed with the object.
struct connection {
  sqlite3* db = nullptr;

  connection() = default;
  connection(connection&& other) noexcept : db(std::exchange(other.db, nullptr)) {}
  connection& operator=(connection&& other) noexcept {
    std::swap(db, other.db);
    return *this;
  }
  ~connection();
};

/// Resets a statement (and its bindings) when the scope ends, however it ends.
struct reset_guard {
  sqlite3_stmt* stmt;
  ~reset_guard() {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
  }
};

/// The journal error for SQLite result code `rc` while doing `what` on `path`: SQLITE_FULL
/// is `disk_full`, SQLITE_READONLY `read_only`, SQLITE_NOTADB `not_a_journal`, anything
/// else `storage_error`. The context names `path`, SQLite's own message and, for an I/O
/// error, the system call that failed.
caf::error sqlite_failure(int rc, sqlite3* db, const std::string& what, const std::string& path);

/// `sqlite_failure` for the most recent failure on `db`.
caf::error last_failure(sqlite3* db, const std::string& what, const std::string& path);

/// `journal_errc::closed` for an operation submitted after `close`.
caf::error closed_error(const std::string& path);

/// A persistent prepared statement.
caf::expected<statement> prepare(sqlite3* db, const char* sql, const std::string& path);

/// Runs `sql` (several statements allowed).
caf::error exec(sqlite3* db, const char* sql, const std::string& path);

/// Runs a statement that returns at most one integer (0 for no row).
caf::expected<std::int64_t> query_int(sqlite3* db, const char* sql, const std::string& path);

/// Runs a statement that returns at most one text (empty for no row).
caf::expected<std::string> query_text(sqlite3* db, const char* sql, const std::string& path);

/// Steps the bound `stmt` once for a count (0 for no row) and resets it.
caf::expected<std::uint64_t> read_count(sqlite3* db, sqlite3_stmt* stmt, const std::string& path,
                                        const char* what);

/// Opens `path` with SQLite `flags` (no mutex: each connection has one thread), extended
/// result codes and `busy_timeout`.
caf::expected<connection> open_connection(const std::string& path, int flags,
                                          std::chrono::milliseconds busy_timeout);

// The helpers below run once per row or per bound value on the write and read paths, so
// they stay inline.

/// Steps `stmt` once and resets it; true if it ran (SQLITE_DONE or SQLITE_ROW).
inline bool step_done(sqlite3_stmt* stmt) {
  auto rc = sqlite3_step(stmt);
  sqlite3_reset(stmt);
  return rc == SQLITE_DONE || rc == SQLITE_ROW;
}

inline void bind_text(sqlite3_stmt* stmt, int index, std::string_view str) {
  sqlite3_bind_text(stmt, index, str.data(), static_cast<int>(str.size()), SQLITE_STATIC);
}

/// Binds `str`, or NULL for an empty one.
inline void bind_optional_text(sqlite3_stmt* stmt, int index, std::string_view str) {
  if (str.empty())
    sqlite3_bind_null(stmt, index);
  else
    bind_text(stmt, index, str);
}

/// Binds an unsigned bound, saturating at SQLite's largest integer.
inline void bind_u64(sqlite3_stmt* stmt, int index, std::uint64_t value) {
  constexpr auto top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  sqlite3_bind_int64(stmt, index, static_cast<std::int64_t>(std::min(value, top)));
}

/// The text of column `index` (empty for NULL), embedded NULs included.
inline std::string column_string(sqlite3_stmt* stmt, int index) {
  auto txt = reinterpret_cast<const char*>(sqlite3_column_text(stmt, index));
  if (!txt)
    return {};
  return std::string(txt, static_cast<std::size_t>(sqlite3_column_bytes(stmt, index)));
}

} // namespace annals::persistence::sqlite

#pragma once

// Internal to the annals tool: a journal file opened for reading (the SQLite journal's
// read-only mode, plus a read-only connection of the tool's own for the queries the
// journal contract has no call for), and small SQLite helpers whose failures end the
// subcommand. The file format itself (columns, tags, DDL) comes from
// annals/persistence/sqlite_format.hpp.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "annals/persistence/journal.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "annals/persistence_id.hpp"

#include "options.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace annals::tools::detail {

/// An owned SQLite connection.
class connection {
public:
  connection() = default;
  explicit connection(sqlite3* db) : db_(db) {}
  connection(connection&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  connection& operator=(connection&& other) noexcept {
    std::swap(db_, other.db_);
    return *this;
  }
  ~connection();
  sqlite3* get() const {
    return db_;
  }

private:
  sqlite3* db_ = nullptr;
};

/// Opens `path` with SQLite `flags`; `busy_ms` bounds the wait for another connection's
/// lock. Throws `failure`.
connection open_connection(const std::string& path, int flags, int busy_ms);

/// A prepared statement whose failures throw `failure` naming `path` (and saying "locked"
/// when another connection holds a lock).
class statement {
public:
  statement(sqlite3* db, std::string_view sql, std::string path);
  ~statement();
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  statement& bind(int index, std::int64_t value);
  statement& bind(int index, std::string_view value);
  statement& bind_blob(int index, const void* data, int size);
  statement& bind_null(int index);
  /// Binds `value`, or NULL when it is empty.
  statement& bind_optional(int index, std::string_view value);

  /// True while there is a row, false when the statement is done.
  bool step();
  /// Steps to the end (for statements without rows).
  void run();
  void reset();

  std::int64_t int64(int col) const;
  std::string text(int col) const;
  bool is_null(int col) const;
  sqlite3_stmt* get() const {
    return stmt_;
  }

private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string path_;
};

/// Where `annals::persistence_id`'s separator is in the `persistence_id` column (0 if
/// nowhere), for queries that split ids in SQL.
inline const std::string separator_position =
  std::string{"instr(persistence_id, '"} + persistence_id::separator + "')";

/// The message for a SQLite failure on `path`: "locked by another connection" for
/// SQLITE_BUSY and SQLITE_LOCKED, SQLite's own words otherwise.
std::string sqlite_message(sqlite3* db, int rc, const std::string& what, const std::string& path);

/// Removes a SQLite database file and its `-wal`, `-shm` and `-journal` companions, if
/// there (errors ignored: used to clean up files the tool itself created).
void remove_database_files(const std::string& path);

/// Runs `sql` (several statements allowed); throws `failure`.
void exec(sqlite3* db, const std::string& sql, const std::string& path);

/// The first integer of the first row of `sql` (0 for no row).
std::int64_t scalar(sqlite3* db, const std::string& sql, const std::string& path);

/// Fills `rec` from the current row of `stmt`, whose columns are
/// `sqlite_format::event_columns`. Throws `failure` for a structurally broken row.
void read_event(const statement& stmt, persistence::event_record& rec, const std::string& path);

// Read transactions on the tool's connection: one consistent view for several queries.
struct read_transaction {
  read_transaction(sqlite3* db, const std::string& path);
  ~read_transaction();
  read_transaction(const read_transaction&) = delete;
  read_transaction& operator=(const read_transaction&) = delete;
  sqlite3* db_;
};

/// A journal file opened for reading: the SQLite journal in read-only mode (the
/// `persistence::journal` that `state` replays from and `rebuild`'s projection reads) and a
/// read-only connection for the tool's own queries.
struct journal_file {
  std::string path;
  std::shared_ptr<persistence::sqlite_journal> journal;
  connection conn;

  sqlite3* db() const {
    return conn.get();
  }
  std::uint32_t schema_version() const {
    return journal->info().schema_version;
  }
  /// The highest offset (0 for an empty journal).
  std::uint64_t head() const;
};

/// Opens the journal at `path` read-only. Throws `failure` for a missing file, a file
/// that is not a journal, a journal of a newer schema, and a file locked by another
/// connection.
journal_file open_journal(const std::string& path);

/// The message for a journal error about the file at `path`, as the tool words it.
std::string journal_message(const caf::error& err, const std::string& path);

} // namespace annals::tools::detail

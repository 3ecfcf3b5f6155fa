#pragma once

// Whether a file is an annals journal, creating the schema in an empty one, and upgrading
// an older schema in place. The DDL itself is in annals/persistence/sqlite_format.hpp.

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/persistence/sqlite_journal.hpp"

struct sqlite3;

namespace annals::persistence::sqlite {

/// What the first 100 bytes of an existing file say, read without SQLite so that a file
/// of another kind is never touched (SQLite would create -wal/-shm files beside it).
struct file_header {
  bool sqlite = false;
  std::uint32_t application_id = 0;
};

file_header read_header(const std::string& path);

/// `0x414e4e4c`.
std::string hex(std::uint32_t x);

/// Decides, inside a transaction on `db`, whether the file is a journal we may use (false),
/// an empty database we may turn into one (true), or something to leave alone (an error:
/// `not_a_journal` or `newer_schema`).
caf::expected<bool> check_identity(sqlite3* db, const std::string& path);

/// Checks the header of a file that exists and is not empty, without SQLite: an empty
/// error if it is a SQLite database with the annals application id or none.
caf::error check_header(const std::string& path);

/// Checks a file that exists and is not empty without writing to it: `check_header`, then
/// `check_identity` on a read-only connection (a live journal's newest header may be in
/// its WAL). An empty error if it is a journal or an empty database.
caf::error check_existing_file(const std::string& path, std::chrono::milliseconds busy_timeout);

/// On a read-only connection `db` to a file that passed `check_header`: the schema
/// version if the file is an annals journal; `not_a_journal` for an empty database or one
/// of another application, `newer_schema` for a newer journal.
caf::expected<std::uint32_t> check_readable(sqlite3* db, const std::string& path);

/// In one write transaction on `db`: checks the file's identity, creates the schema in an
/// empty database or upgrades an older one, and reads back the schema version into `info`.
caf::error ensure_schema(sqlite3* db, const std::string& path, sqlite_journal_info& info);

} // namespace annals::persistence::sqlite

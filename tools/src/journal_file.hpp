#pragma once

// Internal to the annals tool: read-only access to a journal file, SQLite helpers, time
// formats, and the projection rebuild.

#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "annals/persistence/journal.hpp"
#include "annals/tools/cli.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace annals::tools::detail {

/// Exit codes.
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;

/// Ends a subcommand: `run` prints `message` as one line and returns `code`.
struct failure : std::exception {
  failure(int c, std::string m) : code(c), message(std::move(m)) {}
  const char* what() const noexcept override {
    return message.c_str();
  }
  int code;
  std::string message;
};

[[noreturn]] inline void fail(std::string message) {
  throw failure{exit_failure, std::move(message)};
}

[[noreturn]] inline void usage_error(std::string message) {
  throw failure{exit_usage, std::move(message)};
}

/// Separates tags in the `tags` column of `events` (docs/journal.md).
inline constexpr char tag_separator = '\x1f';

/// The columns `read_event` expects, in this order.
inline constexpr const char* event_columns =
  "global_offset, persistence_id, seq, name, version, payload, tags, timestamp_us, "
  "command_id, correlation_id";

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

/// Runs `sql` (several statements allowed); throws `failure`.
void exec(sqlite3* db, const std::string& sql, const std::string& path);

/// The message for a SQLite failure on `path`: "locked by another connection" for
/// SQLITE_BUSY and SQLITE_LOCKED, SQLite's own words otherwise.
std::string sqlite_message(sqlite3* db, int rc, const std::string& what, const std::string& path);

/// Fills `rec` from the current row of `stmt`, whose columns start at `first` in the order
/// of `event_columns`. Throws `failure` for a structurally broken row.
void read_event(const statement& stmt, int first, persistence::event_record& rec,
                const std::string& path);

/// A journal file opened read-only, and the journal contract's read side on it: reads run
/// inline on the calling thread (one at a time), `append` fails with
/// `journal_errc::read_only`, and `subscribe` never calls back (the tool sees no live
/// commits; readers poll instead).
class readonly_journal final : public persistence::journal {
public:
  /// Checks that `path` is an annals journal (without writing to it) and opens it.
  /// Throws `failure` for a missing file, a file that is not a journal, a journal of a
  /// newer schema, and a file locked by another connection.
  static std::shared_ptr<readonly_journal> open(const std::string& path);

  const std::string& path() const {
    return path_;
  }
  std::uint32_t schema_version() const {
    return schema_version_;
  }
  /// The connection; hold `mutex()` while using it if other threads may read too.
  sqlite3* db() const {
    return conn_.get();
  }
  std::mutex& mutex() const {
    return mtx_;
  }

  /// The highest offset (0 for an empty journal).
  std::uint64_t head();

  void append(persistence::append_request req,
              persistence::callback<persistence::append_result> done) override;
  void read_stream(std::string persistence_id, std::uint64_t from_seq, std::uint64_t to_seq,
                   std::size_t max,
                   persistence::callback<std::vector<persistence::event_record>> done) override;
  void read_all(std::uint64_t from_offset, std::size_t max,
                persistence::callback<std::vector<persistence::event_record>> done) override;
  void read_tagged(std::string tag, std::uint64_t from_offset, std::size_t max,
                   persistence::callback<std::vector<persistence::event_record>> done) override;
  void highest_seq(std::string persistence_id, persistence::callback<std::uint64_t> done) override;
  void head_offset(persistence::callback<std::uint64_t> done) override;
  void persistence_ids(std::string after, std::size_t max,
                       persistence::callback<std::vector<std::string>> done) override;
  std::uint64_t subscribe(persistence::commit_listener f) override;
  void unsubscribe(std::uint64_t handle) override;

  readonly_journal(std::string path, connection conn, std::uint32_t schema_version);

private:
  template <class T, class F>
  void answer(persistence::callback<T>& done, F&& query);

  std::string path_;
  connection conn_;
  std::uint32_t schema_version_;
  mutable std::mutex mtx_;
  std::uint64_t next_subscription_ = 1;
};

/// Parses ISO 8601 UTC (`2026-11-27T10:42:00Z`, optionally with a fraction of a second) or
/// Unix seconds (optionally with a fraction) into microseconds since the Unix epoch.
std::optional<std::int64_t> parse_time(std::string_view text);

/// `2026-11-27T10:42:00.123456Z`.
std::string iso_time(std::int64_t us);

/// `12,345`.
std::string grouped(std::uint64_t n);

/// Whether `os` is `std::cout` or `std::cerr` on a terminal.
bool is_terminal(const std::ostream& os);

/// Rebuilds `proj` from offset 0 into a shadow file next to the journal and swaps its
/// tables into the journal's file; progress goes to `err`, the summary to `out`.
void rebuild(const cli::projection_entry& proj, const std::shared_ptr<readonly_journal>& journal,
             std::ostream& out, std::ostream& err);

} // namespace annals::tools::detail

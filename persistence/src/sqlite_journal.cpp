#include "annals/persistence/sqlite_journal.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>

#include <pthread.h>

#include <caf/make_message.hpp>
#include <sqlite3.h>

#include "annals/persistence/audit.hpp"
#include "internal/validate.hpp"

namespace annals::persistence {

namespace {

// -- SQLite handles ---------------------------------------------------------------------

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

struct connection {
  sqlite3* db = nullptr;

  connection() = default;
  connection(connection&& other) noexcept : db(std::exchange(other.db, nullptr)) {}
  connection& operator=(connection&& other) noexcept {
    std::swap(db, other.db);
    return *this;
  }
  ~connection() {
    if (db)
      sqlite3_close_v2(db);
  }
};

/// Resets a statement (and its bindings) when the scope ends, however it ends.
struct reset_guard {
  sqlite3_stmt* stmt;
  ~reset_guard() {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
  }
};

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

/// Runs a statement that returns at most one integer.
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

caf::expected<connection> open_connection(const std::string& path, int flags,
                                          const sqlite_options& opts) {
  connection conn;
  auto rc = sqlite3_open_v2(path.c_str(), &conn.db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK)
    return sqlite_failure(rc, conn.db, "opening", path);
  sqlite3_extended_result_codes(conn.db, 1);
  sqlite3_busy_timeout(conn.db, static_cast<int>(opts.busy_timeout.count()));
  return conn;
}

void bind_text(sqlite3_stmt* stmt, int index, std::string_view str) {
  sqlite3_bind_text(stmt, index, str.data(), static_cast<int>(str.size()), SQLITE_STATIC);
}

void bind_optional_text(sqlite3_stmt* stmt, int index, std::string_view str) {
  if (str.empty())
    sqlite3_bind_null(stmt, index);
  else
    bind_text(stmt, index, str);
}

/// Binds an unsigned bound, saturating at SQLite's largest integer.
void bind_u64(sqlite3_stmt* stmt, int index, std::uint64_t value) {
  constexpr auto top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  sqlite3_bind_int64(stmt, index, static_cast<std::int64_t>(std::min(value, top)));
}

std::string column_string(sqlite3_stmt* stmt, int index) {
  auto txt = reinterpret_cast<const char*>(sqlite3_column_text(stmt, index));
  if (!txt)
    return {};
  return std::string(txt, static_cast<std::size_t>(sqlite3_column_bytes(stmt, index)));
}

// -- schema -----------------------------------------------------------------------------

// UPDATE and DELETE are refused by triggers. A BEFORE INSERT trigger could also refuse
// INSERT OR REPLACE (whose implicit delete fires no delete trigger unless the connection
// enables recursive_triggers), but any INSERT trigger doubles the CPU cost of an append
// (measured: 0.57 s -> 1.05 s per 100k rows), so that hole is documented instead.
constexpr const char* schema_sql = R"sql(
CREATE TABLE events (
  global_offset  INTEGER PRIMARY KEY,
  persistence_id TEXT    NOT NULL,
  seq            INTEGER NOT NULL CHECK (seq >= 1),
  name           TEXT    NOT NULL,
  version        INTEGER NOT NULL CHECK (version >= 1),
  payload        TEXT    NOT NULL,
  tags           TEXT,
  timestamp_us   INTEGER NOT NULL,
  command_id     TEXT,
  correlation_id TEXT,
  hash           BLOB,
  UNIQUE (persistence_id, seq)
);
CREATE TABLE event_tags (
  tag           TEXT    NOT NULL,
  global_offset INTEGER NOT NULL,
  PRIMARY KEY (tag, global_offset)
) WITHOUT ROWID;
CREATE TABLE snapshots (
  persistence_id TEXT    NOT NULL,
  seq            INTEGER NOT NULL,
  name           TEXT    NOT NULL,
  version        INTEGER NOT NULL,
  payload        TEXT    NOT NULL,
  timestamp_us   INTEGER NOT NULL,
  PRIMARY KEY (persistence_id, seq)
) WITHOUT ROWID;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'annals: events are append-only, UPDATE refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'annals: events are append-only, DELETE refused'); END;
CREATE TRIGGER event_tags_no_update BEFORE UPDATE ON event_tags
BEGIN SELECT RAISE(ABORT, 'annals: event tags are append-only, UPDATE refused'); END;
CREATE TRIGGER event_tags_no_delete BEFORE DELETE ON event_tags
BEGIN SELECT RAISE(ABORT, 'annals: event tags are append-only, DELETE refused'); END;
)sql";

constexpr const char* event_columns =
  "global_offset, persistence_id, seq, name, version, payload, tags, timestamp_us, "
  "command_id, correlation_id";

/// What the first 100 bytes of an existing file say, read without SQLite so that a file
/// of another kind is never touched (SQLite would create -wal/-shm files beside it).
struct file_header {
  bool sqlite = false;
  std::uint32_t application_id = 0;
};

file_header read_header(const std::string& path) {
  file_header result;
  std::ifstream in{path, std::ios::binary};
  char buf[100] = {};
  in.read(buf, sizeof(buf));
  if (in.gcount() < static_cast<std::streamsize>(sizeof(buf))
      || std::memcmp(buf, "SQLite format 3", 16) != 0)
    return result;
  result.sqlite = true;
  auto byte = [&](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(buf[i])); };
  result.application_id = (byte(68) << 24) | (byte(69) << 16) | (byte(70) << 8) | byte(71);
  return result;
}

std::string hex(std::uint32_t x) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", x);
  return buf;
}

/// Decides, inside the writer's first transaction, whether the file is a journal we may
/// use, an empty database we may turn into one, or something to leave alone.
/// Returns true if the schema must be created.
caf::expected<bool> check_identity(sqlite3* db, const std::string& path) {
  auto app = query_int(db, "PRAGMA application_id", path);
  if (!app)
    return std::move(app.error());
  auto version = query_int(db, "PRAGMA user_version", path);
  if (!version)
    return std::move(version.error());
  auto tables = query_int(db, "SELECT count(*) FROM sqlite_schema", path);
  if (!tables)
    return std::move(tables.error());
  auto app_id = static_cast<std::uint32_t>(*app);
  if (app_id == static_cast<std::uint32_t>(sqlite_journal::application_id)) {
    if (*version > static_cast<std::int64_t>(sqlite_journal::schema_version))
      return make_error(journal_errc::newer_schema,
                        path + " has journal schema version " + std::to_string(*version)
                          + ", this build reads up to "
                          + std::to_string(sqlite_journal::schema_version));
    if (*version < 1)
      return make_error(journal_errc::not_a_journal,
                        path + " carries the annals application id but no schema version");
    return false;
  }
  if (app_id == 0 && *version == 0 && *tables == 0)
    return true;
  return make_error(journal_errc::not_a_journal,
                    path + " is a SQLite database of another application (application_id "
                      + hex(app_id) + ", user_version " + std::to_string(*version) + ", "
                      + std::to_string(*tables) + " schema objects)");
}

// -- work items -------------------------------------------------------------------------

struct writer_state;

struct append_item {
  append_request req;
  callback<append_result> done;
};

struct snapshot_item {
  snapshot_record snap;
  callback<caf::unit_t> done;
};

struct control_item {
  std::function<void(writer_state&)> run;
};

using write_item = std::variant<append_item, snapshot_item, control_item>;

struct reader_state;

using read_task = std::function<void(reader_state&)>;

/// Everything the writer thread owns; no other thread touches it.
struct writer_state {
  std::string path;
  std::size_t keep_snapshots = 2;
  std::size_t seq_cache_entries = 0;
  connection conn;
  statement begin, commit, rollback, savepoint, release, rollback_to;
  statement max_offset, max_seq, insert_event, insert_tag, head_hash;
  statement insert_snapshot, trim_snapshots;
  // Highest seq per stream as of the last commit; the UNIQUE index stays the authority.
  std::unordered_map<std::string, std::uint64_t> seq_cache;
  std::string tags_buf;
  // The hash chain's value after the newest event, within the current transaction.
  event_hash chain{};
};

/// Everything one reader thread owns.
struct reader_state {
  std::string path;
  connection conn;
  statement stream, all, tagged, highest, head, ids, snapshots;
};

caf::error prepare_all(writer_state& w) {
  struct {
    statement* target;
    const char* sql;
  } list[] = {
    {&w.begin, "BEGIN IMMEDIATE"},
    {&w.commit, "COMMIT"},
    {&w.rollback, "ROLLBACK"},
    {&w.savepoint, "SAVEPOINT annals_write"},
    {&w.release, "RELEASE annals_write"},
    {&w.rollback_to, "ROLLBACK TO annals_write"},
    {&w.max_offset, "SELECT coalesce(max(global_offset), 0) FROM events"},
    {&w.max_seq, "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = ?1"},
    {&w.insert_event,
     "INSERT INTO events (global_offset, persistence_id, seq, name, version, payload, "
     "tags, timestamp_us, command_id, correlation_id, hash) "
     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"},
    {&w.head_hash, "SELECT hash FROM events WHERE global_offset = ?1"},
    {&w.insert_tag, "INSERT INTO event_tags (tag, global_offset) VALUES (?1, ?2)"},
    {&w.insert_snapshot,
     "INSERT OR REPLACE INTO snapshots (persistence_id, seq, name, version, payload, "
     "timestamp_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"},
    {&w.trim_snapshots,
     "DELETE FROM snapshots WHERE persistence_id = ?1 AND seq < (SELECT min(seq) FROM "
     "(SELECT seq FROM snapshots WHERE persistence_id = ?1 ORDER BY seq DESC LIMIT ?2))"},
  };
  for (auto& entry : list) {
    auto stmt = prepare(w.conn.db, entry.sql, w.path);
    if (!stmt)
      return std::move(stmt.error());
    *entry.target = std::move(*stmt);
  }
  return {};
}

caf::error prepare_all(reader_state& r) {
  std::string cols = event_columns;
  std::string stream_sql = "SELECT " + cols
                           + " FROM events WHERE persistence_id = ?1 AND seq >= ?2 AND "
                             "seq <= ?3 ORDER BY seq LIMIT ?4";
  std::string all_sql = "SELECT " + cols
                        + " FROM events WHERE global_offset >= ?1 ORDER BY global_offset "
                          "LIMIT ?2";
  std::string tagged_sql;
  for (const char* c : {"global_offset", "persistence_id", "seq", "name", "version", "payload",
                        "tags", "timestamp_us", "command_id", "correlation_id"}) {
    tagged_sql += tagged_sql.empty() ? "SELECT " : ", ";
    tagged_sql += "e.";
    tagged_sql += c;
  }
  tagged_sql += " FROM event_tags t JOIN events e ON e.global_offset = t.global_offset "
                "WHERE t.tag = ?1 AND t.global_offset >= ?2 ORDER BY t.global_offset "
                "LIMIT ?3";
  // Walks the (persistence_id, seq) index one id at a time instead of scanning events.
  const char* ids_sql =
    "WITH RECURSIVE ids(pid) AS ("
    "  SELECT (SELECT min(persistence_id) FROM events WHERE persistence_id > ?1)"
    "  UNION ALL"
    "  SELECT (SELECT min(persistence_id) FROM events WHERE persistence_id > ids.pid)"
    "  FROM ids WHERE ids.pid IS NOT NULL)"
    " SELECT pid FROM ids WHERE pid IS NOT NULL LIMIT ?2";
  struct {
    statement* target;
    const char* sql;
  } list[] = {
    {&r.stream, stream_sql.c_str()},
    {&r.all, all_sql.c_str()},
    {&r.tagged, tagged_sql.c_str()},
    {&r.highest, "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = ?1"},
    {&r.head, "SELECT coalesce(max(global_offset), 0) FROM events"},
    {&r.ids, ids_sql},
    {&r.snapshots, "SELECT persistence_id, seq, name, version, payload, timestamp_us FROM "
                   "snapshots WHERE persistence_id = ?1 ORDER BY seq DESC"},
  };
  for (auto& entry : list) {
    auto stmt = prepare(r.conn.db, entry.sql, r.path);
    if (!stmt)
      return std::move(stmt.error());
    *entry.target = std::move(*stmt);
  }
  return {};
}

// -- reading ----------------------------------------------------------------------------

caf::error corrupt(const event_record& rec, const std::string& path, const char* what) {
  return make_error(journal_errc::corrupt_row,
                    "persistence id " + rec.persistence_id + ", seq " + std::to_string(rec.seq)
                      + " (offset " + std::to_string(rec.offset) + ", " + path + "): " + what);
}

caf::error read_row(sqlite3_stmt* stmt, const std::string& path, event_record& rec) {
  rec.offset = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 0));
  rec.persistence_id = column_string(stmt, 1);
  rec.seq = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 2));
  if (sqlite3_column_type(stmt, 3) != SQLITE_TEXT)
    return corrupt(rec, path, "the event name is not text");
  rec.name = column_string(stmt, 3);
  auto version = sqlite3_column_int64(stmt, 4);
  if (version < 1 || version > std::numeric_limits<std::uint32_t>::max())
    return corrupt(rec, path, "the schema version is out of range");
  rec.version = static_cast<std::uint32_t>(version);
  if (sqlite3_column_type(stmt, 5) == SQLITE_NULL)
    return corrupt(rec, path, "the payload is NULL");
  rec.payload = column_string(stmt, 5);
  if (auto tags = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 6))) {
    std::string_view all{tags, static_cast<std::size_t>(sqlite3_column_bytes(stmt, 6))};
    for (;;) {
      auto sep = all.find(internal::tag_separator);
      rec.tags.emplace_back(all.substr(0, sep));
      if (sep == std::string_view::npos)
        break;
      all.remove_prefix(sep + 1);
    }
  }
  rec.timestamp_us = sqlite3_column_int64(stmt, 7);
  rec.metadata.command_id = column_string(stmt, 8);
  rec.metadata.correlation_id = column_string(stmt, 9);
  return {};
}

caf::expected<std::vector<event_record>> read_records(sqlite3* db, sqlite3_stmt* stmt,
                                                      std::size_t max, const std::string& path,
                                                      const char* what) {
  reset_guard guard{stmt};
  std::vector<event_record> result;
  result.reserve(std::min<std::size_t>(max, 256));
  for (;;) {
    auto rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE)
      return result;
    if (rc != SQLITE_ROW)
      return sqlite_failure(rc, db, what, path);
    auto& rec = result.emplace_back();
    if (auto err = read_row(stmt, path, rec))
      return err;
  }
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

} // namespace

// -- shared state -------------------------------------------------------------------------

struct sqlite_journal::impl {
  sqlite_options opts;
  sqlite_journal_info info;

  std::mutex write_mtx;
  std::condition_variable write_cv;
  std::deque<write_item> write_queue;
  bool write_stop = false;

  std::mutex read_mtx;
  std::condition_variable read_cv;
  std::deque<read_task> read_queue;
  bool read_stop = false;

  std::mutex threads_mtx;
  std::vector<std::thread> threads;
  std::mutex readers_mtx;
  std::condition_variable readers_cv;
  std::size_t live_readers = 0;

  std::mutex listeners_mtx;
  std::map<std::uint64_t, std::shared_ptr<commit_listener>> listeners;
  std::uint64_t next_listener = 1;
  std::atomic<bool> has_listeners{false};

  std::atomic<std::uint64_t> appends{0};
  std::atomic<std::uint64_t> events{0};
  std::atomic<std::uint64_t> failed_appends{0};
  std::atomic<std::uint64_t> transactions{0};
  std::atomic<std::uint64_t> largest_batch{0};
  std::array<std::atomic<std::uint64_t>, sqlite_journal_stats::batch_bounds.size() + 1>
    batch_histogram{};
  std::array<std::atomic<std::uint64_t>, sqlite_journal_stats::commit_bounds_us.size() + 1>
    commit_histogram{};
  std::atomic<std::uint64_t> commit_us_sum{0};
  std::atomic<std::uint64_t> batch_writes_sum{0};

  template <std::size_t N>
  static void count(std::array<std::atomic<std::uint64_t>, N + 1>& histogram,
                    const std::array<std::uint64_t, N>& bounds, std::uint64_t value) {
    auto i = static_cast<std::size_t>(std::lower_bound(bounds.begin(), bounds.end(), value)
                                      - bounds.begin());
    histogram[i].fetch_add(1, std::memory_order_relaxed);
  }

  /// Queues `item` for the writer (moving from it); false, leaving it intact, if the
  /// journal is closed.
  bool submit_write(write_item& item) {
    {
      std::lock_guard guard{write_mtx};
      if (write_stop)
        return false;
      write_queue.push_back(std::move(item));
    }
    write_cv.notify_one();
    return true;
  }

  /// Queues `task` for a reader; false if the journal is closed.
  bool submit_read(read_task&& task) {
    {
      std::lock_guard guard{read_mtx};
      if (read_stop)
        return false;
      read_queue.push_back(std::move(task));
    }
    read_cv.notify_one();
    return true;
  }

  void close() {
    {
      std::lock_guard guard{write_mtx};
      write_stop = true;
    }
    write_cv.notify_all();
    {
      std::lock_guard guard{read_mtx};
      read_stop = true;
    }
    read_cv.notify_all();
    std::vector<std::thread> owned;
    {
      std::lock_guard guard{threads_mtx};
      owned.swap(threads);
    }
    // A close from inside a callback runs on one of our threads: it cannot join itself,
    // so it lets that thread finish on its own (it holds a reference to this state).
    for (auto& t : owned) {
      if (t.get_id() == std::this_thread::get_id())
        t.detach();
      else
        t.join();
    }
  }

  void reader_loop(reader_state& r) {
    for (;;) {
      read_task task;
      {
        std::unique_lock lk{read_mtx};
        read_cv.wait(lk, [&] { return !read_queue.empty() || read_stop; });
        if (read_queue.empty())
          return;
        task = std::move(read_queue.front());
        read_queue.pop_front();
      }
      task(r);
    }
  }

  void writer_loop(writer_state& w) {
    std::vector<write_item> batch;
    for (;;) {
      {
        std::unique_lock lk{write_mtx};
        write_cv.wait(lk, [&] { return !write_queue.empty() || write_stop; });
        if (write_queue.empty())
          return;
        auto n = std::min(write_queue.size(), std::max<std::size_t>(opts.max_batch, 1));
        batch.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(write_queue.front()));
          write_queue.pop_front();
        }
      }
      process(w, batch);
      batch.clear();
    }
  }

  // -- the write path ---------------------------------------------------------------------

  struct outcome {
    caf::error err;
    append_result res;
    std::vector<event_record> records; // only filled while listeners exist
    bool settled = false;              // answered before the transaction (invalid, control)
  };

  enum class applied { ok, failed, transaction_lost };

  /// Turns the failure of a statement into the error for its write and says whether the
  /// transaction survived it (SQLite may roll back the whole transaction on SQLITE_FULL,
  /// SQLITE_IOERR, SQLITE_BUSY or SQLITE_NOMEM).
  static applied fail_step(writer_state& w, caf::error err, bool in_savepoint, outcome& out) {
    out.err = std::move(err);
    if (sqlite3_get_autocommit(w.conn.db))
      return applied::transaction_lost;
    if (in_savepoint) {
      sqlite3_step(w.rollback_to);
      sqlite3_reset(w.rollback_to);
      sqlite3_step(w.release);
      sqlite3_reset(w.release);
    }
    return applied::failed;
  }

  static bool step_done(sqlite3_stmt* stmt) {
    auto rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE || rc == SQLITE_ROW;
  }

  caf::expected<std::uint64_t> stored_highest(writer_state& w, const std::string& pid) {
    bind_text(w.max_seq, 1, pid);
    return read_count(w.conn.db, w.max_seq, w.path, "reading the highest seq");
  }

  applied apply(writer_state& w, append_item& item, std::uint64_t& next_offset,
                std::int64_t timestamp, bool collect, outcome& out) {
    auto& req = item.req;
    auto cached = w.seq_cache.find(req.persistence_id);
    std::uint64_t highest = 0;
    bool from_cache = cached != w.seq_cache.end();
    if (from_cache)
      highest = cached->second;
    // A cached value can only be stale low (another process appended), so a mismatch is
    // confirmed against the file before it is reported. A new stream (expected seq 0)
    // needs no lookup: if it is not new after all, inserting seq 1 hits the unique index.
    if (!from_cache && req.expected_seq == 0) {
      highest = 0;
    } else if (!from_cache || highest != req.expected_seq) {
      auto stored = stored_highest(w, req.persistence_id);
      if (!stored)
        return fail_step(w, std::move(stored.error()), false, out);
      highest = *stored;
    }
    if (highest != req.expected_seq) {
      out.err = internal::conflict_error(req.persistence_id, req.expected_seq, highest);
      if (from_cache)
        cached->second = highest;
      return applied::failed;
    }
    auto needs_savepoint = req.events.size() > 1;
    for (const auto& ev : req.events)
      needs_savepoint = needs_savepoint || !ev.tags.empty();
    // A single statement is atomic by itself; only multi-statement writes pay for a
    // savepoint.
    if (needs_savepoint && !step_done(w.savepoint))
      return fail_step(w,
                       sqlite_failure(sqlite3_extended_errcode(w.conn.db), w.conn.db,
                                      "opening a savepoint", w.path),
                       false, out);
    auto offset = next_offset;
    auto seq = highest;
    auto chain = w.chain; // becomes the writer's only if the whole append succeeds
    for (auto& ev : req.events) {
      ++seq;
      auto* ins = w.insert_event.ptr;
      bind_u64(ins, 1, offset);
      bind_text(ins, 2, req.persistence_id);
      bind_u64(ins, 3, seq);
      bind_text(ins, 4, ev.name);
      sqlite3_bind_int64(ins, 5, ev.version);
      bind_text(ins, 6, ev.payload);
      if (ev.tags.empty()) {
        sqlite3_bind_null(ins, 7);
      } else {
        w.tags_buf.clear();
        for (const auto& tag : ev.tags) {
          if (!w.tags_buf.empty())
            w.tags_buf += internal::tag_separator;
          w.tags_buf += tag;
        }
        bind_text(ins, 7, w.tags_buf);
      }
      sqlite3_bind_int64(ins, 8, timestamp);
      bind_optional_text(ins, 9, req.metadata.command_id);
      bind_optional_text(ins, 10, req.metadata.correlation_id);
      chain = internal::chain_hash(chain, offset, req.persistence_id, seq, ev.name, ev.version,
                                   ev.payload, ev.tags, timestamp, req.metadata.command_id,
                                   req.metadata.correlation_id);
      sqlite3_bind_blob(ins, 11, chain.data(), static_cast<int>(chain.size()), SQLITE_STATIC);
      auto rc = sqlite3_step(ins);
      sqlite3_reset(ins);
      if (rc != SQLITE_DONE) {
        auto ext = sqlite3_extended_errcode(w.conn.db);
        caf::error err;
        if (ext == SQLITE_CONSTRAINT_UNIQUE) {
          // Another process on the same file got there first.
          err = make_error(journal_errc::conflict, "persistence id " + req.persistence_id
                                                     + " already has seq " + std::to_string(seq)
                                                     + " (expected seq "
                                                     + std::to_string(req.expected_seq) + ")");
        } else {
          err = sqlite_failure(ext, w.conn.db,
                               "appending seq " + std::to_string(seq) + " to persistence id "
                                 + req.persistence_id,
                               w.path);
        }
        w.seq_cache.erase(req.persistence_id);
        return fail_step(w, std::move(err), needs_savepoint, out);
      }
      for (const auto& tag : ev.tags) {
        bind_text(w.insert_tag, 1, tag);
        bind_u64(w.insert_tag, 2, offset);
        if (!step_done(w.insert_tag)) {
          auto err = sqlite_failure(sqlite3_extended_errcode(w.conn.db), w.conn.db,
                                    "tagging seq " + std::to_string(seq) + " of persistence id "
                                      + req.persistence_id,
                                    w.path);
          w.seq_cache.erase(req.persistence_id);
          return fail_step(w, std::move(err), needs_savepoint, out);
        }
      }
      ++offset;
    }
    if (needs_savepoint && !step_done(w.release))
      return fail_step(w,
                       sqlite_failure(sqlite3_extended_errcode(w.conn.db), w.conn.db,
                                      "releasing a savepoint", w.path),
                       true, out);
    w.chain = chain;
    out.res.first_seq = highest + 1;
    out.res.last_seq = seq;
    out.res.first_offset = next_offset;
    out.res.last_offset = offset - 1;
    out.res.timestamp_us = timestamp;
    if (collect) {
      out.records.reserve(req.events.size());
      auto off = next_offset;
      auto s = highest + 1;
      for (const auto& ev : req.events) {
        auto& rec = out.records.emplace_back();
        rec.offset = off++;
        rec.persistence_id = req.persistence_id;
        rec.seq = s++;
        rec.name = ev.name;
        rec.version = ev.version;
        rec.payload = ev.payload;
        rec.tags = ev.tags;
        rec.timestamp_us = timestamp;
        rec.metadata = req.metadata;
      }
    }
    next_offset = offset;
    if (from_cache) {
      cached->second = seq;
    } else {
      if (w.seq_cache.size() >= w.seq_cache_entries)
        w.seq_cache.clear();
      w.seq_cache.emplace(req.persistence_id, seq);
    }
    return applied::ok;
  }

  applied apply(writer_state& w, snapshot_item& item, outcome& out) {
    auto& snap = item.snap;
    if (!step_done(w.savepoint))
      return fail_step(w,
                       sqlite_failure(sqlite3_extended_errcode(w.conn.db), w.conn.db,
                                      "opening a savepoint", w.path),
                       false, out);
    auto what = "saving the snapshot at seq " + std::to_string(snap.seq) + " of persistence id "
                + snap.persistence_id;
    auto* ins = w.insert_snapshot.ptr;
    bind_text(ins, 1, snap.persistence_id);
    bind_u64(ins, 2, snap.seq);
    bind_text(ins, 3, snap.name);
    sqlite3_bind_int64(ins, 4, snap.version);
    bind_text(ins, 5, snap.payload);
    sqlite3_bind_int64(ins, 6, snap.timestamp_us);
    if (!step_done(ins))
      return fail_step(
        w, sqlite_failure(sqlite3_extended_errcode(w.conn.db), w.conn.db, what, w.path), true, out);
    bind_text(w.trim_snapshots, 1, snap.persistence_id);
    sqlite3_bind_int64(w.trim_snapshots, 2, static_cast<std::int64_t>(w.keep_snapshots));
    if (!step_done(w.trim_snapshots))
      return fail_step(
        w, sqlite_failure(sqlite3_extended_errcode(w.conn.db), w.conn.db, what, w.path), true, out);
    if (!step_done(w.release))
      return fail_step(
        w, sqlite_failure(sqlite3_extended_errcode(w.conn.db), w.conn.db, what, w.path), true, out);
    return applied::ok;
  }

  // `err` with the persistence id of `item` added to its context, for a failure that
  // took a whole transaction down.
  static caf::error naming_stream(const caf::error& err, const write_item& item) {
    const std::string* pid = nullptr;
    if (auto* a = std::get_if<append_item>(&item))
      pid = &a->req.persistence_id;
    else if (auto* sn = std::get_if<snapshot_item>(&item))
      pid = &sn->snap.persistence_id;
    if (pid == nullptr)
      return err;
    return caf::error{err.code(), err.category(),
                      caf::make_message("persistence id " + *pid + ": " + context_of(err))};
  }

  // Reads the stored hash of event `head` (the newest) into `w.chain`; zeros for none.
  static caf::error read_chain_head(writer_state& w, std::uint64_t head) {
    w.chain.fill(0);
    if (head == 0)
      return {};
    auto* stmt = w.head_hash.ptr;
    reset_guard guard{stmt};
    bind_u64(stmt, 1, head);
    auto rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW)
      return sqlite_failure(rc, w.conn.db, "reading the hash of the newest event", w.path);
    if (sqlite3_column_bytes(stmt, 0) != static_cast<int>(w.chain.size()))
      return make_error(journal_errc::corrupt_row,
                        w.path + ": the event at offset " + std::to_string(head)
                          + " has no valid hash; `annals verify` tells where the chain breaks");
    std::memcpy(w.chain.data(), sqlite3_column_blob(stmt, 0), w.chain.size());
    return {};
  }

  void process(writer_state& w, std::vector<write_item>& batch) {
    std::vector<outcome> out(batch.size());
    std::vector<std::size_t> pending;
    pending.reserve(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (auto* ctl = std::get_if<control_item>(&batch[i])) {
        ctl->run(w);
        out[i].settled = true;
      } else {
        pending.push_back(i);
      }
    }
    bool collect = has_listeners.load(std::memory_order_acquire);
    std::size_t committed = 0;
    // Each round is one transaction. A failure that takes the whole transaction down
    // fails only the write that caused it; the others are written again.
    while (!pending.empty()) {
      for (auto i : pending)
        out[i] = outcome{};
      auto started = std::chrono::steady_clock::now();
      auto begin_rc = sqlite3_step(w.begin);
      sqlite3_reset(w.begin);
      if (begin_rc != SQLITE_DONE) {
        auto err = sqlite_failure(begin_rc, w.conn.db, "starting a write transaction", w.path);
        for (auto i : pending)
          out[i].err = err;
        break;
      }
      // A file deleted or replaced under the open connection would take every later commit
      // with it into an unlinked inode: acknowledged appends that no one can read again.
      int moved = 0;
      if (sqlite3_file_control(w.conn.db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK
          && moved != 0) {
        step_done(w.rollback);
        auto err = make_error(journal_errc::storage_error,
                              w.path
                                + " was deleted or replaced while the journal had it open; "
                                  "nothing was written (reopen the journal)");
        for (auto i : pending)
          out[i].err = err;
        break;
      }
      auto max_offset = read_count(w.conn.db, w.max_offset, w.path, "reading the head offset");
      if (!max_offset) {
        step_done(w.rollback);
        for (auto i : pending)
          out[i].err = max_offset.error();
        break;
      }
      if (auto err = read_chain_head(w, *max_offset)) {
        step_done(w.rollback);
        for (auto i : pending)
          out[i].err = err;
        break;
      }
      auto next_offset = *max_offset + 1;
      auto timestamp = internal::now_us();
      std::size_t lost_at = pending.size();
      for (std::size_t k = 0; k < pending.size(); ++k) {
        auto i = pending[k];
        auto result = std::visit(
          [&](auto& item) -> applied {
            using item_type = std::decay_t<decltype(item)>;
            if constexpr (std::is_same_v<item_type, append_item>)
              return apply(w, item, next_offset, timestamp, collect, out[i]);
            else if constexpr (std::is_same_v<item_type, snapshot_item>)
              return apply(w, item, out[i]);
            else
              return applied::ok;
          },
          batch[i]);
        if (result == applied::transaction_lost) {
          lost_at = k;
          break;
        }
      }
      if (lost_at < pending.size()) {
        if (!sqlite3_get_autocommit(w.conn.db))
          step_done(w.rollback);
        w.seq_cache.clear();
        pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(lost_at));
        continue;
      }
      auto commit_rc = sqlite3_step(w.commit);
      sqlite3_reset(w.commit);
      if (commit_rc != SQLITE_DONE) {
        auto err = sqlite_failure(commit_rc, w.conn.db, "committing", w.path);
        if ((commit_rc & 0xff) == SQLITE_IOERR) {
          // The commit record may already be in the WAL: after a crash these appends can
          // turn out stored. Callers treat it like a timeout (retry with the same
          // idempotency key), never as "certainly not written".
          err = make_error(journal_errc::storage_error,
                           annals::context_of(err) + "; the outcome of this commit is unknown");
        }
        if (!sqlite3_get_autocommit(w.conn.db))
          step_done(w.rollback);
        w.seq_cache.clear();
        for (auto i : pending)
          if (!out[i].err)
            out[i].err = naming_stream(err, batch[i]);
        break;
      }
      committed = pending.size();
      transactions.fetch_add(1, std::memory_order_relaxed);
      auto took_us =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                     std::chrono::steady_clock::now() - started)
                                     .count());
      commit_us_sum.fetch_add(took_us, std::memory_order_relaxed);
      count(commit_histogram, sqlite_journal_stats::commit_bounds_us, took_us);
      count(batch_histogram, sqlite_journal_stats::batch_bounds, committed);
      batch_writes_sum.fetch_add(committed, std::memory_order_relaxed);
      break;
    }
    if (committed > largest_batch.load(std::memory_order_relaxed))
      largest_batch.store(committed, std::memory_order_relaxed);
    deliver(batch, out, collect);
  }

  void deliver(std::vector<write_item>& batch, std::vector<outcome>& out, bool collect) {
    std::uint64_t ok_appends = 0;
    std::uint64_t ok_events = 0;
    std::uint64_t failed = 0;
    std::vector<event_record> records;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!std::holds_alternative<append_item>(batch[i]))
        continue;
      if (out[i].err) {
        ++failed;
        continue;
      }
      ++ok_appends;
      ok_events += out[i].res.last_seq - out[i].res.first_seq + 1;
      if (collect)
        std::move(out[i].records.begin(), out[i].records.end(), std::back_inserter(records));
    }
    appends.fetch_add(ok_appends, std::memory_order_relaxed);
    events.fetch_add(ok_events, std::memory_order_relaxed);
    failed_appends.fetch_add(failed, std::memory_order_relaxed);
    // Listeners first: by the time an appender hears back, projections have the batch.
    if (!records.empty()) {
      std::vector<std::shared_ptr<commit_listener>> targets;
      {
        std::lock_guard guard{listeners_mtx};
        for (auto& [handle, f] : listeners)
          targets.push_back(f);
      }
      for (auto& f : targets)
        (*f)(records);
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (auto* app = std::get_if<append_item>(&batch[i])) {
        if (out[i].err)
          app->done(std::move(out[i].err));
        else
          app->done(out[i].res);
      } else if (auto* snap = std::get_if<snapshot_item>(&batch[i])) {
        if (out[i].err)
          snap->done(std::move(out[i].err));
        else
          snap->done(caf::unit);
      }
    }
  }
};

// -- opening ------------------------------------------------------------------------------

namespace {

caf::error configure_writer(writer_state& w, const sqlite_options& opts,
                            sqlite_journal_info& info) {
  auto db = w.conn.db;
  // Set before anything else runs so that even the schema check cannot grow the file.
  if (opts.max_page_count > 0) {
    auto sql = "PRAGMA max_page_count = " + std::to_string(opts.max_page_count);
    if (auto err = exec(db, sql.c_str(), w.path))
      return err;
  }
  auto mode = query_text(db, "PRAGMA journal_mode = WAL", w.path);
  if (!mode)
    return std::move(mode.error());
  if (*mode != "wal")
    return make_error(journal_errc::storage_error,
                      w.path + ": cannot switch to WAL mode (journal_mode is " + *mode + ")");
  info.journal_mode = *mode;
  auto sync = opts.durability == durability_level::full ? "PRAGMA synchronous = FULL"
                                                        : "PRAGMA synchronous = NORMAL";
  for (const char* sql : {sync, "PRAGMA temp_store = MEMORY", "PRAGMA cache_size = -32768"})
    if (auto err = exec(db, sql, w.path))
      return err;
  auto level = query_int(db, "PRAGMA synchronous", w.path);
  if (!level)
    return std::move(level.error());
  info.synchronous = static_cast<int>(*level);
  return {};
}

// Schema 1 had no hash chain: add the column and chain every stored event, in offset
// order, inside the caller's transaction. The UPDATE trigger is lifted for exactly that.
caf::error migrate_from_v1(writer_state& w) {
  auto db = w.conn.db;
  if (auto err =
        exec(db, "ALTER TABLE events ADD COLUMN hash BLOB; DROP TRIGGER events_no_update;", w.path))
    return err;
  auto select = prepare(
    db, (std::string{"SELECT "} + event_columns + " FROM events ORDER BY global_offset").c_str(),
    w.path);
  if (!select)
    return std::move(select.error());
  std::vector<std::pair<std::uint64_t, event_hash>> hashes;
  event_hash chain{};
  for (;;) {
    auto rc = sqlite3_step(select->ptr);
    if (rc == SQLITE_DONE)
      break;
    if (rc != SQLITE_ROW)
      return sqlite_failure(rc, db, "reading events to chain them", w.path);
    event_record rec;
    if (auto err = read_row(select->ptr, w.path, rec))
      return err;
    chain = chain_hash(chain, rec);
    hashes.emplace_back(rec.offset, chain);
  }
  auto update = prepare(db, "UPDATE events SET hash = ?1 WHERE global_offset = ?2", w.path);
  if (!update)
    return std::move(update.error());
  for (const auto& [offset, h] : hashes) {
    sqlite3_bind_blob(update->ptr, 1, h.data(), static_cast<int>(h.size()), SQLITE_STATIC);
    bind_u64(update->ptr, 2, offset);
    auto rc = sqlite3_step(update->ptr);
    sqlite3_reset(update->ptr);
    if (rc != SQLITE_DONE)
      return sqlite_failure(rc, db, "storing the hash chain", w.path);
  }
  return exec(db,
              "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT "
              "RAISE(ABORT, 'annals: events are append-only, UPDATE refused'); END; "
              "PRAGMA user_version = 2;",
              w.path);
}

caf::error ensure_schema(writer_state& w, sqlite_journal_info& info) {
  auto db = w.conn.db;
  if (auto err = exec(db, "BEGIN IMMEDIATE", w.path))
    return err;
  auto create = check_identity(db, w.path);
  if (!create) {
    exec(db, "ROLLBACK", w.path);
    return std::move(create.error());
  }
  if (*create) {
    auto pragmas = "PRAGMA application_id = " + std::to_string(sqlite_journal::application_id)
                   + "; PRAGMA user_version = " + std::to_string(sqlite_journal::schema_version)
                   + ";";
    caf::error err = exec(db, schema_sql, w.path);
    if (!err)
      err = exec(db, pragmas.c_str(), w.path);
    if (err) {
      exec(db, "ROLLBACK", w.path);
      return err;
    }
    info.created = true;
  } else {
    auto version = query_int(db, "PRAGMA user_version", w.path);
    caf::error err = version ? caf::error{} : version.error();
    if (!err && *version == 1)
      err = migrate_from_v1(w);
    if (err) {
      exec(db, "ROLLBACK", w.path);
      return err;
    }
  }
  if (auto err = exec(db, "COMMIT", w.path)) {
    exec(db, "ROLLBACK", w.path);
    return err;
  }
  auto version = query_int(db, "PRAGMA user_version", w.path);
  if (!version)
    return std::move(version.error());
  info.schema_version = static_cast<std::uint32_t>(*version);
  return {};
}

} // namespace

caf::expected<std::shared_ptr<sqlite_journal>> sqlite_journal::open(sqlite_options opts) {
  if (opts.path.empty())
    return make_error(journal_errc::invalid_request, "sqlite_journal::open without a path");
  const auto& path = opts.path;
  std::error_code ec;
  auto exists = std::filesystem::exists(path, ec);
  if (opts.must_exist && !exists)
    return make_error(journal_errc::storage_error, path + " does not exist");
  if (exists && std::filesystem::file_size(path, ec) > 0) {
    auto header = read_header(path);
    if (!header.sqlite)
      return make_error(journal_errc::not_a_journal, path + " is not a SQLite database");
    if (header.application_id != 0
        && header.application_id != static_cast<std::uint32_t>(application_id))
      return make_error(journal_errc::not_a_journal,
                        path + " is a SQLite database of another application (application_id "
                          + hex(header.application_id) + ")");
    // The header alone cannot tell an empty database from a foreign one, nor see a
    // schema version still in the WAL: ask SQLite, read-only.
    auto ro = open_connection(path, SQLITE_OPEN_READONLY, opts);
    if (!ro)
      return std::move(ro.error());
    if (auto err = exec(ro->db, "BEGIN", path))
      return err;
    auto verdict = check_identity(ro->db, path);
    if (!verdict)
      return std::move(verdict.error());
  }
  auto st = std::make_shared<impl>();
  st->opts = opts;
  st->info.path = path;
  st->opts.keep_snapshots = std::max<std::size_t>(st->opts.keep_snapshots, 1);
  st->opts.readers = std::max<std::size_t>(st->opts.readers, 1);
  auto w = std::make_unique<writer_state>();
  w->path = path;
  w->keep_snapshots = st->opts.keep_snapshots;
  w->seq_cache_entries = std::max<std::size_t>(st->opts.seq_cache_entries, 1);
  auto conn = open_connection(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, opts);
  if (!conn)
    return std::move(conn.error());
  w->conn = std::move(*conn);
  if (auto err = configure_writer(*w, opts, st->info))
    return err;
  if (auto err = ensure_schema(*w, st->info))
    return err;
  if (auto err = prepare_all(*w))
    return err;
  std::vector<std::unique_ptr<reader_state>> readers;
  for (std::size_t i = 0; i < st->opts.readers; ++i) {
    auto r = std::make_unique<reader_state>();
    r->path = path;
    auto rconn = open_connection(path, SQLITE_OPEN_READWRITE, opts);
    if (!rconn)
      return std::move(rconn.error());
    r->conn = std::move(*rconn);
    for (const char* sql :
         {"PRAGMA query_only = 1", "PRAGMA cache_size = -32768", "PRAGMA mmap_size = 268435456"})
      if (auto err = exec(r->conn.db, sql, path))
        return err;
    if (auto err = prepare_all(*r))
      return err;
    readers.push_back(std::move(r));
  }
  // The threads own their connections and keep the shared state alive until they end,
  // which lets `close` run on one of them.
  // The writer's connection closes last: the last connection to close merges the WAL into
  // the database file, and closes that overlap can each leave that to the other.
  st->live_readers = readers.size();
  st->threads.emplace_back([st, ws = std::move(w)]() mutable {
    pthread_setname_np(pthread_self(), "annals-writer");
    st->writer_loop(*ws);
    {
      std::unique_lock lk{st->readers_mtx};
      st->readers_cv.wait(lk, [&] { return st->live_readers == 0; });
    }
    ws.reset();
  });
  for (auto& r : readers)
    st->threads.emplace_back([st, rs = std::move(r)]() mutable {
      pthread_setname_np(pthread_self(), "annals-reader");
      st->reader_loop(*rs);
      rs.reset();
      std::lock_guard guard{st->readers_mtx};
      --st->live_readers;
      st->readers_cv.notify_all();
    });
  return std::shared_ptr<sqlite_journal>(new sqlite_journal(std::move(st)));
}

sqlite_journal::sqlite_journal(std::shared_ptr<impl> ptr) : impl_(std::move(ptr)) {}

sqlite_journal::~sqlite_journal() {
  close();
}

void sqlite_journal::close() {
  impl_->close();
}

// -- the contract -------------------------------------------------------------------------

void sqlite_journal::append(append_request req, callback<append_result> done) {
  if (auto err = internal::validate(req, impl_->opts.max_append_bytes)) {
    impl_->failed_appends.fetch_add(1, std::memory_order_relaxed);
    done(std::move(err));
    return;
  }
  write_item item{append_item{std::move(req), std::move(done)}};
  if (!impl_->submit_write(item))
    std::get<append_item>(item).done(closed_error(impl_->opts.path));
}

void sqlite_journal::read_stream(std::string persistence_id, std::uint64_t from_seq,
                                 std::uint64_t to_seq, std::size_t max,
                                 callback<std::vector<event_record>> done) {
  auto task = [pid = std::move(persistence_id), from_seq, to_seq, max, done](reader_state& r) {
    bind_text(r.stream, 1, pid);
    bind_u64(r.stream, 2, from_seq);
    bind_u64(r.stream, 3, to_seq);
    bind_u64(r.stream, 4, max);
    done(read_records(r.conn.db, r.stream, max, r.path, ("reading persistence id " + pid).c_str()));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->opts.path));
}

void sqlite_journal::read_all(std::uint64_t from_offset, std::size_t max,
                              callback<std::vector<event_record>> done) {
  auto task = [from_offset, max, done](reader_state& r) {
    bind_u64(r.all, 1, from_offset);
    bind_u64(r.all, 2, max);
    done(read_records(r.conn.db, r.all, max, r.path, "reading all events"));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->opts.path));
}

void sqlite_journal::read_tagged(std::string tag, std::uint64_t from_offset, std::size_t max,
                                 callback<std::vector<event_record>> done) {
  auto task = [tag = std::move(tag), from_offset, max, done](reader_state& r) {
    bind_text(r.tagged, 1, tag);
    bind_u64(r.tagged, 2, from_offset);
    bind_u64(r.tagged, 3, max);
    done(read_records(r.conn.db, r.tagged, max, r.path, ("reading events tagged " + tag).c_str()));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->opts.path));
}

void sqlite_journal::highest_seq(std::string persistence_id, callback<std::uint64_t> done) {
  auto task = [pid = std::move(persistence_id), done](reader_state& r) {
    bind_text(r.highest, 1, pid);
    done(read_count(r.conn.db, r.highest, r.path,
                    ("reading the highest seq of persistence id " + pid).c_str()));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->opts.path));
}

void sqlite_journal::head_offset(callback<std::uint64_t> done) {
  auto task = [done](reader_state& r) {
    done(read_count(r.conn.db, r.head, r.path, "reading the head offset"));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->opts.path));
}

void sqlite_journal::persistence_ids(std::string after, std::size_t max,
                                     callback<std::vector<std::string>> done) {
  auto task = [after = std::move(after), max, done](reader_state& r) {
    reset_guard guard{r.ids};
    bind_text(r.ids, 1, after);
    bind_u64(r.ids, 2, max);
    std::vector<std::string> result;
    for (;;) {
      auto rc = sqlite3_step(r.ids);
      if (rc == SQLITE_ROW) {
        result.push_back(column_string(r.ids, 0));
      } else if (rc == SQLITE_DONE) {
        done(std::move(result));
        return;
      } else {
        done(sqlite_failure(rc, r.conn.db, "listing persistence ids", r.path));
        return;
      }
    }
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->opts.path));
}

std::uint64_t sqlite_journal::subscribe(commit_listener f) {
  std::lock_guard guard{impl_->listeners_mtx};
  auto handle = impl_->next_listener++;
  impl_->listeners.emplace(handle, std::make_shared<commit_listener>(std::move(f)));
  impl_->has_listeners.store(true, std::memory_order_release);
  return handle;
}

void sqlite_journal::unsubscribe(std::uint64_t handle) {
  std::lock_guard guard{impl_->listeners_mtx};
  impl_->listeners.erase(handle);
  impl_->has_listeners.store(!impl_->listeners.empty(), std::memory_order_release);
}

std::shared_ptr<sqlite_snapshot_store> sqlite_journal::snapshots() {
  return std::make_shared<sqlite_snapshot_store>(impl_);
}

sqlite_journal_stats sqlite_journal::stats() const {
  sqlite_journal_stats result;
  result.appends = impl_->appends.load(std::memory_order_relaxed);
  result.events = impl_->events.load(std::memory_order_relaxed);
  result.failed_appends = impl_->failed_appends.load(std::memory_order_relaxed);
  result.transactions = impl_->transactions.load(std::memory_order_relaxed);
  result.largest_batch = impl_->largest_batch.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < result.batch_histogram.size(); ++i)
    result.batch_histogram[i] = impl_->batch_histogram[i].load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < result.commit_histogram.size(); ++i)
    result.commit_histogram[i] = impl_->commit_histogram[i].load(std::memory_order_relaxed);
  result.commit_us_sum = impl_->commit_us_sum.load(std::memory_order_relaxed);
  result.batch_writes_sum = impl_->batch_writes_sum.load(std::memory_order_relaxed);
  return result;
}

const sqlite_journal_info& sqlite_journal::info() const {
  return impl_->info;
}

void sqlite_journal::set_max_page_count(std::uint64_t pages, callback<std::uint64_t> done) {
  auto run = [pages, done](writer_state& w) {
    auto sql = "PRAGMA max_page_count = " + std::to_string(pages);
    auto res = query_int(w.conn.db, sql.c_str(), w.path);
    if (res)
      done(static_cast<std::uint64_t>(*res));
    else
      done(std::move(res.error()));
  };
  write_item item{control_item{run}};
  if (!impl_->submit_write(item))
    done(closed_error(impl_->opts.path));
}

// -- snapshots ----------------------------------------------------------------------------

sqlite_snapshot_store::sqlite_snapshot_store(std::shared_ptr<sqlite_journal::impl> ptr)
  : impl_(std::move(ptr)) {}

sqlite_snapshot_store::~sqlite_snapshot_store() = default;

void sqlite_snapshot_store::save(snapshot_record snap, callback<caf::unit_t> done) {
  if (auto err = internal::validate(snap)) {
    done(std::move(err));
    return;
  }
  if (snap.timestamp_us == 0)
    snap.timestamp_us = internal::now_us();
  write_item item{snapshot_item{std::move(snap), std::move(done)}};
  if (!impl_->submit_write(item))
    std::get<snapshot_item>(item).done(closed_error(impl_->opts.path));
}

void sqlite_snapshot_store::load(std::string persistence_id,
                                 callback<std::vector<snapshot_record>> done) {
  auto task = [pid = std::move(persistence_id), done](reader_state& r) {
    reset_guard guard{r.snapshots};
    bind_text(r.snapshots, 1, pid);
    std::vector<snapshot_record> result;
    for (;;) {
      auto rc = sqlite3_step(r.snapshots);
      if (rc == SQLITE_DONE)
        break;
      if (rc != SQLITE_ROW) {
        done(sqlite_failure(rc, r.conn.db, "loading snapshots of persistence id " + pid, r.path));
        return;
      }
      auto& snap = result.emplace_back();
      snap.persistence_id = column_string(r.snapshots, 0);
      snap.seq = static_cast<std::uint64_t>(sqlite3_column_int64(r.snapshots, 1));
      snap.name = column_string(r.snapshots, 2);
      snap.version = static_cast<std::uint32_t>(sqlite3_column_int64(r.snapshots, 3));
      snap.payload = column_string(r.snapshots, 4);
      snap.timestamp_us = sqlite3_column_int64(r.snapshots, 5);
    }
    done(std::move(result));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->opts.path));
}

} // namespace annals::persistence

namespace annals::persistence {

caf::expected<verify_report> sqlite_journal::verify(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return make_error(journal_errc::storage_error, path + " does not exist");
  auto header = read_header(path);
  if (!header.sqlite)
    return make_error(journal_errc::not_a_journal, path + " is not a SQLite database");
  auto conn = open_connection(path, SQLITE_OPEN_READONLY, sqlite_options{});
  if (!conn)
    return std::move(conn.error());
  auto db = conn->db;
  // Through the connection, not the file header: a live journal's newest header is in its
  // WAL until the next checkpoint.
  auto app = query_int(db, "PRAGMA application_id", path);
  if (!app)
    return std::move(app.error());
  if (static_cast<std::uint32_t>(*app) != static_cast<std::uint32_t>(application_id))
    return make_error(journal_errc::not_a_journal,
                      path + " is a SQLite database of another application (application_id "
                        + hex(static_cast<std::uint32_t>(*app)) + ")");
  auto version = query_int(db, "PRAGMA user_version", path);
  if (!version)
    return std::move(version.error());
  if (*version < 2)
    return make_error(journal_errc::invalid_request,
                      path + " has journal schema " + std::to_string(*version)
                        + ", which has no hash chain; opening it once with this build adds it");
  if (*version > static_cast<std::int64_t>(schema_version))
    return make_error(journal_errc::newer_schema,
                      path + " has journal schema version " + std::to_string(*version));
  // One read transaction: a consistent view even while a writer appends.
  if (auto err = exec(db, "BEGIN", path))
    return err;
  auto select = prepare(
    db,
    (std::string{"SELECT "} + event_columns + ", hash FROM events ORDER BY global_offset").c_str(),
    path);
  if (!select)
    return std::move(select.error());
  verify_report report;
  event_hash chain{};
  for (;;) {
    auto rc = sqlite3_step(select->ptr);
    if (rc == SQLITE_DONE)
      break;
    if (rc != SQLITE_ROW)
      return sqlite_failure(rc, db, "reading events", path);
    event_record rec;
    auto bad = read_row(select->ptr, path, rec);
    auto fail = [&](std::string reason) {
      report.first_break = chain_break{rec.offset, rec.persistence_id, rec.seq, std::move(reason)};
    };
    ++report.events_checked;
    report.head_offset = rec.offset;
    if (bad) {
      fail("the row does not read back: " + render(bad));
      break;
    }
    if (rec.offset != report.events_checked) {
      fail("expected offset " + std::to_string(report.events_checked) + " (events missing)");
      break;
    }
    auto expected = chain_hash(chain, rec);
    if (sqlite3_column_bytes(select->ptr, 10) != static_cast<int>(expected.size())) {
      fail("no hash stored");
      break;
    }
    event_hash stored{};
    std::memcpy(stored.data(), sqlite3_column_blob(select->ptr, 10), stored.size());
    if (stored != expected) {
      fail("stored hash " + to_hex(stored) + " differs from the recomputed " + to_hex(expected)
           + " (the event or one before it was altered)");
      break;
    }
    chain = expected;
    report.head_hash = chain;
  }
  if (report.first_break) {
    // The head is still the file's last offset.
    auto head = query_int(db, "SELECT coalesce(max(global_offset), 0) FROM events", path);
    if (head)
      report.head_offset = static_cast<std::uint64_t>(*head);
  }
  exec(db, "COMMIT", path);
  return report;
}

} // namespace annals::persistence

#include "journal_file.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <sqlite3.h>

#include "annals/actors/projection.hpp"
#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "annals/persistence/sqlite_journal.hpp"

namespace annals::tools::detail {

namespace fs = std::filesystem;
using persistence::callback;
using persistence::event_record;
using persistence::journal_errc;

// -- SQLite helpers ---------------------------------------------------------------------

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

void read_event(const statement& stmt, int first, event_record& rec, const std::string& path) {
  rec.offset = static_cast<std::uint64_t>(stmt.int64(first));
  rec.persistence_id = stmt.text(first + 1);
  rec.seq = static_cast<std::uint64_t>(stmt.int64(first + 2));
  auto where = [&] {
    return path + ": persistence id " + rec.persistence_id + ", seq " + std::to_string(rec.seq)
           + " (offset " + std::to_string(rec.offset) + ")";
  };
  if (sqlite3_column_type(stmt.get(), first + 3) != SQLITE_TEXT)
    fail(where() + ": the event name is not text");
  rec.name = stmt.text(first + 3);
  auto version = stmt.int64(first + 4);
  if (version < 1 || version > std::numeric_limits<std::uint32_t>::max())
    fail(where() + ": the schema version is out of range");
  rec.version = static_cast<std::uint32_t>(version);
  if (stmt.is_null(first + 5))
    fail(where() + ": the payload is NULL");
  rec.payload = stmt.text(first + 5);
  rec.tags.clear();
  if (!stmt.is_null(first + 6)) {
    auto all = stmt.text(first + 6);
    std::string_view rest{all};
    for (;;) {
      auto sep = rest.find(tag_separator);
      rec.tags.emplace_back(rest.substr(0, sep));
      if (sep == std::string_view::npos)
        break;
      rest.remove_prefix(sep + 1);
    }
  }
  rec.timestamp_us = stmt.int64(first + 7);
  rec.metadata.command_id = stmt.text(first + 8);
  rec.metadata.correlation_id = stmt.text(first + 9);
}

// -- the read-only journal --------------------------------------------------------------

namespace {

std::string hex32(std::uint32_t x) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", x);
  return buf;
}

std::int64_t clamp64(std::uint64_t v) {
  constexpr auto top = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return static_cast<std::int64_t>(std::min(v, top));
}

std::int64_t query_int(sqlite3* db, const char* sql, const std::string& path) {
  statement stmt{db, sql, path};
  return stmt.step() ? stmt.int64(0) : 0;
}

} // namespace

readonly_journal::readonly_journal(std::string path, connection conn, std::uint32_t version)
  : path_(std::move(path)), conn_(std::move(conn)), schema_version_(version) {}

std::shared_ptr<readonly_journal> readonly_journal::open(const std::string& path) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (!fs::exists(st))
    fail(path + ": no such file");
  if (fs::is_directory(st))
    fail(path + " is a directory, not an annals journal");
  // The header first, without SQLite: a file of another kind is never touched (SQLite
  // would create -wal and -shm files beside it).
  std::ifstream in{path, std::ios::binary};
  if (!in)
    fail(path + ": cannot read (" + std::strerror(errno) + ")");
  char buf[100] = {};
  in.read(buf, sizeof(buf));
  if (in.gcount() == 0)
    fail(path + " is empty, not an annals journal");
  if (in.gcount() < static_cast<std::streamsize>(sizeof(buf))
      || std::memcmp(buf, "SQLite format 3", 16) != 0)
    fail(path + " is not an annals journal (not a SQLite database)");
  auto byte = [&](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(buf[i])); };
  auto header_app = (byte(68) << 24) | (byte(69) << 16) | (byte(70) << 8) | byte(71);
  constexpr auto annl = static_cast<std::uint32_t>(persistence::sqlite_journal::application_id);
  if (header_app != 0 && header_app != annl)
    fail(path
         + " is not an annals journal (a SQLite database of another application, "
           "application_id "
         + hex32(header_app) + ")");
  // Then through SQLite, read-only: a live journal's newest header may still be in its WAL.
  auto conn = open_connection(path, SQLITE_OPEN_READONLY, 2'000);
  auto app = static_cast<std::uint32_t>(query_int(conn.get(), "PRAGMA application_id", path));
  auto version = query_int(conn.get(), "PRAGMA user_version", path);
  if (app != annl) {
    auto objects = query_int(conn.get(), "SELECT count(*) FROM sqlite_schema", path);
    fail(path + " is not an annals journal (a SQLite database with application_id " + hex32(app)
         + " and " + std::to_string(objects) + " schema objects)");
  }
  if (version < 1)
    fail(path + " carries the annals application id but no schema version");
  if (version > static_cast<std::int64_t>(persistence::sqlite_journal::schema_version))
    fail(path + " has journal schema version " + std::to_string(version)
         + ", this build reads up to "
         + std::to_string(persistence::sqlite_journal::schema_version));
  exec(conn.get(), "PRAGMA query_only = 1", path);
  return std::make_shared<readonly_journal>(path, std::move(conn),
                                            static_cast<std::uint32_t>(version));
}

std::uint64_t readonly_journal::head() {
  std::lock_guard guard{mtx_};
  return static_cast<std::uint64_t>(
    query_int(db(), "SELECT coalesce(max(global_offset), 0) FROM events", path_));
}

template <class T, class F>
void readonly_journal::answer(callback<T>& done, F&& query) {
  caf::expected<T> result{T{}};
  try {
    std::lock_guard guard{mtx_};
    result = query();
  } catch (const failure& f) {
    result = make_error(journal_errc::storage_error, f.message);
  }
  done(std::move(result));
}

namespace {

std::vector<event_record> collect(statement& stmt, const std::string& path) {
  std::vector<event_record> out;
  while (stmt.step())
    read_event(stmt, 0, out.emplace_back(), path);
  return out;
}

} // namespace

void readonly_journal::append(persistence::append_request req,
                              callback<persistence::append_result> done) {
  done(make_error(journal_errc::read_only,
                  path_ + " is open read-only; nothing was appended to " + req.persistence_id));
}

void readonly_journal::read_stream(std::string persistence_id, std::uint64_t from_seq,
                                   std::uint64_t to_seq, std::size_t max,
                                   callback<std::vector<event_record>> done) {
  answer(done, [&] {
    statement stmt{db(),
                   std::string{"SELECT "} + event_columns
                     + " FROM events WHERE persistence_id = ?1 AND seq >= ?2 AND seq <= ?3 "
                       "ORDER BY seq LIMIT ?4",
                   path_};
    stmt.bind(1, persistence_id).bind(2, clamp64(from_seq)).bind(3, clamp64(to_seq));
    stmt.bind(4, clamp64(max));
    return collect(stmt, path_);
  });
}

void readonly_journal::read_all(std::uint64_t from_offset, std::size_t max,
                                callback<std::vector<event_record>> done) {
  answer(done, [&] {
    statement stmt{db(),
                   std::string{"SELECT "} + event_columns
                     + " FROM events WHERE global_offset >= ?1 ORDER BY global_offset LIMIT ?2",
                   path_};
    stmt.bind(1, clamp64(from_offset)).bind(2, clamp64(max));
    return collect(stmt, path_);
  });
}

void readonly_journal::read_tagged(std::string tag, std::uint64_t from_offset, std::size_t max,
                                   callback<std::vector<event_record>> done) {
  answer(done, [&] {
    std::string cols;
    for (std::string_view c : {"global_offset", "persistence_id", "seq", "name", "version",
                               "payload", "tags", "timestamp_us", "command_id", "correlation_id"}) {
      cols += cols.empty() ? "e." : ", e.";
      cols += c;
    }
    statement stmt{db(),
                   "SELECT " + cols
                     + " FROM event_tags t JOIN events e ON e.global_offset = t.global_offset "
                       "WHERE t.tag = ?1 AND t.global_offset >= ?2 ORDER BY t.global_offset "
                       "LIMIT ?3",
                   path_};
    stmt.bind(1, tag).bind(2, clamp64(from_offset)).bind(3, clamp64(max));
    return collect(stmt, path_);
  });
}

void readonly_journal::highest_seq(std::string persistence_id, callback<std::uint64_t> done) {
  answer(done, [&] {
    statement stmt{db(), "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = ?1",
                   path_};
    stmt.bind(1, persistence_id);
    return stmt.step() ? static_cast<std::uint64_t>(stmt.int64(0)) : std::uint64_t{0};
  });
}

void readonly_journal::head_offset(callback<std::uint64_t> done) {
  answer(done, [&] {
    return static_cast<std::uint64_t>(
      query_int(db(), "SELECT coalesce(max(global_offset), 0) FROM events", path_));
  });
}

void readonly_journal::persistence_ids(std::string after, std::size_t max,
                                       callback<std::vector<std::string>> done) {
  answer(done, [&] {
    statement stmt{db(),
                   "SELECT DISTINCT persistence_id FROM events WHERE persistence_id > ?1 "
                   "ORDER BY persistence_id LIMIT ?2",
                   path_};
    stmt.bind(1, after).bind(2, clamp64(max));
    std::vector<std::string> out;
    while (stmt.step())
      out.push_back(stmt.text(0));
    return out;
  });
}

std::uint64_t readonly_journal::subscribe(persistence::commit_listener) {
  std::lock_guard guard{mtx_};
  return next_subscription_++;
}

void readonly_journal::unsubscribe(std::uint64_t) {
  // Nothing to undo: listeners are never called.
}

// -- time and numbers -------------------------------------------------------------------

namespace {

bool digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

template <class T>
bool to_number(std::string_view s, T& out) {
  if (!digits(s))
    return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && ptr == s.data() + s.size();
}

// ".123" -> 123000 microseconds; more than six digits are truncated.
bool fraction_us(std::string_view s, std::int64_t& us) {
  if (!digits(s))
    return false;
  std::string six{s.substr(0, 6)};
  six.resize(6, '0');
  return to_number(six, us);
}

} // namespace

std::optional<std::int64_t> parse_time(std::string_view text) {
  using namespace std::chrono;
  constexpr std::int64_t max_seconds = 253'402'300'799; // 9999-12-31T23:59:59Z
  if (!text.empty() && text.find_first_not_of("0123456789.") == std::string_view::npos) {
    auto dot = text.find('.');
    std::int64_t secs = 0;
    std::int64_t frac = 0;
    if (!to_number(text.substr(0, dot), secs) || secs > max_seconds)
      return std::nullopt;
    if (dot != std::string_view::npos && !fraction_us(text.substr(dot + 1), frac))
      return std::nullopt;
    return secs * 1'000'000 + frac;
  }
  // YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)
  if (text.size() < 20 || text[4] != '-' || text[7] != '-' || (text[10] != 'T' && text[10] != ' ')
      || text[13] != ':' || text[16] != ':')
    return std::nullopt;
  int y = 0;
  unsigned mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (!to_number(text.substr(0, 4), y) || !to_number(text.substr(5, 2), mo)
      || !to_number(text.substr(8, 2), d) || !to_number(text.substr(11, 2), h)
      || !to_number(text.substr(14, 2), mi) || !to_number(text.substr(17, 2), s))
    return std::nullopt;
  auto rest = text.substr(19);
  std::int64_t frac = 0;
  if (!rest.empty() && (rest[0] == '.' || rest[0] == ',')) {
    auto end = rest.find_first_not_of("0123456789", 1);
    if (end == std::string_view::npos || !fraction_us(rest.substr(1, end - 1), frac))
      return std::nullopt;
    rest.remove_prefix(end);
  }
  if (rest != "Z" && rest != "+00:00" && rest != "+0000")
    return std::nullopt;
  year_month_day ymd{year{y}, month{mo}, day{d}};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 59)
    return std::nullopt;
  auto secs = sys_days{ymd}.time_since_epoch() + hours{h} + minutes{mi} + seconds{s};
  auto total = duration_cast<seconds>(secs).count();
  if (total < 0)
    return std::nullopt;
  return total * 1'000'000 + frac;
}

std::string iso_time(std::int64_t us) {
  using namespace std::chrono;
  sys_time<microseconds> tp{microseconds{us}};
  auto day_point = floor<days>(tp);
  year_month_day ymd{day_point};
  hh_mm_ss<microseconds> hms{tp - day_point};
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%04d-%02u-%02uT%02d:%02d:%02d.%06lldZ",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<int>(hms.hours().count()),
                static_cast<int>(hms.minutes().count()), static_cast<int>(hms.seconds().count()),
                static_cast<long long>(hms.subseconds().count()));
  return buf;
}

std::string grouped(std::uint64_t n) {
  auto digits_text = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits_text.size(); ++i) {
    if (i > 0 && (digits_text.size() - i) % 3 == 0)
      out += ',';
    out += digits_text[i];
  }
  return out;
}

bool is_terminal(const std::ostream& os) {
  if (&os == &std::cout)
    return ::isatty(STDOUT_FILENO) == 1;
  if (&os == &std::cerr)
    return ::isatty(STDERR_FILENO) == 1;
  return false;
}

// -- rebuild ----------------------------------------------------------------------------

namespace {

void remove_database_files(const std::string& path) {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"})
    fs::remove(path + suffix, ec);
}

std::string sql_identifier(std::string_view identifier) {
  std::string out = "\"";
  for (char c : identifier) {
    out += c;
    if (c == '"')
      out += '"';
  }
  return out + "\"";
}

// The offset stored for `name` in the journal file's projection_offsets, if any.
std::optional<std::uint64_t> stored_offset(sqlite3* db, const std::string& schema,
                                           const std::string& name, const std::string& path) {
  statement exists{db,
                   "SELECT count(*) FROM " + schema
                     + ".sqlite_schema WHERE type = 'table' AND name = 'projection_offsets'",
                   path};
  if (!exists.step() || exists.int64(0) == 0)
    return std::nullopt;
  statement select{db, "SELECT \"offset\" FROM " + schema + ".projection_offsets WHERE name = ?1",
                   path};
  select.bind(1, name);
  if (!select.step())
    return std::nullopt;
  return static_cast<std::uint64_t>(select.int64(0));
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", s);
  return buf;
}

// Progress of the catch-up on the error stream: a bar redrawn in place on a terminal,
// plain lines (at most one a second) otherwise.
class progress {
public:
  progress(std::ostream& err, std::string name, std::uint64_t total)
    : err_(err), tty_(is_terminal(err)), name_(std::move(name)), total_(total),
      start_(std::chrono::steady_clock::now()), last_line_(start_) {}

  void update(std::uint64_t done, bool final) {
    auto now = std::chrono::steady_clock::now();
    if (!tty_ && !final && now - last_line_ < std::chrono::seconds{1})
      return;
    last_line_ = now;
    done = std::min(done, total_);
    auto elapsed = std::chrono::duration<double>(now - start_).count();
    auto rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    std::string line = std::to_string(done) + "/" + std::to_string(total_) + " events, "
                       + grouped(static_cast<std::uint64_t>(rate)) + " ev/s, ";
    if (final)
      line += "done in " + seconds_text(elapsed);
    else if (rate > 0)
      line += "ETA " + seconds_text(static_cast<double>(total_ - done) / rate);
    else
      line += "ETA unknown";
    if (tty_) {
      constexpr std::size_t width = 30;
      auto filled = total_ == 0 ? width : static_cast<std::size_t>(width * done / total_);
      std::string bar(filled, '#');
      bar.resize(width, '.');
      err_ << "\rrebuild " << name_ << " [" << bar << "] " << line << "   ";
      if (final)
        err_ << '\n';
    } else {
      err_ << "rebuild " << name_ << ": " << line << '\n';
    }
    err_.flush();
  }

private:
  std::ostream& err_;
  bool tty_;
  std::string name_;
  std::uint64_t total_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_line_;
};

struct swapped_table {
  std::string name;
  std::uint64_t rows = 0;
};

// Replaces the projection's tables in the journal file with the shadow's, and its stored
// offset with the shadow's, in one transaction.
std::vector<swapped_table> swap_in(const std::string& path, const std::string& shadow,
                                   const std::string& name, std::optional<std::uint64_t> before,
                                   std::uint64_t& offset) {
  auto conn = open_connection(path, SQLITE_OPEN_READWRITE, 10'000);
  auto db = conn.get();
  {
    statement attach{db, "ATTACH DATABASE ?1 AS annals_shadow", path};
    attach.bind(1, shadow).run();
  }
  exec(db, "BEGIN IMMEDIATE", path);
  std::vector<swapped_table> tables;
  try {
    std::vector<std::pair<std::string, std::string>> defs;
    {
      statement list{db,
                     "SELECT name, sql FROM annals_shadow.sqlite_schema WHERE type = 'table' AND "
                     "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> 'projection_offsets' "
                     "ORDER BY name",
                     path};
      while (list.step())
        defs.emplace_back(list.text(0), list.text(1));
    }
    for (const auto& [table, sql] : defs)
      if (table == "events" || table == "event_tags" || table == "snapshots")
        fail("projection " + name + " created a table named " + table
             + ", which is a journal table; nothing was swapped in");
    // A service that runs this projection on the file would have moved its offset.
    auto now = stored_offset(db, "main", name, path);
    if (now != before)
      fail("the stored offset of projection " + name + " moved from "
           + (before ? std::to_string(*before) : "none") + " to "
           + (now ? std::to_string(*now) : "none")
           + " during the rebuild: a running service projects it; stop the service and retry");
    for (const auto& [table, sql] : defs) {
      exec(db, "DROP TABLE IF EXISTS main." + sql_identifier(table), path);
      exec(db, sql, path);
      exec(db,
           "INSERT INTO main." + sql_identifier(table) + " SELECT * FROM annals_shadow."
             + sql_identifier(table),
           path);
      tables.push_back({table, static_cast<std::uint64_t>(sqlite3_changes64(db))});
    }
    // Indexes and triggers of those tables (the DROP took the old ones with it).
    {
      statement extra{db,
                      "SELECT sql, tbl_name FROM annals_shadow.sqlite_schema WHERE type IN "
                      "('index', 'trigger') AND sql IS NOT NULL",
                      path};
      std::vector<std::string> sqls;
      while (extra.step()) {
        auto tbl = extra.text(1);
        if (std::any_of(defs.begin(), defs.end(), [&](const auto& d) { return d.first == tbl; }))
          sqls.push_back(extra.text(0));
      }
      for (const auto& sql : sqls)
        exec(db, sql, path);
    }
    offset = stored_offset(db, "annals_shadow", name, path).value_or(0);
    exec(db,
         "CREATE TABLE IF NOT EXISTS main.projection_offsets(name TEXT PRIMARY KEY, "
         "\"offset\" INTEGER NOT NULL)",
         path);
    statement upsert{db,
                     "INSERT INTO main.projection_offsets(name, \"offset\") VALUES (?1, ?2) "
                     "ON CONFLICT(name) DO UPDATE SET \"offset\" = excluded.\"offset\"",
                     path};
    upsert.bind(1, name).bind(2, clamp64(offset)).run();
    exec(db, "COMMIT", path);
  } catch (...) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  exec(db, "DETACH DATABASE annals_shadow", path);
  return tables;
}

} // namespace

void rebuild(const cli::projection_entry& proj, const std::shared_ptr<readonly_journal>& journal,
             std::ostream& out, std::ostream& err) {
  const auto& path = journal->path();
  auto shadow = path + ".rebuild-" + proj.name;
  remove_database_files(shadow);
  auto head = journal->head();
  std::optional<std::uint64_t> before;
  {
    std::lock_guard guard{journal->mutex()};
    before = stored_offset(journal->db(), "main", proj.name, path);
  }
  auto handler = proj.make();
  if (!handler)
    fail("the factory of projection " + proj.name + " returned no handler");
  progress bar{err, proj.name, head};
  try {
    caf::actor_system_config cfg;
    actors::configure(cfg);
    caf::actor_system sys{cfg};
    auto running = actors::spawn_projection(
      sys, journal, std::move(handler), {.name = proj.name, .path = shadow, .filter = proj.filter});
    for (;;) {
      auto st = running.await_offset(head, std::chrono::milliseconds{200});
      if (st)
        break;
      if (!is(st.error(), actors::projection_errc::timeout))
        fail("projection " + proj.name + " failed while rebuilding: " + render(st.error()));
      auto now = running.status();
      if (!now)
        fail("projection " + proj.name + " does not answer: " + render(now.error()));
      if (now->state == actors::projection_state::failed)
        fail("projection " + proj.name + " failed while rebuilding: " + now->error);
      bar.update(now->offset, false);
    }
    bar.update(head, true);
    running.stop();
  } catch (...) {
    remove_database_files(shadow);
    throw;
  }
  std::uint64_t offset = 0;
  std::vector<swapped_table> tables;
  try {
    tables = swap_in(path, shadow, proj.name, before, offset);
  } catch (...) {
    remove_database_files(shadow);
    throw;
  }
  remove_database_files(shadow);
  out << "rebuilt projection " << proj.name << " at offset " << offset << ": ";
  for (std::size_t i = 0; i < tables.size(); ++i)
    out << (i ? ", " : "") << "table " << tables[i].name << " (" << grouped(tables[i].rows)
        << (tables[i].rows == 1 ? " row)" : " rows)");
  if (tables.empty())
    out << "no tables";
  out << '\n';
}

} // namespace annals::tools::detail

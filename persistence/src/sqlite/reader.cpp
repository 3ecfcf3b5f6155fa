#include "sqlite/reader.hpp"

#include <algorithm>
#include <limits>

#include "annals/persistence/sqlite_format.hpp"

namespace annals::persistence::sqlite {

caf::error prepare_reader(reader_state& r) {
  std::string cols = sqlite_format::event_columns;
  std::string stream_sql = "SELECT " + cols
                           + " FROM events WHERE persistence_id = ?1 AND seq >= ?2 AND "
                             "seq <= ?3 ORDER BY seq LIMIT ?4";
  std::string all_sql = "SELECT " + cols
                        + " FROM events WHERE global_offset >= ?1 ORDER BY global_offset "
                          "LIMIT ?2";
  std::string tagged_sql = std::string{"SELECT "} + sqlite_format::event_columns_e
                           + " FROM event_tags t JOIN events e ON e.global_offset = "
                             "t.global_offset WHERE t.tag = ?1 AND t.global_offset >= ?2 "
                             "ORDER BY t.global_offset LIMIT ?3";
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

namespace {

caf::error corrupt(const event_record& rec, const std::string& path, const char* what) {
  return make_error(journal_errc::corrupt_row,
                    "persistence id " + rec.persistence_id + ", seq " + std::to_string(rec.seq)
                      + " (offset " + std::to_string(rec.offset) + ", " + path + "): " + what);
}

} // namespace

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
  rec.tags.clear();
  if (auto tags = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 6)))
    rec.tags = sqlite_format::split_tags(
      std::string_view{tags, static_cast<std::size_t>(sqlite3_column_bytes(stmt, 6))});
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

} // namespace annals::persistence::sqlite

namespace annals::persistence {

caf::error sqlite_format::read_event(sqlite3_stmt* stmt, const std::string& path,
                                     event_record& rec) {
  return sqlite::read_row(stmt, path, rec);
}

using namespace sqlite;

bool sqlite_journal::impl::submit_read(read_task&& task) {
  {
    std::lock_guard guard{read_mtx};
    if (read_stop)
      return false;
    read_queue.push_back(std::move(task));
  }
  read_cv.notify_one();
  return true;
}

void sqlite_journal::impl::reader_loop(reader_state& r) {
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

} // namespace annals::persistence

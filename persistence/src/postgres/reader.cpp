// The read side: reader threads, each with its own connection, serving reads and snapshot
// operations in the order they were submitted.

#include <chrono>

#include "postgres/schema.hpp"
#include "postgres/state.hpp"

namespace annals::persistence {

using namespace postgres;

bool postgres_journal::impl::submit_read(read_task&& task) {
  {
    std::lock_guard guard{read_mtx};
    if (read_stop)
      return false;
    read_queue.push_back(std::move(task));
  }
  read_cv.notify_one();
  return true;
}

void postgres_journal::impl::reader_loop(connection conn) {
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
    // A connection lost since the last task is made again; if that fails, the task runs
    // on the dead connection and reports the failure itself.
    if (!conn.alive()) {
      auto c = connection::open(opts.conninfo, opts.connect_timeout);
      if (c)
        conn = std::move(*c);
    }
    task(conn);
  }
}

namespace {

// Runs `sql` with `params` and reads every row as an event.
caf::expected<std::vector<event_record>> query_events(const connection& conn, const char* sql,
                                                      const std::vector<std::string>& params,
                                                      const std::string& what) {
  auto res = conn.exec(sql, params);
  if (!res.ok())
    return conn.failure(res, what);
  std::vector<event_record> out(static_cast<std::size_t>(res.rows()));
  for (int row = 0; row < res.rows(); ++row)
    if (auto err = read_row(res, row, conn.where(), out[static_cast<std::size_t>(row)]))
      return err;
  return out;
}

caf::expected<std::uint64_t> query_count(const connection& conn, const char* sql,
                                         const std::vector<std::string>& params,
                                         const std::string& what) {
  auto res = conn.exec(sql, params);
  if (!res.ok())
    return conn.failure(res, what);
  return res.u64(0, 0);
}

const std::string all_sql = std::string{"SELECT "} + event_columns
                            + " FROM events WHERE global_offset >= $1 ORDER BY global_offset "
                              "LIMIT $2";

} // namespace

void postgres_journal::read_stream(std::string persistence_id, std::uint64_t from_seq,
                                   std::uint64_t to_seq, std::size_t max,
                                   callback<std::vector<event_record>> done) {
  static const std::string sql = std::string{"SELECT "} + event_columns
                                 + " FROM events WHERE persistence_id = $1 AND seq >= $2 AND "
                                   "seq <= $3 ORDER BY seq LIMIT $4";
  auto task = [pid = std::move(persistence_id), from_seq, to_seq, max,
               done](const connection& conn) {
    done(query_events(conn, sql.c_str(),
                      {pid, bigint_of(from_seq), bigint_of(to_seq), limit_of(max)},
                      "reading persistence id " + pid));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->info.server));
}

void postgres_journal::read_all(std::uint64_t from_offset, std::size_t max,
                                callback<std::vector<event_record>> done) {
  auto task = [from_offset, max, done](const connection& conn) {
    done(query_events(conn, all_sql.c_str(), {bigint_of(from_offset), limit_of(max)},
                      "reading from offset " + std::to_string(from_offset)));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->info.server));
}

void postgres_journal::read_tagged(std::string tag, std::uint64_t from_offset, std::size_t max,
                                   callback<std::vector<event_record>> done) {
  static const std::string sql =
    "SELECT e.global_offset, e.persistence_id, e.seq, e.name, e.version, e.payload, e.tags, "
    "e.timestamp_us, e.command_id, e.correlation_id FROM event_tags t JOIN events e ON "
    "e.global_offset = t.global_offset WHERE t.tag = $1 AND t.global_offset >= $2 ORDER BY "
    "t.global_offset LIMIT $3";
  auto task = [tag = std::move(tag), from_offset, max, done](const connection& conn) {
    done(query_events(conn, sql.c_str(), {tag, bigint_of(from_offset), limit_of(max)},
                      "reading tag " + tag));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->info.server));
}

void postgres_journal::highest_seq(std::string persistence_id, callback<std::uint64_t> done) {
  auto task = [pid = std::move(persistence_id), done](const connection& conn) {
    done(query_count(conn, "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = $1",
                     {pid}, "reading the highest seq of persistence id " + pid));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->info.server));
}

void postgres_journal::head_offset(callback<std::uint64_t> done) {
  auto task = [done](const connection& conn) {
    done(query_count(conn, "SELECT coalesce(max(global_offset), 0) FROM events", {},
                     "reading the head offset"));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->info.server));
}

void postgres_journal::persistence_ids(std::string after, std::size_t max,
                                       callback<std::vector<std::string>> done) {
  auto task = [after = std::move(after), max, done](const connection& conn) {
    // A loose index scan: one probe of the (persistence_id, seq) index per id.
    auto res = conn.exec(
      "WITH RECURSIVE ids(pid, n) AS ("
      " SELECT (SELECT min(persistence_id) FROM events WHERE persistence_id > $1), 1"
      " UNION ALL SELECT (SELECT min(persistence_id) FROM events WHERE persistence_id > pid), n + 1"
      " FROM ids WHERE pid IS NOT NULL AND n < $2)"
      " SELECT pid FROM ids WHERE pid IS NOT NULL",
      {after, limit_of(max)});
    if (!res.ok()) {
      done(conn.failure(res, "listing persistence ids"));
      return;
    }
    std::vector<std::string> out;
    for (int row = 0; row < res.rows(); ++row)
      out.emplace_back(res.text(row, 0));
    done(std::move(out));
  };
  if (max == 0) {
    done(std::vector<std::string>{});
    return;
  }
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->info.server));
}

} // namespace annals::persistence

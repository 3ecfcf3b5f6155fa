// sqlite_journal's life cycle (open, close), its threads, the append and subscription
// entry points, and its counters. Reads are in reader.cpp, the group commit in writer.cpp.

#include <filesystem>

#include <pthread.h>

#include "internal/validate.hpp"
#include "sqlite/inline.hpp"
#include "sqlite/reader.hpp"
#include "sqlite/schema.hpp"
#include "sqlite/writer.hpp"

namespace annals::persistence {

using namespace sqlite;

void sqlite_journal::impl::close() {
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

namespace {

// The writer's connection, configured, with the schema created or upgraded.
caf::expected<std::unique_ptr<writer_state>> open_writer(const sqlite_options& opts,
                                                         sqlite_journal_info& info) {
  const auto& path = opts.path;
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && std::filesystem::file_size(path, ec) > 0)
    if (auto err = check_existing_file(path, opts.busy_timeout))
      return err;
  auto w = std::make_unique<writer_state>();
  // Before the writer's connection: a second owner is refused before it touches the file.
  if (opts.owner_lock) {
    auto lock = owner_lock::acquire(path);
    if (!lock)
      return std::move(lock.error());
    w->owner = std::move(*lock);
  }
  w->path = path;
  w->keep_snapshots = opts.keep_snapshots;
  w->seq_cache_entries = std::max<std::size_t>(opts.seq_cache_entries, 1);
  auto conn = open_connection(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, opts.busy_timeout);
  if (!conn)
    return std::move(conn.error());
  w->conn = std::move(*conn);
  if (auto err = configure_writer(*w, opts, info))
    return err;
  if (auto err = ensure_schema(w->conn.db, path, info))
    return err;
  if (auto err = prepare_writer(*w))
    return err;
  if (auto err = open_inline_projections(*w, opts.inline_projections))
    return err;
  return w;
}

// Opens a reader's connection; the first reader of a read-only journal also checks that
// the file is a journal and reads back its settings into `info`.
caf::expected<std::unique_ptr<reader_state>> open_reader(const sqlite_options& opts, bool first,
                                                         sqlite_journal_info& info) {
  const auto& path = opts.path;
  auto r = std::make_unique<reader_state>();
  r->path = path;
  auto conn = open_connection(path, opts.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE,
                              opts.busy_timeout);
  if (!conn)
    return std::move(conn.error());
  r->conn = std::move(*conn);
  if (opts.read_only && first) {
    auto version = check_readable(r->conn.db, path);
    if (!version)
      return std::move(version.error());
    info.schema_version = *version;
    auto mode = query_text(r->conn.db, "PRAGMA journal_mode", path);
    if (!mode)
      return std::move(mode.error());
    info.journal_mode = *mode;
    auto level = query_int(r->conn.db, "PRAGMA synchronous", path);
    if (!level)
      return std::move(level.error());
    info.synchronous = static_cast<int>(*level);
  }
  for (const char* sql :
       {"PRAGMA query_only = 1", "PRAGMA cache_size = -32768", "PRAGMA mmap_size = 268435456"})
    if (auto err = exec(r->conn.db, sql, path))
      return err;
  if (auto err = prepare_reader(*r))
    return err;
  return r;
}

caf::error read_only_error(const std::string& path, const std::string& what) {
  return make_error(journal_errc::read_only, path + " was opened read-only; " + what);
}

} // namespace

caf::expected<std::shared_ptr<sqlite_journal>> sqlite_journal::open(sqlite_options opts) {
  if (opts.path.empty())
    return make_error(journal_errc::invalid_request, "sqlite_journal::open without a path");
  const auto& path = opts.path;
  std::error_code ec;
  auto exists = std::filesystem::exists(path, ec);
  if ((opts.must_exist || opts.read_only) && !exists)
    return make_error(journal_errc::storage_error, path + " does not exist");
  if (opts.read_only && !opts.inline_projections.empty())
    return make_error(journal_errc::invalid_request,
                      path + ": a read-only journal cannot keep inline projections");
  if (opts.read_only) {
    // Checked before SQLite sees the file, which would create -wal/-shm files beside
    // a file of another kind.
    if (std::filesystem::file_size(path, ec) == 0)
      return make_error(journal_errc::not_a_journal, path + " is empty, not an annals journal");
    if (auto err = check_header(path))
      return err;
  }
  auto st = std::make_shared<impl>();
  st->opts = opts;
  st->info.path = path;
  st->info.read_only = opts.read_only;
  st->opts.keep_snapshots = std::max<std::size_t>(st->opts.keep_snapshots, 1);
  st->opts.readers = std::max<std::size_t>(st->opts.readers, 1);
  std::unique_ptr<writer_state> w;
  if (opts.read_only) {
    st->write_stop = true; // no writer thread takes writes
  } else {
    auto opened = open_writer(st->opts, st->info);
    if (!opened)
      return std::move(opened.error());
    w = std::move(*opened);
  }
  std::vector<std::unique_ptr<reader_state>> readers;
  for (std::size_t i = 0; i < st->opts.readers; ++i) {
    auto r = open_reader(st->opts, i == 0, st->info);
    if (!r)
      return std::move(r.error());
    readers.push_back(std::move(*r));
  }
  // The threads own their connections and keep the shared state alive until they end,
  // which lets `close` run on one of them.
  // The writer's connection closes last: the last connection to close merges the WAL into
  // the database file, and closes that overlap can each leave that to the other.
  st->live_readers = readers.size();
  if (w)
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

caf::expected<std::shared_ptr<sqlite_journal>>
sqlite_journal::open_read_only(std::string path, std::chrono::milliseconds busy_timeout) {
  return open({.path = std::move(path), .read_only = true, .busy_timeout = busy_timeout});
}

bool sqlite_journal::read_only() const {
  return impl_->opts.read_only;
}

caf::error sqlite_journal::impl::refuse_write(const std::string& what) const {
  return read_only_error(opts.path, what);
}

sqlite_journal::sqlite_journal(std::shared_ptr<impl> ptr) : impl_(std::move(ptr)) {}

sqlite_journal::~sqlite_journal() {
  close();
}

void sqlite_journal::close() {
  impl_->close();
}

void sqlite_journal::append(append_request req, callback<append_result> done) {
  if (impl_->opts.read_only) {
    impl_->failed_appends.fetch_add(1, std::memory_order_relaxed);
    done(impl_->refuse_write("nothing was appended to persistence id " + req.persistence_id));
    return;
  }
  if (auto err = internal::validate(req, impl_->opts.max_append_bytes)) {
    impl_->failed_appends.fetch_add(1, std::memory_order_relaxed);
    done(std::move(err));
    return;
  }
  write_item item{append_item{std::move(req), std::move(done)}};
  if (!impl_->submit_write(item))
    std::get<append_item>(item).done(closed_error(impl_->opts.path));
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
  if (impl_->opts.read_only) {
    done(impl_->refuse_write("it has no writer whose max_page_count could be set"));
    return;
  }
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

void sqlite_journal::rebuild_inline(std::string name, callback<std::uint64_t> done) {
  if (impl_->opts.read_only) {
    done(impl_->refuse_write("it has no inline projections to rebuild"));
    return;
  }
  auto run = [name = std::move(name), done](writer_state& w) {
    auto res = rebuild_inline_projection(w, name);
    done(std::move(res));
  };
  write_item item{control_item{run}};
  if (!impl_->submit_write(item))
    done(closed_error(impl_->opts.path));
}

} // namespace annals::persistence

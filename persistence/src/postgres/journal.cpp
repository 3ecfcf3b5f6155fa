// postgres_journal's life cycle (open, close), its threads, and the append and
// subscription entry points. The group commit is in writer.cpp, reads in reader.cpp, the
// subscription thread in follow.cpp.

#include <sys/eventfd.h>
#include <unistd.h>

#include <pthread.h>

#include "internal/validate.hpp"
#include "postgres/schema.hpp"
#include "postgres/state.hpp"

namespace annals::persistence {

using namespace postgres;

void postgres_journal::impl::close() {
  std::vector<std::thread> owned;
  {
    std::lock_guard guard{threads_mtx};
    owned.swap(threads);
  }
  auto finish = [](std::thread& t) {
    if (!t.joinable())
      return;
    // A close from inside a callback runs on one of our threads: it cannot join itself, so
    // it lets that thread finish on its own (it holds a reference to this state).
    if (t.get_id() == std::this_thread::get_id())
      t.detach();
    else
      t.join();
  };
  // Writer first, so that the subscription thread's last catch-up sees every commit.
  {
    std::lock_guard guard{write_mtx};
    write_stop = true;
  }
  write_cv.notify_all();
  if (!owned.empty())
    finish(owned[0]);
  {
    std::lock_guard guard{read_mtx};
    read_stop = true;
  }
  read_cv.notify_all();
  follow_stop = true;
  if (wake_fd >= 0)
    ::eventfd_write(wake_fd, 1);
  for (std::size_t i = 1; i < owned.size(); ++i)
    finish(owned[i]);
}

namespace {

caf::expected<connection> connect(const postgres_options& opts) {
  return connection::open(opts.conninfo, opts.connect_timeout);
}

// The writer's connection, with the schema created or checked and durability settings.
caf::expected<connection> open_writer(const postgres_options& opts, postgres_journal_info& info) {
  auto conn = connect(opts);
  if (!conn)
    return std::move(conn.error());
  info.server = conn->where();
  info.server_version = PQparameterStatus(conn->get(), "server_version");
  if (auto err = ensure_schema(*conn, info))
    return err;
  if (auto err = conn->run("SET synchronous_commit = on", "setting synchronous_commit"))
    return err;
  auto sync = conn->exec("SHOW synchronous_commit");
  if (!sync.ok())
    return conn->failure(sync, "reading synchronous_commit");
  info.synchronous_commit = sync.text(0, 0);
  return conn;
}

} // namespace

caf::expected<std::shared_ptr<postgres_journal>> postgres_journal::open(postgres_options opts) {
  if (opts.conninfo.empty())
    return make_error(journal_errc::invalid_request,
                      "postgres_journal::open without a connection string");
  auto st = std::make_shared<impl>();
  st->opts = std::move(opts);
  st->opts.readers = std::max<std::size_t>(st->opts.readers, 1);
  st->opts.keep_snapshots = std::max<std::size_t>(st->opts.keep_snapshots, 1);
  auto writer = open_writer(st->opts, st->info);
  if (!writer)
    return std::move(writer.error());
  std::vector<connection> readers;
  for (std::size_t i = 0; i < st->opts.readers; ++i) {
    auto r = connect(st->opts);
    if (!r)
      return std::move(r.error());
    readers.push_back(std::move(*r));
  }
  // LISTEN before reading the head: a commit after that read is also notified.
  auto follower = connect(st->opts);
  if (!follower)
    return std::move(follower.error());
  if (auto err =
        follower->run(std::string{"LISTEN "} + postgres_journal::channel, "listening for commits"))
    return err;
  auto head = follower->exec("SELECT coalesce(max(global_offset), 0) FROM events", {});
  if (!head.ok())
    return follower->failure(head, "reading the head offset");
  auto head_offset = head.u64(0, 0);
  st->wake_fd = ::eventfd(0, EFD_CLOEXEC);
  if (st->wake_fd < 0)
    return make_error(journal_errc::storage_error, "cannot create an eventfd");
  // The threads own their connections and keep the shared state alive until they end,
  // which lets `close` run on one of them. Index 0 is the writer (see `impl::close`).
  st->threads.emplace_back([st, conn = std::move(*writer)]() mutable {
    pthread_setname_np(pthread_self(), "annals-pg-write");
    st->writer_loop(std::move(conn));
  });
  st->threads.emplace_back([st, conn = std::move(*follower), head_offset]() mutable {
    pthread_setname_np(pthread_self(), "annals-pg-follow");
    st->follow_loop(std::move(conn), head_offset);
  });
  for (auto& r : readers)
    st->threads.emplace_back([st, conn = std::move(r)]() mutable {
      pthread_setname_np(pthread_self(), "annals-pg-read");
      st->reader_loop(std::move(conn));
    });
  return std::shared_ptr<postgres_journal>(new postgres_journal(std::move(st)));
}

postgres_journal::postgres_journal(std::shared_ptr<impl> ptr) : impl_(std::move(ptr)) {}

postgres_journal::~postgres_journal() {
  close();
}

void postgres_journal::close() {
  impl_->close();
}

void postgres_journal::append(append_request req, callback<append_result> done) {
  if (auto err = internal::validate(req, impl_->opts.max_append_bytes)) {
    done(std::move(err));
    return;
  }
  append_item item{std::move(req), std::move(done)};
  if (!impl_->submit_write(item))
    item.done(closed_error(impl_->info.server));
}

std::uint64_t postgres_journal::subscribe(commit_listener f) {
  std::lock_guard guard{impl_->listeners_mtx};
  auto handle = impl_->next_listener++;
  impl_->listeners.emplace(handle, std::make_shared<commit_listener>(std::move(f)));
  return handle;
}

void postgres_journal::unsubscribe(std::uint64_t handle) {
  {
    std::lock_guard guard{impl_->listeners_mtx};
    impl_->listeners.erase(handle);
  }
  // Waits for a delivery in progress (a no-op on the delivering thread itself).
  std::lock_guard hold{impl_->deliver_mtx};
}

std::shared_ptr<postgres_snapshot_store> postgres_journal::snapshots() {
  return std::make_shared<postgres_snapshot_store>(impl_);
}

const postgres_journal_info& postgres_journal::info() const {
  return impl_->info;
}

} // namespace annals::persistence

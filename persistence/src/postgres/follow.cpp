// The subscription thread: woken by NOTIFY (every writer notifies on commit), it reads
// the events after the last one it delivered, by offset, and hands them to the listeners.
// Offsets become visible in order (writer.cpp), so "everything after the last offset
// delivered" never skips an event. While nobody listens it only follows the head.

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "postgres/schema.hpp"
#include "postgres/state.hpp"

namespace annals::persistence {

using namespace postgres;

namespace {

constexpr std::size_t follow_page_size = 1000;

// Delivers `batch` to every listener registered now.
void deliver(postgres_journal::impl& st, const std::vector<event_record>& batch) {
  std::lock_guard hold{st.deliver_mtx};
  std::vector<std::shared_ptr<commit_listener>> targets;
  {
    std::lock_guard guard{st.listeners_mtx};
    for (auto& [handle, f] : st.listeners)
      targets.push_back(f);
  }
  for (auto& f : targets)
    (*f)(batch);
}

bool has_listeners(postgres_journal::impl& st) {
  std::lock_guard guard{st.listeners_mtx};
  return !st.listeners.empty();
}

// Reads and delivers every event after `head`; false if a query failed.
bool catch_up(postgres_journal::impl& st, const connection& conn, std::uint64_t& head) {
  static const std::string sql = std::string{"SELECT "} + event_columns
                                 + " FROM events WHERE global_offset > $1 ORDER BY global_offset "
                                   "LIMIT "
                                 + std::to_string(follow_page_size);
  for (;;) {
    if (!has_listeners(st)) {
      auto res = conn.exec("SELECT coalesce(max(global_offset), 0) FROM events", {});
      if (!res.ok())
        return false;
      head = std::max(head, res.u64(0, 0));
      return true;
    }
    auto res = conn.exec(sql.c_str(), {bigint_of(head)});
    if (!res.ok())
      return false;
    std::vector<event_record> batch(static_cast<std::size_t>(res.rows()));
    for (int row = 0; row < res.rows(); ++row)
      if (read_row(res, row, conn.where(), batch[static_cast<std::size_t>(row)]))
        return false;
    if (batch.empty())
      return true;
    head = batch.back().offset;
    deliver(st, batch);
    if (batch.size() < follow_page_size)
      return true;
  }
}

// Waits until `fd` is readable, the wake eventfd fires or `timeout` passes (-1: forever).
void wait_for_input(int fd, int wake_fd, int timeout_ms) {
  pollfd fds[2] = {{wake_fd, POLLIN, 0}, {fd, POLLIN, 0}};
  ::poll(fds, fd >= 0 ? 2 : 1, timeout_ms);
  if (fds[0].revents & POLLIN) {
    eventfd_t value = 0;
    ::eventfd_read(wake_fd, &value);
  }
}

} // namespace

postgres_journal::impl::~impl() {
  if (wake_fd >= 0)
    ::close(wake_fd);
}

void postgres_journal::impl::follow_loop(connection conn, std::uint64_t head) {
  auto delay = std::chrono::milliseconds{50};
  auto listen_sql = std::string{"LISTEN "} + postgres_journal::channel;
  for (;;) {
    auto stopping = follow_stop.load();
    if (!conn.alive()) {
      if (stopping)
        return;
      conn.reset();
      auto c = connection::open(opts.conninfo, opts.connect_timeout);
      if (c && !c->run(listen_sql, "listening for commits")) {
        conn = std::move(*c);
        delay = std::chrono::milliseconds{50};
      } else {
        wait_for_input(-1, wake_fd, static_cast<int>(delay.count()));
        delay = std::min(delay * 2, opts.max_reconnect_delay);
        continue;
      }
    }
    // Commits that happened while the connection was down are read here too.
    if (!catch_up(*this, conn, head)) {
      if (!conn.alive())
        continue;
      wait_for_input(-1, wake_fd, static_cast<int>(delay.count()));
      delay = std::min(delay * 2, opts.max_reconnect_delay);
      continue;
    }
    if (stopping)
      return;
    PQconsumeInput(conn.get());
    bool notified = false;
    while (PGnotify* n = PQnotifies(conn.get())) {
      notified = true;
      PQfreemem(n);
    }
    if (notified)
      continue;
    wait_for_input(PQsocket(conn.get()), wake_fd, -1);
    if (PQconsumeInput(conn.get()) == 0)
      conn.reset();
  }
}

} // namespace annals::persistence

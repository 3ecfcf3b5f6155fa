#pragma once

// The state a `postgres_journal` shares with its threads: the writer's and the readers'
// queues, the threads, the subscription's listeners, and what each thread owns.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "annals/persistence/postgres_journal.hpp"
#include "postgres/connection.hpp"

namespace annals::persistence::postgres {

/// An append waiting for the writer.
struct append_item {
  append_request req;
  callback<append_result> done;
};

/// Work for a reader thread, given that thread's connection (reconnected if it broke).
using read_task = std::function<void(const connection&)>;

} // namespace annals::persistence::postgres

namespace annals::persistence {

struct postgres_journal::impl {
  postgres_options opts;
  postgres_journal_info info;

  std::mutex write_mtx;
  std::condition_variable write_cv;
  std::deque<postgres::append_item> write_queue;
  bool write_stop = false;

  std::mutex read_mtx;
  std::condition_variable read_cv;
  std::deque<postgres::read_task> read_queue;
  bool read_stop = false;

  std::mutex threads_mtx;
  std::vector<std::thread> threads;

  // The subscription: listeners, and the thread that follows the log for them.
  std::mutex listeners_mtx;
  std::map<std::uint64_t, std::shared_ptr<commit_listener>> listeners;
  std::uint64_t next_listener = 1;
  // Held while listeners run, so that `unsubscribe` can wait for a delivery in progress.
  std::recursive_mutex deliver_mtx;
  std::atomic<bool> follow_stop{false};
  int wake_fd = -1; // an eventfd that interrupts the subscription thread's wait

  impl() = default;
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  ~impl(); // closes `wake_fd`

  /// Queues `item` for the writer (moving from it); false, leaving it intact, if closed.
  bool submit_write(postgres::append_item& item);

  /// Queues `task` for a reader; false if the journal is closed.
  bool submit_read(postgres::read_task&& task);

  /// Stops the threads once their queues are empty; see `postgres_journal::close`.
  void close();

  /// Takes every waiting append (up to `max_batch`) into one group commit until the write
  /// queue is closed and empty (writer.cpp). Owns `conn` and reconnects it when it broke.
  void writer_loop(postgres::connection conn);

  /// Serves the read queue until it is closed and empty (reader.cpp).
  void reader_loop(postgres::connection conn);

  /// Delivers every event committed after `head` to the listeners, woken by NOTIFY on
  /// `conn` (follow.cpp).
  void follow_loop(postgres::connection conn, std::uint64_t head);
};

} // namespace annals::persistence

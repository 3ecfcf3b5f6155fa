#pragma once

// The threads that run the bank service's blocking queries (journal reads, read models,
// projection waits), so that no HTTP I/O thread waits on SQLite.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace service {

/// A fixed set of threads taking jobs from one queue, first in first out.
class worker_pool {
public:
  /// Starts `n` threads (at least one).
  explicit worker_pool(std::size_t n);

  /// Runs the jobs already queued, then joins the threads.
  ~worker_pool();

  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  /// Queues `job` for the next free thread.
  void post(std::function<void()> job);

private:
  void run();

  std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

} // namespace service

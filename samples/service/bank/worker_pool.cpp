#include "service/bank/worker_pool.hpp"

#include <algorithm>
#include <utility>

namespace service {

worker_pool::worker_pool(std::size_t n) {
  for (std::size_t i = 0; i < std::max<std::size_t>(n, 1); ++i)
    threads_.emplace_back([this] { run(); });
}

worker_pool::~worker_pool() {
  {
    std::lock_guard guard{mtx_};
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    t.join();
}

void worker_pool::post(std::function<void()> job) {
  {
    std::lock_guard guard{mtx_};
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void worker_pool::run() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lk{mtx_};
      cv_.wait(lk, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty())
        return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

} // namespace service

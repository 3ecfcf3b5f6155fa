#pragma once

/// @file
/// A bounded blocking wait on a callback-based journal operation, for tests and tools.
///
/// The journal API never blocks; code running on a CAF scheduler thread must use it
/// asynchronously. Command-line tools, tests and benchmarks may instead park their own
/// thread until the callback fires:
///
/// ```cpp
/// auto res = annals::persistence::wait_for<append_result>(
///   [&](callback<append_result> done) { journal->append(req, std::move(done)); },
///   std::chrono::seconds{10});
/// if (!res)
///   std::cerr << annals::render(res.error()) << '\n';
/// ```

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "annals/error.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::persistence {

/// Calls `start` with a callback and blocks the calling thread until that callback runs or
/// `bound` passes, whichever comes first.
///
/// Returns the callback's value, or `annals::errc::timeout` if the bound passed first. A
/// late callback after a timeout is harmless: it writes into state that the caller has
/// already abandoned. Never call this on a thread that the journal needs in order to make
/// progress (a journal's own callback thread, or a CAF scheduler thread).
template <class T>
caf::expected<T> wait_for(std::function<void(callback<T>)> start, std::chrono::milliseconds bound) {
  struct shared_state {
    std::mutex mtx;
    std::condition_variable cv;
    std::optional<caf::expected<T>> value;
  };
  auto st = std::make_shared<shared_state>();
  start([st](caf::expected<T> res) {
    std::lock_guard guard{st->mtx};
    st->value.emplace(std::move(res));
    st->cv.notify_all();
  });
  std::unique_lock lk{st->mtx};
  if (!st->cv.wait_for(lk, bound, [&] { return st->value.has_value(); }))
    return make_error(errc::timeout, "no reply within " + std::to_string(bound.count()) + " ms");
  return std::move(*st->value);
}

} // namespace annals::persistence

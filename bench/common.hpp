#pragma once

// Helpers shared by the benchmarks: percentiles, machine load, SQLite file clean-up, a
// fatal exit with a message, and the loop that keeps a number of appends in flight.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

namespace bench {

[[noreturn]] inline void die(const std::string& what) {
  std::cerr << "bench: " << what << '\n';
  std::exit(1);
}

/// The `p`-quantile (0..1) of `v`, nearest rank below; 0 for an empty set.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg prints them.
inline std::string load_average() {
  std::ifstream in{"/proc/loadavg"};
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

/// Removes an SQLite file with its WAL and shared-memory files.
inline void remove_db(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"})
    std::filesystem::remove(path + suffix);
}

/// What `run_in_flight` measured.
struct in_flight_result {
  double seconds = 0;             ///< from the first submission to the last completion
  std::vector<double> latency_ms; ///< per operation, submission to completion
  std::uint64_t failed = 0;
};

namespace detail {

template <class Submit>
struct in_flight_driver;

/// The completion `run_in_flight` hands to `submit`.
template <class Submit>
struct in_flight_completion {
  in_flight_driver<Submit>* d;
  std::size_t i;
  void operator()(bool ok) const {
    d->done(i, ok);
  }
};

template <class Submit>
struct in_flight_driver {
  using clock_type = std::chrono::steady_clock;
  Submit* submit;
  std::size_t n;
  std::vector<clock_type::time_point> started;
  std::vector<double> latency_ms;
  std::mutex mtx;
  std::condition_variable cv;
  std::size_t next = 0;
  std::size_t completed = 0;
  std::uint64_t failed = 0;

  // Called with `mtx` held.
  void submit_locked() {
    auto i = next++;
    started[i] = clock_type::now();
    (*submit)(i, in_flight_completion<Submit>{this, i});
  }

  void done(std::size_t i, bool ok) {
    latency_ms[i] =
      std::chrono::duration<double, std::milli>(clock_type::now() - started[i]).count();
    std::lock_guard guard{mtx};
    if (!ok)
      ++failed;
    if (next < n)
      submit_locked();
    if (++completed == n)
      cv.notify_all();
  }
};

} // namespace detail

/// Runs operations 0..n-1 with at most `in_flight` outstanding: `submit(i, done)` starts
/// operation i and arranges for `done(ok)` to be called once when it completes, on any
/// other thread (not from within `submit`: the lock is held there). The next operation is submitted
/// from a completion, under one lock, so operations start in index order (what keeps the seqs of
/// one persistence id in order). `done` is a pointer and an index: it fits a `std::function`'s
/// inline storage, so no allocation per operation.
template <class Submit>
in_flight_result run_in_flight(std::size_t n, std::size_t in_flight, Submit submit) {
  using clock_type = std::chrono::steady_clock;
  in_flight_result out;
  if (n == 0)
    return out;
  detail::in_flight_driver<Submit> d{&submit, n, std::vector<clock_type::time_point>(n),
                                     std::vector<double>(n)};
  auto start = clock_type::now();
  {
    std::lock_guard guard{d.mtx};
    while (d.next < std::min(in_flight, n))
      d.submit_locked();
  }
  {
    std::unique_lock lk{d.mtx};
    d.cv.wait(lk, [&] { return d.completed == n; });
  }
  out.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  out.latency_ms = std::move(d.latency_ms);
  out.failed = d.failed;
  return out;
}

} // namespace bench

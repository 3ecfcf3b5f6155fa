// The counters the parts read: heap allocations (operator new, replaced here for the whole
// program), CPU seconds by thread group, and the resident set.

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <sstream>
#include <string>

#include <unistd.h>

#include "runtime.hpp"

std::atomic<std::uint64_t> annals::bench::runtime::allocation_count{0};
std::atomic<std::uint64_t> annals::bench::runtime::deallocation_count{0};

[[gnu::noinline]] void* operator new(std::size_t n) {
  annals::bench::runtime::allocation_count.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n))
    return p;
  throw std::bad_alloc{};
}

[[gnu::noinline]] void operator delete(void* p) noexcept {
  if (p != nullptr)
    annals::bench::runtime::deallocation_count.fetch_add(1, std::memory_order_relaxed);
  std::free(p);
}

[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept {
  if (p != nullptr)
    annals::bench::runtime::deallocation_count.fetch_add(1, std::memory_order_relaxed);
  std::free(p);
}

namespace annals::bench::runtime {

cpu_times cpu_now() {
  cpu_times out;
  out.allocations = allocation_count.load(std::memory_order_relaxed);
  static const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (const auto& entry : std::filesystem::directory_iterator{"/proc/self/task"}) {
    std::ifstream stat{entry.path() / "stat"};
    std::string line;
    std::getline(stat, line);
    auto open = line.find('(');
    auto close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos)
      continue;
    auto comm = line.substr(open + 1, close - open - 1);
    // Fields after the name: state is field 3; utime and stime are fields 14 and 15.
    std::istringstream rest{line.substr(close + 2)};
    std::string field;
    double utime = 0;
    double stime = 0;
    for (int k = 3; k <= 15 && rest >> field; ++k) {
      if (k == 14)
        utime = std::stod(field) / tick;
      if (k == 15)
        stime = std::stod(field) / tick;
    }
    // schedstat's first field is the thread's time on a CPU in ns (stat has 10 ms ticks).
    std::ifstream sched{entry.path() / "schedstat"};
    double run_ns = 0;
    auto t = (sched >> run_ns) ? run_ns / 1e9 : utime + stime;
    out.user += utime;
    out.sys += stime;
    if (comm == "annals-writer")
      out.writer += t;
    else if (comm == "annals-reader")
      out.readers += t;
    else if (comm == "caf.clock")
      out.clock += t;
    else
      out.other += t;
  }
  return out;
}

long rss_bytes() {
  std::ifstream in{"/proc/self/statm"};
  long size = 0;
  long resident = 0;
  in >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

} // namespace annals::bench::runtime

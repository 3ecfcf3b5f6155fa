// A deliberate data race for the ThreadSanitizer stage of .ci/run: two std::threads
// increment one plain int without synchronization. The stage runs this program with the
// same TSAN_OPTIONS and suppressions (.ci/tsan.supp) as the test suites and requires a
// report naming racy_increment, which shows the suppressions do not hide a race confined to
// code of ours. A CAF actor system runs meanwhile, so that libcaf_core is loaded and its
// threads are live, as in the suites. Built only in the TSan stage; never part of a suite.

#include <chrono>
#include <cstdio>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

namespace {

int counter = 0; // the racy variable

[[gnu::noinline]] void racy_increment(int times) {
  for (int i = 0; i < times; ++i)
    counter = counter + 1;
}

} // namespace

int main() {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::thread first{racy_increment, 100000};
  std::thread second{racy_increment, 100000};
  first.join();
  second.join();
  std::printf("tsan_canary: counter = %d; ThreadSanitizer should have reported a race on it\n",
              counter);
  return 0;
}

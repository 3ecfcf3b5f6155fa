// A deliberate data race for the ThreadSanitizer stage of .ci/run: two std::threads
// increment one plain int without synchronization. The stage runs this program with the
// same TSAN_OPTIONS and suppressions (.ci/tsan.supp) as the test suites and requires a
// report naming racy_increment, which shows the suppressions do not hide a race confined to
// code of ours. A CAF actor system runs meanwhile, so that libcaf_core is loaded and its
// threads are live, as in the suites. Built only in the TSan stage; never part of a suite.
//
// TSan reports a race only when it can restore the stack of the earlier access, which it
// may not once that access's thread has exited. So both threads meet before they race and
// again before either returns, through relaxed atomics (which TSan does not count as
// synchronization), and every increment goes through a volatile access so the optimizer
// cannot fold the loop into one store.

#include <atomic>
#include <cstdio>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

namespace {

int counter = 0; // the racy variable
std::atomic<int> arrived{0};
std::atomic<int> done{0};

void wait_for_both(std::atomic<int>& gate) {
  gate.fetch_add(1, std::memory_order_relaxed);
  while (gate.load(std::memory_order_relaxed) < 2)
    std::this_thread::yield();
}

[[gnu::noinline]] void racy_increment(int times) {
  volatile int* target = &counter;
  for (int i = 0; i < times; ++i)
    *target = *target + 1;
}

void worker(int times) {
  wait_for_both(arrived);
  racy_increment(times);
  wait_for_both(done);
}

} // namespace

int main() {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::thread first{worker, 100000};
  std::thread second{worker, 100000};
  first.join();
  second.join();
  std::printf("tsan_canary: counter = %d; ThreadSanitizer should have reported a race on it\n",
              counter);
  return 0;
}

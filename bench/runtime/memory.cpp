// Memory (run first, on a fresh heap): RSS, malloc's bytes in use and live heap blocks
// before and after activating 10,000 accounts (one `get_balance` each, on a memory journal
// filled beforehand) that then sit idle until their recovery timers have fired; then what
// they leave behind once passivated.

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <malloc.h>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "annals/persistence/memory_journal.hpp"

#include "drive.hpp"
#include "runtime.hpp"

namespace annals::bench::runtime {

namespace {

constexpr std::size_t memory_aggregates = 10'000;

long settled_rss() {
  malloc_trim(0);
  return rss_bytes();
}

} // namespace

memory_figures run_memory(caf::actor_system& sys, std::size_t in_flight) {
  memory_figures out;
  out.aggregates = memory_aggregates;
  // Account 0 warms the path up (first spawn, CAF's per-thread caches).
  workload w{1 + memory_aggregates, 0};
  std::vector<std::string> batch(w.ids.begin() + 1, w.ids.end());
  auto baseline = sys.registry().running();
  // The journal holds every account's `opened` event before the first reading, so that
  // the growth is the actors' and the registry's alone.
  auto j = std::make_shared<memory_journal>();
  for (std::size_t k = 0; k < w.ids.size(); ++k) {
    append_request req{w.pids[k], 0, {codec::encode(bank::opened{w.owners[k]})}, {}};
    j->append(std::move(req), [](caf::expected<append_result> res) {
      if (!res)
        die("memory journal: " + annals::render(res.error()));
    });
  }
  auto heap_in_use = [] { return static_cast<double>(mallinfo2().uordblks); };
  {
    host h{sys, j};
    if (auto err = h.register_aggregate<bank::account>())
      die(annals::render(err));
    if (!h.ask<bank::account>(w.ids[0], bank::get_balance{}))
      die("warm-up get_balance failed");
    // The timer of the warm-up's recovery read has fired by now (see below).
    std::this_thread::sleep_for(annals::actors::aggregate_options{}.journal_timeout
                                + std::chrono::milliseconds{500});
    out.rss_before = settled_rss();
    auto heap_before = heap_in_use();
    auto blocks_before = live_blocks();
    auto allocations_before = allocation_count.load();
    auto res = drive(sys, h, batch, batch.size(), in_flight,
                     [](std::size_t) { return bank::get_balance{}; });
    if (res.failed > 0)
      die("activating accounts: " + annals::render(res.first_error));
    res = drive_result{};
    auto allocations = allocation_count.load() - allocations_before;
    // Idle: each recovery armed a `journal_timeout` timer (a pending message in CAF's
    // clock) that fires and is dropped only after that time; wait it out.
    std::this_thread::sleep_for(annals::actors::aggregate_options{}.journal_timeout
                                + std::chrono::milliseconds{500});
    out.rss_after = settled_rss();
    auto heap_after = heap_in_use();
    auto blocks_after = live_blocks();
    auto live = h.live_count();
    if (!live)
      die(annals::render(live.error()));
    out.live = *live;
    auto n = static_cast<double>(memory_aggregates);
    out.bytes_per_aggregate = static_cast<double>(out.rss_after - out.rss_before) / n;
    out.heap_bytes_per_aggregate = (heap_after - heap_before) / n;
    out.allocations_per_aggregate = static_cast<double>(allocations) / n;
    out.live_allocations_per_aggregate = static_cast<double>(blocks_after - blocks_before) / n;
    // Passivate every aggregate (drain stops them as idle passivation does): what stays
    // behind is the registry's and the host's, which should be nothing per aggregate.
    if (auto err = h.drain())
      die("drain: " + annals::render(err));
    await_actors(sys, baseline + 1); // the registry is left
    out.passivated_heap_bytes_per_aggregate = (heap_in_use() - heap_before) / n;
    out.passivated_allocations_per_aggregate =
      static_cast<double>(live_blocks() - blocks_before) / n;
  }
  await_actors(sys, baseline);
  // The state as an application would count it: the struct plus the owner's heap buffer
  // (none here: `owner-000042` fits the small-string buffer).
  bank::account_state st;
  st.owner = w.owners[0];
  out.state_bytes =
    sizeof(bank::account_state)
    + (st.owner.capacity() > std::string{}.capacity() ? st.owner.capacity() + 1 : 0);
  out.overhead_bytes = out.bytes_per_aggregate - static_cast<double>(out.state_bytes);
  return out;
}

} // namespace annals::bench::runtime

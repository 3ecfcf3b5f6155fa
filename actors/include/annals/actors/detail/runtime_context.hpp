#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "annals/actors/options.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::actors::detail {

/// Counters of one host, read by `host::metrics()`.
struct counters {
  std::atomic<std::uint64_t> commands_handled{0};
  std::atomic<std::uint64_t> commands_failed{0};
  std::atomic<std::uint64_t> events_persisted{0};
  std::atomic<std::uint64_t> recoveries{0};
  std::atomic<std::uint64_t> events_replayed{0};
  std::atomic<std::uint64_t> snapshots_written{0};
  std::atomic<std::uint64_t> passivations{0};
  std::atomic<std::uint64_t> duplicates{0};
  std::atomic<std::uint64_t> commands_pipelined{0};
};

/// What every aggregate actor of one type shares.
struct runtime_context {
  std::string type_name;
  persistence::journal_ptr journal;
  persistence::snapshot_store_ptr snapshots; // may be null
  aggregate_options options;
  std::function<void(std::string_view)> warn;
  std::shared_ptr<counters> stats;
};

} // namespace annals::actors::detail

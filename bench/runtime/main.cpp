// bench_runtime: the aggregate runtime end to end (ask -> decide -> persist -> apply ->
// reply) on a SQLite journal, beside raw journal appends of the same events in the same
// run; where the time goes; projection lag under that load; memory per live idle aggregate.
//
//   bench_runtime [--commands N] [--in-flight N] [--rounds N] [--dir PATH] [--json]
//                 [--ids N] [--only e2e|breakdown|lag|memory|recovery|peers]
//                 [--recovery-ids N] [--recovery-events N]
//
// Memory (first, on a fresh heap): RSS, malloc's bytes in use and live heap blocks before
// and after activating 10,000 accounts (one `get_balance` each, on a memory journal filled
// beforehand) that then sit idle until their recovery timers have fired; then what they
// leave behind once passivated (`host::drain`).
// End to end: N `bank::deposit`s (default 50,000) round-robin over 1, 100 and 10,000
// accounts, each opened first (not timed), with `--in-flight` commands outstanding from one
// driver actor (`host::request`). Durability full. The raw case appends the same events (same
// persistence ids, sequence numbers and JSON payloads, accounts opened first) straight to
// a fresh `sqlite_journal` with as many in flight. The two alternate and each keeps its
// best of `--rounds`, like bench_journal. CPU per command is split by thread.
// Breakdown: the same closed loop over 10,000 targets with one more piece each step: plain
// CAF request/response, with a request timeout, the runtime without persist, persist into
// a memory journal; CPU, kernel CPU, CAF timer-thread CPU and heap allocations per command.
// Projection lag: the 10,000-account case once more with an at-least-once projection
// (in-memory handler that decodes each event and folds balances) attached; lag = from the
// commit (a commit listener subscribed before the projection's) to the handler's call.
//
// Recovery: the host activating accounts (spawn, one read per stream, decode, fold) next to
// reading the same streams straight from the journal, and an ordered scan: 1,000 accounts x
// 21 events (the peer's workload), `--recovery-ids` x 20 (100,000), one account with
// `--recovery-events` (1,000,000) with and without a snapshot (recovery.cpp says how).
// Peers (only with `--only peers`, see bench/peers): the peer's command workload through
// the in-process API, then a replay (peers.cpp).
//
// The parts live beside this file: memory.cpp, end_to_end.cpp, breakdown.cpp,
// projection_lag.cpp, recovery.cpp, peers.cpp; report.cpp prints them; counters.cpp counts
// CPU and allocations.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/system.hpp"

#include "runtime.hpp"

namespace annals::bench::runtime {
namespace {

/// Runs the parts in their order, printing each one's text as it ends.
results run_all(caf::actor_system& sys, const config& cfg, const std::filesystem::path& dir) {
  results r;
  // First, while the heap holds nothing freed that the aggregates could reuse.
  if (wants(cfg, "memory"))
    r.memory = run_memory(sys, cfg.in_flight);
  for (std::size_t ids : cfg.ids) {
    if (!wants(cfg, "e2e") && !(ids == 10'000 && wants(cfg, "breakdown")))
      continue;
    auto fig = run_end_to_end(sys, cfg, dir, ids);
    if (!cfg.json)
      print_end_to_end(fig);
    std::fflush(stdout);
    r.commands.push_back(fig);
  }
  if (wants(cfg, "breakdown")) {
    const command_figures* big = nullptr;
    for (const auto& fig : r.commands)
      if (fig.ids == 10'000)
        big = &fig;
    r.breakdown = run_breakdown(sys, commands_for(cfg, 10'000), cfg.in_flight, big);
    if (!cfg.json)
      print_breakdown(r.breakdown, cfg.in_flight);
  }
  if (wants(cfg, "lag")) {
    r.lag = run_projection_lag(sys, cfg, dir);
    if (!cfg.json)
      print_projection_lag(r.lag);
  }
  if (wants(cfg, "recovery"))
    r.recovery = run_recovery(sys, cfg, dir);
  if (wants(cfg, "peers")) {
    r.peers = run_peers(sys, cfg, dir);
    if (!cfg.json)
      print_peers(*r.peers);
  }
  if (!cfg.json && wants(cfg, "memory"))
    print_memory(r.memory);
  return r;
}

int run(int argc, char** argv) {
  config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        die("missing value for " + arg);
      return argv[++i];
    };
    if (arg == "--commands")
      cfg.commands = std::stoul(value());
    else if (arg == "--in-flight")
      cfg.in_flight = std::stoul(value());
    else if (arg == "--rounds")
      cfg.rounds = std::max<std::size_t>(std::stoul(value()), 1);
    else if (arg == "--dir")
      cfg.dir = value();
    else if (arg == "--json")
      cfg.json = true;
    else if (arg == "--ids")
      cfg.ids = {std::stoul(value())};
    else if (arg == "--only")
      cfg.only = value();
    else if (arg == "--recovery-ids")
      cfg.recovery_ids = std::stoul(value());
    else if (arg == "--recovery-events")
      cfg.recovery_events = std::stoul(value());
    else
      die("usage: bench_runtime [--commands N] [--in-flight N] [--rounds N] [--dir PATH] "
          "[--json] [--ids N] [--only e2e|breakdown|lag|memory|recovery|peers] "
          "[--recovery-ids N] [--recovery-events N]");
  }
  if (cfg.commands == 0 || cfg.in_flight == 0)
    die("--commands and --in-flight must be positive");
  std::filesystem::path dir;
  if (cfg.dir.empty())
    dir = std::filesystem::temp_directory_path()
          / ("annals-bench-runtime-" + std::to_string(std::random_device{}()));
  else
    dir = cfg.dir;
  std::filesystem::create_directories(dir);
  auto load_before = load_average();
  auto started = clock_type::now();
  results r;
  std::size_t threads = 0;
  {
    caf::actor_system_config sys_cfg;
    annals::actors::configure(sys_cfg);
    caf::actor_system sys{sys_cfg};
    threads = caf::get_or(sys_cfg, "scheduler.max-threads", std::size_t{0});
    r = run_all(sys, cfg, dir);
  } // every host is gone by now; the system waits for the last actors here
  auto total_s = ms_between(started, clock_type::now()) / 1000.0;
  if (cfg.dir.empty())
    std::filesystem::remove_all(dir);
  run_facts facts{load_before, load_average(), threads, total_s};
  print_summary(cfg, r, facts);
  for (const auto& fig : r.commands)
    if (fig.failed > 0)
      die(std::to_string(fig.failed) + " commands or appends failed");
  return 0;
}

} // namespace
} // namespace annals::bench::runtime

int main(int argc, char** argv) {
  return annals::bench::runtime::run(argc, argv);
}

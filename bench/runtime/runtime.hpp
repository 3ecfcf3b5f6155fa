#pragma once

// What the parts of bench_runtime share: the flags, the figures each part yields, the CPU
// and allocation counters, the workload, and the declarations of the parts.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <caf/actor_system.hpp>

#include "account/account.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "annals/persistence_id.hpp"

#include "../common.hpp"

namespace annals::bench::runtime {

using ::bench::die;
using ::bench::load_average;
using ::bench::percentile;
using ::bench::remove_db;

using namespace annals::persistence;
using clock_type = std::chrono::steady_clock;
using codec = bank::account::codec_type;

struct config {
  std::size_t commands = 50'000;
  std::size_t in_flight = 1'000;
  std::size_t rounds = 2;
  std::string dir;
  bool json = false;
  std::vector<std::size_t> ids{1, 100, 10'000};
  std::string only; ///< run one part: e2e, breakdown, lag, memory, recovery, peers (empty:
                    ///< all but peers)
  std::size_t recovery_ids = 100'000;      ///< accounts of the "many" recovery case (0: skip)
  std::size_t recovery_events = 1'000'000; ///< events of the one-account case (0: skip)
};

/// `peers` runs only when asked for (`--only peers`, what bench/peers does).
inline bool wants(const config& cfg, std::string_view part) {
  return cfg.only.empty() ? part != "peers" : cfg.only == part;
}

/// Reads (host activations or direct reads) in flight during recovery, as in the peer's
/// workload.
inline constexpr std::size_t recovery_in_flight = 64;

/// The commands of one id count. The same for all: one aggregate pipelines its commands
/// (`aggregate_options::pipeline_depth`), so it no longer commits once per command.
inline std::size_t commands_for(const config& cfg, std::size_t) {
  return cfg.commands;
}

// -- counters (counters.cpp) --------------------------------------------------------------

/// Heap allocations through operator new, in every thread and library (CAF, the runtime,
/// the journal; not SQLite's own malloc calls).
extern std::atomic<std::uint64_t> allocation_count;
/// Heap blocks released through operator delete (null pointers not counted).
extern std::atomic<std::uint64_t> deallocation_count;

/// Heap blocks allocated through operator new and not yet released.
inline std::int64_t live_blocks() {
  return static_cast<std::int64_t>(allocation_count.load())
         - static_cast<std::int64_t>(deallocation_count.load());
}

/// CPU seconds of this process's threads, by group: the journal's writer, its readers,
/// CAF's timer thread, everything else (CAF's scheduler threads, detached actors, main).
struct cpu_times {
  std::uint64_t allocations = 0;
  double writer = 0;
  double readers = 0;
  double clock = 0;
  double other = 0;
  double user = 0;
  double sys = 0;

  double total() const {
    return writer + readers + clock + other;
  }
  cpu_times operator-(const cpu_times& x) const {
    return {allocations - x.allocations,
            writer - x.writer,
            readers - x.readers,
            clock - x.clock,
            other - x.other,
            user - x.user,
            sys - x.sys};
  }
};

cpu_times cpu_now();

/// This process's resident set in bytes.
long rss_bytes();

inline double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// -- figures ------------------------------------------------------------------------------

/// One id count: the runtime and the raw journal on the same events.
struct command_figures {
  std::size_t ids = 0;
  double commands_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  std::uint64_t transactions = 0;
  double raw_events_per_s = 0;
  double raw_p50_ms = 0;
  double raw_p99_ms = 0;
  std::uint64_t raw_transactions = 0;
  std::uint64_t failed = 0;
  double open_s = 0; ///< activating and opening every account (not timed above)
  std::size_t commands = 0;
  cpu_times cpu;     ///< CPU seconds used while the runtime's commands ran
  cpu_times raw_cpu; ///< CPU seconds used while the raw appends ran
  double seconds = 0;
  double raw_seconds = 0;
};

struct lag_figures {
  std::size_t ids = 0;
  double commands_per_s = 0; ///< with the projection attached
  double p50_ms = 0;         ///< from the commit listener to the handler
  double p99_ms = 0;
  double max_ms = 0;
  double ts_p50_ms = 0; ///< from the journal's `timestamp_us` (taken before the fsync)
  double ts_p99_ms = 0;
  std::uint64_t events = 0;
  std::uint64_t live_dropped = 0;
};

struct memory_figures {
  std::size_t aggregates = 0;
  std::size_t live = 0; ///< live aggregates at the end (with the warm-up one)
  long rss_before = 0;
  long rss_after = 0;
  double bytes_per_aggregate = 0;       ///< RSS growth per aggregate
  double heap_bytes_per_aggregate = 0;  ///< growth of malloc's bytes in use, per aggregate
  double allocations_per_aggregate = 0; ///< operator new calls while activating, per aggregate
  /// Heap blocks (operator new minus operator delete) a live idle aggregate holds.
  double live_allocations_per_aggregate = 0;
  /// After every aggregate was passivated (`host::drain`): what each one left behind, in
  /// malloc's bytes in use and in heap blocks, against the reading before activation.
  double passivated_heap_bytes_per_aggregate = 0;
  double passivated_allocations_per_aggregate = 0;
  std::size_t state_bytes = 0;
  double overhead_bytes = 0; ///< `bytes_per_aggregate - state_bytes`
};

/// One step of the breakdown: the same closed loop (10,000 targets, `in_flight`
/// outstanding) with one more piece of the runtime each time.
struct step_figures {
  std::string name;
  double per_s = 0;
  double cpu_us = 0;      ///< CPU microseconds per command, all threads of the process
  double sys_us = 0;      ///< of which in the kernel
  double clock_us = 0;    ///< of which on CAF's timer thread
  double allocations = 0; ///< operator new calls per command
};

/// One way of reading many streams: through the host (activations) or straight from the
/// journal.
struct replay_run {
  std::uint64_t events = 0;
  double seconds = 0;
  double events_per_s = 0;
  double p50_ms = 0; ///< per activation or stream read
  double p99_ms = 0;
  double max_ms = 0;
  cpu_times cpu;
};

/// One recovery case: `aggregates` x `events_per_aggregate` events, read through the host
/// and straight from the journal, and scanned in order.
struct recovery_case {
  std::string name; ///< "peer" (1,000 x 21) or "many" (`--recovery-ids` x 20)
  std::size_t aggregates = 0;
  std::size_t events_per_aggregate = 0;
  replay_run host;         ///< best of `--rounds`
  replay_run direct;       ///< best of `--rounds`
  replay_run host_first;   ///< the first round: the process's first activations
  replay_run direct_first; ///< the first round
  double scan_rows_per_s = 0;
  double write_s = 0; ///< writing the journal (not timed above; 0 for the peer case)
};

/// A fresh host serving its first command to the one big account.
struct one_stream_run {
  double first_command_ms = 0;
  std::uint64_t events = 0; ///< replayed (the host's `events_replayed`)
  double events_per_s = 0;
};

struct one_stream_figures {
  std::size_t events = 0;
  double write_s = 0;
  double direct_events_per_s = 0; ///< `read_stream` page by page, cold
  double scan_rows_per_s = 0;     ///< `read_all`, cold
  one_stream_run without_snapshot;
  one_stream_run with_snapshot;
};

struct recovery_figures {
  std::vector<recovery_case> cases;
  one_stream_figures one;
};

/// annals on the peer's workload (peers.cpp): commands through the in-process API, then a
/// replay of every account.
struct peers_figures {
  std::size_t accounts = 0;
  std::size_t commands = 0;
  double commands_per_s = 0;
  double events_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  std::uint64_t conflicts = 0;
  replay_run replay;
  replay_run direct;
};

struct results {
  std::vector<command_figures> commands;
  std::vector<step_figures> breakdown;
  lag_figures lag;
  memory_figures memory;
  std::optional<recovery_figures> recovery;
  std::optional<peers_figures> peers;
};

/// What the report adds to the figures: the run's conditions.
struct run_facts {
  std::string load_before;
  std::string load_after;
  std::size_t threads = 0; ///< CAF scheduler threads
  double seconds = 0;      ///< the whole run
};

// -- the workload -------------------------------------------------------------------------

/// The workload: which account each command goes to, and its amount.
struct workload {
  std::vector<std::string> ids;  ///< `acc-000042`
  std::vector<std::string> pids; ///< `account|acc-000042`
  std::vector<std::string> owners;
  std::vector<std::int64_t> cents; ///< per command; command i goes to ids[i % ids.size()]

  workload(std::size_t n_ids, std::size_t commands) {
    std::mt19937_64 rng{42};
    for (std::size_t i = 0; i < n_ids; ++i) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "acc-%06zu", i);
      ids.emplace_back(buf);
      pids.push_back(annals::persistence_id{bank::account::name, buf}.str());
      std::snprintf(buf, sizeof(buf), "owner-%06zu", i);
      owners.emplace_back(buf);
    }
    cents.reserve(commands);
    for (std::size_t i = 0; i < commands; ++i)
      cents.push_back(static_cast<std::int64_t>(rng() % 100'000) + 1);
  }
};

/// Waits until only `baseline` actors run (the host's aggregates have ended).
inline void await_actors(caf::actor_system& sys, std::size_t baseline) {
  sys.registry().await_running_count_equal(baseline);
}

// -- the parts ----------------------------------------------------------------------------

/// The runtime's figures for one run of the workload (end_to_end.cpp).
struct runtime_run {
  double commands_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  std::uint64_t transactions = 0;
  std::uint64_t failed = 0;
  double open_s = 0;
  double seconds = 0;
  cpu_times cpu;
  std::optional<lag_figures> lag;
};

/// The runtime on a fresh SQLite journal at `path`: the accounts opened, then the
/// deposits timed; with a projection attached when `with_projection` (its lag in `lag`).
runtime_run run_runtime(caf::actor_system& sys, const std::string& path, const workload& w,
                        std::size_t in_flight, bool with_projection);

/// `--rounds` of the runtime and the raw journal on `ids` accounts, best of each.
command_figures run_end_to_end(caf::actor_system& sys, const config& cfg,
                               const std::filesystem::path& dir, std::size_t ids);

/// Memory per live idle aggregate (memory.cpp).
memory_figures run_memory(caf::actor_system& sys, std::size_t in_flight);

/// Where the time goes (breakdown.cpp); `big`: the 10,000-id end-to-end case, if it ran.
std::vector<step_figures> run_breakdown(caf::actor_system& sys, std::size_t n,
                                        std::size_t in_flight, const command_figures* big);

/// Projection lag on the 10,000-account case (projection_lag.cpp).
lag_figures run_projection_lag(caf::actor_system& sys, const config& cfg,
                               const std::filesystem::path& dir);

/// Recovery (recovery.cpp): the peer case, the many-accounts case, the one big account.
recovery_figures run_recovery(caf::actor_system& sys, const config& cfg,
                              const std::filesystem::path& dir);

/// Activates every account of `ids` on a fresh host over the journal at `path` (one
/// `get_balance` each, `in_flight` outstanding).
replay_run replay_through_host(caf::actor_system& sys, const std::string& path,
                               const std::vector<std::string>& ids, std::size_t in_flight);

/// Reads every stream of `pids` straight from a freshly opened journal at `path`.
replay_run read_streams_direct(const std::string& path, const std::vector<std::string>& pids,
                               std::size_t in_flight);

/// Scans the journal at `path` in offset order; the rows read in `rows` if not null.
double scan_rows_per_s(const std::string& path, std::uint64_t* rows);

/// The peer's workload through the in-process API (peers.cpp).
peers_figures run_peers(caf::actor_system& sys, const config& cfg,
                        const std::filesystem::path& dir);

/// Printing (report.cpp): each part's text line(s) as it ends, then the targets and the
/// run's conditions, or everything as one JSON object.
void print_end_to_end(const command_figures& fig);
void print_breakdown(const std::vector<step_figures>& steps, std::size_t in_flight);
void print_projection_lag(const lag_figures& lag);
void print_memory(const memory_figures& memory);
void print_recovery_case(const recovery_case& c);
void print_one_stream(const one_stream_figures& one);
void print_peers(const peers_figures& p);
void print_summary(const config& cfg, const results& r, const run_facts& facts);

} // namespace annals::bench::runtime

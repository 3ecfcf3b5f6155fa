// Printing: each part's lines as text, the targets and the run's conditions, or every
// figure as one JSON object (`--json`).

#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "runtime.hpp"

namespace annals::bench::runtime {

namespace {

boost::json::object cpu_json(const cpu_times& c) {
  return {{"writer", c.writer}, {"readers", c.readers},
          {"clock", c.clock},   {"other", c.other},
          {"user", c.user},     {"sys", c.sys},
          {"total", c.total()}, {"allocations", c.allocations}};
}

boost::json::object replay_json(const replay_run& r) {
  return {{"events", r.events},      {"seconds", r.seconds}, {"events_per_s", r.events_per_s},
          {"p50_ms", r.p50_ms},      {"p99_ms", r.p99_ms},   {"max_ms", r.max_ms},
          {"cpu_s", cpu_json(r.cpu)}};
}

boost::json::object one_run_json(const one_stream_run& r) {
  return {{"first_command_ms", r.first_command_ms},
          {"events_replayed", r.events},
          {"events_per_s", r.events_per_s}};
}

} // namespace

void print_recovery_case(const recovery_case& c) {
  std::printf("recovery %zu x %zu events (%s): host %8.0f ev/s (%.2f s, %6.0f activations/s) | "
              "direct read_stream %8.0f ev/s | scan %8.0f rows/s | host / direct %.2f\n",
              c.aggregates, c.events_per_aggregate, c.name.c_str(), c.host.events_per_s,
              c.host.seconds, static_cast<double>(c.aggregates) / c.host.seconds,
              c.direct.events_per_s, c.scan_rows_per_s,
              c.host.events_per_s / c.direct.events_per_s);
  std::printf("           host: p50 %.2f ms  p99 %.2f ms  max %.2f ms per activation, CPU %.2f s "
              "(readers %.2f, other %.2f) | direct: p50 %.2f ms  p99 %.2f ms  max %.2f ms per "
              "stream, CPU %.2f s (readers %.2f, other %.2f)\n",
              c.host.p50_ms, c.host.p99_ms, c.host.max_ms, c.host.cpu.total(), c.host.cpu.readers,
              c.host.cpu.other, c.direct.p50_ms, c.direct.p99_ms, c.direct.max_ms,
              c.direct.cpu.total(), c.direct.cpu.readers, c.direct.cpu.other);
  std::printf("           first round: host %.0f ev/s, direct %.0f ev/s (ratio %.2f)\n",
              c.host_first.events_per_s, c.direct_first.events_per_s,
              c.host_first.events_per_s / c.direct_first.events_per_s);
}

void print_one_stream(const one_stream_figures& one) {
  std::printf("recovery 1 x %zu events (cold: reopened, fadvise DONTNEED): first command "
              "without snapshot %.0f ms (%.0f ev/s replayed), with snapshot %.1f ms (%llu "
              "events read) | direct read_stream %.0f ev/s | scan %.0f rows/s\n",
              one.events, one.without_snapshot.first_command_ms, one.without_snapshot.events_per_s,
              one.with_snapshot.first_command_ms,
              static_cast<unsigned long long>(one.with_snapshot.events), one.direct_events_per_s,
              one.scan_rows_per_s);
}

void print_peers(const peers_figures& p) {
  std::printf("peers: %zu accounts, %zu commands, 64 in flight: %.0f cmd/s, %.0f ev/s, p50 %.2f "
              "ms, p99 %.2f ms, max %.2f ms, %llu failed appends | replay %.0f ev/s (direct "
              "%.0f ev/s, ratio %.2f)\n",
              p.accounts, p.commands, p.commands_per_s, p.events_per_s, p.p50_ms, p.p99_ms,
              p.max_ms, static_cast<unsigned long long>(p.conflicts), p.replay.events_per_s,
              p.direct.events_per_s, p.replay.events_per_s / p.direct.events_per_s);
}

void print_end_to_end(const command_figures& fig) {
  std::printf("%6zu ids %7zu cmds | runtime %8.0f cmd/s  p50 %7.2f ms  p99 %7.2f ms  "
              "%5llu commits | raw journal %8.0f ev/s  p50 %6.2f ms  p99 %6.2f ms  "
              "%4llu commits | ratio %5.2f\n",
              fig.ids, fig.commands, fig.commands_per_s, fig.p50_ms, fig.p99_ms,
              static_cast<unsigned long long>(fig.transactions), fig.raw_events_per_s,
              fig.raw_p50_ms, fig.raw_p99_ms, static_cast<unsigned long long>(fig.raw_transactions),
              fig.commands_per_s / fig.raw_events_per_s);
  auto per_cmd = [](double s, std::size_t n) { return s * 1e6 / static_cast<double>(n); };
  std::printf("           CPU us per command: runtime %6.1f (writer %5.1f, readers %4.1f, "
              "CAF timer thread %4.1f, CAF workers+other %5.1f; sys %5.1f) on %.2f s wall "
              "| raw %5.1f (writer %5.1f; sys %5.1f) on %.2f s wall\n",
              per_cmd(fig.cpu.total(), fig.commands), per_cmd(fig.cpu.writer, fig.commands),
              per_cmd(fig.cpu.readers, fig.commands), per_cmd(fig.cpu.clock, fig.commands),
              per_cmd(fig.cpu.other, fig.commands), per_cmd(fig.cpu.sys, fig.commands), fig.seconds,
              per_cmd(fig.raw_cpu.total(), fig.commands), per_cmd(fig.raw_cpu.writer, fig.commands),
              per_cmd(fig.raw_cpu.sys, fig.commands), fig.raw_seconds);
}

void print_breakdown(const std::vector<step_figures>& steps, std::size_t in_flight) {
  std::printf("where the time goes (10000 targets, %zu in flight):\n", in_flight);
  for (const auto& step : steps)
    std::printf("  %-58s %8.0f /s  CPU %5.1f us each (sys %4.1f, timer thread %4.1f)  "
                "%5.1f allocations\n",
                step.name.c_str(), step.per_s, step.cpu_us, step.sys_us, step.clock_us,
                step.allocations);
}

void print_projection_lag(const lag_figures& lag) {
  std::printf("projection lag (10000 ids, %zu events, runtime at %.0f cmd/s): p50 %.2f ms"
              "  p99 %.2f ms  max %.2f ms  | from journal timestamp: p50 %.2f ms  "
              "p99 %.2f ms  (live commits dropped: %llu)\n",
              static_cast<std::size_t>(lag.events), lag.commands_per_s, lag.p50_ms, lag.p99_ms,
              lag.max_ms, lag.ts_p50_ms, lag.ts_p99_ms,
              static_cast<unsigned long long>(lag.live_dropped));
}

void print_memory(const memory_figures& memory) {
  std::printf("memory   %zu live idle aggregates: %.0f bytes each (RSS %.1f -> %.1f MiB); "
              "malloc in use %.0f bytes each; %.1f allocations each to activate, %.1f heap "
              "blocks each held; state %zu bytes; framework overhead %.0f bytes\n"
              "         passivated: %.0f bytes and %.2f heap blocks left behind each\n",
              memory.aggregates, memory.bytes_per_aggregate,
              static_cast<double>(memory.rss_before) / 1048576.0,
              static_cast<double>(memory.rss_after) / 1048576.0, memory.heap_bytes_per_aggregate,
              memory.allocations_per_aggregate, memory.live_allocations_per_aggregate,
              memory.state_bytes, memory.overhead_bytes, memory.passivated_heap_bytes_per_aggregate,
              memory.passivated_allocations_per_aggregate);
}

void print_summary(const config& cfg, const results& r, const run_facts& facts) {
  // Each target: met, not met, or not measured in this run (`--only`, `--ids`).
  std::optional<double> big_ratio;
  for (const auto& fig : r.commands)
    if (fig.ids == 10'000)
      big_ratio = fig.commands_per_s / fig.raw_events_per_s;
  std::optional<bool> ratio_met;
  std::optional<bool> ratio_07_met;
  if (big_ratio) {
    ratio_met = *big_ratio >= 0.5;
    ratio_07_met = *big_ratio >= 0.7;
  }
  // Issue 16's targets: one aggregate at journal speed (pipelining), 100 aggregates at half
  // the raw journal.
  std::optional<double> one_rate;
  std::optional<double> one_p99;
  std::optional<bool> one_met;
  std::optional<double> hundred_ratio;
  std::optional<bool> hundred_met;
  for (const auto& fig : r.commands) {
    if (fig.ids == 1) {
      one_rate = fig.commands_per_s;
      one_p99 = fig.p99_ms;
      one_met = fig.commands_per_s >= 50'000 && fig.p99_ms < 50.0;
    }
    if (fig.ids == 100) {
      hundred_ratio = fig.commands_per_s / fig.raw_events_per_s;
      hundred_met = *hundred_ratio >= 0.5;
    }
  }
  std::optional<bool> lag_met;
  if (r.lag.events > 0)
    lag_met = r.lag.p99_ms < 100.0;
  std::optional<bool> memory_met;
  if (r.memory.live > 0)
    memory_met = r.memory.overhead_bytes <= 2048.0;
  std::optional<double> recovery_ratio;
  if (r.recovery && !r.recovery->cases.empty())
    recovery_ratio =
      r.recovery->cases.front().host.events_per_s / r.recovery->cases.front().direct.events_per_s;
  std::optional<bool> recovery_met;
  if (recovery_ratio)
    recovery_met = *recovery_ratio >= 0.7;
  auto verdict = [](const std::optional<bool>& met) {
    return !met ? "not measured" : *met ? "met" : "NOT met";
  };
  auto verdict_json = [](const std::optional<bool>& met) -> boost::json::value {
    if (!met)
      return nullptr;
    return *met;
  };
  if (cfg.json) {
    boost::json::object obj;
    obj["commands"] = cfg.commands;
    obj["in_flight"] = cfg.in_flight;
    obj["rounds"] = cfg.rounds;
    obj["durability"] = "full";
    obj["scheduler_threads"] = facts.threads;
    obj["cores"] = std::thread::hardware_concurrency();
    boost::json::array arr;
    for (const auto& fig : r.commands) {
      arr.push_back(boost::json::object{
        {"ids", fig.ids},
        {"commands_per_s", fig.commands_per_s},
        {"p50_ms", fig.p50_ms},
        {"p99_ms", fig.p99_ms},
        {"max_ms", fig.max_ms},
        {"transactions", fig.transactions},
        {"raw_events_per_s", fig.raw_events_per_s},
        {"raw_p50_ms", fig.raw_p50_ms},
        {"raw_p99_ms", fig.raw_p99_ms},
        {"raw_transactions", fig.raw_transactions},
        {"ratio", fig.commands_per_s / fig.raw_events_per_s},
        {"open_s", fig.open_s},
        {"failed", fig.failed},
        {"commands", fig.commands},
        {"seconds", fig.seconds},
        {"raw_seconds", fig.raw_seconds},
        {"cpu_s", cpu_json(fig.cpu)},
        {"raw_cpu_s", cpu_json(fig.raw_cpu)},
      });
    }
    obj["end_to_end"] = std::move(arr);
    boost::json::array steps;
    for (const auto& step : r.breakdown)
      steps.push_back(boost::json::object{{"name", step.name},
                                          {"per_s", step.per_s},
                                          {"cpu_us", step.cpu_us},
                                          {"sys_us", step.sys_us},
                                          {"clock_us", step.clock_us},
                                          {"allocations", step.allocations}});
    obj["breakdown"] = std::move(steps);
    obj["projection_lag"] = boost::json::object{
      {"ids", r.lag.ids},
      {"events", r.lag.events},
      {"commands_per_s", r.lag.commands_per_s},
      {"p50_ms", r.lag.p50_ms},
      {"p99_ms", r.lag.p99_ms},
      {"max_ms", r.lag.max_ms},
      {"from_timestamp_p50_ms", r.lag.ts_p50_ms},
      {"from_timestamp_p99_ms", r.lag.ts_p99_ms},
      {"live_dropped", r.lag.live_dropped},
    };
    obj["memory"] = boost::json::object{
      {"aggregates", r.memory.aggregates},
      {"heap_bytes_per_aggregate", r.memory.heap_bytes_per_aggregate},
      {"allocations_per_aggregate", r.memory.allocations_per_aggregate},
      {"rss_before", r.memory.rss_before},
      {"rss_after", r.memory.rss_after},
      {"bytes_per_aggregate", r.memory.bytes_per_aggregate},
      {"state_bytes", r.memory.state_bytes},
      {"overhead_bytes", r.memory.overhead_bytes},
      {"live_allocations_per_aggregate", r.memory.live_allocations_per_aggregate},
      {"passivated_heap_bytes_per_aggregate", r.memory.passivated_heap_bytes_per_aggregate},
      {"passivated_allocations_per_aggregate", r.memory.passivated_allocations_per_aggregate},
    };
    if (r.recovery) {
      boost::json::array cases;
      for (const auto& c : r.recovery->cases)
        cases.push_back(boost::json::object{
          {"name", c.name},
          {"aggregates", c.aggregates},
          {"events_per_aggregate", c.events_per_aggregate},
          {"in_flight", recovery_in_flight},
          {"host", replay_json(c.host)},
          {"direct", replay_json(c.direct)},
          {"host_first_round", replay_json(c.host_first)},
          {"direct_first_round", replay_json(c.direct_first)},
          {"scan_rows_per_s", c.scan_rows_per_s},
          {"host_over_direct", c.host.events_per_s / c.direct.events_per_s},
          {"activations_per_s", static_cast<double>(c.aggregates) / c.host.seconds},
          {"write_s", c.write_s},
        });
      const auto& one = r.recovery->one;
      obj["recovery"] = boost::json::object{
        {"cases", std::move(cases)},
        {"one_stream",
         boost::json::object{
           {"events", one.events},
           {"write_s", one.write_s},
           {"direct_events_per_s", one.direct_events_per_s},
           {"scan_rows_per_s", one.scan_rows_per_s},
           {"without_snapshot", one_run_json(one.without_snapshot)},
           {"with_snapshot", one_run_json(one.with_snapshot)},
         }},
      };
    }
    if (r.peers) {
      const auto& p = *r.peers;
      obj["peers"] = boost::json::object{
        {"accounts", p.accounts},
        {"commands", p.commands},
        {"in_flight", recovery_in_flight},
        {"commands_per_s", p.commands_per_s},
        {"events_per_s", p.events_per_s},
        {"p50_ms", p.p50_ms},
        {"p99_ms", p.p99_ms},
        {"max_ms", p.max_ms},
        {"failed_appends", p.conflicts},
        {"replay", replay_json(p.replay)},
        {"direct", replay_json(p.direct)},
      };
    }
    obj["targets_met"] = boost::json::object{
      {"ratio_at_10000_ids_0_5", verdict_json(ratio_met)},
      {"ratio_at_10000_ids_0_7", verdict_json(ratio_07_met)},
      {"ratio_at_100_ids_0_5", verdict_json(hundred_met)},
      {"one_aggregate_50000_cmd_s_p99_under_50ms", verdict_json(one_met)},
      {"projection_lag_p99_under_100ms", verdict_json(lag_met)},
      {"overhead_at_most_2kib", verdict_json(memory_met)},
      {"recovery_host_over_direct_0_7", verdict_json(recovery_met)},
    };
    obj["load_average_before"] = facts.load_before;
    obj["load_average_after"] = facts.load_after;
    obj["seconds"] = facts.seconds;
    std::puts(boost::json::serialize(obj).c_str());
  } else {
    std::printf("targets: one aggregate >= 50000 cmd/s with p99 < 50 ms (%.0f cmd/s, p99 %.1f "
                "ms): %s; >= 0.7 x raw journal at 10000 ids (%.2f): %s; >= 0.5 x raw at 100 ids "
                "(%.2f): %s; projection lag p99 < 100 ms: %s; overhead <= 2 KiB: %s; recovery "
                ">= 0.7 x direct reads (%.2f): %s\n",
                one_rate.value_or(0), one_p99.value_or(0), verdict(one_met), big_ratio.value_or(0),
                verdict(ratio_07_met), hundred_ratio.value_or(0), verdict(hundred_met),
                verdict(lag_met), verdict(memory_met), recovery_ratio.value_or(0),
                verdict(recovery_met));
    std::printf("load average before %s, after %s; %zu scheduler threads; %.1f s\n",
                facts.load_before.c_str(), facts.load_after.c_str(), facts.threads, facts.seconds);
  }
}

} // namespace annals::bench::runtime

// End to end: N `bank::deposit`s through the runtime (ask -> decide -> persist -> apply ->
// reply) on a SQLite journal, and the same events appended straight to a fresh
// `sqlite_journal` with as many in flight; the two alternate and each keeps its best of
// `--rounds`.

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "annals/persistence/sqlite_journal.hpp"

#include "drive.hpp"
#include "projection_lag.hpp"
#include "runtime.hpp"

namespace annals::bench::runtime {

namespace {

std::shared_ptr<sqlite_journal> open_journal(const std::string& path) {
  remove_db(path);
  auto opened = sqlite_journal::open({.path = path, .durability = durability_level::full});
  if (!opened)
    die(annals::render(opened.error()));
  return *opened;
}

} // namespace

// -- the runtime --------------------------------------------------------------------------

runtime_run run_runtime(caf::actor_system& sys, const std::string& path, const workload& w,
                        std::size_t in_flight, bool with_projection) {
  runtime_run out;
  auto baseline = sys.registry().running();
  auto j = open_journal(path);
  {
    host h{sys, j};
    if (auto err = h.register_aggregate<bank::account>())
      die(annals::render(err));
    auto t0 = clock_type::now();
    auto opened = drive(sys, h, w.ids, w.ids.size(), in_flight,
                        [&w](std::size_t i) { return bank::open{w.owners[i]}; });
    out.open_s = ms_between(t0, clock_type::now()) / 1000.0;
    if (opened.failed > 0)
      die("opening accounts: " + annals::render(opened.first_error));
    auto n = w.cents.size();
    std::optional<lag_watch> watch;
    if (with_projection)
      watch.emplace(sys, j, w.ids.size(), n);
    auto tx_before = j->stats().transactions;
    auto cpu_before = cpu_now();
    auto res =
      drive(sys, h, w.ids, n, in_flight, [&w](std::size_t i) { return bank::deposit{w.cents[i]}; });
    out.cpu = cpu_now() - cpu_before;
    out.seconds = res.seconds;
    out.transactions = j->stats().transactions - tx_before;
    out.commands_per_s = static_cast<double>(n) / res.seconds;
    out.p50_ms = percentile(res.latency_ms, 0.50);
    out.p99_ms = percentile(res.latency_ms, 0.99);
    out.max_ms = *std::max_element(res.latency_ms.begin(), res.latency_ms.end());
    out.failed = res.failed;
    if (res.failed > 0)
      std::fprintf(stderr, "bench_runtime: %llu commands failed, first: %s\n",
                   static_cast<unsigned long long>(res.failed),
                   annals::render(res.first_error).c_str());
    if (watch) {
      auto head = static_cast<std::uint64_t>(w.ids.size() + n - res.failed);
      out.lag = watch->finish(head, out.commands_per_s);
    }
  }
  await_actors(sys, baseline);
  j->close();
  return out;
}

namespace {

// -- the raw journal ----------------------------------------------------------------------

struct raw_run {
  double events_per_s = 0;
  double seconds = 0;
  cpu_times cpu;
  double p50_ms = 0;
  double p99_ms = 0;
  std::uint64_t transactions = 0;
  std::uint64_t failed = 0;
};

/// Appends `reqs` with `in_flight` outstanding (as bench_journal does).
raw_run append_all(sqlite_journal& j, const std::vector<append_request>& reqs,
                   std::size_t in_flight) {
  auto tx_before = j.stats().transactions;
  auto cpu_before = cpu_now();
  auto res = ::bench::run_in_flight(reqs.size(), in_flight, [&](std::size_t i, auto done) {
    j.append(reqs[i], [done](caf::expected<append_result> r) { done(static_cast<bool>(r)); });
  });
  raw_run out;
  out.seconds = res.seconds;
  out.cpu = cpu_now() - cpu_before;
  out.events_per_s = static_cast<double>(reqs.size()) / out.seconds;
  out.p50_ms = percentile(res.latency_ms, 0.50);
  out.p99_ms = percentile(res.latency_ms, 0.99);
  out.transactions = j.stats().transactions - tx_before;
  out.failed = res.failed;
  return out;
}

raw_run run_raw(const std::string& path, const workload& w, std::size_t in_flight) {
  // The same rows the runtime writes: one `opened` per account (not timed), then the
  // deposits with their sequence numbers, payloads from the aggregate's own codec.
  std::vector<append_request> opens;
  opens.reserve(w.ids.size());
  for (std::size_t k = 0; k < w.ids.size(); ++k)
    opens.push_back({w.pids[k], 0, {codec::encode(bank::opened{w.owners[k]})}, {}});
  std::vector<append_request> deposits;
  deposits.reserve(w.cents.size());
  std::vector<std::uint64_t> seqs(w.ids.size(), 1);
  for (std::size_t i = 0; i < w.cents.size(); ++i) {
    auto k = i % w.ids.size();
    deposits.push_back({w.pids[k], seqs[k]++, {codec::encode(bank::deposited{w.cents[i]})}, {}});
  }
  auto j = open_journal(path);
  auto opened = append_all(*j, opens, in_flight);
  if (opened.failed > 0)
    die("raw journal: opening accounts failed");
  auto out = append_all(*j, deposits, in_flight);
  j->close();
  return out;
}

} // namespace

command_figures run_end_to_end(caf::actor_system& sys, const config& cfg,
                               const std::filesystem::path& dir, std::size_t ids) {
  workload w{ids, commands_for(cfg, ids)};
  command_figures fig;
  fig.ids = ids;
  fig.commands = w.cents.size();
  auto runtime_file = (dir / ("runtime-" + std::to_string(ids) + ".db")).string();
  auto raw_file = (dir / ("raw-" + std::to_string(ids) + ".db")).string();
  for (std::size_t round = 0; round < cfg.rounds; ++round) {
    auto run = run_runtime(sys, runtime_file, w, cfg.in_flight, false);
    auto raw = run_raw(raw_file, w, cfg.in_flight);
    if (round == 0 || run.commands_per_s > fig.commands_per_s) {
      fig.commands_per_s = run.commands_per_s;
      fig.p50_ms = run.p50_ms;
      fig.p99_ms = run.p99_ms;
      fig.max_ms = run.max_ms;
      fig.transactions = run.transactions;
      fig.open_s = run.open_s;
      fig.cpu = run.cpu;
      fig.seconds = run.seconds;
    }
    if (round == 0 || raw.events_per_s > fig.raw_events_per_s) {
      fig.raw_events_per_s = raw.events_per_s;
      fig.raw_p50_ms = raw.p50_ms;
      fig.raw_p99_ms = raw.p99_ms;
      fig.raw_transactions = raw.transactions;
      fig.raw_cpu = raw.cpu;
      fig.raw_seconds = raw.seconds;
    }
    fig.failed += run.failed + raw.failed;
    remove_db(runtime_file);
    remove_db(raw_file);
  }
  return fig;
}

} // namespace annals::bench::runtime

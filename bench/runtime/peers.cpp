// Peers (`--only peers`, what bench/peers runs): annals' in-process API on the workload a
// peer published figures for. 1,000 accounts on a fresh SQLite journal (durability full):
// each opened, then given 20 deposits, 64 commands in flight from one driver actor, command
// i to account i % 1,000, so the 64 in flight go to 64 different accounts. Every command is
// a read-decide-append: the aggregate decides on its state (recovered from the journal on
// its first command) and appends with the version it read as the expected sequence number,
// which the journal checks (a conflict would fail the command; `conflicts` counts them).
// Opens and deposits are timed together, latencies over all 21,000 commands. Then every
// account is replayed on a fresh host (a `get_balance` each, 64 in flight), next to
// reading the same streams straight from the journal.

#include <algorithm>
#include <string>
#include <vector>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "annals/persistence/sqlite_journal.hpp"

#include "drive.hpp"
#include "runtime.hpp"

namespace annals::bench::runtime {

namespace {

constexpr std::size_t peer_accounts = 1'000;
constexpr std::size_t peer_deposits = 20;

} // namespace

peers_figures run_peers(caf::actor_system& sys, const config& cfg,
                        const std::filesystem::path& dir) {
  peers_figures out;
  out.accounts = peer_accounts;
  workload w{peer_accounts, peer_accounts * peer_deposits};
  out.commands = peer_accounts + w.cents.size();
  auto path = (dir / "peers.db").string();
  remove_db(path);
  auto opened = sqlite_journal::open({.path = path, .durability = durability_level::full});
  if (!opened)
    die(annals::render(opened.error()));
  auto j = *opened;
  auto baseline = sys.registry().running();
  {
    host h{sys, j};
    if (auto err = h.register_aggregate<bank::account>())
      die(annals::render(err));
    auto opens = drive(sys, h, w.ids, w.ids.size(), recovery_in_flight,
                       [&w](std::size_t i) { return bank::open{w.owners[i]}; });
    auto deposits = drive(sys, h, w.ids, w.cents.size(), recovery_in_flight,
                          [&w](std::size_t i) { return bank::deposit{w.cents[i]}; });
    if (opens.failed + deposits.failed > 0)
      die("peers: " + std::to_string(opens.failed + deposits.failed) + " commands failed, first: "
          + annals::render(opens.failed > 0 ? opens.first_error : deposits.first_error));
    auto seconds = opens.seconds + deposits.seconds;
    auto latency = std::move(opens.latency_ms);
    latency.insert(latency.end(), deposits.latency_ms.begin(), deposits.latency_ms.end());
    out.commands_per_s = static_cast<double>(out.commands) / seconds;
    out.events_per_s = static_cast<double>(h.metrics().events_persisted) / seconds;
    out.p50_ms = percentile(latency, 0.50);
    out.p99_ms = percentile(latency, 0.99);
    out.max_ms = *std::max_element(latency.begin(), latency.end());
    out.conflicts = j->stats().failed_appends;
  }
  await_actors(sys, baseline);
  j->close();
  for (std::size_t round = 0; round < cfg.rounds; ++round) {
    auto replay = replay_through_host(sys, path, w.ids, recovery_in_flight);
    auto direct = read_streams_direct(path, w.pids, recovery_in_flight);
    if (round == 0 || replay.events_per_s > out.replay.events_per_s)
      out.replay = replay;
    if (round == 0 || direct.events_per_s > out.direct.events_per_s)
      out.direct = direct;
  }
  remove_db(path);
  return out;
}

} // namespace annals::bench::runtime

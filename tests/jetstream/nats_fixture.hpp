#pragma once

// The JetStream tests' fixtures: the contract suite's backends on real nats-server
// processes (nats_servers.hpp), a server or cluster shared by the test cases of one process.

#include <chrono>
#include <memory>
#include <string>

#include "annals/persistence/jetstream_journal.hpp"
#include "jetstream/nats_servers.hpp"
#include "persistence/journal_fixtures.hpp"

namespace annals::persistence::test {

/// The contract suite's fixture for JetStream: a server or cluster shared by the test
/// cases of one process (started on first use), and a fresh stream per case.
template <int Replicas>
struct jetstream_backend {
  static constexpr bool persistent = true;
  static constexpr bool gapless = false;
  static std::uint64_t at(std::uint64_t /*event_no*/, std::uint64_t append_no,
                          std::uint64_t index) {
    return append_no * jetstream_journal::offsets_per_append + index;
  }
  static nats_cluster& servers() {
    static nats_cluster cluster{Replicas};
    return cluster;
  }
  std::string stream = fresh_stream_name();

  journal_ptr open(std::size_t keep_snapshots = 2) {
    auto res = jetstream_journal::open({.servers = servers().urls(),
                                        .stream = stream,
                                        .replicas = Replicas,
                                        .keep_snapshots = keep_snapshots,
                                        // a loaded CI machine may need a while to elect
                                        .open_timeout = std::chrono::milliseconds{30'000}});
    if (!res)
      FAIL(render(res.error()));
    return *res;
  }
  journal_ptr reader(journal_ptr& j) {
    return j;
  }
  journal_ptr reopen(journal_ptr& j) {
    std::static_pointer_cast<jetstream_journal>(j)->close();
    j.reset();
    return open();
  }
  snapshot_store_ptr snapshots(journal_ptr& j, std::size_t keep) {
    std::static_pointer_cast<jetstream_journal>(j)->close();
    j = open(keep);
    return std::static_pointer_cast<jetstream_journal>(j)->snapshots();
  }
};

using jetstream_r1_backend = jetstream_backend<1>;
using jetstream_r3_backend = jetstream_backend<3>;

} // namespace annals::persistence::test

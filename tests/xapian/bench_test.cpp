// Catch-up throughput of the Xapian sink for docs/projections.md (hidden: run with
// `xapian_tests "[.bench]"`). It prints what it measures and asserts only that the
// projection reached the head with the index equal to the fold.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "account/account.hpp"
#include "annals/actors/system.hpp"
#include "annals/actors/xapian_projection.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "xapian/account_docs.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

TEST_CASE("Xapian sink catch-up throughput", "[.bench]") {
  constexpr int accounts = 1000;
  constexpr int events = 20'000;
  temp_dir dir;
  auto j =
    sqlite_journal::open({.path = dir.file("journal.db"), .durability = durability_level::normal});
  REQUIRE(j);
  // Written in appends of 10 events per account: opened, then deposits.
  std::vector<std::uint64_t> seqs(accounts, 0);
  for (int n = 0; n < events / 10; ++n) {
    auto a = n % accounts;
    auto pid = "account|acc-" + std::to_string(a);
    std::vector<encoded_event> batch;
    for (int k = 0; k < 10; ++k)
      batch.push_back(seqs[static_cast<std::size_t>(a)] == 0 && k == 0
                        ? bank::account::codec_type::encode(bank::opened{"Owner " + pid})
                        : bank::account::codec_type::encode(bank::deposited{k + 1}));
    auto res = append(**j, pid, seqs[static_cast<std::size_t>(a)], std::move(batch));
    REQUIRE(res);
    seqs[static_cast<std::size_t>(a)] = res->last_seq;
  }
  auto head = head_offset(**j);
  REQUIRE(head);
  for (std::size_t page : {64, 512, 4096}) {
    caf::actor_system_config cfg;
    annals::actors::configure(cfg);
    caf::actor_system sys{cfg};
    auto index = dir.file("index-" + std::to_string(page));
    auto started = std::chrono::steady_clock::now();
    auto proj = annals::actors::spawn_projection(
      sys, *j, std::make_shared<xapian_test::account_docs>(),
      annals::actors::xapian_projection_options{.name = "docs", .path = index, .page_size = page});
    REQUIRE(proj.await_offset(*head, std::chrono::minutes{5}));
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    proj.stop();
    auto st = xapian_test::read_index(index, "docs");
    auto all = read_all(**j);
    REQUIRE(all);
    CHECK(st.docs == xapian_test::fold_records(*all, *head));
    std::cout << "xapian sink: " << *head << " events (" << accounts << " accounts), page " << page
              << ": " << static_cast<long>(static_cast<double>(*head) / secs) << " events/s ("
              << secs << " s)\n";
  }
}

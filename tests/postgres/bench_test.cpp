// Throughput figures for docs/postgres.md (hidden: run with `postgres_tests "[.bench]"`).
// They print what they measure and assert only that every append succeeded.

#include <chrono>
#include <iostream>

#include "postgres/pg_fixture.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

// `threads` threads, each submitting `per_thread` one-event appends to its own streams
// without waiting, spread over `journals` journals; appends per second until the last
// answer.
double appends_per_second(std::size_t journals, int threads, int per_thread) {
  auto conninfo = shared_server().create_database();
  std::vector<std::shared_ptr<postgres_journal>> js;
  for (std::size_t i = 0; i < journals; ++i)
    js.push_back(open_pg(conninfo));
  countdown done;
  std::atomic<int> failures{0};
  auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      auto& j = *js[static_cast<std::size_t>(t) % journals];
      std::uint64_t seqs[10] = {};
      for (int i = 0; i < per_thread; ++i) {
        auto k = i % 10;
        append_request req{
          "bench-" + std::to_string(t) + "-" + std::to_string(k),
          seqs[k],
          {ev("bank.deposited", R"({"cents":12345,"note":"a payment of some kind"})")},
          {}};
        ++seqs[k];
        j.append(std::move(req), [&](caf::expected<append_result> res) {
          if (!res)
            ++failures;
          done.arrive();
        });
      }
    });
  }
  for (auto& w : workers)
    w.join();
  REQUIRE(done.wait(static_cast<std::size_t>(threads * per_thread)));
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  CHECK(failures == 0);
  return threads * per_thread / secs;
}

} // namespace

TEST_CASE("postgres journal throughput", "[.bench]") {
  constexpr int per_thread = 5'000;
  for (std::size_t journals : {std::size_t{1}, std::size_t{8}}) {
    auto rate = appends_per_second(journals, 8, per_thread);
    std::cout << "8 threads x " << per_thread << " one-event appends, " << journals
              << " journal(s): " << static_cast<long>(rate) << " appends/s\n";
  }
}

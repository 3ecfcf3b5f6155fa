// Figures, not assertions: appends/s and latency of jetstream_journal on one server (R1)
// and a three-server cluster (R3) started here. Hidden from the default run; select with
//   build/tests/jetstream_tests "[bench]"

#include <iomanip>
#include <iostream>

#include "jetstream/nats_fixture.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

struct figures {
  double appends_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
};

/// `total` one-event appends round-robin over `ids` ids, at most `in_flight` outstanding.
figures run_appends(jetstream_journal& j, std::size_t ids, std::size_t total,
                    std::size_t in_flight) {
  using clock = std::chrono::steady_clock;
  std::mutex mtx;
  std::condition_variable cv;
  std::size_t outstanding = 0;
  std::size_t failed = 0;
  std::vector<double> latencies;
  latencies.reserve(total);
  std::vector<std::uint64_t> seqs(ids, 0);
  auto prefix = "bench-" + std::to_string(ids) + "-";
  std::string payload = R"({"cents":12345,"note":"a deposit of about seventy-five bytes"})";
  auto start = clock::now();
  for (std::size_t i = 0; i < total; ++i) {
    {
      std::unique_lock lk{mtx};
      cv.wait(lk, [&] { return outstanding < in_flight; });
      ++outstanding;
    }
    auto k = i % ids;
    append_request req{prefix + std::to_string(k), seqs[k], {ev("bank.deposited", payload)}, {}};
    ++seqs[k];
    auto sent = clock::now();
    j.append(std::move(req), [&, sent](caf::expected<append_result> res) {
      auto ms = std::chrono::duration<double, std::milli>(clock::now() - sent).count();
      std::lock_guard guard{mtx};
      latencies.push_back(ms);
      if (!res)
        ++failed;
      --outstanding;
      cv.notify_all();
    });
  }
  {
    std::unique_lock lk{mtx};
    cv.wait(lk, [&] { return outstanding == 0; });
  }
  auto secs = std::chrono::duration<double>(clock::now() - start).count();
  CHECK(failed == 0);
  std::sort(latencies.begin(), latencies.end());
  return {static_cast<double>(total) / secs, latencies[latencies.size() / 2],
          latencies[latencies.size() * 99 / 100]};
}

template <int Replicas>
void bench(std::size_t total) {
  nats_cluster servers{Replicas};
  auto res = jetstream_journal::open(
    {.servers = servers.urls(), .stream = fresh_stream_name("BENCH"), .replicas = Replicas});
  REQUIRE(res);
  auto& j = **res;
  for (std::size_t ids : {1u, 100u, 10'000u}) {
    auto f = run_appends(j, ids, total, 1000);
    std::cout << "R" << Replicas << " appends, " << std::setw(5) << ids
              << " ids, 1000 in flight: " << std::fixed << std::setprecision(0) << f.appends_per_s
              << " appends/s, p50 " << std::setprecision(2) << f.p50_ms << " ms, p99 " << f.p99_ms
              << " ms\n";
  }
  auto start = std::chrono::steady_clock::now();
  auto all = read_all(j, 1, SIZE_MAX);
  REQUIRE(all);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "R" << Replicas << " read_all of " << all->size() << " events: " << std::fixed
            << std::setprecision(0) << static_cast<double>(all->size()) / secs << " events/s\n";
}

} // namespace

TEST_CASE("appends per second on JetStream R1 and R3", "[.][bench]") {
  bench<1>(20'000);
  bench<3>(20'000);
}

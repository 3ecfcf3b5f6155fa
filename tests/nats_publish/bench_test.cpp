// Throughput of the NATS publisher (hidden: run with `nats_publish_tests "[.bench]"`):
// 20,000 public events (deposits) in a memory journal, published to one nats-server in
// JetStream mode with 256 and with 1 publish in flight, and in core mode. Prints messages/s;
// asserts only that every message arrived.

#include <chrono>
#include <cstdio>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "account/public_contract.hpp"
#include "annals/actors/nats_publisher.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/memory_journal.hpp"
#include "jetstream/nats_servers.hpp"
#include "nats_publish/nats_reader.hpp"
#include "persistence/journal_fixtures.hpp"

namespace aa = annals::actors;
namespace ap = annals::persistence;
namespace pt = annals::persistence::test;

TEST_CASE("NATS publisher throughput", "[.bench][nats]") {
  caf::actor_system_config cfg;
  aa::configure(cfg);
  caf::actor_system sys{cfg};
  pt::nats_cluster nats{1};
  auto journal = std::make_shared<ap::memory_journal>();
  constexpr std::uint64_t events = 20'000;
  for (std::uint64_t i = 0; i < events / 100; ++i) {
    std::vector<annals::encoded_event> batch(100, pt::ev("bank.deposited", R"({"cents":100})"));
    REQUIRE(pt::append(*journal, "account|b" + std::to_string(i), 0, std::move(batch)));
  }
  auto head = pt::head_offset(*journal);
  REQUIRE(head);
  struct run {
    const char* what;
    aa::nats_publish_mode mode;
    std::size_t in_flight;
  };
  for (auto r : {run{"jetstream, 256 in flight", aa::nats_publish_mode::jetstream, 256},
                 run{"jetstream, 1 in flight", aa::nats_publish_mode::jetstream, 1},
                 run{"core, flush per batch", aa::nats_publish_mode::core, 256}}) {
    pt::temp_dir dir;
    auto stream = pt::fresh_stream_name("N");
    auto sink =
      aa::make_nats_publisher(bank::public_contract(), {.servers = nats.urls(),
                                                        .offsets_path = dir.file("offsets.db"),
                                                        .mode = r.mode,
                                                        .subject_prefix = stream + ".public",
                                                        .stream = stream,
                                                        .max_in_flight = r.in_flight});
    REQUIRE(sink);
    auto start = std::chrono::steady_clock::now();
    auto p = aa::spawn_projection(sys, journal, std::move(*sink),
                                  aa::sink_options{.name = "publisher", .page_size = 512});
    auto st = p.await_offset(*head, std::chrono::seconds{120});
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    REQUIRE(st);
    p.stop();
    if (r.mode == aa::nats_publish_mode::jetstream) {
      nats_test::reader reader{nats.server(0).url()};
      CHECK(reader.state(stream).messages == events);
    }
    std::printf("%-26s %6llu messages in %6.2f s: %8.0f msgs/s\n", r.what,
                static_cast<unsigned long long>(events), secs, static_cast<double>(events) / secs);
  }
}

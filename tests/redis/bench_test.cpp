// Throughput of a Redis projection (hidden: run with `redis_tests "[.bench]"`): 50,000
// events in a memory journal, projected by the recording model (two commands per event)
// into a redis-server with `appendfsync always`, for a few page sizes. Prints events/s;
// asserts only that the model is the fold of every event.

#include <chrono>
#include <cstdio>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/redis_projection.hpp"
#include "annals/actors/system.hpp"
#include "persistence/journal_fixtures.hpp"
#include "redis/recording_model.hpp"
#include "redis/redis_server.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

TEST_CASE("Redis projection throughput", "[.bench][redis]") {
  caf::actor_system_config cfg;
  annals::actors::configure(cfg);
  caf::actor_system sys{cfg};
  redis_server server;
  auto j = std::make_shared<memory_journal>();
  constexpr std::uint64_t events = 50'000;
  std::uint64_t seq = 0;
  for (std::uint64_t i = 0; i < events / 500; ++i) {
    std::vector<encoded_event> batch(500, ev("test.happened", R"({"n":1})"));
    auto res = append(*j, "a", seq, batch);
    REQUIRE(res);
    seq = res->last_seq;
  }
  auto c = server.client();
  for (std::size_t page : {64, 512, 4096}) {
    auto name = "p" + std::to_string(page);
    auto started = std::chrono::steady_clock::now();
    auto proj = actors::spawn_projection(
      sys, j, std::make_shared<recording_model>(),
      actors::redis_projection_options{.name = name, .url = server.url(), .page_size = page});
    REQUIRE(proj.await_offset(events, std::chrono::minutes{2}));
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("page_size %5zu: %llu events in %.2f s = %.0f events/s\n", page,
                static_cast<unsigned long long>(events), secs, static_cast<double>(events) / secs);
    auto m = read_recorded(c, name + ":");
    CHECK(m.offset == events);
    CHECK(m.log.size() == events);
  }
}

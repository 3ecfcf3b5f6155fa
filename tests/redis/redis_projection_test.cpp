// Exactly-once projections into Redis (annals/actors/redis_projection.hpp) against a real
// redis-server each case starts on a free loopback port (redis_server.hpp): the model and
// the offset change in one EXEC, a restart neither repeats nor skips an event, a second
// instance of one projection stops with `offset_moved` instead of applying twice, a
// throwing handler stops at the event before it, a rebuild replays into an emptied model,
// and a SIGKILL of the server under load costs a reconnect, not an event. Every wait is
// bounded and answered by the projection itself (`await_offset`).

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
using annals::actors::projection_errc;
using annals::actors::projection_state;
using annals::actors::redis_projection_options;

namespace {

struct test_system {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  test_system() : sys{(annals::actors::configure(cfg), cfg)} {}
};

/// Appends `n` one-event appends to `pid` after `seq`; returns the new seq.
std::uint64_t write(journal& j, const std::string& pid, std::uint64_t seq, int n) {
  for (int i = 0; i < n; ++i) {
    auto res = append(j, pid, seq, {ev("test.happened", R"({"n":1})")});
    if (!res)
      FAIL("append to " << pid << " failed: " << render(res.error()));
    seq = res->last_seq;
  }
  return seq;
}

std::uint64_t head(journal& j) {
  auto h = head_offset(j);
  REQUIRE(h);
  return *h;
}

/// The model equals the fold of the events 1..n, each once, at offset n.
void check_fold(actors::redis_client& c, std::uint64_t n, const std::string& prefix = "seen:") {
  auto m = read_recorded(c, prefix);
  CHECK(m.offset == n);
  CHECK(m.log == one_to(n));
  CHECK(m.sum == n * (n + 1) / 2);
}

redis_projection_options options(const redis_server& server, std::size_t page_size = 512) {
  return {.name = "seen", .url = server.url(), .page_size = page_size};
}

} // namespace

TEST_CASE("a Redis projection applies each event once, with its offset, across restarts",
          "[redis][projection]") {
  test_system ts;
  redis_server server;
  auto c = server.client();
  auto j = std::make_shared<memory_journal>();
  write(*j, "a", 0, 30);
  {
    auto proj =
      actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(), options(server, 7));
    auto st = proj.await_offset(30, bound);
    REQUIRE(st);
    CHECK(st->state == projection_state::running);
    write(*j, "b", 0, 12); // live
    REQUIRE(proj.await_offset(42, bound));
  }
  check_fold(c, 42);
  // Started again, it goes on from its stored offset: nothing twice, nothing lost.
  write(*j, "a", 30, 5);
  auto again =
    actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(), options(server));
  auto st = again.await_offset(47, bound);
  REQUIRE(st);
  CHECK(st->applied == 5);
  check_fold(c, 47);
  // A key of another projection stays untouched by a rebuild.
  REQUIRE(c.command({"SET", "other:key", "x"}));
  REQUIRE(c.command({"RPUSH", "seen:log", "999"})); // a stray row a rebuild must remove
  REQUIRE_FALSE(again.rebuild());
  REQUIRE(again.await_offset(47, bound));
  check_fold(c, 47);
  auto other = c.command({"GET", "other:key"});
  REQUIRE(other);
  CHECK(other->text == "x");
}

TEST_CASE("a Redis projection whose offset moved behind its back stops with offset_moved, "
          "applying nothing",
          "[redis][projection]") {
  test_system ts;
  redis_server server;
  auto c = server.client();
  auto j = std::make_shared<memory_journal>();
  write(*j, "a", 0, 10);
  auto first =
    actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(), options(server));
  REQUIRE(first.await_offset(10, bound));
  // A second writer of the model would move the offset; the test does it by hand.
  REQUIRE(c.command({"SET", actors::redis_offset_key("seen:"), "12"}));
  write(*j, "a", 10, 1);
  auto st = first.await_offset(11, bound);
  REQUIRE_FALSE(st);
  CHECK(is(st.error(), projection_errc::offset_moved));
  CHECK_THAT(render(st.error()), Catch::Contains("is 12, not 10"));
  auto m = read_recorded(c, "seen:");
  CHECK(m.log == one_to(10));
  CHECK(m.offset == 12);
}

TEST_CASE("two instances of one Redis projection: one stops with offset_moved, no event is "
          "applied twice",
          "[redis][projection]") {
  test_system ts;
  redis_server server;
  auto c = server.client();
  auto j = std::make_shared<memory_journal>();
  write(*j, "a", 0, 20);
  auto first =
    actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(), options(server));
  REQUIRE(first.await_offset(20, bound));
  auto second =
    actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(), options(server));
  REQUIRE(second.await_offset(20, bound)); // it starts from the stored offset
  // Both see every live commit and race for each batch.
  write(*j, "a", 20, 30);
  auto a = first.await_offset(50, bound);
  auto b = second.await_offset(50, bound);
  INFO("first: " << (a ? "ok" : render(a.error()))
                 << "; second: " << (b ? "ok" : render(b.error())));
  REQUIRE(static_cast<bool>(a) != static_cast<bool>(b));
  const auto& err = a ? b.error() : a.error();
  CHECK(is(err, projection_errc::offset_moved));
  check_fold(c, 50);
}

TEST_CASE("a throwing handler applies the batch's good prefix and stops the Redis "
          "projection at the event before it",
          "[redis][projection]") {
  test_system ts;
  redis_server server;
  auto c = server.client();
  auto j = std::make_shared<memory_journal>();
  write(*j, "a", 0, 3);
  write(*j, "poison", 0, 1);
  write(*j, "a", 3, 2);
  // One page holds all six events: the first three commit with offset 3.
  auto proj =
    actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(), options(server));
  auto st = proj.await_offset(6, bound);
  REQUIRE_FALSE(st);
  CHECK(is(st.error(), projection_errc::handler_failed));
  CHECK_THAT(render(st.error()), Catch::Contains("poisoned event") && Catch::Contains("offset 4"));
  check_fold(c, 3);
  auto status = proj.status();
  REQUIRE(status);
  CHECK(status->state == projection_state::failed);
  CHECK(status->offset == 3);
}

TEST_CASE("a command Redis refuses while queued applies nothing of its batch",
          "[redis][projection]") {
  struct wrong_arity : actors::redis_projection_handler {
    void apply(actors::redis_batch& b, const event_record& rec) override {
      b.command({"RPUSH", b.key("log"), std::to_string(rec.offset)});
      if (rec.offset == 3)
        b.command({"INCRBY", b.key("sum")}); // missing its increment
    }
  };
  test_system ts;
  redis_server server;
  auto c = server.client();
  auto j = std::make_shared<memory_journal>();
  write(*j, "a", 0, 2);
  auto proj =
    actors::spawn_projection(ts.sys, j, std::make_shared<wrong_arity>(), options(server, 512));
  REQUIRE(proj.await_offset(2, bound));
  write(*j, "a", 2, 1);
  auto st = proj.await_offset(3, bound);
  REQUIRE_FALSE(st);
  CHECK(is(st.error(), projection_errc::read_model_failed));
  CHECK_THAT(render(st.error()), Catch::Contains("INCRBY"));
  auto m = read_recorded(c, "seen:");
  CHECK(m.offset == 2);
  CHECK(m.log == one_to(2));
}

TEST_CASE("a Redis projection rides out a SIGKILL and restart of its server",
          "[redis][projection]") {
  test_system ts;
  redis_server server;
  auto j = std::make_shared<memory_journal>();
  auto proj =
    actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(), options(server, 16));
  auto seq = write(*j, "a", 0, 200);
  REQUIRE(proj.await_offset(100, bound));
  server.kill9();
  seq = write(*j, "a", seq, 50); // while the server is down
  server.start();                // same port, same append-only file
  seq = write(*j, "a", seq, 50);
  auto st = proj.await_offset(head(*j), bound);
  INFO(server.log());
  REQUIRE(st);
  CHECK(st->state == projection_state::running);
  auto c = server.client();
  check_fold(c, 300);
}

TEST_CASE("a Redis projection that cannot reach its server fails naming it",
          "[redis][projection]") {
  test_system ts;
  auto j = std::make_shared<memory_journal>();
  write(*j, "a", 0, 1);
  auto port = free_port(); // nobody listens there
  auto proj = actors::spawn_projection(
    ts.sys, j, std::make_shared<recording_model>(),
    redis_projection_options{.name = "seen",
                             .url = "redis://127.0.0.1:" + std::to_string(port),
                             .connect_timeout = std::chrono::milliseconds{500},
                             .retry_for = std::chrono::milliseconds{300}});
  auto st = proj.await_offset(1, bound);
  REQUIRE_FALSE(st);
  CHECK(is(st.error(), projection_errc::read_model_failed));
  CHECK_THAT(render(st.error()), Catch::Contains("127.0.0.1:" + std::to_string(port)));
  auto bad = actors::parse_redis_url("redis://:secret@host:99999");
  REQUIRE_FALSE(bad);
  CHECK_THAT(render(bad.error()), Catch::Contains("port") && !Catch::Contains("secret"));
}

#include <catch2/catch.hpp>

#include <limits>

#include "actors/runtime_fixtures.hpp"
#include "annals/actors/host.hpp"
#include "annals/testkit.hpp"
#include "loyalty/member.hpp"

using loyalty::member_errc;
using kit_type = annals::testkit<loyalty::member>;

TEST_CASE("a loyalty member earns the points of each credit and keeps where they came from",
          "[loyalty]") {
  kit_type kit;
  auto first = kit.when(loyalty::earn{500, "bank:3"});
  REQUIRE(first.reply);
  CHECK(*first.reply == 500);
  CHECK(first.event<loyalty::points_earned>().source_message == "bank:3");
  CHECK(kit.when(loyalty::earn{loyalty::points_for_credit(250), "bank:9"}).reply == 750);
  auto st = kit.aggregate().handle(loyalty::get_points{});
  REQUIRE(st);
  CHECK(st->points == 750);
  CHECK(st->earnings == 2);
  kit.restart();
  CHECK(kit.state().points == 750);
  CHECK(kit.state().earnings == 2);
}

TEST_CASE("a loyalty member refuses non-positive and overflowing points and is unknown until "
          "it earns",
          "[loyalty]") {
  kit_type kit;
  CHECK(annals::is(kit.aggregate().handle(loyalty::get_points{}).error(), member_errc::not_found));
  CHECK(annals::is(kit.when(loyalty::earn{0, "bank:1"}).error(), member_errc::invalid_points));
  CHECK(annals::is(kit.when(loyalty::earn{-5, "bank:1"}).error(), member_errc::invalid_points));
  kit.given(loyalty::points_earned{std::numeric_limits<std::int64_t>::max() - 1, "bank:2"});
  auto out = kit.when(loyalty::earn{2, "bank:3"});
  CHECK(annals::is(out.error(), member_errc::points_overflow));
  CHECK(out.events.empty());
  CHECK(kit.journal().size() == 1);
}

TEST_CASE("an earning sent again with the same message id as idempotency key counts once, also "
          "after a restart",
          "[loyalty][runtime]") {
  using namespace rt;
  auto journal = std::make_shared<ap::memory_journal>();
  auto earn = [](annals::actors::host& h, const char* id, std::int64_t points) {
    return h.ask<loyalty::member>("acc-1", loyalty::earn{points, id}, {.idempotency_key = id});
  };
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    annals::actors::host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<loyalty::member>());
    CHECK(earn(h, "bank:1", 100) == 100);
    CHECK(earn(h, "bank:2", 10) == 110);
    CHECK(earn(h, "bank:1", 100) == 100); // the first reply, nothing persisted
  }
  system_config cfg;
  caf::actor_system sys{cfg};
  annals::actors::host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<loyalty::member>());
  CHECK(earn(h, "bank:2", 10) == 110);
  CHECK(earn(h, "bank:3", 1) == 111);
  auto st = h.ask<loyalty::member>("acc-1", loyalty::get_points{});
  REQUIRE(st);
  CHECK(st->points == 111);
  CHECK(st->earnings == 3);
  CHECK(stream(*journal, "member|acc-1").size() == 3);
}

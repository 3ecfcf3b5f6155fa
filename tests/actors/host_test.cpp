// The host as plain code uses it: ending it and its actor system in either order, reading
// an aggregate's state without a command, and keeping commands in flight from callbacks.

#include <atomic>
#include <memory>

#include <catch2/catch.hpp>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/memory_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "runtime_fixtures.hpp"

using namespace rt;
using annals::actors::host;
using bank::account;

TEST_CASE("a host may outlive its annals actor system: the system stops the host's actors, "
          "and the host then refuses commands and ends without it",
          "[host][lifetime]") {
  auto journal = std::make_shared<ap::memory_journal>();
  caf::actor_system_config cfg;
  auto sys = std::make_unique<annals::actors::actor_system>(cfg);
  auto h = std::make_unique<host>(*sys, journal);
  REQUIRE_FALSE(h->register_aggregate<account>());
  REQUIRE(h->ask<account>("acc", bank::open{"Ada"}));
  REQUIRE(h->ask<account>("acc", bank::deposit{5}));
  sys.reset(); // with a live aggregate actor: must neither hang nor crash
  auto refused = h->ask<account>("acc", bank::deposit{1});
  REQUIRE_FALSE(refused);
  CHECK(annals::is(refused.error(), annals::errc::unavailable));
  bool called = false;
  h->ask_async<account>("acc", bank::deposit{1}, [&](caf::expected<bank::account_view> r) {
    called = !r && annals::is(r.error(), annals::errc::unavailable);
  });
  CHECK(called);
  CHECK(annals::is(h->drain(), annals::errc::unavailable));
  h.reset();
  // Nothing was lost: both events are in the journal.
  auto events = annals::persistence::test::read_stream(*journal, "account|acc");
  REQUIRE(events);
  CHECK(events->size() == 2);
}

TEST_CASE("a host destroyed before its annals actor system ends as before", "[host][lifetime]") {
  auto journal = std::make_shared<ap::memory_journal>();
  caf::actor_system_config cfg;
  annals::actors::actor_system sys{cfg};
  {
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>());
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  }
  host again{sys, journal};
  REQUIRE_FALSE(again.register_aggregate<account>());
  auto st = again.state<account>("acc");
  REQUIRE(st);
  CHECK(st->owner == "Ada");
}

TEST_CASE("state<A> loads an aggregate's current state without a command and persists "
          "nothing",
          "[host][state]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  {
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>());
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    REQUIRE(h.ask<account>("acc", bank::deposit{70}));
    auto live = h.state<account>("acc");
    REQUIRE(live);
    CHECK(live->balance == 70);
    CHECK(live->status == bank::account_status::open);
  }
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  auto recovered = h.state<account>("acc"); // its actor starts by recovery
  REQUIRE(recovered);
  CHECK(recovered->balance == 70);
  CHECK(recovered->owner == "Ada");
  auto never = h.state<account>("nobody");
  REQUIRE(never);
  CHECK(*never == bank::account_state{});
  auto bad = h.state<account>("");
  REQUIRE_FALSE(bad);
  CHECK(annals::is(bad.error(), annals::errc::invalid_argument));
  auto head = annals::persistence::test::head_offset(*journal);
  REQUIRE(head);
  CHECK(*head == 2); // the queries wrote nothing
}

namespace {

// Keeps `in_flight` deposits of 1 going until `total` were sent, each reply sending the
// next one from `ask_async`'s callback.
struct pipeline : std::enable_shared_from_this<pipeline> {
  pipeline(host& hh, int n, latch& l) : h(hh), total(n), done(l) {}
  void send_next() {
    if (sent.fetch_add(1) >= total)
      return;
    h.ask_async<account>("acc", bank::deposit{1},
                         [self = shared_from_this()](caf::expected<bank::account_view> r) {
                           if (r)
                             ++self->ok;
                           self->done.count_down();
                           self->send_next();
                         });
  }
  host& h;
  int total;
  latch& done;
  std::atomic<int> sent{0};
  std::atomic<int> ok{0};
};

} // namespace

TEST_CASE("ask_async's callback may send the next command, keeping N commands in flight "
          "from plain code",
          "[host][ask_async]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  constexpr int total = 300;
  latch done{total};
  auto p = std::make_shared<pipeline>(h, total, done);
  for (int i = 0; i < 8; ++i) // eight in flight
    p->send_next();
  REQUIRE(done.wait(60s));
  CHECK(p->ok == total);
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == total);
}

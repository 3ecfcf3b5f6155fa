#include <catch2/catch.hpp>

#include <algorithm>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/describe.hpp>
#include <caf/event_based_actor.hpp>

#include "account/account.hpp"
#include "annals/actors/ask.hpp"
#include "annals/testkit.hpp"
#include "runtime_fixtures.hpp"

using namespace rt;
using annals::actors::host;
using bank::account;

namespace mv {

// A process manager in miniature: moves money between two accounts by asking them, and
// records each finished move as its own event.
struct move_money {
  std::string from;
  std::string to;
  std::int64_t cents;
};
struct moved {
  static constexpr auto name = "mv.moved";
  std::string from;
  std::string to;
  std::int64_t cents;
};
BOOST_DESCRIBE_STRUCT(moved, (), (from, to, cents))
struct mover_state {
  std::int64_t total = 0;
  void apply(const moved& e) {
    total += e.cents;
  }
};

inline host* bank_host = nullptr;
inline std::thread::id handler_thread_after_ask;

class mover : public annals::aggregate<mover_state, moved> {
public:
  static constexpr auto name = "mover";

  annals::task<std::int64_t> handle(move_money cmd) {
    auto taken =
      co_await annals::actors::ask<account>(*bank_host, cmd.from, bank::withdraw{cmd.cents});
    if (!taken)
      co_return taken.error();
    auto given =
      co_await annals::actors::ask<account>(*bank_host, cmd.to, bank::deposit{cmd.cents});
    if (!given) {
      auto refund =
        co_await annals::actors::ask<account>(*bank_host, cmd.from, bank::deposit{cmd.cents});
      (void)refund;
      co_return given.error();
    }
    moved e{cmd.from, cmd.to, cmd.cents};
    co_await persist(e);
    co_return state().total;
  }
};

annals::task<void> audit(host* h, std::vector<std::string> ids,
                         std::shared_ptr<std::vector<std::int64_t>> out,
                         std::shared_ptr<latch> done) {
  for (auto& id : ids) {
    auto bal = co_await annals::actors::ask<account>(*h, id, bank::get_balance{});
    out->push_back(bal ? *bal : -1);
  }
  done->count_down();
}

} // namespace mv

TEST_CASE("an aggregate handler asks other aggregates and replies after their answers",
          "[runtime][ask]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  mv::bank_host = &h;
  REQUIRE_FALSE(h.register_aggregate<account>());
  REQUIRE_FALSE(h.register_aggregate<mv::mover>());
  REQUIRE(h.ask<account>("a", bank::open{"A"}));
  REQUIRE(h.ask<account>("b", bank::open{"B"}));
  REQUIRE(h.ask<account>("a", bank::deposit{100}));
  auto r = h.ask<mv::mover>("m", mv::move_money{"a", "b", 60});
  REQUIRE(r);
  CHECK(*r == 60);
  CHECK(*h.ask<account>("a", bank::get_balance{}) == 40);
  CHECK(*h.ask<account>("b", bank::get_balance{}) == 60);
  auto refused = h.ask<mv::mover>("m", mv::move_money{"a", "b", 60});
  REQUIRE_FALSE(refused);
  CHECK(annals::is(refused.error(), bank::account_errc::insufficient_funds));
  auto compensated = h.ask<mv::mover>("m", mv::move_money{"a", "nobody", 10});
  REQUIRE_FALSE(compensated);
  CHECK(annals::is(compensated.error(), bank::account_errc::not_found));
  CHECK(*h.ask<account>("a", bank::get_balance{}) == 40);
  CHECK(stream(*journal, "mover|m").size() == 1);
}

TEST_CASE("a task run by a plain actor awaits asks one after another", "[runtime][ask]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  REQUIRE(h.ask<account>("a", bank::open{"A"}));
  REQUIRE(h.ask<account>("a", bank::deposit{7}));
  auto out = std::make_shared<std::vector<std::int64_t>>();
  auto done = std::make_shared<latch>(1);
  sys.spawn([&h, out, done](caf::event_based_actor* self) {
    annals::actors::run_task(self, mv::audit(&h, {"a", "missing", "a"}, out, done));
  });
  REQUIRE(done->wait());
  CHECK(*out == std::vector<std::int64_t>{7, -1, 7});
}

TEST_CASE("ask awaited outside an actor fails the handler, not the process", "[runtime][ask]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  mv::bank_host = &h;
  annals::testkit<mv::mover> kit;
  auto out = kit.when(mv::move_money{"a", "b", 1});
  REQUIRE_FALSE(out.reply);
  CHECK_THAT(annals::render(out.error()), Catch::Contains("outside an aggregate handler"));
}

TEST_CASE("ask_async from plain threads delivers every reply once, without blocking the caller",
          "[runtime][ask]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  constexpr int per_thread = 100;
  constexpr int threads = 4;
  latch done{per_thread * threads};
  std::mutex mtx;
  std::vector<std::uint64_t> versions;
  std::vector<std::thread> senders;
  for (int t = 0; t < threads; ++t)
    senders.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i)
        h.ask_async<account>("acc", bank::deposit{1},
                             [&](caf::expected<bank::account_view> r) {
                               {
                                 std::lock_guard guard{mtx};
                                 versions.push_back(r ? r->version : 0);
                               }
                               done.count_down();
                             },
                             {.timeout = 30s});
    });
  for (auto& s : senders)
    s.join();
  REQUIRE(done.wait(60s));
  std::sort(versions.begin(), versions.end());
  // Every deposit got its own version: 2 .. 401, none twice, none failed.
  for (std::size_t i = 0; i < versions.size(); ++i)
    CHECK(versions[i] == i + 2);
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == per_thread * threads);

  // A bad id is refused at once, on the caller's thread.
  bool refused = false;
  h.ask_async<account>("", bank::deposit{1},
                       [&](caf::expected<bank::account_view> r) {
                         refused = !r && annals::is(r.error(), annals::errc::invalid_argument);
                       },
                       {.timeout = 1s});
  CHECK(refused);
}

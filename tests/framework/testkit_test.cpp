#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "annals/testkit.hpp"
#include "fixtures.hpp"

namespace lossy {

// An event whose hand-written codec forgets a field.
struct renamed {
  static constexpr auto name = "lossy.renamed";
  std::string from;
  std::string to;
  friend bool operator==(const renamed&, const renamed&) = default;
};

void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const renamed& r) {
  jv = boost::json::object{{"to", r.to}};
}

renamed tag_invoke(boost::json::value_to_tag<renamed>, const boost::json::value& jv) {
  return renamed{"", boost::json::value_to<std::string>(jv.at("to"))};
}

struct name_state {
  std::string current;
  void apply(const renamed& e) {
    current = e.to;
  }
  friend bool operator==(const name_state&, const name_state&) = default;
};

struct rename {
  std::string from;
  std::string to;
};

class badge : public annals::aggregate<name_state, renamed> {
public:
  annals::task<std::string> handle(rename cmd) {
    renamed e{cmd.from, cmd.to};
    co_await persist(e);
    co_return state().current;
  }
};

// An event whose apply depends on something outside the event: replay cannot rebuild it.
inline int ticks = 0;
struct ticked {
  static constexpr auto name = "lossy.ticked";
};
BOOST_DESCRIBE_STRUCT(ticked, (), ())
struct tick_state {
  int value = 0;
  void apply(const ticked&) {
    value += ++ticks;
  }
  friend bool operator==(const tick_state&, const tick_state&) = default;
};
struct tick {};
class clock : public annals::aggregate<tick_state, ticked> {
public:
  annals::task<int> handle(tick) {
    co_await persist(ticked{});
    co_return state().value;
  }
};

} // namespace lossy

TEST_CASE("when returns the persisted events, the reply and the new state", "[testkit]") {
  annals::testkit<fx::notebook> kit;
  kit.given(fx::counted{10});
  auto out = kit.when(fx::add{5});
  REQUIRE(out.reply);
  CHECK(*out.reply == 15);
  REQUIRE(out.events.size() == 1);
  CHECK(out.event<fx::counted>().n == 5);
  CHECK(out.state.total == 15);
  CHECK(kit.journal().size() == 2);
}

TEST_CASE("a refused command persists nothing and keeps the state", "[testkit]") {
  annals::testkit<fx::notebook> kit;
  auto out = kit.when(fx::add{5000});
  REQUIRE_FALSE(out.reply);
  CHECK(annals::is(out.error(), fx::fx_errc::too_big));
  CHECK(out.events.empty());
  CHECK(kit.state().total == 0);
}

TEST_CASE("several events given to one persist are stored together, in order", "[testkit]") {
  annals::testkit<fx::notebook> kit;
  auto out = kit.when(fx::note_and_count{"x", 7});
  REQUIRE(out.reply);
  REQUIRE(out.events.size() == 2);
  CHECK(out.event<fx::noted>(0).text == "x");
  CHECK(out.event<fx::counted>(1).n == 7);
}

TEST_CASE("a failed persist stores nothing, applies nothing and replies with the failure",
          "[testkit]") {
  annals::testkit<fx::notebook> kit;
  kit.given(fx::counted{1});
  kit.fail_next_persist(annals::make_error(annals::errc::timeout, "journal stalled"));
  auto out = kit.when(fx::note_and_count{"x", 7});
  REQUIRE_FALSE(out.reply);
  CHECK(annals::is(out.error(), annals::errc::timeout));
  CHECK(out.events.empty());
  CHECK(kit.state().total == 1);
  CHECK(kit.state().notes.empty());
  auto next = kit.when(fx::add{2});
  REQUIRE(next.reply);
  CHECK(*next.reply == 3);
}

TEST_CASE("restart rebuilds the live state by replaying the stored events", "[testkit]") {
  annals::testkit<fx::notebook> kit;
  kit.given(fx::noted{"a"});
  (void)kit.when(fx::note_twice{"b", "c"});
  (void)kit.when(fx::add{4});
  auto before = kit.state();
  kit.restart();
  CHECK(kit.state() == before);
  auto out = kit.when(fx::add{1});
  CHECK(*out.reply == 5);
}

TEST_CASE("a codec that loses a field fails the test", "[testkit][codec]") {
  annals::testkit<lossy::badge> kit;
  CHECK_THROWS_WITH(kit.when(lossy::rename{"old", "new"}),
                    Catch::Contains("lossy.renamed changes in its JSON round trip"));
  CHECK(kit.journal().empty());
  CHECK_THROWS_AS(kit.given(lossy::renamed{"a", "b"}), annals::testkit_failure);
}

TEST_CASE("restart fails when replay does not rebuild the live state", "[testkit]") {
  annals::testkit<lossy::clock> kit;
  (void)kit.when(lossy::tick{});
  (void)kit.when(lossy::tick{});
  CHECK_THROWS_WITH(kit.restart(), Catch::Contains("differs from the live state"));
}

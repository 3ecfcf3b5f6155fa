#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <boost/describe.hpp>

#include "annals/testkit.hpp"
#include "fixtures.hpp"

namespace ledger {

// Events that own memory: several strings and a vector, longer than the small-string buffer.
struct opened {
  static constexpr auto name = "ledger.opened";
  std::string id;
  std::string owner;
  std::vector<std::string> labels;
};
struct renamed {
  static constexpr auto name = "ledger.renamed";
  std::string owner;
};
BOOST_DESCRIBE_STRUCT(opened, (), (id, owner, labels))
BOOST_DESCRIBE_STRUCT(renamed, (), (owner))

struct ledger_state {
  std::string id;
  std::string owner;
  std::vector<std::string> labels;
  void apply(const opened& e) {
    id = e.id;
    owner = e.owner;
    labels = e.labels;
  }
  void apply(const renamed& e) {
    owner = e.owner;
  }
  friend bool operator==(const ledger_state&, const ledger_state&) = default;
};

struct open {
  std::string id;
  std::string owner;
  std::vector<std::string> labels;
};
struct rename {
  std::string owner;
};
struct open_and_rename {
  std::string id;
  std::string owner;
  std::string new_owner;
};

class ledger : public annals::aggregate<ledger_state, opened, renamed> {
public:
  // The first line a handler naturally has: the event built from the command's fields.
  annals::task<std::string> handle(open cmd) {
    co_await persist<opened>(std::move(cmd.id), std::move(cmd.owner), std::move(cmd.labels));
    co_return state().owner;
  }

  annals::task<std::string> handle(rename cmd) {
    renamed e{std::move(cmd.owner)};
    co_await persist(e);
    co_return e.owner + " is " + state().owner;
  }

  annals::task<std::string> handle(open_and_rename cmd) {
    opened first{std::move(cmd.id), std::move(cmd.owner), {}};
    renamed second{std::move(cmd.new_owner)};
    co_await persist(first, second);
    co_return state().owner;
  }
};

} // namespace ledger

namespace {
// Longer than any small-string buffer, so that each string owns heap memory.
std::string long_text(char c) {
  return std::string(48, c);
}
} // namespace

TEST_CASE("an event that owns memory persists when built in place in the co_await", "[aggregate]") {
  annals::testkit<ledger::ledger> kit;
  auto out =
    kit.when(ledger::open{long_text('i'), long_text('o'), {long_text('a'), long_text('b')}});
  REQUIRE(out.reply);
  CHECK(*out.reply == long_text('o'));
  CHECK(out.state.id == long_text('i'));
  CHECK(out.state.labels == std::vector<std::string>{long_text('a'), long_text('b')});
  REQUIRE(out.events.size() == 1);
  CHECK(out.event<ledger::opened>().owner == long_text('o'));
  kit.restart();
  CHECK(kit.state().labels == std::vector<std::string>{long_text('a'), long_text('b')});
}

TEST_CASE("a named event is applied from the handler's own object and stays usable",
          "[aggregate]") {
  annals::testkit<ledger::ledger> kit;
  auto out = kit.when(ledger::rename{long_text('r')});
  REQUIRE(out.reply);
  CHECK(*out.reply == long_text('r') + " is " + long_text('r'));
  auto both = kit.when(ledger::open_and_rename{long_text('i'), long_text('o'), long_text('n')});
  REQUIRE(both.reply);
  CHECK(*both.reply == long_text('n'));
  CHECK(both.events.size() == 2);
  kit.restart();
  CHECK(kit.state().owner == long_text('n'));
  CHECK(kit.state().id == long_text('i'));
}

TEST_CASE("an event built in place survives the handler's suspension until the commit",
          "[aggregate]") {
  ledger::ledger agg;
  fx::manual_port port;
  annals::aggregate_access::set_port(agg, &port);
  auto run = annals::command_run<std::string>::start(
    agg, ledger::open{long_text('i'), long_text('o'), {long_text('a')}});
  REQUIRE_FALSE(run.done());
  REQUIRE(port.pending != nullptr);
  CHECK(agg.state().owner.empty());
  port.commit();
  REQUIRE(run.done());
  auto reply = run.take();
  REQUIRE(reply);
  CHECK(*reply == long_text('o'));
  CHECK(agg.state().labels == std::vector<std::string>{long_text('a')});
  REQUIRE(port.committed.size() == 1);
  CHECK(port.committed[0].name == "ledger.opened");
}

#include <catch2/catch.hpp>

#include <memory>
#include <stdexcept>

#include "annals/aggregate.hpp"
#include "annals/task.hpp"
#include "fixtures.hpp"

namespace {

annals::task<int> answer(bool* started) {
  *started = true;
  co_return 42;
}

annals::task<int> fails_with_enum() {
  co_return fx::fx_errc::too_big;
}

annals::task<int> awaits_failing_child(bool* continued) {
  auto x = co_await fails_with_enum();
  *continued = true;
  co_return x;
}

annals::task<int> awaits_child(bool* started) {
  auto x = co_await answer(started);
  co_return x + 1;
}

struct destruction_counter {
  int* count;
  explicit destruction_counter(int* c) : count(c) {}
  destruction_counter(const destruction_counter&) = delete;
  ~destruction_counter() {
    ++*count;
  }
};

} // namespace

TEST_CASE("a task does not start until its owner starts it", "[task]") {
  bool started = false;
  auto t = answer(&started);
  CHECK_FALSE(started);
  CHECK_FALSE(t.done());
  t.start();
  CHECK(started);
  REQUIRE(t.done());
  auto r = t.result();
  REQUIRE(r);
  CHECK(*r == 42);
}

TEST_CASE("a task that co_returns an error enum yields that error", "[task]") {
  auto t = fails_with_enum();
  t.start();
  REQUIRE(t.done());
  auto r = t.result();
  REQUIRE_FALSE(r);
  CHECK(annals::is(r.error(), fx::fx_errc::too_big));
  CHECK(annals::render(r.error()) == "fx.too_big");
}

TEST_CASE("an awaited task runs and hands its value to the awaiting task", "[task]") {
  bool started = false;
  auto t = awaits_child(&started);
  t.start();
  REQUIRE(t.done());
  CHECK(started);
  CHECK(*t.result() == 43);
}

TEST_CASE("an awaited task's error ends the awaiting task with the same error", "[task]") {
  bool continued = false;
  auto t = awaits_failing_child(&continued);
  t.start();
  REQUIRE(t.done());
  CHECK_FALSE(continued);
  auto r = t.result();
  REQUIRE_FALSE(r);
  CHECK(annals::is(r.error(), fx::fx_errc::too_big));
}

TEST_CASE("a command taken by value survives the handler's suspension", "[task][persist]") {
  fx::notebook nb;
  fx::manual_port port;
  annals::aggregate_access::set_port(nb, &port);
  auto text = std::make_unique<std::string>("a long text that does not fit any small buffer");
  auto run = annals::command_run<std::string>::start(nb, fx::note{*text});
  REQUIRE_FALSE(run.done());
  REQUIRE(port.pending != nullptr);
  text.reset();                    // the caller's copy is gone while the handler is suspended
  CHECK(nb.state().notes.empty()); // nothing applied before the commit
  port.commit();
  REQUIRE(run.done());
  auto r = run.take();
  REQUIRE(r);
  CHECK(*r == "a long text that does not fit any small buffer");
  CHECK(nb.state().notes == std::vector<std::string>{"note:a"});
}

TEST_CASE("events are applied only after the port commits them", "[task][persist]") {
  fx::notebook nb;
  fx::manual_port port;
  annals::aggregate_access::set_port(nb, &port);
  auto run = annals::command_run<std::int64_t>::start(nb, fx::add{5});
  REQUIRE(port.pending != nullptr);
  REQUIRE(port.pending->events.size() == 1);
  CHECK(port.pending->events[0].name == "fx.counted");
  CHECK(port.pending->events[0].payload == R"({"n":5})");
  CHECK(nb.state().total == 0);
  port.commit();
  REQUIRE(run.done());
  CHECK(*run.take() == 5);
  CHECK(nb.state().total == 5);
}

TEST_CASE("a handler that persists twice suspends twice and sees both events", "[persist]") {
  fx::notebook nb;
  fx::manual_port port;
  annals::aggregate_access::set_port(nb, &port);
  auto run = annals::command_run<std::size_t>::start(nb, fx::note_twice{"one", "two"});
  port.commit();
  REQUIRE_FALSE(run.done());
  CHECK(nb.state().notes.size() == 1);
  port.commit();
  REQUIRE(run.done());
  CHECK(*run.take() == 2);
  CHECK(port.committed.size() == 2);
}

TEST_CASE("abandoning a suspended handler destroys its frame without resuming it", "[persist]") {
  struct guarded : annals::aggregate<fx::notebook_state, fx::noted, fx::counted> {
    int* destroyed;
    bool* resumed;
    annals::task<int> handle(fx::add cmd) {
      destruction_counter guard{destroyed};
      co_await persist(fx::counted{cmd.n});
      *resumed = true;
      co_return 1;
    }
  };
  int destroyed = 0;
  bool resumed = false;
  guarded g;
  g.destroyed = &destroyed;
  g.resumed = &resumed;
  fx::manual_port port;
  annals::aggregate_access::set_port(g, &port);
  auto run = annals::command_run<int>::start(g, fx::add{3});
  REQUIRE_FALSE(run.done());
  CHECK(destroyed == 0);
  run.abandon();
  CHECK(destroyed == 1);
  CHECK_FALSE(resumed);
  CHECK(g.state().total == 0);
}

TEST_CASE("an exception thrown in a handler becomes an error reply", "[task][errors]") {
  fx::notebook nb;
  fx::manual_port port;
  annals::aggregate_access::set_port(nb, &port);
  auto run = annals::command_run<void>::start(nb, fx::explode{});
  port.commit();
  REQUIRE(run.done());
  auto r = run.take();
  REQUIRE_FALSE(r);
  CHECK(annals::is(r.error(), annals::errc::handler_failed));
  CHECK(annals::render(r.error()) == "annals.handler_failed: boom after persist");
}

TEST_CASE("annals::rejected thrown in a handler replies with its own error", "[task][errors]") {
  fx::notebook nb;
  auto run = annals::command_run<void>::start(nb, fx::reject_me{});
  REQUIRE(run.done());
  auto r = run.take();
  REQUIRE_FALSE(r);
  CHECK(annals::is(r.error(), fx::fx_errc::too_big));
  CHECK(annals::context_of(r.error()) == "rejected from deep inside");
}

TEST_CASE("persist on an aggregate without a port fails the command, not the process",
          "[persist][errors]") {
  fx::notebook nb;
  auto run = annals::command_run<std::int64_t>::start(nb, fx::add{1});
  REQUIRE(run.done());
  auto r = run.take();
  REQUIRE_FALSE(r);
  CHECK(annals::is(r.error(), annals::errc::handler_failed));
}

TEST_CASE("a plain handler answers at once", "[task]") {
  fx::notebook nb;
  auto run = annals::command_run<std::int64_t>::start(nb, fx::get_total{});
  REQUIRE(run.done());
  CHECK(*run.take() == 0);
}

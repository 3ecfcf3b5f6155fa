// What only the in-memory journal and the blocking helper promise.

#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

TEST_CASE("the memory journal completes every operation before the call returns", "[memory]") {
  memory_journal j;
  bool called = false;
  j.append({"a", 0, {ev("e")}, {}},
           [&](caf::expected<append_result> res) { called = static_cast<bool>(res); });
  CHECK(called);
  called = false;
  j.read_all(
    1, 10, [&](caf::expected<std::vector<event_record>> res) { called = res && res->size() == 1; });
  CHECK(called);
}

TEST_CASE("a listener of the memory journal may append from inside its callback without "
          "deadlock or reordering",
          "[memory]") {
  memory_journal j;
  std::vector<std::uint64_t> seen;
  j.subscribe([&](const std::vector<event_record>& batch) {
    for (const auto& rec : batch) {
      seen.push_back(rec.offset);
      if (rec.persistence_id == "a")
        j.append({"echo", rec.seq - 1, {ev("echo")}, {}}, [](caf::expected<append_result>) {});
    }
  });
  REQUIRE(append(j, "a", 0, {ev("e")}));
  REQUIRE(append(j, "a", 1, {ev("e")}));
  CHECK(seen == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(highest_seq(j, "echo") == std::uint64_t{2});
}

TEST_CASE("an injected failure fails appends without writing until it is cleared", "[memory]") {
  memory_journal j;
  j.fail_appends_with(make_error(journal_errc::disk_full, "simulated"));
  auto res = append(j, "a", 0, {ev("e")});
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::disk_full));
  CHECK(head_offset(j) == std::uint64_t{0});
  j.fail_appends_with({});
  REQUIRE(append(j, "a", 0, {ev("e")}));
}

TEST_CASE("wait_for returns annals timeout when the callback never runs", "[blocking]") {
  callback<int> kept; // never called while the wait lasts
  auto res = wait_for<int>([&](callback<int> done) { kept = std::move(done); },
                           std::chrono::milliseconds{1});
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), errc::timeout));
  kept(42); // a late reply is harmless
}

TEST_CASE("wait_for returns the callback's value or error", "[blocking]") {
  auto value = wait_for<int>([](callback<int> done) { done(7); }, bound);
  CHECK(value == 7);
  auto error = wait_for<int>(
    [](callback<int> done) { done(make_error(journal_errc::closed, "gone")); }, bound);
  REQUIRE_FALSE(error);
  CHECK(render(error.error()) == "journal.closed: gone");
}

#include <catch2/catch.hpp>

#include "actors/runtime_fixtures.hpp"
#include "annals/actors/host.hpp"
#include "match/match.hpp"
#include "match/projections.hpp"

using namespace rt;
using namespace match;
using annals::actors::host;

TEST_CASE("the scoreboard and the top scorers, fed by one log, agree with the matches",
          "[runtime][match]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  auto board = std::make_shared<scoreboard_projection>();
  auto scorers = std::make_shared<top_scorers_projection>();
  auto filter = annals::actors::event_filter::aggregate_type<match::football_match>();
  auto board_proj =
    annals::actors::spawn_projection(sys, journal, board, {.name = "scoreboard", .filter = filter});
  auto scorers_proj = annals::actors::spawn_projection(sys, journal, scorers,
                                                       {.name = "top_scorers", .filter = filter});
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<football_match>());
  const std::vector<std::string> ids{"m1", "m2", "m3"};
  for (auto& id : ids) {
    REQUIRE(h.ask<football_match>(id, schedule{"home-" + id, "away-" + id}));
    REQUIRE(h.ask<football_match>(id, kick_off{}));
  }
  // Goals interleaved across matches: m1 gets 3 (Kane twice), m2 gets 2, m3 none.
  REQUIRE(h.ask<football_match>("m1", score_goal{side::home, "Kane", 5}));
  REQUIRE(h.ask<football_match>("m2", score_goal{side::away, "Kerr", 9}));
  REQUIRE(h.ask<football_match>("m1", score_goal{side::away, "Messi", 20}));
  REQUIRE(h.ask<football_match>("m2", score_goal{side::away, "Kerr", 44}));
  REQUIRE(h.ask<football_match>("m1", score_goal{side::home, "Kane", 80}));
  REQUIRE_FALSE(h.ask<football_match>("m3", call_full_time{})); // refused: first half
  REQUIRE(h.ask<football_match>("m3", call_half_time{}));
  auto head =
    ap::wait_for<std::uint64_t>([&](auto cb) { journal->head_offset(std::move(cb)); }, 10s);
  REQUIRE(head);
  REQUIRE(board_proj.await_offset(*head, 30s));
  REQUIRE(scorers_proj.await_offset(*head, 30s));
  auto [lines, board_offset] = board->board();
  auto [top, scorers_offset] = scorers->top(2);
  CHECK(board_offset == *head);
  CHECK(scorers_offset == *head);
  for (auto& id : ids) {
    auto score = h.ask<football_match>(id, get_score{});
    REQUIRE(score);
    CHECK(lines.at(id).score == *score);
  }
  CHECK(lines.at("m3").period == phase::half_time);
  REQUIRE(top.size() == 2);
  CHECK(top[0] == std::pair<std::string, int>{"Kane", 2});
  CHECK(top[1] == std::pair<std::string, int>{"Kerr", 2});
}

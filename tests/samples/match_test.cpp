#include <catch2/catch.hpp>

#include "annals/testkit.hpp"
#include "match/match.hpp"

using namespace match;
using kit_type = annals::testkit<football_match>;

namespace {

// Puts `kit` in the first half of Ajax (home) against Celtic (away).
void kick_off_match(kit_type& kit) {
  kit.given(scheduled{"Ajax", "Celtic"}, kicked_off{});
}

} // namespace

TEST_CASE("a match runs from kick-off through half time to full time", "[match]") {
  kit_type kit;
  REQUIRE(kit.when(schedule{"Ajax", "Celtic"}).reply);
  REQUIRE(kit.when(kick_off{}).reply);
  CHECK(*kit.when(score_goal{side::home, "Cruyff", 12}).reply == scoreline{1, 0});
  REQUIRE(kit.when(call_half_time{}).reply);
  REQUIRE(kit.when(start_second_half{}).reply);
  CHECK(*kit.when(score_goal{side::away, "Larsson", 70}).reply == scoreline{1, 1});
  auto out = kit.when(call_full_time{});
  REQUIRE(out.reply);
  CHECK(out.state.period == phase::finished);
  kit.restart();
  CHECK(kit.state().score == scoreline{1, 1});
}

TEST_CASE("nothing happens before kick-off or after full time", "[match]") {
  kit_type kit;
  CHECK(annals::is(kit.when(kick_off{}).error(), match_errc::not_found));
  kit.given(scheduled{"Ajax", "Celtic"});
  CHECK(annals::is(kit.when(score_goal{side::home, "Cruyff", 1}).error(), match_errc::not_started));
  CHECK(annals::is(kit.when(call_half_time{}).error(), match_errc::not_started));
  kit.given(kicked_off{}, half_time_called{}, second_half_started{}, full_time_called{});
  CHECK(annals::is(kit.when(score_goal{side::home, "Cruyff", 91}).error(), match_errc::finished));
  CHECK(annals::is(kit.when(show_card{side::away, "Larsson", card_color::yellow, 92}).error(),
                   match_errc::finished));
  CHECK(annals::is(kit.when(kick_off{}).error(), match_errc::finished));
  CHECK(kit.journal().size() == 5);
}

TEST_CASE("play stops at half time; substitutions may happen in the break", "[match]") {
  kit_type kit;
  kick_off_match(kit);
  kit.given(half_time_called{});
  CHECK(
    annals::is(kit.when(score_goal{side::home, "Cruyff", 45}).error(), match_errc::wrong_period));
  CHECK(kit.when(substitute{side::home, "Cruyff", "Neeskens", 45}).reply);
  CHECK(annals::is(kit.when(call_full_time{}).error(), match_errc::wrong_period));
}

TEST_CASE("a player sent off plays no more", "[match]") {
  kit_type kit;
  kick_off_match(kit);
  auto red = kit.when(show_card{side::away, "Larsson", card_color::red, 30});
  REQUIRE(red.reply);
  CHECK(red.event<card_shown>().sent_off);
  CHECK(annals::is(kit.when(score_goal{side::away, "Larsson", 31}).error(),
                   match_errc::player_not_playing));
  CHECK(annals::is(kit.when(substitute{side::away, "Larsson", "Moravcik", 32}).error(),
                   match_errc::player_not_playing));
  // The same name on the other team is another player.
  CHECK(kit.when(score_goal{side::home, "Larsson", 33}).reply);
}

TEST_CASE("a second yellow card sends a player off", "[match]") {
  kit_type kit;
  kick_off_match(kit);
  auto first = kit.when(show_card{side::home, "Krol", card_color::yellow, 10});
  CHECK_FALSE(first.event<card_shown>().sent_off);
  auto second = kit.when(show_card{side::home, "Krol", card_color::yellow, 50});
  CHECK(second.event<card_shown>().sent_off);
  CHECK(annals::is(kit.when(score_goal{side::home, "Krol", 51}).error(),
                   match_errc::player_not_playing));
}

TEST_CASE("a team makes at most five substitutions, and a player taken off stays off", "[match]") {
  kit_type kit;
  kick_off_match(kit);
  for (int i = 0; i < max_substitutions; ++i)
    REQUIRE(
      kit.when(substitute{side::home, "p" + std::to_string(i), "s" + std::to_string(i), 60 + i})
        .reply);
  CHECK(annals::is(kit.when(substitute{side::home, "p9", "s9", 80}).error(),
                   match_errc::substitution_limit));
  CHECK(kit.when(substitute{side::away, "q1", "t1", 80}).reply);
  CHECK(
    annals::is(kit.when(score_goal{side::home, "p0", 85}).error(), match_errc::player_not_playing));
  CHECK(annals::is(kit.when(substitute{side::away, "t1", "q1", 86}).error(),
                   match_errc::player_not_playing));
  kit.restart();
  CHECK(kit.state().substitutions_home == 5);
}

TEST_CASE("bad match input is refused", "[match]") {
  kit_type kit;
  CHECK(annals::is(kit.when(schedule{"Ajax", "Ajax"}).error(), match_errc::invalid_argument));
  CHECK(annals::is(kit.when(schedule{"", "Celtic"}).error(), match_errc::invalid_argument));
  kit.given(scheduled{"Ajax", "Celtic"}, kicked_off{});
  CHECK(annals::is(kit.when(schedule{"Ajax", "Celtic"}).error(), match_errc::already_exists));
  CHECK(annals::is(kit.when(score_goal{side::home, "", 5}).error(), match_errc::invalid_argument));
  CHECK(annals::is(kit.when(score_goal{side::home, "Cruyff", 131}).error(),
                   match_errc::invalid_argument));
  CHECK(kit.journal().size() == 2);
}

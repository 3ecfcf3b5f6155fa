#pragma once

// The football match sample: an aggregate that models an activity rather than a thing.
// Its life is its events: scheduled, kicked off, goals, cards, substitutions, half time,
// full time. Invariants: nothing happens before kick-off or after full time, a player
// sent off (red card, or a second yellow) plays no more, and neither does a player who was
// substituted out; at most 5 substitutions per team.

#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include <boost/describe.hpp>

#include "annals/aggregate.hpp"
#include "annals/task.hpp"

namespace match {

enum class side : std::uint8_t { home, away };
BOOST_DESCRIBE_ENUM(side, home, away)

enum class card_color : std::uint8_t { yellow, red };
BOOST_DESCRIBE_ENUM(card_color, yellow, red)

enum class phase : std::uint8_t {
  unscheduled,
  scheduled,
  first_half,
  half_time,
  second_half,
  finished
};
BOOST_DESCRIBE_ENUM(phase, unscheduled, scheduled, first_half, half_time, second_half, finished)

// Commands.
struct schedule {
  std::string home;
  std::string away;
};
struct kick_off {};
struct score_goal {
  side team;
  std::string player;
  int minute;
};
struct show_card {
  side team;
  std::string player;
  card_color card;
  int minute;
};
struct substitute {
  side team;
  std::string player_out;
  std::string player_in;
  int minute;
};
struct call_half_time {};
struct start_second_half {};
struct call_full_time {};
struct get_score {};
struct get_match {};

// Events.
struct scheduled {
  static constexpr auto name = "match.scheduled";
  std::string home;
  std::string away;
};
struct kicked_off {
  static constexpr auto name = "match.kicked_off";
};
struct goal_scored {
  static constexpr auto name = "match.goal_scored";
  side team;
  std::string player;
  int minute;
};
struct card_shown {
  static constexpr auto name = "match.card_shown";
  side team;
  std::string player;
  card_color card;
  int minute;
  bool sent_off; // a red card, or the player's second yellow
};
struct substituted {
  static constexpr auto name = "match.substituted";
  side team;
  std::string player_out;
  std::string player_in;
  int minute;
};
struct half_time_called {
  static constexpr auto name = "match.half_time_called";
};
struct second_half_started {
  static constexpr auto name = "match.second_half_started";
};
struct full_time_called {
  static constexpr auto name = "match.full_time_called";
};
BOOST_DESCRIBE_STRUCT(scheduled, (), (home, away))
BOOST_DESCRIBE_STRUCT(kicked_off, (), ())
BOOST_DESCRIBE_STRUCT(goal_scored, (), (team, player, minute))
BOOST_DESCRIBE_STRUCT(card_shown, (), (team, player, card, minute, sent_off))
BOOST_DESCRIBE_STRUCT(substituted, (), (team, player_out, player_in, minute))
BOOST_DESCRIBE_STRUCT(half_time_called, (), ())
BOOST_DESCRIBE_STRUCT(second_half_started, (), ())
BOOST_DESCRIBE_STRUCT(full_time_called, (), ())

enum class match_errc : std::uint8_t {
  not_found = 1,      // no match was scheduled under this id
  already_exists,     // schedule on a match that exists
  not_started,        // play before kick-off
  finished,           // anything after full time
  wrong_period,       // e.g. half time during the second half
  player_not_playing, // sent off, or substituted out
  substitution_limit, // a sixth substitution
  invalid_argument,   // empty names, the same team twice, a minute outside 0..130
};
BOOST_DESCRIBE_ENUM(match_errc, not_found, already_exists, not_started, finished, wrong_period,
                    player_not_playing, substitution_limit, invalid_argument)
constexpr std::string_view error_category(match_errc) {
  return "match";
}

inline constexpr int max_substitutions = 5;

struct scoreline {
  int home = 0;
  int away = 0;
  friend bool operator==(const scoreline&, const scoreline&) = default;
};
BOOST_DESCRIBE_STRUCT(scoreline, (), (home, away))

struct match_state {
  static constexpr auto name = "match.match_state";
  phase period = phase::unscheduled;
  std::string home;
  std::string away;
  scoreline score;
  std::set<std::string> booked;    // "team/player" with one yellow card
  std::set<std::string> off_pitch; // "team/player" sent off or substituted out
  int substitutions_home = 0;
  int substitutions_away = 0;

  static std::string key(side t, const std::string& player) {
    return (t == side::home ? "home/" : "away/") + player;
  }
  bool playing() const {
    return period == phase::first_half || period == phase::second_half;
  }
  int substitutions(side t) const {
    return t == side::home ? substitutions_home : substitutions_away;
  }

  void apply(const scheduled& e) {
    period = phase::scheduled;
    home = e.home;
    away = e.away;
  }
  void apply(const kicked_off&) {
    period = phase::first_half;
  }
  void apply(const goal_scored& e) {
    ++(e.team == side::home ? score.home : score.away);
  }
  void apply(const card_shown& e) {
    if (e.sent_off)
      off_pitch.insert(key(e.team, e.player));
    else
      booked.insert(key(e.team, e.player));
  }
  void apply(const substituted& e) {
    off_pitch.insert(key(e.team, e.player_out));
    ++(e.team == side::home ? substitutions_home : substitutions_away);
  }
  void apply(const half_time_called&) {
    period = phase::half_time;
  }
  void apply(const second_half_started&) {
    period = phase::second_half;
  }
  void apply(const full_time_called&) {
    period = phase::finished;
  }

  friend bool operator==(const match_state&, const match_state&) = default;
};
BOOST_DESCRIBE_STRUCT(match_state, (),
                      (period, home, away, score, booked, off_pitch, substitutions_home,
                       substitutions_away))

/// What `get_match` answers: the whole state and its version (the newest event's seq).
struct match_view {
  match_state state;
  std::uint64_t version = 0;
};

class football_match
  : public annals::aggregate<match_state, scheduled, kicked_off, goal_scored, card_shown,
                             substituted, half_time_called, second_half_started, full_time_called> {
public:
  /// The aggregate type: persistence ids are `match|<match id>`.
  static constexpr auto name = "match";

  annals::task<scoreline> handle(schedule cmd) {
    if (state().period != phase::unscheduled)
      co_return match_errc::already_exists;
    if (cmd.home.empty() || cmd.away.empty() || cmd.home == cmd.away)
      co_return match_errc::invalid_argument;
    scheduled e{std::move(cmd.home), std::move(cmd.away)};
    co_await persist(e);
    co_return state().score;
  }

  annals::task<scoreline> handle(kick_off) {
    if (auto err = require(phase::scheduled))
      co_return err;
    co_await persist(kicked_off{});
    co_return state().score;
  }

  annals::task<scoreline> handle(score_goal cmd) {
    if (auto err = check_play(cmd.team, cmd.player, cmd.minute))
      co_return err;
    goal_scored e{cmd.team, std::move(cmd.player), cmd.minute};
    co_await persist(e);
    co_return state().score;
  }

  annals::task<scoreline> handle(show_card cmd) {
    if (auto err = check_play(cmd.team, cmd.player, cmd.minute))
      co_return err;
    bool second_yellow = cmd.card == card_color::yellow
                         && state().booked.count(match_state::key(cmd.team, cmd.player)) > 0;
    card_shown e{cmd.team, std::move(cmd.player), cmd.card, cmd.minute,
                 cmd.card == card_color::red || second_yellow};
    co_await persist(e);
    co_return state().score;
  }

  annals::task<scoreline> handle(substitute cmd) {
    if (state().period == phase::half_time) {
      // Substitutions are allowed in the break.
    } else if (auto err = check_play(cmd.team, cmd.player_out, cmd.minute)) {
      co_return err;
    }
    if (cmd.player_in.empty() || cmd.player_in == cmd.player_out)
      co_return match_errc::invalid_argument;
    if (state().off_pitch.count(match_state::key(cmd.team, cmd.player_out)) > 0
        || state().off_pitch.count(match_state::key(cmd.team, cmd.player_in)) > 0)
      co_return match_errc::player_not_playing;
    if (state().substitutions(cmd.team) >= max_substitutions)
      co_return match_errc::substitution_limit;
    substituted e{cmd.team, std::move(cmd.player_out), std::move(cmd.player_in), cmd.minute};
    co_await persist(e);
    co_return state().score;
  }

  annals::task<scoreline> handle(call_half_time) {
    if (auto err = require(phase::first_half))
      co_return err;
    co_await persist(half_time_called{});
    co_return state().score;
  }

  annals::task<scoreline> handle(start_second_half) {
    if (auto err = require(phase::half_time))
      co_return err;
    co_await persist(second_half_started{});
    co_return state().score;
  }

  annals::task<scoreline> handle(call_full_time) {
    if (auto err = require(phase::second_half))
      co_return err;
    co_await persist(full_time_called{});
    co_return state().score;
  }

  caf::expected<scoreline> handle(get_score) const {
    if (state().period == phase::unscheduled)
      return annals::make_error(match_errc::not_found, "no match was scheduled under this id");
    return state().score;
  }

  caf::expected<match_view> handle(get_match) const {
    if (state().period == phase::unscheduled)
      return annals::make_error(match_errc::not_found, "no match was scheduled under this id");
    return match_view{state(), version()};
  }

private:
  // The error for a match that is not in period `p`, or none.
  caf::error require(phase p) const {
    auto now = state().period;
    if (now == p)
      return {};
    if (now == phase::unscheduled)
      return annals::make_error(match_errc::not_found, "no match was scheduled under this id");
    if (now == phase::finished)
      return annals::make_error(match_errc::finished, "the match is over");
    if (now == phase::scheduled)
      return annals::make_error(match_errc::not_started, "the match has not kicked off");
    return annals::make_error(match_errc::wrong_period,
                              std::string{"the match is in its "}
                                + boost::describe::enum_to_string(now, "?") + " period");
  }

  // Play (goals, cards, substitutions) needs a running half and a player on the pitch.
  caf::error check_play(side t, const std::string& player, int minute) const {
    switch (state().period) {
      case phase::unscheduled:
        return annals::make_error(match_errc::not_found, "no match was scheduled under this id");
      case phase::scheduled:
        return annals::make_error(match_errc::not_started, "the match has not kicked off");
      case phase::finished:
        return annals::make_error(match_errc::finished, "the match is over");
      case phase::half_time:
        return annals::make_error(match_errc::wrong_period, "no play during half time");
      default:
        break;
    }
    if (player.empty() || minute < 0 || minute > 130)
      return annals::make_error(match_errc::invalid_argument,
                                "an empty player name, or a minute outside 0..130");
    if (state().off_pitch.count(match_state::key(t, player)) > 0)
      return annals::make_error(match_errc::player_not_playing, player + " is not on the pitch");
    return {};
  }
};

} // namespace match

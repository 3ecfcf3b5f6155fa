#pragma once

// Read models of football matches, both fed by the same ordered log: the live scoreboard
// (one line per match) and the top scorers across all matches. Both are in memory and
// at-least-once: each remembers the last offset it applied and skips anything at or below
// it, so a redelivered event changes nothing.

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "annals/actors/typed_projection.hpp"
#include "match/match.hpp"

namespace match {

class scoreboard_projection
  : public annals::actors::typed_projection<scoreboard_projection, football_match> {
public:
  struct line {
    std::string home;
    std::string away;
    scoreline score;
    phase period = phase::scheduled;
    friend bool operator==(const line&, const line&) = default;
  };

  // Every match event moves the offset and creates the match's line; `update` says what
  // else it changes.
  template <class E>
  void on(const E& e, const annals::actors::envelope& env) {
    std::lock_guard guard{mtx_};
    if (env.offset() <= offset_)
      return;
    offset_ = env.offset();
    update(lines_[std::string{env.entity_id()}], e);
  }

  void reset() override {
    std::lock_guard guard{mtx_};
    lines_.clear();
    offset_ = 0;
  }

  /// The board by match id, and the offset it reflects.
  using board_t = std::pair<std::map<std::string, line>, std::uint64_t>;

  /// A copy of the board, by match id, and the offset it reflects.
  board_t board() const {
    std::lock_guard guard{mtx_};
    return {lines_, offset_};
  }

private:
  static void update(line& l, const scheduled& e) {
    l.home = e.home;
    l.away = e.away;
  }
  static void update(line& l, const kicked_off&) {
    l.period = phase::first_half;
  }
  static void update(line& l, const goal_scored& e) {
    ++(e.team == side::home ? l.score.home : l.score.away);
  }
  static void update(line& l, const half_time_called&) {
    l.period = phase::half_time;
  }
  static void update(line& l, const second_half_started&) {
    l.period = phase::second_half;
  }
  static void update(line& l, const full_time_called&) {
    l.period = phase::finished;
  }
  template <class Other>
  static void update(line&, const Other&) {}

  mutable std::mutex mtx_;
  std::map<std::string, line> lines_;
  std::uint64_t offset_ = 0;
};

class top_scorers_projection
  : public annals::actors::typed_projection<top_scorers_projection, football_match> {
public:
  // Every match event moves the offset; goals count.
  template <class E>
  void on([[maybe_unused]] const E& e, const annals::actors::envelope& env) {
    std::lock_guard guard{mtx_};
    if (env.offset() <= offset_)
      return;
    offset_ = env.offset();
    if constexpr (std::is_same_v<E, goal_scored>)
      ++goals_[e.player];
  }

  void reset() override {
    std::lock_guard guard{mtx_};
    goals_.clear();
    offset_ = 0;
  }

  /// Players with their goals, and the offset they reflect.
  using top_t = std::pair<std::vector<std::pair<std::string, int>>, std::uint64_t>;

  /// The `n` players with the most goals (ties by name), and the offset this reflects.
  top_t top(std::size_t n) const {
    std::lock_guard guard{mtx_};
    std::vector<std::pair<std::string, int>> v(goals_.begin(), goals_.end());
    std::stable_sort(v.begin(), v.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    if (v.size() > n)
      v.resize(n);
    return {v, offset_};
  }

private:
  mutable std::mutex mtx_;
  std::map<std::string, int> goals_;
  std::uint64_t offset_ = 0;
};

} // namespace match

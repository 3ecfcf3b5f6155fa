#pragma once

// Read models of football matches, both fed by the same ordered log: the live scoreboard
// (one line per match) and the top scorers across all matches. Both are in memory and
// at-least-once: each remembers the last offset it applied and skips anything at or below
// it, so a redelivered event changes nothing.

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "annals/actors/projection.hpp"
#include "annals/error.hpp"
#include "match/match.hpp"

namespace match {

/// Decodes a match event, or throws (which stops the projection with the cause).
inline football_match::event_type decode(const annals::persistence::event_record& rec) {
  auto ev = football_match::codec_type::decode(rec.name, rec.version, rec.payload);
  if (!ev)
    throw std::runtime_error{annals::render(ev.error())};
  return std::move(*ev);
}

/// The id of a match from its persistence id (`match|<id>`).
inline std::string match_id(const annals::persistence::event_record& rec) {
  return rec.persistence_id.substr(rec.persistence_id.find('|') + 1);
}

class scoreboard_projection : public annals::actors::projection_handler {
public:
  struct line {
    std::string home;
    std::string away;
    scoreline score;
    phase period = phase::scheduled;
    friend bool operator==(const line&, const line&) = default;
  };

  void apply(const annals::persistence::event_record& rec) override {
    std::lock_guard guard{mtx_};
    if (rec.offset <= offset_)
      return;
    offset_ = rec.offset;
    auto& l = lines_[match_id(rec)];
    std::visit([&l](const auto& e) { on(l, e); }, decode(rec));
  }

  void reset() override {
    std::lock_guard guard{mtx_};
    lines_.clear();
    offset_ = 0;
  }

  /// A copy of the board, by match id, and the offset it reflects.
  std::pair<std::map<std::string, line>, std::uint64_t> board() const {
    std::lock_guard guard{mtx_};
    return {lines_, offset_};
  }

private:
  static void on(line& l, const scheduled& e) {
    l.home = e.home;
    l.away = e.away;
  }
  static void on(line& l, const kicked_off&) {
    l.period = phase::first_half;
  }
  static void on(line& l, const goal_scored& e) {
    ++(e.team == side::home ? l.score.home : l.score.away);
  }
  static void on(line& l, const half_time_called&) {
    l.period = phase::half_time;
  }
  static void on(line& l, const second_half_started&) {
    l.period = phase::second_half;
  }
  static void on(line& l, const full_time_called&) {
    l.period = phase::finished;
  }
  template <class Other>
  static void on(line&, const Other&) {}

  mutable std::mutex mtx_;
  std::map<std::string, line> lines_;
  std::uint64_t offset_ = 0;
};

class top_scorers_projection : public annals::actors::projection_handler {
public:
  void apply(const annals::persistence::event_record& rec) override {
    std::lock_guard guard{mtx_};
    if (rec.offset <= offset_)
      return;
    offset_ = rec.offset;
    auto ev = decode(rec);
    if (auto* goal = std::get_if<goal_scored>(&ev))
      ++goals_[goal->player];
  }

  void reset() override {
    std::lock_guard guard{mtx_};
    goals_.clear();
    offset_ = 0;
  }

  /// The `n` players with the most goals (ties by name), and the offset this reflects.
  std::pair<std::vector<std::pair<std::string, int>>, std::uint64_t> top(std::size_t n) const {
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

#pragma once

// The football read models of projections.hpp kept in Redis by exactly-once projections
// (annals/actors/redis_projection.hpp; link annals::actors_redis), and their readers.
//
// Keys, under each projection's key prefix (`<name>:` by default):
// - scoreboard: the set `matches` of match ids, and one hash `match:<id>` per match with
//   the fields home, away, home_goals, away_goals, period;
// - top scorers: the sorted set `goals`, one member per player whose score is minus their
//   goals (ZINCRBY -1), so that `ZRANGE 0 n-1` lists the most goals first and ties by name
//   in ascending order, as the in-memory model does.

#include <charconv>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/describe/enum_to_string.hpp>

#include "annals/actors/redis_projection.hpp"
#include "annals/error.hpp"
#include "match/match.hpp"
#include "match/projections.hpp"

namespace match {

class redis_scoreboard
  : public annals::actors::typed_redis_projection<redis_scoreboard, football_match> {
public:
  using batch = annals::actors::redis_batch;
  using envelope = annals::actors::envelope;

  void on(const scheduled& e, const envelope& env, batch& b) {
    auto id = std::string{env.entity_id()};
    b.command({"SADD", b.key("matches"), id});
    b.command({"HSET", line_key(b, env), "home", e.home, "away", e.away, "home_goals", "0",
               "away_goals", "0", "period", "scheduled"});
  }
  void on(const kicked_off&, const envelope& env, batch& b) {
    period(b, env, phase::first_half);
  }
  void on(const goal_scored& e, const envelope& env, batch& b) {
    b.command(
      {"HINCRBY", line_key(b, env), e.team == side::home ? "home_goals" : "away_goals", "1"});
  }
  void on(const half_time_called&, const envelope& env, batch& b) {
    period(b, env, phase::half_time);
  }
  void on(const second_half_started&, const envelope& env, batch& b) {
    period(b, env, phase::second_half);
  }
  void on(const full_time_called&, const envelope& env, batch& b) {
    period(b, env, phase::finished);
  }

private:
  static std::string line_key(const batch& b, const envelope& env) {
    return b.key("match:") + std::string{env.entity_id()};
  }
  static void period(batch& b, const envelope& env, phase p) {
    b.command({"HSET", line_key(b, env), "period", boost::describe::enum_to_string(p, "?")});
  }
};

class redis_top_scorers
  : public annals::actors::typed_redis_projection<redis_top_scorers, football_match> {
public:
  void on(const goal_scored& e, const annals::actors::envelope&, annals::actors::redis_batch& b) {
    b.command({"ZINCRBY", b.key("goals"), "-1", e.player});
  }
};

/// Reads the two models from Redis for the service's queries: each read is one atomic
/// step on the server (a script for the board, a transaction for the scorers), so the
/// rows and the offset they reflect agree. Thread-safe (one connection, used in turns);
/// reconnects after a lost connection.
class redis_match_reader {
public:
  using board_t = scoreboard_projection::board_t;
  using top_t = top_scorers_projection::top_t;

  redis_match_reader(std::string url, std::string board_prefix, std::string scorers_prefix)
    : url_(std::move(url)), board_prefix_(std::move(board_prefix)),
      scorers_prefix_(std::move(scorers_prefix)) {}

  /// The board by match id, and the offset of the scoreboard projection.
  caf::expected<board_t> board() {
    static constexpr const char* script = R"lua(
local out = {redis.call('GET', KEYS[2]) or '0'}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. id)
end
return out)lua";
    std::lock_guard guard{mtx_};
    auto r = run({"EVAL", script, "2", board_prefix_ + "matches",
                  annals::actors::redis_offset_key(board_prefix_), board_prefix_ + "match:"});
    if (!r)
      return std::move(r.error());
    if (r->type != annals::actors::redis_value::kind::array || r->elements.empty())
      return unexpected("the scoreboard script", *r);
    board_t out;
    out.second = annals::actors::redis_offset_of(r->elements[0]);
    for (std::size_t i = 1; i + 1 < r->elements.size(); i += 2) {
      auto& l = out.first[r->elements[i].text];
      const auto& fields = r->elements[i + 1].elements;
      for (std::size_t f = 0; f + 1 < fields.size(); f += 2) {
        const auto& name = fields[f].text;
        const auto& value = fields[f + 1].text;
        if (name == "home")
          l.home = value;
        else if (name == "away")
          l.away = value;
        else if (name == "home_goals")
          l.score.home = number(value);
        else if (name == "away_goals")
          l.score.away = number(value);
        else if (name == "period")
          boost::describe::enum_from_string(value.c_str(), l.period);
      }
    }
    return out;
  }

  /// The `n` players with the most goals (ties by name), and the offset of the scorers
  /// projection.
  caf::expected<top_t> top(std::size_t n) {
    std::lock_guard guard{mtx_};
    if (auto err = ensure_connected())
      return err;
    auto r = client_->transaction(
      {{"ZRANGE", scorers_prefix_ + "goals", "0", std::to_string(n == 0 ? 0 : n - 1), "WITHSCORES"},
       {"GET", annals::actors::redis_offset_key(scorers_prefix_)}});
    if (!r)
      return std::move(r.error());
    top_t out;
    if (n > 0) {
      const auto& rows = (*r)[0].elements;
      for (std::size_t i = 0; i + 1 < rows.size(); i += 2)
        out.first.emplace_back(rows[i].text, -number(rows[i + 1].text));
    }
    out.second = annals::actors::redis_offset_of((*r)[1]);
    return out;
  }

private:
  static int number(const std::string& s) {
    int v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
  }

  caf::error ensure_connected() {
    if (client_ && client_->connected())
      return {};
    client_.reset();
    auto c = annals::actors::redis_client::connect(url_, std::chrono::seconds{5});
    if (!c)
      return std::move(c.error());
    client_.emplace(std::move(*c));
    return {};
  }

  caf::expected<annals::actors::redis_value> run(std::initializer_list<std::string_view> argv) {
    if (auto err = ensure_connected())
      return err;
    return client_->command(argv);
  }

  caf::error unexpected(const char* what, const annals::actors::redis_value& v) const {
    return annals::make_error(annals::actors::projection_errc::read_model_failed,
                              std::string{what} + " on Redis " + client_->where()
                                + " answered unexpectedly"
                                + (v.text.empty() ? std::string{} : ": " + v.text));
  }

  std::mutex mtx_;
  std::string url_;
  std::string board_prefix_;
  std::string scorers_prefix_;
  std::optional<annals::actors::redis_client> client_;
};

} // namespace match

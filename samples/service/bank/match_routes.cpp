#include <string>
#include <utility>
#include <variant>

#include <boost/json/array.hpp>

#include "match/match.hpp"
#include "service/bank/history_routes.hpp"
#include "service/bank/request_fields.hpp"
#include "service/bank/routes.hpp"

namespace service {

namespace json = boost::json;

namespace {

match::side parse_side(const body_fields& f) {
  auto s = f.text("team");
  if (s == "home")
    return match::side::home;
  if (s == "away")
    return match::side::away;
  throw api_error{422, "invalid_field", "field 'team' must be \"home\" or \"away\""};
}

int parse_minute(const body_fields& f) {
  auto m = f.integer("minute");
  if (m < 0 || m > 130)
    throw api_error{422, "invalid_field", "field 'minute' must be in 0..130"};
  return static_cast<int>(m);
}

// A command on a match, answered with `status` and {"id", "score"}.
template <class C>
void match_command(bank_context& ctx, const http::request& req, const std::string& id, C cmd,
                   unsigned status, http::responder& respond) {
  ctx.command<match::football_match>(
    req, id, std::move(cmd), status,
    [id](const match::scoreline& s) {
      return json::object{{"id", id}, {"score", score_json(s)}};
    },
    respond);
}

using phase_command = std::variant<match::kick_off, match::call_half_time, match::start_second_half,
                                   match::call_full_time>;

// The commands that move a match to its next period, `POST /matches/{id}/<action>` with an
// empty body (or {}).
struct phase_route {
  const char* action;
  phase_command cmd;
};

const phase_route phase_routes[] = {
  {"kick-off", match::kick_off{}},
  {"half-time", match::call_half_time{}},
  {"second-half", match::start_second_half{}},
  {"full-time", match::call_full_time{}},
};

} // namespace

void add_match_routes(bank_context& ctx) {
  auto& routes = ctx.routes;

  routes.add("POST", {"matches"}, [&ctx](req_t req, args_t, resp_t respond) {
    body_fields f{req.body, {"id", "home", "away"}};
    auto id = check_id("match id", f.text("id"));
    match_command(ctx, req, id, match::schedule{f.text("home"), f.text("away")}, 201, respond);
  });
  for (const auto& r : phase_routes)
    routes.add("POST", {"matches", "*", r.action}, [&ctx, &r](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {}};
      auto id = check_id("match id", a[0]);
      std::visit([&](auto cmd) { match_command(ctx, req, id, std::move(cmd), 200, respond); },
                 r.cmd);
    });
  routes.add("POST", {"matches", "*", "goals"}, [&ctx](req_t req, args_t a, resp_t respond) {
    body_fields f{req.body, {"team", "player", "minute"}};
    match_command(ctx, req, check_id("match id", a[0]),
                  match::score_goal{parse_side(f), f.text("player"), parse_minute(f)}, 200,
                  respond);
  });
  routes.add("POST", {"matches", "*", "cards"}, [&ctx](req_t req, args_t a, resp_t respond) {
    body_fields f{req.body, {"team", "player", "card", "minute"}};
    auto card = f.text("card");
    if (card != "yellow" && card != "red")
      throw api_error{422, "invalid_field", "field 'card' must be \"yellow\" or \"red\""};
    match_command(
      ctx, req, check_id("match id", a[0]),
      match::show_card{parse_side(f), f.text("player"),
                       card == "red" ? match::card_color::red : match::card_color::yellow,
                       parse_minute(f)},
      200, respond);
  });
  routes.add(
    "POST", {"matches", "*", "substitutions"}, [&ctx](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {"team", "out", "in", "minute"}};
      match_command(ctx, req, check_id("match id", a[0]),
                    match::substitute{parse_side(f), f.text("out"), f.text("in"), parse_minute(f)},
                    200, respond);
    });
  routes.add("GET", {"matches", "*"}, [&ctx](req_t req, args_t a, resp_t respond) {
    auto id = check_id("match id", a[0]);
    ctx.command<match::football_match>(
      req, id, match::get_match{}, 200,
      [id](const match::match_view& v) { return match_json(id, v.state, v.version); }, respond);
  });
  routes.add("GET", {"matches", "*", "events"}, [&ctx](req_t req, args_t a, resp_t respond) {
    events_route(ctx, req, match::football_match::name, a[0], respond);
  });
  routes.add("GET", {"matches", "*", "state"}, [&ctx](req_t req, args_t a, resp_t respond) {
    state_route<match::football_match>(ctx, req, match::football_match::name, a[0], respond);
  });
  routes.add("GET", {"matches"}, [&ctx](req_t req, args_t, resp_t respond) {
    ctx.on_worker(respond, [&ctx, req] {
      ctx.maybe_fresh(req, "scoreboard");
      auto [lines, offset] = ctx.read_board();
      json::array rows;
      for (const auto& [id, l] : lines)
        rows.push_back(json::object{{"id", id},
                                    {"home", l.home},
                                    {"away", l.away},
                                    {"score", score_json(l.score)},
                                    {"period", enum_name(l.period)}});
      return json_response(200, json::object{{"offset", offset}, {"matches", std::move(rows)}});
    });
  });
  routes.add("GET", {"scorers"}, [&ctx](req_t req, args_t, resp_t respond) {
    auto limit = query_number(req, "limit", 10, 1, 1000);
    ctx.on_worker(respond, [&ctx, req, limit] {
      ctx.maybe_fresh(req, "scorers");
      auto [top, offset] = ctx.read_scorers(limit);
      json::array rows;
      for (const auto& [player, goals] : top)
        rows.push_back(json::object{{"player", player}, {"goals", goals}});
      return json_response(200, json::object{{"offset", offset}, {"scorers", std::move(rows)}});
    });
  });
}

} // namespace service

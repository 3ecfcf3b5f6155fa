// annals-bank started with --redis: the real binary (service_process.hpp) serves the
// scoreboard and the top scorers from a redis-server the test starts (redis_server.hpp).
// The replies have the shapes of the in-memory models; the rows are read in Redis too,
// and a restart of the service neither loses nor re-applies an event (goals counted by
// HINCRBY / ZINCRBY would double). Built when the samples (annals-bank) are.

#ifdef ANNALS_BANK_BINARY

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "redis/redis_server.hpp"
#include "service/http_client.hpp"
#include "service/service_process.hpp"

namespace {

namespace json = boost::json;
using service::http::client;
using service_test::service_process;

json::object expect(client& c, unsigned status, std::string_view method, std::string_view target,
                    std::string_view body = {}) {
  auto r = c.request(method, target, body, {});
  INFO(method << ' ' << target << ' ' << body << ": " << r.error());
  REQUIRE(r.ok());
  INFO("-> " << r->status << ' ' << r->body);
  REQUIRE(r->status == status);
  auto v = json::parse(r->body);
  REQUIRE(v.is_object());
  return v.as_object();
}

std::string goal(std::string_view team, std::string_view player, int minute) {
  return R"({"team":")" + std::string{team} + R"(","player":")" + std::string{player}
         + R"(","minute":)" + std::to_string(minute) + "}";
}

std::int64_t head_offset(client& c) {
  return expect(c, 200, "GET", "/health").at("journal").at("head_offset").to_number<std::int64_t>();
}

// The board and the scorers as the service serves them, checked against the events the
// test sent.
void check_models(client& c) {
  auto head = head_offset(c);
  auto board = expect(c, 200, "GET", "/matches?fresh=1");
  CHECK(board.at("offset").to_number<std::int64_t>() == head);
  std::map<std::string, json::object> lines;
  for (const auto& l : board.at("matches").as_array())
    lines[std::string{l.at("id").as_string()}] = l.as_object();
  REQUIRE(lines.size() == 2);
  CHECK(lines["m-1"].at("home").as_string() == "Rovers");
  CHECK(lines["m-1"].at("away").as_string() == "United");
  CHECK(lines["m-1"].at("score").at("home").to_number<int>() == 2);
  CHECK(lines["m-1"].at("score").at("away").to_number<int>() == 1);
  CHECK(lines["m-1"].at("period").as_string() == "second_half");
  CHECK(lines["m-2"].at("period").as_string() == "first_half");
  CHECK(lines["m-2"].at("score").at("home").to_number<int>() == 1);

  auto scorers = expect(c, 200, "GET", "/scorers?fresh=1");
  CHECK(scorers.at("offset").to_number<std::int64_t>() == head);
  std::vector<std::pair<std::string, int>> top;
  for (const auto& s : scorers.at("scorers").as_array())
    top.emplace_back(std::string{s.at("player").as_string()}, s.at("goals").to_number<int>());
  // The most goals first, ties by name.
  CHECK(top
        == std::vector<std::pair<std::string, int>>{
          {"Kane", 2}, {"Alan", 1}, {"Rashford", 1}, {"Zed", 1}});
  auto one = expect(c, 200, "GET", "/scorers?fresh=1&limit=1");
  CHECK(one.at("scorers").as_array().size() == 1);
}

} // namespace

TEST_CASE("annals-bank --redis serves the scoreboard and the top scorers from Redis",
          "[redis][service]") {
  annals::persistence::test::redis_server redis;
  service_process svc{std::vector<std::string>{"--redis", redis.url()}};
  auto c = svc.client();
  expect(c, 201, "POST", "/matches", R"({"id":"m-1","home":"Rovers","away":"United"})");
  expect(c, 201, "POST", "/matches", R"({"id":"m-2","home":"City","away":"Town"})");
  expect(c, 200, "POST", "/matches/m-1/kick-off");
  expect(c, 200, "POST", "/matches/m-2/kick-off");
  expect(c, 200, "POST", "/matches/m-1/goals", goal("home", "Kane", 10));
  expect(c, 200, "POST", "/matches/m-1/goals", goal("away", "Rashford", 20));
  expect(c, 200, "POST", "/matches/m-2/goals", goal("home", "Zed", 21));
  expect(c, 200, "POST", "/matches/m-1/half-time");
  expect(c, 200, "POST", "/matches/m-1/second-half");
  expect(c, 200, "POST", "/matches/m-1/goals", goal("home", "Kane", 50));
  expect(c, 200, "POST", "/matches/m-2/goals", goal("away", "Alan", 55));
  check_models(c);

  // The rows are Redis's: a hash per match, a sorted set of goals (scores negated).
  auto rc = redis.client();
  auto home = rc.command({"HGET", "scoreboard:match:m-1", "home_goals"});
  REQUIRE(home);
  CHECK(home->text == "2");
  auto kane = rc.command({"ZSCORE", "scorers:goals", "Kane"});
  REQUIRE(kane);
  CHECK(kane->text == "-2");
  auto offset = rc.command({"GET", annals::actors::redis_offset_key("scorers:")});
  REQUIRE(offset);
  CHECK(static_cast<std::int64_t>(annals::actors::redis_offset_of(*offset)) == head_offset(c));

  // After a SIGKILL and a restart the projections go on from their stored offsets.
  svc.restart();
  auto c2 = svc.client();
  check_models(c2);
  auto health = expect(c2, 200, "GET", "/health");
  CHECK(health.at("status").as_string() == "ok");

  // Redis goes away: the two routes answer 503 while commands go on; once it is back the
  // projections apply what they missed, once.
  redis.kill9();
  auto down = c2.request("GET", "/scorers", {}, {});
  REQUIRE(down.ok());
  CHECK(down->status == 503);
  CHECK_THAT(down->body, Catch::Contains("read_model_unavailable"));
  expect(c2, 200, "POST", "/matches/m-2/goals", goal("away", "Alan", 80));
  redis.start();
  auto after = expect(c2, 200, "GET", "/scorers?fresh=1&limit=2");
  const auto& rows = after.at("scorers").as_array();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].at("player").as_string() == "Alan");
  CHECK(rows[0].at("goals").to_number<int>() == 2);
  CHECK(rows[1].at("player").as_string() == "Kane");
  CHECK(rows[1].at("goals").to_number<int>() == 2);
  auto board = expect(c2, 200, "GET", "/matches?fresh=1");
  for (const auto& l : board.at("matches").as_array())
    if (l.at("id").as_string() == "m-2")
      CHECK(l.at("score").at("away").to_number<int>() == 2);
}

TEST_CASE("annals-bank --redis refuses to start when Redis does not answer", "[redis][service]") {
  auto port = annals::persistence::test::free_port(); // nobody listens there
  auto url = "redis://127.0.0.1:" + std::to_string(port);
  CHECK_THROWS_WITH((service_process{std::vector<std::string>{"--redis", url}}),
                    Catch::Contains("127.0.0.1:" + std::to_string(port)));
}

#endif // ANNALS_BANK_BINARY

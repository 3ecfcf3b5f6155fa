// GET /feed and GET /feed/contract of annals-bank: the public messages read from the
// journal, resumed by position, and the long poll that a commit answers.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include "service/http_client.hpp"
#include "service_process.hpp"

namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using service::http::client;
using service_test::service_process;

// Sends one request, requires `status` and a JSON object body, and returns that object.
json::object expect(client& c, unsigned status, std::string_view method, std::string_view target,
                    std::string_view body = {},
                    std::chrono::milliseconds timeout = std::chrono::seconds{10}) {
  auto r = c.request(method, target, body, {}, timeout);
  INFO(method << ' ' << target << ' ' << body);
  INFO("transport error: " << r.error());
  REQUIRE(r.ok());
  INFO("-> " << r->status << ' ' << r->body);
  REQUIRE(r->status == status);
  boost::system::error_code ec;
  auto v = json::parse(r->body, ec);
  REQUIRE(!ec);
  REQUIRE(v.is_object());
  return v.as_object();
}

std::uint64_t u64(const json::object& o, std::string_view field) {
  INFO(field << " in " << json::serialize(o));
  REQUIRE(o.contains(field));
  return json::value_to<std::uint64_t>(o.at(field));
}

std::string str(const json::object& o, std::string_view field) {
  INFO(field << " in " << json::serialize(o));
  REQUIRE(o.contains(field));
  REQUIRE(o.at(field).is_string());
  return std::string{o.at(field).as_string()};
}

struct page {
  std::vector<json::object> messages;
  std::uint64_t next = 0;
};

page read_page(const json::object& body) {
  page p;
  REQUIRE(body.contains("messages"));
  REQUIRE(body.at("messages").is_array());
  for (const auto& m : body.at("messages").as_array()) {
    REQUIRE(m.is_object());
    p.messages.push_back(m.as_object());
  }
  p.next = u64(body, "next");
  return p;
}

page feed(client& c, const std::string& query) {
  return read_page(expect(c, 200, "GET", "/feed" + query));
}

// A long poll for another thread: no assertions there (Catch2's are not thread-safe); the
// caller checks the answer with `read_page(parse_poll(...))`.
std::pair<unsigned, std::string> poll_raw(const service_process& svc, std::uint64_t after) {
  auto pc = svc.client();
  auto r = pc.request("GET", "/feed?wait=20&after=" + std::to_string(after), {}, {},
                      std::chrono::seconds{25});
  if (!r.ok())
    return {0, r.error()};
  return {r->status, r->body};
}

json::object parse_poll(const std::pair<unsigned, std::string>& answer) {
  INFO(answer.first << ' ' << answer.second);
  REQUIRE(answer.first == 200);
  boost::system::error_code ec;
  auto v = json::parse(answer.second, ec);
  REQUIRE(!ec);
  REQUIRE(v.is_object());
  return v.as_object();
}

void open_account(client& c, const std::string& id) {
  expect(c, 201, "POST", "/accounts", R"({"id":")" + id + R"(","owner":"Ada"})");
}

void deposit(client& c, const std::string& id, std::int64_t cents) {
  expect(c, 200, "POST", "/accounts/" + id + "/deposit",
         "{\"amount\":" + std::to_string(cents) + "}");
}

void schedule_match(client& c, const std::string& id) {
  expect(c, 201, "POST", "/matches", R"({"id":")" + id + R"(","home":"Rovers","away":"United"})");
}

// Checks the wire form's envelope: the id is `bank:<position>`.
void check_envelope(const json::object& m, std::string_view type, std::string_view key) {
  CHECK(str(m, "type") == type);
  CHECK(str(m, "key") == key);
  CHECK(u64(m, "version") == 1);
  CHECK(str(m, "id") == "bank:" + std::to_string(u64(m, "position")));
}

} // namespace

TEST_CASE("annals-bank: the feed lists public messages in journal order, skips unmapped events "
          "and resumes after a position",
          "[service][feed]") {
  service_process svc;
  auto c = svc.client();
  open_account(c, "acc-1");
  deposit(c, "acc-1", 500);
  expect(c, 200, "POST", "/accounts/acc-1/withdraw", R"({"amount":200})");
  schedule_match(c, "m-1"); // an internal event with no public message
  open_account(c, "acc-2");
  deposit(c, "acc-2", 100);

  auto all = feed(c, "");
  REQUIRE(all.messages.size() == 5);
  check_envelope(all.messages[0], "payments.AccountOpened", "acc-1");
  check_envelope(all.messages[1], "payments.AccountCredited", "acc-1");
  check_envelope(all.messages[2], "payments.AccountDebited", "acc-1");
  check_envelope(all.messages[3], "payments.AccountOpened", "acc-2");
  check_envelope(all.messages[4], "payments.AccountCredited", "acc-2");
  CHECK(u64(all.messages[1].at("data").as_object(), "amount") == 500);
  CHECK(u64(all.messages[2].at("data").as_object(), "amount") == 200);
  CHECK(str(all.messages[4].at("data").as_object(), "currency") == "EUR");
  for (std::size_t i = 1; i < all.messages.size(); ++i)
    CHECK(u64(all.messages[i - 1], "position") < u64(all.messages[i], "position"));
  CHECK(all.next == u64(all.messages[4], "position"));

  // Resuming after the second message, two at a time.
  auto second = u64(all.messages[1], "position");
  auto p1 = feed(c, "?after=" + std::to_string(second) + "&limit=2");
  REQUIRE(p1.messages.size() == 2);
  CHECK(p1.messages[0] == all.messages[2]);
  CHECK(p1.messages[1] == all.messages[3]);
  CHECK(p1.next == u64(all.messages[3], "position"));
  auto p2 = feed(c, "?after=" + std::to_string(p1.next) + "&limit=2");
  REQUIRE(p2.messages.size() == 1);
  CHECK(p2.messages[0] == all.messages[4]);
  CHECK(p2.next == all.next);

  // At the end: nothing, and the same position.
  auto end = feed(c, "?after=" + std::to_string(all.next));
  CHECK(end.messages.empty());
  CHECK(end.next == all.next);

  // Unmapped events after the last message: no message, but `next` moves past them so that a
  // consumer does not read them again.
  schedule_match(c, "m-2");
  auto skipped = feed(c, "?after=" + std::to_string(all.next));
  CHECK(skipped.messages.empty());
  CHECK(skipped.next > all.next);
  auto again = feed(c, "?after=" + std::to_string(skipped.next));
  CHECK(again.messages.empty());
  CHECK(again.next == skipped.next);
}

TEST_CASE("annals-bank: the feed contract lists the public message types", "[service][feed]") {
  service_process svc;
  auto c = svc.client();
  auto body = expect(c, 200, "GET", "/feed/contract");
  CHECK(str(body, "source") == "bank");
  REQUIRE(body.at("types").is_array());
  std::vector<std::string> types;
  for (const auto& t : body.at("types").as_array()) {
    types.push_back(str(t.as_object(), "type"));
    CHECK(u64(t.as_object(), "version") == 1);
    CHECK(str(t.as_object(), "aggregate") == "account");
  }
  CHECK(types
        == std::vector<std::string>{"payments.AccountOpened", "payments.AccountCredited",
                                    "payments.AccountDebited", "payments.AccountClosed"});
}

TEST_CASE("annals-bank: a long poll on the feed is answered by the next public message, not by "
          "unmapped events",
          "[service][feed]") {
  service_process svc;
  auto c = svc.client();
  open_account(c, "acc-1");
  auto start = feed(c, "");
  REQUIRE(start.messages.size() == 1);

  auto poll = std::async(std::launch::async, poll_raw, std::cref(svc), start.next);
  schedule_match(c, "m-1"); // wakes the poll, which finds no message and waits on
  deposit(c, "acc-1", 700);
  REQUIRE(poll.wait_for(std::chrono::seconds{25}) == std::future_status::ready);
  auto got = read_page(parse_poll(poll.get()));
  REQUIRE(got.messages.size() == 1);
  check_envelope(got.messages[0], "payments.AccountCredited", "acc-1");
  CHECK(u64(got.messages[0].at("data").as_object(), "amount") == 700);
  CHECK(got.next == u64(got.messages[0], "position"));
}

TEST_CASE("annals-bank: a long poll on the feed that sees no commit answers an empty page with "
          "the same position",
          "[service][feed]") {
  service_process svc;
  auto c = svc.client();
  open_account(c, "acc-1");
  // The head as the feed sees it: the opened account's message. A journal read may end a
  // page early (JetStream under load), so read until it is there, with a bound.
  auto start = feed(c, "");
  for (auto until = std::chrono::steady_clock::now() + 10s;
       start.messages.empty() && std::chrono::steady_clock::now() < until;)
    start = feed(c, "");
  REQUIRE(start.messages.size() == 1);
  auto t0 = std::chrono::steady_clock::now();
  auto got = feed(c, "?wait=1&after=" + std::to_string(start.next));
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(got.messages.empty());
  CHECK(got.next == start.next);
  CHECK(waited >= 900ms); // it did wait for the bound instead of answering at once
}

TEST_CASE("annals-bank: waiting long polls hold no HTTP thread: more of them than server "
          "threads, and other requests are still answered",
          "[service][feed]") {
  service_process svc; // two server threads
  auto c = svc.client();
  open_account(c, "acc-1");
  auto start = feed(c, "");
  std::vector<std::future<std::pair<unsigned, std::string>>> polls;
  for (int i = 0; i < 4; ++i)
    polls.push_back(std::async(std::launch::async, poll_raw, std::cref(svc), start.next));
  // Answered while the polls wait (were they holding both threads, it would wait for them).
  for (int i = 0; i < 3; ++i) {
    auto other = svc.client();
    expect(other, 200, "GET", "/feed/contract");
  }
  for (auto& p : polls)
    CHECK(p.wait_for(0s) == std::future_status::timeout);
  deposit(c, "acc-1", 5);
  for (auto& p : polls) {
    REQUIRE(p.wait_for(std::chrono::seconds{25}) == std::future_status::ready);
    auto got = read_page(parse_poll(p.get()));
    REQUIRE(got.messages.size() == 1);
    CHECK(str(got.messages[0], "type") == "payments.AccountCredited");
  }
}

TEST_CASE("annals-bank: the feed refuses malformed parameters with 400 naming the parameter",
          "[service][feed]") {
  service_process svc;
  auto c = svc.client();
  const std::vector<std::pair<std::string, std::string>> bad = {
    {"after", "?after=abc"}, {"after", "?after=-1"},   {"after", "?after=1x"},
    {"limit", "?limit=0"},   {"limit", "?limit=1001"}, {"limit", "?limit=ten"},
    {"wait", "?wait=31"},    {"wait", "?wait=-1"},     {"wait", "?wait=1.5"}};
  for (const auto& [param, query] : bad) {
    INFO(query);
    auto body = expect(c, 400, "GET", "/feed" + query);
    CHECK(str(body, "error") == "invalid_query");
    CHECK(str(body, "message").find("'" + param + "'") != std::string::npos);
  }
  // The bounds themselves are accepted.
  feed(c, "?after=0&limit=1000&wait=0");
  feed(c, "?limit=1");
}

// End-to-end tests of annals-bank: each test case starts the real binary as a child process
// on a fresh journal and a free loopback port, and talks HTTP to it.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
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
using header_list = std::vector<std::pair<std::string, std::string>>;

// ---------------------------------------------------------------------------------------
// Requests and replies

struct reply {
  unsigned status = 0;
  std::string text;
  json::value body; // null when the body is not JSON
  std::map<std::string, std::string> headers;
};

// Sends one request; a transport error fails the test.
reply call(client& c, std::string_view method, std::string_view target, std::string_view body = {},
           header_list headers = {}) {
  auto r = c.request(method, target, body, std::move(headers));
  INFO(method << ' ' << target << ' ' << body);
  INFO("transport error: " << r.error());
  REQUIRE(r.ok());
  reply out{r->status, r->body, {}, r->headers};
  boost::system::error_code ec;
  auto v = json::parse(out.text, ec);
  if (!ec)
    out.body = std::move(v);
  return out;
}

// Sends one request, requires `status` and a JSON object body, and returns that object.
json::object expect(client& c, unsigned status, std::string_view method, std::string_view target,
                    std::string_view body = {}, header_list headers = {}) {
  auto r = call(c, method, target, body, std::move(headers));
  INFO(method << ' ' << target << ' ' << body << " -> " << r.status << ' ' << r.text);
  REQUIRE(r.status == status);
  REQUIRE(r.body.is_object());
  return r.body.as_object();
}

// Sends one request and requires the error reply {"error": code, "message": ...}.
json::object expect_error(client& c, unsigned status, std::string_view code,
                          std::string_view method, std::string_view target,
                          std::string_view body = {}, header_list headers = {}) {
  auto o = expect(c, status, method, target, body, std::move(headers));
  INFO(method << ' ' << target << ' ' << body << " -> " << json::serialize(o));
  CHECK(o.size() == 2);
  REQUIRE(o.contains("error"));
  REQUIRE(o.at("error").is_string());
  CHECK(o.at("error").as_string() == code);
  REQUIRE(o.contains("message"));
  CHECK(o.at("message").is_string());
  CHECK(!o.at("message").as_string().empty());
  return o;
}

// ---------------------------------------------------------------------------------------
// JSON fields

const json::value& field(const json::object& o, std::string_view key) {
  INFO("field '" << key << "' in " << json::serialize(o));
  auto* v = o.if_contains(key);
  REQUIRE(v != nullptr);
  return *v;
}

std::int64_t num(const json::object& o, std::string_view key) {
  const auto& v = field(o, key);
  INFO("field '" << key << "' in " << json::serialize(o));
  REQUIRE((v.is_int64() || v.is_uint64()));
  return v.to_number<std::int64_t>();
}

std::string str(const json::object& o, std::string_view key) {
  const auto& v = field(o, key);
  INFO("field '" << key << "' in " << json::serialize(o));
  REQUIRE(v.is_string());
  return std::string{v.as_string()};
}

bool flag(const json::object& o, std::string_view key) {
  const auto& v = field(o, key);
  INFO("field '" << key << "' in " << json::serialize(o));
  REQUIRE(v.is_bool());
  return v.as_bool();
}

const json::array& arr(const json::object& o, std::string_view key) {
  const auto& v = field(o, key);
  INFO("field '" << key << "' in " << json::serialize(o));
  REQUIRE(v.is_array());
  return v.as_array();
}

const json::object& obj(const json::value& v) {
  INFO(json::serialize(v));
  REQUIRE(v.is_object());
  return v.as_object();
}

const json::object& obj(const json::object& o, std::string_view key) {
  return obj(field(o, key));
}

// "2024-05-01T12:34:56.789Z"
bool is_iso_time(std::string_view s) {
  if (s.size() != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':'
      || s[19] != '.' || s[23] != 'Z')
    return false;
  for (auto i : {0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22})
    if (s[static_cast<std::size_t>(i)] < '0' || s[static_cast<std::size_t>(i)] > '9')
      return false;
  return true;
}

// ---------------------------------------------------------------------------------------
// Bank shortcuts

std::string amount_body(std::int64_t cents) {
  return "{\"amount\":" + std::to_string(cents) + "}";
}

json::object open_account(client& c, const std::string& id, const std::string& owner) {
  auto o = expect(c, 201, "POST", "/accounts",
                  json::serialize(json::object{{"id", id}, {"owner", owner}}));
  CHECK(str(o, "id") == id);
  CHECK(str(o, "owner") == owner);
  CHECK(num(o, "balance") == 0);
  CHECK(str(o, "status") == "open");
  CHECK(num(o, "version") == 1);
  return o;
}

json::object deposit(client& c, const std::string& id, std::int64_t cents,
                     header_list headers = {}) {
  return expect(c, 200, "POST", "/accounts/" + id + "/deposit", amount_body(cents),
                std::move(headers));
}

json::object withdraw(client& c, const std::string& id, std::int64_t cents) {
  return expect(c, 200, "POST", "/accounts/" + id + "/withdraw", amount_body(cents));
}

json::object get_account(client& c, const std::string& id) {
  return expect(c, 200, "GET", "/accounts/" + id);
}

// Every event of `/<kind>/<id>/events`, read page by page.
std::vector<json::object> all_events(client& c, const std::string& kind, const std::string& id) {
  std::vector<json::object> out;
  for (;;) {
    auto page = expect(c, 200, "GET",
                       "/" + kind + "/" + id + "/events?from=" + std::to_string(out.size() + 1)
                         + "&limit=1000");
    const auto& events = arr(page, "events");
    for (const auto& e : events)
      out.push_back(obj(e));
    if (events.size() < 1000)
      return out;
  }
}

// The balances read model row of account `id`, read with fresh=1 (absent: an empty object).
json::object balances_row(client& c, const std::string& id) {
  auto page =
    expect(c, 200, "GET", "/accounts?fresh=1&after=" + id.substr(0, id.size() - 1) + "&limit=1000");
  for (const auto& row : arr(page, "accounts"))
    if (str(obj(row), "id") == id)
      return obj(row);
  return {};
}

std::int64_t head_offset(client& c) {
  auto h = expect(c, 200, "GET", "/health");
  return num(obj(h, "journal"), "head_offset");
}

// The value of the sample `name` (labels included, e.g. `x_bucket{le="+Inf"}`) in a
// Prometheus text exposition, or -1 when it is missing.
double sample(const std::string& text, std::string_view name) {
  std::size_t at = 0;
  while (at < text.size()) {
    auto end = text.find('\n', at);
    if (end == std::string::npos)
      end = text.size();
    std::string_view line{text.data() + at, end - at};
    if (line.size() > name.size() && line.substr(0, name.size()) == name
        && line[name.size()] == ' ')
      return std::stod(std::string{line.substr(name.size() + 1)});
    at = end + 1;
  }
  return -1;
}

// Polls `pred` every 2 ms until it holds or `bound` passes; returns whether it held.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds bound) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return pred();
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Matches shortcuts

std::string play_body(std::string_view team, std::string_view player, int minute) {
  return json::serialize(json::object{{"team", team}, {"player", player}, {"minute", minute}});
}

std::string card_body(std::string_view team, std::string_view player, std::string_view card,
                      int minute) {
  return json::serialize(
    json::object{{"team", team}, {"player", player}, {"card", card}, {"minute", minute}});
}

std::string sub_body(std::string_view team, std::string_view out, std::string_view in, int minute) {
  return json::serialize(
    json::object{{"team", team}, {"out", out}, {"in", in}, {"minute", minute}});
}

void check_score(const json::object& o, std::int64_t home, std::int64_t away) {
  const auto& s = obj(o, "score");
  CHECK(num(s, "home") == home);
  CHECK(num(s, "away") == away);
}

} // namespace

// =========================================================================================

TEST_CASE("annals-bank: accounts open, take deposits and withdrawals, and close", "[service]") {
  service_process svc;
  auto c = svc.client();

  open_account(c, "acc-1", "Ada Lovelace");

  auto d = deposit(c, "acc-1", 12000);
  CHECK(str(d, "id") == "acc-1");
  CHECK(str(d, "owner") == "Ada Lovelace");
  CHECK(num(d, "balance") == 12000);
  CHECK(str(d, "status") == "open");
  CHECK(num(d, "version") == 2);

  auto w = withdraw(c, "acc-1", 2000);
  CHECK(num(w, "balance") == 10000);
  CHECK(num(w, "version") == 3);

  auto g = get_account(c, "acc-1");
  CHECK(str(g, "id") == "acc-1");
  CHECK(str(g, "owner") == "Ada Lovelace");
  CHECK(num(g, "balance") == 10000);
  CHECK(str(g, "status") == "open");
  CHECK(num(g, "version") == 3);

  // Closing needs a zero balance.
  expect_error(c, 409, "balance_not_zero", "POST", "/accounts/acc-1/close");
  CHECK(num(get_account(c, "acc-1"), "version") == 3);

  CHECK(num(withdraw(c, "acc-1", 10000), "balance") == 0);
  auto closed = expect(c, 200, "POST", "/accounts/acc-1/close");
  CHECK(str(closed, "status") == "closed");
  CHECK(num(closed, "balance") == 0);
  CHECK(num(closed, "version") == 5);

  // A closed account takes no more commands, but can still be read.
  expect_error(c, 409, "account_closed", "POST", "/accounts/acc-1/deposit", amount_body(1));
  expect_error(c, 409, "account_closed", "POST", "/accounts/acc-1/withdraw", amount_body(1));
  expect_error(c, 409, "account_closed", "POST", "/accounts/acc-1/close");
  auto after = get_account(c, "acc-1");
  CHECK(str(after, "status") == "closed");
  CHECK(num(after, "version") == 5);
  CHECK(all_events(c, "accounts", "acc-1").size() == 5);

  // An id may hold any printable byte, '/' included (percent-encoded in a path), and the
  // owner any UTF-8 text.
  open_account(c, "dept/42", "Zo\u00eb \u6771\u4eac");
  CHECK(num(deposit(c, "dept%2F42", 1), "balance") == 1);
  auto slash = get_account(c, "dept%2F42");
  CHECK(str(slash, "id") == "dept/42");
  CHECK(str(slash, "owner") == "Zo\u00eb \u6771\u4eac");
  expect_error(c, 404, "not_found", "GET", "/accounts/dept");
}

TEST_CASE("annals-bank: the events route lists an account's history and the state route "
          "travels in time",
          "[service]") {
  service_process svc;
  auto c = svc.client();
  open_account(c, "tt", "Grace Hopper");
  deposit(c, "tt", 500);
  deposit(c, "tt", 700);
  withdraw(c, "tt", 200);

  auto page = expect(c, 200, "GET", "/accounts/tt/events");
  CHECK(str(page, "id") == "tt");
  const auto& events = arr(page, "events");
  REQUIRE(events.size() == 4);
  const char* types[] = {"bank.opened", "bank.deposited", "bank.deposited", "bank.withdrawn"};
  std::int64_t last_offset = 0;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto& e = obj(events[i]);
    INFO(json::serialize(e));
    CHECK(num(e, "seq") == static_cast<std::int64_t>(i + 1));
    CHECK(str(e, "type") == types[i]);
    CHECK(num(e, "version") >= 1);
    CHECK(num(e, "offset") > last_offset);
    last_offset = num(e, "offset");
    CHECK(is_iso_time(str(e, "timestamp")));
    CHECK(field(e, "data").is_object());
    CHECK_FALSE(e.contains("correlation_id"));
  }
  CHECK(str(obj(obj(events[0]), "data"), "owner") == "Grace Hopper");
  CHECK(num(obj(obj(events[1]), "data"), "cents") == 500);
  CHECK(num(obj(obj(events[2]), "data"), "cents") == 700);
  CHECK(num(obj(obj(events[3]), "data"), "cents") == 200);

  // from= and limit= select a window.
  auto window = expect(c, 200, "GET", "/accounts/tt/events?from=2&limit=2");
  const auto& two = arr(window, "events");
  REQUIRE(two.size() == 2);
  CHECK(num(obj(two[0]), "seq") == 2);
  CHECK(num(obj(two[1]), "seq") == 3);
  CHECK(arr(expect(c, 200, "GET", "/accounts/tt/events?from=4&limit=10"), "events").size() == 1);
  CHECK(arr(expect(c, 200, "GET", "/accounts/tt/events?from=5"), "events").empty());
  expect_error(c, 404, "not_found", "GET", "/accounts/nobody/events");

  // Time travel: the state just after event N, rebuilt by replay.
  auto at1 = expect(c, 200, "GET", "/accounts/tt/state?at=1");
  CHECK(str(at1, "id") == "tt");
  CHECK(num(at1, "at") == 1);
  CHECK(is_iso_time(str(at1, "timestamp")));
  CHECK(num(obj(at1, "state"), "balance") == 0);
  CHECK(str(obj(at1, "state"), "owner") == "Grace Hopper");
  CHECK(str(obj(at1, "state"), "status") == "open");
  auto at3 = expect(c, 200, "GET", "/accounts/tt/state?at=3");
  CHECK(num(at3, "at") == 3);
  CHECK(num(obj(at3, "state"), "balance") == 1200);
  auto now = expect(c, 200, "GET", "/accounts/tt/state");
  CHECK(num(now, "at") == 4);
  CHECK(num(obj(now, "state"), "balance") == 1000);
  CHECK(str(now, "timestamp") == str(obj(events[3]), "timestamp"));
  expect_error(c, 404, "not_found", "GET", "/accounts/tt/state?at=5");
  expect_error(c, 404, "not_found", "GET", "/accounts/tt/state?at=1000000");
  expect_error(c, 404, "not_found", "GET", "/accounts/nobody/state");
  expect_error(c, 404, "not_found", "GET", "/accounts/nobody/state?at=1");
}

TEST_CASE("annals-bank: the balances, statement and owner read models", "[service]") {
  service_process svc;
  auto c = svc.client();
  open_account(c, "rm-a", "Ada Lovelace");
  open_account(c, "rm-b", "Bob Marley");
  open_account(c, "rm-c", "ada byron");
  open_account(c, "rm-d", "Dora Dev");
  open_account(c, "rm-e", "Eve Adams");
  deposit(c, "rm-a", 1000);
  withdraw(c, "rm-a", 300);
  deposit(c, "rm-b", 50);
  deposit(c, "rm-d", 7);
  withdraw(c, "rm-d", 7);
  expect(c, 200, "POST", "/accounts/rm-d/close");

  SECTION("balances: every account, its fields, and the projection's offset") {
    auto all = expect(c, 200, "GET", "/accounts?fresh=1");
    CHECK(num(all, "offset") == head_offset(c));
    const auto& rows = arr(all, "accounts");
    REQUIRE(rows.size() == 5);
    std::map<std::string, json::object> by_id;
    for (const auto& r : rows)
      by_id[str(obj(r), "id")] = obj(r);
    CHECK(num(by_id["rm-a"], "balance") == 700);
    CHECK(num(by_id["rm-a"], "version") == 3);
    CHECK(str(by_id["rm-a"], "owner") == "Ada Lovelace");
    CHECK(str(by_id["rm-a"], "status") == "open");
    CHECK(num(by_id["rm-b"], "balance") == 50);
    CHECK(num(by_id["rm-c"], "balance") == 0);
    CHECK(num(by_id["rm-c"], "version") == 1);
    CHECK(str(by_id["rm-d"], "status") == "closed");
    CHECK(num(by_id["rm-d"], "version") == 4);
    CHECK(num(by_id["rm-e"], "balance") == 0);
  }

  SECTION("balances: pages in id order with after= and limit=") {
    std::vector<std::string> seen;
    std::string after;
    for (int pages = 0; pages < 10; ++pages) {
      auto page = expect(c, 200, "GET", "/accounts?fresh=1&limit=2&after=" + after);
      const auto& rows = arr(page, "accounts");
      CHECK(rows.size() <= 2);
      if (rows.empty())
        break;
      for (const auto& r : rows)
        seen.push_back(str(obj(r), "id"));
      after = seen.back();
    }
    CHECK(seen == std::vector<std::string>{"rm-a", "rm-b", "rm-c", "rm-d", "rm-e"});
    auto third = expect(c, 200, "GET", "/accounts?fresh=1&after=rm-b&limit=1");
    REQUIRE(arr(third, "accounts").size() == 1);
    CHECK(str(obj(arr(third, "accounts")[0]), "id") == "rm-c");
    CHECK(arr(expect(c, 200, "GET", "/accounts?after=rm-e"), "accounts").empty());
  }

  SECTION("statement: one line per event with the balance after it") {
    auto st = expect(c, 200, "GET", "/accounts/rm-a/statement?fresh=1");
    CHECK(str(st, "id") == "rm-a");
    CHECK(num(st, "offset") == head_offset(c));
    const auto& lines = arr(st, "lines");
    REQUIRE(lines.size() == 3);
    const char* kinds[] = {"opened", "deposit", "withdrawal"};
    const std::int64_t amounts[] = {0, 1000, 300};
    const std::int64_t balances[] = {0, 1000, 700};
    std::int64_t last_offset = 0;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      const auto& l = obj(lines[i]);
      INFO(json::serialize(l));
      CHECK(num(l, "seq") == static_cast<std::int64_t>(i + 1));
      CHECK(str(l, "kind") == kinds[i]);
      CHECK(num(l, "amount") == amounts[i]);
      CHECK(num(l, "balance") == balances[i]);
      CHECK(num(l, "offset") > last_offset);
      last_offset = num(l, "offset");
      CHECK(is_iso_time(str(l, "timestamp")));
      CHECK_FALSE(l.contains("correlation_id"));
    }
    auto closed = expect(c, 200, "GET", "/accounts/rm-d/statement?fresh=1");
    const auto& dl = arr(closed, "lines");
    REQUIRE(dl.size() == 4);
    CHECK(str(obj(dl[3]), "kind") == "closed");
    CHECK(num(obj(dl[3]), "balance") == 0);
    expect_error(c, 404, "not_found", "GET", "/accounts/nobody/statement?fresh=1");
  }

#ifdef ANNALS_BANK_WITH_XAPIAN
  SECTION("search: owners by word and word prefix, ranked, ignoring case and accents") {
    auto found = expect(c, 200, "GET", "/search?owner=ada&fresh=1");
    CHECK(num(found, "offset") == head_offset(c));
    std::vector<std::string> ids;
    double last_score = 1e300;
    for (const auto& h : arr(found, "hits")) {
      ids.push_back(str(obj(h), "id"));
      CHECK_FALSE(flag(obj(h), "closed"));
      const auto& score = field(obj(h), "score");
      REQUIRE(score.is_double());
      CHECK(score.as_double() > 0);
      CHECK(score.as_double() <= last_score); // best first
      last_score = score.as_double();
    }
    // The word "ada" itself ranks above "Adams", which it only begins; equal scores go in
    // id order.
    CHECK(ids == std::vector<std::string>{"rm-a", "rm-c", "rm-e"});
    CHECK(str(obj(arr(found, "hits")[1]), "owner") == "ada byron");
    CHECK(field(obj(arr(found, "hits")[0]), "score").as_double()
          > field(obj(arr(found, "hits")[2]), "score").as_double());

    auto limited = expect(c, 200, "GET", "/search?owner=ADA&limit=1&fresh=1");
    REQUIRE(arr(limited, "hits").size() == 1);
    CHECK(str(obj(arr(limited, "hits")[0]), "id") == "rm-a");

    auto dora = expect(c, 200, "GET", "/search?owner=dora%20dev&fresh=1");
    REQUIRE(arr(dora, "hits").size() == 1);
    CHECK(str(obj(arr(dora, "hits")[0]), "id") == "rm-d");
    CHECK(flag(obj(arr(dora, "hits")[0]), "closed"));

    // Typing the beginning of a name finds it.
    auto lov = expect(c, 200, "GET", "/search?owner=lov&fresh=1");
    REQUIRE(arr(lov, "hits").size() == 1);
    CHECK(str(obj(arr(lov, "hits")[0]), "owner") == "Ada Lovelace");

    // Accents and case fold away on both sides; closing updates the document.
    open_account(c, "rm-f", "Jos\u00e9 N\u00fa\u00f1ez");
    for (auto q : {"jose", "JOSE%20nunez", "Jos%C3%A9", "N%C3%9A%C3%91", "n%C3%BA"}) {
      auto r = expect(c, 200, "GET", std::string{"/search?fresh=1&owner="} + q);
      INFO(q);
      REQUIRE(arr(r, "hits").size() == 1);
      CHECK(str(obj(arr(r, "hits")[0]), "id") == "rm-f");
      CHECK(str(obj(arr(r, "hits")[0]), "owner") == "Jos\u00e9 N\u00fa\u00f1ez");
      CHECK_FALSE(flag(obj(arr(r, "hits")[0]), "closed"));
    }
    expect(c, 200, "POST", "/accounts/rm-f/close");
    auto closed = expect(c, 200, "GET", "/search?owner=nunez&fresh=1");
    CHECK(num(closed, "offset") == head_offset(c));
    REQUIRE(arr(closed, "hits").size() == 1);
    CHECK(flag(obj(arr(closed, "hits")[0]), "closed"));

    CHECK(arr(expect(c, 200, "GET", "/search?owner=zebra&fresh=1"), "hits").empty());
    CHECK(arr(expect(c, 200, "GET", "/search?owner=ada%20zebra&fresh=1"), "hits").empty());
  }
#else
  SECTION("search: 501 without Xapian") {
    expect_error(c, 501, "search_unavailable", "GET", "/search?owner=ada");
  }
#endif
}

TEST_CASE("annals-bank: transfers complete, compensate and validate", "[service]") {
  service_process svc;
  auto c = svc.client();
  open_account(c, "tr-a", "Ada");
  open_account(c, "tr-b", "Bob");
  deposit(c, "tr-a", 10000);

  // A transfer between two open accounts completes.
  auto t1 =
    expect(c, 202, "POST", "/transfers", R"({"id":"t-1","from":"tr-a","to":"tr-b","amount":2500})");
  CHECK(str(t1, "id") == "t-1");
  CHECK(str(t1, "status") == "completed");
  auto s1 = expect(c, 200, "GET", "/transfers/t-1");
  CHECK(str(s1, "id") == "t-1");
  CHECK(str(s1, "status") == "completed");
  CHECK(str(s1, "from") == "tr-a");
  CHECK(str(s1, "to") == "tr-b");
  CHECK(num(s1, "amount") == 2500);
  CHECK(flag(s1, "debited"));
  CHECK_FALSE(s1.contains("reason"));
  CHECK(num(get_account(c, "tr-a"), "balance") == 7500);
  CHECK(num(get_account(c, "tr-b"), "balance") == 2500);
  auto t1_events = all_events(c, "transfers", "t-1");
  REQUIRE(t1_events.size() == 3);
  CHECK(str(t1_events[0], "type") == "bank.transfer_requested");
  CHECK(str(t1_events[1], "type") == "bank.transfer_debited");
  CHECK(str(t1_events[2], "type") == "bank.transfer_credited");

  // A transfer to a missing account is compensated: the debit is refunded.
  auto t2 = expect(c, 202, "POST", "/transfers",
                   R"({"id":"t-2","from":"tr-a","to":"tr-nobody","amount":1000})");
  CHECK(str(t2, "status") == "compensated");
  auto s2 = expect(c, 200, "GET", "/transfers/t-2");
  CHECK(str(s2, "status") == "compensated");
  CHECK(flag(s2, "debited"));
  CHECK(str(s2, "reason") == "not_found");
  CHECK(num(get_account(c, "tr-a"), "balance") == 7500);
  expect_error(c, 404, "not_found", "GET", "/accounts/tr-nobody");
  auto t2_events = all_events(c, "transfers", "t-2");
  REQUIRE(t2_events.size() == 3);
  CHECK(str(t2_events[2], "type") == "bank.transfer_refunded");

  // The account's statement shows the withdrawal and its refund, both correlated.
  auto st = expect(c, 200, "GET", "/accounts/tr-a/statement?fresh=1");
  std::vector<std::pair<std::string, std::int64_t>> t2_lines;
  std::int64_t t1_lines = 0;
  for (const auto& l : arr(st, "lines")) {
    const auto& line = obj(l);
    if (!line.contains("correlation_id"))
      continue;
    auto corr = str(line, "correlation_id");
    if (corr == "transfer:t-2")
      t2_lines.emplace_back(str(line, "kind"), num(line, "amount"));
    else if (corr == "transfer:t-1")
      ++t1_lines;
    else
      FAIL("unexpected correlation id " << corr);
  }
  CHECK(t1_lines == 1);
  CHECK(
    t2_lines
    == std::vector<std::pair<std::string, std::int64_t>>{{"withdrawal", 1000}, {"deposit", 1000}});
  CHECK(num(obj(arr(st, "lines").back()), "balance") == 7500);
  // The account's own events carry the transfer's ids as metadata.
  auto a_events = all_events(c, "accounts", "tr-a");
  REQUIRE(a_events.size() == 5);
  CHECK(str(a_events[3], "correlation_id") == "transfer:t-2");
  CHECK(str(a_events[3], "command_id") == "transfer:t-2:debit");
  CHECK(str(a_events[4], "correlation_id") == "transfer:t-2");
  CHECK(str(a_events[4], "command_id") == "transfer:t-2:refund");

  // A debit the account refuses moves no money: compensated, never debited.
  auto t3 = expect(c, 202, "POST", "/transfers",
                   R"({"id":"t-3","from":"tr-b","to":"tr-a","amount":999999})");
  CHECK(str(t3, "status") == "compensated");
  auto s3 = expect(c, 200, "GET", "/transfers/t-3");
  CHECK_FALSE(flag(s3, "debited"));
  CHECK(str(s3, "reason") == "insufficient_funds");
  CHECK(num(get_account(c, "tr-a"), "version") == 5);
  CHECK(num(get_account(c, "tr-b"), "version") == 2);

  // A credit the target refuses because it is closed is refunded too.
  open_account(c, "tr-shut", "Shut");
  expect(c, 200, "POST", "/accounts/tr-shut/close");
  auto t9 = expect(c, 202, "POST", "/transfers",
                   R"({"id":"t-9","from":"tr-a","to":"tr-shut","amount":100})");
  CHECK(str(t9, "status") == "compensated");
  auto s9 = expect(c, 200, "GET", "/transfers/t-9");
  CHECK(flag(s9, "debited"));
  CHECK(str(s9, "reason") == "account_closed");
  CHECK(num(get_account(c, "tr-a"), "balance") == 7500);
  CHECK(num(get_account(c, "tr-a"), "version") == 7);
  CHECK(num(get_account(c, "tr-shut"), "version") == 2);

  // A transfer from a missing account moves nothing.
  auto t10 = expect(c, 202, "POST", "/transfers",
                    R"({"id":"t-10","from":"tr-ghost","to":"tr-b","amount":100})");
  CHECK(str(t10, "status") == "compensated");
  auto s10 = expect(c, 200, "GET", "/transfers/t-10");
  CHECK_FALSE(flag(s10, "debited"));
  CHECK(str(s10, "reason") == "not_found");
  CHECK(num(get_account(c, "tr-b"), "version") == 2);

  // Validation: nothing is stored for a refused transfer.
  auto before = head_offset(c);
  expect_error(c, 422, "invalid_transfer", "POST", "/transfers",
               R"({"id":"t-4","from":"tr-a","to":"tr-a","amount":100})");
  expect_error(c, 422, "invalid_transfer", "POST", "/transfers",
               R"({"id":"t-5","from":"tr-a","to":"tr-b","amount":0})");
  expect_error(c, 422, "invalid_transfer", "POST", "/transfers",
               R"({"id":"t-6","from":"tr-a","to":"tr-b","amount":-5})");
  expect_error(c, 409, "already_exists", "POST", "/transfers",
               R"({"id":"t-1","from":"tr-a","to":"tr-b","amount":1})");
  expect_error(c, 422, "missing_field", "POST", "/transfers",
               R"({"id":"t-7","from":"tr-a","amount":1})");
  expect_error(c, 400, "invalid_id", "POST", "/transfers",
               R"({"id":"t-8","from":"","to":"tr-b","amount":1})");
  expect_error(c, 404, "not_found", "GET", "/transfers/t-4");
  expect_error(c, 404, "not_found", "GET", "/transfers/t-5");
  expect_error(c, 404, "not_found", "GET", "/transfers/nope");
  expect_error(c, 404, "not_found", "GET", "/transfers/nope/events");
  CHECK(head_offset(c) == before);
  CHECK(num(get_account(c, "tr-a"), "balance") == 7500);
  CHECK(num(get_account(c, "tr-b"), "balance") == 2500);
}

TEST_CASE("annals-bank: a football match from schedule to full time", "[service]") {
  service_process svc;
  auto c = svc.client();
  const std::string m = "/matches/m-1";

  auto sched =
    expect(c, 201, "POST", "/matches", R"({"id":"m-1","home":"Rovers","away":"United"})");
  CHECK(str(sched, "id") == "m-1");
  check_score(sched, 0, 0);
  expect(c, 201, "POST", "/matches", R"({"id":"m-2","home":"City","away":"Town"})");
  expect_error(c, 409, "already_exists", "POST", "/matches",
               R"({"id":"m-1","home":"A","away":"B"})");
  expect_error(c, 422, "invalid_argument", "POST", "/matches",
               R"({"id":"m-3","home":"Same","away":"Same"})");
  expect_error(c, 422, "missing_field", "POST", "/matches", R"({"id":"m-3","home":"A"})");

  // Nothing happens before kick-off.
  expect_error(c, 409, "not_started", "POST", m + "/goals", play_body("home", "Kane", 1));
  expect_error(c, 409, "not_started", "POST", m + "/cards", card_body("home", "Kane", "red", 1));
  expect_error(c, 409, "not_started", "POST", m + "/substitutions",
               sub_body("home", "Kane", "Son", 1));
  expect_error(c, 409, "not_started", "POST", m + "/half-time");
  expect_error(c, 409, "not_started", "POST", m + "/second-half");
  expect_error(c, 409, "not_started", "POST", m + "/full-time");

  check_score(expect(c, 200, "POST", m + "/kick-off"), 0, 0);
  expect_error(c, 409, "wrong_period", "POST", m + "/kick-off");
  check_score(expect(c, 200, "POST", m + "/goals", play_body("home", "Kane", 17)), 1, 0);

  // A second yellow sends the player off; a player off the pitch cannot score.
  expect(c, 200, "POST", m + "/cards", card_body("away", "Keane", "yellow", 30));
  expect(c, 200, "POST", m + "/cards", card_body("away", "Keane", "yellow", 35));
  expect_error(c, 409, "player_not_playing", "POST", m + "/goals", play_body("away", "Keane", 40));
  expect_error(c, 409, "player_not_playing", "POST", m + "/cards",
               card_body("away", "Keane", "red", 40));
  check_score(expect(c, 200, "POST", m + "/goals", play_body("away", "Rashford", 41)), 1, 1);

  // Field validation.
  expect_error(c, 422, "invalid_field", "POST", m + "/goals", play_body("middle", "Kane", 42));
  expect_error(c, 422, "invalid_field", "POST", m + "/goals", play_body("home", "Kane", 131));
  expect_error(c, 422, "invalid_field", "POST", m + "/goals", play_body("home", "Kane", -1));
  expect_error(c, 422, "invalid_field", "POST", m + "/cards",
               card_body("home", "Kane", "green", 42));
  expect_error(c, 422, "invalid_argument", "POST", m + "/goals", play_body("home", "", 42));
  expect_error(c, 422, "missing_field", "POST", m + "/goals", R"({"team":"home","minute":42})");

  // Half time: no play, but substitutions are allowed.
  expect(c, 200, "POST", m + "/half-time");
  expect_error(c, 409, "wrong_period", "POST", m + "/half-time");
  expect_error(c, 409, "wrong_period", "POST", m + "/goals", play_body("home", "Kane", 45));
  expect_error(c, 409, "wrong_period", "POST", m + "/full-time");
  expect(c, 200, "POST", m + "/substitutions", sub_body("away", "Rashford", "Martial", 45));
  expect(c, 200, "POST", m + "/second-half");

  // Five substitutions per team; the sixth is refused.
  for (int i = 1; i <= 5; ++i)
    expect(c, 200, "POST", m + "/substitutions",
           sub_body("home", "H" + std::to_string(i), "S" + std::to_string(i), 60 + i));
  expect_error(c, 409, "substitution_limit", "POST", m + "/substitutions",
               sub_body("home", "H6", "S6", 70));
  expect_error(c, 409, "player_not_playing", "POST", m + "/goals", play_body("home", "H1", 71));
  expect_error(c, 409, "player_not_playing", "POST", m + "/goals",
               play_body("away", "Rashford", 71));

  check_score(expect(c, 200, "POST", m + "/goals", play_body("home", "Kane", 88)), 2, 1);
  check_score(expect(c, 200, "POST", m + "/full-time"), 2, 1);

  // Nothing happens after full time.
  expect_error(c, 409, "finished", "POST", m + "/goals", play_body("away", "Martial", 93));
  expect_error(c, 409, "finished", "POST", m + "/cards", card_body("home", "Kane", "red", 93));
  expect_error(c, 409, "finished", "POST", m + "/substitutions",
               sub_body("away", "Martial", "Z", 93));
  expect_error(c, 409, "finished", "POST", m + "/kick-off");
  expect_error(c, 409, "finished", "POST", m + "/half-time");
  expect_error(c, 409, "finished", "POST", m + "/second-half");
  expect_error(c, 409, "finished", "POST", m + "/full-time");

  // schedule, kick-off, 3 goals, 2 cards, 6 substitutions, 3 period changes.
  constexpr std::int64_t match_events = 16;
  auto got = expect(c, 200, "GET", m);
  CHECK(str(got, "id") == "m-1");
  CHECK(str(got, "home") == "Rovers");
  CHECK(str(got, "away") == "United");
  check_score(got, 2, 1);
  CHECK(str(got, "period") == "finished");
  CHECK(num(obj(got, "substitutions"), "home") == 5);
  CHECK(num(obj(got, "substitutions"), "away") == 1);
  CHECK(num(got, "version") == match_events);
  expect_error(c, 404, "not_found", "GET", "/matches/nope");
  expect_error(c, 404, "not_found", "POST", "/matches/nope/kick-off");

  auto events = all_events(c, "matches", "m-1");
  REQUIRE(static_cast<std::int64_t>(events.size()) == match_events);
  CHECK(str(events.front(), "type") == "match.scheduled");
  CHECK(str(events[1], "type") == "match.kicked_off");
  CHECK(str(events[3], "type") == "match.card_shown");
  CHECK_FALSE(flag(obj(events[3], "data"), "sent_off"));
  CHECK(flag(obj(events[4], "data"), "sent_off"));
  CHECK(str(events.back(), "type") == "match.full_time_called");

  auto at5 = expect(c, 200, "GET", m + "/state?at=5");
  CHECK(num(at5, "at") == 5);
  CHECK(str(obj(at5, "state"), "period") == "first_half");
  check_score(obj(at5, "state"), 1, 0);
  CHECK(arr(obj(at5, "state"), "off_pitch").size() == 1);
  auto final_state = expect(c, 200, "GET", m + "/state");
  CHECK(num(final_state, "at") == match_events);
  CHECK(str(obj(final_state, "state"), "period") == "finished");
  CHECK(num(obj(final_state, "state"), "substitutions_home") == 5);
  expect_error(c, 404, "not_found", "GET", m + "/state?at=" + std::to_string(match_events + 1));

#ifdef ANNALS_BANK_WITH_XAPIAN
  // Matches are found by team and by every player named in their events.
  auto by_player = expect(c, 200, "GET", "/search?match=rashf&fresh=1");
  CHECK(num(by_player, "offset") == head_offset(c));
  REQUIRE(arr(by_player, "hits").size() == 1);
  const auto& hit = obj(arr(by_player, "hits")[0]);
  CHECK(str(hit, "id") == "m-1");
  CHECK(str(hit, "home") == "Rovers");
  CHECK(str(hit, "away") == "United");
  std::set<std::string> players;
  for (const auto& p : arr(hit, "players"))
    players.insert(std::string{p.as_string()});
  CHECK(players.count("Kane") == 1);
  CHECK(players.count("Keane") == 1);
  CHECK(players.count("Rashford") == 1);
  CHECK(field(hit, "score").is_double());
  auto by_team = expect(c, 200, "GET", "/search?match=town&fresh=1");
  REQUIRE(arr(by_team, "hits").size() == 1);
  CHECK(str(obj(arr(by_team, "hits")[0]), "id") == "m-2");
  // Accounts and matches are searched apart.
  CHECK(arr(expect(c, 200, "GET", "/search?owner=rovers&fresh=1"), "hits").empty());
#endif

  auto board = expect(c, 200, "GET", "/matches?fresh=1");
  CHECK(num(board, "offset") == head_offset(c));
  std::map<std::string, json::object> lines;
  for (const auto& l : arr(board, "matches"))
    lines[str(obj(l), "id")] = obj(l);
  REQUIRE(lines.size() == 2);
  CHECK(str(lines["m-1"], "period") == "finished");
  CHECK(str(lines["m-1"], "home") == "Rovers");
  check_score(lines["m-1"], 2, 1);
  CHECK(str(lines["m-2"], "period") == "scheduled");
  CHECK(str(lines["m-2"], "away") == "Town");

  auto scorers = expect(c, 200, "GET", "/scorers?fresh=1");
  CHECK(num(scorers, "offset") == head_offset(c));
  const auto& top = arr(scorers, "scorers");
  REQUIRE(top.size() == 2);
  CHECK(str(obj(top[0]), "player") == "Kane");
  CHECK(num(obj(top[0]), "goals") == 2);
  CHECK(str(obj(top[1]), "player") == "Rashford");
  CHECK(num(obj(top[1]), "goals") == 1);
  CHECK(arr(expect(c, 200, "GET", "/scorers?fresh=1&limit=1"), "scorers").size() == 1);
}

TEST_CASE("annals-bank: health and metrics", "[service]") {
  service_process svc;
  auto c = svc.client();
  open_account(c, "ops-a", "Ops");
  deposit(c, "ops-a", 100);
  expect(c, 200, "GET", "/accounts?fresh=1");
  expect_error(c, 404, "not_found", "GET", "/accounts/nobody");

  auto health = expect(c, 200, "GET", "/health");
  CHECK(str(health, "status") == "ok");
  // Two appends: offsets 1 and 2 (SQLite, PostgreSQL); on JetStream two stream sequences.
  const auto head = num(obj(health, "journal"), "head_offset");
  CHECK(head == service_test::offset_of_append(2));
  if (service_test::journal_in_db_file) {
    CHECK(str(obj(health, "journal"), "path") == svc.db_path());
    CHECK(str(obj(health, "journal"), "uri") == "sqlite:" + svc.db_path());
  } else {
    CHECK(str(obj(health, "journal"), "uri") == svc.journal_uri());
  }
  std::set<std::string> names;
  for (const auto& p : arr(health, "projections")) {
    const auto& proj = obj(p);
    INFO(json::serialize(proj));
    names.insert(str(proj, "name"));
    CHECK(str(proj, "state") == "running");
    CHECK(num(proj, "offset") <= head);
    CHECK(num(proj, "lag") >= 0);
    if (str(proj, "name") == "balances") {
      CHECK(num(proj, "offset") == head);
      CHECK(num(proj, "lag") == 0);
    }
  }
#ifdef ANNALS_BANK_WITH_XAPIAN
  CHECK(names == std::set<std::string>{"balances", "statement", "search", "scoreboard", "scorers"});
#else
  CHECK(names == std::set<std::string>{"balances", "statement", "scoreboard", "scorers"});
#endif

  auto r = call(c, "GET", "/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.headers["content-type"].rfind("text/plain", 0) == 0);
  const auto& text = r.text;
  INFO(text);
  for (auto name : {"annals_commands_handled_total", "annals_events_persisted_total",
                    "annals_projection_lag_events"})
    CHECK(text.find(name) != std::string::npos);
  CHECK(sample(text, "annals_commands_handled_total") >= 2);
  CHECK(sample(text, "annals_commands_failed_total") >= 1);
  CHECK(sample(text, "annals_events_persisted_total") == 2);
  if (!service_test::journal_in_db_file) { // the journal's figures are the SQLite writer's
    CHECK(text.find("annals_journal_batch_size") == std::string::npos);
  } else {
    CHECK(text.find("# TYPE annals_journal_batch_size histogram") != std::string::npos);
    CHECK(sample(text, "annals_journal_batch_size_bucket{le=\"+Inf\"}") >= 1);
    CHECK(sample(text, "annals_journal_batch_size_count")
          == sample(text, "annals_journal_batch_size_bucket{le=\"+Inf\"}"));
    CHECK(sample(text, "annals_journal_commit_seconds_count") >= 1);
  }
  CHECK(sample(text, "annals_projection_lag_events{projection=\"balances\"}") == 0);
  CHECK(sample(text, "annals_projection_lag_events{projection=\"scorers\"}") >= 0);
  CHECK(sample(text, "annals_http_responses_total{code=\"201\"}") == 1);
  CHECK(sample(text, "annals_http_responses_total{code=\"404\"}") == 1);
}

TEST_CASE("annals-bank: every error code, and no refused request writes to the journal",
          "[service]") {
  service_process svc;
  auto c = svc.client();
  open_account(c, "err-a", "Err");
  deposit(c, "err-a", 1000);
  open_account(c, "err-closed", "Closed");
  expect(c, 200, "POST", "/accounts/err-closed/close");
  // The longest id that is still valid: 255 bytes.
  const std::string id255(255, 'i');
  open_account(c, id255, "Long");
  CHECK(num(get_account(c, id255), "version") == 1);
  const auto head = head_offset(c);
  REQUIRE(head == service_test::offset_of_append(5)); // five one-event appends

  const std::string long_id(256, 'x');
  const std::string long_key(256, 'k');

  SECTION("404 not_found") {
    expect_error(c, 404, "not_found", "GET", "/accounts/nope");
    expect_error(c, 404, "not_found", "POST", "/accounts/nope/deposit", amount_body(5));
    expect_error(c, 404, "not_found", "POST", "/accounts/nope/withdraw", amount_body(5));
    expect_error(c, 404, "not_found", "POST", "/accounts/nope/close");
    expect_error(c, 404, "not_found", "GET", "/accounts/nope/events");
    expect_error(c, 404, "not_found", "GET", "/accounts/nope/state");
    expect_error(c, 404, "not_found", "GET", "/accounts/nope/statement");
    expect_error(c, 404, "not_found", "GET", "/transfers/nope");
    expect_error(c, 404, "not_found", "GET", "/matches/nope");
    expect_error(c, 404, "not_found", "GET", "/matches/nope/events");
    expect_error(c, 404, "not_found", "GET", "/matches/nope/state");
  }

  SECTION("409 already_exists, insufficient_funds, account_closed") {
    expect_error(c, 409, "already_exists", "POST", "/accounts", R"({"id":"err-a","owner":"X"})");
    expect_error(c, 409, "insufficient_funds", "POST", "/accounts/err-a/withdraw",
                 amount_body(1001));
    expect_error(c, 409, "account_closed", "POST", "/accounts/err-closed/deposit", amount_body(1));
    expect_error(c, 409, "account_closed", "POST", "/accounts/err-closed/withdraw", amount_body(1));
  }

  SECTION("422 invalid_amount and invalid_owner") {
    expect_error(c, 422, "invalid_amount", "POST", "/accounts/err-a/deposit", amount_body(0));
    expect_error(c, 422, "invalid_amount", "POST", "/accounts/err-a/deposit", amount_body(-5));
    expect_error(c, 422, "invalid_amount", "POST", "/accounts/err-a/withdraw", amount_body(0));
    expect_error(c, 422, "invalid_amount", "POST", "/accounts/err-a/withdraw", amount_body(-1));
    expect_error(c, 422, "invalid_amount", "POST", "/accounts/err-a/deposit",
                 amount_body(std::numeric_limits<std::int64_t>::min()));
    expect_error(c, 422, "amount_overflow", "POST", "/accounts/err-a/deposit",
                 amount_body(std::numeric_limits<std::int64_t>::max()));
    expect_error(c, 422, "invalid_owner", "POST", "/accounts", R"({"id":"err-new","owner":""})");
    expect_error(c, 404, "not_found", "GET", "/accounts/err-new");
  }

  SECTION("400 malformed_json") {
    for (std::string body :
         {"{", "nope", "{\"amount\":5,}", "[5]", "5", "\"amount\"", "{\"amount\":5}{\"amount\":6}"})
      expect_error(c, 400, "malformed_json", "POST", "/accounts/err-a/deposit", body);
    expect_error(c, 400, "malformed_json", "POST", "/accounts", "{\"id\":\"x\",");
  }

  SECTION("422 invalid_field: wrong types and unknown fields") {
    for (std::string body : {R"({"amount":"5"})", R"({"amount":1.5})", R"({"amount":5.0})",
                             R"({"amount":true})", R"({"amount":null})", R"({"amount":[5]})",
                             R"({"amount":18446744073709551615})", R"({"amount":5,"note":"x"})"})
      expect_error(c, 422, "invalid_field", "POST", "/accounts/err-a/deposit", body);
    expect_error(c, 422, "invalid_field", "POST", "/accounts/err-a/withdraw", R"({"amount":"1"})");
    expect_error(c, 422, "invalid_field", "POST", "/accounts/err-a/close", R"({"force":true})");
    expect_error(c, 422, "invalid_field", "POST", "/accounts", R"({"id":5,"owner":"X"})");
    expect_error(c, 422, "invalid_field", "POST", "/accounts",
                 R"({"id":"err-new","owner":"X","balance":100})");
    expect_error(c, 422, "invalid_field", "POST", "/transfers",
                 R"({"id":"t","from":"err-a","to":"err-closed","amount":"1"})");
    expect_error(c, 404, "not_found", "GET", "/accounts/err-new");
  }

  SECTION("422 missing_field") {
    expect_error(c, 422, "missing_field", "POST", "/accounts/err-a/deposit", "{}");
    expect_error(c, 422, "missing_field", "POST", "/accounts/err-a/deposit", "");
    expect_error(c, 422, "missing_field", "POST", "/accounts/err-a/withdraw", "{}");
    expect_error(c, 422, "missing_field", "POST", "/accounts", R"({"id":"err-new"})");
    expect_error(c, 422, "missing_field", "POST", "/accounts", R"({"owner":"X"})");
    expect_error(c, 404, "not_found", "GET", "/accounts/err-new");
  }

  SECTION("404 unknown_route and 405 method_not_allowed") {
    expect_error(c, 404, "unknown_route", "GET", "/nope");
    expect_error(c, 404, "unknown_route", "GET", "/accounts/err-a/balance");
    expect_error(c, 404, "unknown_route", "POST", "/accounts/err-a/frobnicate", amount_body(1));
    expect_error(c, 404, "unknown_route", "GET", "/accounts/err-a/events/1/2");
    expect_error(c, 404, "unknown_route", "GET", "/");

    auto r = call(c, "DELETE", "/accounts/err-a");
    CHECK(r.status == 405);
    CHECK(str(obj(r.body), "error") == "method_not_allowed");
    CHECK(r.headers["allow"] == "GET");
    r = call(c, "GET", "/accounts/err-a/deposit");
    CHECK(r.status == 405);
    CHECK(r.headers["allow"] == "POST");
    r = call(c, "PUT", "/accounts", R"({"id":"err-new","owner":"X"})");
    CHECK(r.status == 405);
    CHECK(str(obj(r.body), "error") == "method_not_allowed");
    CHECK(r.headers["allow"].find("GET") != std::string::npos);
    CHECK(r.headers["allow"].find("POST") != std::string::npos);
    expect_error(c, 405, "method_not_allowed", "POST", "/health");
    expect_error(c, 405, "method_not_allowed", "POST", "/metrics");
  }

  SECTION("413 payload_too_large") {
    const std::string big = R"({"amount":1,"pad":")" + std::string(70 * 1024, 'p') + "\"}";
    auto raw = service::http::raw_exchange(
      "127.0.0.1", svc.port(),
      "POST /accounts/err-a/deposit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
      "application/json\r\nContent-Length: "
        + std::to_string(big.size()) + "\r\n\r\n" + big,
      10s);
    INFO(raw);
    CHECK(raw.rfind("HTTP/1.1 413", 0) == 0);
    CHECK(raw.find("\"payload_too_large\"") != std::string::npos);
    // The server is still fine afterwards, on a new connection.
    CHECK(num(get_account(c, "err-a"), "balance") == 1000);
  }

  SECTION("400 invalid_id: too long, holding a control character, or not UTF-8") {
    expect_error(c, 400, "invalid_id", "GET", "/accounts/" + long_id);
    expect_error(c, 400, "invalid_id", "POST", "/accounts/" + long_id + "/deposit", amount_body(1));
    expect_error(c, 400, "invalid_id", "GET", "/accounts/" + long_id + "/events");
    expect_error(c, 400, "invalid_id", "GET", "/accounts/" + long_id + "/state");
    expect_error(c, 400, "invalid_id", "GET", "/transfers/" + long_id);
    expect_error(c, 400, "invalid_id", "POST", "/matches/" + long_id + "/kick-off");
    expect_error(c, 400, "invalid_id", "POST", "/accounts",
                 R"({"id":")" + long_id + R"(","owner":"X"})");
    expect_error(c, 400, "invalid_id", "GET", "/accounts/err%01a");
    expect_error(c, 400, "invalid_id", "POST", "/accounts/err%01a/deposit", amount_body(1));
    expect_error(c, 400, "invalid_id", "POST", "/accounts/err-a%1F/withdraw", amount_body(1));
    expect_error(c, 400, "invalid_id", "GET", "/accounts/%7F/statement");
    expect_error(c, 400, "invalid_id", "GET", "/accounts/err-%FF");
    expect_error(c, 400, "invalid_id", "POST", "/accounts/err-%ED%A0%80/deposit", amount_body(1));
    expect_error(c, 400, "invalid_id", "POST", "/accounts", R"({"id":"bad\u0001id","owner":"X"})");
    expect_error(c, 400, "invalid_id", "POST", "/accounts", R"({"id":"","owner":"X"})");
    expect_error(c, 400, "invalid_id", "POST", "/matches",
                 R"({"id":"m\u0001","home":"A","away":"B"})");
    expect_error(c, 400, "invalid_id", "POST", "/transfers",
                 R"({"id":"t\u0002","from":"err-a","to":"err-closed","amount":1})");
  }

  SECTION("400 invalid_query") {
    for (std::string target :
         {"/accounts/err-a/events?limit=abc", "/accounts/err-a/events?limit=0",
          "/accounts/err-a/events?limit=1001", "/accounts/err-a/events?limit=5x",
          "/accounts/err-a/events?from=0", "/accounts/err-a/events?from=-1",
          "/accounts/err-a/state?at=abc", "/accounts/err-a/state?at=0", "/accounts?limit=abc",
          "/accounts?limit=0", "/scorers?limit=abc", "/search", "/search?owner=",
          "/search?owner=x&limit=abc", "/search?owner=x&match=y", "/search?match="})
      expect_error(c, 400, "invalid_query", "GET", target);
  }

  SECTION("400 invalid_idempotency_key") {
    expect_error(c, 400, "invalid_idempotency_key", "POST", "/accounts/err-a/deposit",
                 amount_body(1), {{"Idempotency-Key", long_key}});
    expect_error(c, 400, "invalid_idempotency_key", "POST", "/accounts/err-a/deposit",
                 amount_body(1), {{"Idempotency-Key", "tab\there"}});
    // Not UTF-8: the key would be stored with the events and shown in /events as JSON.
    expect_error(c, 400, "invalid_idempotency_key", "POST", "/accounts/err-a/deposit",
                 amount_body(1), {{"Idempotency-Key", "key-\xc0\xaf"}});
    expect_error(c, 400, "invalid_idempotency_key", "POST", "/accounts",
                 R"({"id":"err-new","owner":"X"})", {{"Idempotency-Key", long_key}});
    expect_error(c, 404, "not_found", "GET", "/accounts/err-new");
  }

  SECTION("400 bad_request for bytes that are not HTTP") {
    auto raw = service::http::raw_exchange("127.0.0.1", svc.port(), "this is not http\r\n\r\n");
    INFO(raw);
    CHECK(raw.rfind("HTTP/1.1 400", 0) == 0);
  }

  // Whatever was refused above, the journal holds no event it caused.
  auto a = get_account(c, "err-a");
  CHECK(num(a, "balance") == 1000);
  CHECK(num(a, "version") == 2);
  CHECK(all_events(c, "accounts", "err-a").size() == 2);
  auto closed = get_account(c, "err-closed");
  CHECK(num(closed, "version") == 2);
  CHECK(str(closed, "status") == "closed");
  CHECK(head_offset(c) == head);
  auto listed = expect(c, 200, "GET", "/accounts?fresh=1");
  CHECK(arr(listed, "accounts").size() == 3);
  CHECK(num(listed, "offset") == head);
}

TEST_CASE("annals-bank: an Idempotency-Key retry returns the first answer, also after SIGKILL",
          "[service]") {
  service_process svc;
  auto c = svc.client();

  // Opening: the retry is the first 201, not 409 already_exists.
  auto opened =
    call(c, "POST", "/accounts", R"({"id":"idem","owner":"Ida"})", {{"Idempotency-Key", "open-1"}});
  REQUIRE(opened.status == 201);
  auto opened_again =
    call(c, "POST", "/accounts", R"({"id":"idem","owner":"Ida"})", {{"Idempotency-Key", "open-1"}});
  CHECK(opened_again.status == 201);
  CHECK(opened_again.text == opened.text);

  auto first =
    call(c, "POST", "/accounts/idem/deposit", amount_body(500), {{"Idempotency-Key", "pay-1"}});
  REQUIRE(first.status == 200);
  CHECK(num(obj(first.body), "balance") == 500);
  CHECK(num(obj(first.body), "version") == 2);

  auto retry =
    call(c, "POST", "/accounts/idem/deposit", amount_body(500), {{"Idempotency-Key", "pay-1"}});
  CHECK(retry.status == 200);
  CHECK(retry.text == first.text);
  CHECK(num(get_account(c, "idem"), "version") == 2);
  CHECK(num(get_account(c, "idem"), "balance") == 500);

  auto second =
    call(c, "POST", "/accounts/idem/deposit", amount_body(300), {{"Idempotency-Key", "pay-2"}});
  REQUIRE(second.status == 200);
  CHECK(num(obj(second.body), "version") == 3);
  // An older key still answers with its own first reply.
  auto late =
    call(c, "POST", "/accounts/idem/deposit", amount_body(500), {{"Idempotency-Key", "pay-1"}});
  CHECK(late.status == 200);
  CHECK(late.text == first.text);
  CHECK(num(get_account(c, "idem"), "version") == 3);
  CHECK(num(get_account(c, "idem"), "balance") == 800);

  // After a SIGKILL the replies are recomputed from the journal, and nothing is stored.
  svc.kill9();
  svc.restart();
  auto c2 = svc.client();
  auto after_kill =
    call(c2, "POST", "/accounts/idem/deposit", amount_body(500), {{"Idempotency-Key", "pay-1"}});
  CHECK(after_kill.status == 200);
  CHECK(after_kill.text == first.text);
  auto after_kill2 =
    call(c2, "POST", "/accounts/idem/deposit", amount_body(300), {{"Idempotency-Key", "pay-2"}});
  CHECK(after_kill2.status == 200);
  CHECK(after_kill2.text == second.text);
  auto reopened = call(c2, "POST", "/accounts", R"({"id":"idem","owner":"Ida"})",
                       {{"Idempotency-Key", "open-1"}});
  CHECK(reopened.status == 201);
  CHECK(reopened.text == opened.text);

  auto acc = get_account(c2, "idem");
  CHECK(num(acc, "version") == 3);
  CHECK(num(acc, "balance") == 800);
  auto events = all_events(c2, "accounts", "idem");
  REQUIRE(events.size() == 3);
  CHECK(str(events[0], "command_id") == "open-1");
  CHECK(str(events[1], "command_id") == "pay-1");
  CHECK(str(events[2], "command_id") == "pay-2");
  auto metrics = call(c2, "GET", "/metrics");
  INFO(metrics.text);
  CHECK(sample(metrics.text, "annals_events_persisted_total") == 0);
  CHECK(sample(metrics.text, "annals_duplicate_commands_total") == 3);

  // A new key after the restart is a new deposit.
  auto fresh =
    call(c2, "POST", "/accounts/idem/deposit", amount_body(1), {{"Idempotency-Key", "pay-3"}});
  CHECK(fresh.status == 200);
  CHECK(num(obj(fresh.body), "version") == 4);
  CHECK(num(obj(fresh.body), "balance") == 801);
}

TEST_CASE("annals-bank: SIGKILL loses no acknowledged deposit", "[service]") {
  service_process svc;
  auto c = svc.client();
  const std::string id = "crash";
  open_account(c, id, "Crash Test");
  constexpr int threads = 4;

  // Phase 1: 200 deposits from 4 clients, all acknowledged before the kill.
  constexpr int per_thread = 50;
  std::vector<std::int64_t> sums(threads, 0);
  std::vector<std::string> failures(threads);
  {
    std::vector<std::jthread> pool;
    auto port = svc.port();
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t, port] {
        client mine{"127.0.0.1", port};
        for (int i = 0; i < per_thread; ++i) {
          std::int64_t cents = t * 1000 + i + 1;
          auto r = mine.request("POST", "/accounts/" + id + "/deposit", amount_body(cents));
          if (!r.ok() || r->status != 200) {
            failures[static_cast<std::size_t>(t)] =
              r.ok() ? std::to_string(r->status) + " " + r->body : r.error();
            return;
          }
          sums[static_cast<std::size_t>(t)] += cents;
        }
      });
  }
  for (const auto& f : failures)
    CHECK(f.empty());
  std::int64_t acked = 0;
  for (auto s : sums)
    acked += s;
  REQUIRE(num(get_account(c, id), "version") == 1 + threads * per_thread);

  svc.kill9();
  svc.restart();
  c = svc.client();
  auto acc = get_account(c, id);
  CHECK(num(acc, "balance") == acked);
  CHECK(num(acc, "version") == 1 + threads * per_thread);
  auto row = balances_row(c, id);
  REQUIRE_FALSE(row.empty());
  CHECK(num(row, "balance") == acked);
  CHECK(num(row, "version") == 1 + threads * per_thread);
  auto st = expect(c, 200, "GET", "/accounts/" + id + "/statement?fresh=1");
  CHECK(arr(st, "lines").size() == 1 + threads * per_thread);
  CHECK(num(obj(arr(st, "lines").back()), "balance") == acked);

  // Phase 2: the kill lands while deposits are in flight. Every acknowledged deposit is in
  // the journal; the journal holds nothing but acknowledged deposits and those whose answer
  // the kill cut off (each amount is unique, so every event names its request).
  std::vector<std::vector<std::int64_t>> ok(threads);
  std::vector<std::vector<std::int64_t>> cut(threads);
  std::vector<std::string> unexpected(threads);
  std::atomic<int> ok_total{0};
  {
    std::vector<std::jthread> pool;
    auto port = svc.port();
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t, port](std::stop_token stop) {
        auto k = static_cast<std::size_t>(t);
        client mine{"127.0.0.1", port};
        for (int i = 0; i < 10000 && !stop.stop_requested(); ++i) {
          std::int64_t cents = 1'000'000 + t * 100'000 + i;
          auto r =
            mine.request("POST", "/accounts/" + id + "/deposit", amount_body(cents), {}, 10s);
          if (!r.ok()) {
            cut[k].push_back(cents);
            return;
          }
          if (r->status != 200) {
            unexpected[k] = std::to_string(r->status) + " " + r->body;
            return;
          }
          ok[k].push_back(cents);
          ++ok_total;
        }
      });
    REQUIRE(wait_until([&] { return ok_total.load() >= 100; }, 20s));
    svc.kill9();
  }
  for (const auto& u : unexpected)
    CHECK(u.empty());
  std::set<std::int64_t> acknowledged;
  std::set<std::int64_t> uncertain;
  for (int t = 0; t < threads; ++t) {
    acknowledged.insert(ok[static_cast<std::size_t>(t)].begin(),
                        ok[static_cast<std::size_t>(t)].end());
    uncertain.insert(cut[static_cast<std::size_t>(t)].begin(),
                     cut[static_cast<std::size_t>(t)].end());
  }
  CHECK(acknowledged.size() >= 100);

  svc.restart();
  c = svc.client();
  auto events = all_events(c, "accounts", id);
  std::set<std::int64_t> stored;
  std::int64_t stored_sum = 0;
  for (std::size_t i = 1 + threads * per_thread; i < events.size(); ++i) {
    auto cents = num(obj(events[i], "data"), "cents");
    stored.insert(cents);
    stored_sum += cents;
  }
  for (auto cents : acknowledged) {
    INFO("acknowledged deposit of " << cents << " cents");
    CHECK(stored.count(cents) == 1);
  }
  for (auto cents : stored) {
    INFO("stored deposit of " << cents << " cents");
    CHECK((acknowledged.count(cents) == 1 || uncertain.count(cents) == 1));
  }
  auto final_acc = get_account(c, id);
  CHECK(num(final_acc, "balance") == acked + stored_sum);
  CHECK(num(final_acc, "version") == static_cast<std::int64_t>(events.size()));
  auto final_row = balances_row(c, id);
  REQUIRE_FALSE(final_row.empty());
  CHECK(num(final_row, "balance") == acked + stored_sum);
  CHECK(num(final_row, "version") == static_cast<std::int64_t>(events.size()));
}

TEST_CASE("annals-bank: SIGTERM answers the requests in flight, exits 0 and loses nothing",
          "[service]") {
  service_process svc;
  auto c = svc.client();
  const std::string id = "drain";
  open_account(c, id, "Drain");
  c.close();

  constexpr int threads = 4;
  struct outcome {
    int oks = 0;
    unsigned status = 0; // the first answer that was not 200
    std::string body;
    std::string error; // the transport error that ended the loop
    std::chrono::milliseconds slowest{0};
  };
  std::vector<outcome> outcomes(threads);
  std::atomic<int> ok_total{0};
  std::atomic<int> ended{0};
  int exit_code = -2;
  bool all_ended = false;
  {
    std::vector<std::jthread> pool;
    auto port = svc.port();
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t, port](std::stop_token stop) {
        auto& out = outcomes[static_cast<std::size_t>(t)];
        client mine{"127.0.0.1", port};
        struct count_end {
          std::atomic<int>& n;
          ~count_end() {
            ++n;
          }
        } on_return{ended};
        // The stop token only aborts the loop when the test itself fails; otherwise the
        // service's answers end it.
        while (!stop.stop_requested()) {
          auto began = std::chrono::steady_clock::now();
          auto r = mine.request("POST", "/accounts/" + id + "/deposit", amount_body(1), {}, 5s);
          auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - began);
          out.slowest = std::max(out.slowest, took);
          if (!r.ok()) {
            out.error = r.error();
            return;
          }
          if (r->status != 200) {
            out.status = r->status;
            out.body = r->body;
            return;
          }
          ++out.oks;
          ++ok_total;
        }
      });
    REQUIRE(wait_until([&] { return ok_total.load() >= 60; }, 20s));
    exit_code = svc.terminate(40s);
    // Every client ends on its own once the service is gone.
    all_ended = wait_until([&] { return ended.load() == threads; }, 15s);
  }
  CHECK(all_ended);
  INFO(svc.output());
  CHECK(exit_code == 0);
  CHECK(svc.output().find("stopped cleanly") != std::string::npos);

  int oks = 0;
  for (const auto& out : outcomes) {
    INFO("oks " << out.oks << ", status " << out.status << " " << out.body << ", error '"
                << out.error << "', slowest " << out.slowest.count() << " ms");
    oks += out.oks;
    // Each loop ended with a refusal (503 unavailable) or a closed/refused connection,
    // never with a hang.
    CHECK((out.status != 0) != !out.error.empty());
    if (out.status != 0) {
      CHECK(out.status == 503);
      CHECK(out.body.find("\"unavailable\"") != std::string::npos);
    }
    CHECK(out.error.find("timed out") == std::string::npos);
    CHECK(out.slowest < 5s);
  }
  CHECK(oks == ok_total.load());

  // A request after the exit is refused at once.
  {
    auto began = std::chrono::steady_clock::now();
    client late{"127.0.0.1", svc.port()};
    auto r = late.request("POST", "/accounts/" + id + "/deposit", amount_body(1), {}, 3s);
    CHECK_FALSE(r.ok());
    CHECK(std::chrono::steady_clock::now() - began < 3s);
  }

  // Every acknowledged deposit is in the journal, and nothing else.
  svc.restart();
  c = svc.client();
  auto acc = get_account(c, id);
  CHECK(num(acc, "version") == oks + 1);
  CHECK(num(acc, "balance") == oks);
  CHECK(all_events(c, "accounts", id).size() == static_cast<std::size_t>(oks + 1));
  auto row = balances_row(c, id);
  REQUIRE_FALSE(row.empty());
  CHECK(num(row, "balance") == oks);
}

TEST_CASE("annals-bank: transfers that SIGKILL interrupts finish after the restart and "
          "conserve money",
          "[service]") {
  service_process svc;
  auto c = svc.client();
  constexpr int accounts = 4;
  constexpr std::int64_t start_balance = 100'000;
  auto account_id = [](int i) { return "pool-" + std::to_string(i); };
  for (int i = 0; i < accounts; ++i) {
    open_account(c, account_id(i), "Pool " + std::to_string(i));
    deposit(c, account_id(i), start_balance);
  }

  // Each client moves money from its account to the next one, in a ring, until the kill.
  struct sent {
    std::string id;
    std::string status; // of the 202 reply; empty when the kill cut the answer off
  };
  std::vector<std::vector<sent>> transfers(accounts);
  std::vector<std::string> unexpected(accounts);
  std::atomic<int> acknowledged{0};
  {
    std::vector<std::jthread> pool;
    auto port = svc.port();
    for (int t = 0; t < accounts; ++t)
      pool.emplace_back([&, t, port](std::stop_token stop) {
        auto k = static_cast<std::size_t>(t);
        client mine{"127.0.0.1", port};
        for (int i = 0; i < 10000 && !stop.stop_requested(); ++i) {
          auto id = "x-" + std::to_string(t) + "-" + std::to_string(i);
          auto body = json::serialize(json::object{{"id", id},
                                                   {"from", account_id(t)},
                                                   {"to", account_id((t + 1) % accounts)},
                                                   {"amount", i % 7 + 1}});
          auto r = mine.request("POST", "/transfers", body, {}, 10s);
          if (!r.ok()) {
            transfers[k].push_back({id, ""});
            return;
          }
          boost::system::error_code ec;
          auto v = json::parse(r->body, ec);
          if (r->status != 202 || ec || !v.is_object() || !v.as_object().contains("status")
              || !v.as_object().at("status").is_string()) {
            unexpected[k] = std::to_string(r->status) + " " + r->body;
            return;
          }
          transfers[k].push_back({id, std::string{v.as_object().at("status").as_string()}});
          ++acknowledged;
        }
      });
    REQUIRE(wait_until([&] { return acknowledged.load() >= 40; }, 20s));
    svc.kill9();
  }
  for (const auto& u : unexpected)
    CHECK(u.empty());

  svc.restart();
  c = svc.client();
  // The restart resumes the pending transfers in the background: wait (bounded) until none
  // is pending, then every transfer has settled one way or the other.
  std::map<std::string, json::object> settled;
  std::map<std::string, std::int64_t> amount_of;
  for (int t = 0; t < accounts; ++t)
    for (std::size_t i = 0; i < transfers[static_cast<std::size_t>(t)].size(); ++i)
      amount_of[transfers[static_cast<std::size_t>(t)][i].id] =
        static_cast<std::int64_t>(i % 7 + 1);
  std::string unsettled; // the latest reason to keep waiting
  bool all_settled = wait_until(
    [&] {
      for (int t = 0; t < accounts; ++t)
        for (const auto& tr : transfers[static_cast<std::size_t>(t)]) {
          if (settled.count(tr.id))
            continue;
          auto r = c.request("GET", "/transfers/" + tr.id);
          if (!r.ok()) {
            unsettled = tr.id + ": " + r.error();
            return false;
          }
          if (r->status == 404 && tr.status.empty()) {
            settled[tr.id] = json::object{}; // never started: the kill came first
            continue;
          }
          boost::system::error_code ec;
          auto v = json::parse(r->body, ec);
          unsettled = tr.id + ": " + std::to_string(r->status) + " " + r->body;
          if (r->status != 200 || ec || !v.is_object() || v.as_object().at("status") == "pending")
            return false;
          settled[tr.id] = v.as_object();
        }
      return true;
    },
    20s);
  INFO("still unsettled: " << unsettled);
  INFO(svc.all_output());
  REQUIRE(all_settled);

  std::vector<std::int64_t> expected(accounts, start_balance);
  int completed = 0;
  for (int t = 0; t < accounts; ++t)
    for (const auto& tr : transfers[static_cast<std::size_t>(t)]) {
      const auto& st = settled[tr.id];
      INFO("transfer " << tr.id << " answered '" << tr.status << "', now " << json::serialize(st));
      if (!tr.status.empty()) {
        // An acknowledged transfer had finished when it was answered, and stays so.
        CHECK(tr.status != "pending");
        REQUIRE_FALSE(st.empty());
        CHECK(str(st, "status") == tr.status);
      }
      if (st.empty())
        continue;
      CHECK(num(st, "amount") == amount_of[tr.id]);
      if (str(st, "status") == "completed") {
        ++completed;
        expected[static_cast<std::size_t>(t)] -= amount_of[tr.id];
        expected[static_cast<std::size_t>((t + 1) % accounts)] += amount_of[tr.id];
      } else {
        CHECK(str(st, "status") == "compensated");
      }
    }
  CHECK(completed >= 40);

  std::int64_t total = 0;
  for (int i = 0; i < accounts; ++i) {
    auto acc = get_account(c, account_id(i));
    INFO(account_id(i));
    CHECK(num(acc, "balance") == expected[static_cast<std::size_t>(i)]);
    total += num(acc, "balance");
    auto row = balances_row(c, account_id(i));
    REQUIRE_FALSE(row.empty());
    CHECK(num(row, "balance") == num(acc, "balance"));
    CHECK(num(row, "version") == num(acc, "version"));
  }
  CHECK(total == accounts * start_balance);
}

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <latch>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "service/http.hpp"
#include "service/http_client.hpp"

using namespace service::http;
using namespace std::chrono_literals;

namespace {

constexpr auto bound = 10s;

/// Responders handed over by the "/hold" route, for the test to answer later.
struct holder {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<responder> held;

  void add(responder r) {
    {
      std::lock_guard<std::mutex> guard{mutex};
      held.push_back(std::move(r));
    }
    cv.notify_all();
  }

  /// The oldest held responder, once there is one within `limit`.
  std::optional<responder> take(std::chrono::milliseconds limit = bound) {
    std::unique_lock<std::mutex> lock{mutex};
    if (!cv.wait_for(lock, limit, [this] { return !held.empty(); }))
      return std::nullopt;
    auto r = std::move(held.front());
    held.erase(held.begin());
    return r;
  }
};

response echo(const request& r) {
  boost::json::object out;
  out["method"] = r.method;
  out["target"] = r.target;
  out["path"] = r.path;
  boost::json::array segments;
  for (const auto& s : r.segments)
    segments.emplace_back(s);
  out["segments"] = std::move(segments);
  boost::json::object query;
  for (const auto& [name, value] : r.query)
    query[name] = value;
  out["query"] = std::move(query);
  out["x_test"] = r.header("x-test");
  out["body"] = r.body;
  response res;
  res.body = boost::json::serialize(out);
  return res;
}

/// Echoes every request as JSON, except for a few paths that exercise the other outcomes.
handler test_handler(std::shared_ptr<holder> hold) {
  return [hold](request r, responder reply) {
    if (r.path == "/hold")
      return hold->add(std::move(reply));
    if (r.path == "/throw")
      throw std::runtime_error("boom");
    if (r.path == "/drop")
      return;
    if (r.path == "/invalid")
      return reply(response{42, "", "text/plain", {}});
    if (r.path == "/close")
      return reply(response{200, "{}", "application/json", {{"Connection", "close"}}});
    reply(echo(r));
  };
}

std::unique_ptr<server> start(std::shared_ptr<holder> hold, server_options options = {}) {
  options.port = 0;
  auto opened = server::open(std::move(options), test_handler(std::move(hold)));
  REQUIRE(opened);
  return std::move(opened).value();
}

boost::json::object json_of(const client_response& res) {
  return boost::json::parse(res.body).as_object();
}

std::string str(const boost::json::value& v) {
  return std::string(v.as_string());
}

} // namespace

TEST_CASE("json_error escapes its fields", "[http]") {
  auto res = json_error(404, "not_found", "a \"quoted\"\nline\\");
  CHECK(res.status == 404);
  CHECK(res.content_type == "application/json");
  auto body = boost::json::parse(res.body).as_object();
  CHECK(str(body.at("error")) == "not_found");
  CHECK(str(body.at("message")) == "a \"quoted\"\nline\\");
}

TEST_CASE("the handler sees the decoded request", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  REQUIRE(srv->port() != 0);
  client c{"127.0.0.1", srv->port()};

  auto res = c.request("GET", "/accounts/a%20b/events%2Fx//?from=2&name=J%C3%B6rg+M&flag&=x", {},
                       {{"X-Test", "yes"}});
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->headers["content-type"] == "application/json");
  CHECK(res->headers["content-length"] == std::to_string(res->body.size()));
  auto body = json_of(*res);
  CHECK(str(body.at("method")) == "GET");
  CHECK(str(body.at("target")) == "/accounts/a%20b/events%2Fx//?from=2&name=J%C3%B6rg+M&flag&=x");
  CHECK(str(body.at("path")) == "/accounts/a b/events/x//");
  const auto& segments = body.at("segments").as_array();
  REQUIRE(segments.size() == 3);
  CHECK(str(segments[0]) == "accounts");
  CHECK(str(segments[1]) == "a b");
  CHECK(str(segments[2]) == "events/x");
  const auto& query = body.at("query").as_object();
  CHECK(query.size() == 3);
  CHECK(str(query.at("from")) == "2");
  CHECK(str(query.at("name")) == "J\xC3\xB6rg M");
  CHECK(str(query.at("flag")) == "");
  CHECK(str(body.at("x_test")) == "yes");

  res = c.request("POST", "/items", R"({"a":1})");
  REQUIRE(res);
  body = json_of(*res);
  CHECK(str(body.at("method")) == "POST");
  CHECK(str(body.at("body")) == R"({"a":1})");
  CHECK(body.at("segments").as_array().size() == 1);

  res = c.request("GET", "http://example.com/a/b?x=1");
  REQUIRE(res);
  body = json_of(*res);
  CHECK(str(body.at("path")) == "/a/b");
  CHECK(str(body.at("query").as_object().at("x")) == "1");

  res = c.request("GET", "/bad%zzescape");
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK(str(json_of(*res).at("error")) == "bad_request");
  CHECK(res->headers["connection"] == "close");
}

TEST_CASE("the body limit is enforced", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  client c{"127.0.0.1", srv->port()};

  std::string at_limit(64 * 1024, 'x');
  auto res = c.request("POST", "/echo", at_limit, {{"Content-Type", "text/plain"}});
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(str(json_of(*res).at("body")) == at_limit);

  res = c.request("POST", "/echo", at_limit + "y", {{"Content-Type", "text/plain"}});
  REQUIRE(res);
  CHECK(res->status == 413);
  CHECK(str(json_of(*res).at("error")) == "payload_too_large");
  CHECK(res->headers["connection"] == "close");

  // A chunked body is cut off once it passes the limit.
  std::string chunked = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 17; ++i)
    chunked += "1000\r\n" + std::string(0x1000, 'z') + "\r\n";
  chunked += "0\r\n\r\n";
  auto raw = raw_exchange("127.0.0.1", srv->port(), chunked, bound);
  CHECK(raw.rfind("HTTP/1.1 413", 0) == 0);
  CHECK(raw.find("payload_too_large") != std::string::npos);

  res = c.request("GET", "/after");
  REQUIRE(res);
  CHECK(res->status == 200);
}

TEST_CASE("malformed requests get 400 and the server keeps serving", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);

  auto raw = raw_exchange("127.0.0.1", srv->port(), "this is not http\r\n\r\n", bound);
  CHECK(raw.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(raw.find("\"error\":\"bad_request\"") != std::string::npos);
  CHECK(raw.find("Connection: close") != std::string::npos);
  CHECK(raw.find("Content-Type: application/json") != std::string::npos);

  raw = raw_exchange("127.0.0.1", srv->port(),
                     "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                     bound);
  CHECK(raw.rfind("HTTP/1.1 400", 0) == 0);

  raw = raw_exchange("127.0.0.1", srv->port(),
                     "GET / HTTP/1.1\r\nX-Big: " + std::string(20000, 'h') + "\r\n\r\n", bound);
  CHECK(raw.rfind("HTTP/1.1 431", 0) == 0);

  client c{"127.0.0.1", srv->port()};
  auto res = c.request("GET", "/still/here");
  REQUIRE(res);
  CHECK(res->status == 200);
}

TEST_CASE("an Expect: 100-continue request gets the interim response", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  auto raw = raw_exchange("127.0.0.1", srv->port(),
                          "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                          "Expect: 100-continue\r\n\r\nhello",
                          bound);
  CHECK(raw.rfind("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", 0) == 0);
  CHECK(raw.find(R"("body":"hello")") != std::string::npos);
}

TEST_CASE("pipelined, HTTP/1.0 and HEAD requests", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);

  // Two requests in one write are answered in order; the second asks to close.
  auto raw = raw_exchange("127.0.0.1", srv->port(),
                          "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                          "GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                          bound);
  auto first = raw.find(R"("path":"/first")");
  auto second = raw.find(R"("path":"/second")");
  CHECK(first != std::string::npos);
  CHECK(second != std::string::npos);
  CHECK(first < second);

  raw = raw_exchange("127.0.0.1", srv->port(), "GET /old HTTP/1.0\r\n\r\n", bound);
  CHECK(raw.rfind("HTTP/1.0 200", 0) == 0);
  CHECK(raw.find("Connection: close") != std::string::npos);
  CHECK(raw.find(R"("path":"/old")") != std::string::npos);

  client c{"127.0.0.1", srv->port()};
  auto res = c.request("HEAD", "/head");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body.empty());
  CHECK(res->headers["content-length"] != "0");
  res = c.request("GET", "/after/head");
  REQUIRE(res);
  CHECK(str(json_of(*res).at("path")) == "/after/head");
  CHECK(c.connections_opened() == 1);
}

TEST_CASE("one connection carries many requests", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  auto port = srv->port();
  client c{"127.0.0.1", port};
  for (int i = 0; i < 5; ++i) {
    auto res = c.request("GET", "/n/" + std::to_string(i));
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->headers.count("connection") == 0);
  }
  CHECK(c.connections_opened() == 1);

  // "Connection: close" from the handler ends the connection; the client opens another.
  auto res = c.request("GET", "/close");
  REQUIRE(res);
  CHECK(res->headers["connection"] == "close");
  res = c.request("GET", "/again");
  REQUIRE(res);
  CHECK(c.connections_opened() == 2);

  // The server goes away while the connection is idle; the client notices before sending.
  srv.reset();
  server_options options;
  options.port = port;
  auto reopened = server::open(options, test_handler(hold));
  REQUIRE(reopened);
  res = c.request("POST", "/after/restart", "{}");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(c.connections_opened() == 3);

  // The port is now taken.
  auto clash = server::open(options, test_handler(hold));
  CHECK_FALSE(clash);
  CHECK_FALSE(clash.error().empty());
}

TEST_CASE("a handler may answer later from another thread", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  auto port = srv->port();
  auto pending = std::async(std::launch::async, [port] {
    client c{"127.0.0.1", port};
    return c.request("POST", "/hold", R"({"x":1})");
  });
  auto reply = hold->take();
  REQUIRE(reply);
  CHECK_FALSE(srv->wait_idle(0ms));
  CHECK(pending.wait_for(0ms) == std::future_status::timeout);

  std::latch go{1};
  std::thread answerer{[&] {
    go.wait();
    (*reply)(response{201, R"({"late":true})"});
    (*reply)(response{500, "ignored"});
  }};
  go.count_down();
  REQUIRE(pending.wait_for(bound) == std::future_status::ready);
  auto res = pending.get();
  answerer.join();
  REQUIRE(res);
  CHECK(res->status == 201);
  CHECK(res->body == R"({"late":true})");
  CHECK(srv->wait_idle(bound));
}

TEST_CASE("handler failures become 500 responses", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  client c{"127.0.0.1", srv->port()};
  for (const char* path : {"/throw", "/drop", "/invalid"}) {
    auto res = c.request("GET", path);
    REQUIRE(res);
    CHECK(res->status == 500);
    CHECK(str(json_of(*res).at("error")) == "internal_error");
  }
  CHECK(c.connections_opened() == 1);
  CHECK(srv->wait_idle(bound));
}

TEST_CASE("a peer that leaves before the answer does no harm", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  // The request is held, so nothing can arrive before the client gives up.
  auto raw = raw_exchange("127.0.0.1", srv->port(), "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n", 200ms);
  CHECK(raw.empty());
  auto reply = hold->take();
  REQUIRE(reply);
  (*reply)(response{200, "{}"});
  CHECK(srv->wait_idle(bound));

  client c{"127.0.0.1", srv->port()};
  auto res = c.request("GET", "/next");
  REQUIRE(res);
  CHECK(res->status == 200);
}

TEST_CASE("a responder may outlive its server", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  auto port = srv->port();
  auto pending = std::async(std::launch::async, [port] {
    client c{"127.0.0.1", port};
    return c.request("GET", "/hold");
  });
  auto reply = hold->take();
  REQUIRE(reply);
  srv->stop();
  CHECK(srv->wait_idle(bound));
  srv.reset();
  REQUIRE(pending.wait_for(bound) == std::future_status::ready);
  CHECK_FALSE(pending.get());
  (*reply)(response{200, "{}"});
  reply.reset();
}

TEST_CASE("stop_accepting keeps open connections working", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  auto port = srv->port();
  client open_conn{"127.0.0.1", port};
  REQUIRE(open_conn.request("GET", "/warm"));
  auto pending = std::async(std::launch::async, [port] {
    client c{"127.0.0.1", port};
    return c.request("POST", "/hold", "{}");
  });
  auto reply = hold->take();
  REQUIRE(reply);

  srv->stop_accepting();
  client late{"127.0.0.1", port};
  CHECK_FALSE(late.request("GET", "/refused", {}, {}, bound));

  auto res = open_conn.request("GET", "/still/open");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(open_conn.connections_opened() == 1);

  CHECK_FALSE(srv->wait_idle(20ms));
  (*reply)(response{202, "{}"});
  REQUIRE(pending.wait_for(bound) == std::future_status::ready);
  auto held = pending.get();
  REQUIRE(held);
  CHECK(held->status == 202);
  CHECK(srv->wait_idle(bound));
}

TEST_CASE("concurrent clients are all answered", "[http]") {
  auto hold = std::make_shared<holder>();
  auto srv = start(hold);
  auto port = srv->port();
  auto before = srv->requests_served();
  constexpr int threads = 8;
  constexpr int per_thread = 25;
  std::atomic<int> ok{0};
  std::vector<std::string> failures(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      client c{"127.0.0.1", port};
      for (int i = 0; i < per_thread; ++i) {
        auto id = std::to_string(t) + "-" + std::to_string(i);
        auto res = c.request("POST", "/c/" + id, "{\"id\":\"" + id + "\"}");
        if (!res) {
          failures[t] = res.error();
          return;
        }
        if (res->status == 200 && json_of(*res).at("path").as_string() == "/c/" + id)
          ++ok;
      }
    });
  for (auto& w : workers)
    w.join();
  for (const auto& f : failures)
    CHECK(f.empty());
  CHECK(ok == threads * per_thread);
  CHECK(srv->wait_idle(bound));
  CHECK(srv->requests_served() - before == threads * per_thread);
}

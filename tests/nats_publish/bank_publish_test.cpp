// annals-bank started with --publish: the real binary (service_process.hpp) publishes the
// bank's public events to a nats-server the test starts, through the projection
// "publisher" that /health lists. Built when the samples (annals-bank) are.

#ifdef ANNALS_BANK_BINARY

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "annals/actors/public_events.hpp"
#include "jetstream/nats_servers.hpp"
#include "nats_publish/nats_reader.hpp"
#include "service/http_client.hpp"
#include "service/service_process.hpp"

namespace {

namespace json = boost::json;
using service::http::client;

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

// The messages of `stream` once it holds `n`, or what it holds after 15 s.
std::vector<nats_test::received> await_messages(nats_test::reader& r, const std::string& stream,
                                                std::uint64_t n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{15};
  for (;;) {
    try {
      if (r.state(stream).messages >= n || std::chrono::steady_clock::now() > deadline)
        return r.all(stream);
    } catch (const std::runtime_error&) { // not created yet
      if (std::chrono::steady_clock::now() > deadline)
        throw;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
}

} // namespace

TEST_CASE("annals-bank --publish sends the bank's public events to a JetStream stream, and "
          "/health lists the publisher",
          "[nats][publisher][service]") {
  annals::persistence::test::nats_cluster nats{1};
  auto stream = annals::persistence::test::fresh_stream_name("B");
  service_test::service_process svc{
    std::vector<std::string>{"--publish", nats.server(0).url() + "?stream=" + stream}};
  auto c = svc.client();
  expect(c, 201, "POST", "/accounts", R"({"id":"acc-1","owner":"Ann"})");
  expect(c, 200, "POST", "/accounts/acc-1/deposit", R"({"amount":1200})");
  expect(c, 200, "POST", "/accounts/acc-1/deposit", R"({"amount":300})");
  expect(c, 200, "POST", "/accounts/acc-1/withdraw", R"({"amount":500})");

  nats_test::reader r{nats.server(0).url()};
  auto all = await_messages(r, stream, 4);
  REQUIRE(all.size() == 4);
  std::vector<std::int64_t> credited;
  for (const auto& m : all) {
    auto msg = annals::actors::parse_published(m.body);
    REQUIRE(msg);
    CHECK(m.headers.at("Nats-Msg-Id") == msg->id);
    CHECK(msg->id.starts_with("bank:"));
    CHECK(m.subject == "bank.public." + msg->type);
    CHECK(msg->data.at("account").as_string() == "acc-1");
    if (msg->type == "payments.AccountCredited") {
      credited.push_back(msg->data.at("amount").to_number<std::int64_t>());
      CHECK(msg->data.at("currency").as_string() == "EUR");
    }
  }
  CHECK(credited == std::vector<std::int64_t>{1200, 300});
  CHECK(annals::actors::parse_published(all.front().body)->type == "payments.AccountOpened");
  CHECK(annals::actors::parse_published(all.back().body)->type == "payments.AccountDebited");

  auto health = expect(c, 200, "GET", "/health");
  bool listed = false;
  for (const auto& p : health.at("projections").as_array())
    if (p.at("name").as_string() == "publisher") {
      listed = true;
      CHECK(p.at("state").as_string() == "running");
    }
  CHECK(listed);
}

#endif // ANNALS_BANK_BINARY

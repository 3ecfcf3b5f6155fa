// annals-bank --statements-dir: each account's statement as a JSON-lines file, kept by the
// files projection, with every event once, also after a kill -9 and a restart.

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "service/http_client.hpp"
#include "service_process.hpp"

namespace {

using service::http::client;
using service_test::service_process;

std::string expect(client& c, unsigned status, std::string_view method, std::string_view target,
                   std::string_view body = {}) {
  auto r = c.request(method, target, body);
  INFO(method << ' ' << target << ' ' << body);
  INFO("transport error: " << r.error());
  REQUIRE(r.ok());
  INFO("-> " << r->status << ' ' << r->body);
  REQUIRE(r->status == status);
  return r->body;
}

// Waits, bounded, until /health shows the statement-files projection at the journal head;
// fails with the last health reply otherwise.
void wait_for_statement_files(client& c) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{30};
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    last = expect(c, 200, "GET", "/health");
    auto health = boost::json::parse(last).as_object();
    auto head = health.at("journal").as_object().at("head_offset").to_number<std::uint64_t>();
    for (const auto& p : health.at("projections").as_array()) {
      const auto& o = p.as_object();
      if (o.at("name").as_string() != "statement-files")
        continue;
      REQUIRE(o.at("state").as_string() != "failed");
      if (o.at("offset").to_number<std::uint64_t>() == head)
        return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  FAIL("statement-files did not reach the head within 30 s: " << last);
}

struct line {
  std::uint64_t seq;
  std::string kind;
  std::int64_t balance;
};

// The lines of a statement file, after its header line.
std::vector<line> read_lines(const std::string& path) {
  std::ifstream in{path};
  REQUIRE(in);
  std::string text;
  REQUIRE(std::getline(in, text));
  CHECK_THAT(text, Catch::StartsWith(R"({"annals_offset":)"));
  std::vector<line> out;
  while (std::getline(in, text)) {
    auto o = boost::json::parse(text).as_object();
    out.push_back({o.at("seq").to_number<std::uint64_t>(), std::string{o.at("kind").as_string()},
                   o.at("balance").to_number<std::int64_t>()});
  }
  return out;
}

} // namespace

TEST_CASE("annals-bank --statements-dir keeps each account's statement as a JSON-lines file, "
          "each event once across a kill -9",
          "[service][files]") {
  service_process svc{service_process::with_statement_files{}};
  auto c = svc.client();
  expect(c, 201, "POST", "/accounts", R"({"id":"ada","owner":"Ada"})");
  expect(c, 200, "POST", "/accounts/ada/deposit", R"({"amount":100})");
  expect(c, 200, "POST", "/accounts/ada/withdraw", R"({"amount":30})");
  expect(c, 201, "POST", "/accounts", R"({"id":"bob","owner":"Bob"})");
  wait_for_statement_files(c);
  auto path = svc.statements_dir() + "/ada.jsonl";
  auto lines = read_lines(path);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].kind == "opened");
  CHECK(lines[1].balance == 100);
  CHECK(lines[2].kind == "withdrawal");
  CHECK(lines[2].balance == 70);
  CHECK(read_lines(svc.statements_dir() + "/bob.jsonl").size() == 1);

  c.close();
  svc.restart(); // kill -9, then a new process on the same journal and directory
  auto c2 = svc.client();
  expect(c2, 200, "POST", "/accounts/ada/deposit", R"({"amount":5})");
  wait_for_statement_files(c2);
  lines = read_lines(path);
  REQUIRE(lines.size() == 4);
  for (std::size_t i = 0; i < lines.size(); ++i)
    CHECK(lines[i].seq == i + 1);
  CHECK(lines[3].balance == 75);
  c2.close();
  CHECK(svc.terminate() == 0);
}

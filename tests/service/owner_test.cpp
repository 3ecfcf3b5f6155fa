// One annals-bank owns its SQLite journal: a second one on the same file exits at once
// with a message naming the file and the owner, while the first keeps serving; a kill -9
// leaves no lock behind, so a new service starts on the file at once. Likewise a second
// service on the first one's search index exits naming the index's directory.

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <string_view>

#include "service/http_client.hpp"
#include "service_process.hpp"

namespace {

using service::http::client;
using service_test::service_process;

// Sends one request and requires `status`; returns the body.
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

} // namespace

TEST_CASE("annals-bank: a second service on the same journal exits non-zero naming the file and "
          "the owner, and the first keeps serving",
          "[service][owner]") {
  service_process first;
  auto c = first.client();
  expect(c, 201, "POST", "/accounts", R"({"id":"a","owner":"Ada"})");
  expect(c, 200, "POST", "/accounts/a/deposit", R"({"amount":100})");

  service_process second{first.db_path()};
  auto code = second.run_expecting_exit();
  auto text = second.output();
  INFO(text);
  CHECK(code == 1);
  CHECK_THAT(text, Catch::Contains("journal.owned: " + first.db_path() + " is owned by annals-bank"
                                   + " (pid " + std::to_string(first.pid())));
  CHECK_THAT(text, Catch::Contains("networked journal"));

  // The first one still serves commands, strongly consistent reads and its read models.
  expect(c, 200, "POST", "/accounts/a/deposit", R"({"amount":50})");
  auto account = expect(c, 200, "GET", "/accounts/a");
  CHECK_THAT(account, Catch::Contains(R"("balance":150)"));
  auto balances = expect(c, 200, "GET", "/accounts?fresh=1");
  CHECK_THAT(balances, Catch::Contains(R"("balance":150)"));
  auto statement = expect(c, 200, "GET", "/accounts/a/statement?fresh=1");
  CHECK_THAT(statement, Catch::Contains("50"));
  c.close();
  CHECK(first.terminate() == 0);
}

TEST_CASE("annals-bank: after the owner is killed -9, a new service starts on the journal at "
          "once",
          "[service][owner]") {
  service_process svc;
  auto c = svc.client();
  expect(c, 201, "POST", "/accounts", R"({"id":"k","owner":"Kim"})");
  expect(c, 200, "POST", "/accounts/k/deposit", R"({"amount":70})");
  c.close();
  svc.kill9();
  // The lock file stays behind (nothing of the service ran after the signal); its lock
  // went with the process.
  CHECK(std::filesystem::exists(svc.db_path() + ".owner"));
  svc.restart(); // throws unless it listens
  auto again = svc.client();
  auto account = expect(again, 200, "GET", "/accounts/k");
  CHECK_THAT(account, Catch::Contains(R"("balance":70)"));
  expect(again, 200, "POST", "/accounts/k/deposit", R"({"amount":5})");
  again.close();
  CHECK(svc.terminate() == 0);
  // A clean stop removes the lock file.
  CHECK_FALSE(std::filesystem::exists(svc.db_path() + ".owner"));
}

#ifdef ANNALS_BANK_WITH_XAPIAN
TEST_CASE("annals-bank: a second service on the same search index exits non-zero naming its "
          "directory, and the first keeps serving",
          "[service][owner]") {
  service_process first;
  auto c = first.client();
  expect(c, 201, "POST", "/accounts", R"({"id":"a","owner":"Ada"})");
  // Its own journal file, the first one's index (the default: beside the first's file).
  auto index = first.db_path() + ".search";
  service_process second{std::string{}};
  second.add_args({"--search-dir", index});
  auto code = second.run_expecting_exit();
  auto text = second.output();
  INFO(text);
  CHECK(code == 1);
  CHECK_THAT(text, Catch::Contains("the search index " + index + " is locked by another writer"));
  auto found = expect(c, 200, "GET", "/search?owner=ada&fresh=1");
  CHECK_THAT(found, Catch::Contains(R"("id":"a")"));
  c.close();
  CHECK(first.terminate() == 0);
}
#endif

// A clean stop of annals-bank leaves a database file that holds the whole journal on its
// own: every SQLite connection is closed, so the WAL is merged into the .db file.

#include <catch2/catch.hpp>

#include <sqlite3.h>

#include <cstdint>
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

// The number of rows of `table` in the database file `path`, opened read-only; -1 when the
// query fails (e.g. the table is missing).
std::int64_t count_rows(const std::string& path, const std::string& table) {
  sqlite3* db = nullptr;
  std::int64_t n = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    auto sql = "SELECT count(*) FROM " + table;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK
        && sqlite3_step(stmt) == SQLITE_ROW)
      n = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return n;
}

} // namespace

TEST_CASE("annals-bank: after SIGTERM the database file alone holds every acknowledged event, "
          "also after reads of the SQL read models",
          "[service]") {
  service_process svc;
  auto c = svc.client();
  constexpr int accounts = 3;
  constexpr int deposits = 4;
  int acknowledged = 0;
  for (int a = 0; a < accounts; ++a) {
    auto id = "copy-" + std::to_string(a);
    expect(c, 201, "POST", "/accounts", R"({"id":")" + id + R"(","owner":"Copy"})");
    ++acknowledged;
    for (int d = 1; d <= deposits; ++d) {
      expect(c, 200, "POST", "/accounts/" + id + "/deposit",
             R"({"amount":)" + std::to_string(d * 100) + "}");
      ++acknowledged;
    }
  }
  // The reads that scripts/demo makes: the balances and a statement, each up to date.
  auto balances = expect(c, 200, "GET", "/accounts?fresh=1");
  CHECK(balances.find("copy-2") != std::string::npos);
  expect(c, 200, "GET", "/accounts/copy-0/statement?fresh=1");
  c.close();

  auto code = svc.terminate();
  INFO(svc.output());
  REQUIRE(code == 0);

  namespace fs = std::filesystem;
  fs::path db = svc.db_path();
  fs::path wal = db.string() + "-wal";
  std::error_code ec;
  auto wal_size = fs::exists(wal) ? fs::file_size(wal, ec) : 0;
  CHECK(wal_size == 0);

  // A copy of the .db file without its -wal and -shm files.
  auto copy_dir = db.parent_path() / "copy";
  fs::create_directory(copy_dir);
  auto copy = copy_dir / "bank.db";
  fs::copy_file(db, copy);
  CHECK(count_rows(copy.string(), "events") == acknowledged);
  CHECK(count_rows(copy.string(), "balances") == accounts);
}

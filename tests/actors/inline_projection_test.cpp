// The same typed SQLite model runs inline, inside the SQLite journal's append transactions:
// a command's reply then implies the read model has its events, with no wait; a model that
// refuses an event fails the command, and the aggregate keeps its state from before.

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include "account/account.hpp"
#include "account/balances.hpp"
#include "annals/actors/host.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "runtime_fixtures.hpp"

using namespace rt;
using annals::actors::host;
using bank::account;
namespace pt = annals::persistence::test;

namespace {

// The balance and version the `balances` table holds for `id`, read on a connection of its
// own, as a query of the service would.
std::optional<std::pair<std::int64_t, std::int64_t>> row_of(const std::string& path,
                                                            const std::string& id) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT balance, version FROM balances WHERE id = ?1", -1, &stmt,
                             nullptr)
          == SQLITE_OK);
  sqlite3_bind_text(stmt, 1, id.c_str(), -1, SQLITE_TRANSIENT);
  std::optional<std::pair<std::int64_t, std::int64_t>> row;
  if (sqlite3_step(stmt) == SQLITE_ROW)
    row.emplace(sqlite3_column_int64(stmt, 0), sqlite3_column_int64(stmt, 1));
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return row;
}

// The bank's balances, refusing any deposit above a limit (a model that fails).
class capped_balances : public annals::persistence::sqlite_read_model {
public:
  void create_schema(sqlite3* db) override {
    inner_.create_schema(db);
  }
  void apply(sqlite3* db, const annals::persistence::event_record& rec) override {
    if (rec.payload.find("999999") != std::string::npos)
      throw std::runtime_error{"deposit above the cap"};
    inner_.apply(db, rec);
  }
  void reset(sqlite3* db) override {
    inner_.reset(db);
  }

private:
  bank::balances_projection inner_;
};

} // namespace

TEST_CASE("an inline typed SQLite model holds a command's events when its reply arrives, and a "
          "model that throws fails the command with nothing written",
          "[host][inline]") {
  pt::temp_dir dir;
  auto path = dir.file("bank.journal");
  auto opened = ap::sqlite_journal::open(
    {.path = path, .inline_projections = {{"balances", std::make_shared<capped_balances>()}}});
  REQUIRE(opened);
  auto journal = *opened;
  system_config cfg;
  caf::actor_system sys{cfg};
  {
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>());
    REQUIRE(h.ask<account>("a", bank::open{"Ada"}));
    for (int i = 1; i <= 5; ++i) {
      auto r = h.ask_reply<account>("a", bank::deposit{10});
      REQUIRE(r);
      // No await: the reply implies the row.
      CHECK(row_of(path, "a") == std::pair<std::int64_t, std::int64_t>{10 * i, 1 + i});
    }
    auto refused = h.ask<account>("a", bank::deposit{999999});
    REQUIRE_FALSE(refused);
    CHECK_THAT(annals::render(refused.error()),
               Catch::Contains("inline projection 'balances' refused")
                 && Catch::Contains("deposit above the cap"));
    CHECK(row_of(path, "a") == std::pair<std::int64_t, std::int64_t>{50, 6});
    // The aggregate went on from its committed state.
    auto after = h.ask<account>("a", bank::deposit{1});
    REQUIRE(after);
    CHECK(after->balance == 51);
    CHECK(row_of(path, "a") == std::pair<std::int64_t, std::int64_t>{51, 7});
  }
  journal->close();
}

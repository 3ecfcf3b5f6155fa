// Typed projection handlers: annals decodes each record with the aggregate's codec, skips
// other aggregates' records and event types without an `on`, hands the envelope over, and
// stops the projection on a record that does not decode, naming its stream and seq.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include "account/account.hpp"
#include "annals/actors/projection.hpp"
#include "annals/actors/typed_projection.hpp"
#include "annals/persistence/memory_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "runtime_fixtures.hpp"

using namespace rt;
using annals::actors::envelope;
using annals::persistence::event_record;
namespace pt = annals::persistence::test;

namespace {

// Folds opened and deposited; has no `on` for withdrawn or closed.
class seen_events : public annals::actors::typed_projection<seen_events, bank::account> {
public:
  struct seen {
    std::string what;
    std::string entity;
    std::uint64_t seq;
    std::uint64_t offset;
    std::int64_t timestamp_us;
    std::string command_id;
    std::string correlation_id;
    friend bool operator==(const seen&, const seen&) = default;
  };

  void on(const bank::opened& e, const envelope& env) {
    note("opened " + e.owner, env);
  }
  void on(const bank::deposited& e, const envelope& env) {
    note("deposited " + std::to_string(e.cents), env);
  }

  std::vector<seen> log;

private:
  void note(std::string what, const envelope& env) {
    log.push_back({std::move(what), std::string{env.entity_id()}, env.seq(), env.offset(),
                   env.timestamp_us(), env.command_id(), env.correlation_id()});
  }
};

// The exactly-once form: each `on` gets the transaction's connection.
class deposits_table
  : public annals::actors::typed_sqlite_projection<deposits_table, bank::account> {
public:
  void create_schema(sqlite3* db) override {
    exec(db, "CREATE TABLE IF NOT EXISTS deposits (id TEXT, cents INTEGER)");
  }
  void reset(sqlite3* db) override {
    exec(db, "DELETE FROM deposits");
  }
  void on(const bank::deposited& e, const envelope& env, sqlite3* db) {
    exec(db, ("INSERT INTO deposits VALUES ('" + std::string{env.entity_id()} + "', "
              + std::to_string(e.cents) + ")")
               .c_str());
  }

private:
  static void exec(sqlite3* db, const char* sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      throw std::runtime_error{sqlite3_errmsg(db)};
  }
};

event_record record(std::uint64_t offset, std::string pid, std::uint64_t seq,
                    const bank::account::event_type& ev, annals::event_metadata md = {}) {
  auto enc = bank::account::codec_type::encode(ev);
  event_record rec;
  rec.offset = offset;
  rec.persistence_id = std::move(pid);
  rec.seq = seq;
  rec.name = enc.name;
  rec.version = enc.version;
  rec.payload = enc.payload;
  rec.timestamp_us = 1'700'000'000'000'000 + static_cast<std::int64_t>(offset);
  rec.metadata = std::move(md);
  return rec;
}

} // namespace

TEST_CASE("a typed handler gets each event of its aggregate decoded, with its envelope",
          "[projection][typed]") {
  seen_events h;
  h.apply(record(1, "account|a", 1, bank::opened{"Ada"}, {"open-a", "signup:7"}));
  h.apply(record(2, "account|a", 2, bank::deposited{100}));
  const std::vector<seen_events::seen> want{
    {"opened Ada", "a", 1, 1, 1'700'000'000'000'001, "open-a", "signup:7"},
    {"deposited 100", "a", 2, 2, 1'700'000'000'000'002, "", ""},
  };
  CHECK(h.log == want);
}

TEST_CASE("a typed handler skips event types it has no `on` for and other aggregates' events",
          "[projection][typed]") {
  seen_events h;
  h.apply(record(1, "account|a", 1, bank::opened{"Ada"}));
  h.apply(record(2, "account|a", 2, bank::withdrawn{5})); // no on(withdrawn)
  h.apply(record(3, "account|a", 3, bank::closed{}));     // no on(closed)
  // Another aggregate type, even one whose name starts like this one's: not decoded.
  event_record other;
  other.offset = 4;
  other.persistence_id = "accounting|x";
  other.seq = 1;
  other.name = "ledger.posted";
  other.payload = "{}";
  h.apply(other);
  other.persistence_id = "match|m1";
  h.apply(other);
  REQUIRE(h.log.size() == 1);
  CHECK(h.log[0].what == "opened Ada");
}

TEST_CASE("a record of the aggregate that does not decode fails with corrupt_row naming its "
          "stream and seq",
          "[projection][typed]") {
  seen_events h;
  auto bad = record(7, "account|acc-9", 3, bank::deposited{1});
  bad.name = "bank.no_such_event";
  try {
    h.apply(bad);
    FAIL("an undecodable record was accepted");
  } catch (const annals::rejected& e) {
    CHECK(annals::is(e.error(), annals::persistence::journal_errc::corrupt_row));
    CHECK_THAT(e.what(), Catch::Contains("persistence id account|acc-9, seq 3"));
  }
  auto garbled = record(8, "account|acc-9", 4, bank::deposited{1});
  garbled.payload = R"({"cents":"many"})";
  CHECK_THROWS_WITH(h.apply(garbled), Catch::Contains("journal.corrupt_row")
                                        && Catch::Contains("persistence id account|acc-9, seq 4"));
  CHECK(h.log.empty());
}

TEST_CASE("a running typed projection stops at an undecodable event, naming it, and keeps the "
          "offset before it",
          "[projection][typed]") {
  auto journal = std::make_shared<ap::memory_journal>();
  auto ok = bank::account::codec_type::encode(bank::account::event_type{bank::opened{"Ada"}});
  REQUIRE(pt::append(*journal, "account|a", 0, {ok}));
  REQUIRE(pt::append(*journal, "account|a", 1, {pt::ev("bank.vanished", "{}")}));
  system_config cfg;
  caf::actor_system sys{cfg};
  auto handler = std::make_shared<seen_events>();
  auto proj = annals::actors::spawn_projection(
    sys, journal, handler,
    {.name = "typed", .filter = annals::actors::event_filter::aggregate_type<bank::account>()});
  auto waited = proj.await_offset(2, 30s);
  REQUIRE_FALSE(waited);
  auto st = proj.status();
  REQUIRE(st);
  CHECK(st->state == annals::actors::projection_state::failed);
  CHECK(st->offset == 1);
  CHECK_THAT(st->error, Catch::Contains("journal.corrupt_row")
                          && Catch::Contains("persistence id account|a, seq 2"));
  REQUIRE(handler->log.size() == 1);
  proj.stop();
}

TEST_CASE("a typed SQLite handler writes through the transaction's connection",
          "[projection][typed]") {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK);
  deposits_table h;
  h.create_schema(db);
  h.apply(db, record(1, "account|a", 1, bank::opened{"Ada"})); // no on(opened): skipped
  h.apply(db, record(2, "account|a", 2, bank::deposited{250}));
  h.apply(db, record(3, "match|m", 1, bank::deposited{1})); // another aggregate: skipped
  auto bad = record(4, "account|a", 3, bank::deposited{1});
  bad.name = "bank.unknown";
  CHECK_THROWS_WITH(h.apply(db, bad), Catch::Contains("persistence id account|a, seq 3"));
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT count(*), sum(cents) FROM deposits", -1, &stmt, nullptr)
          == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  CHECK(sqlite3_column_int64(stmt, 0) == 1);
  CHECK(sqlite3_column_int64(stmt, 1) == 250);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

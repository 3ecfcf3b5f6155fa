// The hash chain: every stored event carries SHA-256(previous hash || event); verify names
// the first event whose hash does not match, so an edit made behind the journal's back
// (through the sqlite3 shell, with the append-only triggers dropped) is found.

#include <catch2/catch.hpp>

#include <sqlite3.h>

#include <fstream>
#include <string>

#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

std::shared_ptr<sqlite_journal> open_at(const std::string& path) {
  auto res = sqlite_journal::open({.path = path});
  if (!res)
    FAIL(render(res.error()));
  return *res;
}

// Runs SQL through a plain connection, as an operator with the sqlite3 shell would.
void shell(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* msg = nullptr;
  auto rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg);
  std::string text = msg ? msg : "";
  sqlite3_free(msg);
  sqlite3_close(db);
  INFO(sql << ": " << text);
  REQUIRE(rc == SQLITE_OK);
}

// Ten events on three streams, one append of two events, tags and metadata included.
void fill(sqlite_journal& j) {
  REQUIRE(append(j, "account|a", 0, {ev("bank.opened", R"({"owner":"Ada"})")}, {"cmd-1", ""}));
  REQUIRE(append(j, "account|b", 0, {ev("bank.opened", R"({"owner":"Bob"})", {"vip"})}));
  REQUIRE(append(j, "account|a", 1,
                 {ev("bank.deposited", R"({"cents":100})"), ev("bank.deposited", R"({"cents":5})")},
                 {"cmd-2", "transfer:t1"}));
  for (int i = 0; i < 6; ++i)
    REQUIRE(append(j, "match|m", static_cast<std::uint64_t>(i),
                   {ev("match.goal_scored", R"({"n":)" + std::to_string(i) + "}")}));
}

} // namespace

TEST_CASE("verify recomputes the chain of an intact journal and reports its head",
          "[audit][sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_at(path);
  fill(*j);
  auto report = sqlite_journal::verify(path); // while the journal is open
  REQUIRE(report);
  CHECK_FALSE(report->first_break);
  CHECK(report->events_checked == 10);
  CHECK(report->head_offset == 10);
  // The head is the chain over what readers get back.
  auto all = read_all(*j);
  REQUIRE(all);
  event_hash chain{};
  for (const auto& rec : *all)
    chain = chain_hash(chain, rec);
  CHECK(to_hex(report->head_hash) == to_hex(chain));
  CHECK(hash_from_hex(to_hex(chain)) == chain);
  CHECK_FALSE(hash_from_hex("xyz"));
}

TEST_CASE("an event altered with the sqlite3 shell breaks the chain at that event",
          "[audit][sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  {
    auto j = open_at(path);
    fill(*j);
  }
  SECTION("a changed payload") {
    shell(path, "DROP TRIGGER events_no_update; "
                "UPDATE events SET payload = '{\"cents\":100000}' WHERE global_offset = 3");
    auto report = sqlite_journal::verify(path);
    REQUIRE(report);
    REQUIRE(report->first_break);
    CHECK(report->first_break->offset == 3);
    CHECK(report->first_break->persistence_id == "account|a");
    CHECK(report->first_break->seq == 2);
    CHECK_THAT(report->first_break->reason, Catch::Contains("differs from the recomputed"));
    CHECK(report->events_checked == 3);
    CHECK(report->head_offset == 10);
  }
  SECTION("a changed command id (metadata is covered too)") {
    shell(path, "DROP TRIGGER events_no_update; "
                "UPDATE events SET command_id = 'forged' WHERE global_offset = 1");
    auto report = sqlite_journal::verify(path);
    REQUIRE(report);
    REQUIRE(report->first_break);
    CHECK(report->first_break->offset == 1);
  }
  SECTION("a deleted event") {
    shell(path, "DROP TRIGGER events_no_delete; DELETE FROM events WHERE global_offset = 5");
    auto report = sqlite_journal::verify(path);
    REQUIRE(report);
    REQUIRE(report->first_break);
    CHECK(report->first_break->offset == 6);
    CHECK_THAT(report->first_break->reason, Catch::Contains("expected offset 5"));
  }
  SECTION("a forged hash on a forged event is caught at the next event") {
    // Rewriting one event and its own hash is not enough: the next event chains to the
    // original hash.
    auto j = open_at(path);
    auto rows = read_all(*j);
    REQUIRE(rows);
    j->close();
    event_hash prev{};
    for (std::size_t i = 0; i + 1 < 4; ++i)
      prev = chain_hash(prev, (*rows)[i]);
    auto forged = (*rows)[3];
    forged.payload = R"({"cents":999})";
    auto h = to_hex(chain_hash(prev, forged));
    shell(path, "DROP TRIGGER events_no_update; UPDATE events SET payload = '{\"cents\":999}', "
                "hash = X'"
                  + h + "' WHERE global_offset = 4");
    auto report = sqlite_journal::verify(path);
    REQUIRE(report);
    REQUIRE(report->first_break);
    CHECK(report->first_break->offset == 5);
  }
}

TEST_CASE("the chain stays whole across refused appends and group commits", "[audit][sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_at(path);
  // Conflicting appends (refused inside a transaction that commits others) and many
  // concurrent appends in few transactions.
  countdown done;
  constexpr int n = 200;
  for (int i = 0; i < n; ++i)
    j->append({"s|" + std::to_string(i % 7), 0, {ev("e")}, {}},
              [&](caf::expected<append_result>) { done.arrive(); });
  REQUIRE(done.wait(n));
  auto report = sqlite_journal::verify(path);
  REQUIRE(report);
  CHECK_FALSE(report->first_break);
  CHECK(report->events_checked == 7); // one winner per stream; the rest conflicted
  REQUIRE(append(*j, "s|0", 1, {ev("e"), ev("e")}));
  report = sqlite_journal::verify(path);
  REQUIRE(report);
  CHECK_FALSE(report->first_break);
  CHECK(report->events_checked == 9);
}

TEST_CASE("a journal of schema 1 gains its hash chain when this build opens it",
          "[audit][sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  {
    auto j = open_at(path);
    fill(*j);
  }
  // Back to schema 1: no hash column.
  shell(path, "ALTER TABLE events DROP COLUMN hash; PRAGMA user_version = 1");
  auto old = sqlite_journal::verify(path);
  REQUIRE_FALSE(old);
  CHECK_THAT(render(old.error()), Catch::Contains("no hash chain"));
  {
    auto j = open_at(path);
    CHECK(j->info().schema_version == 2);
    REQUIRE(append(*j, "account|b", 1, {ev("bank.deposited", R"({"cents":1})")}));
  }
  auto report = sqlite_journal::verify(path);
  REQUIRE(report);
  CHECK_FALSE(report->first_break);
  CHECK(report->events_checked == 11);
  // The migration put the append-only trigger back.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "UPDATE events SET payload = '{}'", nullptr, nullptr, nullptr)
        != SQLITE_OK);
  sqlite3_close(db);
}

TEST_CASE("verify refuses what is not a journal, naming the file", "[audit][sqlite]") {
  temp_dir dir;
  auto text = dir.file("notes.txt");
  std::ofstream{text} << "not a database at all, just some text that is long enough to fill "
                         "the hundred bytes of a SQLite header and then some more";
  auto r = sqlite_journal::verify(text);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), journal_errc::not_a_journal));
  CHECK_THAT(render(r.error()), Catch::Contains("notes.txt"));
  auto missing = sqlite_journal::verify(dir.file("nope.db"));
  REQUIRE_FALSE(missing);
  CHECK_THAT(render(missing.error()), Catch::Contains("does not exist"));
}

// The SQLite journal opened read-only: it refuses every write naming the file, reads what
// another connection commits, and refuses files that are not journals without creating
// anything. The read cases of the journal contract run on it too (journal_contract_test).

#include <sqlite3.h>

#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

std::shared_ptr<sqlite_journal> open_checked(sqlite_options opts) {
  auto res = sqlite_journal::open(std::move(opts));
  if (!res)
    FAIL(render(res.error()));
  return *res;
}

} // namespace

TEST_CASE("a read-only journal refuses appends, snapshot saves and max_page_count with "
          "read_only, naming the file, and writes nothing",
          "[sqlite][read-only]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto writer = open_checked({.path = path});
  REQUIRE(append(*writer, "acc-1", 0, {ev("a")}));
  auto ro = open_checked({.path = path, .read_only = true});
  CHECK(ro->read_only());
  CHECK(ro->info().read_only);
  CHECK(ro->info().schema_version == sqlite_journal::schema_version);
  CHECK_FALSE(ro->info().created);

  auto appended = append(*ro, "acc-1", 1, {ev("b")});
  REQUIRE_FALSE(appended);
  CHECK(is(appended.error(), journal_errc::read_only));
  CHECK(render(appended.error())
        == "journal.read_only: " + path
             + " was opened read-only; nothing was appended to persistence id acc-1");
  CHECK(ro->stats().failed_appends == 1);

  auto saved = wait_for<caf::unit_t>(
    [&](callback<caf::unit_t> done) {
      ro->snapshots()->save({"acc-1", 1, "snap", 1, "{}", 0}, std::move(done));
    },
    bound);
  REQUIRE_FALSE(saved);
  CHECK(is(saved.error(), journal_errc::read_only));
  CHECK_THAT(render(saved.error()), Catch::Contains(path + " was opened read-only"));

  auto pages = wait_for<std::uint64_t>(
    [&](callback<std::uint64_t> done) { ro->set_max_page_count(10, std::move(done)); }, bound);
  REQUIRE_FALSE(pages);
  CHECK(is(pages.error(), journal_errc::read_only));

  CHECK(highest_seq(*writer, "acc-1") == std::uint64_t{1});
  auto snaps = wait_for<std::vector<snapshot_record>>(
    [&](callback<std::vector<snapshot_record>> done) {
      writer->snapshots()->load("acc-1", std::move(done));
    },
    bound);
  REQUIRE(snaps);
  CHECK(snaps->empty());
}

TEST_CASE("a read-only journal reads what the writer commits after it was opened, snapshots "
          "included",
          "[sqlite][read-only]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto writer = open_checked({.path = path});
  auto ro = open_checked({.path = path, .read_only = true});
  CHECK(head_offset(*ro) == std::uint64_t{0});
  REQUIRE(append(*writer, "acc-1", 0, {ev("a", "{}", {"t"}), ev("b")}));
  auto saved = wait_for<caf::unit_t>(
    [&](callback<caf::unit_t> done) {
      writer->snapshots()->save({"acc-1", 2, "snap", 1, R"({"n":2})", 0}, std::move(done));
    },
    bound);
  REQUIRE(saved);
  CHECK(head_offset(*ro) == std::uint64_t{2});
  auto all = read_all(*ro);
  REQUIRE(all);
  CHECK(*all == *read_all(*writer));
  auto snaps = wait_for<std::vector<snapshot_record>>(
    [&](callback<std::vector<snapshot_record>> done) {
      ro->snapshots()->load("acc-1", std::move(done));
    },
    bound);
  REQUIRE(snaps);
  REQUIRE(snaps->size() == 1);
  CHECK(snaps->front().payload == R"({"n":2})");
  // Closing the reader leaves the writer working.
  ro->close();
  CHECK(append(*writer, "acc-1", 2, {ev("c")}));
}

TEST_CASE("opening read-only refuses a missing file, an empty file, an empty database and "
          "another application's database, and creates no file",
          "[sqlite][read-only]") {
  temp_dir dir;
  auto missing = dir.file("missing.db");
  auto res = sqlite_journal::open_read_only(missing);
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::storage_error));
  CHECK_THAT(render(res.error()), Catch::Contains(missing + " does not exist"));
  CHECK(list_dir(dir.path()).empty());

  auto empty = dir.file("empty.db");
  { std::ofstream{empty}; }
  res = sqlite_journal::open_read_only(empty);
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::not_a_journal));
  CHECK_THAT(render(res.error()), Catch::Contains(empty + " is empty"));

  auto blank = dir.file("blank.db");
  auto foreign = dir.file("foreign.db");
  for (const auto& [path, sql] :
       {std::pair{blank, "PRAGMA user_version = 0; VACUUM;"},
        std::pair{foreign, "CREATE TABLE customers (id INTEGER PRIMARY KEY);"}}) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto files = list_dir(dir.path());
  auto blank_bytes = slurp(blank);
  res = sqlite_journal::open_read_only(blank);
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::not_a_journal));
  CHECK_THAT(render(res.error()), Catch::Contains("empty SQLite database"));
  auto foreign_bytes = slurp(foreign);
  res = sqlite_journal::open_read_only(foreign);
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::not_a_journal));
  CHECK_THAT(render(res.error()), Catch::Contains("another application"));
  CHECK(slurp(blank) == blank_bytes);
  CHECK(slurp(foreign) == foreign_bytes);
  CHECK(list_dir(dir.path()) == files);
}

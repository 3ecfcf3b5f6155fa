// Two instances of one projection writing one model (as two processes on one database
// file would): the stored offset advances by compare-and-set, so exactly one instance
// advances and the other stops with offset_moved, naming both offsets, before it applies
// an event twice. The offset stores' compare-and-set on its own, too.
//
// Both instances run in this process, each with its own SQLite connection to the model:
// to SQLite that is the same as two processes.

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <catch2/catch.hpp>
#include <sqlite3.h>

#include "annals/actors/projection.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/memory_journal.hpp"
#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::actors;
using annals::persistence::event_record;
using annals::persistence::test::bound;
using annals::persistence::test::temp_dir;

namespace {

struct test_system {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  test_system() : sys{(configure(cfg), cfg)} {}
};

void write(persistence::journal& j, const std::string& pid, std::uint64_t& seq, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    auto res = persistence::test::append(j, pid, seq, {persistence::test::ev("test.happened")});
    if (!res)
      FAIL("append to " << pid << " failed: " << render(res.error()));
    seq = res->last_seq;
  }
}

void exec(sqlite3* db, const std::string& sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string text = msg ? msg : "unknown SQLite error";
    sqlite3_free(msg);
    throw std::runtime_error{text};
  }
}

/// One row per applied event: applying an event twice violates the primary key.
class applied_table : public sqlite_projection_handler {
public:
  void create_schema(sqlite3* db) override {
    exec(db, "CREATE TABLE IF NOT EXISTS applied(\"offset\" INTEGER PRIMARY KEY)");
  }
  void apply(sqlite3* db, const event_record& rec) override {
    exec(db, "INSERT INTO applied(\"offset\") VALUES (" + std::to_string(rec.offset) + ")");
  }
  void reset(sqlite3* db) override {
    exec(db, "DELETE FROM applied");
  }
};

/// Counts what it was handed.
class counting_handler : public projection_handler {
public:
  void apply(const event_record&) override {
    std::lock_guard guard{mtx_};
    ++n_;
  }
  void reset() override {
    std::lock_guard guard{mtx_};
    n_ = 0;
  }

private:
  std::mutex mtx_;
  std::size_t n_ = 0;
};

std::int64_t scalar(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  std::int64_t value = -1;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK
      && sqlite3_step(stmt) == SQLITE_ROW)
    value = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

/// Waits for both projections at `offset`: exactly one must get there, the other must
/// stop with offset_moved. Returns the index of the one that advanced.
std::size_t exactly_one_advances(const projection (&p)[2], std::uint64_t offset,
                                 std::uint64_t from) {
  caf::expected<projection_status> res[2] = {p[0].await_offset(offset, bound),
                                             p[1].await_offset(offset, bound)};
  INFO("first: " << (res[0] ? "advanced" : render(res[0].error())));
  INFO("second: " << (res[1] ? "advanced" : render(res[1].error())));
  REQUIRE(static_cast<bool>(res[0]) != static_cast<bool>(res[1]));
  auto winner = res[0] ? std::size_t{0} : std::size_t{1};
  const auto& err = res[1 - winner].error();
  CHECK(is(err, projection_errc::offset_moved));
  auto text = render(err);
  // Both offsets: where this instance left it, and where the other one moved it.
  CHECK_THAT(text, Catch::Matches(".*its stored offset in '.*' is [1-9][0-9]*, not "
                                  + std::to_string(from) + " .*"));
  CHECK_THAT(text, !Catch::Contains("constraint"));
  auto loser = p[1 - winner].status();
  REQUIRE(loser);
  CHECK(loser->state == projection_state::failed);
  CHECK(loser->offset == from);
  return winner;
}

} // namespace

TEST_CASE("of two instances of one SQLite projection on one new model, exactly one advances; "
          "the other stops with offset_moved, naming both offsets, and applies nothing twice",
          "[projection][shared]") {
  temp_dir dir;
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  auto model = dir.file("model.db");
  auto opts = sqlite_projection_options{.name = "applied", .path = model};
  projection p[2] = {spawn_projection(ts.sys, journal, std::make_shared<applied_table>(), opts),
                     spawn_projection(ts.sys, journal, std::make_shared<applied_table>(), opts)};
  // Both have read the stored offset (none) before the first event.
  REQUIRE(p[0].await_offset(0, bound));
  REQUIRE(p[1].await_offset(0, bound));
  std::uint64_t seq = 0;
  write(*journal, "account|a", seq, 10);
  // The first to commit a batch moves the offset; the other finds it moved before it
  // applies anything. Whoever applied 1..10 did so once.
  auto winner = exactly_one_advances(p, 10, 0);
  CHECK(scalar(model, "SELECT count(*) FROM applied") == 10);
  // The winner goes on alone, live.
  write(*journal, "account|a", seq, 5);
  auto st = p[winner].await_offset(15, bound);
  REQUIRE(st);
  CHECK(st->state == projection_state::running);
  CHECK(scalar(model, "SELECT count(*) FROM applied") == 15);
  CHECK(scalar(model, "SELECT \"offset\" FROM projection_offsets WHERE name = 'applied'") == 15);
}

TEST_CASE("a second instance started on a model another instance keeps, stops at the first "
          "event both receive live",
          "[projection][shared]") {
  temp_dir dir;
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  auto model = dir.file("model.db");
  auto opts = sqlite_projection_options{.name = "applied", .path = model};
  std::uint64_t seq = 0;
  write(*journal, "account|a", seq, 10);
  projection p[2];
  p[0] = spawn_projection(ts.sys, journal, std::make_shared<applied_table>(), opts);
  REQUIRE(p[0].await_offset(10, bound));
  p[1] = spawn_projection(ts.sys, journal, std::make_shared<applied_table>(), opts);
  REQUIRE(p[1].await_offset(10, bound)); // it read offset 10: nothing to apply yet
  write(*journal, "account|a", seq, 1);
  exactly_one_advances(p, 11, 10);
  CHECK(scalar(model, "SELECT count(*) FROM applied") == 11);
}

TEST_CASE("of two at-least-once instances sharing an SQLite offset store, exactly one "
          "advances; the other stops with offset_moved",
          "[projection][shared]") {
  temp_dir dir;
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  // Two stores on one file: two connections, as two processes would have.
  auto store_a = sqlite_offset_store::open({.path = dir.file("offsets.db")});
  auto store_b = sqlite_offset_store::open({.path = dir.file("offsets.db")});
  REQUIRE(store_a);
  REQUIRE(store_b);
  std::uint64_t seq = 0;
  write(*journal, "account|a", seq, 10);
  projection p[2];
  p[0] = spawn_projection(ts.sys, journal, std::make_shared<counting_handler>(),
                          projection_options{.name = "counted", .offsets = *store_a});
  REQUIRE(p[0].await_offset(10, bound));
  p[1] = spawn_projection(ts.sys, journal, std::make_shared<counting_handler>(),
                          projection_options{.name = "counted", .offsets = *store_b});
  REQUIRE(p[1].await_offset(10, bound));
  write(*journal, "account|a", seq, 1);
  exactly_one_advances(p, 11, 10);
  CHECK(*(*store_a)->load("counted") == 11);
}

TEST_CASE("an offset store advances by compare-and-set: a wrong expected offset stores "
          "nothing and fails with offset_moved, naming both offsets",
          "[projection][offsets]") {
  temp_dir dir;
  auto sqlite = sqlite_offset_store::open({.path = dir.file("offsets.db")});
  REQUIRE(sqlite);
  std::shared_ptr<offset_store> stores[] = {std::make_shared<memory_offset_store>(), *sqlite};
  for (auto& store : stores) {
    REQUIRE_FALSE(store->advance("p", 0, 5)); // the first offset: nothing stored means 0
    CHECK(*store->load("p") == 5);
    auto stale = store->advance("p", 0, 7);
    REQUIRE(stale);
    CHECK(is(stale, projection_errc::offset_moved));
    CHECK_THAT(render(stale), Catch::Contains("is 5, not 0"));
    CHECK(*store->load("p") == 5);
    REQUIRE_FALSE(store->advance("p", 5, 9));
    CHECK(*store->load("p") == 9);
    CHECK(is(store->advance("q", 3, 4), projection_errc::offset_moved));
    CHECK(*store->load("q") == 0);
    REQUIRE_FALSE(store->save("p", 0)); // a reset stores whatever was there
    CHECK(*store->load("p") == 0);
  }
}

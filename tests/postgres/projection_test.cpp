// Exactly-once projections into PostgreSQL (annals/actors/postgres_projection.hpp): the
// model and the offset commit together, a restart neither repeats nor skips an event, a
// second instance of one projection stops with `offset_moved` instead of applying twice, a
// throwing handler stops at the event before it, and an immediate restart of the server
// under load costs a reconnect, not an event. Every wait is bounded and answered by the
// projection itself (`await_offset`).

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/postgres_projection.hpp"
#include "annals/actors/system.hpp"
#include "postgres/pg_fixture.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;
using annals::actors::postgres_projection_handler;
using annals::actors::postgres_projection_options;
using annals::actors::projection_errc;
using annals::actors::projection_state;

namespace {

struct test_system {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  test_system() : sys{(annals::actors::configure(cfg), cfg)} {}
};

/// A libpq connection for the test's own queries.
struct connection {
  PGconn* db;
  explicit connection(const std::string& conninfo) : db(PQconnectdb(conninfo.c_str())) {
    REQUIRE(PQstatus(db) == CONNECTION_OK);
  }
  ~connection() {
    PQfinish(db);
  }
  /// The single value `sql` returns, as an integer.
  std::int64_t value(const std::string& sql) {
    PGresult* r = PQexec(db, sql.c_str());
    INFO(sql << ": " << PQresultErrorMessage(r));
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    REQUIRE(PQntuples(r) == 1);
    auto v = std::stoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
  }
};

void exec_or_throw(PGconn* db, const std::string& sql) {
  PGresult* r = PQexec(db, sql.c_str());
  auto st = PQresultStatus(r);
  std::string msg = PQresultErrorMessage(r);
  PQclear(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    throw std::runtime_error{msg};
}

/// One row per event in `seen(offset PRIMARY KEY, pid, seq)`: a second application of an
/// event fails on the key, a missing one shows in the count. Throws on the persistence id
/// `poison`.
class recording_model : public postgres_projection_handler {
public:
  void create_schema(PGconn* db) override {
    exec_or_throw(db, "CREATE TABLE IF NOT EXISTS seen (\"offset\" BIGINT PRIMARY KEY,"
                      " pid TEXT NOT NULL, seq BIGINT NOT NULL)");
  }
  void apply(PGconn* db, const event_record& rec) override {
    if (rec.persistence_id == "poison")
      throw std::runtime_error{"poisoned event"};
    exec_or_throw(db, "INSERT INTO seen VALUES (" + std::to_string(rec.offset) + ", '"
                        + rec.persistence_id + "', " + std::to_string(rec.seq) + ")");
  }
  void reset(PGconn* db) override {
    exec_or_throw(db, "DELETE FROM seen");
  }
};

/// Appends `n` one-event appends to `pid` after `seq`; returns the new seq.
std::uint64_t write(journal& j, const std::string& pid, std::uint64_t seq, int n) {
  for (int i = 0; i < n; ++i) {
    auto res = append(j, pid, seq, {ev("test.happened", R"({"n":1})")});
    if (!res)
      FAIL("append to " << pid << " failed: " << render(res.error()));
    seq = res->last_seq;
  }
  return seq;
}

std::uint64_t head(journal& j) {
  auto h = head_offset(j);
  REQUIRE(h);
  return *h;
}

} // namespace

TEST_CASE("a PostgreSQL projection applies each event once, with its offset, across restarts",
          "[postgres][projection]") {
  test_system ts;
  auto conninfo = shared_server().create_database();
  auto j = open_pg(conninfo);
  write(*j, "a", 0, 30);
  connection check{conninfo};
  {
    auto proj = actors::spawn_projection(
      ts.sys, j, std::make_shared<recording_model>(),
      postgres_projection_options{.name = "seen", .conninfo = conninfo, .page_size = 7});
    auto st = proj.await_offset(30, bound);
    REQUIRE(st);
    CHECK(st->state == projection_state::running);
    write(*j, "b", 0, 12); // live
    REQUIRE(proj.await_offset(42, bound));
  }
  CHECK(check.value("SELECT count(*) FROM seen") == 42);
  CHECK(check.value("SELECT \"offset\" FROM projection_offsets WHERE name = 'seen'") == 42);
  // Started again, it goes on from its stored offset: nothing twice (the key), nothing lost.
  write(*j, "a", 30, 5);
  auto again =
    actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(),
                             postgres_projection_options{.name = "seen", .conninfo = conninfo});
  auto st = again.await_offset(47, bound);
  REQUIRE(st);
  CHECK(st->applied == 5);
  CHECK(check.value("SELECT count(*) FROM seen") == 47);
  CHECK(check.value("SELECT count(DISTINCT \"offset\") FROM seen WHERE \"offset\" BETWEEN 1 AND 47")
        == 47);
  // A rebuild replays everything into an emptied model.
  REQUIRE_FALSE(again.rebuild());
  REQUIRE(again.await_offset(47, bound));
  CHECK(check.value("SELECT count(*) FROM seen") == 47);
}

TEST_CASE("a second instance of a PostgreSQL projection stops with offset_moved, applying "
          "nothing twice",
          "[postgres][projection]") {
  test_system ts;
  auto conninfo = shared_server().create_database();
  auto j = open_pg(conninfo);
  write(*j, "a", 0, 10);
  auto first =
    actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(),
                             postgres_projection_options{.name = "seen", .conninfo = conninfo});
  REQUIRE(first.await_offset(10, bound));
  // Another process's instance would start from the stored offset; this one is told a
  // stale one by moving the row behind its back, as a second writer of the model would.
  connection check{conninfo};
  PQclear(PQexec(check.db, "UPDATE projection_offsets SET \"offset\" = 12 WHERE name = 'seen'"));
  write(*j, "a", 10, 1);
  auto st = first.await_offset(11, bound);
  REQUIRE_FALSE(st);
  CHECK(is(st.error(), projection_errc::offset_moved));
  CHECK_THAT(render(st.error()), Catch::Contains("is 12, not 10"));
  CHECK(check.value("SELECT count(*) FROM seen") == 10);
}

TEST_CASE("a throwing PostgreSQL handler stops the projection at the event before it",
          "[postgres][projection]") {
  test_system ts;
  auto conninfo = shared_server().create_database();
  auto j = open_pg(conninfo);
  write(*j, "a", 0, 3);
  write(*j, "poison", 0, 1);
  write(*j, "a", 3, 2);
  auto proj =
    actors::spawn_projection(ts.sys, j, std::make_shared<recording_model>(),
                             postgres_projection_options{.name = "seen", .conninfo = conninfo});
  auto st = proj.await_offset(6, bound);
  REQUIRE_FALSE(st);
  CHECK(is(st.error(), projection_errc::handler_failed));
  CHECK_THAT(render(st.error()), Catch::Contains("poisoned event") && Catch::Contains("offset 4"));
  connection check{conninfo};
  CHECK(check.value("SELECT count(*) FROM seen") == 3);
  CHECK(check.value("SELECT \"offset\" FROM projection_offsets WHERE name = 'seen'") == 3);
}

TEST_CASE("a PostgreSQL projection rides out an immediate restart of its server",
          "[postgres][projection]") {
  test_system ts;
  pg_server server; // its own: this case restarts it
  auto conninfo = server.create_database();
  // The journal lives in the shared server, so that appends go on while the model's
  // server restarts.
  auto j = open_pg(shared_server().create_database());
  auto proj = actors::spawn_projection(
    ts.sys, j, std::make_shared<recording_model>(),
    postgres_projection_options{.name = "seen", .conninfo = conninfo, .page_size = 16});
  auto seq = write(*j, "a", 0, 200);
  REQUIRE(proj.await_offset(100, bound));
  server.restart_immediate();
  seq = write(*j, "a", seq, 100);
  auto st = proj.await_offset(head(*j), bound);
  REQUIRE(st);
  connection check{conninfo};
  CHECK(check.value("SELECT count(*) FROM seen") == 300);
  CHECK(check.value("SELECT min(\"offset\") FROM seen") == 1);
  CHECK(check.value("SELECT max(\"offset\") FROM seen") == 300);
  CHECK(check.value("SELECT \"offset\" FROM projection_offsets WHERE name = 'seen'") == 300);
}

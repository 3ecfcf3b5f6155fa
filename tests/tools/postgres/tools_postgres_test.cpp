// The operator tool on a PostgreSQL journal, against a server this test starts
// (tests/postgres/pg_fixture.hpp): every read command on a journal written through
// postgres_journal, the hash chain shown by verify and carried by export, the sample SQLite
// journal moved into PostgreSQL and back (and through JetStream when that journal is
// built), and the refusals: a database that does not exist, one without the annals schema
// (left as it was), a server that does not answer. Built into tools_tests only when
// annals::postgres is.

#include <signal.h>

#include <chrono>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <libpq-fe.h>

#include "postgres/pg_fixture.hpp"
#include "tools/tools_fixture.hpp"

#ifdef ANNALS_NATS_SERVER_BINARY
#include "jetstream/nats_fixture.hpp"
#endif

namespace json = boost::json;
namespace ap = annals::persistence;
using namespace std::chrono_literals;

namespace {

using tools_test::bank;
using tools_test::run;
using tools_test::tool;

std::vector<json::object> objects(const std::string& out) {
  std::vector<json::object> v;
  for (const auto& l : tools_test::lines(out))
    if (!l.empty())
      v.push_back(json::parse(l).as_object());
  return v;
}

/// An event as `events --json` prints it, without the commit time (an import into
/// PostgreSQL stamps the events anew; it keeps the offsets, which run on from 1).
std::vector<json::object> without_time(std::vector<json::object> v) {
  for (auto& o : v)
    o.erase("timestamp");
  return v;
}

/// Also without the offset (JetStream numbers events its own way).
std::vector<json::object> moved(std::vector<json::object> v) {
  for (auto& o : v) {
    o.erase("timestamp");
    o.erase("offset");
  }
  return v;
}

std::string text_of(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines)
    text += l + "\n";
  return text;
}

/// A fresh database on the shared server: its libpq URI (what the tool takes), its
/// connection string (what the fixture's helpers take) and its name.
struct database {
  std::string conninfo = ap::test::shared_server().create_database();
  std::string name = conninfo.substr(conninfo.find("dbname=") + 7);
  std::string uri = uri_of(name);

  static std::string uri_of(const std::string& dbname) {
    return "postgresql://annals@127.0.0.1:" + std::to_string(ap::test::shared_server().port()) + "/"
           + dbname;
  }
  /// `database NAME at 127.0.0.1:PORT`, as the tool names it.
  static std::string text_of(const std::string& dbname) {
    return "database " + dbname
           + " at 127.0.0.1:" + std::to_string(ap::test::shared_server().port());
  }
  std::string text() const {
    return text_of(name);
  }
};

/// The first column of the first row of `sql` on `conninfo` ("" on an error, which fails
/// the test).
std::string query(const std::string& conninfo, const std::string& sql) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  std::string value;
  std::string err;
  if (PQstatus(conn) != CONNECTION_OK) {
    err = PQerrorMessage(conn);
  } else {
    PGresult* res = PQexec(conn, sql.c_str());
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
      value = PQgetvalue(res, 0, 0);
    else if (PQresultStatus(res) != PGRES_TUPLES_OK)
      err = PQresultErrorMessage(res);
    PQclear(res);
  }
  PQfinish(conn);
  INFO(sql);
  CHECK(err.empty());
  return value;
}

/// Runs `sql` (no rows) on `conninfo`; the error message, "" on success.
std::string execute(const std::string& conninfo, const std::string& sql) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  auto err = PQstatus(conn) == CONNECTION_OK ? ap::test::run_sql(conn, sql)
                                             : std::string{PQerrorMessage(conn)};
  PQfinish(conn);
  return err;
}

/// The number of tables in the database's public schema.
std::string tables_in(const std::string& conninfo) {
  return query(conninfo, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
}

/// Appends `events` to `pid` at `expected_seq` and waits for the answer.
ap::append_result append(ap::journal& j, const std::string& pid, std::uint64_t expected_seq,
                         std::vector<annals::encoded_event> events,
                         annals::event_metadata meta = {}) {
  auto res = ap::wait_for<ap::append_result>(
    [&](ap::callback<ap::append_result> done) {
      j.append({pid, expected_seq, std::move(events), std::move(meta)}, std::move(done));
    },
    30s);
  if (!res)
    FAIL("appending to " << pid << ": " << annals::render(res.error()));
  return *res;
}

json::object state_of(const tools_test::result& r) {
  INFO(r.err);
  REQUIRE(r.code == 0);
  return json::parse(r.out).as_object();
}

/// `words` appears in a one-line error of `r`, which exited with 1 and printed nothing.
void check_refused(const tools_test::result& r, const std::string& words) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(tools_test::lines(r.err).size() == 1);
  CHECK(r.err.find(words) != std::string::npos);
}

} // namespace

TEST_CASE("the tool reads a journal written through postgres_journal", "[tools][postgres]") {
  database db;
  {
    auto j = ap::test::open_pg(db.conninfo);
    append(*j, "account|acc-1", 0, {{"bank.opened", 1, R"({"owner":"Ada"})", {}}});
    append(*j, "account|acc-1", 1,
           {{"bank.deposited", 1, R"({"cents":100})", {}},
            {"bank.deposited", 1, R"({"cents":50})", {}}});
    append(*j, "account|acc-2", 0, {{"bank.opened", 1, R"({"owner":"Bob"})", {}}});
    append(*j, "account|acc-1", 3, {{"bank.withdrawn", 1, R"({"cents":30})", {}}});
    append(*j, "audit|a1", 0,
           {{"audit.flagged", 1, R"({"reason":"large transfer"})", {"vip", "audit"}}},
           {"cmd-9", "corr-9"});
    j->close();
  }

  // inspect: the database it reads and the counts per aggregate type.
  auto inspected = run({tool, "inspect", db.uri});
  INFO(inspected.err);
  REQUIRE(inspected.code == 0);
  CHECK(inspected.out.rfind("journal   PostgreSQL " + db.text() + "\n", 0) == 0);
  CHECK(inspected.out.find("events    6, head offset 6") != std::string::npos);
  auto inspected_json = run({tool, "inspect", db.uri, "--json"});
  REQUIRE(inspected_json.code == 0);
  auto ij = json::parse(inspected_json.out).as_object();
  CHECK(ij.at("backend") == json::value("PostgreSQL " + db.text()));
  CHECK(ij.at("head_offset") == 6);
  CHECK(ij.at("events") == 6);
  auto& aggs = ij.at("aggregates").as_array();
  REQUIRE(aggs.size() == 2);
  CHECK(aggs[0] == json::parse(R"({"type":"account","ids":2,"events":5})"));
  CHECK(aggs[1] == json::parse(R"({"type":"audit","ids":1,"events":1})"));

  // events: offsets 1 to 6 in order, filters, the table form.
  auto all = run({tool, "events", db.uri, "--json"});
  INFO(all.err);
  REQUIRE(all.code == 0);
  auto evs = objects(all.out);
  REQUIRE(evs.size() == 6);
  for (std::size_t i = 0; i < evs.size(); ++i)
    CHECK(evs[i].at("offset") == i + 1);
  CHECK(evs[4].at("persistence_id") == "account|acc-1");
  CHECK(evs[4].at("type") == "bank.withdrawn");
  CHECK(evs[4].at("data") == json::parse(R"({"cents":30})"));
  CHECK(objects(run({tool, "events", db.uri, "--json", "--id", "acc-1"}).out).size() == 4);
  auto tagged = objects(run({tool, "events", db.uri, "--json", "--tag", "vip"}).out);
  REQUIRE(tagged.size() == 1);
  CHECK(tagged[0].at("command_id") == "cmd-9");
  CHECK(tagged[0].at("correlation_id") == "corr-9");
  auto table = run({tool, "events", db.uri, "--table", "--type", "bank.opened"});
  CHECK(table.code == 0);
  CHECK(table.out.find("Ada") != std::string::npos);
  CHECK(table.out.find("Bob") != std::string::npos);
  check_refused(run({tool, "events", db.uri, "--id", "acc-404"}), "unknown id 'acc-404'");

  // state: replayed with the bank's aggregates, now and at versions.
  auto now =
    state_of(run({bank, "admin", "state", db.uri, "--aggregate", "account", "--id", "acc-1"}));
  CHECK(now.at("version") == 4);
  CHECK(now.at("state").at("balance") == 120);
  CHECK(now.at("state").at("owner") == "Ada");
  auto at2 = state_of(
    run({bank, "admin", "state", db.uri, "--aggregate", "account", "--id", "acc-1", "--at", "2"}));
  CHECK(at2.at("version") == 2);
  CHECK(at2.at("state").at("balance") == 100);
  auto at3 = state_of(
    run({bank, "admin", "state", db.uri, "--aggregate", "account", "--id", "acc-1", "--at", "3"}));
  CHECK(at3.at("state").at("balance") == 150);
  check_refused(
    run({bank, "admin", "state", db.uri, "--aggregate", "account", "--id", "acc-1", "--at", "9"}),
    "account|acc-1 has 4 events; there is no event 9");

  // verify, and export with the hashes the journal stored: the last is verify's head hash.
  auto verified = run({tool, "verify", db.uri});
  INFO(verified.err);
  REQUIRE(verified.code == 0);
  REQUIRE(verified.out.rfind("ok: 6 events, head offset 6, head hash ", 0) == 0);
  auto head_hash =
    verified.out.substr(std::string{"ok: 6 events, head offset 6, head hash "}.size(), 64);
  auto exported = run({tool, "export", db.uri});
  INFO(exported.err);
  REQUIRE(exported.code == 0);
  auto lines = objects(exported.out);
  REQUIRE(lines.size() == 6);
  CHECK(lines.back().at("hash") == json::value(head_hash));
  CHECK(query(db.conninfo, "SELECT encode(hash, 'hex') FROM events WHERE global_offset = 3")
        == std::string{lines[2].at("hash").as_string()});

  // events --follow prints an event appended later.
  {
    tools_test::background follow{{tool, "events", db.uri, "--json", "--follow"}};
    REQUIRE(follow.wait_for_output("\"audit|a1\"", 30s));
    auto j = ap::test::open_pg(db.conninfo);
    append(*j, "account|acc-9", 0, {{"bank.opened", 1, R"({"owner":"Zoe"})", {}}});
    CHECK(follow.wait_for_output("Zoe", 30s));
    CHECK(follow.stop(SIGTERM, 10s) == 0);
    j->close();
  }

  // A payload changed behind the journal's back (a superuser switched the trigger off):
  // verify names the event; export carries the stored hash, so an import refuses the line.
  REQUIRE(execute(db.conninfo, "ALTER TABLE events DISABLE TRIGGER events_append_only; "
                               "UPDATE events SET payload = '{\"cents\":5000}' WHERE "
                               "global_offset = 3")
            .empty());
  auto broken = run({tool, "verify", db.uri});
  CHECK(broken.code == 1);
  CHECK(broken.out.rfind("broken: offset 3, persistence id account|acc-1, seq 3: ", 0) == 0);
  CHECK(broken.err.find("the hash chain breaks at offset 3 (account|acc-1, seq 3)")
        != std::string::npos);
  auto tampered = run({tool, "export", db.uri});
  REQUIRE(tampered.code == 0);
  tools_test::temp_dir dir;
  auto copy = dir.file("copy.db");
  auto refused = run({tool, "import", copy}, tampered.out);
  CHECK(refused.code == 1);
  CHECK(refused.err.find("line 3 (offset 3): the hash chain breaks here") != std::string::npos);
}

TEST_CASE("a SQLite journal moves into PostgreSQL and back with the same events and hash chain",
          "[tools][postgres]") {
  database pg;
  tools_test::temp_dir dir;
  auto file = tools_test::copy_sample(dir);
  auto head = tools_test::sample().events;

  auto from_file = run({tool, "export", file});
  REQUIRE(from_file.code == 0);
  auto imported = run({tool, "import", pg.uri}, from_file.out);
  INFO(imported.err);
  REQUIRE(imported.code == 0);
  auto imported_lines = tools_test::lines(imported.out);
  REQUIRE(imported_lines.size() == 2);
  CHECK(imported_lines[0]
        == "imported " + std::to_string(head) + " events into PostgreSQL " + pg.text());
  CHECK(imported_lines[1].rfind(
          "ok: " + std::to_string(head) + " events, head offset " + std::to_string(head), 0)
        == 0);
  CHECK(query(pg.conninfo, "SELECT count(*) FROM events") == std::to_string(head));

  auto verified = run({tool, "verify", pg.uri});
  INFO(verified.err);
  CHECK(verified.code == 0);
  CHECK(verified.out == imported_lines[1] + "\n");

  // The same events at the same offsets; only the commit times are the import's.
  auto on_file = objects(run({tool, "events", file, "--json"}).out);
  auto on_pg = objects(run({tool, "events", pg.uri, "--json"}).out);
  REQUIRE(on_file.size() == head);
  CHECK(without_time(on_pg) == without_time(on_file));
  for (auto filter :
       std::vector<std::vector<std::string>>{{"--id", "acc-1"},
                                             {"--aggregate", "account"},
                                             {"--type", "bank.deposited"},
                                             {"--tag", "vip"},
                                             {"--from-offset", "3", "--limit", "3"}}) {
    std::vector<std::string> a{tool, "events", file, "--json"};
    std::vector<std::string> b{tool, "events", pg.uri, "--json"};
    a.insert(a.end(), filter.begin(), filter.end());
    b.insert(b.end(), filter.begin(), filter.end());
    INFO(filter.front() << " " << filter.back());
    auto want = without_time(objects(run(a).out));
    CHECK_FALSE(want.empty());
    CHECK(without_time(objects(run(b).out)) == want);
  }

  // inspect counts the same; state replays the same, also at a version.
  auto pi = json::parse(run({tool, "inspect", pg.uri, "--json"}).out).as_object();
  auto fi = json::parse(run({tool, "inspect", file, "--json"}).out).as_object();
  CHECK(pi.at("events") == fi.at("events"));
  CHECK(pi.at("head_offset") == fi.at("head_offset"));
  auto& pa = pi.at("aggregates").as_array();
  auto& fa = fi.at("aggregates").as_array();
  REQUIRE(pa.size() == fa.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CHECK(pa[i].at("type") == fa[i].at("type"));
    CHECK(pa[i].at("ids") == fa[i].at("ids"));
    CHECK(pa[i].at("events") == fa[i].at("events"));
  }
  for (std::vector<std::string> at : {std::vector<std::string>{}, {"--at", "2"}}) {
    std::vector<std::string> a{bank,          "admin",   "state", file,
                               "--aggregate", "account", "--id",  "acc-1"};
    std::vector<std::string> b{bank,          "admin",   "state", pg.uri,
                               "--aggregate", "account", "--id",  "acc-1"};
    a.insert(a.end(), at.begin(), at.end());
    b.insert(b.end(), at.begin(), at.end());
    auto x = state_of(run(a));
    auto y = state_of(run(b));
    CHECK(y.at("state") == x.at("state"));
    CHECK(y.at("version") == x.at("version"));
  }

  // Back into a SQLite file: the export of the file is the export of PostgreSQL, line for
  // line (offsets, commit times, hashes), and both verify to the same head hash.
  auto from_pg = run({tool, "export", pg.uri});
  REQUIRE(from_pg.code == 0);
  auto back = dir.file("back.db");
  auto reimported = run({tool, "import", back}, from_pg.out);
  INFO(reimported.err);
  REQUIRE(reimported.code == 0);
  CHECK(tools_test::lines(reimported.out).back() == imported_lines[1]);
  CHECK(run({tool, "export", back}).out == from_pg.out);
  auto back_verified = run({tool, "verify", back});
  CHECK(back_verified.code == 0);
  CHECK(back_verified.out == verified.out);
  CHECK(objects(run({tool, "events", back, "--json"}).out) == on_pg);

  // Into PostgreSQL again: a journal that holds events is refused.
  check_refused(run({tool, "import", pg.uri}, from_file.out), "already holds events");

  // An altered line: refused before anything is written, not even the schema.
  {
    database target;
    auto all = tools_test::lines(from_file.out);
    auto line3 = json::parse(all[2]).as_object();
    line3["payload"] = R"({"cents":1000000})";
    line3["data"] = json::parse(R"({"cents":1000000})");
    all[2] = json::serialize(line3);
    check_refused(run({tool, "import", target.uri}, text_of(all)),
                  "line 3 (offset 3): the hash chain breaks here");
    CHECK(tables_in(target.conninfo) == "0");
  }

#ifdef ANNALS_NATS_SERVER_BINARY
  // Through JetStream and into another database: the same events in the same order.
  {
    ap::test::nats_cluster servers{1};
    auto stream = servers.urls() + "?stream=" + ap::test::fresh_stream_name("PGTOOLS");
    auto to_js = run({tool, "import", stream}, from_pg.out);
    INFO(to_js.err);
    REQUIRE(to_js.code == 0);
    auto from_js = run({tool, "export", stream});
    REQUIRE(from_js.code == 0);
    database second;
    auto to_pg = run({tool, "import", second.uri}, from_js.out);
    INFO(to_pg.err);
    REQUIRE(to_pg.code == 0);
    CHECK(run({tool, "verify", second.uri}).code == 0);
    auto on_second = objects(run({tool, "events", second.uri, "--json"}).out);
    CHECK(moved(on_second) == moved(on_pg));
    // PostgreSQL numbers them 1, 2, 3, ... again.
    CHECK(without_time(on_second) == without_time(on_pg));
  }
#endif
}

TEST_CASE("the tool refuses a PostgreSQL database without a journal and changes nothing in it",
          "[tools][postgres]") {
  auto reads = [](const std::string& uri) {
    return std::vector<std::vector<std::string>>{
      {tool, "inspect", uri},
      {tool, "events", uri},
      {tool, "verify", uri},
      {tool, "export", uri},
      {bank, "admin", "state", uri, "--aggregate", "account", "--id", "acc-1"}};
  };

  // A database that does not exist: the server and the database are named.
  auto missing = database::uri_of("no_such_db");
  for (const auto& argv : reads(missing)) {
    INFO(argv[1]);
    auto r = run(argv);
    check_refused(r, "cannot connect to PostgreSQL " + database::text_of("no_such_db"));
    CHECK(r.err.find("does not exist") != std::string::npos);
  }

  // An empty database: no journal there, and none is created by reading.
  database empty;
  for (const auto& argv : reads(empty.uri)) {
    INFO(argv[1]);
    check_refused(run(argv),
                  "no annals journal in PostgreSQL " + empty.text() + " (no table annals_schema)");
  }
  CHECK(tables_in(empty.conninfo) == "0");

  // A database whose table `events` is someone else's: refused, also by import.
  database foreign;
  REQUIRE(execute(foreign.conninfo, "CREATE TABLE events (id int)").empty());
  for (auto argv : reads(foreign.uri)) {
    INFO(argv[1]);
    check_refused(run(argv), "PostgreSQL " + foreign.text()
                               + " has a table events but no annals_schema marker");
  }
  tools_test::temp_dir dir;
  auto from_file = run({tool, "export", tools_test::copy_sample(dir)});
  check_refused(run({tool, "import", foreign.uri}, from_file.out), "not an annals journal");
  CHECK(tables_in(foreign.conninfo) == "1");

  // A server that does not answer.
  auto nobody = "postgresql://annals@127.0.0.1:" + std::to_string(ap::test::free_port()) + "/x";
  check_refused(run({tool, "inspect", nobody}),
                "cannot connect to PostgreSQL database x at 127.0.0.1:");
}

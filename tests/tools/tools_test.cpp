// The operator tool, run as the real binaries (`annals` and `annals-bank admin`) against a
// journal that the bank's aggregates and projections wrote in-process: every subcommand,
// its output and exit code, tamper detection with the sqlite3 shell, the export/import
// round trip, rebuilds, --follow against a journal that is being written, and the errors.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <sqlite3.h>

#include "tools/tools_fixture.hpp"

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace tools_test;

namespace {

std::vector<json::object> json_lines(const std::string& out) {
  std::vector<json::object> objs;
  for (const auto& l : lines(out))
    objs.push_back(json::parse(l).as_object());
  return objs;
}

std::vector<std::uint64_t> offsets(const std::vector<json::object>& evs) {
  std::vector<std::uint64_t> out;
  for (const auto& e : evs)
    out.push_back(e.at("offset").to_number<std::uint64_t>());
  return out;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> out;
  for (auto i = from; i <= to; ++i)
    out.push_back(i);
  return out;
}

// Every row of `sql` on a read-only connection, columns joined with '|'.
std::vector<std::string> rows(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
  std::vector<std::string> out;
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    std::string row;
    for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
      auto txt = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
      row += (c ? "|" : "") + std::string{txt ? txt : "NULL"};
    }
    out.push_back(row);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

// A failure as the tool reports it: nothing on stdout, one line on stderr.
void check_error(const result& r, int code, const std::string& prefix, const std::string& words) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  CHECK(r.code == code);
  CHECK(r.out.empty());
  CHECK(lines(r.err).size() == 1);
  CHECK(r.err.rfind(prefix, 0) == 0);
  CHECK(r.err.find(words) != std::string::npos);
}

json::object state_of(const result& r) {
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  return json::parse(r.out).as_object();
}

std::string file_bytes(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

const std::string admin_prefix = "annals-bank admin: ";

} // namespace

TEST_CASE("inspect shows aggregate types, events, snapshots and projections", "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto head = sample().events;
  auto r = run({tool, "inspect", db});
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("schema    version 2") != std::string::npos);
  CHECK(r.out.find("events    " + std::to_string(head) + ", head offset " + std::to_string(head))
        != std::string::npos);
  auto text = lines(r.out);
  auto row = [&](const std::string& first) {
    auto i = std::find_if(text.begin(), text.end(),
                          [&](const auto& l) { return l.rfind(first + " ", 0) == 0; });
    REQUIRE(i != text.end());
    std::istringstream in{*i};
    std::vector<std::string> cells;
    for (std::string c; in >> c;)
      cells.push_back(c);
    return cells;
  };
  // acc-1 keeps its 2 newest snapshots (seq 2 and 4), acc-2 has one (seq 2).
  CHECK(row("account") == std::vector<std::string>{"account", "2", "7", "3"});
  CHECK(row("transfer") == std::vector<std::string>{"transfer", "1", "3", "0"});
  CHECK(row("match") == std::vector<std::string>{"match", "1", "3", "0"});
  CHECK(row("audit") == std::vector<std::string>{"audit", "1", "1", "0"});
  CHECK(row("balances") == std::vector<std::string>{"balances", std::to_string(head), "0"});
  CHECK(row("statement") == std::vector<std::string>{"statement", std::to_string(head), "0"});

  auto j = run({tool, "inspect", db, "--json"});
  REQUIRE(j.code == 0);
  auto o = json::parse(j.out).as_object();
  CHECK(o.at("head_offset").to_number<std::uint64_t>() == head);
  CHECK(o.at("schema_version").to_number<int>() == 2);
  CHECK(o.at("file_bytes").to_number<std::uint64_t>() > 0);
  CHECK(o.at("aggregates").as_array().size() == 4);
  CHECK(o.at("projections").as_array().size() == 2);

  // The service's admin command lists its registered projections too.
  auto a = run({bank, "admin", "inspect", db});
  REQUIRE(a.code == 0);
  CHECK(a.out.find("balances") != std::string::npos);
}

TEST_CASE("events prints JSON lines in offset order, with every filter", "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto head = sample().events;
  auto all = run({tool, "events", db});
  REQUIRE(all.code == 0);
  CHECK(all.err.empty());
  auto evs = json_lines(all.out);
  REQUIRE(evs.size() == head);
  CHECK(offsets(evs) == range(1, head));
  const auto& first = evs.front();
  CHECK(first.at("persistence_id") == "account|acc-1");
  CHECK(first.at("seq") == 1);
  CHECK(first.at("type") == "bank.opened");
  CHECK(first.at("version") == 1);
  CHECK(first.at("data").at("owner") == "Ada");
  CHECK(first.at("tags").as_array().empty());
  CHECK(first.at("command_id").is_null());
  CHECK(first.at("timestamp").as_string().size() == 27); // 2026-11-27T10:42:00.123456Z
  const auto& audit = evs.back();
  CHECK(audit.at("persistence_id") == "audit|a1");
  CHECK(audit.at("tags") == json::array{"vip", "audit"});
  CHECK(audit.at("command_id") == "cmd-9");
  CHECK(audit.at("correlation_id") == "corr-9");

  auto filtered = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv{tool, "events", db};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = run(argv);
    INFO(r.err);
    REQUIRE(r.code == 0);
    return json_lines(r.out);
  };
  auto ids = [](const std::vector<json::object>& xs) {
    std::vector<std::string> out;
    for (const auto& x : xs)
      out.emplace_back(x.at("persistence_id").as_string());
    return out;
  };
  auto acc1 = filtered({"--id", "acc-1"});
  CHECK(acc1.size() == 5);
  CHECK(ids(acc1) == std::vector<std::string>(5, "account|acc-1"));
  CHECK(offsets(filtered({"--id", "account|acc-1"})) == offsets(acc1));
  CHECK(ids(filtered({"--aggregate", "match"})) == std::vector<std::string>(3, "match|m1"));
  auto deposits = filtered({"--type", "bank.deposited"});
  REQUIRE(deposits.size() == 3);
  CHECK(deposits[0].at("data").at("cents") == 100);
  CHECK(ids(filtered({"--tag", "vip"})) == std::vector<std::string>{"audit|a1"});
  CHECK(offsets(filtered({"--from-offset", "5"})) == range(5, head));
  CHECK(offsets(filtered({"--limit", "2"})) == range(1, 2));
  CHECK(offsets(filtered({"--from-offset", "3", "--limit", "2"})) == range(3, 4));
  CHECK(filtered({"--aggregate", "account", "--type", "bank.opened"}).size() == 2);
  CHECK(filtered({"--from-offset", std::to_string(head + 1)}).empty());

  // --since: the commit time of event 6, as ISO 8601 and as Unix seconds.
  auto ts6 = std::string{evs[5].at("timestamp").as_string()};
  CHECK(offsets(filtered({"--since", ts6})) == range(6, head));
  auto exported = json_lines(run({tool, "export", db}).out);
  auto us6 = exported[5].at("timestamp_us").to_number<std::int64_t>();
  auto unix6 =
    std::to_string(us6 / 1'000'000) + "." + std::to_string(1'000'000 + us6 % 1'000'000).substr(1);
  CHECK(offsets(filtered({"--since=" + unix6})) == range(6, head));
  CHECK(filtered({"--since", "2100-01-01T00:00:00Z"}).empty());

  // --table: a header and aligned columns.
  auto t = run({tool, "events", db, "--table", "--limit", "3"});
  REQUIRE(t.code == 0);
  auto rowsv = lines(t.out);
  REQUIRE(rowsv.size() == 4);
  CHECK(rowsv[0].rfind("OFFSET", 0) == 0);
  auto col = rowsv[0].find("STREAM");
  REQUIRE(col != std::string::npos);
  CHECK(rowsv[1].substr(col, 13) == "account|acc-1");
  CHECK(rowsv[1].find(R"({"owner":"Ada"})") != std::string::npos);
  auto type_col = rowsv[0].find("TYPE");
  REQUIRE(type_col != std::string::npos);
  CHECK(rowsv[1].substr(type_col, 12) == "bank.opened ");
  CHECK(rowsv[3].substr(type_col, 14) == "bank.deposited");
}

TEST_CASE("events --follow prints new events as they commit and ends on SIGTERM or SIGINT",
          "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto head = sample().events;
  live_journal journal{db}; // the file is in use, as by a running service
  {
    background follow{{tool, "events", db, "--follow"}};
    REQUIRE(follow.wait_for_output("\"persistence_id\":\"audit|a1\"", 30s));
    auto offset = journal.append("audit|live", "audit.noted", R"({"n":1})");
    CHECK(offset == head + 1);
    REQUIRE(follow.wait_for_output("audit|live", 30s));
    CHECK(follow.stop(SIGTERM, 10s) == 0);
    auto evs = json_lines(follow.out());
    CHECK(offsets(evs) == range(1, head + 1));
    CHECK(evs.back().at("data").at("n") == 1);
    CHECK(follow.err().empty());
  }
  {
    // A filter and a start at the head: only the new matching events.
    background follow{{tool, "events", db, "--follow", "--aggregate", "audit", "--from-offset",
                       std::to_string(head + 2)}};
    std::this_thread::sleep_for(300ms);
    journal.append("account|acc-9", "bank.opened", R"({"owner":"Eve"})");
    journal.append("audit|live", "audit.noted", R"({"n":2})");
    REQUIRE(follow.wait_for_output("\"n\":2", 30s));
    CHECK(follow.stop(SIGINT, 10s) == 0);
    auto evs = json_lines(follow.out());
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].at("offset") == head + 3);
  }
  // The read-only subcommands work while the journal is open and written.
  auto v = run({tool, "verify", db});
  INFO(v.err);
  CHECK(v.code == 0);
  CHECK(v.out.rfind("ok: " + std::to_string(head + 3) + " events", 0) == 0);
  CHECK(run({tool, "inspect", db}).code == 0);
}

TEST_CASE("state replays an aggregate, at a version and at a point in time", "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto now = state_of(run({bank, "admin", "state", db, "--aggregate", "account", "--id", "acc-1"}));
  CHECK(now.at("aggregate") == "account");
  CHECK(now.at("id") == "acc-1");
  CHECK(now.at("version") == 5);
  CHECK(now.at("state").at("balance") == 100);
  CHECK(now.at("state").at("owner") == "Ada");
  CHECK(now.at("state").at("status") == "open");

  auto at2 = state_of(run(
    {bank, "admin", "state", db, "--aggregate", "account", "--id", "account|acc-1", "--at", "2"}));
  CHECK(at2.at("version") == 2);
  CHECK(at2.at("state").at("balance") == 100);

  // --at-time: the commit time of acc-1's third event, and a moment just before it.
  auto evs = json_lines(run({tool, "export", db}).out);
  std::vector<json::object> acc1;
  for (auto& e : evs)
    if (e.at("persistence_id") == "account|acc-1")
      acc1.push_back(e);
  REQUIRE(acc1.size() == 5);
  auto t3 = std::string{acc1[2].at("timestamp").as_string()};
  auto us3 = acc1[2].at("timestamp_us").to_number<std::int64_t>();
  auto at_t3 = state_of(
    run({bank, "admin", "state", db, "--aggregate", "account", "--id", "acc-1", "--at-time", t3}));
  CHECK(at_t3.at("version") == 3);
  CHECK(at_t3.at("state").at("balance") == 150);
  CHECK(at_t3.at("timestamp").as_string() == t3);
  auto before3 = std::to_string((us3 - 1) / 1'000'000) + "."
                 + std::to_string(1'000'000 + (us3 - 1) % 1'000'000).substr(1);
  auto at_before = state_of(run(
    {bank, "admin", "state", db, "--aggregate", "account", "--id", "acc-1", "--at-time", before3}));
  CHECK(at_before.at("version") == 2);
  auto future = state_of(run({bank, "admin", "state", db, "--aggregate", "account", "--id", "acc-1",
                              "--at-time", "4102444800"}));
  CHECK(future.at("version") == 5);

  auto t1 = state_of(run({bank, "admin", "state", db, "--aggregate", "transfer", "--id", "t1"}));
  CHECK(t1.at("state").at("status") == "completed");
  CHECK(t1.at("state").at("cents") == 20);
  auto m1 = state_of(run({bank, "admin", "state", db, "--aggregate", "match", "--id", "m1"}));
  CHECK(m1.at("version") == 3);

  check_error(
    run({bank, "admin", "state", db, "--aggregate", "account", "--id", "acc-1", "--at", "6"}), 1,
    admin_prefix + "state: ", "account|acc-1 has 5 events; there is no event 6");
  check_error(run({bank, "admin", "state", db, "--aggregate", "account", "--id", "acc-1",
                   "--at-time", "2000-01-01T00:00:00Z"}),
              1, admin_prefix + "state: ", "no event at or before 2000-01-01T00:00:00.000000Z");
}

TEST_CASE("verify accepts an intact journal and names the event altered with the sqlite3 shell",
          "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto head = sample().events;
  auto ok = run({tool, "verify", db});
  INFO(ok.err);
  REQUIRE(ok.code == 0);
  auto prefix =
    "ok: " + std::to_string(head) + " events, head offset " + std::to_string(head) + ", head hash ";
  REQUIRE(ok.out.rfind(prefix, 0) == 0);
  CHECK(ok.out.size() == prefix.size() + 64 + 1);

  auto tamper = run({sqlite3_shell, db,
                     "DROP TRIGGER events_no_update; "
                     "UPDATE events SET payload = '{\"cents\":1000000}' WHERE global_offset = 3;"});
  INFO(tamper.err);
  REQUIRE(tamper.code == 0);
  auto bad = run({tool, "verify", db});
  CHECK(bad.code == 1);
  CHECK(bad.out.rfind("broken: offset 3, persistence id account|acc-1, seq 3: stored hash", 0)
        == 0);
  CHECK(lines(bad.err).size() == 1);
  CHECK(bad.err.find("annals: verify: ") == 0);
  CHECK(bad.err.find("breaks at offset 3") != std::string::npos);
  CHECK(run({bank, "admin", "verify", db}).code == 1);
}

TEST_CASE("export and import round-trip the log losslessly and refuse a broken chain", "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto head = sample().events;
  auto exported = run({tool, "export", db});
  REQUIRE(exported.code == 0);
  auto evs = json_lines(exported.out);
  REQUIRE(evs.size() == head);
  for (const char* key : {"hash", "name", "payload", "timestamp_us", "data", "tags"})
    CHECK(evs.front().contains(key));
  CHECK(evs.front().at("payload") == R"({"owner":"Ada"})");

  auto copy = dir.file("copy.db");
  auto imported = run({tool, "import", copy}, exported.out);
  INFO(imported.err);
  REQUIRE(imported.code == 0);
  CHECK(imported.out.rfind("imported " + std::to_string(head) + " events into " + copy + "\n", 0)
        == 0);
  CHECK(lines(imported.out).back().rfind("ok: " + std::to_string(head) + " events", 0) == 0);
  // Identical events, hashes, tags and head hash.
  CHECK(run({tool, "export", copy}).out == exported.out);
  CHECK(run({tool, "verify", copy}).out == run({tool, "verify", db}).out);
  auto events_sql = "SELECT global_offset, persistence_id, seq, name, version, payload, "
                    "replace(tags, char(31), ','), timestamp_us, command_id, correlation_id, "
                    "hex(hash) FROM events ORDER BY global_offset";
  CHECK(rows(copy, events_sql) == rows(db, events_sql));
  auto tags_sql = "SELECT tag, global_offset FROM event_tags ORDER BY tag, global_offset";
  CHECK(rows(copy, tags_sql) == rows(db, tags_sql));
  CHECK(rows(copy, tags_sql).size() == 2);
  // The copy is a journal the bank can replay.
  auto st =
    state_of(run({bank, "admin", "state", copy, "--aggregate", "account", "--id", "acc-1"}));
  CHECK(st.at("state").at("balance") == 100);

  SECTION("into a journal that holds events: refused") {
    check_error(run({tool, "import", copy}, exported.out), 1,
                "annals: import: ", "already holds " + std::to_string(head) + " events");
  }
  SECTION("an altered payload: refused, naming the line and offset, nothing written") {
    auto all = lines(exported.out);
    auto line3 = json::parse(all[2]).as_object();
    line3["payload"] = R"({"cents":1000000})";
    line3["data"] = json::parse(R"({"cents":1000000})");
    all[2] = json::serialize(line3);
    std::string text;
    for (const auto& l : all)
      text += l + "\n";
    auto target = dir.file("tampered.db");
    check_error(run({tool, "import", target}, text), 1,
                "annals: import: ", "line 3 (offset 3): the hash chain breaks here");
    CHECK_FALSE(fs::exists(target)); // the journal the import created is gone again
    // An existing empty journal stays empty.
    auto empty = dir.file("empty.db");
    REQUIRE(run({tool, "import", empty}, "").code == 0);
    check_error(run({tool, "import", empty}, text), 1, "annals: import: ", "line 3 (offset 3)");
    CHECK(rows(empty, "SELECT count(*) FROM events") == std::vector<std::string>{"0"});
  }
  SECTION("a missing line: refused") {
    auto all = lines(exported.out);
    all.erase(all.begin() + 4);
    std::string text;
    for (const auto& l : all)
      text += l + "\n";
    check_error(run({tool, "import", dir.file("gap.db")}, text), 1,
                "annals: import: ", "line 5 (offset 6): expected offset 5");
  }
  SECTION("data that disagrees with the payload: refused") {
    auto all = lines(exported.out);
    auto line2 = json::parse(all[1]).as_object();
    line2["data"] = json::parse(R"({"owner":"Mallory"})");
    all[1] = json::serialize(line2);
    std::string text;
    for (const auto& l : all)
      text += l + "\n";
    check_error(run({tool, "import", dir.file("data.db")}, text), 1,
                "annals: import: ", "line 2 (offset 2): data does not match payload");
  }
  SECTION("not JSON: refused") {
    check_error(run({tool, "import", dir.file("junk.db")}, "{\"offset\":1}\nnot json\n"), 1,
                "annals: import: ", "line 1: ");
  }
}

TEST_CASE("rebuild recreates a projection equal to the live one and swaps it in", "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto head = sample().events;
  auto balances_sql = "SELECT * FROM balances ORDER BY id";
  auto statement_sql = "SELECT * FROM statement ORDER BY account_id, seq";
  auto live_balances = rows(db, balances_sql);
  auto live_statement = rows(db, statement_sql);
  REQUIRE(live_balances.size() == 2);
  REQUIRE(live_statement.size() == 7);
  // Damage both read models by hand.
  REQUIRE(run({sqlite3_shell, db,
               "UPDATE balances SET balance = -1; DELETE FROM statement WHERE seq > 1;"})
            .code
          == 0);
  REQUIRE(rows(db, balances_sql) != live_balances);

  for (std::string name : {"balances", "statement"}) {
    auto r = run({bank, "admin", "rebuild", db, "--projection", name});
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.rfind("rebuilt projection " + name + " at offset " + std::to_string(head)
                        + ": table " + name,
                      0)
          == 0);
    // stderr is not a terminal: plain progress lines, the last one final.
    auto progress = lines(r.err);
    REQUIRE_FALSE(progress.empty());
    CHECK(progress.back().rfind("rebuild " + name + ": " + std::to_string(head) + "/"
                                  + std::to_string(head) + " events, ",
                                0)
          == 0);
    CHECK(progress.back().find(" ev/s, done in ") != std::string::npos);
    CHECK_FALSE(fs::exists(db + ".rebuild-" + name));
  }
  CHECK(rows(db, balances_sql) == live_balances);
  CHECK(rows(db, statement_sql) == live_statement);
  CHECK(rows(db, "SELECT name, \"offset\" FROM projection_offsets ORDER BY name")
        == std::vector<std::string>{"balances|" + std::to_string(head),
                                    "statement|" + std::to_string(head)});
  // The events are untouched.
  CHECK(run({tool, "verify", db}).code == 0);

  check_error(
    run({bank, "admin", "rebuild", db, "--projection", "owners"}), 1,
    admin_prefix + "rebuild: ", "unknown projection 'owners' (registered: balances, statement");
  check_error(run({tool, "rebuild", db, "--projection", "balances"}), 1,
              "annals: rebuild: ", "registers no projections");
}

#ifdef ANNALS_BANK_WITH_XAPIAN
TEST_CASE("rebuild replays the whole journal into a registered sink in place, with progress",
          "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto head = sample().events;
  // Twice: the first run builds the index beside the file, the second resets and refills it.
  for (int round = 0; round < 2; ++round) {
    auto r = run({bank, "admin", "rebuild", db, "--projection", "search"});
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out
          == "rebuilt projection search at offset " + std::to_string(head)
               + " in place (exactly_once)\n");
    auto progress = lines(r.err);
    REQUIRE_FALSE(progress.empty());
    CHECK(progress.back().rfind(
            "rebuild search: " + std::to_string(head) + "/" + std::to_string(head) + " events, ", 0)
          == 0);
    CHECK(fs::is_directory(db + ".search"));
  }
  // A journal file that is not one fails before the index is touched.
  auto junk = dir.file("junk.db");
  { std::ofstream{junk} << "not a journal"; }
  auto r = run({bank, "admin", "rebuild", junk, "--projection", "search"});
  CHECK(r.code == 1);
  CHECK_FALSE(fs::exists(junk + ".search"));
}
#endif

TEST_CASE("errors are one line on stderr with exit code 2 for usage and 1 for the rest",
          "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto head = sample().events;
  auto missing = dir.file("missing.db");
  auto text = dir.file("notes.txt");
  std::ofstream{text} << "these are notes, not a journal\n";
  auto foreign = dir.file("foreign.db");
  REQUIRE(run({sqlite3_shell, foreign, "CREATE TABLE t(x); INSERT INTO t VALUES (1);"}).code == 0);
  auto foreign_bytes = file_bytes(foreign);

  check_error(run({tool, "inspect", missing}), 1, "annals: inspect: ", missing + ": no such file");
  check_error(run({tool, "events", text}), 1,
              "annals: events: ", "is not an annals journal (not a SQLite database)");
  check_error(run({tool, "verify", foreign}), 1, "annals: verify: ",
              "is not an annals journal (a SQLite database with application_id 0x00000000");
  CHECK(file_bytes(foreign) == foreign_bytes);
  CHECK_FALSE(fs::exists(foreign + "-wal"));
  check_error(run({tool, "export", foreign}), 1, "annals: export: ", "is not an annals journal");
  check_error(run({tool, "import", foreign}, ""), 1,
              "annals: import: ", "is not an annals journal");
  CHECK(file_bytes(foreign) == foreign_bytes);

  check_error(run({tool, "events", db, "--aggregate", "nope"}), 1, "annals: events: ",
              "unknown aggregate type 'nope' (the journal has: account, audit, match, transfer)");
  check_error(run({tool, "events", db, "--id", "acc-404"}), 1,
              "annals: events: ", "unknown id 'acc-404'");
  check_error(
    run({tool, "events", db, "--from-offset", std::to_string(head + 2)}), 1, "annals: events: ",
    "offset " + std::to_string(head + 2) + " is beyond the head (" + std::to_string(head) + ")");
  check_error(run({bank, "admin", "state", db, "--aggregate", "account", "--id", "acc-404"}), 1,
              admin_prefix + "state: ", "unknown id 'acc-404'");
  check_error(run({bank, "admin", "state", db, "--aggregate", "loan", "--id", "l1"}), 1,
              admin_prefix + "state: ",
              "unknown aggregate type 'loan' (registered: account, transfer, match)");
  check_error(run({tool, "state", db, "--aggregate", "account", "--id", "acc-1"}), 1,
              "annals: state: ", "registers no aggregate types");

  // Usage errors.
  check_error(run({tool, "events", db, "--bogus"}), 2,
              "annals: events: ", "unknown option --bogus");
  check_error(run({tool, "events", db, "--limit"}), 2, "annals: events: ", "--limit needs a value");
  check_error(run({tool, "events", db, "--limit", "ten"}), 2,
              "annals: events: ", "--limit needs a whole number");
  check_error(run({tool, "events", db, "--since", "yesterday"}), 2,
              "annals: events: ", "--since needs ISO 8601 UTC");
  check_error(run({tool, "events", db, "--json", "--table"}), 2,
              "annals: events: ", "exclude each other");
  check_error(run({tool, "events"}), 2, "annals: events: ", "missing the journal file");
  check_error(run({tool, "verify", db, "extra"}), 2,
              "annals: verify: ", "unexpected argument extra");
  check_error(run({bank, "admin", "state", db, "--id", "acc-1"}), 2,
              admin_prefix + "state: ", "--aggregate TYPE is required");
  check_error(run({bank, "admin", "state", db, "--aggregate", "account", "--id", "acc-1", "--at",
                   "1", "--at-time", "0"}),
              2, admin_prefix + "state: ", "exclude each other");
  check_error(run({tool, "rebuild", db}), 2, "annals: rebuild: ", "--projection NAME is required");
  check_error(run({tool, "frobnicate", db}), 2, "annals: ", "unknown subcommand 'frobnicate'");
  auto none = run({tool});
  CHECK(none.code == 2);
  CHECK(none.err.rfind("usage: annals <subcommand>", 0) == 0);

  SECTION("a file locked by another connection") {
    sqlite3* holder = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &holder) == SQLITE_OK);
    REQUIRE(sqlite3_exec(holder, "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;", nullptr,
                         nullptr, nullptr)
            == SQLITE_OK);
    check_error(run({tool, "inspect", db}), 1,
                "annals: inspect: ", db + " is locked by another connection");
    check_error(run({tool, "verify", db}), 1,
                "annals: verify: ", "is locked by another connection");
    sqlite3_exec(holder, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(holder);
    CHECK(run({tool, "inspect", db}).code == 0);
  }
}

TEST_CASE("every subcommand has --help, also under annals-bank admin", "[tools]") {
  for (std::string sub : {"inspect", "events", "state", "verify", "rebuild", "export", "import"}) {
    auto r = run({tool, sub, "--help"});
    CHECK(r.code == 0);
    CHECK(r.out.rfind("usage: annals " + sub + " ", 0) == 0);
    auto a = run({bank, "admin", sub, "-h"});
    CHECK(a.code == 0);
    CHECK(a.out.rfind("usage: annals-bank admin " + sub + " ", 0) == 0);
  }
  auto top = run({tool, "--help"});
  CHECK(top.code == 0);
  CHECK(top.out.find("rebuild DB") != std::string::npos);
  auto admin = run({bank, "admin", "--help"});
  CHECK(admin.code == 0);
  CHECK(admin.out.rfind("usage: annals-bank admin <subcommand>", 0) == 0);
}

TEST_CASE("backup copies a journal consistently while appends happen and refuses an existing "
          "destination",
          "[tools]") {
  temp_dir dir;
  auto db = copy_sample(dir);
  auto copy = dir.file("copy.db");
  std::atomic<bool> done{false};
  std::atomic<int> appended{0};
  {
    live_journal live{db};
    live.append("audit|bk", "audit.noted", R"({"n":0})");
    // Appends go on while the backup runs; the copy must hold the log up to some commit.
    std::thread appender{[&] {
      for (int i = 1; i <= 2000 && !done; ++i) {
        live.append("audit|bk", "audit.noted", "{\"n\":" + std::to_string(i) + "}", {"bk"});
        ++appended;
      }
    }};
    auto r = run({tool, "backup", db, copy});
    done = true;
    appender.join();
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.rfind("backed up " + db + " to " + copy + "\nok: ", 0) == 0);
  }
  auto verified = run({tool, "verify", copy});
  INFO(verified.err);
  CHECK(verified.code == 0);
  auto source_log = lines(run({tool, "export", db}).out);
  auto copy_log = lines(run({tool, "export", copy}).out);
  CHECK(copy_log.size() > sample().events);
  REQUIRE(copy_log.size() <= source_log.size());
  CHECK(std::equal(copy_log.begin(), copy_log.end(), source_log.begin()));
  CHECK(source_log.size() == sample().events + 1 + static_cast<std::size_t>(appended.load()));

  auto before = file_bytes(copy);
  check_error(run({tool, "backup", db, copy}), 1,
              "annals: backup: ", copy + " already exists; backup never overwrites a file");
  CHECK(file_bytes(copy) == before);
  check_error(run({tool, "backup", db}), 2, "annals: backup: ", "needs the journal file");
  auto help = run({tool, "--help"});
  CHECK(help.out.find("backup DB DEST") != std::string::npos);
}

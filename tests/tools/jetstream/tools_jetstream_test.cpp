// The operator tool on a JetStream journal: the sample SQLite journal exported and imported
// into a stream of a nats-server this test starts, then read back with every read command.
// Built into tools_tests only when annals::jetstream is.

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "jetstream/nats_fixture.hpp"
#include "tools/tools_fixture.hpp"

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

std::vector<json::object> objects(const std::string& out) {
  std::vector<json::object> v;
  for (const auto& l : tools_test::lines(out))
    if (!l.empty())
      v.push_back(json::parse(l).as_object());
  return v;
}

/// An event as `events --json` prints it, without what a move to another journal changes:
/// the offset and the commit time.
json::object moved(json::object o) {
  o.erase("offset");
  o.erase("timestamp");
  return o;
}

std::vector<json::object> moved(const std::vector<json::object>& v) {
  std::vector<json::object> out;
  for (const auto& o : v)
    out.push_back(moved(o));
  return out;
}

std::string text_of(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines)
    text += l + "\n";
  return text;
}

} // namespace

TEST_CASE("a SQLite journal exported and imported into JetStream verifies and reads back the same "
          "events",
          "[tools][jetstream]") {
  using tools_test::bank;
  using tools_test::run;
  using tools_test::tool;
  annals::persistence::test::nats_cluster servers{1};
  auto stream = annals::persistence::test::fresh_stream_name("TOOLS");
  auto uri = servers.urls() + "?stream=" + stream;
  tools_test::temp_dir dir;
  auto db = tools_test::copy_sample(dir);
  auto head = tools_test::sample().events;

  auto exported = run({tool, "export", db});
  REQUIRE(exported.code == 0);
  auto imported = run({tool, "import", uri}, exported.out);
  INFO(imported.err);
  REQUIRE(imported.code == 0);
  CHECK(imported.out.rfind("imported " + std::to_string(head) + " events into JetStream stream "
                             + stream + " (R1)",
                           0)
        == 0);
  CHECK(tools_test::lines(imported.out).back().rfind("ok: " + std::to_string(head) + " events", 0)
        == 0);

  auto verified = run({tool, "verify", uri});
  INFO(verified.err);
  CHECK(verified.code == 0);
  CHECK(verified.out.rfind("ok: " + std::to_string(head) + " events", 0) == 0);

  // The same events, ids, seqs, payloads, tags and metadata, in the same order.
  auto on_sqlite = objects(run({tool, "events", db, "--json"}).out);
  auto on_jetstream = objects(run({tool, "events", uri, "--json"}).out);
  REQUIRE(on_sqlite.size() == head);
  CHECK(moved(on_jetstream) == moved(on_sqlite));
  // Offsets increase; filters select the same events.
  CHECK(std::is_sorted(on_jetstream.begin(), on_jetstream.end(), [](const auto& a, const auto& b) {
    return a.at("offset").as_int64() < b.at("offset").as_int64();
  }));
  for (std::vector<std::string> filter : {std::vector<std::string>{"--id", "acc-1"},
                                          {"--id", "account|acc-2"},
                                          {"--aggregate", "account"},
                                          {"--type", "bank.deposited"},
                                          {"--tag", "vip"},
                                          {"--limit", "3"}}) {
    std::vector<std::string> a{tool, "events", db, "--json"};
    std::vector<std::string> b{tool, "events", uri, "--json"};
    a.insert(a.end(), filter.begin(), filter.end());
    b.insert(b.end(), filter.begin(), filter.end());
    INFO(filter.front() << " " << filter.back());
    auto want = moved(objects(run(a).out));
    CHECK_FALSE(want.empty());
    CHECK(moved(objects(run(b).out)) == want);
  }
  auto unknown = run({tool, "events", uri, "--id", "acc-404"});
  CHECK(unknown.code == 1);
  CHECK(unknown.err.find("unknown id 'acc-404'") != std::string::npos);

  // inspect counts the same aggregate types, ids and events.
  auto inspected = run({tool, "inspect", uri, "--json"});
  INFO(inspected.err);
  REQUIRE(inspected.code == 0);
  auto js = json::parse(inspected.out).as_object();
  auto sq = json::parse(run({tool, "inspect", db, "--json"}).out).as_object();
  CHECK(js.at("events") == sq.at("events"));
  auto& ja = js.at("aggregates").as_array();
  auto& sa = sq.at("aggregates").as_array();
  REQUIRE(ja.size() == sa.size());
  for (std::size_t i = 0; i < ja.size(); ++i) {
    CHECK(ja[i].at("type") == sa[i].at("type"));
    CHECK(ja[i].at("ids") == sa[i].at("ids"));
    CHECK(ja[i].at("events") == sa[i].at("events"));
  }

  // state replays with the bank's own aggregates, also at a version.
  for (std::vector<std::string> at : {std::vector<std::string>{}, {"--at", "2"}}) {
    std::vector<std::string> a{bank,          "admin",   "state", db,
                               "--aggregate", "account", "--id",  "acc-1"};
    std::vector<std::string> b{bank,          "admin",   "state", uri,
                               "--aggregate", "account", "--id",  "acc-1"};
    a.insert(a.end(), at.begin(), at.end());
    b.insert(b.end(), at.begin(), at.end());
    auto sa_state = run(a);
    auto sb_state = run(b);
    INFO(sb_state.err);
    REQUIRE(sb_state.code == 0);
    auto x = json::parse(sa_state.out).as_object();
    auto y = json::parse(sb_state.out).as_object();
    CHECK(y.at("state") == x.at("state"));
    CHECK(y.at("version") == x.at("version"));
  }

  // export from JetStream: the same events with a chain over JetStream's own offsets, which
  // import takes into another stream.
  auto again = run({tool, "export", uri});
  REQUIRE(again.code == 0);
  CHECK(moved(objects(again.out)).size() == head);
  auto second = servers.urls() + "?stream=" + annals::persistence::test::fresh_stream_name("TOOLS");
  auto copied = run({tool, "import", second}, again.out);
  INFO(copied.err);
  CHECK(copied.code == 0);
  CHECK(moved(objects(run({tool, "events", second, "--json"}).out)) == moved(on_sqlite));

  // The checks below share the servers and the imported stream (no SECTIONs, which would
  // run everything above again for each). A journal that holds events: import refused.
  {
    auto r = run({tool, "import", uri}, exported.out);
    CHECK(r.code == 1);
    CHECK(r.err.find("already holds events") != std::string::npos);
  }
  // An altered payload: refused before anything is written.
  {
    auto all = tools_test::lines(exported.out);
    auto line3 = json::parse(all[2]).as_object();
    line3["payload"] = R"({"cents":1000000})";
    line3["data"] = json::parse(R"({"cents":1000000})");
    all[2] = json::serialize(line3);
    auto target = servers.urls() + "?stream=" + annals::persistence::test::fresh_stream_name("T");
    auto r = run({tool, "import", target}, text_of(all));
    CHECK(r.code == 1);
    CHECK(r.err.find("line 3 (offset 3): the hash chain breaks here") != std::string::npos);
    auto after = run({tool, "inspect", target});
    CHECK(after.code == 1);
    CHECK(after.err.find("no JetStream stream") != std::string::npos);
  }
  // events --follow prints an event appended to the stream later.
  {
    tools_test::background follow{{tool, "events", uri, "--json", "--follow"}};
    REQUIRE(follow.wait_for_output("\"audit|a1\"", 30s));
    auto j = annals::persistence::jetstream_journal::open(
      {.servers = servers.urls(), .stream = stream, .replicas = 1});
    REQUIRE(j);
    auto appended = annals::persistence::wait_for<annals::persistence::append_result>(
      [&](annals::persistence::callback<annals::persistence::append_result> done) {
        (*j)->append({"account|acc-9", 0, {{"bank.opened", 1, R"({"owner":"Zoe"})", {}}}, {}},
                     std::move(done));
      },
      30s);
    REQUIRE(appended);
    CHECK(follow.wait_for_output("Zoe", 30s));
    CHECK(follow.stop(SIGTERM, 10s) == 0);
    (*j)->close();
  }
}

// JetStream-specific guarantees of jetstream_journal, against real nats-server processes:
// subject encoding, two writers, refusing a foreign stream, unreachable servers, and
// kill -9 of servers under a stream of appends (tagged [fault], the slow ones).

#include <latch>
#include <map>
#include <set>
#include <thread>

#include <nats/nats.h>

#include "jetstream/nats_fixture.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<jetstream_journal> open_or_fail(jetstream_options opts) {
  auto res = jetstream_journal::open(std::move(opts));
  if (!res)
    FAIL(render(res.error()));
  return *res;
}

/// Ids no subject could carry as they are: separators, wildcards, white space, the escape
/// character itself, non-ASCII UTF-8, every byte value, and the longest id (255 bytes).
std::vector<std::string> awkward_ids() {
  std::vector<std::string> ids{
    "a.b",           "a=2Eb",          "*",       ">", "a.>", "a b\tc\nd",          "=", "==3D",
    "account|acc-1", "Ünïcødé ✓ 日本", "$JS.API", "-", "_",   std::string(255, 'x')};
  std::string every_byte;
  for (int c = 1; c < 256; ++c)
    every_byte += static_cast<char>(c);
  ids.push_back(every_byte.substr(0, 128));
  ids.push_back(every_byte.substr(127));
  return ids;
}

/// The name of the server that leads `stream` (empty if none or unreachable).
std::string leader_of(const std::string& urls, const std::string& stream) {
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, urls.c_str()) != NATS_OK)
    return {};
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, nc, nullptr);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 250;
  jsStreamInfo* si = nullptr;
  std::string leader;
  if (js_GetStreamInfo(&si, js, stream.c_str(), &jo, nullptr) == NATS_OK) {
    if (si->Cluster != nullptr && si->Cluster->Leader != nullptr)
      leader = si->Cluster->Leader;
    jsStreamInfo_Destroy(si);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return leader;
}

} // namespace

TEST_CASE("persistence ids with separators, wildcards, spaces and any byte map to one subject "
          "token each and decode back exactly",
          "[jetstream]") {
  std::set<std::string> tokens;
  for (const auto& id : awkward_ids()) {
    auto token = subject_token(id);
    INFO(token);
    CHECK(token.find_first_of(".*> \t\r\n") == std::string::npos);
    CHECK(persistence_id_of(token) == id);
    CHECK(tokens.insert(token).second);
  }
  CHECK(subject_token("account|a.b c") == "account=7Ca=2Eb=20c");
  CHECK_FALSE(persistence_id_of("a=2"));
  CHECK_FALSE(persistence_id_of("a=zz"));
  CHECK_FALSE(persistence_id_of("a=61")); // 'a' is never escaped: not a token we make
}

TEST_CASE("a JetStream journal stores and lists ids with every awkward character", "[jetstream]") {
  auto& servers = jetstream_r1_backend::servers();
  auto j = open_or_fail({.servers = servers.urls(), .stream = fresh_stream_name()});
  auto ids = awkward_ids();
  for (const auto& id : ids) {
    REQUIRE(append(*j, id, 0, {ev("e", R"({"id":1})")}));
    REQUIRE(append(*j, id, 1, {ev("f")}));
  }
  for (const auto& id : ids) {
    auto records = read_stream(*j, id);
    REQUIRE(records);
    REQUIRE(records->size() == 2);
    CHECK((*records)[0].persistence_id == id);
    CHECK((*records)[1].seq == 2);
    CHECK(highest_seq(*j, id) == std::uint64_t{2});
  }
  auto sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  CHECK(persistence_ids(*j, "", 1000) == sorted);
  auto report = j->verify();
  REQUIRE(report);
  CHECK_FALSE(report->first_break);
  CHECK(report->events_checked == 2 * ids.size());
}

TEST_CASE("of two journals (two connections, as two processes) appending to one id with the "
          "same expected seq exactly one wins",
          "[jetstream]") {
  auto& servers = jetstream_r1_backend::servers();
  auto stream = fresh_stream_name();
  auto a = open_or_fail({.servers = servers.urls(), .stream = stream});
  auto b = open_or_fail({.servers = servers.urls(), .stream = stream});
  std::uint64_t expected = 0;
  for (int round = 0; round < 20; ++round) {
    std::latch start{2};
    caf::expected<append_result> ra{caf::error{}}, rb{caf::error{}};
    std::thread ta{[&] {
      start.arrive_and_wait();
      ra = append(*a, "contended", expected, {ev("by-a"), ev("a2")});
    }};
    std::thread tb{[&] {
      start.arrive_and_wait();
      rb = append(*b, "contended", expected, {ev("by-b")});
    }};
    ta.join();
    tb.join();
    INFO("round " << round);
    REQUIRE((static_cast<bool>(ra) != static_cast<bool>(rb)));
    auto& loser = ra ? rb : ra;
    CHECK(is(loser.error(), journal_errc::conflict));
    expected += ra ? 2 : 1;
    CHECK(highest_seq(*a, "contended") == expected);
    CHECK(highest_seq(*b, "contended") == expected);
  }
  auto records = read_stream(*a, "contended");
  REQUIRE(records);
  CHECK(records->size() == expected);
  for (std::size_t i = 0; i < records->size(); ++i)
    CHECK((*records)[i].seq == i + 1);
}

TEST_CASE("a listener sees the appends of another journal on the same stream, in offset order",
          "[jetstream]") {
  auto& servers = jetstream_r1_backend::servers();
  auto stream = fresh_stream_name();
  auto a = open_or_fail({.servers = servers.urls(), .stream = stream});
  auto b = open_or_fail({.servers = servers.urls(), .stream = stream});
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<event_record> seen;
  a->subscribe([&](const std::vector<event_record>& batch) {
    std::lock_guard guard{mtx};
    seen.insert(seen.end(), batch.begin(), batch.end());
    cv.notify_all();
  });
  for (std::uint64_t i = 0; i < 20; ++i)
    REQUIRE(append(*b, "x", i, {ev("e")}));
  std::unique_lock lk{mtx};
  REQUIRE(cv.wait_for(lk, bound, [&] { return seen.size() >= 20; }));
  auto all = read_all(*a);
  REQUIRE(all);
  CHECK(seen == *all);
}

TEST_CASE("opening a stream that exists with other settings fails naming them and changes "
          "nothing",
          "[jetstream]") {
  auto& servers = jetstream_r1_backend::servers();
  auto stream = fresh_stream_name("FOREIGN");
  natsConnection* nc = nullptr;
  REQUIRE(natsConnection_ConnectTo(&nc, servers.urls().c_str()) == NATS_OK);
  jsCtx* js = nullptr;
  REQUIRE(natsConnection_JetStream(&js, nc, nullptr) == NATS_OK);
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subject = "foreign.>";
  cfg.Name = stream.c_str();
  cfg.Subjects = &subject;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_MemoryStorage;
  cfg.MaxMsgs = 10;
  jsStreamInfo* si = nullptr;
  REQUIRE(js_AddStream(&si, js, &cfg, nullptr, nullptr) == NATS_OK);
  jsStreamInfo_Destroy(si);
  REQUIRE(js_Publish(nullptr, js, "foreign.a", "x", 1, nullptr, nullptr) == NATS_OK);

  auto res = jetstream_journal::open({.servers = servers.urls(), .stream = stream});
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::not_a_journal));
  auto text = render(res.error());
  CHECK_THAT(text, Catch::Contains("JetStream stream " + stream + " exists with other settings")
                     && Catch::Contains("subjects [foreign.>]") && Catch::Contains("memory storage")
                     && Catch::Contains("limits on messages") && Catch::Contains("left unchanged"));
  si = nullptr;
  REQUIRE(js_GetStreamInfo(&si, js, stream.c_str(), nullptr, nullptr) == NATS_OK);
  CHECK(si->Config->SubjectsLen == 1);
  CHECK(std::string{si->Config->Subjects[0]} == "foreign.>");
  CHECK(si->Config->Storage == js_MemoryStorage);
  CHECK(si->State.Msgs == 1);
  jsStreamInfo_Destroy(si);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);

  // The same journal stream reopened with other replicas is refused too.
  auto ours = fresh_stream_name();
  REQUIRE(jetstream_journal::open({.servers = servers.urls(), .stream = ours}));
  auto wider = jetstream_journal::open({.servers = servers.urls(), .stream = ours, .replicas = 3});
  REQUIRE_FALSE(wider);
  CHECK(is(wider.error(), journal_errc::not_a_journal));
  CHECK_THAT(render(wider.error()), Catch::Contains("replicas 1 (the journal was opened with 3)"));
}

TEST_CASE("opening a journal with no server listening fails as unavailable, naming the servers",
          "[jetstream]") {
  auto url = "nats://127.0.0.1:" + std::to_string(free_port());
  auto started = std::chrono::steady_clock::now();
  auto res = jetstream_journal::open({.servers = url, .open_timeout = 500ms});
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::unavailable));
  CHECK_THAT(render(res.error()), Catch::Contains("cannot reach a NATS server at " + url));
  CHECK(std::chrono::steady_clock::now() - started < 10s);
}

TEST_CASE("while its only server is down a journal answers unavailable, and after the restart "
          "it holds every acknowledged append and takes new ones",
          "[jetstream][fault]") {
  nats_cluster servers{1};
  auto stream = fresh_stream_name();
  auto j = open_or_fail({.servers = servers.urls(),
                         .stream = stream,
                         .request_timeout = 500ms,
                         .append_timeout = 1500ms});
  for (std::uint64_t i = 0; i < 50; ++i)
    REQUIRE(append(*j, "acc", i, {ev("e", "{\"i\":" + std::to_string(i) + "}")}));
  servers.kill_all();
  auto down = append(*j, "acc", 50, {ev("while-down")});
  REQUIRE_FALSE(down);
  CHECK(is(down.error(), journal_errc::unavailable));
  CHECK_THAT(render(down.error()), Catch::Contains("no acknowledgement from JetStream")
                                     && Catch::Contains("persistence id acc"));
  auto read = read_stream(*j, "acc");
  REQUIRE_FALSE(read);
  INFO(render(read.error()));
  CHECK(is(read.error(), journal_errc::unavailable));
  auto head = highest_seq(*j, "acc");
  REQUIRE_FALSE(head);
  INFO(render(head.error()));
  CHECK(is(head.error(), journal_errc::unavailable));

  servers.start_all();
  // The client reconnects on its own; the first append after that may still find no
  // leader and is retried inside its time budget.
  caf::expected<std::uint64_t> seq{caf::error{}};
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (!(seq = highest_seq(*j, "acc")) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  REQUIRE(seq);
  // kill -9 of the process lost nothing acknowledged. The append answered `unavailable`
  // may have been stored after all (the client resends what it had written but not
  // flushed when the connection broke), which is what that answer says.
  CHECK((*seq == 50 || *seq == 51));
  auto again = append(*j, "acc", *seq, {ev("after")});
  REQUIRE(again);
  CHECK(again->first_seq == *seq + 1);
  auto records = read_stream(*j, "acc");
  REQUIRE(records);
  REQUIRE(records->size() == *seq + 1);
  for (std::size_t i = 0; i < 50; ++i)
    CHECK((*records)[i].payload == "{\"i\":" + std::to_string(i) + "}");
  if (*seq == 51)
    CHECK((*records)[50].name == "while-down");
  CHECK(records->back().name == "after");
}

namespace {

/// What one appender thread saw: acknowledged appends by seq, and failures.
struct appender_log {
  std::map<std::uint64_t, std::string> acked; ///< first seq -> payload
  std::vector<std::string> unavailable;       ///< payloads answered `unavailable`
  int conflicts = 0;
  std::vector<std::chrono::steady_clock::time_point> ack_times;
};

/// Appends to `id` one after the other until `stop`, re-reading the head after an
/// `unavailable` answer (the append may or may not have been stored).
void run_appender(journal& j, const std::string& id, std::atomic<bool>& stop, appender_log& log) {
  std::uint64_t expected = 0;
  int n = 0;
  while (!stop) {
    auto payload = "{\"n\":" + std::to_string(n++) + "}";
    auto res = append(j, id, expected, {ev("e", payload)});
    if (res) {
      log.acked[res->first_seq] = payload;
      log.ack_times.push_back(std::chrono::steady_clock::now());
      expected = res->last_seq;
      continue;
    }
    if (is(res.error(), journal_errc::conflict))
      ++log.conflicts;
    else
      log.unavailable.push_back(payload);
    // Learn where the stream is, however long the cluster needs.
    for (;;) {
      auto head = highest_seq(j, id);
      if (head) {
        expected = *head;
        break;
      }
      std::this_thread::sleep_for(50ms);
    }
  }
}

/// Every acknowledged append is stored once at its seq; nothing else is stored but appends
/// whose outcome was `unavailable`; the seqs are 1..n without holes.
void check_log(journal& j, const std::string& id, const appender_log& log) {
  // A server that just restarted may still be catching up: a read it answers `unavailable`
  // is retried (as an aggregate does), within the bound.
  auto records = read_stream(j, id);
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (!records && is(records.error(), journal_errc::unavailable)
         && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
    records = read_stream(j, id);
  }
  INFO("reading " << id << ": " << (records ? std::string{"ok"} : render(records.error())));
  REQUIRE(records);
  std::set<std::string> stored_payloads;
  for (std::size_t i = 0; i < records->size(); ++i) {
    const auto& rec = (*records)[i];
    CHECK(rec.seq == i + 1);
    CHECK(stored_payloads.insert(rec.payload).second); // never doubled
    auto acked = log.acked.find(rec.seq);
    if (acked != log.acked.end())
      CHECK(rec.payload == acked->second);
    else
      CHECK(std::find(log.unavailable.begin(), log.unavailable.end(), rec.payload)
            != log.unavailable.end());
  }
  for (const auto& [seq, payload] : log.acked)
    CHECK(stored_payloads.count(payload) == 1); // nothing acknowledged lost
  CHECK(log.conflicts == 0);
}

/// The longest time without any acknowledgement between `from` and `to`.
std::chrono::milliseconds longest_pause(const std::vector<appender_log>& logs,
                                        std::chrono::steady_clock::time_point from,
                                        std::chrono::steady_clock::time_point to) {
  std::vector<std::chrono::steady_clock::time_point> all{from};
  for (const auto& l : logs)
    for (auto t : l.ack_times)
      if (t > from && t < to)
        all.push_back(t);
  std::sort(all.begin(), all.end());
  all.push_back(to);
  std::chrono::steady_clock::duration worst{};
  for (std::size_t i = 1; i < all.size(); ++i)
    worst = std::max(worst, all[i] - all[i - 1]);
  return std::chrono::duration_cast<std::chrono::milliseconds>(worst);
}

std::size_t acked_count(const std::vector<appender_log>& logs) {
  std::size_t n = 0;
  for (const auto& l : logs)
    n += l.acked.size();
  return n;
}

} // namespace

TEST_CASE("an R3 journal loses and doubles no acknowledged append when a follower and then the "
          "stream leader are killed with SIGKILL, detects conflicts after, and resumes",
          "[jetstream][fault]") {
  nats_cluster servers{3};
  auto stream = fresh_stream_name();
  auto j = open_or_fail({.servers = servers.urls(),
                         .stream = stream,
                         .replicas = 3,
                         .request_timeout = 500ms,
                         .append_timeout = 20s});
  constexpr int appenders = 4;
  std::atomic<bool> stop{false};
  std::vector<appender_log> logs(appenders);
  std::vector<std::thread> threads;
  for (int i = 0; i < appenders; ++i)
    threads.emplace_back([&, i] {
      run_appender(*j, "acc-" + std::to_string(i), stop, logs[static_cast<std::size_t>(i)]);
    });
  auto leader = leader_of(servers.urls(), stream);
  REQUIRE_FALSE(leader.empty());
  auto leader_index = servers.index_of(leader);
  auto follower_index = (leader_index + 1) % servers.size();

  std::this_thread::sleep_for(300ms);
  servers.server(follower_index).kill9();
  auto follower_killed = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(500ms);
  servers.server(follower_index).start();
  REQUIRE(servers.server(follower_index).wait_healthy());
  std::this_thread::sleep_for(500ms);

  servers.server(leader_index).kill9();
  auto leader_killed = std::chrono::steady_clock::now();
  std::string new_leader;
  auto deadline = leader_killed + bound;
  while ((new_leader.empty() || new_leader == leader)
         && std::chrono::steady_clock::now() < deadline)
    new_leader = leader_of(servers.server(follower_index).url(), stream);
  auto elected = std::chrono::steady_clock::now();
  REQUIRE_FALSE(new_leader.empty());
  CHECK(new_leader != leader);
  std::this_thread::sleep_for(1s);
  servers.server(leader_index).start();
  REQUIRE(servers.server(leader_index).wait_healthy());
  std::this_thread::sleep_for(300ms);
  stop = true;
  for (auto& t : threads)
    t.join();
  auto stopped = std::chrono::steady_clock::now();

  // Appends resumed after the election: some were acknowledged after it.
  std::size_t after_election = 0;
  for (const auto& l : logs)
    after_election += static_cast<std::size_t>(
      std::count_if(l.ack_times.begin(), l.ack_times.end(), [&](auto t) { return t > elected; }));
  CHECK(after_election > 0);
  for (int i = 0; i < appenders; ++i)
    check_log(*j, "acc-" + std::to_string(i), logs[static_cast<std::size_t>(i)]);
  // A stale expected seq is still a conflict under the new leader.
  auto stale = append(*j, "acc-0", 0, {ev("stale")});
  for (auto until = std::chrono::steady_clock::now() + bound;
       !stale && is(stale.error(), journal_errc::unavailable)
       && std::chrono::steady_clock::now() < until;)
    stale = append(*j, "acc-0", 0, {ev("stale")});
  REQUIRE_FALSE(stale);
  CHECK(is(stale.error(), journal_errc::conflict));
  std::size_t unavailable = 0;
  for (const auto& l : logs)
    unavailable += l.unavailable.size();
  WARN("R3 kill -9: "
       << acked_count(logs) << " appends acknowledged by " << appenders << " appenders, "
       << unavailable << " answered unavailable; election took "
       << std::chrono::duration_cast<std::chrono::milliseconds>(elected - leader_killed).count()
       << " ms; longest pause without acknowledgements: after the follower kill "
       << longest_pause(logs, follower_killed, leader_killed).count()
       << " ms, after the leader kill " << longest_pause(logs, leader_killed, stopped).count()
       << " ms");
  auto report = j->verify();
  REQUIRE(report);
  CHECK_FALSE(report->first_break);
}

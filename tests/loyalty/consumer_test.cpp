// annals-loyalty against a real nats-server: the test publishes the bank's public wire form
// into the stream `bank_public` itself (with libnats, as the bank's publisher does), runs
// annals-loyalty as a child process, kills it, and checks every member's points.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <nats/nats.h>

#include "annals/actors/public_events.hpp"
#include "jetstream/nats_servers.hpp"
#include "persistence/journal_fixtures.hpp"
#include "service/http_client.hpp"

#ifndef ANNALS_LOYALTY_BINARY
#error "ANNALS_LOYALTY_BINARY must name the annals-loyalty executable"
#endif

namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using annals::persistence::test::nats_cluster;

constexpr auto bound = std::chrono::milliseconds{20'000};

// Polls `done` until it holds or `limit` passes.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = bound) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// The bank's side: publishes public messages into `bank_public` and reads the consumer's
// progress.
class bank_publisher {
public:
  explicit bank_publisher(const std::string& url) {
    REQUIRE(natsConnection_ConnectTo(&conn_, url.c_str()) == NATS_OK);
    REQUIRE(natsConnection_JetStream(&js_, conn_, nullptr) == NATS_OK);
  }
  ~bank_publisher() {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(conn_);
  }
  bank_publisher(const bank_publisher&) = delete;
  bank_publisher& operator=(const bank_publisher&) = delete;

  // The stream as the bank's publisher creates it: subjects bank.public.>, file storage.
  void create_stream() {
    const char* subjects[] = {"bank.public.>"};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = "bank_public";
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    jsStreamInfo* si = nullptr;
    REQUIRE(js_AddStream(&si, js_, &cfg, nullptr, nullptr) == NATS_OK);
    jsStreamInfo_Destroy(si);
  }

  // Publishes `body` to bank.public.<type>; with `msg_id`, as header Nats-Msg-Id. Returns
  // the stream sequence and whether the stream took it as a duplicate.
  std::pair<std::uint64_t, bool> publish(const std::string& type, const std::string& body,
                                         const std::string& msg_id) {
    auto subject = "bank.public." + type;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    if (!msg_id.empty())
      po.MsgId = msg_id.c_str();
    jsPubAck* ack = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    auto s = js_Publish(&ack, js_, subject.c_str(), body.data(), static_cast<int>(body.size()), &po,
                        &code);
    INFO(natsStatus_GetText(s) << " " << static_cast<int>(code));
    REQUIRE(s == NATS_OK);
    std::pair<std::uint64_t, bool> out{ack->Sequence, ack->Duplicate};
    jsPubAck_Destroy(ack);
    return out;
  }

  // A credit as the bank publishes it (`to_json` of a payments.AccountCredited v1).
  std::string credit(std::uint64_t position, const std::string& account, std::int64_t cents) {
    annals::actors::published_message m;
    m.id = "bank:" + std::to_string(position);
    m.position = position;
    m.type = "payments.AccountCredited";
    m.version = 1;
    m.key = account;
    m.occurred_at_us = 1'800'000'000'000'000;
    m.data = json::object{{"account", account}, {"amount", cents}, {"currency", "EUR"}};
    return annals::actors::to_json(m);
  }

  // Messages of the durable consumer `loyalty` not yet delivered, and delivered but unacked.
  std::optional<std::pair<std::uint64_t, std::int64_t>> consumer_backlog() {
    jsConsumerInfo* ci = nullptr;
    if (js_GetConsumerInfo(&ci, js_, "bank_public", "loyalty", nullptr, nullptr) != NATS_OK)
      return std::nullopt;
    std::pair<std::uint64_t, std::int64_t> out{ci->NumPending, ci->NumAckPending};
    jsConsumerInfo_Destroy(ci);
    return out;
  }

  std::uint64_t stream_messages() {
    jsStreamInfo* si = nullptr;
    REQUIRE(js_GetStreamInfo(&si, js_, "bank_public", nullptr, nullptr) == NATS_OK);
    auto n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
  }

private:
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
};

// annals-loyalty as a child process, its journal and logs in a temporary directory.
class loyalty_process {
public:
  explicit loyalty_process(std::string nats_url) : nats_url_(std::move(nats_url)) {
    char pattern[] = "/tmp/annals-loyalty-test-XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    dir_ = pattern;
  }
  ~loyalty_process() {
    kill9();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  loyalty_process(const loyalty_process&) = delete;
  loyalty_process& operator=(const loyalty_process&) = delete;

  // Starts it with `extra` arguments; true once it prints its listening line, false when it
  // exits first (then `exit_code` has the code).
  bool start(std::vector<std::string> extra = {}) {
    ++runs_;
    log_ = dir_ / ("run-" + std::to_string(runs_) + ".log");
    std::vector<std::string> args{ANNALS_LOYALTY_BINARY,
                                  "--db",
                                  (dir_ / "loyalty.db").string(),
                                  "--nats",
                                  nats_url_,
                                  "--port",
                                  "0",
                                  "--ack-wait",
                                  "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = annals::persistence::test::spawn_logged(std::move(args), log_);
    static constexpr std::string_view marker = "annals-loyalty listening on http://127.0.0.1:";
    bool listening = eventually([&] {
      auto text = output();
      auto at = text.find(marker);
      if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
        port_ = static_cast<unsigned short>(std::stoul(text.substr(at + marker.size())));
        return true;
      }
      return exited(0ms);
    });
    INFO(output());
    REQUIRE((listening || pid_ < 0));
    return pid_ > 0;
  }

  // Waits up to `limit` for the child to exit; true when it did (see `exit_code`).
  bool exited(std::chrono::milliseconds limit) {
    if (pid_ < 0)
      return true;
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        pid_ = -1;
        return true;
      }
      if (std::chrono::steady_clock::now() >= deadline)
        return false;
      std::this_thread::sleep_for(10ms);
    }
  }

  void kill9() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  int terminate() {
    REQUIRE(pid_ > 0);
    ::kill(pid_, SIGTERM);
    REQUIRE(exited(bound));
    return exit_code_;
  }

  int exit_code() const {
    return exit_code_;
  }

  std::string output() const {
    return read(log_);
  }

  // What every run printed, oldest first.
  std::string all_output() const {
    std::string all;
    for (int i = 1; i <= runs_; ++i)
      all += read(dir_ / ("run-" + std::to_string(i) + ".log"));
    return all;
  }

  static std::string read(const std::filesystem::path& path) {
    std::ifstream in{path};
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // GET `target`: the status and the JSON body (null when not JSON).
  std::pair<unsigned, json::value> get(const std::string& target) {
    service::http::client c{"127.0.0.1", port_};
    auto r = c.request("GET", target);
    INFO(target << " transport error: " << r.error());
    REQUIRE(r.ok());
    boost::system::error_code ec;
    auto v = json::parse(r->body, ec);
    return {r->status, ec ? json::value{} : v};
  }

  std::int64_t health(const char* counter) {
    auto [status, body] = get("/health");
    REQUIRE(status == 200);
    return body.at(counter).to_number<std::int64_t>();
  }

  // The member's points and earnings; nullopt on 404.
  std::optional<std::pair<std::int64_t, std::int64_t>> member(const std::string& account) {
    auto [status, body] = get("/members/" + account);
    if (status == 404)
      return std::nullopt;
    INFO(json::serialize(body));
    REQUIRE(status == 200);
    return std::pair{body.at("points").to_number<std::int64_t>(),
                     body.at("earnings").to_number<std::int64_t>()};
  }

private:
  std::string nats_url_;
  std::filesystem::path dir_;
  std::filesystem::path log_;
  int runs_ = 0;
  pid_t pid_ = -1;
  int exit_code_ = -1;
  unsigned short port_ = 0;
};

} // namespace

TEST_CASE("annals-loyalty creates the stream and its durable consumer, turns each credit into "
          "points and skips what is not a credit",
          "[loyalty][jetstream]") {
#if ANNALS_TEST_TSAN
  WARN("ThreadSanitizer build: annals-loyalty runs as a forked child; skipped");
  return;
#endif
  nats_cluster nats{1};
  loyalty_process loyalty{nats.urls()};
  REQUIRE(loyalty.start()); // no stream yet: annals-loyalty creates it
  bank_publisher bank{nats.urls()};
  bank.publish("payments.AccountCredited", bank.credit(3, "acc-1", 100), "bank:3");
  bank.publish("payments.AccountOpened",
               R"({"id":"bank:4","position":4,"type":"payments.AccountOpened","version":1,)"
               R"("key":"acc-2","occurred_at_us":0,"data":{"account":"acc-2","owner":"Bo"}})",
               "bank:4");
  bank.publish("payments.AccountCredited", bank.credit(5, "acc-2", 40), "bank:5");
  bank.publish("payments.AccountCredited", "not json", "");
  bank.publish("payments.AccountCredited", bank.credit(6, "acc-1", -5), "bank:6");
  auto v2 = bank.credit(7, "acc-1", 9);
  v2.replace(v2.find("\"version\":1"), 11, "\"version\":2");
  bank.publish("payments.AccountCredited", v2, "bank:7");
  bank.publish("payments.AccountCredited", bank.credit(8, "acc-1", 250), "bank:8");

  REQUIRE(eventually([&] { return loyalty.health("handled") == 3; }));
  REQUIRE(eventually([&] { return loyalty.health("rejected") == 3; }));
  CHECK(loyalty.member("acc-1") == std::pair<std::int64_t, std::int64_t>{350, 2});
  CHECK(loyalty.member("acc-2") == std::pair<std::int64_t, std::int64_t>{40, 1});
  CHECK_FALSE(loyalty.member("acc-3"));
  auto log = loyalty.output();
  CHECK(log.find("not JSON") != std::string::npos);
  CHECK(log.find("data.amount") != std::string::npos);
  CHECK(log.find("version 2") != std::string::npos);
  CHECK(loyalty.terminate() == 0);
  CHECK(loyalty.output().find("stopped cleanly") != std::string::npos);

  // A restart resumes at the durable consumer's position: nothing is counted again.
  REQUIRE(loyalty.start());
  bank.publish("payments.AccountCredited", bank.credit(9, "acc-2", 2), "bank:9");
  REQUIRE(eventually([&] { return loyalty.health("handled") == 1; }));
  CHECK(loyalty.member("acc-1") == std::pair<std::int64_t, std::int64_t>{350, 2});
  CHECK(loyalty.member("acc-2") == std::pair<std::int64_t, std::int64_t>{42, 2});
}

TEST_CASE("annals-loyalty counts every credit exactly once across SIGKILLs, exits between "
          "handling and ack, and a message id published twice",
          "[loyalty][jetstream]") {
#if ANNALS_TEST_TSAN
  WARN("ThreadSanitizer build: annals-loyalty runs as a forked child; skipped");
  return;
#endif
  nats_cluster nats{1};
  bank_publisher bank{nats.urls()};
  bank.create_stream();
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> expected; // points, earnings
  std::vector<std::pair<std::string, std::string>> sent;                 // id, body
  std::uint64_t position = 0;
  auto publish_credits = [&](int n) {
    for (int i = 0; i < n; ++i) {
      ++position;
      auto account = "acc-" + std::to_string(position % 7);
      auto cents = static_cast<std::int64_t>(position % 97 + 1);
      auto body = bank.credit(position, account, cents);
      auto id = "bank:" + std::to_string(position);
      REQUIRE_FALSE(bank.publish("payments.AccountCredited", body, id).second);
      expected[account].first += cents;
      expected[account].second += 1;
      sent.emplace_back(id, body);
    }
  };
  publish_credits(150);

  // Two runs that exit after handling a message and before acking it.
  loyalty_process loyalty{nats.urls()};
  for (const char* n : {"40", "25"}) {
    if (loyalty.start({"--crash-before-ack", n}))
      REQUIRE(loyalty.exited(bound));
    INFO(loyalty.output());
    CHECK(loyalty.exit_code() == 3);
    CHECK(loyalty.output().find("exiting before the ack of bank:") != std::string::npos);
  }

  // The same message ids again: within the stream's duplicate window the stream drops them;
  // published without Nats-Msg-Id (as a publisher that lost its ack and whose window passed
  // would) they are stored a second time, and the consumer must drop them.
  auto before = bank.stream_messages();
  for (std::size_t i = 0; i < 10; ++i)
    CHECK(bank.publish("payments.AccountCredited", sent[i * 7].second, sent[i * 7].first).second);
  CHECK(bank.stream_messages() == before);
  for (std::size_t i = 0; i < 30; ++i)
    bank.publish("payments.AccountCredited", sent[i * 5].second, "");
  CHECK(bank.stream_messages() == before + 30);
  publish_credits(100);

  // SIGKILLs while it works through the stream. The members answer redeliveries and second
  // copies from their idempotency keys (counted as duplicates).
  std::int64_t duplicates = 0;
  for (int kill = 0; kill < 3; ++kill) {
    REQUIRE(loyalty.start());
    REQUIRE(eventually([&] { return loyalty.health("handled") >= 10; }));
    duplicates += loyalty.health("duplicates");
    loyalty.kill9();
  }
  REQUIRE(loyalty.start());
  publish_credits(20);
  REQUIRE(eventually([&] {
    auto backlog = bank.consumer_backlog();
    return backlog && backlog->first == 0 && backlog->second == 0;
  }));
  for (const auto& [account, want] : expected) {
    INFO(account);
    CHECK(loyalty.member(account) == want);
  }
  duplicates += loyalty.health("duplicates");
  CHECK(duplicates > 0);
  CHECK(loyalty.terminate() == 0);
}

// The two-process kill test of the bank's public messages: annals-bank --publish and
// annals-loyalty on one nats-server (JetStream), both SIGKILLed and restarted in rounds
// while clients send deposits and withdrawals to the bank.
//
// Source of truth: the bank's journal, read after the last restart through
// GET /accounts/{id}/events. Its `bank.deposited` events are the credits that happened:
// each acknowledged deposit (2xx) must be there exactly once, a deposit whose outcome the
// client never learnt at most once, and nothing else. The loyalty side must then hold, per
// account, exactly one point per cent of those deposits (and one earning per deposit), and
// the stream `bank_public` every `payments.AccountCredited` id `bank:<offset>` of them at
// least once.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/json.hpp>
#include <nats/nats.h>

#include "annals/actors/public_events.hpp"
#include "jetstream/nats_servers.hpp"
#include "persistence/journal_fixtures.hpp"
#include "service/http_client.hpp"
#include "service/service_process.hpp"

#ifndef ANNALS_LOYALTY_BINARY
#error "ANNALS_LOYALTY_BINARY must name the annals-loyalty executable"
#endif

namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

/// Any single wait (a start, the load resuming, the catch-up); never reached when things
/// work, generous for a loaded 2-core machine.
constexpr std::chrono::milliseconds bound{60'000};
constexpr int account_count = 20;
constexpr int client_count = 6;
constexpr auto request_timeout = 10s;
constexpr const char* credited_subject = "bank.public.payments.AccountCredited";

double seconds_since(steady::time_point t) {
  return std::chrono::duration<double>(steady::now() - t).count();
}

// Polls `done` until it holds or `limit` passes.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = bound) {
  auto deadline = steady::now() + limit;
  while (!done()) {
    if (steady::now() >= deadline)
      return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

std::string account_id(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "acc-%02d", i);
  return buf;
}

// The JSON object of a body, or null when it is not one.
json::object* as_object(json::value& v) {
  return v.is_object() ? &v.as_object() : nullptr;
}

// ---------------------------------------------------------------------------------------
// annals-loyalty as a child process, its journal and logs in a temporary directory

class loyalty_process {
public:
  explicit loyalty_process(std::string nats_url) : nats_url_(std::move(nats_url)) {
    char pattern[] = "/tmp/annals-loyalty-kill-XXXXXX";
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

  // Starts it on its journal and waits (bounded) for its listening line.
  void start() {
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
    pid_ = annals::persistence::test::spawn_logged(std::move(args), log_);
    static constexpr std::string_view marker = "annals-loyalty listening on http://127.0.0.1:";
    bool listening = eventually([&] {
      auto text = annals::persistence::test::file_text(log_);
      auto at = text.find(marker);
      if (at == std::string::npos || text.find('\n', at) == std::string::npos)
        return exited();
      port_ = static_cast<unsigned short>(std::stoul(text.substr(at + marker.size())));
      return true;
    });
    INFO(all_output());
    REQUIRE(listening);
    REQUIRE(pid_ > 0);
  }

  void kill9() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  // What every run printed, oldest first.
  std::string all_output() const {
    std::string all;
    for (int i = 1; i <= runs_; ++i)
      all += "--- annals-loyalty run " + std::to_string(i) + " ---\n"
             + annals::persistence::test::file_text(dir_ / ("run-" + std::to_string(i) + ".log"));
    return all;
  }

  // GET `target`: the status and the JSON body (null when not JSON); status 0 on a
  // transport error.
  std::pair<unsigned, json::value> get(const std::string& target) {
    service::http::client c{"127.0.0.1", port_};
    auto r = c.request("GET", target);
    if (!r.ok())
      return {0, json::value{}};
    boost::system::error_code ec;
    auto v = json::parse(r->body, ec);
    return {r->status, ec ? json::value{} : v};
  }

  // A counter of /health (handled, duplicates, ...).
  std::int64_t health(const char* counter) {
    auto [status, body] = get("/health");
    INFO("annals-loyalty /health: " << status << " " << json::serialize(body));
    REQUIRE(status == 200);
    return body.at(counter).to_number<std::int64_t>();
  }

  // The member's points and earnings; {0, 0} for a member without any (404).
  std::pair<std::int64_t, std::int64_t> member(const std::string& account) {
    auto [status, body] = get("/members/" + account);
    if (status == 404)
      return {0, 0};
    INFO("annals-loyalty /members/" << account << ": " << status << " " << json::serialize(body));
    REQUIRE(status == 200);
    return {body.at("points").to_number<std::int64_t>(),
            body.at("earnings").to_number<std::int64_t>()};
  }

private:
  bool exited() {
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_)
      pid_ = -1;
    return pid_ < 0;
  }

  std::string nats_url_;
  std::filesystem::path dir_;
  std::filesystem::path log_;
  int runs_ = 0;
  pid_t pid_ = -1;
  unsigned short port_ = 0;
};

// ---------------------------------------------------------------------------------------
// The stream `bank_public` and the consumer `loyalty`, read with a plain libnats connection

class stream_watch {
public:
  /// One message id's copies in the stream, and the credit of the first copy.
  struct copies {
    int count = 0;
    std::string account;
    std::int64_t amount = 0;
  };

  explicit stream_watch(const std::string& url) {
    REQUIRE(natsConnection_ConnectTo(&conn_, url.c_str()) == NATS_OK);
    REQUIRE(natsConnection_JetStream(&js_, conn_, nullptr) == NATS_OK);
  }
  ~stream_watch() {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(conn_);
  }
  stream_watch(const stream_watch&) = delete;
  stream_watch& operator=(const stream_watch&) = delete;

  /// Reads the messages stored since the last call and counts the credits among them by
  /// Nats-Msg-Id.
  void read_new() {
    jsStreamInfo* si = nullptr;
    REQUIRE(js_GetStreamInfo(&si, js_, "bank_public", nullptr, nullptr) == NATS_OK);
    auto last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    for (; next_ <= last; ++next_) {
      natsMsg* m = nullptr;
      auto s = js_GetMsg(&m, js_, "bank_public", next_, nullptr, nullptr);
      INFO("message " << next_ << " of bank_public: " << natsStatus_GetText(s));
      REQUIRE(s == NATS_OK);
      ++messages_;
      if (std::string_view{natsMsg_GetSubject(m)} == credited_subject) {
        const char* id = nullptr;
        REQUIRE(natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK);
        auto msg = annals::actors::parse_published(
          {natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m))});
        REQUIRE(msg);
        CHECK(msg->id == id);
        auto& c = credits_[id];
        if (++c.count == 1) {
          c.account = msg->data.at("account").as_string();
          c.amount = msg->data.at("amount").to_number<std::int64_t>();
        }
      }
      natsMsg_Destroy(m);
    }
  }

  /// Messages of the durable consumer `loyalty` not yet delivered, and delivered but not
  /// acknowledged; nullopt while the consumer does not exist.
  std::optional<std::pair<std::uint64_t, std::int64_t>> consumer_backlog() {
    jsConsumerInfo* ci = nullptr;
    if (js_GetConsumerInfo(&ci, js_, "bank_public", "loyalty", nullptr, nullptr) != NATS_OK)
      return std::nullopt;
    std::pair<std::uint64_t, std::int64_t> out{ci->NumPending, ci->NumAckPending};
    jsConsumerInfo_Destroy(ci);
    return out;
  }

  const std::map<std::string, copies>& credits() const {
    return credits_;
  }
  std::uint64_t messages() const {
    return messages_;
  }

private:
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  std::uint64_t next_ = 1;
  std::uint64_t messages_ = 0;
  std::map<std::string, copies> credits_;
};

// ---------------------------------------------------------------------------------------
// The clients: each sends commands with an Idempotency-Key until the answer is definitive

enum class kind : std::uint8_t { deposit, withdraw };
enum class fate : std::uint8_t { unknown, acknowledged, refused };

struct command {
  kind what = kind::deposit;
  std::string key;
  int account = 0;
  std::int64_t amount = 0;
  fate outcome = fate::unknown;
  int attempts = 0;
};

struct load {
  std::atomic<unsigned short> bank_port{0}; // 0 while annals-bank is down
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> acknowledged{0};
  std::atomic<std::uint64_t> retries{0};
  std::mutex mtx;
  std::string unexpected; // the first answer no command of this test may get
};

// Sends `c` to the bank until the answer is definitive (2xx, or 409 insufficient_funds for
// a withdrawal), again with the same key after a cut connection, a timeout or a 5xx. Gives
// up, leaving the fate unknown, once the load stops.
void execute(load& l, std::optional<service::http::client>& http, unsigned short& http_port,
             command& c) {
  auto target =
    "/accounts/" + account_id(c.account) + (c.what == kind::deposit ? "/deposit" : "/withdraw");
  auto body = json::serialize(json::object{{"amount", c.amount}});
  std::vector<std::pair<std::string, std::string>> headers{{"Idempotency-Key", c.key}};
  auto backoff = 20ms;
  while (!l.stopping.load()) {
    auto port = l.bank_port.load();
    if (port != 0) {
      if (!http || http_port != port) {
        http.emplace("127.0.0.1", port);
        http_port = port;
      }
      if (++c.attempts > 1)
        l.retries.fetch_add(1);
      auto r = http->request("POST", target, body, headers, request_timeout);
      if (r.ok() && r->status >= 200 && r->status < 300) {
        c.outcome = fate::acknowledged;
        l.acknowledged.fetch_add(1);
        return;
      }
      if (r.ok() && r->status < 500) {
        boost::system::error_code ec;
        auto v = json::parse(r->body, ec);
        auto* o = ec ? nullptr : as_object(v);
        auto* code = o ? o->if_contains("error") : nullptr;
        if (c.what == kind::withdraw && r->status == 409 && code && code->is_string()
            && code->as_string() == "insufficient_funds") {
          c.outcome = fate::refused;
          return;
        }
        std::lock_guard guard{l.mtx};
        if (l.unexpected.empty())
          l.unexpected = "POST " + target + " (key " + c.key + ") answered "
                         + std::to_string(r->status) + " " + r->body;
        return;
      }
    }
    std::this_thread::sleep_for(backoff); // annals-bank is down or restarting
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, 200ms);
  }
}

// One client: deposits (four in five) and withdrawals on random accounts, one at a time,
// paced so that annals-loyalty (one fsync'd commit per credit) keeps up.
std::vector<command> client_main(load& l, int index) {
  std::mt19937_64 rng{static_cast<std::uint64_t>(index) * 7919 + 1};
  std::vector<command> done;
  std::optional<service::http::client> http;
  unsigned short http_port = 0;
  for (int n = 0; !l.stopping.load(); ++n) {
    command c;
    c.what = rng() % 5 == 0 ? kind::withdraw : kind::deposit;
    c.key = "c" + std::to_string(index) + "-" + std::to_string(n);
    c.account = static_cast<int>(rng() % account_count);
    c.amount = static_cast<std::int64_t>(rng() % 5000 + 1);
    execute(l, http, http_port, c);
    done.push_back(std::move(c));
    std::this_thread::sleep_for(4ms);
  }
  return done;
}

// ---------------------------------------------------------------------------------------
// The bank's journal, read back over HTTP

struct journal_event {
  std::string type;
  std::int64_t cents = 0;
  std::uint64_t offset = 0;
  std::string command_id;
};

// GET `target` on the bank until it answers 200 with a JSON object (a restart may still
// be recovering: 503), bounded.
json::object bank_get(unsigned short port, const std::string& target) {
  json::object out;
  std::string last;
  bool ok = eventually([&] {
    service::http::client c{"127.0.0.1", port};
    auto r = c.request("GET", target, {}, {}, request_timeout);
    if (!r.ok()) {
      last = r.error();
      return false;
    }
    last = std::to_string(r->status) + " " + r->body;
    boost::system::error_code ec;
    auto v = json::parse(r->body, ec);
    if (r->status != 200 || ec || !v.is_object())
      return false;
    out = std::move(v.as_object());
    return true;
  });
  INFO("GET " << target << " on annals-bank: " << last);
  REQUIRE(ok);
  return out;
}

std::vector<journal_event> account_events(unsigned short port, const std::string& id) {
  std::vector<journal_event> out;
  for (;;) {
    auto page = bank_get(port, "/accounts/" + id + "/events?from=" + std::to_string(out.size() + 1)
                                 + "&limit=1000");
    const auto& events = page.at("events").as_array();
    for (const auto& e : events) {
      journal_event je;
      je.type = e.at("type").as_string();
      je.offset = e.at("offset").to_number<std::uint64_t>();
      if (auto* cmd = e.as_object().if_contains("command_id"))
        je.command_id = cmd->as_string();
      if (je.type == "bank.deposited" || je.type == "bank.withdrawn")
        je.cents = e.at("data").at("cents").to_number<std::int64_t>();
      out.push_back(std::move(je));
    }
    if (events.size() < 1000)
      return out;
  }
}

enum class victim : std::uint8_t { bank, loyalty, both };

} // namespace

TEST_CASE("kill test: every credit annals-bank commits becomes annals-loyalty points exactly "
          "once while both are SIGKILLed under load",
          "[domain_events][kill][jetstream]") {
#if ANNALS_TEST_TSAN
  WARN("ThreadSanitizer build: annals-bank and annals-loyalty run as forked children; skipped");
  return;
#endif
  auto began = steady::now();
  annals::persistence::test::nats_cluster nats{1};
  auto nats_url = nats.server(0).url();
  service_test::service_process bank{std::vector<std::string>{"--publish", nats_url}};
  loyalty_process loyalty{nats_url};
  // Both processes' logs when the test ends early or a check below fails.
  struct logs_on_failure {
    service_test::service_process& bank;
    loyalty_process& loyalty;
    bool passed = false;
    ~logs_on_failure() {
      if (!passed)
        std::fprintf(stderr, "%s\n%s\n", bank.all_output().c_str(), loyalty.all_output().c_str());
    }
  } logs{bank, loyalty};
  loyalty.start();

  // The accounts, opened with a key each so that a retry is answered, not refused.
  {
    service::http::client c{"127.0.0.1", bank.port()};
    for (int i = 0; i < account_count; ++i) {
      auto id = account_id(i);
      auto r = c.request("POST", "/accounts",
                         json::serialize(json::object{{"id", id}, {"owner", "Owner " + id}}),
                         {{"Idempotency-Key", "open-" + id}}, request_timeout);
      INFO("opening " << id << ": " << (r.ok() ? r->body : r.error()));
      REQUIRE(r.ok());
      REQUIRE(r->status == 201);
    }
  }

  load l;
  l.bank_port = bank.port();
  std::vector<std::vector<command>> sent(client_count);
  std::vector<std::thread> clients;
  struct joiner {
    load& l;
    std::vector<std::thread>& threads;
    ~joiner() {
      l.stopping = true;
      for (auto& t : threads)
        if (t.joinable())
          t.join();
    }
  } join_clients{l, clients};
  for (int i = 0; i < client_count; ++i)
    clients.emplace_back([&l, &sent, i] { sent[static_cast<std::size_t>(i)] = client_main(l, i); });

  // The rounds. Before each kill the load runs until the bank has acknowledged more
  // commands since its latest start and annals-loyalty has handled credits since its own,
  // then for a random moment more.
  std::mt19937_64 rng{std::random_device{}()};
  int bank_kills = 0;
  int loyalty_kills = 0;
  std::int64_t loyalty_duplicates = 0; // seen in /health just before the kills
  auto kill = [&](victim v) {
    if (v != victim::bank)
      loyalty_duplicates += loyalty.health("duplicates");
    if (v != victim::loyalty) {
      l.bank_port = 0;
      bank.kill9();
      ++bank_kills;
    }
    if (v != victim::bank) { // with both: right after the bank
      loyalty.kill9();
      ++loyalty_kills;
    }
    if (v != victim::loyalty) {
      bank.restart();
      l.bank_port = bank.port();
    }
    if (v != victim::bank)
      loyalty.start();
  };
  constexpr std::array plan{victim::bank, victim::loyalty, victim::both,
                            victim::bank, victim::loyalty, victim::both,
                            victim::bank, victim::loyalty, victim::both};
  steady::time_point last_kill;
  for (auto v : plan) {
    auto acked = l.acknowledged.load();
    REQUIRE(
      eventually([&] { return l.acknowledged.load() >= acked + 20 || !l.unexpected.empty(); }));
    REQUIRE(eventually([&] { return loyalty.health("handled") >= 5; }));
    std::this_thread::sleep_for(std::chrono::milliseconds{300 + rng() % 1200}); // a random moment
    {
      std::lock_guard guard{l.mtx};
      INFO(l.unexpected);
      REQUIRE(l.unexpected.empty());
    }
    kill(v);
  }
  auto load_ended = steady::now();
  l.stopping = true;
  for (auto& t : clients)
    t.join();
  {
    std::lock_guard guard{l.mtx};
    INFO(l.unexpected);
    REQUIRE(l.unexpected.empty());
  }
  // Last, both at once without load: nothing of the rounds is still in flight afterwards.
  last_kill = steady::now();
  kill(victim::both);

  // The truth: the bank's journal.
  std::map<std::string, command*> by_key;
  std::uint64_t commands = 0, acknowledged = 0, refused = 0, unknown = 0;
  for (auto& client : sent)
    for (auto& c : client) {
      by_key[c.key] = &c;
      ++commands;
      acknowledged += c.outcome == fate::acknowledged;
      refused += c.outcome == fate::refused;
      unknown += c.outcome == fate::unknown;
    }
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> expected; // points, earnings
  std::map<std::string, std::string> credit_ids;                         // bank:<offset> -> account
  std::set<std::string> in_journal;
  std::uint64_t unknown_applied = 0;
  for (int i = 0; i < account_count; ++i) {
    auto id = account_id(i);
    auto& want = expected[id];
    for (const auto& e : account_events(bank.port(), id)) {
      if (e.type == "bank.opened")
        continue;
      INFO(id << ": event " << e.type << " at offset " << e.offset << ", command id '"
              << e.command_id << "'");
      REQUIRE((e.type == "bank.deposited" || e.type == "bank.withdrawn"));
      // Every event comes from a command a client sent, on this account, once.
      auto it = by_key.find(e.command_id);
      REQUIRE(it != by_key.end());
      const command& c = *it->second;
      CHECK(c.account == i);
      CHECK(c.amount == e.cents);
      CHECK((c.what == kind::deposit) == (e.type == "bank.deposited"));
      CHECK(in_journal.insert(e.command_id).second);
      CHECK(c.outcome != fate::refused);
      unknown_applied += c.outcome == fate::unknown;
      if (e.type == "bank.deposited") {
        want.first += e.cents;
        want.second += 1;
        credit_ids["bank:" + std::to_string(e.offset)] = id;
      }
    }
  }
  // Every acknowledged command is in the journal.
  for (const auto& [key, c] : by_key)
    if (c->outcome == fate::acknowledged) {
      INFO("acknowledged command " << key << " missing from the journal");
      CHECK(in_journal.count(key) == 1);
    }

  // Caught up: the stream holds every credit and the consumer has nothing pending or
  // unacknowledged.
  stream_watch stream{nats_url};
  std::optional<std::pair<std::uint64_t, std::int64_t>> backlog;
  std::size_t published = 0;
  bool caught_up = eventually([&] {
    stream.read_new();
    published = static_cast<std::size_t>(
      std::count_if(credit_ids.begin(), credit_ids.end(),
                    [&](const auto& c) { return stream.credits().count(c.first); }));
    backlog = stream.consumer_backlog();
    return published == credit_ids.size() && backlog && backlog->first == 0 && backlog->second == 0;
  });
  auto catch_up = seconds_since(last_kill);
  INFO("credits in the journal " << credit_ids.size() << ", in the stream " << published
                                 << ", consumer backlog "
                                 << (backlog ? std::to_string(backlog->first) + " pending, "
                                                 + std::to_string(backlog->second) + " unacked"
                                             : std::string{"unknown"}));
  REQUIRE(caught_up);

  // The stream: every credit id at least once, with the journal's account and amount, and
  // no credit the journal does not have.
  int stream_duplicates = 0;
  for (const auto& [id, copies] : stream.credits()) {
    INFO("message " << id << " in bank_public");
    REQUIRE(credit_ids.count(id) == 1);
    CHECK(copies.account == credit_ids.at(id));
    stream_duplicates += copies.count - 1;
  }
  // The loyalty side: one point per cent of every deposit in the journal, one earning per
  // deposit; no lost and no double-counted credit.
  std::int64_t points = 0;
  int wrong_members = 0;
  for (const auto& [id, want] : expected) {
    auto got = loyalty.member(id);
    INFO("member " << id << " (points, earnings)");
    CHECK(got == want);
    wrong_members += got != want;
    points += want.first;
  }
  loyalty_duplicates += loyalty.health("duplicates");

  std::printf(
    "domain_events kill test: %d kills of annals-bank, %d of annals-loyalty; %llu "
    "commands (%llu acknowledged, %llu refused withdrawals, %llu unknown of which %llu "
    "applied, %llu retries); %zu credits = %lld points in the journal; %llu messages in "
    "bank_public (%d duplicate credit copies); annals-loyalty answered >= %lld "
    "duplicates from idempotency keys; load %.1f s; last kill to caught up %.1f s; "
    "total %.1f s\n",
    bank_kills, loyalty_kills, static_cast<unsigned long long>(commands),
    static_cast<unsigned long long>(acknowledged), static_cast<unsigned long long>(refused),
    static_cast<unsigned long long>(unknown), static_cast<unsigned long long>(unknown_applied),
    static_cast<unsigned long long>(l.retries.load()), credit_ids.size(),
    static_cast<long long>(points), static_cast<unsigned long long>(stream.messages()),
    stream_duplicates, static_cast<long long>(loyalty_duplicates),
    std::chrono::duration<double>(load_ended - began).count(), catch_up, seconds_since(began));
  std::fflush(stdout);
  CHECK(bank_kills >= 3);
  CHECK(loyalty_kills >= 3);
  logs.passed = wrong_members == 0;
}

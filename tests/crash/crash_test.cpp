// crash_test: the kill -9 loop against annals-bank.
//
// Starts the real annals-bank binary on a fresh journal, opens accounts with an initial
// deposit each, and runs concurrent clients (one thread and one keep-alive connection each)
// that send a random mix of deposits, withdrawals and transfers. Every command carries a
// unique Idempotency-Key; a transfer is keyed by its unique id, which is also sent as its
// Idempotency-Key. Each client records every command and its fate: acknowledged (a 2xx
// reply), refused (a business error such as insufficient_funds) or, while it lasts, unknown
// (a connection error, a timeout or a 5xx, which is what a kill produces).
//
// At random moments (0.2 to 2 s into the load) the service is SIGKILLed and restarted on the
// same journal. Clients send every command whose answer they did not get again, with the
// same key, until the answer is definitive; no new command starts meanwhile. Once every
// client is idle and every transfer has left `pending` (the service resumes interrupted
// transfers in the background at start), the checks run:
//   (a) every acknowledged command is in the journal exactly once, at the version its reply
//       named, and no refused command is; each transfer left one debit and one credit
//       (completed), a debit and a refund, or nothing (compensated); every event belongs to
//       a command that was sent;
//   (b) every account's state (GET /accounts/{id}) equals the fold of its events, and no
//       balance is negative after any event;
//   (c) every balance equals what the acknowledged commands and the settled transfers imply,
//       so the total equals acknowledged deposits minus acknowledged withdrawals, and every
//       transfer ended completed or compensated;
//   (d) the balances and statement read models, read with ?fresh=1, hold each event exactly
//       once: the rows equal the aggregates, the statement lines equal the events;
//   (e) the search index (GET /search, the Xapian projection) finds every account of the
//       balances read model with the same owner and status, and nothing else, both read at
//       the journal's head.
// The loop ends after --kills kills or when --seconds have passed since it began, whichever
// comes first (a loop cut short by the time bound is reported, not failed). Then the service
// is stopped with SIGTERM (it must exit 0), started again, and everything is checked once
// more, together with the own log of every transfer a kill interrupted and of a sample of
// the others.
//
//   crash_test [--kills N] [--seconds S] [--seed N] [--accounts N] [--clients N]
//              [--transfer-retry-fallback] [--quiet]
//
// Defaults: 20 kills, 150 s, a random seed, 40 accounts, 256 clients. A retried command
// answered with 500 five times in a row fails the run; with --transfer-retry-fallback a
// retried transfer answered with 500 is instead looked up with GET /transfers/{id}, and
// counts as acknowledged when it exists (its fate is then checked like any other).
//
// The seed fixes the commands every client sends and the kill delays; the interleaving of
// the threads is the system's. Exit status: 0 when every check passed, 1 on the first failed
// check (the message names the account, key or sequence number, what was expected and what
// was found; the journal is copied aside), 2 on a usage error.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include "service/http_client.hpp"
#include "service/service_process.hpp"

namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using header_list = std::vector<std::pair<std::string, std::string>>;

// ---------------------------------------------------------------------------------------
// Failures and small helpers

/// A failed check; the message says what was expected and what was found.
struct check_failed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& what) {
  throw check_failed{what};
}

double seconds_since(steady::time_point t) {
  return std::chrono::duration<double>(steady::now() - t).count();
}

std::string fixed(double v, int digits = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string num_text(std::uint64_t v) {
  return std::to_string(v);
}

// The body of a reply, shortened for a message.
std::string excerpt(std::string_view body, std::size_t max = 400) {
  std::string s{body.substr(0, std::min(body.size(), max))};
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
    s.pop_back();
  if (body.size() > max)
    s += "...";
  return s;
}

std::optional<json::object> parse_object(std::string_view text) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object())
    return std::nullopt;
  return std::move(v.as_object());
}

std::int64_t int_field(const json::object& o, std::string_view key, std::string_view where) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_int64())
    fail(std::string{where} + ": field '" + std::string{key} + "' is missing or not an integer in "
         + excerpt(json::serialize(o)));
  return v->as_int64();
}

std::string text_field(const json::object& o, std::string_view key, std::string_view where) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_string())
    fail(std::string{where} + ": field '" + std::string{key} + "' is missing or not a string in "
         + excerpt(json::serialize(o)));
  return std::string{v->as_string()};
}

// A string field that may be absent ("" then).
std::string optional_text(const json::object& o, std::string_view key, std::string_view where) {
  const auto* v = o.if_contains(key);
  if (v == nullptr)
    return {};
  if (!v->is_string())
    fail(std::string{where} + ": field '" + std::string{key} + "' is not a string in "
         + excerpt(json::serialize(o)));
  return std::string{v->as_string()};
}

const json::array& array_field(const json::object& o, std::string_view key,
                               std::string_view where) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_array())
    fail(std::string{where} + ": field '" + std::string{key} + "' is missing or not an array in "
         + excerpt(json::serialize(o)));
  return v->as_array();
}

// ---------------------------------------------------------------------------------------
// Options

struct options {
  int kills = 20;
  double seconds = 150;
  std::uint64_t seed = 0;
  int accounts = 40;
  int clients = 256;
  bool transfer_retry_fallback = false;
  bool quiet = false;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "crash_test: %s\n"
               "usage: crash_test [--kills N] [--seconds S] [--seed N] [--accounts N]"
               " [--clients N] [--transfer-retry-fallback] [--quiet]\n",
               why.c_str());
  std::exit(2);
}

std::uint64_t parse_number(std::string_view flag, const char* text, std::uint64_t min,
                           std::uint64_t max) {
  char* end = nullptr;
  errno = 0;
  auto v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
    usage(std::string{flag} + " needs a number in " + num_text(min) + ".." + num_text(max));
  return v;
}

options parse_options(int argc, char** argv) {
  options o;
  o.seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        usage(std::string{a} + " needs a value");
      return argv[++i];
    };
    if (a == "--kills")
      o.kills = static_cast<int>(parse_number(a, value(), 0, 100000));
    else if (a == "--seconds")
      o.seconds = static_cast<double>(parse_number(a, value(), 1, 86400));
    else if (a == "--seed")
      o.seed = parse_number(a, value(), 0, UINT64_MAX);
    else if (a == "--accounts")
      o.accounts = static_cast<int>(parse_number(a, value(), 2, 1000));
    else if (a == "--clients")
      o.clients = static_cast<int>(parse_number(a, value(), 1, 2000));
    else if (a == "--transfer-retry-fallback")
      o.transfer_retry_fallback = true;
    else if (a == "--quiet")
      o.quiet = true;
    else if (a == "--help" || a == "-h")
      usage("the kill -9 loop against annals-bank");
    else
      usage("unknown argument " + std::string{a});
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// Commands and their fates

enum class kind : std::uint8_t { deposit, withdraw, transfer };
enum class fate : std::uint8_t { unknown, acknowledged, refused };

const char* kind_name(kind k) {
  switch (k) {
    case kind::deposit:
      return "deposit";
    case kind::withdraw:
      return "withdrawal";
    case kind::transfer:
      return "transfer";
  }
  return "?";
}

/// One command as a client sent it, and what became of it.
struct command {
  kind what = kind::deposit;
  std::string key; // the Idempotency-Key; a transfer's id
  int account = 0; // the account; a transfer's source
  int target = -1; // a transfer's target; -1: an account that was never opened
  std::int64_t amount = 0;
  fate outcome = fate::unknown;
  int attempts = 0;               // requests sent for it
  int unknown_answers = 0;        // attempts without a definitive answer
  int server_errors = 0;          // 500 answers in a row
  std::int64_t reply_version = 0; // acknowledged deposit or withdrawal: the reply's version
  std::int64_t reply_balance = 0; // ... and balance
  std::string reply_status;       // transfer: the reply's status; refused: the error code
  bool known_by_lookup = false;   // transfer: acknowledged through GET or already_exists
  bool already_existed = false;   // transfer: a retry was answered with already_exists
  std::string last_problem;       // the latest answer that was not definitive
  std::string final_status;       // transfer: completed or compensated, once settled
  bool debited = false;           // transfer: the settled state's flag
  bool state_known = false;       // transfer: `debited` was read from GET /transfers/{id}
};

// ---------------------------------------------------------------------------------------
// What the clients and the controller share

struct control {
  std::mutex mtx;
  std::condition_variable wake;    // clients: accepting, generation or stopping changed
  std::condition_variable changed; // controller: parked or fatal changed
  bool accepting = false;          // new commands may start
  bool stopping = false;
  unsigned short port = 0;
  std::uint64_t generation = 0; // bumped by every (re)start
  int parked = 0;               // clients idle without a command
  std::string fatal;            // the first problem a client could not accept
  std::atomic<int> in_flight{0};
  std::atomic<std::uint64_t> retries{0}; // command requests after the first
};

struct client_state {
  int index = 0;
  std::mt19937_64 rng;
  std::deque<command> commands; // stable addresses; read by the controller while parked
  std::optional<service::http::client> http;
  unsigned short http_port = 0;
  std::uint64_t counter = 0;
};

// One event as the events route lists it.
struct event_row {
  std::uint64_t seq = 0;
  std::uint64_t offset = 0;
  std::string type;
  std::int64_t cents = 0;
  std::string owner;
  std::string command_id;
  std::string correlation_id;
};

struct totals {
  int kills = 0;
  int restarts = 0;
  int server_kills = 0; // nats-servers killed (JetStream build only)
  std::uint64_t rounds = 0;
  std::uint64_t checks = 0;
  std::uint64_t events_verified = 0;
  std::vector<int> in_flight_at_kill;
  // Per cycle, the commands the service had decided ahead of its journal (pipelined: on
  // state holding events not yet committed) by the time of the kill, from its /metrics;
  // empty where /metrics did not answer in time.
  std::vector<std::optional<std::uint64_t>> pipelined_at_kill;
};

constexpr std::chrono::milliseconds request_timeout{20'000};
constexpr std::chrono::seconds settle_bound{60};
constexpr std::chrono::seconds park_bound{90};
constexpr std::chrono::seconds read_bound{60};
constexpr std::int64_t initial_deposit = 50'000;
constexpr std::uint64_t events_page = 500;
constexpr std::size_t balances_page = 16;
constexpr const char* never_opened = "acc-never-opened";
constexpr std::uint64_t transfer_log_sample = 8;

// ---------------------------------------------------------------------------------------
// The driver

class driver {
public:
  explicit driver(options o) : opts_(o), rng_(o.seed) {
    for (int i = 0; i < opts_.accounts; ++i) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "acc-%03d", i);
      ids_.emplace_back(buf);
    }
  }

  ~driver() {
    stop_clients();
  }

  driver(const driver&) = delete;
  driver& operator=(const driver&) = delete;

  int run() {
    started_ = steady::now();
    try {
      svc_.emplace();
      publish_port(svc_->port());
      setup();
      start_clients();
      wait_parked("the clients to start");
      check_round("after setup", false);
      auto loop_start = steady::now();
      while (totals_.kills < opts_.kills && seconds_since(loop_start) < opts_.seconds)
        cycle();
      bool time_ran_out = totals_.kills < opts_.kills;
      const auto& pipelined = totals_.pipelined_at_kill;
      auto read = std::count_if(pipelined.begin(), pipelined.end(), [](auto v) { return !!v; });
      if (read > 0
          && std::none_of(pipelined.begin(), pipelined.end(), [](auto v) { return v && *v > 0; }))
        fail("no cycle had decided a command ahead of the journal before its kill (/metrics read "
             "in "
             + std::to_string(read) + " cycles): the kills never met a pipeline in flight");
      final_round();
      stop_clients();
      summary(time_ran_out);
      return 0;
    } catch (const std::exception& e) {
      return failed(e.what());
    }
  }

private:
  // ---- the service and the clients --------------------------------------------------

  void publish_port(unsigned short port) {
    {
      std::lock_guard guard{ctl_.mtx};
      ctl_.port = port;
      ++ctl_.generation;
    }
    ctl_.wake.notify_all();
  }

  void start_clients() {
    for (int i = 0; i < opts_.clients; ++i) {
      auto cs = std::make_unique<client_state>();
      cs->index = i;
      cs->rng.seed(opts_.seed * 1000003ULL + static_cast<std::uint64_t>(i) + 1);
      clients_.push_back(std::move(cs));
    }
    for (auto& cs : clients_)
      threads_.emplace_back([this, c = cs.get()] { client_main(*c); });
  }

  void stop_clients() {
    {
      std::lock_guard guard{ctl_.mtx};
      ctl_.stopping = true;
    }
    ctl_.wake.notify_all();
    for (auto& t : threads_)
      if (t.joinable())
        t.join();
  }

  void report_fatal(const std::string& what) {
    {
      std::lock_guard guard{ctl_.mtx};
      if (ctl_.fatal.empty())
        ctl_.fatal = what;
      ctl_.stopping = true;
    }
    ctl_.wake.notify_all();
    ctl_.changed.notify_all();
  }

  void client_main(client_state& cs) {
    try {
      for (;;) {
        {
          std::unique_lock lk{ctl_.mtx};
          if (!ctl_.accepting && !ctl_.stopping) {
            ++ctl_.parked;
            ctl_.changed.notify_all();
            ctl_.wake.wait(lk, [this] { return ctl_.accepting || ctl_.stopping; });
            --ctl_.parked;
          }
          if (ctl_.stopping)
            return;
        }
        cs.commands.push_back(make_command(cs));
        if (!execute(cs, cs.commands.back()))
          return;
      }
    } catch (const std::exception& e) {
      report_fatal(e.what());
    }
  }

  command make_command(client_state& cs) {
    auto uniform = [&cs](std::int64_t lo, std::int64_t hi) {
      return std::uniform_int_distribution<std::int64_t>{lo, hi}(cs.rng);
    };
    auto n = std::to_string(cs.index) + "-" + std::to_string(++cs.counter);
    command c;
    auto roll = uniform(0, 99);
    c.account = static_cast<int>(uniform(0, opts_.accounts - 1));
    if (roll < 40) {
      c.what = kind::deposit;
      c.key = "dep-" + n;
      c.amount = uniform(1, 6'000);
    } else if (roll < 80) {
      c.what = kind::withdraw;
      c.key = "wd-" + n;
      c.amount = uniform(1, 6'000);
    } else {
      c.what = kind::transfer;
      c.key = "tr-" + n;
      c.amount = uniform(1, 6'000);
      if (uniform(0, 99) < 4) {
        c.target = -1; // the credit is refused: the transfer refunds
      } else {
        c.target = static_cast<int>(uniform(0, opts_.accounts - 2));
        if (c.target >= c.account)
          ++c.target;
      }
    }
    return c;
  }

  std::string target_id(const command& c) const {
    return c.target < 0 ? std::string{never_opened} : ids_[static_cast<std::size_t>(c.target)];
  }

  std::string describe(const command& c) const {
    std::string s = std::string{kind_name(c.what)} + " " + c.key + " (" + std::to_string(c.amount)
                    + " cents, " + ids_[static_cast<std::size_t>(c.account)];
    if (c.what == kind::transfer)
      s += " -> " + target_id(c);
    s += ", " + std::to_string(c.attempts) + " attempt(s)";
    if (c.outcome == fate::acknowledged && c.what != kind::transfer)
      s += ", reply version " + std::to_string(c.reply_version) + " balance "
           + std::to_string(c.reply_balance);
    if (c.what == kind::transfer && !c.reply_status.empty())
      s += ", reply " + c.reply_status;
    return s + ")";
  }

  // Sends `c` until the answer is definitive. Returns false when the run is stopping.
  bool execute(client_state& cs, command& c) {
    std::string target;
    std::string body;
    header_list headers{{"Idempotency-Key", c.key}};
    const auto& account = ids_[static_cast<std::size_t>(c.account)];
    switch (c.what) {
      case kind::deposit:
        target = "/accounts/" + account + "/deposit";
        body = json::serialize(json::object{{"amount", c.amount}});
        break;
      case kind::withdraw:
        target = "/accounts/" + account + "/withdraw";
        body = json::serialize(json::object{{"amount", c.amount}});
        break;
      case kind::transfer:
        target = "/transfers";
        body = json::serialize(json::object{
          {"id", c.key}, {"from", account}, {"to", target_id(c)}, {"amount", c.amount}});
        break;
    }
    auto backoff = 25ms;
    for (;;) {
      unsigned short port = 0;
      std::uint64_t generation = 0;
      {
        std::lock_guard guard{ctl_.mtx};
        if (ctl_.stopping)
          return false;
        port = ctl_.port;
        generation = ctl_.generation;
      }
      if (!cs.http || cs.http_port != port) {
        cs.http.emplace("127.0.0.1", port);
        cs.http_port = port;
      }
      if (++c.attempts > 1)
        ctl_.retries.fetch_add(1);
      ctl_.in_flight.fetch_add(1);
      auto r = cs.http->request("POST", target, body, headers, request_timeout);
      ctl_.in_flight.fetch_sub(1);
      if (r.ok()) {
        if (judge(cs, c, *r))
          return true;
      } else {
        c.last_problem = r.error();
      }
      ++c.unknown_answers;
      std::unique_lock lk{ctl_.mtx};
      ctl_.wake.wait_for(
        lk, backoff, [this, generation] { return ctl_.generation != generation || ctl_.stopping; });
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, 400ms);
    }
  }

  // Records a definitive answer and returns true; returns false for an answer that leaves
  // the command's fate open (5xx). An answer no command of this test may get fails the run.
  bool judge(client_state& cs, command& c, const service::http::client_response& r) {
    auto where = [&] {
      return describe(c) + ": answer " + std::to_string(r.status) + " " + excerpt(r.body);
    };
    if (r.status >= 500) {
      c.last_problem = std::to_string(r.status) + " " + excerpt(r.body);
      if (r.status != 500) {
        c.server_errors = 0;
        return false;
      }
      if (c.what == kind::transfer && opts_.transfer_retry_fallback && lookup_transfer(cs, c))
        return true;
      if (++c.server_errors >= 5)
        fail("a retried command never gets a definitive answer: " + where() + " (500 on "
             + std::to_string(c.server_errors) + " attempts in a row, " + std::to_string(c.attempts)
             + " attempts in all, each with Idempotency-Key " + c.key + ")");
      return false;
    }
    c.server_errors = 0;
    auto body = parse_object(r.body);
    if (!body)
      fail("the body is not a JSON object: " + where());
    if (r.status >= 200 && r.status < 300) {
      if (c.what == kind::transfer) {
        if (r.status != 202)
          fail("expected 202 for a transfer: " + where());
        if (text_field(*body, "id", where()) != c.key)
          fail("the reply names another transfer: " + where());
        auto st = text_field(*body, "status", where());
        if (st != "completed" && st != "compensated" && st != "pending")
          fail("unknown transfer status: " + where());
        c.reply_status = st;
      } else {
        if (r.status != 200)
          fail("expected 200 for a deposit or withdrawal: " + where());
        if (text_field(*body, "id", where()) != ids_[static_cast<std::size_t>(c.account)])
          fail("the reply names another account: " + where());
        c.reply_version = int_field(*body, "version", where());
        c.reply_balance = int_field(*body, "balance", where());
      }
      c.outcome = fate::acknowledged;
      return true;
    }
    auto code = optional_text(*body, "error", where());
    if (c.what == kind::withdraw && r.status == 409 && code == "insufficient_funds") {
      c.outcome = fate::refused;
      c.reply_status = code;
      return true;
    }
    if (c.what == kind::transfer && r.status == 409 && code == "already_exists" && c.attempts > 1) {
      // An earlier attempt created the transfer; its fate comes from GET /transfers/{id}.
      c.outcome = fate::acknowledged;
      c.known_by_lookup = true;
      c.already_existed = true;
      return true;
    }
    fail("unexpected answer: " + where());
  }

  // Asks GET /transfers/{id} whether an earlier attempt created the transfer; if so, it is
  // acknowledged and its fate comes from that state.
  bool lookup_transfer(client_state& cs, command& c) {
    auto r = cs.http->request("GET", "/transfers/" + c.key, {}, {}, request_timeout);
    if (!r.ok() || r->status != 200)
      return false;
    auto body = parse_object(r->body);
    if (!body)
      return false;
    c.outcome = fate::acknowledged;
    c.known_by_lookup = true;
    return true;
  }

  // Waits until every client is idle without a command; fails, naming the commands still
  // open, when that takes longer than the bound.
  void wait_parked(const std::string& what) {
    std::unique_lock lk{ctl_.mtx};
    bool done = ctl_.changed.wait_for(
      lk, park_bound, [this] { return ctl_.parked == opts_.clients || !ctl_.fatal.empty(); });
    if (!ctl_.fatal.empty())
      fail(ctl_.fatal);
    if (done)
      return;
    lk.unlock();
    svc_->kill9();
    stop_clients();
    std::string open;
    int n = 0;
    for (auto& cs : clients_)
      for (auto& c : cs->commands)
        if (c.outcome == fate::unknown && n++ < 10)
          open += "\n  " + describe(c) + ", last answer: " + c.last_problem;
    fail("waiting for " + what + ": " + std::to_string(n)
         + " command(s) still without a definitive answer after "
         + std::to_string(park_bound.count()) + " s:" + open);
  }

  // ---- setup and the loop -------------------------------------------------------------

  service::http::client& checker() {
    if (!check_http_ || check_port_ != svc_->port()) {
      check_http_.emplace("127.0.0.1", svc_->port());
      check_port_ = svc_->port();
    }
    return *check_http_;
  }

  void setup() {
    auto& http = checker();
    for (const auto& id : ids_) {
      auto owner = "Owner " + id;
      auto r = http.request("POST", "/accounts",
                            json::serialize(json::object{{"id", id}, {"owner", owner}}),
                            {{"Idempotency-Key", "open-" + id}}, request_timeout);
      if (!r.ok() || r->status != 201)
        fail("opening " + id + ": expected 201, got "
             + (r.ok() ? std::to_string(r->status) + " " + excerpt(r->body) : r.error()));
    }
    client_state self;
    self.index = -1;
    for (int i = 0; i < opts_.accounts; ++i) {
      command c;
      c.what = kind::deposit;
      c.key = "init-" + ids_[static_cast<std::size_t>(i)];
      c.account = i;
      c.amount = initial_deposit;
      setup_commands_.push_back(c);
      if (!execute(self, setup_commands_.back())
          || setup_commands_.back().outcome != fate::acknowledged)
        fail("the initial deposit " + c.key + " was not acknowledged");
    }
    say("setup: " + std::to_string(opts_.accounts) + " accounts opened with "
        + fixed(static_cast<double>(initial_deposit) / 100, 2) + " each");
  }

  void cycle() {
    auto delay = std::chrono::milliseconds{std::uniform_int_distribution<int>{200, 2000}(rng_)};
    auto load_start = steady::now();
    {
      std::lock_guard guard{ctl_.mtx};
      ctl_.accepting = true;
    }
    ctl_.wake.notify_all();
    load_and_maybe_kill_a_server(delay);
    totals_.pipelined_at_kill.push_back(pipelined_so_far());
    auto in_flight = ctl_.in_flight.load();
    auto retries_before = ctl_.retries.load();
    svc_->kill9();
    ++totals_.kills;
    totals_.in_flight_at_kill.push_back(in_flight);
    auto loaded = seconds_since(load_start);
    {
      std::lock_guard guard{ctl_.mtx};
      ctl_.accepting = false;
    }
    auto restart_start = steady::now();
    start_killed_server();
    svc_->restart();
    ++totals_.restarts;
    publish_port(svc_->port());
    auto restart_took = seconds_since(restart_start);
    auto retry_start = steady::now();
    wait_parked("the retries after kill " + std::to_string(totals_.kills));
    auto retries_took = seconds_since(retry_start);
    auto retries = ctl_.retries.load() - retries_before;
    auto settle_start = steady::now();
    auto settled = settle();
    auto settle_took = seconds_since(settle_start);
    auto check_start = steady::now();
    auto events = check_round("after kill " + std::to_string(totals_.kills), false);
    say("kill " + std::to_string(totals_.kills) + " after " + fixed(loaded, 2) + " s of load, "
        + std::to_string(in_flight) + " in flight; restart " + fixed(restart_took, 2)
        + " s; retries answered in " + fixed(retries_took, 2) + " s (" + num_text(retries)
        + " retries); " + std::to_string(settled) + " transfer(s) settled in "
        + fixed(settle_took, 2) + " s; checked " + num_text(events) + " events in "
        + fixed(seconds_since(check_start), 2) + " s");
  }

#ifdef ANNALS_SERVICE_ON_JETSTREAM
  // On a JetStream cluster every other cycle also kills one nats-server (each in turn)
  // half-way through the load, which goes on meanwhile; `start_killed_server` starts it
  // again before the service restarts.
  void load_and_maybe_kill_a_server(std::chrono::milliseconds delay) {
    if (totals_.kills % 2 != 0) {
      load_for(delay);
      return;
    }
    load_for(delay / 2);
    auto& cluster = service_test::jetstream_cluster();
    downed_ = static_cast<std::size_t>(totals_.kills / 2) % cluster.size();
    cluster.server(*downed_).kill9();
    ++totals_.server_kills;
    load_for(delay - delay / 2);
  }

  void start_killed_server() {
    if (!downed_)
      return;
    auto& server = service_test::jetstream_cluster().server(*downed_);
    downed_.reset();
    server.start();
    if (!server.wait_healthy())
      fail("nats-server " + server.name() + " did not come back after its kill:\n" + server.log());
  }

  std::optional<std::size_t> downed_; // the nats-server killed in this cycle
#else
  void load_and_maybe_kill_a_server(std::chrono::milliseconds delay) {
    load_for(delay);
  }
  void start_killed_server() {}
#endif

  // Lets the clients run for `d`; fails at once on a client's fatal error.
  void load_for(std::chrono::milliseconds d) {
    std::unique_lock lk{ctl_.mtx};
    ctl_.changed.wait_for(lk, d, [this] { return !ctl_.fatal.empty(); });
    if (!ctl_.fatal.empty())
      fail(ctl_.fatal);
  }

  void final_round() {
    auto code = svc_->terminate();
    if (code != 0)
      fail("SIGTERM: annals-bank exited with " + std::to_string(code) + " (expected 0)");
    svc_->restart();
    ++totals_.restarts;
    publish_port(svc_->port());
    settle();
    auto events = check_round("after SIGTERM and restart", true);
    say("final: SIGTERM exit 0, restart, checked " + num_text(events) + " events and "
        + num_text(transfer_logs_checked_) + " transfers' own logs");
  }

  std::vector<command*> all_commands() {
    std::vector<command*> out;
    for (auto& c : setup_commands_)
      out.push_back(&c);
    for (auto& cs : clients_)
      for (auto& c : cs->commands)
        out.push_back(&c);
    return out;
  }

  // ---- reading --------------------------------------------------------------------------

  // The service's count of commands decided ahead of the journal since it started, read
  // under load just before a kill; nothing if /metrics does not answer within 2 s (it reads
  // every projection's status, which a networked journal under this load may not give in
  // time; the kill waits for it no longer).
  std::optional<std::uint64_t> pipelined_so_far() {
    const std::string name = "\nannals_commands_pipelined_total ";
    auto r = checker().request("GET", "/metrics", {}, {}, std::chrono::milliseconds{2000});
    if (!r.ok() || r->status != 200)
      return std::nullopt;
    auto at = r->body.find(name);
    if (at == std::string::npos)
      fail("GET /metrics has no " + name.substr(1) + "counter: " + excerpt(r->body));
    return std::strtoull(r->body.c_str() + at + name.size(), nullptr, 10);
  }

  // GET `target`, expecting `status` and a JSON object. A connection error or a 503 (e.g. a
  // read model still catching up) is asked again within a bound; any other answer fails.
  json::object get_object(const std::string& target, unsigned status = 200) {
    auto deadline = steady::now() + read_bound;
    for (;;) {
      auto r = checker().request("GET", target, {}, {}, request_timeout);
      std::string problem;
      if (r.ok()) {
        if (r->status == status) {
          auto o = parse_object(r->body);
          if (!o)
            fail("GET " + target + ": the body is not a JSON object: " + excerpt(r->body));
          return std::move(*o);
        }
        problem = std::to_string(r->status) + " " + excerpt(r->body);
        if (r->status != 503)
          fail("GET " + target + ": expected " + std::to_string(status) + ", got " + problem);
      } else {
        problem = r.error();
      }
      if (steady::now() >= deadline)
        fail("GET " + target + ": no answer " + std::to_string(status) + " within "
             + std::to_string(read_bound.count()) + " s; the latest: " + problem);
      std::this_thread::sleep_for(50ms);
    }
  }

  std::vector<event_row> read_events(const std::string& account) {
    std::vector<event_row> out;
    std::uint64_t from = 1;
    for (;;) {
      auto target = "/accounts/" + account + "/events?from=" + num_text(from)
                    + "&limit=" + num_text(events_page);
      auto page = get_object(target);
      const auto& rows = array_field(page, "events", target);
      for (const auto& v : rows) {
        if (!v.is_object())
          fail(target + ": an event is not an object");
        const auto& o = v.as_object();
        event_row e;
        e.seq = static_cast<std::uint64_t>(int_field(o, "seq", target));
        e.offset = static_cast<std::uint64_t>(int_field(o, "offset", target));
        e.type = text_field(o, "type", target);
        e.command_id = optional_text(o, "command_id", target);
        e.correlation_id = optional_text(o, "correlation_id", target);
        const auto* data = o.if_contains("data");
        if (data == nullptr || !data->is_object())
          fail(target + ": event " + num_text(e.seq)
               + " has no JSON data: " + excerpt(json::serialize(o)));
        const auto& d = data->as_object();
        auto where = account + " seq " + num_text(e.seq);
        if (e.type == "bank.deposited" || e.type == "bank.withdrawn")
          e.cents = int_field(d, "cents", where);
        else if (e.type == "bank.opened")
          e.owner = text_field(d, "owner", where);
        out.push_back(std::move(e));
      }
      if (rows.size() < events_page)
        return out;
      from += rows.size();
    }
  }

  // ---- transfers ------------------------------------------------------------------------

  // Learns the final status of every acknowledged transfer that does not have one yet: from
  // its reply when the first attempt was answered with a final status, otherwise from GET
  // /transfers/{id}, polled (bounded) until it has left `pending`. One transfer is polled at a
  // time, so the polling does not compete with the service resuming them. Returns how many
  // were read.
  std::size_t settle() {
    std::vector<command*> open;
    for (auto* c : all_commands()) {
      if (c->what != kind::transfer || !c->final_status.empty())
        continue;
      if (c->outcome != fate::acknowledged)
        fail("after the retries, " + describe(*c) + " has no definitive answer");
      bool final_reply = c->reply_status == "completed" || c->reply_status == "compensated";
      if (final_reply && c->unknown_answers == 0 && !c->known_by_lookup)
        c->final_status = c->reply_status;
      else
        open.push_back(c);
    }
    auto deadline = steady::now() + settle_bound;
    for (std::size_t i = 0; i < open.size(); ++i) {
      auto* c = open[i];
      for (;;) {
        auto st = transfer_state(*c);
        auto status = text_field(st, "status", c->key);
        if (status != "pending") {
          c->final_status = status;
          c->debited = st.at("debited").as_bool();
          c->state_known = true;
          break;
        }
        if (steady::now() >= deadline)
          fail(std::to_string(open.size() - i) + " transfer(s) still pending after "
               + std::to_string(settle_bound.count()) + " s, e.g. " + describe(*c) + ": "
               + json::serialize(st));
        std::this_thread::sleep_for(20ms);
      }
    }
    return open.size();
  }

  // GET /transfers/{id}, checked against what was sent.
  json::object transfer_state(const command& c) {
    auto st = get_object("/transfers/" + c.key);
    auto where = "GET /transfers/" + c.key;
    auto status = text_field(st, "status", where);
    if (status != "pending" && status != "completed" && status != "compensated")
      fail(where + ": unknown status in " + json::serialize(st));
    if (text_field(st, "from", where) != ids_[static_cast<std::size_t>(c.account)]
        || text_field(st, "to", where) != target_id(c)
        || int_field(st, "amount", where) != c.amount)
      fail(where + ": the state does not match " + describe(c) + ": " + json::serialize(st));
    const auto* debited = st.if_contains("debited");
    if (debited == nullptr || !debited->is_bool())
      fail(where + ": no boolean 'debited' in " + json::serialize(st));
    ++totals_.checks;
    return st;
  }

  // ---- the checks -----------------------------------------------------------------------

  template <class A, class B>
  void expect_equal(const A& expected, const B& got, const std::string& what) {
    ++totals_.checks;
    if (!(expected == got))
      fail(what + ": expected " + to_text(expected) + ", got " + to_text(got));
  }

  static std::string to_text(const std::string& s) {
    return "\"" + s + "\"";
  }
  static std::string to_text(const char* s) {
    return "\"" + std::string{s} + "\"";
  }
  template <class T>
  static std::string to_text(const T& v) {
    return std::to_string(v);
  }

  struct seen_info {
    int count = 0;
    std::uint64_t seq = 0;
    std::int64_t balance_after = 0;
  };

  struct step_counts {
    int debit = 0;
    int credit = 0;
    int refund = 0;
  };

  // Runs checks (a) to (d); `final` adds every transfer's state and log. Returns the number
  // of account events verified.
  std::uint64_t check_round(const std::string& when, bool final) {
    ++totals_.rounds;
    auto context = [&when](const std::string& s) { return when + ": " + s; };
    auto commands = all_commands();
    std::unordered_map<std::string, command*> by_key;
    for (auto* c : commands) {
      if (c->outcome == fate::unknown)
        fail(context("no definitive answer for " + describe(*c)));
      if (!by_key.emplace(c->key, c).second)
        fail(context("two commands share the key " + c->key));
    }

    // What the acknowledged commands imply for each account.
    auto n = static_cast<std::size_t>(opts_.accounts);
    std::vector<std::int64_t> expected(n, 0);
    std::int64_t expected_total = 0;
    for (auto* c : commands) {
      if (c->outcome != fate::acknowledged)
        continue;
      auto a = static_cast<std::size_t>(c->account);
      if (c->what == kind::deposit) {
        expected[a] += c->amount;
        expected_total += c->amount;
      } else if (c->what == kind::withdraw) {
        expected[a] -= c->amount;
        expected_total -= c->amount;
      } else if (c->final_status == "completed") {
        if (c->target < 0)
          fail(context(describe(*c) + " completed although its target was never opened"));
        expected[a] -= c->amount;
        expected[static_cast<std::size_t>(c->target)] += c->amount;
      } else if (c->final_status != "compensated") {
        fail(context(describe(*c) + " ended neither completed nor compensated: '" + c->final_status
                     + "'"));
      }
    }

    std::unordered_map<const command*, seen_info> seen;
    std::unordered_map<const command*, step_counts> steps;
    std::vector<std::vector<event_row>> events(n);
    std::vector<std::vector<std::int64_t>> running(n);
    std::vector<json::object> states(n);
    std::int64_t total = 0;
    std::uint64_t verified = 0;

    for (std::size_t i = 0; i < n; ++i) {
      const auto& id = ids_[i];
      events[i] = read_events(id);
      const auto& evs = events[i];
      std::int64_t balance = 0;
      std::uint64_t prev_offset = 0;
      for (std::size_t k = 0; k < evs.size(); ++k) {
        const auto& e = evs[k];
        auto at = id + " seq " + num_text(e.seq);
        expect_equal(static_cast<std::uint64_t>(k + 1), e.seq,
                     context(id + ": sequence number of event #" + std::to_string(k + 1)));
        if (e.offset <= prev_offset)
          fail(context(at + ": offset " + num_text(e.offset)
                       + " does not follow the previous event's offset " + num_text(prev_offset)));
        prev_offset = e.offset;
        if (k == 0) {
          expect_equal(std::string{"bank.opened"}, e.type, context(at + ": type"));
          expect_equal("Owner " + id, e.owner, context(at + ": owner"));
          expect_equal("open-" + id, e.command_id, context(at + ": command_id"));
          running[i].push_back(balance);
          continue;
        }
        if (e.type == "bank.deposited")
          balance += e.cents;
        else if (e.type == "bank.withdrawn")
          balance -= e.cents;
        else
          fail(context(at + ": unexpected event type " + e.type));
        running[i].push_back(balance);
        if (balance < 0)
          fail(context(at + ": the balance is negative (" + std::to_string(balance) + ") after "
                       + e.type + " " + std::to_string(e.cents) + " (command_id '" + e.command_id
                       + "')"));
        attribute(i, e, balance, by_key, seen, steps, context);
      }
      verified += evs.size();

      // (b) the aggregate equals the fold of its events.
      auto st = get_object("/accounts/" + id);
      auto where = context("GET /accounts/" + id);
      expect_equal(id, text_field(st, "id", where), where + " id");
      expect_equal("Owner " + id, text_field(st, "owner", where), where + " owner");
      expect_equal(std::string{"open"}, text_field(st, "status", where), where + " status");
      expect_equal(balance, int_field(st, "balance", where),
                   where + " balance vs the fold of its " + std::to_string(evs.size()) + " events");
      expect_equal(static_cast<std::int64_t>(evs.size()), int_field(st, "version", where),
                   where + " version vs the number of its events");
      // (c) and what the acknowledged commands and settled transfers imply.
      expect_equal(expected[i], balance,
                   context(id + ": balance implied by the acknowledged commands vs the journal"));
      total += balance;
      states[i] = std::move(st);
    }
    expect_equal(expected_total, total,
                 context("the total of all balances vs acknowledged deposits - withdrawals"));

    // (a) every acknowledged command exactly once, at the version its reply named.
    for (auto* c : commands) {
      if (c->what == kind::transfer) {
        check_transfer_steps(*c, steps[c], context);
        continue;
      }
      auto it = seen.find(c);
      int count = it == seen.end() ? 0 : it->second.count;
      if (c->outcome == fate::refused) {
        if (count != 0)
          fail(context("the refused " + describe(*c) + " has an event"));
        continue;
      }
      if (count == 0)
        fail(context("the acknowledged " + describe(*c) + " is not in the journal"));
      const auto& s = it->second;
      expect_equal(c->reply_version, static_cast<std::int64_t>(s.seq),
                   context(describe(*c) + ": its event's seq vs the version in its reply"));
      expect_equal(c->reply_balance, s.balance_after,
                   context(describe(*c) + ": the balance after its event vs its reply"));
    }

    check_read_models(events, running, states, context);

    auto health = get_object("/health");
    expect_equal(std::string{"ok"}, text_field(health, "status", "/health"),
                 context("GET /health status"));

    if (final)
      check_transfer_logs(commands, steps, context);
    totals_.events_verified += verified;
    return verified;
  }

  // Finds the command an account event belongs to and checks the event against it.
  template <class Context>
  void attribute(std::size_t i, const event_row& e, std::int64_t balance,
                 const std::unordered_map<std::string, command*>& by_key,
                 std::unordered_map<const command*, seen_info>& seen,
                 std::unordered_map<const command*, step_counts>& steps, const Context& context) {
    const auto& id = ids_[i];
    auto at = id + " seq " + num_text(e.seq) + " (" + e.type + " " + std::to_string(e.cents)
              + ", command_id '" + e.command_id + "')";
    static constexpr std::string_view prefix = "transfer:";
    if (e.command_id.compare(0, prefix.size(), prefix) == 0) {
      auto rest = e.command_id.substr(prefix.size());
      auto colon = rest.rfind(':');
      if (colon == std::string::npos)
        fail(context(at + ": a transfer step without a step name"));
      auto tid = rest.substr(0, colon);
      auto step = rest.substr(colon + 1);
      auto it = by_key.find(tid);
      if (it == by_key.end() || it->second->what != kind::transfer)
        fail(context(at + ": no transfer " + tid + " was sent"));
      const auto& c = *it->second;
      expect_equal("transfer:" + tid, e.correlation_id, context(at + ": correlation_id"));
      expect_equal(c.amount, e.cents, context(at + ": amount of " + describe(c)));
      auto& sc = steps[&c];
      const auto& from = ids_[static_cast<std::size_t>(c.account)];
      if (step == "debit") {
        expect_equal(from, id, context(at + ": the debit's account"));
        expect_equal(std::string{"bank.withdrawn"}, e.type, context(at + ": the debit's type"));
        ++sc.debit;
      } else if (step == "credit") {
        expect_equal(target_id(c), id, context(at + ": the credit's account"));
        expect_equal(std::string{"bank.deposited"}, e.type, context(at + ": the credit's type"));
        ++sc.credit;
      } else if (step == "refund") {
        expect_equal(from, id, context(at + ": the refund's account"));
        expect_equal(std::string{"bank.deposited"}, e.type, context(at + ": the refund's type"));
        ++sc.refund;
      } else {
        fail(context(at + ": unknown transfer step '" + step + "'"));
      }
      return;
    }
    auto it = by_key.find(e.command_id);
    if (it == by_key.end() || it->second->what == kind::transfer)
      fail(context(at + ": the event belongs to no command that was sent"));
    const auto& c = *it->second;
    if (!e.correlation_id.empty())
      fail(context(at + ": unexpected correlation_id '" + e.correlation_id + "'"));
    expect_equal(ids_[static_cast<std::size_t>(c.account)], id,
                 context(at + ": the account of " + describe(c)));
    expect_equal(std::string{c.what == kind::deposit ? "bank.deposited" : "bank.withdrawn"}, e.type,
                 context(at + ": the event type of " + describe(c)));
    expect_equal(c.amount, e.cents, context(at + ": the amount of " + describe(c)));
    auto& s = seen[&c];
    if (++s.count > 1)
      fail(context(at + ": " + describe(c) + " is applied twice: seq " + num_text(s.seq)
                   + " and seq " + num_text(e.seq)));
    s.seq = e.seq;
    s.balance_after = balance;
  }

  template <class Context>
  void check_transfer_steps(const command& c, const step_counts& s, const Context& context) {
    auto counts = "debit " + std::to_string(s.debit) + ", credit " + std::to_string(s.credit)
                  + ", refund " + std::to_string(s.refund);
    ++totals_.checks;
    if (c.final_status == "completed") {
      if (s.debit != 1 || s.credit != 1 || s.refund != 0)
        fail(context("the completed " + describe(c)
                     + " must have left one debit and one credit; the journal holds " + counts));
    } else {
      bool refunded = s.debit == 1 && s.credit == 0 && s.refund == 1;
      bool untouched = s.debit == 0 && s.credit == 0 && s.refund == 0;
      if (!refunded && !untouched)
        fail(context("the compensated " + describe(c)
                     + " must have left a debit and a refund, or nothing; the journal holds "
                     + counts));
    }
    if (c.state_known)
      expect_equal(c.debited, s.debit == 1,
                   context(describe(c) + ": 'debited' in its state vs a debit in the journal"));
  }

  // (d) the balances rows equal the aggregates; the statement lines equal the events.
  template <class Context>
  void check_read_models(const std::vector<std::vector<event_row>>& events,
                         const std::vector<std::vector<std::int64_t>>& running,
                         const std::vector<json::object>& states, const Context& context) {
    std::unordered_map<std::string, json::object> rows;
    std::string after;
    std::optional<std::int64_t> balances_offset;
    for (;;) {
      auto target = "/accounts?fresh=1&limit=" + num_text(balances_page)
                    + (after.empty() ? std::string{} : "&after=" + after);
      auto page = get_object(target);
      auto offset = int_field(page, "offset", target);
      if (balances_offset && *balances_offset != offset)
        fail(context(target + ": the balances read model moved from offset "
                     + std::to_string(*balances_offset) + " to " + std::to_string(offset)
                     + " while no command ran"));
      balances_offset = offset;
      const auto& list = array_field(page, "accounts", target);
      for (const auto& v : list) {
        if (!v.is_object())
          fail(context(target + ": a row is not an object"));
        auto id = text_field(v.as_object(), "id", target);
        if (!after.empty() && id <= after)
          fail(context(target + ": row " + id + " is out of order"));
        after = id;
        if (!rows.emplace(id, v.as_object()).second)
          fail(context(target + ": account " + id + " is listed twice"));
      }
      if (list.size() < balances_page)
        break;
    }
    expect_equal(ids_.size(), rows.size(), context("rows in the balances read model"));
#ifdef ANNALS_BANK_WITH_XAPIAN
    check_search(rows, balances_offset.value_or(-1), context);
#endif
    for (std::size_t i = 0; i < ids_.size(); ++i) {
      const auto& id = ids_[i];
      auto it = rows.find(id);
      if (it == rows.end())
        fail(context("the balances read model has no row for " + id));
      const auto& row = it->second;
      auto where = context("balances row " + id);
      for (const char* field : {"owner", "status"})
        expect_equal(text_field(states[i], field, where), text_field(row, field, where),
                     where + " " + field + " (aggregate vs read model)");
      for (const char* field : {"balance", "version"})
        expect_equal(int_field(states[i], field, where), int_field(row, field, where),
                     where + " " + field + " (aggregate vs read model)");

      auto target = "/accounts/" + id + "/statement?fresh=1";
      auto st = get_object(target);
      const auto& lines = array_field(st, "lines", target);
      const auto& evs = events[i];
      auto swhere = context("statement of " + id);
      expect_equal(evs.size(), lines.size(), swhere + ": lines vs events");
      for (std::size_t k = 0; k < lines.size(); ++k) {
        if (!lines[k].is_object())
          fail(swhere + ": line " + std::to_string(k + 1) + " is not an object");
        const auto& l = lines[k].as_object();
        const auto& e = evs[k];
        auto lw = swhere + " line " + std::to_string(k + 1) + " (event seq " + num_text(e.seq)
                  + ", command_id '" + e.command_id + "')";
        expect_equal(static_cast<std::int64_t>(e.seq), int_field(l, "seq", lw), lw + " seq");
        expect_equal(static_cast<std::int64_t>(e.offset), int_field(l, "offset", lw),
                     lw + " offset");
        auto kind_of = e.type == "bank.opened"      ? "opened"
                       : e.type == "bank.deposited" ? "deposit"
                                                    : "withdrawal";
        expect_equal(std::string{kind_of}, text_field(l, "kind", lw), lw + " kind");
        expect_equal(e.cents, int_field(l, "amount", lw), lw + " amount");
        expect_equal(running[i][k], int_field(l, "balance", lw), lw + " running balance");
        expect_equal(e.correlation_id, optional_text(l, "correlation_id", lw),
                     lw + " correlation_id");
      }
      if (!lines.empty())
        expect_equal(int_field(states[i], "balance", swhere),
                     int_field(lines.back().as_object(), "balance", swhere),
                     swhere + ": the last running balance vs the aggregate");
    }
  }

  // (e) the search index (GET /search, Xapian) finds every account of the balances read
  // model with the same owner and status, and nothing else; both read at the journal's
  // head. One query matches every owner ("Owner acc-NNN"); then each account's own name
  // finds that account alone.
  template <class Context>
  void check_search(const std::unordered_map<std::string, json::object>& rows,
                    std::int64_t balances_offset, const Context& context) {
    auto health = get_object("/health");
    const auto* journal = health.if_contains("journal");
    if (journal == nullptr || !journal->is_object())
      fail(context("GET /health: no journal object in " + excerpt(json::serialize(health))));
    auto head = int_field(journal->as_object(), "head_offset", "/health journal");
    expect_equal(head, balances_offset, context("the balances read model's offset vs the head"));
    const std::string all = "/search?owner=owner&limit=1000&fresh=1";
    auto found = get_object(all);
    expect_equal(head, int_field(found, "offset", all),
                 context(all + ": the search index's offset vs the head"));
    std::unordered_map<std::string, int> seen;
    for (const auto& v : array_field(found, "hits", all)) {
      if (!v.is_object())
        fail(context(all + ": a hit is not an object"));
      const auto& hit = v.as_object();
      auto id = text_field(hit, "id", all);
      auto where = context(all + ": hit " + id);
      if (++seen[id] > 1)
        fail(where + " is listed twice");
      auto row = rows.find(id);
      if (row == rows.end())
        fail(where + " is not in the balances read model");
      expect_equal(text_field(row->second, "owner", where), text_field(hit, "owner", where),
                   where + " owner (balances vs search)");
      const auto* closed = hit.if_contains("closed");
      if (closed == nullptr || !closed->is_bool())
        fail(where + ": field 'closed' is missing or not a boolean");
      expect_equal(text_field(row->second, "status", where) == "closed", closed->as_bool(),
                   where + " closed (balances status vs search)");
      ++totals_.checks;
    }
    for (const auto& [id, row] : rows)
      if (seen.find(id) == seen.end())
        fail(context(all + ": account " + id + " of the balances read model is not found"));
    for (const auto& [id, row] : rows) {
      auto owner = text_field(row, "owner", "balances row " + id);
      std::string query;
      for (char ch : owner)
        query += ch == ' ' ? std::string{"%20"} : std::string(1, ch);
      auto target = "/search?fresh=1&owner=" + query;
      auto one = get_object(target);
      const auto& hits = array_field(one, "hits", target);
      if (hits.size() != 1 || !hits[0].is_object()
          || text_field(hits[0].as_object(), "id", target) != id)
        fail(context(target + ": expected account " + id + " alone, got "
                     + excerpt(json::serialize(hits))));
      ++totals_.checks;
    }
  }

  // A transfer's state and its own log agree with what the accounts' logs hold. Checked for
  // every transfer a kill interrupted and for one in `transfer_log_sample` of the others.
  template <class Context>
  void check_transfer_logs(const std::vector<command*>& commands,
                           std::unordered_map<const command*, step_counts>& steps,
                           const Context& context) {
    std::mt19937_64 pick{opts_.seed ^ 0x5eedULL};
    for (auto* c : commands) {
      if (c->what != kind::transfer)
        continue;
      bool interrupted = c->attempts > 1 || c->known_by_lookup || c->state_known;
      if (!interrupted && pick() % transfer_log_sample != 0)
        continue;
      ++transfer_logs_checked_;
      auto st = transfer_state(*c);
      auto where = context("transfer " + c->key);
      expect_equal(c->final_status, text_field(st, "status", where),
                   where + ": status now vs when it settled");
      const auto& s = steps[c];
      c->debited = st.at("debited").as_bool();
      c->state_known = true;
      expect_equal(s.debit == 1, c->debited,
                   where + ": 'debited' vs a debit in "
                     + ids_[static_cast<std::size_t>(c->account)]);
      auto log = get_object("/transfers/" + c->key + "/events");
      const auto& rows = array_field(log, "events", where);
      std::unordered_map<std::string, int> count;
      for (std::size_t k = 0; k < rows.size(); ++k) {
        const auto& o = rows[k].as_object();
        auto type = text_field(o, "type", where);
        expect_equal(static_cast<std::int64_t>(k + 1), int_field(o, "seq", where),
                     where + ": seq of its event #" + std::to_string(k + 1));
        if (k == 0) {
          expect_equal(std::string{"bank.transfer_requested"}, type, where + ": first event");
          const auto& d = o.at("data").as_object();
          expect_equal(c->key, text_field(d, "id", where), where + ": requested id");
          expect_equal(ids_[static_cast<std::size_t>(c->account)], text_field(d, "from", where),
                       where + ": requested from");
          expect_equal(target_id(*c), text_field(d, "to", where), where + ": requested to");
          expect_equal(c->amount, int_field(d, "cents", where), where + ": requested cents");
        }
        if (++count[type] > 1)
          fail(where + ": " + type + " appears twice in its log: " + json::serialize(rows));
      }
      auto has = [&count](const char* t) { return count.count(t) != 0 ? 1 : 0; };
      auto log_text = excerpt(json::serialize(rows), 2000);
      expect_equal(s.debit, has("bank.transfer_debited"),
                   where + ": transfer_debited in its log vs the debit step; log " + log_text);
      expect_equal(s.credit, has("bank.transfer_credited"),
                   where + ": transfer_credited in its log vs the credit step; log " + log_text);
      expect_equal(s.refund, has("bank.transfer_refunded"),
                   where + ": transfer_refunded in its log vs the refund step; log " + log_text);
      bool failed_debit = has("bank.transfer_failed") == 1;
      expect_equal(c->final_status == "compensated" && s.debit == 0, failed_debit,
                   where + ": transfer_failed in its log; log " + log_text);
    }
  }

  // ---- reporting ------------------------------------------------------------------------

  void say(const std::string& line) {
    if (opts_.quiet)
      return;
    std::printf("[%6.1f s] %s\n", seconds_since(started_), line.c_str());
    std::fflush(stdout);
  }

  void summary(bool time_ran_out) {
    std::uint64_t commands = 0, attempts = 0, acked = 0, refused = 0, unknown = 0, retried = 0;
    std::uint64_t by_kind[3] = {0, 0, 0};
    std::uint64_t completed = 0, compensated_refund = 0, compensated_nothing = 0, looked_up = 0,
                  existed = 0;
    for (auto* c : all_commands()) {
      ++commands;
      ++by_kind[static_cast<int>(c->what)];
      attempts += static_cast<std::uint64_t>(c->attempts);
      unknown += static_cast<std::uint64_t>(c->unknown_answers);
      if (c->attempts > 1)
        ++retried;
      if (c->outcome == fate::acknowledged)
        ++acked;
      else if (c->outcome == fate::refused)
        ++refused;
      if (c->already_existed)
        ++existed;
      else if (c->known_by_lookup)
        ++looked_up;
      if (c->what == kind::transfer) {
        if (c->final_status == "completed")
          ++completed;
        else if (c->debited)
          ++compensated_refund;
        else
          ++compensated_nothing;
      }
    }
    int max_in_flight = 0;
    double sum_in_flight = 0;
    for (int v : totals_.in_flight_at_kill) {
      max_in_flight = std::max(max_in_flight, v);
      sum_in_flight += v;
    }
    auto mean_in_flight = totals_.in_flight_at_kill.empty()
                            ? 0.0
                            : sum_in_flight / static_cast<double>(totals_.in_flight_at_kill.size());
    std::printf("crash_test: PASSED (seed %llu, %d accounts, %d clients)\n",
                static_cast<unsigned long long>(opts_.seed), opts_.accounts, opts_.clients);
    std::printf("  kills %d, restarts %d (%d after SIGKILL, 1 after SIGTERM)%s\n", totals_.kills,
                totals_.restarts, totals_.kills,
                time_ran_out ? "; the time bound ended the loop before --kills was reached" : "");
    std::printf("  in flight at the kills: mean %.1f, max %d\n", mean_in_flight, max_in_flight);
    std::uint64_t pipelined = 0;
    std::size_t cycles_pipelined = 0;
    std::size_t unread = 0;
    for (auto v : totals_.pipelined_at_kill) {
      pipelined += v.value_or(0);
      cycles_pipelined += v.value_or(0) > 0 ? 1 : 0;
      unread += v ? 0 : 1;
    }
    std::printf("  commands decided ahead of the journal before the kills: %llu, in %zu of %zu "
                "cycles (/metrics unanswered in %zu)\n",
                static_cast<unsigned long long>(pipelined), cycles_pipelined,
                totals_.pipelined_at_kill.size(), unread);
    if (service_test::on_jetstream)
      std::printf("  journal on a three-server JetStream cluster (R3): %d nats-server kill(s) "
                  "under load, each started again\n",
                  totals_.server_kills);
    if (service_test::on_postgres)
      std::printf("  journal and SQL read models on a PostgreSQL server (which stays up)\n");
    std::printf(
      "  commands sent %llu (deposits %llu, withdrawals %llu, transfers %llu), "
      "requests %llu\n",
      static_cast<unsigned long long>(commands), static_cast<unsigned long long>(by_kind[0]),
      static_cast<unsigned long long>(by_kind[1]), static_cast<unsigned long long>(by_kind[2]),
      static_cast<unsigned long long>(attempts));
    std::printf("  acknowledged %llu, refused %llu, answers without a verdict %llu, "
                "retries %llu (commands retried %llu)\n",
                static_cast<unsigned long long>(acked), static_cast<unsigned long long>(refused),
                static_cast<unsigned long long>(unknown),
                static_cast<unsigned long long>(attempts - commands),
                static_cast<unsigned long long>(retried));
    std::printf("  transfers: completed %llu, compensated %llu (refunded %llu, no debit %llu)",
                static_cast<unsigned long long>(completed),
                static_cast<unsigned long long>(compensated_refund + compensated_nothing),
                static_cast<unsigned long long>(compensated_refund),
                static_cast<unsigned long long>(compensated_nothing));
    if (looked_up > 0)
      std::printf("; %llu retried transfer(s) answered 500 and were found by GET",
                  static_cast<unsigned long long>(looked_up));
    if (existed > 0)
      std::printf("; %llu retried transfer(s) answered already_exists",
                  static_cast<unsigned long long>(existed));
    std::printf("\n  checks: %llu rounds, %llu comparisons, %llu events verified\n",
                static_cast<unsigned long long>(totals_.rounds),
                static_cast<unsigned long long>(totals_.checks),
                static_cast<unsigned long long>(totals_.events_verified));
    std::printf("  elapsed %.1f s\n", seconds_since(started_));
    std::fflush(stdout);
  }

  // Stops everything, keeps the journal for inspection and prints what failed.
  int failed(const std::string& what) {
    std::string saved;
    std::string log;
    if (svc_) {
      svc_->kill9();
      stop_clients();
      log = svc_->all_output();
      saved = save_journal();
    } else {
      stop_clients();
    }
    std::fflush(stdout);
    std::fprintf(stderr, "crash_test: FAILED (seed %llu; rerun with --seed %llu)\n  %s\n",
                 static_cast<unsigned long long>(opts_.seed),
                 static_cast<unsigned long long>(opts_.seed), what.c_str());
    std::fprintf(stderr, "  after %d kill(s), %d restart(s), %.1f s\n", totals_.kills,
                 totals_.restarts, seconds_since(started_));
    if (!saved.empty())
      std::fprintf(stderr, "  the journal is kept in %s\n", saved.c_str());
    if (!log.empty()) {
      constexpr std::size_t tail = 4000;
      std::fprintf(stderr, "  annals-bank output%s:\n%s\n", log.size() > tail ? " (tail)" : "",
                   log.substr(log.size() > tail ? log.size() - tail : 0).c_str());
    }
    return 1;
  }

  std::string save_journal() {
    char pattern[] = "/tmp/annals-crash-failure-XXXXXX";
    if (::mkdtemp(pattern) == nullptr)
      return {};
    std::error_code ec;
    namespace fs = std::filesystem;
    fs::path db = svc_->db_path(); // with JetStream: the read models (the log stays on the cluster)
    for (const char* suffix : {"", "-wal", "-shm"}) {
      fs::path from = db.string() + suffix;
      if (fs::exists(from, ec))
        fs::copy_file(from, fs::path{pattern} / (db.filename().string() + suffix), ec);
    }
    return pattern;
  }

  options opts_;
  std::mt19937_64 rng_;
  std::vector<std::string> ids_;
  std::optional<service_test::service_process> svc_;
  control ctl_;
  std::vector<std::unique_ptr<client_state>> clients_;
  std::vector<std::thread> threads_;
  std::deque<command> setup_commands_;
  std::optional<service::http::client> check_http_;
  unsigned short check_port_ = 0;
  std::uint64_t transfer_logs_checked_ = 0;
  totals totals_;
  steady::time_point started_;
};

} // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  auto opts = parse_options(argc, argv);
  std::printf("crash_test: seed %llu, %d accounts, %d clients, up to %d kills within %.0f s%s\n",
              static_cast<unsigned long long>(opts.seed), opts.accounts, opts.clients, opts.kills,
              opts.seconds,
              opts.transfer_retry_fallback ? ", transfer retries fall back to GET" : "");
  std::fflush(stdout);
  driver d{opts};
  return d.run();
}

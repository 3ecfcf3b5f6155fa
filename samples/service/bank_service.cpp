#include "service/bank_service.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/describe.hpp>
#include <boost/json.hpp>
#include <caf/sec.hpp>
#include <sqlite3.h>

#include "account/account.hpp"
#include "account/balances.hpp"
#include "account/owner_index.hpp"
#include "account/statement.hpp"
#include "account/transfer.hpp"
#include "annals/actors/host.hpp"
#include "annals/actors/projection.hpp"
#include "annals/error.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/replay.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "match/match.hpp"
#include "match/projections.hpp"

namespace service {

namespace json = boost::json;
namespace ap = annals::persistence;
namespace aa = annals::actors;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------------------
// Errors

// A request the service refuses before it reaches an aggregate; thrown inside a route and
// answered at the single dispatch boundary.
struct api_error {
  unsigned status;
  std::string code;
  std::string message;
};

template <class E>
std::string enum_name(E e) {
  return boost::describe::enum_to_string(e, "unknown");
}

// The HTTP status and the error code for an error reply of the runtime or an aggregate.
std::pair<unsigned, std::string> classify(const caf::error& err) {
  auto category = annals::category_name(err);
  auto code = annals::code_name(err);
  if (category == "bank") {
    if (annals::is(err, bank::account_errc::not_found))
      return {404, code};
    if (annals::is(err, bank::account_errc::invalid_amount)
        || annals::is(err, bank::account_errc::amount_overflow)
        || annals::is(err, bank::account_errc::invalid_owner))
      return {422, code};
    return {409, code}; // already_exists, insufficient_funds, account_closed, balance_not_zero
  }
  if (category == "transfer") {
    if (annals::is(err, bank::transfer_errc::not_found))
      return {404, code};
    if (annals::is(err, bank::transfer_errc::invalid_transfer))
      return {422, code};
    return {409, code};
  }
  if (category == "match") {
    if (annals::is(err, match::match_errc::not_found))
      return {404, code};
    if (annals::is(err, match::match_errc::invalid_argument))
      return {422, code};
    return {409, code};
  }
  if (category == "annals") {
    if (annals::is(err, annals::errc::unavailable))
      return {503, code};
    if (annals::is(err, annals::errc::timeout))
      return {504, code};
    if (annals::is(err, annals::errc::invalid_argument))
      return {400, code};
    return {500, code};
  }
  if (category == "journal") {
    if (annals::is(err, ap::journal_errc::disk_full))
      return {507, code};
    if (annals::is(err, ap::journal_errc::too_large))
      return {413, code};
    if (annals::is(err, ap::journal_errc::conflict))
      return {409, code};
    return {503, code};
  }
  if (err.category() == caf::atom("system")
      && err.code() == static_cast<std::uint8_t>(caf::sec::request_timeout))
    return {504, "timeout"};
  return {500, "internal_error"};
}

http::response error_response(const caf::error& err) {
  auto [status, code] = classify(err);
  return http::json_error(status, code, annals::render(err));
}

http::response json_response(unsigned status, const json::value& body) {
  return {status, json::serialize(body) + "\n"};
}

// ---------------------------------------------------------------------------------------
// Request bodies: strict JSON objects with known fields of known types.

class body_fields {
public:
  // Parses `body` as a JSON object whose fields are all in `allowed`.
  body_fields(const std::string& body, std::initializer_list<std::string_view> allowed) {
    if (body.empty())
      return; // an empty body is an empty object (for commands without fields)
    boost::system::error_code ec;
    auto v = json::parse(body, ec);
    if (ec)
      throw api_error{400, "malformed_json", "the body is not valid JSON: " + ec.message()};
    if (!v.is_object())
      throw api_error{400, "malformed_json", "the body must be a JSON object"};
    obj_ = std::move(v.as_object());
    for (const auto& kv : obj_)
      if (std::find(allowed.begin(), allowed.end(), kv.key()) == allowed.end())
        throw api_error{422, "invalid_field", "unknown field '" + std::string{kv.key()} + "'"};
  }

  std::string text(std::string_view name) const {
    const auto& v = need(name);
    if (!v.is_string())
      throw api_error{422, "invalid_field", "field '" + std::string{name} + "' must be a string"};
    return std::string{v.as_string()};
  }

  std::int64_t integer(std::string_view name) const {
    const auto& v = need(name);
    if (v.is_int64())
      return v.as_int64();
    if (v.is_uint64())
      throw api_error{422, "invalid_field",
                      "field '" + std::string{name} + "' is out of range (64-bit signed)"};
    throw api_error{422, "invalid_field",
                    "field '" + std::string{name} + "' must be an integer"
                      + (name == "amount" ? std::string{" number of cents"} : std::string{})};
  }

private:
  const json::value& need(std::string_view name) const {
    auto* v = obj_.if_contains(name);
    if (v == nullptr)
      throw api_error{422, "missing_field", "field '" + std::string{name} + "' is required"};
    return *v;
  }

  json::object obj_;
};

std::string check_id(std::string_view what, std::string_view id) {
  if (auto err = aa::host::check_id(id))
    throw api_error{400, "invalid_id", std::string{what} + ": " + annals::context_of(err)};
  return std::string{id};
}

std::uint64_t query_number(const http::request& req, const std::string& name,
                           std::uint64_t fallback, std::uint64_t min, std::uint64_t max) {
  auto i = req.query.find(name);
  if (i == req.query.end())
    return fallback;
  std::uint64_t v = 0;
  const auto& s = i->second;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v < min || v > max)
    throw api_error{400, "invalid_query",
                    "query parameter '" + name + "' must be an integer in " + std::to_string(min)
                      + ".." + std::to_string(max)};
  return v;
}

bool query_flag(const http::request& req, const std::string& name) {
  auto i = req.query.find(name);
  return i != req.query.end() && (i->second.empty() || i->second == "1" || i->second == "true");
}

std::string iso_time(std::int64_t micros) {
  auto secs = static_cast<std::time_t>(micros / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>((micros / 1000) % 1000));
  return buf;
}

// ---------------------------------------------------------------------------------------
// JSON views of replies

json::object account_json(std::string_view id, const bank::account_view& v) {
  return {{"id", id},
          {"owner", v.owner},
          {"balance", v.balance},
          {"status", enum_name(v.status)},
          {"version", v.version}};
}

json::object transfer_json(std::string_view id, const bank::transfer_state& t) {
  json::object o{{"id", id},          {"status", enum_name(t.status)},
                 {"from", t.from},    {"to", t.to},
                 {"amount", t.cents}, {"debited", t.debited}};
  if (!t.reason.empty())
    o["reason"] = t.reason;
  return o;
}

json::object score_json(const match::scoreline& s) {
  return {{"home", s.home}, {"away", s.away}};
}

json::object match_json(std::string_view id, const match::match_state& m, std::uint64_t version) {
  return {{"id", id},
          {"home", m.home},
          {"away", m.away},
          {"score", score_json(m.score)},
          {"period", enum_name(m.period)},
          {"substitutions", {{"home", m.substitutions_home}, {"away", m.substitutions_away}}},
          {"version", version}};
}

match::side parse_side(const body_fields& f) {
  auto s = f.text("team");
  if (s == "home")
    return match::side::home;
  if (s == "away")
    return match::side::away;
  throw api_error{422, "invalid_field", "field 'team' must be \"home\" or \"away\""};
}

int parse_minute(const body_fields& f) {
  auto m = f.integer("minute");
  if (m < 0 || m > 130)
    throw api_error{422, "invalid_field", "field 'minute' must be in 0..130"};
  return static_cast<int>(m);
}

// ---------------------------------------------------------------------------------------
// Worker pool for queries that block (journal reads, read models, projection waits).

class worker_pool {
public:
  explicit worker_pool(std::size_t n) {
    for (std::size_t i = 0; i < std::max<std::size_t>(n, 1); ++i)
      threads_.emplace_back([this] { run(); });
  }
  ~worker_pool() {
    {
      std::lock_guard guard{mtx_};
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
      t.join();
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard guard{mtx_};
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lk{mtx_};
        cv_.wait(lk, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty())
          return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// A read-only connection to the read-model tables, shared by the query workers.
class reader {
public:
  ~reader() {
    if (db_ != nullptr)
      sqlite3_close(db_);
  }
  caf::error open(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr)
        != SQLITE_OK)
      return annals::make_error(annals::errc::unavailable, "cannot open the read models in " + path
                                                             + ": " + sqlite3_errmsg(db_));
    sqlite3_busy_timeout(db_, 5'000);
    return {};
  }
  template <class F>
  auto with(F&& f) {
    std::lock_guard guard{mtx_};
    return f(db_);
  }

private:
  std::mutex mtx_;
  sqlite3* db_ = nullptr;
};

// Runs `sql` on `db` and calls `row(stmt)` per row; binds `args` as text/int64 in order.
class query {
public:
  query(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      fail();
  }
  ~query() {
    sqlite3_finalize(stmt_);
  }
  query& bind(int i, std::string_view s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  query& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  bool next() {
    auto rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW)
      return true;
    if (rc != SQLITE_DONE)
      fail();
    return false;
  }
  std::int64_t integer(int col) const {
    return sqlite3_column_int64(stmt_, col);
  }
  std::string text(int col) const {
    auto* p = sqlite3_column_text(stmt_, col);
    return p == nullptr ? std::string{} : std::string{reinterpret_cast<const char*>(p)};
  }

private:
  [[noreturn]] void fail() {
    throw api_error{503, "read_model_unavailable",
                    std::string{"read model: "} + sqlite3_errmsg(db_)};
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

std::uint64_t stored_offset(sqlite3* db, const char* projection) {
  query q{db, "SELECT \"offset\" FROM projection_offsets WHERE name = ?1"};
  q.bind(1, projection);
  return q.next() ? static_cast<std::uint64_t>(q.integer(0)) : 0;
}

// A route: method, path pattern ("*" matches one segment), and what it does with the
// captured segments.
struct route {
  std::string method;
  std::vector<std::string> pattern;
  std::function<void(const http::request&, const std::vector<std::string>&, http::responder&)> run;
};

} // namespace

// =========================================================================================

struct bank_service::impl {
  caf::actor_system& sys;
  bank_options opts;
  std::shared_ptr<ap::sqlite_journal> journal;
  std::unique_ptr<aa::host> host;
  std::shared_ptr<bank::owner_index> owners = std::make_shared<bank::owner_index>();
  std::shared_ptr<match::scoreboard_projection> board =
    std::make_shared<match::scoreboard_projection>();
  std::shared_ptr<match::top_scorers_projection> scorers =
    std::make_shared<match::top_scorers_projection>();
  std::vector<aa::projection> projections; // balances, statement, owners, scoreboard, scorers
  reader models;
  std::unique_ptr<worker_pool> workers;
  std::vector<route> routes;

  std::mutex status_mtx;
  std::map<unsigned, std::uint64_t> responses_by_status;

  impl(caf::actor_system& s, bank_options o) : sys(s), opts(std::move(o)) {}

  ~impl() {
    workers.reset(); // no query runs against what follows
    for (auto& p : projections)
      p.stop();
    host.reset();
    if (journal)
      journal->close();
  }

  caf::error start() {
    auto j = ap::sqlite_journal::open({.path = opts.db_path});
    if (!j)
      return std::move(j.error());
    journal = *j;
    host = std::make_unique<aa::host>(sys, journal, journal->snapshots());
    auto* h = host.get();
    if (auto err = host->register_aggregate<bank::account>("account", {.snapshot_every = 200}))
      return err;
    if (auto err = host->register_aggregate<bank::transfer>("transfer", {},
                                                            [h] { return bank::transfer{h}; }))
      return err;
    if (auto err =
          host->register_aggregate<match::football_match>("match", {.snapshot_every = 200}))
      return err;
    // The SQL read models' tables exist before the first query, whatever the projections'
    // progress.
    {
      sqlite3* db = nullptr;
      if (sqlite3_open_v2(opts.db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
        auto msg = std::string{sqlite3_errmsg(db)};
        sqlite3_close(db);
        return annals::make_error(annals::errc::unavailable,
                                  "cannot open " + opts.db_path + ": " + msg);
      }
      sqlite3_busy_timeout(db, 10'000);
      try {
        bank::balances_projection{}.create_schema(db);
        bank::statement_projection{}.create_schema(db);
        if (sqlite3_exec(db,
                         "CREATE TABLE IF NOT EXISTS projection_offsets(name TEXT PRIMARY KEY,"
                         " \"offset\" INTEGER NOT NULL)",
                         nullptr, nullptr, nullptr)
            != SQLITE_OK)
          throw std::runtime_error{sqlite3_errmsg(db)};
      } catch (const std::exception& e) {
        sqlite3_close(db);
        return annals::make_error(annals::errc::unavailable, "cannot create the read models in "
                                                               + opts.db_path + ": " + e.what());
      }
      sqlite3_close(db);
    }
    if (auto err = models.open(opts.db_path))
      return err;
    projections.push_back(
      aa::spawn_projection(sys, journal, std::make_shared<bank::balances_projection>(),
                           {.name = "balances",
                            .path = opts.db_path,
                            .filter = aa::event_filter::aggregate_type("account")}));
    projections.push_back(
      aa::spawn_projection(sys, journal, std::make_shared<bank::statement_projection>(),
                           {.name = "statement",
                            .path = opts.db_path,
                            .filter = aa::event_filter::aggregate_type("account")}));
    projections.push_back(aa::spawn_projection(
      sys, journal, owners,
      aa::projection_options{.name = "owners",
                             .filter = aa::event_filter::aggregate_type("account")}));
    projections.push_back(aa::spawn_projection(
      sys, journal, board,
      aa::projection_options{.name = "scoreboard",
                             .filter = aa::event_filter::aggregate_type("match")}));
    projections.push_back(aa::spawn_projection(
      sys, journal, scorers,
      aa::projection_options{.name = "scorers",
                             .filter = aa::event_filter::aggregate_type("match")}));
    workers = std::make_unique<worker_pool>(opts.query_threads);
    add_routes();
    return {};
  }

  aa::projection& projection_named(std::string_view name) {
    for (auto& p : projections)
      if (p.name() == name)
        return p;
    throw std::logic_error{"no projection " + std::string{name}};
  }

  // ---- plumbing -------------------------------------------------------------------------

  void count(unsigned status) {
    std::lock_guard guard{status_mtx};
    ++responses_by_status[status];
  }

  http::responder counted(http::responder respond) {
    return [this, respond = std::move(respond)](http::response r) {
      count(r.status);
      respond(std::move(r));
    };
  }

  aa::command_options command_opts(const http::request& req) {
    auto key = req.header("idempotency-key");
    if (key.empty())
      return {};
    if (auto err = aa::host::check_id(key, "Idempotency-Key"))
      throw api_error{400, "invalid_idempotency_key", annals::context_of(err)};
    return aa::command_options{key};
  }

  // Sends a command and answers with `status` and `to_json(reply)`, or the error.
  template <class A, class C, class F>
  void command(const http::request& req, const std::string& id, C cmd, unsigned status, F to_json,
               http::responder& respond) {
    using R = annals::reply_t<A, C>;
    host->ask_async<A>(
      id, std::move(cmd), opts.command_timeout,
      [respond, status, to_json](caf::expected<R> r) mutable {
        if (r)
          respond(json_response(status, to_json(*r)));
        else
          respond(error_response(r.error()));
      },
      command_opts(req));
  }

  // Runs `job` on a query worker; an api_error it throws becomes the response.
  void on_worker(http::responder& respond, std::function<http::response()> job) {
    workers->post([respond, job = std::move(job)]() mutable {
      try {
        respond(job());
      } catch (const api_error& e) {
        respond(http::json_error(e.status, e.code, e.message));
      } catch (const std::exception& e) {
        respond(http::json_error(500, "internal_error", e.what()));
      }
    });
  }

  std::uint64_t head_offset() {
    auto head =
      ap::wait_for<std::uint64_t>([this](auto cb) { journal->head_offset(std::move(cb)); }, 10s);
    if (!head)
      throw api_error{503, "journal_unavailable", annals::render(head.error())};
    return *head;
  }

  // With `?fresh=1`: waits until projection `name` has caught up with the journal's head
  // as it was when the request arrived (read your own writes).
  void maybe_fresh(const http::request& req, std::string_view name) {
    if (!query_flag(req, "fresh"))
      return;
    auto head = head_offset();
    auto st = projection_named(name).await_offset(head, opts.fresh_timeout);
    if (!st)
      throw api_error{503, "read_model_behind", annals::render(st.error())};
  }

  // ---- routes ---------------------------------------------------------------------------

  void
  add(std::string method, std::vector<std::string> pattern,
      std::function<void(const http::request&, const std::vector<std::string>&, http::responder&)>
        run) {
    routes.push_back({std::move(method), std::move(pattern), std::move(run)});
  }

  void add_routes() {
    using req_t = const http::request&;
    using args_t = const std::vector<std::string>&;
    using resp_t = http::responder&;

    // Accounts.
    add("POST", {"accounts"}, [this](req_t req, args_t, resp_t respond) {
      body_fields f{req.body, {"id", "owner"}};
      auto id = check_id("account id", f.text("id"));
      command<bank::account>(
        req, id, bank::open{f.text("owner")}, 201,
        [id](const bank::account_view& v) { return account_json(id, v); }, respond);
    });
    add("POST", {"accounts", "*", "deposit"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {"amount"}};
      auto id = check_id("account id", a[0]);
      command<bank::account>(
        req, id, bank::deposit{f.integer("amount")}, 200,
        [id](const bank::account_view& v) { return account_json(id, v); }, respond);
    });
    add("POST", {"accounts", "*", "withdraw"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {"amount"}};
      auto id = check_id("account id", a[0]);
      command<bank::account>(
        req, id, bank::withdraw{f.integer("amount")}, 200,
        [id](const bank::account_view& v) { return account_json(id, v); }, respond);
    });
    add("POST", {"accounts", "*", "close"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {}};
      auto id = check_id("account id", a[0]);
      command<bank::account>(
        req, id, bank::close{}, 200,
        [id](const bank::account_view& v) { return account_json(id, v); }, respond);
    });
    add("GET", {"accounts", "*"}, [this](req_t req, args_t a, resp_t respond) {
      auto id = check_id("account id", a[0]);
      command<bank::account>(
        req, id, bank::get_account{}, 200,
        [id](const bank::account_view& v) { return account_json(id, v); }, respond);
    });
    add("GET", {"accounts", "*", "events"}, [this](req_t req, args_t a, resp_t respond) {
      events_route<bank::account>(req, "account", a[0], respond);
    });
    add("GET", {"accounts", "*", "state"}, [this](req_t req, args_t a, resp_t respond) {
      state_route<bank::account>(req, "account", a[0], respond);
    });
    add("GET", {"accounts"}, [this](req_t req, args_t, resp_t respond) {
      auto after = req.query.count("after") ? req.query.at("after") : std::string{};
      auto limit = query_number(req, "limit", 100, 1, 1000);
      on_worker(respond, [this, req, after, limit] {
        maybe_fresh(req, "balances");
        return models.with([&](sqlite3* db) {
          query begin{db, "BEGIN"};
          begin.next();
          json::array rows;
          std::uint64_t offset = 0;
          try {
            offset = stored_offset(db, "balances");
            query q{db, "SELECT id, owner, balance, status, version FROM balances WHERE id > ?1"
                        " ORDER BY id LIMIT ?2"};
            q.bind(1, after).bind(2, static_cast<std::int64_t>(limit));
            while (q.next())
              rows.push_back(json::object{{"id", q.text(0)},
                                          {"owner", q.text(1)},
                                          {"balance", q.integer(2)},
                                          {"status", q.text(3)},
                                          {"version", q.integer(4)}});
          } catch (...) {
            sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
          }
          sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
          return json_response(200,
                               json::object{{"offset", offset}, {"accounts", std::move(rows)}});
        });
      });
    });
    add("GET", {"accounts", "*", "statement"}, [this](req_t req, args_t a, resp_t respond) {
      auto id = check_id("account id", a[0]);
      on_worker(respond, [this, req, id] {
        maybe_fresh(req, "statement");
        return models.with([&](sqlite3* db) {
          sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
          auto offset = stored_offset(db, "statement");
          auto lines = bank::read_statement(db, id);
          sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
          if (!lines)
            throw api_error{503, "read_model_unavailable", annals::render(lines.error())};
          if (lines->empty())
            throw api_error{404, "not_found", "no statement for account " + id};
          json::array rows;
          for (const auto& l : *lines) {
            json::object o{{"seq", l.seq},         {"offset", l.offset},
                           {"kind", l.kind},       {"amount", l.amount},
                           {"balance", l.balance}, {"timestamp", iso_time(l.timestamp_ms * 1000)}};
            if (!l.correlation_id.empty())
              o["correlation_id"] = l.correlation_id;
            rows.push_back(std::move(o));
          }
          return json_response(
            200, json::object{{"id", id}, {"offset", offset}, {"lines", std::move(rows)}});
        });
      });
    });
    add("GET", {"search"}, [this](req_t req, args_t, resp_t respond) {
      auto i = req.query.find("owner");
      if (i == req.query.end() || i->second.empty())
        throw api_error{400, "invalid_query", "query parameter 'owner' is required"};
      auto needle = i->second;
      auto limit = query_number(req, "limit", 50, 1, 1000);
      on_worker(respond, [this, req, needle, limit] {
        maybe_fresh(req, "owners");
        json::array hits;
        for (const auto& hit : owners->search(needle, limit))
          hits.push_back(
            json::object{{"id", hit.account_id}, {"owner", hit.owner}, {"closed", hit.closed}});
        return json_response(200,
                             json::object{{"offset", owners->offset()}, {"hits", std::move(hits)}});
      });
    });

    // Transfers.
    add("POST", {"transfers"}, [this](req_t req, args_t, resp_t respond) {
      body_fields f{req.body, {"id", "from", "to", "amount"}};
      auto id = check_id("transfer id", f.text("id"));
      auto from = check_id("from", f.text("from"));
      auto to = check_id("to", f.text("to"));
      // The transfer's id is its idempotency key (a retry with the same id and parameters
      // answers the status), so an Idempotency-Key header is not passed on: re-running a
      // saga's handler to recompute a lost reply would ask the accounts again from outside
      // an actor.
      auto plain = req;
      plain.headers.erase("idempotency-key");
      command<bank::transfer>(
        plain, id, bank::start_transfer{id, from, to, f.integer("amount")}, 202,
        [id](bank::transfer_status st) {
          return json::object{{"id", id}, {"status", enum_name(st)}};
        },
        respond);
    });
    add("GET", {"transfers", "*"}, [this](req_t req, args_t a, resp_t respond) {
      auto id = check_id("transfer id", a[0]);
      command<bank::transfer>(
        req, id, bank::get_transfer_state{}, 200,
        [id](const bank::transfer_state& t) { return transfer_json(id, t); }, respond);
    });
    add("GET", {"transfers", "*", "events"}, [this](req_t req, args_t a, resp_t respond) {
      events_route<bank::transfer>(req, "transfer", a[0], respond);
    });

    // Matches.
    add("POST", {"matches"}, [this](req_t req, args_t, resp_t respond) {
      body_fields f{req.body, {"id", "home", "away"}};
      auto id = check_id("match id", f.text("id"));
      match_command(req, id, match::schedule{f.text("home"), f.text("away")}, 201, respond);
    });
    add("POST", {"matches", "*", "kick-off"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {}};
      match_command(req, check_id("match id", a[0]), match::kick_off{}, 200, respond);
    });
    add("POST", {"matches", "*", "goals"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {"team", "player", "minute"}};
      match_command(req, check_id("match id", a[0]),
                    match::score_goal{parse_side(f), f.text("player"), parse_minute(f)}, 200,
                    respond);
    });
    add("POST", {"matches", "*", "cards"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {"team", "player", "card", "minute"}};
      auto card = f.text("card");
      if (card != "yellow" && card != "red")
        throw api_error{422, "invalid_field", "field 'card' must be \"yellow\" or \"red\""};
      match_command(
        req, check_id("match id", a[0]),
        match::show_card{parse_side(f), f.text("player"),
                         card == "red" ? match::card_color::red : match::card_color::yellow,
                         parse_minute(f)},
        200, respond);
    });
    add("POST", {"matches", "*", "substitutions"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {"team", "out", "in", "minute"}};
      match_command(req, check_id("match id", a[0]),
                    match::substitute{parse_side(f), f.text("out"), f.text("in"), parse_minute(f)},
                    200, respond);
    });
    add("POST", {"matches", "*", "half-time"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {}};
      match_command(req, check_id("match id", a[0]), match::call_half_time{}, 200, respond);
    });
    add("POST", {"matches", "*", "second-half"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {}};
      match_command(req, check_id("match id", a[0]), match::start_second_half{}, 200, respond);
    });
    add("POST", {"matches", "*", "full-time"}, [this](req_t req, args_t a, resp_t respond) {
      body_fields f{req.body, {}};
      match_command(req, check_id("match id", a[0]), match::call_full_time{}, 200, respond);
    });
    add("GET", {"matches", "*"}, [this](req_t req, args_t a, resp_t respond) {
      auto id = check_id("match id", a[0]);
      command<match::football_match>(
        req, id, match::get_match{}, 200,
        [id](const match::match_view& v) { return match_json(id, v.state, v.version); }, respond);
    });
    add("GET", {"matches", "*", "events"}, [this](req_t req, args_t a, resp_t respond) {
      events_route<match::football_match>(req, "match", a[0], respond);
    });
    add("GET", {"matches", "*", "state"}, [this](req_t req, args_t a, resp_t respond) {
      state_route<match::football_match>(req, "match", a[0], respond);
    });
    add("GET", {"matches"}, [this](req_t req, args_t, resp_t respond) {
      on_worker(respond, [this, req] {
        maybe_fresh(req, "scoreboard");
        auto [lines, offset] = board->board();
        json::array rows;
        for (const auto& [id, l] : lines)
          rows.push_back(json::object{{"id", id},
                                      {"home", l.home},
                                      {"away", l.away},
                                      {"score", score_json(l.score)},
                                      {"period", enum_name(l.period)}});
        return json_response(200, json::object{{"offset", offset}, {"matches", std::move(rows)}});
      });
    });
    add("GET", {"scorers"}, [this](req_t req, args_t, resp_t respond) {
      auto limit = query_number(req, "limit", 10, 1, 1000);
      on_worker(respond, [this, req, limit] {
        maybe_fresh(req, "scorers");
        auto [top, offset] = scorers->top(limit);
        json::array rows;
        for (const auto& [player, goals] : top)
          rows.push_back(json::object{{"player", player}, {"goals", goals}});
        return json_response(200, json::object{{"offset", offset}, {"scorers", std::move(rows)}});
      });
    });

    // Operations.
    add("GET", {"health"},
        [this](req_t, args_t, resp_t respond) { on_worker(respond, [this] { return health(); }); });
    add("GET", {"metrics"}, [this](req_t, args_t, resp_t respond) {
      on_worker(respond, [this] {
        http::response r{200, metrics()};
        r.content_type = "text/plain; version=0.0.4";
        return r;
      });
    });
  }

  template <class C>
  void match_command(const http::request& req, const std::string& id, C cmd, unsigned status,
                     http::responder& respond) {
    command<match::football_match>(
      req, id, std::move(cmd), status,
      [id](const match::scoreline& s) {
        return json::object{{"id", id}, {"score", score_json(s)}};
      },
      respond);
  }

  template <class A>
  void events_route(const http::request& req, const std::string& type, const std::string& raw_id,
                    http::responder& respond) {
    auto id = check_id(type + " id", raw_id);
    auto from = query_number(req, "from", 1, 1, std::numeric_limits<std::int64_t>::max());
    auto limit = query_number(req, "limit", 100, 1, 1000);
    on_worker(respond, [this, type, id, from, limit] {
      auto pid = aa::host::persistence_id(type, id);
      auto rows = ap::wait_for<std::vector<ap::event_record>>(
        [&](auto cb) {
          journal->read_stream(pid, from, std::numeric_limits<std::uint64_t>::max(), limit,
                               std::move(cb));
        },
        10s);
      if (!rows)
        throw api_error{503, "journal_unavailable", annals::render(rows.error())};
      if (rows->empty() && from == 1)
        throw api_error{404, "not_found", "no " + type + " " + id};
      json::array events;
      for (const auto& rec : *rows) {
        boost::system::error_code ec;
        auto data = json::parse(rec.payload, ec);
        json::object o{{"seq", rec.seq},
                       {"type", rec.name},
                       {"version", rec.version},
                       {"offset", rec.offset},
                       {"timestamp", iso_time(rec.timestamp_us)}};
        if (ec)
          o["raw"] = rec.payload; // a row the journal holds but that is not JSON: shown as is
        else
          o["data"] = std::move(data);
        if (!rec.metadata.command_id.empty())
          o["command_id"] = rec.metadata.command_id;
        if (!rec.metadata.correlation_id.empty())
          o["correlation_id"] = rec.metadata.correlation_id;
        events.push_back(std::move(o));
      }
      return json_response(200, json::object{{"id", id}, {"events", std::move(events)}});
    });
  }

  template <class A>
  void state_route(const http::request& req, const std::string& type, const std::string& raw_id,
                   http::responder& respond) {
    auto id = check_id(type + " id", raw_id);
    constexpr auto all = std::numeric_limits<std::uint64_t>::max();
    auto at = req.query.count("at")
                ? query_number(req, "at", 0, 1, std::numeric_limits<std::int64_t>::max())
                : all;
    on_worker(respond, [this, type, id, at] {
      auto pid = aa::host::persistence_id(type, id);
      auto past = ap::replay_state<A>(*journal, pid, at);
      if (!past) {
        if (annals::is(past.error(), annals::errc::invalid_argument))
          throw api_error{404, "not_found", annals::context_of(past.error())};
        auto [status, code] = classify(past.error());
        throw api_error{status, code, annals::render(past.error())};
      }
      if (past->version == 0)
        throw api_error{404, "not_found", "no " + type + " " + id};
      return json_response(200, json::object{{"id", id},
                                             {"at", past->version},
                                             {"timestamp", iso_time(past->timestamp_us)},
                                             {"state", json::value_from(past->state)}});
    });
  }

  http::response health() {
    json::array projs;
    bool healthy = true;
    for (auto& p : projections) {
      auto st = p.status(5s);
      if (!st) {
        healthy = false;
        projs.push_back(json::object{{"name", p.name()}, {"error", annals::render(st.error())}});
        continue;
      }
      json::object o{{"name", st->name},
                     {"offset", st->offset},
                     {"lag", st->lag},
                     {"state", aa::to_string(st->state)}};
      if (st->state == aa::projection_state::failed) {
        healthy = false;
        o["error"] = st->error;
      }
      projs.push_back(std::move(o));
    }
    auto head =
      ap::wait_for<std::uint64_t>([this](auto cb) { journal->head_offset(std::move(cb)); }, 5s);
    if (!head)
      healthy = false;
    json::object body{{"status", healthy ? "ok" : "degraded"},
                      {"journal", {{"path", opts.db_path}, {"head_offset", head ? *head : 0}}},
                      {"projections", std::move(projs)}};
    return json_response(healthy ? 200 : 503, body);
  }

  std::string metrics() {
    std::ostringstream out;
    auto counter = [&out](const char* name, const char* help, std::uint64_t v) {
      out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n"
          << name << ' ' << v << '\n';
    };
    auto m = host->metrics();
    counter("annals_commands_handled_total", "Commands that aggregates answered.",
            m.commands_handled);
    counter("annals_commands_failed_total", "Commands answered with an error.", m.commands_failed);
    counter("annals_events_persisted_total", "Events written by aggregates.", m.events_persisted);
    counter("annals_duplicate_commands_total", "Retries answered from an idempotency key.",
            m.duplicates);
    counter("annals_recoveries_total", "Aggregates started by recovery.", m.recoveries);
    counter("annals_events_replayed_total", "Events replayed by recoveries.", m.events_replayed);
    counter("annals_snapshots_written_total", "Snapshots saved.", m.snapshots_written);
    counter("annals_passivations_total", "Aggregates stopped when idle or evicted.",
            m.passivations);
    auto js = journal->stats();
    counter("annals_journal_appends_total", "Appends committed by the journal.", js.appends);
    counter("annals_journal_failed_appends_total", "Appends the journal refused.",
            js.failed_appends);
    auto histogram = [&out](const char* name, const char* help, const auto& bounds,
                            const auto& counts, double scale, double sum) {
      out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " histogram\n";
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < bounds.size(); ++i) {
        cumulative += counts[i];
        out << name << "_bucket{le=\"" << static_cast<double>(bounds[i]) * scale << "\"} "
            << cumulative << '\n';
      }
      cumulative += counts[bounds.size()];
      out << name << "_bucket{le=\"+Inf\"} " << cumulative << '\n'
          << name << "_sum " << sum << '\n'
          << name << "_count " << cumulative << '\n';
    };
    histogram("annals_journal_batch_size", "Writes committed per journal transaction.",
              js.batch_bounds, js.batch_histogram, 1.0, static_cast<double>(js.batch_writes_sum));
    histogram("annals_journal_commit_seconds", "Journal transaction time, BEGIN to COMMIT (fsync).",
              js.commit_bounds_us, js.commit_histogram, 1e-6,
              static_cast<double>(js.commit_us_sum) * 1e-6);
    out << "# HELP annals_projection_offset Last journal offset a projection processed.\n"
           "# TYPE annals_projection_offset gauge\n";
    std::vector<std::pair<std::string, std::uint64_t>> lags;
    for (auto& p : projections) {
      auto st = p.status(5s);
      if (!st)
        continue;
      out << "annals_projection_offset{projection=\"" << st->name << "\"} " << st->offset << '\n';
      lags.emplace_back(st->name, st->lag);
    }
    out << "# HELP annals_projection_lag_events Events a projection is behind the journal head.\n"
           "# TYPE annals_projection_lag_events gauge\n";
    for (const auto& [name, lag] : lags)
      out << "annals_projection_lag_events{projection=\"" << name << "\"} " << lag << '\n';
    out << "# HELP annals_http_responses_total HTTP responses by status code.\n"
           "# TYPE annals_http_responses_total counter\n";
    std::lock_guard guard{status_mtx};
    for (const auto& [status, n] : responses_by_status)
      out << "annals_http_responses_total{code=\"" << status << "\"} " << n << '\n';
    return out.str();
  }

  void dispatch(http::request req, http::responder respond) {
    respond = counted(std::move(respond));
    try {
      const route* found = nullptr;
      std::vector<std::string> args;
      std::vector<std::string> allowed;
      for (const auto& r : routes) {
        if (r.pattern.size() != req.segments.size())
          continue;
        std::vector<std::string> captured;
        bool match = true;
        for (std::size_t i = 0; i < r.pattern.size() && match; ++i) {
          if (r.pattern[i] == "*")
            captured.push_back(req.segments[i]);
          else
            match = r.pattern[i] == req.segments[i];
        }
        if (!match)
          continue;
        if (r.method != req.method) {
          allowed.push_back(r.method);
          continue;
        }
        found = &r;
        args = std::move(captured);
        break;
      }
      if (found != nullptr) {
        found->run(req, args, respond);
        return;
      }
      if (!allowed.empty()) {
        auto resp = http::json_error(405, "method_not_allowed",
                                     req.method + " is not allowed on " + req.path);
        std::string allow;
        for (const auto& m : allowed)
          allow += (allow.empty() ? "" : ", ") + m;
        resp.headers.emplace_back("Allow", allow);
        respond(std::move(resp));
        return;
      }
      respond(
        http::json_error(404, "unknown_route", "no route for " + req.method + " " + req.path));
    } catch (const api_error& e) {
      respond(http::json_error(e.status, e.code, e.message));
    }
  }
};

bank_service::bank_service(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {}

bank_service::~bank_service() = default;

caf::expected<std::unique_ptr<bank_service>> bank_service::open(caf::actor_system& sys,
                                                                bank_options opts) {
  auto state = std::make_unique<impl>(sys, std::move(opts));
  if (auto err = state->start())
    return err;
  return std::unique_ptr<bank_service>{new bank_service{std::move(state)}};
}

void bank_service::handle(http::request req, http::responder respond) {
  impl_->dispatch(std::move(req), std::move(respond));
}

caf::expected<std::size_t> bank_service::resume_transfers() {
  return bank::resume_pending_transfers(*impl_->host, *impl_->journal);
}

caf::error bank_service::drain(std::chrono::milliseconds bound) {
  return impl_->host->drain(bound);
}

} // namespace service

#include "service/bank/postgres_read_models.hpp"

#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <boost/json/array.hpp>
#include <libpq-fe.h>

#include "account/account.hpp"
#include "account/statement.hpp"
#include "annals/actors/postgres_projection.hpp"
#include "annals/error.hpp"
#include "annals/persistence/redact.hpp"
#include "service/bank/errors.hpp"

namespace service {

namespace json = boost::json;

namespace {

struct result_deleter {
  void operator()(PGresult* r) const {
    PQclear(r);
  }
};
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

// Runs `sql` with text parameters; throws `std::runtime_error` naming `what` and the
// server's message.
result_ptr run(PGconn* db, const char* what, const char* sql,
               std::initializer_list<std::string> params = {}) {
  std::vector<const char*> values;
  for (const auto& p : params)
    values.push_back(p.c_str());
  result_ptr r{PQexecParams(db, sql, static_cast<int>(values.size()), nullptr, values.data(),
                            nullptr, nullptr, 0)};
  auto st = PQresultStatus(r.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    throw std::runtime_error{
      std::string{what} + ": "
      + annals::persistence::one_line(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(db))};
  }
  return r;
}

std::string text(std::int64_t v) {
  return std::to_string(v);
}

std::int64_t integer(const PGresult* r, int row, int col) {
  return std::stoll(PQgetvalue(r, row, col));
}

constexpr const char* balances_table =
  "CREATE TABLE IF NOT EXISTS balances (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
  " balance BIGINT NOT NULL, status TEXT NOT NULL, version BIGINT NOT NULL)";

constexpr const char* statement_table =
  "CREATE TABLE IF NOT EXISTS statement (account_id TEXT NOT NULL, seq BIGINT NOT NULL,"
  " \"offset\" BIGINT NOT NULL, kind TEXT NOT NULL, amount BIGINT NOT NULL,"
  " balance BIGINT NOT NULL, correlation_id TEXT NOT NULL, timestamp BIGINT NOT NULL,"
  " PRIMARY KEY (account_id, seq))";

// One row per account, as bank::balances_projection keeps it in SQLite.
class balances_projection
  : public annals::actors::typed_postgres_projection<balances_projection, bank::account> {
public:
  using envelope = annals::actors::envelope;

  void create_schema(PGconn* db) override {
    run(db, "balances", balances_table);
  }
  void reset(PGconn* db) override {
    run(db, "balances", "DELETE FROM balances");
  }

  void on(const bank::opened& e, const envelope& env, PGconn* db) {
    run(db, "balances", "INSERT INTO balances VALUES ($1, $2, 0, 'open', $3)",
        {std::string{env.entity_id()}, e.owner, text(static_cast<std::int64_t>(env.seq()))});
  }
  void on(const bank::deposited& e, const envelope& env, PGconn* db) {
    move(db, env, e.cents);
  }
  void on(const bank::withdrawn& e, const envelope& env, PGconn* db) {
    move(db, env, -e.cents);
  }
  void on(const bank::closed&, const envelope& env, PGconn* db) {
    run(db, "balances", "UPDATE balances SET status = 'closed', version = $2 WHERE id = $1",
        {std::string{env.entity_id()}, text(static_cast<std::int64_t>(env.seq()))});
  }

private:
  static void move(PGconn* db, const envelope& env, std::int64_t delta) {
    run(db, "balances", "UPDATE balances SET balance = balance + $2, version = $3 WHERE id = $1",
        {std::string{env.entity_id()}, text(delta), text(static_cast<std::int64_t>(env.seq()))});
  }
};

// One line per account event with the balance after it, as bank::statement_projection
// keeps it in SQLite.
class statement_projection
  : public annals::actors::typed_postgres_projection<statement_projection, bank::account> {
public:
  void create_schema(PGconn* db) override {
    run(db, "statement", statement_table);
  }
  void reset(PGconn* db) override {
    run(db, "statement", "DELETE FROM statement");
  }

  template <class E>
  void on(const E& e, const annals::actors::envelope& env, PGconn* db) {
    auto m = bank::movement_of(e);
    run(db, "statement",
        "INSERT INTO statement (account_id, seq, \"offset\", kind, amount, balance,"
        " correlation_id, timestamp)"
        " SELECT $1, $2::bigint, $3::bigint, $4, $5::bigint, COALESCE((SELECT balance FROM"
        " statement WHERE account_id = $1 ORDER BY seq DESC LIMIT 1), 0) + $6::bigint, $7,"
        " $8::bigint",
        {std::string{env.entity_id()}, text(static_cast<std::int64_t>(env.seq())),
         text(static_cast<std::int64_t>(env.offset())), m.kind, text(m.amount), text(m.delta),
         env.correlation_id(), text(bank::statement_projection::to_epoch_ms(env.timestamp_us()))});
  }
};

// One connection shared by the query workers (one query at a time); each query is one
// read-only REPEATABLE READ transaction, so the offset and the rows are one state.
class postgres_read_models final : public read_models {
public:
  explicit postgres_read_models(std::string conninfo) : conninfo_(std::move(conninfo)) {}
  ~postgres_read_models() override {
    close();
  }

  caf::error open() {
    std::lock_guard guard{mtx_};
    if (!connect())
      return unavailable("cannot connect to");
    try {
      run(db_, "read models", "BEGIN");
      annals::actors::create_postgres_offsets_table(db_);
      run(db_, "balances", balances_table);
      run(db_, "statement", statement_table);
      run(db_, "read models", "COMMIT");
    } catch (const std::exception& e) {
      return unavailable(std::string{"cannot create the read models ("} + e.what() + ") in");
    }
    return {};
  }

  void close() override {
    std::lock_guard guard{mtx_};
    if (db_ != nullptr)
      PQfinish(db_);
    db_ = nullptr;
    closed_ = true;
  }

  json::object accounts(const std::string& after, std::uint64_t limit) override {
    return in_snapshot([&](PGconn* db) {
      auto offset = annals::actors::postgres_stored_offset(db, "balances");
      auto r = run(db, "balances",
                   "SELECT id, owner, balance, status, version FROM balances WHERE id > $1"
                   " ORDER BY id LIMIT $2",
                   {after, std::to_string(limit)});
      json::array rows;
      for (int i = 0; i < PQntuples(r.get()); ++i)
        rows.push_back(json::object{{"id", PQgetvalue(r.get(), i, 0)},
                                    {"owner", PQgetvalue(r.get(), i, 1)},
                                    {"balance", integer(r.get(), i, 2)},
                                    {"status", PQgetvalue(r.get(), i, 3)},
                                    {"version", integer(r.get(), i, 4)}});
      return json::object{{"offset", offset}, {"accounts", std::move(rows)}};
    });
  }

  json::object statement(const std::string& id) override {
    std::uint64_t offset = 0;
    std::vector<bank::statement_line> lines;
    in_snapshot([&](PGconn* db) {
      offset = annals::actors::postgres_stored_offset(db, "statement");
      auto r = run(db, "statement",
                   "SELECT seq, \"offset\", kind, amount, balance, correlation_id, timestamp"
                   " FROM statement WHERE account_id = $1 ORDER BY seq",
                   {id});
      for (int i = 0; i < PQntuples(r.get()); ++i)
        lines.push_back(bank::statement_line{
          .seq = static_cast<std::uint64_t>(integer(r.get(), i, 0)),
          .offset = static_cast<std::uint64_t>(integer(r.get(), i, 1)),
          .kind = PQgetvalue(r.get(), i, 2),
          .amount = integer(r.get(), i, 3),
          .balance = integer(r.get(), i, 4),
          .correlation_id = PQgetvalue(r.get(), i, 5),
          .timestamp_ms = integer(r.get(), i, 6),
        });
      return 0;
    });
    return statement_reply(id, offset, lines);
  }

private:
  bool connect() {
    if (db_ != nullptr)
      PQfinish(db_);
    const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
    const char* values[] = {conninfo_.c_str(), "10", "annals-bank queries", nullptr};
    db_ = PQconnectdbParams(keys, values, 1);
    return PQstatus(db_) == CONNECTION_OK;
  }

  caf::error unavailable(const std::string& what) const {
    auto msg =
      annals::persistence::one_line(db_ != nullptr ? PQerrorMessage(db_) : "out of memory");
    return annals::make_error(annals::errc::unavailable,
                              what + " the read models' PostgreSQL database "
                                + annals::persistence::redact_secrets(conninfo_) + ": " + msg);
  }

  // Runs `f(db)` in a read-only snapshot, reconnecting once if the server went away.
  template <class F>
  std::invoke_result_t<F&, PGconn*> in_snapshot(F&& f) {
    std::lock_guard guard{mtx_};
    if (closed_)
      throw api_error{503, "read_model_unavailable", "read models: closed"};
    if (PQstatus(db_) != CONNECTION_OK && !connect())
      throw api_error{503, "read_model_unavailable", annals::render(unavailable("lost"))};
    try {
      run(db_, "read models", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      auto out = f(db_);
      run(db_, "read models", "COMMIT");
      return out;
    } catch (const std::exception& e) {
      if (PQstatus(db_) == CONNECTION_OK && PQtransactionStatus(db_) != PQTRANS_IDLE)
        result_ptr{PQexec(db_, "ROLLBACK")};
      throw api_error{503, "read_model_unavailable", e.what()};
    }
  }

  std::string conninfo_;
  std::mutex mtx_;
  PGconn* db_ = nullptr;
  bool closed_ = false;
};

} // namespace

caf::expected<std::unique_ptr<read_models>> open_postgres_read_models(const std::string& conninfo) {
  auto models = std::make_unique<postgres_read_models>(conninfo);
  if (auto err = models->open())
    return err;
  return std::unique_ptr<read_models>{std::move(models)};
}

std::vector<annals::actors::projection>
spawn_postgres_projections(caf::actor_system& sys, annals::persistence::journal_ptr journal,
                           const std::string& conninfo) {
  namespace aa = annals::actors;
  auto accounts = aa::event_filter::aggregate_type<bank::account>();
  std::vector<aa::projection> out;
  out.push_back(aa::spawn_projection(
    sys, journal, std::make_shared<balances_projection>(),
    aa::postgres_projection_options{.name = "balances", .conninfo = conninfo, .filter = accounts}));
  out.push_back(aa::spawn_projection(sys, journal, std::make_shared<statement_projection>(),
                                     aa::postgres_projection_options{.name = "statement",
                                                                     .conninfo = conninfo,
                                                                     .filter = accounts}));
  return out;
}

} // namespace service

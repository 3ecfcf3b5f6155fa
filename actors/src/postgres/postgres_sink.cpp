// The exactly-once sink into PostgreSQL: each batch and the projection's offset in one
// transaction of the read model's database (annals/actors/postgres_projection.hpp says how a
// batch runs), with a reconnect when the server went away between two batches or during
// one.

#include "annals/actors/postgres_projection.hpp"

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include "annals/actors/projection_sink.hpp"
#include "annals/persistence/redact.hpp"

namespace annals::actors {

namespace {

// The advisory lock that serialises schema creation: the PostgreSQL journal's own, so that
// a projection creating its tables never races the journal creating its own (concurrent
// CREATE TABLE IF NOT EXISTS may fail on PostgreSQL's catalog).
constexpr const char* schema_lock = "SELECT pg_advisory_xact_lock(4705519084453740546)";

// One lock per projection name (two-key form: its own key space).
constexpr const char* projection_lock = "SELECT pg_advisory_xact_lock(1634627184, hashtext($1))";

constexpr const char* create_offsets_sql =
  "CREATE TABLE IF NOT EXISTS projection_offsets (name TEXT PRIMARY KEY,"
  " \"offset\" BIGINT NOT NULL)";

struct result_deleter {
  void operator()(PGresult* r) const {
    PQclear(r);
  }
};
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

bool succeeded(const PGresult* r) {
  auto st = PQresultStatus(r);
  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

// Runs `sql` with text parameters; throws `std::runtime_error` with the server's message.
result_ptr run(PGconn* db, const char* sql, std::initializer_list<std::string_view> params = {}) {
  std::vector<std::string> owned(params.begin(), params.end());
  std::vector<const char*> values;
  for (const auto& p : owned)
    values.push_back(p.c_str());
  result_ptr r{PQexecParams(db, sql, static_cast<int>(values.size()), nullptr, values.data(),
                            nullptr, nullptr, 0)};
  if (!succeeded(r.get()))
    throw std::runtime_error{std::string{r ? PQresultErrorMessage(r.get()) : PQerrorMessage(db)}};
  return r;
}

std::optional<std::uint64_t> read_offset(PGconn* db, const std::string& name) {
  auto r = run(db, "SELECT \"offset\" FROM projection_offsets WHERE name = $1", {name});
  if (PQntuples(r.get()) == 0)
    return std::nullopt;
  return std::stoull(PQgetvalue(r.get(), 0, 0));
}

// Whether libpq lost the server (the connection is unusable until reset).
bool lost(PGconn* db) {
  return db == nullptr || PQstatus(db) != CONNECTION_OK;
}

class postgres_sink final : public projection_sink {
public:
  postgres_sink(postgres_projection_options opts, std::shared_ptr<postgres_projection_handler> h)
    : opts_(std::move(opts)), handler_(std::move(h)) {}

  ~postgres_sink() override {
    if (db_ != nullptr)
      PQfinish(db_);
  }

  caf::expected<std::uint64_t> open() override {
    if (auto err = connect())
      return err;
    try {
      run(db_, "BEGIN");
      run(db_, schema_lock);
      run(db_, create_offsets_sql);
      try {
        handler_->create_schema(db_);
      } catch (...) {
        rollback();
        return make_error(projection_errc::read_model_failed,
                          "projection '" + opts_.name + "': create_schema threw on " + where()
                            + ": " + current_exception_text());
      }
      run(db_, "COMMIT");
      auto stored = read_offset(db_, opts_.name);
      return stored.value_or(0);
    } catch (const std::exception& e) {
      rollback();
      return fail("cannot prepare the read model", e.what());
    }
  }

  batch_outcome apply(std::span<const persistence::event_record> batch,
                      std::uint64_t prev) override {
    // A batch that lost the server is tried again on a new connection, a few times with a
    // growing pause; a COMMIT whose answer was lost is settled by the offset stored.
    pending_.reset();
    auto pause = std::chrono::milliseconds{100};
    for (int attempt = 1;; ++attempt) {
      caf::error err;
      if (lost(db_)) {
        err = connect();
        if (!err && pending_) {
          auto stored = stored_now();
          if (!stored) {
            err = std::move(stored.error());
          } else if (*stored == pending_) { // that COMMIT took effect
            batch_outcome out{*pending_, pending_applied_, {}};
            pending_.reset();
            return out;
          } else {
            pending_.reset();
          }
        }
      }
      if (!err) {
        auto out = run_batch(batch, prev);
        if (!out.err || !lost(db_) || attempt >= max_attempts)
          return out;
      } else if (attempt >= max_attempts) {
        return {prev, 0, std::move(err)};
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds{2'000});
    }
  }

  delivery guarantee() const noexcept override {
    return delivery::exactly_once;
  }

  caf::error reset() override {
    if (lost(db_))
      if (auto err = connect())
        return err;
    try {
      run(db_, "BEGIN");
      run(db_, projection_lock, {opts_.name});
      try {
        handler_->reset(db_);
      } catch (...) {
        rollback();
        return make_error(projection_errc::handler_failed,
                          "projection '" + opts_.name
                            + "': reset threw: " + current_exception_text());
      }
      run(db_,
          "INSERT INTO projection_offsets (name, \"offset\") VALUES ($1, 0)"
          " ON CONFLICT (name) DO UPDATE SET \"offset\" = 0",
          {opts_.name});
      run(db_, "COMMIT");
      return {};
    } catch (const std::exception& e) {
      rollback();
      return fail("cannot commit the reset", e.what());
    }
  }

private:
  static constexpr int max_attempts = 5;

  // One try of a batch; on a lost connection `err` is set and `lost(db_)` holds.
  batch_outcome run_batch(std::span<const persistence::event_record> batch, std::uint64_t prev) {
    batch_outcome out{prev, 0, {}};
    try {
      run(db_, "BEGIN");
      // Under the projection's lock, before any event: an instance that finds the offset
      // moved by another one stops here instead of applying what that one has applied.
      run(db_, projection_lock, {opts_.name});
      auto stored = read_offset(db_, opts_.name);
      if (stored.value_or(0) != prev) {
        rollback();
        out.err = offset_moved_error(opts_.name, where(), prev, stored);
        return out;
      }
      for (const auto& rec : batch) {
        if (opts_.filter.matches(rec)) {
          run(db_, "SAVEPOINT annals_event");
          try {
            handler_->apply(db_, rec);
          } catch (...) {
            out.err = handler_error(opts_.name, rec, current_exception_text());
            if (lost(db_))
              throw std::runtime_error{persistence::one_line(PQerrorMessage(db_))};
            run(db_, "ROLLBACK TO SAVEPOINT annals_event");
            run(db_, "RELEASE SAVEPOINT annals_event");
            break;
          }
          run(db_, "RELEASE SAVEPOINT annals_event");
          ++out.applied;
        }
        out.last_good = rec.offset;
      }
      if (out.last_good != prev) {
        auto to = std::to_string(out.last_good);
        auto moved = stored
                       ? run(db_,
                             "UPDATE projection_offsets SET \"offset\" = $2"
                             " WHERE name = $1 AND \"offset\" = $3",
                             {opts_.name, to, std::to_string(prev)})
                       : run(db_,
                             "INSERT INTO projection_offsets (name, \"offset\") VALUES ($1, $2)"
                             " ON CONFLICT (name) DO NOTHING",
                             {opts_.name, to});
        if (std::string_view{PQcmdTuples(moved.get())} != "1") {
          auto now = read_offset(db_, opts_.name);
          rollback();
          out.err = offset_moved_error(opts_.name, where(), prev, now);
          out.last_good = prev;
          out.applied = 0;
          return out;
        }
      }
      pending_ = out.last_good;
      pending_applied_ = out.applied;
      run(db_, "COMMIT");
      pending_.reset();
      return out;
    } catch (const std::exception& e) {
      bool commit_sent = pending_.has_value();
      if (!lost(db_))
        pending_.reset();
      rollback();
      auto what = std::string{e.what()};
      out.err = fail(commit_sent && lost(db_) ? "lost the server during a COMMIT (its outcome "
                                                "is read back from the stored offset)"
                                              : "cannot apply a batch",
                     what);
      out.last_good = prev;
      out.applied = 0;
      return out;
    }
  }

  caf::expected<std::optional<std::uint64_t>> stored_now() {
    try {
      return read_offset(db_, opts_.name);
    } catch (const std::exception& e) {
      return fail("cannot read the stored offset", e.what());
    }
  }

  caf::error connect() {
    if (db_ != nullptr)
      PQfinish(db_);
    auto timeout = std::to_string(std::max<long long>(
      1, std::chrono::ceil<std::chrono::seconds>(opts_.connect_timeout).count()));
    const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
    const char* values[] = {opts_.conninfo.c_str(), timeout.c_str(), "annals projection", nullptr};
    db_ = PQconnectdbParams(keys, values, 1);
    if (lost(db_))
      return fail("cannot connect", PQerrorMessage(db_));
    PQsetNoticeProcessor(
      db_, [](void*, const char*) {}, nullptr);
    server_ = std::string{PQhost(db_)} + ":" + PQport(db_) + "/" + PQdb(db_);
    return {};
  }

  void rollback() {
    if (!lost(db_) && PQtransactionStatus(db_) != PQTRANS_IDLE)
      result_ptr{PQexec(db_, "ROLLBACK")};
  }

  std::string where() const {
    return "PostgreSQL "
           + (server_.empty() ? persistence::redact_secrets(opts_.conninfo) : server_);
  }

  caf::error fail(std::string_view what, std::string_view detail) const {
    return make_error(projection_errc::read_model_failed,
                      "projection '" + opts_.name + "': " + std::string{what} + " on " + where()
                        + ": " + persistence::one_line(detail));
  }

  postgres_projection_options opts_;
  std::shared_ptr<postgres_projection_handler> handler_;
  PGconn* db_ = nullptr;
  std::string server_;
  std::optional<std::uint64_t> pending_; ///< set while a COMMIT is on the wire
  std::size_t pending_applied_ = 0;
};

} // namespace

postgres_projection_handler::~postgres_projection_handler() = default;
void postgres_projection_handler::create_schema(pg_conn*) {}

projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<postgres_projection_handler> handler,
                            postgres_projection_options opts) {
  sink_options so{opts.name, opts.page_size, opts.max_queued_batches};
  return spawn_projection(sys, std::move(journal),
                          std::make_shared<postgres_sink>(std::move(opts), std::move(handler)),
                          std::move(so));
}

void create_postgres_offsets_table(pg_conn* db) {
  run(db, schema_lock);
  run(db, create_offsets_sql);
}

std::uint64_t postgres_stored_offset(pg_conn* db, const std::string& name) {
  return read_offset(db, name).value_or(0);
}

} // namespace annals::actors

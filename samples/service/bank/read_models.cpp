#include "service/bank/read_models.hpp"

#include <chrono>
#include <exception>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <boost/json/array.hpp>
#include <sqlite3.h>

#include "account/balances.hpp"
#include "account/statement.hpp"
#include "annals/actors/offset_store.hpp"
#include "annals/error.hpp"
#include "service/bank/errors.hpp"
#include "service/bank/json_views.hpp"

namespace service {

namespace json = boost::json;

namespace {

// One prepared statement; a failure to prepare or step answers 503 "read_model_unavailable".
class query {
public:
  query(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      fail();
  }
  ~query() {
    sqlite3_finalize(stmt_);
  }
  query(const query&) = delete;
  query& operator=(const query&) = delete;
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

} // namespace

caf::error create_read_model_tables(const std::string& path) {
  sqlite3* db = nullptr;
  // The file is new when the journal lives elsewhere (JetStream); WAL lets the queries'
  // read-only connection read while the projections write.
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr)
      != SQLITE_OK) {
    auto msg = std::string{sqlite3_errmsg(db)};
    sqlite3_close(db);
    return annals::make_error(annals::errc::unavailable, "cannot open " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, 10'000);
  try {
    if (sqlite3_exec(db, "PRAGMA journal_mode = WAL", nullptr, nullptr, nullptr) != SQLITE_OK)
      throw std::runtime_error{sqlite3_errmsg(db)};
    bank::balances_projection{}.create_schema(db);
    bank::statement_projection{}.create_schema(db);
    if (!annals::actors::create_offsets_table(db, false, std::chrono::seconds{10}))
      throw std::runtime_error{sqlite3_errmsg(db)};
  } catch (const std::exception& e) {
    sqlite3_close(db);
    return annals::make_error(annals::errc::unavailable,
                              "cannot create the read models in " + path + ": " + e.what());
  }
  sqlite3_close(db);
  return {};
}

read_models::~read_models() = default;

namespace {

// One read-only connection, shared by the query workers (one query at a time).
class sqlite_read_models final : public read_models {
public:
  ~sqlite_read_models() override {
    close();
  }

  caf::error open(const std::string& path) {
    std::lock_guard guard{mtx_};
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr)
        != SQLITE_OK)
      return annals::make_error(annals::errc::unavailable, "cannot open the read models in " + path
                                                             + ": " + sqlite3_errmsg(db_));
    sqlite3_busy_timeout(db_, 5'000);
    return {};
  }

  void close() override {
    std::lock_guard guard{mtx_};
    if (db_ != nullptr)
      sqlite3_close(db_);
    db_ = nullptr;
  }

  json::object accounts(const std::string& after, std::uint64_t limit) override {
    std::lock_guard guard{mtx_};
    auto* db = db_;
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
    return json::object{{"offset", offset}, {"accounts", std::move(rows)}};
  }

  json::object statement(const std::string& id) override {
    std::lock_guard guard{mtx_};
    auto* db = db_;
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    auto offset = stored_offset(db, "statement");
    auto lines = bank::read_statement(db, id);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    if (!lines)
      throw api_error{503, "read_model_unavailable", annals::render(lines.error())};
    return statement_reply(id, offset, *lines);
  }

private:
  std::mutex mtx_;
  sqlite3* db_ = nullptr;
};

} // namespace

caf::expected<std::unique_ptr<read_models>> open_sqlite_read_models(const std::string& path) {
  auto models = std::make_unique<sqlite_read_models>();
  if (auto err = models->open(path))
    return err;
  return std::unique_ptr<read_models>{std::move(models)};
}

json::object statement_reply(const std::string& id, std::uint64_t offset,
                             const std::vector<bank::statement_line>& lines) {
  if (lines.empty())
    throw api_error{404, "not_found", "no statement for account " + id};
  json::array rows;
  for (const auto& l : lines) {
    json::object o{{"seq", l.seq},         {"offset", l.offset},
                   {"kind", l.kind},       {"amount", l.amount},
                   {"balance", l.balance}, {"timestamp", iso_time(l.timestamp_ms * 1000)}};
    if (!l.correlation_id.empty())
      o["correlation_id"] = l.correlation_id;
    rows.push_back(std::move(o));
  }
  return json::object{{"id", id}, {"offset", offset}, {"lines", std::move(rows)}};
}

} // namespace service

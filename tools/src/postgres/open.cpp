// The tool's side of the PostgreSQL journal: a `postgresql://USER@HOST:PORT/DB` URI becomes a
// `postgres_journal`, after a look at the database with a connection of the tool's own, so
// that reading never creates or migrates a schema (a database without the annals marker is
// refused, naming the server and the database). The same connection reads the stored hash
// chain for `export`.

#include <libpq-fe.h>

#include "annals/persistence/postgres_journal.hpp"
#include "annals/persistence/redact.hpp"

#include "../remote_journal.hpp"

namespace annals::tools::detail {

namespace {

using persistence::postgres_journal;

/// Where a URI points, for messages: the host, port and database it names (libpq's defaults
/// where it names none). Never the password.
struct target {
  std::string host;
  std::string port;
  std::string dbname;

  std::string server() const {
    return host + ":" + port;
  }
  /// `database DB at HOST:PORT`
  std::string text() const {
    return "database " + dbname + " at " + server();
  }
};

/// Parses `uri` with libpq; a usage error naming what libpq refused if it cannot.
target target_of(const std::string& uri) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(uri.c_str(), &err);
  if (opts == nullptr) {
    std::string why = err != nullptr ? persistence::one_line(err) : "out of memory";
    PQfreemem(err);
    usage_error("not a PostgreSQL URI (postgresql://USER@HOST:PORT/DB): " + why);
  }
  target t;
  std::string user;
  for (auto* o = opts; o->keyword != nullptr; ++o) {
    std::string_view key = o->keyword;
    std::string value = o->val != nullptr ? o->val : "";
    if (key == "host")
      t.host = value;
    else if (key == "port")
      t.port = value;
    else if (key == "dbname")
      t.dbname = value;
    else if (key == "user")
      user = value;
  }
  PQconninfoFree(opts);
  if (t.host.empty())
    t.host = "localhost";
  if (t.port.empty())
    t.port = "5432";
  if (t.dbname.empty())
    t.dbname = user.empty() ? "(the user's name)" : user;
  return t;
}

/// A libpq connection, finished on destruction.
struct pg_connection {
  PGconn* conn = nullptr;
  pg_connection() = default;
  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;
  ~pg_connection() {
    if (conn != nullptr)
      PQfinish(conn);
  }
};

/// A query result, cleared on destruction.
struct pg_result {
  PGresult* res;
  explicit pg_result(PGresult* r) : res(r) {}
  pg_result(const pg_result&) = delete;
  pg_result& operator=(const pg_result&) = delete;
  ~pg_result() {
    if (res != nullptr)
      PQclear(res);
  }
  bool ok() const {
    return res != nullptr && PQresultStatus(res) == PGRES_TUPLES_OK;
  }
};

class postgres_remote final : public remote_journal {
public:
  postgres_remote(std::string uri, target where, std::unique_ptr<pg_connection> conn,
                  std::shared_ptr<postgres_journal> j)
    : uri_(std::move(uri)), where_(std::move(where)), conn_(std::move(conn)), j_(std::move(j)) {}
  ~postgres_remote() override {
    j_->close();
  }
  persistence::journal& journal() override {
    return *j_;
  }
  std::string describe() const override {
    return "PostgreSQL " + where_.text();
  }
  caf::expected<persistence::verify_report> verify() override {
    return postgres_journal::verify(uri_);
  }
  std::optional<std::map<std::uint64_t, persistence::event_hash>>
  stored_hashes(std::uint64_t from, std::uint64_t to) override {
    auto from_text = std::to_string(from);
    auto to_text = std::to_string(to);
    const char* params[] = {from_text.c_str(), to_text.c_str()};
    pg_result r{PQexecParams(conn_->conn,
                             "SELECT global_offset, encode(hash, 'hex') FROM events WHERE "
                             "global_offset BETWEEN $1::bigint AND $2::bigint ORDER BY "
                             "global_offset",
                             2, nullptr, params, nullptr, nullptr, 0)};
    if (!r.ok())
      fail("reading the stored hashes of offsets " + from_text + " to " + to_text + " in "
           + where_.text() + ": " + persistence::one_line(PQerrorMessage(conn_->conn)));
    std::map<std::uint64_t, persistence::event_hash> hashes;
    for (int row = 0; row < PQntuples(r.res); ++row) {
      if (PQgetisnull(r.res, row, 1))
        continue;
      auto h = persistence::hash_from_hex(PQgetvalue(r.res, row, 1));
      if (h)
        hashes.emplace(std::stoull(PQgetvalue(r.res, row, 0)), *h);
    }
    return hashes;
  }

private:
  std::string uri_;
  target where_;
  std::unique_ptr<pg_connection> conn_;
  std::shared_ptr<postgres_journal> j_;
};

} // namespace

std::unique_ptr<remote_journal> open_postgres(const std::string& uri, bool create) {
  auto where = target_of(uri);
  // The URI expanded as `dbname`: every parameter it names applies, and a bound on the wait.
  const char* keys[] = {"connect_timeout", "dbname", nullptr};
  const char* values[] = {"10", uri.c_str(), nullptr};
  auto conn = std::make_unique<pg_connection>();
  conn->conn = PQconnectdbParams(keys, values, 1);
  if (conn->conn == nullptr)
    fail("cannot allocate a PostgreSQL connection");
  if (PQstatus(conn->conn) != CONNECTION_OK)
    fail("cannot connect to PostgreSQL " + where.text() + ": "
         + persistence::one_line(PQerrorMessage(conn->conn)));
  // What the server says it is, rather than libpq's defaults.
  if (const char* host = PQhost(conn->conn); host != nullptr && *host != '\0')
    where.host = host;
  where.port = PQport(conn->conn);
  where.dbname = PQdb(conn->conn);
  // A read-only look: no lock, no table, nothing written.
  pg_result probe{PQexec(conn->conn, "SELECT to_regclass('annals_schema') IS NOT NULL, "
                                     "to_regclass('events') IS NOT NULL")};
  if (!probe.ok())
    fail("looking for the annals schema in PostgreSQL " + where.text() + ": "
         + persistence::one_line(PQerrorMessage(conn->conn)));
  bool has_marker = std::string_view{PQgetvalue(probe.res, 0, 0)} == "t";
  bool has_events = std::string_view{PQgetvalue(probe.res, 0, 1)} == "t";
  if (!has_marker && has_events)
    fail("PostgreSQL " + where.text()
         + " has a table events but no annals_schema marker: it is not an annals journal; "
           "nothing was changed");
  if (!has_marker && !create)
    fail("no annals journal in PostgreSQL " + where.text()
         + " (no table annals_schema); reading creates nothing: name the journal's database, "
           "or import into this one first");
  // With the marker present, `open` only checks the schema version; without it (import),
  // it creates the schema.
  auto j = postgres_journal::open({.conninfo = uri});
  if (!j)
    fail(render(j.error()));
  return std::make_unique<postgres_remote>(uri, std::move(where), std::move(conn), std::move(*j));
}

} // namespace annals::tools::detail

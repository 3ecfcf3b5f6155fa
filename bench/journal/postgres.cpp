// bench_journal, PostgreSQL: `postgres_journal` (group-committed appends under its offset
// lock, hash chain, seq checks; paged replay) beside raw libpq on the same rows and the same
// server in the same process. Every run writes a fresh database (`annals_bench_*`, created
// through the --journal URI's database and dropped at the end), so the journal and the
// baseline both start from an empty table.
//
// The baseline: an `events` table with the journal's columns and constraints (primary key
// global_offset, UNIQUE (persistence_id, seq), a 32-byte hash) and no triggers, loaded with
// `COPY ... FROM STDIN` in batches of --in-flight rows (`raw_connections` connections, at
// most --in-flight rows outstanding in all), each COPY one autocommitted transaction. Its
// offsets are numbered in advance (it is the only writer of its table) and its hash is a
// constant; a row's latency is its batch's, from building the COPY data to its commit. Its
// replay: one transaction reading the same columns through a cursor in order of offset,
// decoding every payload as the journal's replay does.

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "annals/persistence/postgres_journal.hpp"

#include "journal.hpp"

namespace bench::journal_bench {

namespace {

// -- libpq of the bench's own ---------------------------------------------------------------

/// One libpq connection; dies if it cannot connect.
struct pg_connection {
  PGconn* conn = nullptr;

  explicit pg_connection(const std::string& conninfo) : conn(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(conn) != CONNECTION_OK)
      die("connecting to " + conninfo + ": " + PQerrorMessage(conn));
  }
  ~pg_connection() {
    PQfinish(conn);
  }
  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;

  /// Runs `sql` (one or more statements); dies unless the last one succeeds.
  void run(const std::string& sql) {
    PGresult* res = PQexec(conn, sql.c_str());
    auto st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      std::string msg = PQresultErrorMessage(res);
      PQclear(res);
      die(sql + ": " + msg);
    }
    PQclear(res);
  }

  /// The first column of the first row `sql` returns.
  std::string value(const std::string& sql) {
    PGresult* res = PQexec(conn, sql.c_str());
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
      std::string msg = PQresultErrorMessage(res);
      PQclear(res);
      die(sql + ": " + msg);
    }
    std::string out = PQgetvalue(res, 0, 0);
    PQclear(res);
    return out;
  }
};

/// The connection string of `uri` (a libpq URI or keyword string) with its database
/// replaced by `dbname`.
std::string conninfo_for(const std::string& uri, const std::string& dbname) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(uri.c_str(), &err);
  if (opts == nullptr) {
    std::string msg = err != nullptr ? err : "out of memory";
    PQfreemem(err);
    die("--journal " + uri + ": " + msg);
  }
  auto quoted = [](std::string_view v) {
    std::string out = "'";
    for (char c : v) {
      if (c == '\'' || c == '\\')
        out += '\\';
      out += c;
    }
    return out + "'";
  };
  std::string out;
  for (auto* o = opts; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || std::string_view{o->keyword} == "dbname")
      continue;
    out += std::string{o->keyword} + "=" + quoted(o->val) + " ";
  }
  PQconninfoFree(opts);
  return out + "dbname=" + quoted(dbname);
}

/// Fresh databases on the server, dropped by `drop` or at the end.
struct databases {
  pg_connection admin;
  std::string uri;
  std::string prefix;
  std::vector<std::string> created;

  explicit databases(const std::string& u)
    : admin(u), uri(u),
      prefix("annals_bench_" + std::to_string(std::random_device{}() % 1'000'000) + "_") {}
  ~databases() {
    for (const auto& name : created)
      drop_quietly(name);
  }
  databases(const databases&) = delete;
  databases& operator=(const databases&) = delete;

  /// Creates database prefix + `suffix`; returns its connection string.
  std::string create(const std::string& suffix) {
    auto name = prefix + suffix;
    admin.run("CREATE DATABASE " + name);
    created.push_back(name);
    return conninfo_for(uri, name);
  }

  void drop(const std::string& suffix) {
    auto name = prefix + suffix;
    drop_quietly(name);
    created.erase(std::remove(created.begin(), created.end(), name), created.end());
  }

private:
  void drop_quietly(const std::string& name) {
    PQclear(PQexec(admin.conn, ("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)").c_str()));
  }
};

// -- the raw baseline -----------------------------------------------------------------------

constexpr const char* raw_table = R"sql(
CREATE TABLE events (
  global_offset bigint PRIMARY KEY CHECK (global_offset > 0),
  persistence_id text NOT NULL CHECK (persistence_id <> ''),
  seq bigint NOT NULL CHECK (seq > 0),
  name text NOT NULL CHECK (name <> ''),
  version integer NOT NULL CHECK (version > 0),
  payload text NOT NULL,
  tags text,
  timestamp_us bigint NOT NULL,
  command_id text,
  correlation_id text,
  hash bytea NOT NULL CHECK (length(hash) = 32),
  UNIQUE (persistence_id, seq)
))sql";

constexpr const char* copy_sql =
  "COPY events (global_offset, persistence_id, seq, name, version, payload, tags, timestamp_us, "
  "command_id, correlation_id, hash) FROM STDIN";

/// Connections of the baseline; at most --in-flight rows are outstanding, spread over them.
/// One connection with batches of --in-flight rows was the fastest measured here (2, 4 and 8
/// connections with smaller batches, and multi-row INSERTs with parameters, were slower).
constexpr std::size_t raw_connections = 1;

/// `s` as a field of COPY's text format.
void append_copy_field(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out += c;
    }
  }
}

/// Writes rows [begin, end) in one COPY (one transaction); dies on failure.
void copy_batch(PGconn* conn, const std::vector<row>& rows, std::size_t begin, std::size_t end,
                std::string& buf) {
  static const std::string hash_field = "\\\\x" + std::string(64, '0');
  auto ts = std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count());
  buf.clear();
  for (auto i = begin; i < end; ++i) {
    const auto& r = rows[i];
    buf += std::to_string(i + 1);
    buf += '\t';
    append_copy_field(buf, r.persistence_id);
    buf += '\t';
    buf += std::to_string(r.seq);
    buf += "\tbench.deposited\t1\t";
    append_copy_field(buf, r.payload);
    buf += "\t\\N\t";
    buf += ts;
    buf += "\t\\N\t\\N\t";
    buf += hash_field;
    buf += '\n';
  }
  PGresult* res = PQexec(conn, copy_sql);
  if (PQresultStatus(res) != PGRES_COPY_IN)
    die(std::string{"COPY: "} + PQresultErrorMessage(res));
  PQclear(res);
  if (PQputCopyData(conn, buf.data(), static_cast<int>(buf.size())) != 1
      || PQputCopyEnd(conn, nullptr) != 1)
    die(std::string{"COPY: "} + PQerrorMessage(conn));
  bool ok = true;
  std::string msg;
  while ((res = PQgetResult(conn)) != nullptr) {
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
      ok = false;
      msg = PQresultErrorMessage(res);
    }
    PQclear(res);
  }
  if (!ok)
    die("COPY: " + msg);
}

void run_raw_appends(const std::string& conninfo, const std::vector<row>& rows,
                     std::size_t in_flight, append_figures& out) {
  {
    pg_connection c{conninfo};
    c.run(raw_table);
  }
  auto n = rows.size();
  auto conns = std::min(raw_connections, in_flight);
  auto batch = std::max<std::size_t>(in_flight / conns, 1);
  std::vector<std::unique_ptr<pg_connection>> pool;
  for (std::size_t k = 0; k < conns; ++k) {
    pool.push_back(std::make_unique<pg_connection>(conninfo));
    pool.back()->run("SET synchronous_commit = on");
  }
  std::vector<double> latency_ms(n);
  std::atomic<std::size_t> next{0};
  auto start = clock_type::now();
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < conns; ++k) {
    threads.emplace_back([&, conn = pool[k]->conn] {
      std::string buf;
      for (;;) {
        auto begin = next.fetch_add(batch);
        if (begin >= n)
          return;
        auto end = std::min(begin + batch, n);
        auto t0 = clock_type::now();
        copy_batch(conn, rows, begin, end, buf);
        auto ms = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
        std::fill(latency_ms.begin() + static_cast<std::ptrdiff_t>(begin),
                  latency_ms.begin() + static_cast<std::ptrdiff_t>(end), ms);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  out.baseline_events_per_s = static_cast<double>(n) / seconds_since(start);
  out.baseline_p50_ms = percentile(latency_ms, 0.50);
  out.baseline_p99_ms = percentile(latency_ms, 0.99);
}

/// Reads every event of the database at `conninfo` in order of offset (the columns the
/// journal reads) through a cursor, decoding each payload; keeps the best rate in `out`.
void run_raw_replay(const std::string& conninfo, replay_figures& out) {
  pg_connection c{conninfo};
  auto start = clock_type::now();
  c.run("BEGIN; DECLARE replay NO SCROLL CURSOR FOR SELECT global_offset, persistence_id, seq, "
        "name, version, payload, tags, timestamp_us, command_id, correlation_id FROM events "
        "ORDER BY global_offset");
  std::size_t rows = 0;
  std::int64_t sum = 0;
  for (;;) {
    PGresult* res = PQexec(c.conn, "FETCH FORWARD 8192 FROM replay");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
      die(std::string{"FETCH: "} + PQresultErrorMessage(res));
    auto got = PQntuples(res);
    for (int i = 0; i < got; ++i)
      sum +=
        decode_cents({PQgetvalue(res, i, 5), static_cast<std::size_t>(PQgetlength(res, i, 5))});
    PQclear(res);
    rows += static_cast<std::size_t>(got);
    if (got == 0)
      break;
  }
  c.run("COMMIT");
  auto elapsed = seconds_since(start);
  out.baseline_rows_per_s = std::max(out.baseline_rows_per_s, static_cast<double>(rows) / elapsed);
  if (sum == 42)
    std::puts("");
}

// -- the journal ----------------------------------------------------------------------------

std::shared_ptr<postgres_journal> open_journal(const std::string& conninfo) {
  auto j = postgres_journal::open({.conninfo = conninfo});
  if (!j)
    die(annals::render(j.error()));
  return *j;
}

} // namespace

results run_postgres(const config& cfg) {
  results res;
  res.journal = "postgresql";
  res.events = cfg.events == 0 ? 50'000 : cfg.events;
  databases dbs{cfg.uri};
  auto version = dbs.admin.value("SHOW server_version");
  auto fsync = dbs.admin.value("SHOW fsync");
  res.durability = "synchronous_commit on, server fsync " + fsync;
  auto conns = std::min(raw_connections, cfg.in_flight);
  res.baseline = "raw libpq COPY FROM STDIN into an equivalent table (same columns and "
                 "constraints, no triggers), "
                 + std::to_string(conns) + (conns == 1 ? " connection" : " connections")
                 + ", batches of " + std::to_string(std::max<std::size_t>(cfg.in_flight / conns, 1))
                 + " rows, each one transaction, synchronous_commit on; one cursor reading";
  if (!cfg.json)
    std::printf("server: PostgreSQL %s, fsync %s, synchronous_commit on (journal and baseline)\n",
                version.c_str(), fsync.c_str());
  std::string replay_db;
  for (std::size_t ids : {std::size_t{1}, std::size_t{100}, std::size_t{10'000}}) {
    auto rows = make_rows(res.events, ids);
    append_figures fig;
    fig.ids = ids;
    // Alternating the two runs and keeping the best of each, so that a burst of someone
    // else's I/O on the shared machine does not decide the ratio.
    for (std::size_t round = 0; round < cfg.rounds; ++round) {
      auto suffix = std::to_string(ids) + "_" + std::to_string(round);
      append_figures run;
      {
        auto j = open_journal(dbs.create("j" + suffix));
        run_journal_appends(*j, rows, cfg.in_flight, run);
        j->close();
      }
      if (run.failed > 0)
        std::fprintf(stderr, "bench_journal: %llu journal appends failed\n",
                     static_cast<unsigned long long>(run.failed));
      run_raw_appends(dbs.create("r" + suffix), rows, cfg.in_flight, run);
      dbs.drop("r" + suffix);
      if (round == 0 || run.events_per_s > fig.events_per_s) {
        fig.events_per_s = run.events_per_s;
        fig.p50_ms = run.p50_ms;
        fig.p99_ms = run.p99_ms;
        fig.max_ms = run.max_ms;
      }
      if (run.baseline_events_per_s > fig.baseline_events_per_s) {
        fig.baseline_events_per_s = run.baseline_events_per_s;
        fig.baseline_p50_ms = run.baseline_p50_ms;
        fig.baseline_p99_ms = run.baseline_p99_ms;
      }
      fig.failed += run.failed;
      if (!replay_db.empty())
        dbs.drop(replay_db);
      replay_db = "j" + suffix;
    }
    res.appends.push_back(fig);
    if (!cfg.json)
      print_append(fig, false);
  }
  // Both reads cover the last 10,000-id journal database; alternating (at least 3 times)
  // and keeping the best of each.
  auto replay_info = conninfo_for(cfg.uri, dbs.prefix + replay_db);
  for (std::size_t round = 0; round < std::max<std::size_t>(cfg.rounds, 3); ++round) {
    run_raw_replay(replay_info, res.replay);
    auto j = open_journal(replay_info);
    run_journal_replay(*j, 2048, res.replay);
    j->close();
  }
  return res;
}

} // namespace bench::journal_bench

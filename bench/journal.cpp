// bench_journal: group-committed appends and paged replay of the SQLite journal, each
// beside a raw-SQLite baseline run in the same process on the same rows and settings.
//
//   bench_journal [--events N] [--in-flight N] [--rounds N] [--dir PATH] [--json]
//
// Appends: N events (one per append, ~100-byte JSON payloads, durability full) round-robin
// over 1, 100 and 10,000 persistence ids, with `--in-flight` appends outstanding at any
// time; the baseline writes the same rows with plain prepared INSERTs, 1,000 per
// transaction. Replay: `read_all` in pages, parsing every payload with Boost.JSON, against
// a plain SELECT over the same file doing the same parsing. Prints figures; asserts nothing.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <sqlite3.h>

#include "annals/persistence/sqlite_journal.hpp"

#include "common.hpp"

namespace {

using bench::die;
using bench::percentile;
using bench::remove_db;

using namespace annals::persistence;
using clock_type = std::chrono::steady_clock;

struct config {
  std::size_t events = 100'000;
  std::size_t in_flight = 1'000;
  std::size_t rounds = 2;
  std::string dir;
  bool json = false;
};

struct row {
  std::string persistence_id;
  std::uint64_t seq;
  std::string payload;
};

struct append_figures {
  std::size_t ids = 0;
  double events_per_s = 0;
  double baseline_events_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  std::uint64_t transactions = 0;
  std::uint64_t failed = 0;
};

struct replay_figures {
  std::size_t rows = 0;
  double rows_per_s = 0;
  double baseline_rows_per_s = 0;
};

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

std::vector<row> make_rows(std::size_t events, std::size_t ids) {
  std::vector<row> rows;
  rows.reserve(events);
  std::vector<std::uint64_t> seqs(ids, 0);
  std::mt19937_64 rng{42};
  char buf[160];
  for (std::size_t i = 0; i < events; ++i) {
    auto id = i % ids;
    char pid[32];
    std::snprintf(pid, sizeof(pid), "account|acc-%06zu", id);
    auto cents = static_cast<long long>(rng() % 1'000'000);
    auto n = std::snprintf(buf, sizeof(buf),
                           R"({"account":"acc-%06zu","cents":%lld,"currency":"EUR",)"
                           R"("memo":"bench deposit %08zu","channel":"api"})",
                           id, cents, i);
    rows.push_back(row{pid, ++seqs[id], std::string(buf, static_cast<std::size_t>(n))});
  }
  return rows;
}

/// The work every replay does per row: parse the payload and read a field.
std::int64_t decode_cents(std::string_view payload) {
  unsigned char buf[1024];
  boost::json::monotonic_resource mr{buf, sizeof(buf)};
  boost::system::error_code ec;
  auto jv = boost::json::parse(payload, ec, &mr);
  if (ec)
    die("invalid JSON in replay: " + std::string{payload});
  return jv.as_object().at("cents").as_int64();
}

// -- the journal --------------------------------------------------------------------------

void run_journal_appends(const std::string& path, const std::vector<row>& rows,
                         std::size_t in_flight, append_figures& out) {
  auto opened = sqlite_journal::open({.path = path, .durability = durability_level::full});
  if (!opened)
    die(annals::render(opened.error()));
  auto j = *opened;
  auto n = rows.size();
  // The state the completion callbacks need, behind one pointer so that each callback
  // (pointer + index) fits std::function's inline storage: no allocation per append.
  struct driver {
    sqlite_journal* j;
    const std::vector<row>* rows;
    std::vector<clock_type::time_point> started;
    std::vector<double> latency_ms;
    std::mutex mtx;
    std::condition_variable cv;
    std::size_t next = 0;
    std::size_t completed = 0;
    std::uint64_t failed = 0;

    // Called with `mtx` held, so that queue order matches seq order per stream.
    void submit_locked() {
      auto i = next++;
      const auto& r = (*rows)[i];
      append_request req;
      req.persistence_id = r.persistence_id;
      req.expected_seq = r.seq - 1;
      req.events.push_back(annals::encoded_event{"bench.deposited", 1, r.payload, {}});
      started[i] = clock_type::now();
      j->append(std::move(req), [self = this, i](caf::expected<append_result> res) {
        self->done(i, static_cast<bool>(res));
      });
    }

    void done(std::size_t i, bool ok) {
      latency_ms[i] =
        std::chrono::duration<double, std::milli>(clock_type::now() - started[i]).count();
      std::lock_guard guard{mtx};
      if (!ok)
        ++failed;
      if (next < rows->size())
        submit_locked();
      if (++completed == rows->size())
        cv.notify_all();
    }
  };
  driver d{j.get(), &rows, std::vector<clock_type::time_point>(n), std::vector<double>(n)};
  auto start = clock_type::now();
  {
    std::lock_guard guard{d.mtx};
    while (d.next < std::min(in_flight, n))
      d.submit_locked();
  }
  {
    std::unique_lock lk{d.mtx};
    d.cv.wait(lk, [&] { return d.completed == n; });
  }
  auto& latency_ms = d.latency_ms;
  auto elapsed = seconds_since(start);
  out.events_per_s = static_cast<double>(n) / elapsed;
  out.p50_ms = percentile(latency_ms, 0.50);
  out.p99_ms = percentile(latency_ms, 0.99);
  out.max_ms = *std::max_element(latency_ms.begin(), latency_ms.end());
  out.transactions = j->stats().transactions;
  out.failed = d.failed;
  j->close();
}

void run_journal_replay(const std::string& path, std::size_t page, replay_figures& out) {
  auto opened = sqlite_journal::open({.path = path});
  if (!opened)
    die(annals::render(opened.error()));
  auto j = *opened;
  std::mutex mtx;
  std::condition_variable cv;
  std::deque<std::vector<event_record>> pages;
  std::optional<caf::error> failure;
  bool finished = false;
  // The reader thread fetches the next page while this thread decodes the current one,
  // as a projection would.
  std::function<void(std::uint64_t)> fetch = [&](std::uint64_t from) {
    j->read_all(from, page, [&](caf::expected<std::vector<event_record>> res) {
      std::lock_guard guard{mtx};
      if (!res) {
        failure = res.error();
      } else if (res->empty()) {
        finished = true;
      } else {
        fetch(res->back().offset + 1);
        pages.push_back(std::move(*res));
      }
      cv.notify_all();
    });
  };
  auto start = clock_type::now();
  std::size_t rows = 0;
  std::int64_t sum = 0;
  fetch(1);
  for (;;) {
    std::vector<event_record> current;
    {
      std::unique_lock lk{mtx};
      cv.wait(lk, [&] { return !pages.empty() || finished || failure; });
      if (failure)
        die(annals::render(*failure));
      if (pages.empty())
        break;
      current = std::move(pages.front());
      pages.pop_front();
    }
    for (const auto& rec : current)
      sum += decode_cents(rec.payload);
    rows += current.size();
  }
  auto elapsed = seconds_since(start);
  out.rows = rows;
  out.rows_per_s = std::max(out.rows_per_s, static_cast<double>(rows) / elapsed);
  if (sum == 42)
    std::puts(""); // keeps the decoding observable
  j->close();
}

// -- the raw baseline ---------------------------------------------------------------------

void check(int rc, sqlite3* db, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
    die(std::string{what} + ": " + sqlite3_errmsg(db));
}

sqlite3* open_raw(const std::string& path) {
  sqlite3* db = nullptr;
  check(sqlite3_open(path.c_str(), &db), db, "open");
  for (const char* sql : {"PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
                          "PRAGMA temp_store = MEMORY", "PRAGMA cache_size = -32768"})
    check(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), db, sql);
  return db;
}

void run_baseline_appends(const std::string& path, const std::vector<row>& rows,
                          append_figures& out) {
  auto db = open_raw(path);
  check(sqlite3_exec(db,
                     "CREATE TABLE events (global_offset INTEGER PRIMARY KEY, "
                     "persistence_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, "
                     "version INTEGER NOT NULL, payload TEXT NOT NULL, tags TEXT, "
                     "timestamp_us INTEGER NOT NULL, command_id TEXT, correlation_id TEXT, "
                     "UNIQUE (persistence_id, seq))",
                     nullptr, nullptr, nullptr),
        db, "create table");
  sqlite3_stmt* ins = nullptr;
  check(sqlite3_prepare_v2(db,
                           "INSERT INTO events (global_offset, persistence_id, seq, name, "
                           "version, payload, timestamp_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           -1, &ins, nullptr),
        db, "prepare");
  auto start = clock_type::now();
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < rows.size(); i += 1000) {
    check(sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr), db, "begin");
    auto ts = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
    for (auto k = i; k < std::min(i + 1000, rows.size()); ++k) {
      const auto& r = rows[k];
      sqlite3_bind_int64(ins, 1, ++offset);
      sqlite3_bind_text(ins, 2, r.persistence_id.data(), static_cast<int>(r.persistence_id.size()),
                        SQLITE_STATIC);
      sqlite3_bind_int64(ins, 3, static_cast<std::int64_t>(r.seq));
      sqlite3_bind_text(ins, 4, "bench.deposited", -1, SQLITE_STATIC);
      sqlite3_bind_int(ins, 5, 1);
      sqlite3_bind_text(ins, 6, r.payload.data(), static_cast<int>(r.payload.size()),
                        SQLITE_STATIC);
      sqlite3_bind_int64(ins, 7, ts);
      check(sqlite3_step(ins), db, "insert");
      sqlite3_reset(ins);
    }
    check(sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr), db, "commit");
  }
  out.baseline_events_per_s = static_cast<double>(rows.size()) / seconds_since(start);
  sqlite3_finalize(ins);
  sqlite3_close(db);
}

void run_baseline_replay(const std::string& path, replay_figures& out) {
  auto db = open_raw(path);
  sqlite3_stmt* sel = nullptr;
  check(sqlite3_prepare_v2(db,
                           "SELECT global_offset, persistence_id, seq, name, version, payload, "
                           "tags, timestamp_us, command_id, correlation_id FROM events ORDER BY "
                           "global_offset",
                           -1, &sel, nullptr),
        db, "prepare");
  auto start = clock_type::now();
  std::size_t rows = 0;
  std::int64_t sum = 0;
  int rc;
  while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
    auto payload = reinterpret_cast<const char*>(sqlite3_column_text(sel, 5));
    auto len = static_cast<std::size_t>(sqlite3_column_bytes(sel, 5));
    sum += decode_cents({payload, len});
    ++rows;
  }
  check(rc, db, "select");
  auto elapsed = seconds_since(start);
  out.baseline_rows_per_s = std::max(out.baseline_rows_per_s, static_cast<double>(rows) / elapsed);
  if (sum == 42)
    std::puts("");
  sqlite3_finalize(sel);
  sqlite3_close(db);
}

} // namespace

int main(int argc, char** argv) {
  config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        die("missing value for " + arg);
      return argv[++i];
    };
    if (arg == "--events")
      cfg.events = std::stoul(value());
    else if (arg == "--in-flight")
      cfg.in_flight = std::stoul(value());
    else if (arg == "--rounds")
      cfg.rounds = std::max<std::size_t>(std::stoul(value()), 1);
    else if (arg == "--dir")
      cfg.dir = value();
    else if (arg == "--json")
      cfg.json = true;
    else
      die("usage: bench_journal [--events N] [--in-flight N] [--rounds N] [--dir PATH] [--json]");
  }
  if (cfg.events == 0 || cfg.in_flight == 0)
    die("--events and --in-flight must be positive");
  std::filesystem::path dir;
  if (cfg.dir.empty()) {
    dir = std::filesystem::temp_directory_path()
          / ("annals-bench-" + std::to_string(std::random_device{}()));
  } else {
    dir = cfg.dir;
  }
  std::filesystem::create_directories(dir);
  std::vector<append_figures> appends;
  replay_figures replay;
  std::string replay_file;
  for (std::size_t ids : {std::size_t{1}, std::size_t{100}, std::size_t{10'000}}) {
    auto rows = make_rows(cfg.events, ids);
    append_figures fig;
    fig.ids = ids;
    auto journal_file = (dir / ("journal-" + std::to_string(ids) + ".db")).string();
    auto raw_file = (dir / ("raw-" + std::to_string(ids) + ".db")).string();
    remove_db(journal_file);
    remove_db(raw_file);
    // The machine is shared and its disk is noisy: alternate the two runs and keep the
    // best of each, so that a burst of someone else's I/O does not decide the ratio.
    for (std::size_t round = 0; round < cfg.rounds; ++round) {
      remove_db(journal_file);
      remove_db(raw_file);
      append_figures run;
      run_journal_appends(journal_file, rows, cfg.in_flight, run);
      run_baseline_appends(raw_file, rows, run);
      if (round == 0 || run.events_per_s > fig.events_per_s) {
        fig.events_per_s = run.events_per_s;
        fig.p50_ms = run.p50_ms;
        fig.p99_ms = run.p99_ms;
        fig.max_ms = run.max_ms;
        fig.transactions = run.transactions;
      }
      fig.baseline_events_per_s = std::max(fig.baseline_events_per_s, run.baseline_events_per_s);
      fig.failed += run.failed;
    }
    appends.push_back(fig);
    if (!cfg.json)
      std::printf("append  %6zu ids: %9.0f events/s  baseline %9.0f events/s  ratio %5.2f  "
                  "p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms  (%llu commits)\n",
                  ids, fig.events_per_s, fig.baseline_events_per_s,
                  fig.events_per_s / fig.baseline_events_per_s, fig.p50_ms, fig.p99_ms, fig.max_ms,
                  static_cast<unsigned long long>(fig.transactions));
    remove_db(raw_file);
    if (!replay_file.empty())
      remove_db(replay_file);
    replay_file = journal_file;
  }
  // Both scans read the same journal file; alternating (at least 3 times) and keeping the best of
  // each takes cold-cache effects out of the comparison.
  for (std::size_t round = 0; round < std::max<std::size_t>(cfg.rounds, 3); ++round) {
    run_baseline_replay(replay_file, replay);
    run_journal_replay(replay_file, 2048, replay);
  }
  remove_db(replay_file);
  if (cfg.dir.empty())
    std::filesystem::remove_all(dir);
  double replay_ratio = replay.rows_per_s / replay.baseline_rows_per_s;
  bool appends_met = true;
  bool latency_met = true;
  for (const auto& fig : appends) {
    appends_met = appends_met && fig.events_per_s >= 0.7 * fig.baseline_events_per_s;
    latency_met = latency_met && fig.p99_ms < 50.0;
  }
  bool replay_met = replay_ratio >= 0.7;
  if (cfg.json) {
    boost::json::object obj;
    obj["events"] = cfg.events;
    obj["in_flight"] = cfg.in_flight;
    obj["durability"] = "full";
    boost::json::array arr;
    for (const auto& fig : appends) {
      arr.push_back(boost::json::object{
        {"ids", fig.ids},
        {"events_per_s", fig.events_per_s},
        {"baseline_events_per_s", fig.baseline_events_per_s},
        {"ratio", fig.events_per_s / fig.baseline_events_per_s},
        {"p50_ms", fig.p50_ms},
        {"p99_ms", fig.p99_ms},
        {"max_ms", fig.max_ms},
        {"transactions", fig.transactions},
        {"failed", fig.failed},
      });
    }
    obj["append"] = std::move(arr);
    obj["replay"] = boost::json::object{
      {"rows", replay.rows},
      {"rows_per_s", replay.rows_per_s},
      {"baseline_rows_per_s", replay.baseline_rows_per_s},
      {"ratio", replay_ratio},
    };
    obj["targets_met"] = boost::json::object{
      {"append_ratio_0_7", appends_met},
      {"replay_ratio_0_7", replay_met},
      {"p99_under_50ms", latency_met},
    };
    std::puts(boost::json::serialize(obj).c_str());
  } else {
    std::printf("replay  %zu rows: %9.0f rows/s  baseline %9.0f rows/s  ratio %5.2f  "
                "(JSON-decoding every payload)\n",
                replay.rows, replay.rows_per_s, replay.baseline_rows_per_s, replay_ratio);
    std::printf("targets: appends >= 0.7 x baseline: %s; replay >= 0.7 x baseline: %s; "
                "p99 < 50 ms: %s\n",
                appends_met ? "met" : "NOT met", replay_met ? "met" : "NOT met",
                latency_met ? "met" : "NOT met");
  }
  for (const auto& fig : appends)
    if (fig.failed > 0)
      die(std::to_string(fig.failed) + " appends failed");
  return 0;
}

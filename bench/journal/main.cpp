// bench_journal: appends and paged replay of a journal, each beside a baseline run in the
// same process on the same rows: plain SQLite for the SQLite journal, raw libnats async
// publishes for the JetStream journal, raw libpq COPY batches for the PostgreSQL journal.
//
//   bench_journal [--journal sqlite: | nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N]
//                            | postgresql://USER@HOST:PORT/DB]
//                 [--events N] [--in-flight N] [--rounds N] [--dir PATH] [--json]
//
// Appends: N events (one per append, ~100-byte JSON payloads) round-robin over 1, 100 and
// 10,000 persistence ids, with `--in-flight` appends outstanding at any time. Replay:
// `read_all` in pages, parsing every payload with Boost.JSON, against the baseline's own
// read doing the same parsing. Prints figures and the ratio journal / baseline; asserts
// nothing. `bench/jetstream/run` starts local nats-servers and runs this against them;
// `bench/postgres/run` does the same with a throwaway PostgreSQL server.

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "journal.hpp"

namespace bench::journal_bench {

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

std::int64_t decode_cents(std::string_view payload) {
  unsigned char buf[1024];
  boost::json::monotonic_resource mr{buf, sizeof(buf)};
  boost::system::error_code ec;
  auto jv = boost::json::parse(payload, ec, &mr);
  if (ec)
    die("invalid JSON in replay: " + std::string{payload});
  return jv.as_object().at("cents").as_int64();
}

void run_journal_appends(journal& j, const std::vector<row>& rows, std::size_t in_flight,
                         append_figures& out) {
  auto res = run_in_flight(rows.size(), in_flight, [&](std::size_t i, auto done) {
    const auto& r = rows[i];
    append_request req;
    req.persistence_id = r.persistence_id;
    req.expected_seq = r.seq - 1;
    req.events.push_back(annals::encoded_event{"bench.deposited", 1, r.payload, {}});
    j.append(std::move(req),
             [done](caf::expected<append_result> stored) { done(static_cast<bool>(stored)); });
  });
  out.events_per_s = static_cast<double>(rows.size()) / res.seconds;
  out.p50_ms = percentile(res.latency_ms, 0.50);
  out.p99_ms = percentile(res.latency_ms, 0.99);
  out.max_ms = *std::max_element(res.latency_ms.begin(), res.latency_ms.end());
  out.failed = res.failed;
}

void run_journal_replay(journal& j, std::size_t page, replay_figures& out) {
  std::mutex mtx;
  std::condition_variable cv;
  std::deque<std::vector<event_record>> pages;
  std::optional<caf::error> failure;
  bool finished = false;
  // The reader thread fetches the next page while this thread decodes the current one,
  // as a projection would.
  std::function<void(std::uint64_t)> fetch = [&](std::uint64_t from) {
    j.read_all(from, page, [&](caf::expected<std::vector<event_record>> res) {
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
}

void print_append(const append_figures& fig, bool with_transactions) {
  std::printf("append  %6zu ids: %9.0f events/s  baseline %9.0f events/s  ratio %5.2f  "
              "p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms",
              fig.ids, fig.events_per_s, fig.baseline_events_per_s,
              fig.events_per_s / fig.baseline_events_per_s, fig.p50_ms, fig.p99_ms, fig.max_ms);
  if (with_transactions)
    std::printf("  (%llu commits)", static_cast<unsigned long long>(fig.transactions));
  else
    std::printf("  (baseline p50 %.2f ms, p99 %.2f ms)", fig.baseline_p50_ms, fig.baseline_p99_ms);
  if (fig.baseline_failed > 0)
    std::printf("  [%llu raw publishes refused; those rounds left out]",
                static_cast<unsigned long long>(fig.baseline_failed));
  std::printf("\n");
  std::fflush(stdout);
}

} // namespace bench::journal_bench

using namespace bench::journal_bench;
using bench::die;

int main(int argc, char** argv) {
  config cfg;
  auto usage = "usage: bench_journal [--journal sqlite: | nats://HOST:PORT[,HOST:PORT...]"
               "[?stream=NAME&replicas=N] | postgresql://USER@HOST:PORT/DB] [--events N] "
               "[--in-flight N] [--rounds N] [--dir PATH] [--json]";
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
    else if (arg == "--journal")
      cfg.uri = value();
    else if (arg == "--json")
      cfg.json = true;
    else
      die(usage);
  }
  if (cfg.in_flight == 0)
    die("--in-flight must be positive");
  bool nats = cfg.uri.rfind("nats://", 0) == 0;
  bool pg = cfg.uri.rfind("postgresql://", 0) == 0 || cfg.uri.rfind("postgres://", 0) == 0;
  if (!nats && !pg && !cfg.uri.empty() && cfg.uri.rfind("sqlite:", 0) != 0)
    die("--journal takes sqlite:[DIR], nats://... or postgresql://...; " + std::string{usage});
  // sqlite:DIR is the same as --dir DIR: the bench writes its files there.
  if (!nats && !pg && cfg.uri.size() > 7)
    cfg.dir = cfg.uri.substr(7);
  results res;
  if (nats) {
#ifdef ANNALS_BENCH_WITH_JETSTREAM
    res = run_jetstream(cfg);
#else
    die("this build has no JetStream journal (configure with libnats-dev installed)");
#endif
  } else if (pg) {
#ifdef ANNALS_BENCH_WITH_POSTGRES
    res = run_postgres(cfg);
#else
    die("this build has no PostgreSQL journal (configure with libpq-dev installed)");
#endif
  } else {
    res = run_sqlite(cfg);
  }
  const auto& replay = res.replay;
  double replay_ratio = replay.rows_per_s / replay.baseline_rows_per_s;
  bool appends_met = true;
  bool latency_met = true;
  for (const auto& fig : res.appends) {
    appends_met = appends_met && fig.events_per_s >= 0.7 * fig.baseline_events_per_s;
    latency_met = latency_met && fig.p99_ms < 50.0;
  }
  bool replay_met = replay_ratio >= 0.7;
  if (cfg.json) {
    boost::json::object obj;
    obj["journal"] = res.journal;
    obj["baseline"] = res.baseline;
    obj["events"] = res.events;
    obj["in_flight"] = cfg.in_flight;
    if (!res.durability.empty())
      obj["durability"] = res.durability;
    boost::json::array arr;
    for (const auto& fig : res.appends) {
      boost::json::object a{
        {"ids", fig.ids},
        {"events_per_s", fig.events_per_s},
        {"baseline_events_per_s", fig.baseline_events_per_s},
        {"ratio", fig.events_per_s / fig.baseline_events_per_s},
        {"p50_ms", fig.p50_ms},
        {"p99_ms", fig.p99_ms},
        {"max_ms", fig.max_ms},
        {"failed", fig.failed},
      };
      if (nats || pg) {
        a["baseline_failed"] = fig.baseline_failed;
        a["baseline_p50_ms"] = fig.baseline_p50_ms;
        a["baseline_p99_ms"] = fig.baseline_p99_ms;
      } else {
        a["transactions"] = fig.transactions;
      }
      arr.push_back(std::move(a));
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
    std::printf("baseline: %s\n", res.baseline.c_str());
    std::printf("targets: appends >= 0.7 x baseline: %s; replay >= 0.7 x baseline: %s; "
                "p99 < 50 ms: %s\n",
                appends_met ? "met" : "NOT met", replay_met ? "met" : "NOT met",
                latency_met ? "met" : "NOT met");
  }
  for (const auto& fig : res.appends)
    if (fig.failed > 0)
      die(std::to_string(fig.failed) + " appends failed");
  return 0;
}

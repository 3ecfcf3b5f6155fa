#pragma once

// What the parts of bench_journal share: the flags, the rows every journal appends, the
// figures, the journal-side runs (any `journal`), and the backends' entry points.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "annals/persistence/journal.hpp"

#include "../common.hpp"

namespace bench::journal_bench {

using namespace annals::persistence;
using clock_type = std::chrono::steady_clock;

struct config {
  /// 0: the backend's default (100,000 SQLite, 20,000 JetStream, 50,000 PostgreSQL)
  std::size_t events = 0;
  std::size_t in_flight = 1'000;
  std::size_t rounds = 2;
  std::string dir;
  /// empty or sqlite:[DIR]: SQLite in `dir`; nats://...: JetStream; postgresql://...:
  /// PostgreSQL (the bench creates and drops databases `annals_bench_*` on that server)
  std::string uri;
  bool json = false;
};

/// One one-event append: persistence id `account|acc-NNNNNN`, its seq, ~100 bytes of JSON.
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
  double baseline_p50_ms = 0;
  double baseline_p99_ms = 0;
  std::uint64_t transactions = 0;    ///< SQLite: commits of the journal's writer
  std::uint64_t failed = 0;          ///< journal appends that failed
  std::uint64_t baseline_failed = 0; ///< raw publishes refused; such a round's rate is left out
};

struct replay_figures {
  std::size_t rows = 0;
  double rows_per_s = 0;
  double baseline_rows_per_s = 0;
};

/// What one backend's run yields; `main` prints it.
struct results {
  std::string journal;    ///< "sqlite", "jetstream R1" / "jetstream R3" or "postgresql"
  std::string baseline;   ///< what the baseline is, in words
  std::string durability; ///< what an acknowledged append survives, in words (JSON output)
  std::size_t events = 0;
  std::vector<append_figures> appends;
  replay_figures replay;
};

inline double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

/// `events` rows round-robin over `ids` persistence ids (deterministic payloads).
std::vector<row> make_rows(std::size_t events, std::size_t ids);

/// The work every replay does per row: parse the payload and read a field.
std::int64_t decode_cents(std::string_view payload);

/// Appends `rows` to `j`, one event per append, `in_flight` outstanding; fills the
/// journal's side of `out` (rate, latencies, failures).
void run_journal_appends(journal& j, const std::vector<row>& rows, std::size_t in_flight,
                         append_figures& out);

/// `read_all` from offset 1 in pages of `page`, decoding every payload while the next page
/// is read; keeps the best rate in `out`.
void run_journal_replay(journal& j, std::size_t page, replay_figures& out);

/// Prints one append line (text mode).
void print_append(const append_figures& fig, bool with_transactions);

/// The SQLite journal beside plain SQLite on the same rows (sqlite.cpp).
results run_sqlite(const config& cfg);

/// The JetStream journal beside raw libnats async publishes (jetstream.cpp); only in a
/// build with annals::jetstream.
results run_jetstream(const config& cfg);

/// The PostgreSQL journal beside raw libpq COPY batches on the same server (postgres.cpp);
/// only in a build with annals::postgres.
results run_postgres(const config& cfg);

} // namespace bench::journal_bench

// Recovery: how fast the host brings aggregates back from the journal, next to reading the
// same streams straight from the journal in the same run.
//
// Three cases, each on its own SQLite file written beforehand with raw appends (not timed):
// - peer: 1,000 accounts x 21 events (`opened` + 20 `deposited`), written round by round
//   (every account's first event, then every account's second, ...), so that a stream's
//   rows lie spread over the file as a workload of 64 accounts in flight leaves them;
// - many: `--recovery-ids` accounts (100,000) x 20 events, each account's events in one
//   append (contiguous rows);
// - one: one account with `--recovery-events` events (1,000,000), appended 1,000 at a time.
// For peer and many, each round measures: the host activating every account (a
// `get_balance` each, 64 in flight, so spawn, registry, one `read_stream` per account,
// decode and fold) -> events replayed/s; `read_stream` of every account straight from the
// journal, 64 in flight, rows not decoded -> events/s; an ordered scan (`read_all`, pages of
// 1,000, one at a time) -> rows/s. Each uses a freshly opened journal (SQLite's page cache
// empty); the file stays in the OS page cache (warm). Best of `--rounds` each (at least 5
// for the peer case, whose runs last about 0.1 s), and the first round apart: the process's
// first activations are slower (cold heap and CAF caches).
// For one: time to the first command served (a `get_balance` on a fresh host) and events
// replayed/s, without snapshots, then with one (written by the host itself: the same host
// with `snapshot_every = 1` after one deposit), next to a direct `read_stream` of the stream
// and the scan. A cold page cache is approximated: the journal is reopened, and before each
// measurement posix_fadvise(POSIX_FADV_DONTNEED) asks the kernel to drop the file's pages
// (its -wal too). That drops clean pages that no process maps; it does not drop the file
// system's metadata or the disk's own cache, and dropping the whole kernel cache
// (/proc/sys/vm/drop_caches) is root-only and machine-wide, so it is not done.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "annals/persistence/sqlite_journal.hpp"

#include "drive.hpp"
#include "runtime.hpp"

namespace annals::bench::runtime {

namespace {

constexpr std::size_t page = 1'000;

std::shared_ptr<sqlite_journal> reopen(const std::string& path) {
  auto opened = sqlite_journal::open({.path = path, .durability = durability_level::full});
  if (!opened)
    die(annals::render(opened.error()));
  return *opened;
}

/// Asks the kernel to drop the cached pages of the journal's files (see the file comment).
void drop_page_cache(const std::string& path) {
  for (const char* suffix : {"", "-wal"}) {
    int fd = ::open((path + suffix).c_str(), O_RDONLY);
    if (fd < 0)
      continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

void append_or_die(sqlite_journal& j, const std::vector<append_request>& reqs,
                   std::size_t in_flight) {
  auto res = ::bench::run_in_flight(reqs.size(), in_flight, [&](std::size_t i, auto done) {
    j.append(reqs[i], [done](caf::expected<append_result> r) { done(static_cast<bool>(r)); });
  });
  if (res.failed > 0)
    die("recovery: writing the journal failed");
}

/// Writes `events_per_id` events for each account of `w` (`opened`, then deposits).
/// `interleaved`: one event per append, round by round; otherwise one append per account.
void write_accounts(const std::string& path, const workload& w, std::size_t events_per_id,
                    bool interleaved) {
  remove_db(path);
  auto j = reopen(path);
  auto event = [&](std::size_t k, std::size_t e) {
    return e == 0 ? codec::encode(bank::opened{w.owners[k]})
                  : codec::encode(bank::deposited{static_cast<std::int64_t>(100 + e)});
  };
  std::vector<append_request> reqs;
  if (interleaved) {
    for (std::size_t e = 0; e < events_per_id; ++e) {
      reqs.clear();
      for (std::size_t k = 0; k < w.ids.size(); ++k)
        reqs.push_back({w.pids[k], e, {event(k, e)}, {}});
      append_or_die(*j, reqs, 1'000);
    }
  } else {
    const std::size_t chunk = 10'000;
    for (std::size_t first = 0; first < w.ids.size(); first += chunk) {
      reqs.clear();
      for (std::size_t k = first; k < std::min(first + chunk, w.ids.size()); ++k) {
        append_request req{w.pids[k], 0, {}, {}};
        for (std::size_t e = 0; e < events_per_id; ++e)
          req.events.push_back(event(k, e));
        reqs.push_back(std::move(req));
      }
      append_or_die(*j, reqs, 1'000);
    }
  }
  j->close();
}

/// One account (`w.ids[0]`) with `events` events, appended 1,000 at a time.
void write_one(const std::string& path, const workload& w, std::size_t events) {
  remove_db(path);
  auto j = reopen(path);
  std::uint64_t seq = 0;
  while (seq < events) {
    append_request req{w.pids[0], seq, {}, {}};
    for (std::size_t e = 0; e < page && seq + e < events; ++e)
      req.events.push_back(seq + e == 0
                             ? codec::encode(bank::opened{w.owners[0]})
                             : codec::encode(bank::deposited{static_cast<std::int64_t>(1)}));
    auto n = req.events.size();
    append_or_die(*j, {std::move(req)}, 1);
    seq += n;
  }
  j->close();
}

/// Reads every event of `pid` from `from`, page by page, one page at a time.
std::size_t read_whole_stream(sqlite_journal& j, const std::string& pid) {
  std::size_t total = 0;
  std::uint64_t from = 1;
  for (;;) {
    std::promise<std::size_t> got;
    j.read_stream(pid, from, std::numeric_limits<std::uint64_t>::max(), page,
                  [&got](caf::expected<std::vector<event_record>> res) {
                    if (!res)
                      die("recovery: read_stream: " + annals::render(res.error()));
                    got.set_value(res->size());
                  });
    auto n = got.get_future().get();
    total += n;
    from += n;
    if (n < page)
      return total;
  }
}

} // namespace

replay_run read_streams_direct(const std::string& path, const std::vector<std::string>& pids,
                               std::size_t in_flight) {
  auto j = reopen(path);
  std::atomic<std::uint64_t> events{0};
  auto cpu_before = cpu_now();
  auto res = ::bench::run_in_flight(pids.size(), in_flight, [&](std::size_t i, auto done) {
    j->read_stream(pids[i], 1, std::numeric_limits<std::uint64_t>::max(), page,
                   [done, &events](caf::expected<std::vector<event_record>> r) {
                     if (r)
                       events.fetch_add(r->size(), std::memory_order_relaxed);
                     done(static_cast<bool>(r));
                   });
  });
  replay_run out;
  out.cpu = cpu_now() - cpu_before;
  j->close();
  if (res.failed > 0)
    die("recovery: direct reads failed");
  out.seconds = res.seconds;
  out.p50_ms = percentile(res.latency_ms, 0.50);
  out.p99_ms = percentile(res.latency_ms, 0.99);
  out.max_ms = *std::max_element(res.latency_ms.begin(), res.latency_ms.end());
  out.events = events.load();
  out.events_per_s = static_cast<double>(out.events) / res.seconds;
  return out;
}

double scan_rows_per_s(const std::string& path, std::uint64_t* rows) {
  auto j = reopen(path);
  std::uint64_t total = 0;
  std::uint64_t from = 1;
  auto t0 = clock_type::now();
  for (;;) {
    std::promise<std::pair<std::size_t, std::uint64_t>> got;
    j->read_all(from, page, [&got](caf::expected<std::vector<event_record>> res) {
      if (!res)
        die("recovery: read_all: " + annals::render(res.error()));
      got.set_value({res->size(), res->empty() ? 0 : res->back().offset});
    });
    auto [n, last] = got.get_future().get();
    total += n;
    if (n < page)
      break;
    from = last + 1;
  }
  auto s = ms_between(t0, clock_type::now()) / 1000.0;
  j->close();
  if (rows)
    *rows = total;
  return static_cast<double>(total) / s;
}

replay_run replay_through_host(caf::actor_system& sys, const std::string& path,
                               const std::vector<std::string>& ids, std::size_t in_flight) {
  replay_run out;
  auto baseline = sys.registry().running();
  auto j = reopen(path);
  {
    host h{sys, j};
    if (auto err = h.register_aggregate<bank::account>())
      die(annals::render(err));
    auto cpu_before = cpu_now();
    auto res =
      drive(sys, h, ids, ids.size(), in_flight, [](std::size_t) { return bank::get_balance{}; });
    out.cpu = cpu_now() - cpu_before;
    if (res.failed > 0)
      die("recovery: activating accounts: " + annals::render(res.first_error));
    out.seconds = res.seconds;
    out.p50_ms = percentile(res.latency_ms, 0.50);
    out.p99_ms = percentile(res.latency_ms, 0.99);
    out.max_ms = *std::max_element(res.latency_ms.begin(), res.latency_ms.end());
    out.events = h.metrics().events_replayed;
    out.events_per_s = static_cast<double>(out.events) / res.seconds;
  }
  await_actors(sys, baseline);
  j->close();
  return out;
}

namespace {

/// Rounds of direct reads, the scan and the host on one file; best of each.
recovery_case measure(caf::actor_system& sys, std::size_t rounds, const std::string& name,
                      const std::string& path, const workload& w, std::size_t events_per_id) {
  recovery_case out;
  out.name = name;
  out.aggregates = w.ids.size();
  out.events_per_aggregate = events_per_id;
  for (std::size_t round = 0; round < rounds; ++round) {
    auto direct = read_streams_direct(path, w.pids, recovery_in_flight);
    std::uint64_t rows = 0;
    auto scan = scan_rows_per_s(path, &rows);
    auto hosted = replay_through_host(sys, path, w.ids, recovery_in_flight);
    auto expected = static_cast<std::uint64_t>(w.ids.size() * events_per_id);
    if (direct.events != expected || hosted.events != expected || rows != expected)
      die("recovery: " + name + ": read " + std::to_string(direct.events) + " direct, "
          + std::to_string(hosted.events) + " through the host, " + std::to_string(rows)
          + " scanned; expected " + std::to_string(expected));
    if (round == 0) {
      out.direct_first = direct;
      out.host_first = hosted;
    }
    if (round == 0 || direct.events_per_s > out.direct.events_per_s)
      out.direct = direct;
    if (round == 0 || hosted.events_per_s > out.host.events_per_s)
      out.host = hosted;
    out.scan_rows_per_s = std::max(out.scan_rows_per_s, scan);
  }
  return out;
}

/// A fresh host on `path` (with `snapshots` when `snapshot_every` > 0) serves one
/// `get_balance` to the one account; the journal reopened and its pages dropped first.
one_stream_run first_command(caf::actor_system& sys, const std::string& path, const workload& w,
                             std::size_t snapshot_every) {
  one_stream_run out;
  auto baseline = sys.registry().running();
  drop_page_cache(path);
  auto j = reopen(path);
  {
    persistence::snapshot_store_ptr snaps;
    if (snapshot_every > 0)
      snaps = j->snapshots();
    host h{sys, j, snaps};
    if (auto err = h.register_aggregate<bank::account>({.snapshot_every = snapshot_every}))
      die(annals::render(err));
    auto t0 = clock_type::now();
    auto r =
      h.ask<bank::account>(w.ids[0], bank::get_balance{}, {.timeout = std::chrono::minutes{10}});
    out.first_command_ms = ms_between(t0, clock_type::now());
    if (!r)
      die("recovery: first command: " + annals::render(r.error()));
    out.events = h.metrics().events_replayed;
    out.events_per_s = static_cast<double>(out.events) / (out.first_command_ms / 1000.0);
  }
  await_actors(sys, baseline);
  j->close();
  return out;
}

/// Has the host write a snapshot of the one account: one deposit with `snapshot_every = 1`.
void write_snapshot(caf::actor_system& sys, const std::string& path, const workload& w) {
  auto baseline = sys.registry().running();
  auto j = reopen(path);
  {
    host h{sys, j, j->snapshots()};
    if (auto err = h.register_aggregate<bank::account>({.snapshot_every = 1}))
      die(annals::render(err));
    auto r =
      h.ask<bank::account>(w.ids[0], bank::deposit{1}, {.timeout = std::chrono::minutes{10}});
    if (!r)
      die("recovery: deposit before the snapshot: " + annals::render(r.error()));
    for (int i = 0; i < 600 && h.metrics().snapshots_written == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds{100});
    if (h.metrics().snapshots_written == 0)
      die("recovery: the host wrote no snapshot");
  }
  await_actors(sys, baseline);
  j->close();
}

one_stream_figures measure_one(caf::actor_system& sys, const config& cfg,
                               const std::filesystem::path& dir) {
  one_stream_figures out;
  out.events = cfg.recovery_events;
  workload w{1, 0};
  auto path = (dir / "recovery-one.db").string();
  auto t0 = clock_type::now();
  write_one(path, w, cfg.recovery_events);
  out.write_s = ms_between(t0, clock_type::now()) / 1000.0;
  // Direct: the stream page by page, one page at a time (as recovery reads it), cold.
  drop_page_cache(path);
  {
    auto j = reopen(path);
    auto t1 = clock_type::now();
    auto n = read_whole_stream(*j, w.pids[0]);
    out.direct_events_per_s = static_cast<double>(n) / (ms_between(t1, clock_type::now()) / 1000.0);
    j->close();
    if (n != cfg.recovery_events)
      die("recovery: the one stream holds " + std::to_string(n) + " events");
  }
  drop_page_cache(path);
  out.scan_rows_per_s = scan_rows_per_s(path, nullptr);
  out.without_snapshot = first_command(sys, path, w, 0);
  write_snapshot(sys, path, w);
  out.with_snapshot = first_command(sys, path, w, 1'000);
  remove_db(path);
  return out;
}

} // namespace

recovery_figures run_recovery(caf::actor_system& sys, const config& cfg,
                              const std::filesystem::path& dir) {
  recovery_figures out;
  {
    workload w{1'000, 0};
    auto path = (dir / "recovery-peer.db").string();
    write_accounts(path, w, 21, true);
    // A run lasts about 0.1 s here: more rounds than `--rounds` against the noise.
    out.cases.push_back(measure(sys, std::max<std::size_t>(cfg.rounds, 5), "peer", path, w, 21));
    remove_db(path);
  }
  if (!cfg.json)
    print_recovery_case(out.cases.back());
  std::fflush(stdout);
  if (cfg.recovery_ids > 0) {
    workload w{cfg.recovery_ids, 0};
    auto path = (dir / "recovery-many.db").string();
    auto t0 = clock_type::now();
    write_accounts(path, w, 20, false);
    auto written = ms_between(t0, clock_type::now()) / 1000.0;
    out.cases.push_back(measure(sys, cfg.rounds, "many", path, w, 20));
    out.cases.back().write_s = written;
    remove_db(path);
    if (!cfg.json)
      print_recovery_case(out.cases.back());
    std::fflush(stdout);
  }
  if (cfg.recovery_events > 0) {
    out.one = measure_one(sys, cfg, dir);
    if (!cfg.json)
      print_one_stream(out.one);
  }
  return out;
}

} // namespace annals::bench::runtime

// bench_runtime: the aggregate runtime end to end (ask -> decide -> persist -> apply ->
// reply) on a SQLite journal, beside raw journal appends of the same events in the same
// run; where the time goes; projection lag under that load; memory per live idle aggregate.
//
//   bench_runtime [--commands N] [--in-flight N] [--rounds N] [--dir PATH] [--json]
//                 [--ids N] [--only e2e|breakdown|lag|memory]
//
// Memory (first, on a fresh heap): RSS and malloc's bytes in use before and after
// activating 10,000 accounts (one `get_balance` each, on a memory journal filled
// beforehand) that then sit idle until their recovery timers have fired.
// End to end: N `bank::deposit`s (default 50,000; the one-account case runs N/20 because
// it commits once per command) round-robin over 1, 100 and 10,000 accounts, each opened
// first (not timed), with `--in-flight` commands outstanding from one driver actor
// (`host::request`). Durability full. The raw case appends the same events (same
// persistence ids, sequence numbers and JSON payloads, accounts opened first) straight to
// a fresh `sqlite_journal` with as many in flight. The two alternate and each keeps its
// best of `--rounds`, like bench_journal. CPU per command is split by thread.
// Breakdown: the same closed loop over 10,000 targets with one more piece each step: plain
// CAF request/response, with a request timeout, the runtime without persist, persist into
// a memory journal; CPU, kernel CPU, CAF timer-thread CPU and heap allocations per command.
// Projection lag: the 10,000-account case once more with an at-least-once projection
// (in-memory handler that decodes each event and folds balances) attached; lag = from the
// commit (a commit listener subscribed before the projection's) to the handler's call.
// Prints figures; asserts nothing.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <malloc.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "annals/actors/projection.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/memory_journal.hpp"
#include "annals/persistence/sqlite_journal.hpp"

/// Heap allocations through operator new, in every thread and library (CAF, the runtime,
/// the journal; not SQLite's own malloc calls).
std::atomic<std::uint64_t> g_allocations{0};

[[gnu::noinline]] void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n))
    return p;
  throw std::bad_alloc{};
}

[[gnu::noinline]] void operator delete(void* p) noexcept {
  std::free(p);
}

[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

#include "common.hpp"

namespace {

using bench::die;
using bench::load_average;
using bench::percentile;
using bench::remove_db;

using namespace annals::persistence;
using annals::actors::host;
using clock_type = std::chrono::steady_clock;
using codec = bank::account::codec_type;

constexpr std::size_t memory_aggregates = 10'000;

struct config {
  std::size_t commands = 50'000;
  std::size_t in_flight = 1'000;
  std::size_t rounds = 2;
  std::string dir;
  bool json = false;
  std::vector<std::size_t> ids{1, 100, 10'000};
  std::string only; ///< run one part: e2e, breakdown, lag, memory (empty: all)
};

bool wants(const config& cfg, std::string_view part) {
  return cfg.only.empty() || cfg.only == part;
}

/// One aggregate commits once per command (one command at a time per aggregate), so it
/// runs a twentieth of the commands to keep the whole benchmark under a minute.
std::size_t commands_for(const config& cfg, std::size_t ids) {
  return ids == 1 ? std::max<std::size_t>(cfg.commands / 20, 1) : cfg.commands;
}

/// CPU seconds of this process's threads, by group: the journal's writer, its readers,
/// CAF's timer thread, everything else (CAF's scheduler threads, detached actors, main).
struct cpu_times {
  std::uint64_t allocations = 0;
  double writer = 0;
  double readers = 0;
  double clock = 0;
  double other = 0;
  double user = 0;
  double sys = 0;

  double total() const {
    return writer + readers + clock + other;
  }
  cpu_times operator-(const cpu_times& x) const {
    return {allocations - x.allocations,
            writer - x.writer,
            readers - x.readers,
            clock - x.clock,
            other - x.other,
            user - x.user,
            sys - x.sys};
  }
};

cpu_times cpu_now() {
  cpu_times out;
  out.allocations = g_allocations.load(std::memory_order_relaxed);
  static const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (const auto& entry : std::filesystem::directory_iterator{"/proc/self/task"}) {
    std::ifstream stat{entry.path() / "stat"};
    std::string line;
    std::getline(stat, line);
    auto open = line.find('(');
    auto close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos)
      continue;
    auto comm = line.substr(open + 1, close - open - 1);
    // Fields after the name: state is field 3; utime and stime are fields 14 and 15.
    std::istringstream rest{line.substr(close + 2)};
    std::string field;
    double utime = 0;
    double stime = 0;
    for (int k = 3; k <= 15 && rest >> field; ++k) {
      if (k == 14)
        utime = std::stod(field) / tick;
      if (k == 15)
        stime = std::stod(field) / tick;
    }
    // schedstat's first field is the thread's time on a CPU in ns (stat has 10 ms ticks).
    std::ifstream sched{entry.path() / "schedstat"};
    double run_ns = 0;
    auto t = (sched >> run_ns) ? run_ns / 1e9 : utime + stime;
    out.user += utime;
    out.sys += stime;
    if (comm == "annals-writer")
      out.writer += t;
    else if (comm == "annals-reader")
      out.readers += t;
    else if (comm == "caf.clock")
      out.clock += t;
    else
      out.other += t;
  }
  return out;
}

/// One id count: the runtime and the raw journal on the same events.
struct command_figures {
  std::size_t ids = 0;
  double commands_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  std::uint64_t transactions = 0;
  double raw_events_per_s = 0;
  double raw_p50_ms = 0;
  double raw_p99_ms = 0;
  std::uint64_t raw_transactions = 0;
  std::uint64_t failed = 0;
  double open_s = 0; ///< activating and opening every account (not timed above)
  std::size_t commands = 0;
  cpu_times cpu;     ///< CPU seconds used while the runtime's commands ran
  cpu_times raw_cpu; ///< CPU seconds used while the raw appends ran
  double seconds = 0;
  double raw_seconds = 0;
};

struct lag_figures {
  std::size_t ids = 0;
  double commands_per_s = 0; ///< with the projection attached
  double p50_ms = 0;         ///< from the commit listener to the handler
  double p99_ms = 0;
  double max_ms = 0;
  double ts_p50_ms = 0; ///< from the journal's `timestamp_us` (taken before the fsync)
  double ts_p99_ms = 0;
  std::uint64_t events = 0;
  std::uint64_t live_dropped = 0;
};

struct memory_figures {
  std::size_t aggregates = 0;
  std::size_t live = 0; ///< live aggregates at the end (with the warm-up one)
  long rss_before = 0;
  long rss_after = 0;
  double bytes_per_aggregate = 0;       ///< RSS growth per aggregate
  double heap_bytes_per_aggregate = 0;  ///< growth of malloc's bytes in use, per aggregate
  double allocations_per_aggregate = 0; ///< operator new calls while activating, per aggregate
  std::size_t state_bytes = 0;
  double overhead_bytes = 0; ///< `bytes_per_aggregate - state_bytes`
};

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

long rss_bytes() {
  std::ifstream in{"/proc/self/statm"};
  long size = 0;
  long resident = 0;
  in >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

/// The workload: which account each command goes to, and its amount.
struct workload {
  std::vector<std::string> ids;  ///< `acc-000042`
  std::vector<std::string> pids; ///< `account|acc-000042`
  std::vector<std::string> owners;
  std::vector<std::int64_t> cents; ///< per command; command i goes to ids[i % ids.size()]

  workload(std::size_t n_ids, std::size_t commands) {
    std::mt19937_64 rng{42};
    for (std::size_t i = 0; i < n_ids; ++i) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "acc-%06zu", i);
      ids.emplace_back(buf);
      pids.push_back(annals::persistence_id{bank::account::name, buf}.str());
      std::snprintf(buf, sizeof(buf), "owner-%06zu", i);
      owners.emplace_back(buf);
    }
    cents.reserve(commands);
    for (std::size_t i = 0; i < commands; ++i)
      cents.push_back(static_cast<std::int64_t>(rng() % 100'000) + 1);
  }
};

// -- the runtime --------------------------------------------------------------------------

struct drive_result {
  std::vector<double> latency_ms;
  double seconds = 0;
  std::uint64_t failed = 0;
  caf::error first_error;
};

/// Sends `n` commands (`make(i)` to `ids[i % ids.size()]`) from one driver actor that keeps
/// `in_flight` of them outstanding, and waits until every reply is in.
template <class MakeCommand>
drive_result drive(caf::actor_system& sys, host& h, const std::vector<std::string>& ids,
                   std::size_t n, std::size_t in_flight, MakeCommand make) {
  struct driver {
    host* h;
    const std::vector<std::string>* ids;
    MakeCommand make;
    std::size_t n;
    std::vector<clock_type::time_point> started;
    drive_result out;
    std::size_t next = 0;
    std::size_t completed = 0;
    clock_type::time_point begin;
    std::promise<void> finished;

    void submit(caf::event_based_actor* self) {
      auto i = next++;
      started[i] = clock_type::now();
      h->request<bank::account>(self, (*ids)[i % ids->size()], make(i),
                                [this, self, i](auto res) {
                                  out.latency_ms[i] = ms_between(started[i], clock_type::now());
                                  if (!res) {
                                    if (out.failed++ == 0)
                                      out.first_error = res.error();
                                  }
                                  if (next < n)
                                    submit(self);
                                  if (++completed == n) {
                                    out.seconds = ms_between(begin, clock_type::now()) / 1000.0;
                                    finished.set_value();
                                    self->quit();
                                  }
                                },
                                {.timeout = std::chrono::seconds{60}});
    }
  };
  driver d{&h, &ids, std::move(make), n, std::vector<clock_type::time_point>(n), {}};
  d.out.latency_ms.resize(n);
  auto done = d.finished.get_future();
  sys.spawn([&d, in_flight](caf::event_based_actor* self) -> caf::behavior {
    d.begin = clock_type::now();
    while (d.next < std::min(in_flight, d.n))
      d.submit(self);
    return {[](caf::ok_atom) {}};
  });
  done.wait();
  return std::move(d.out);
}

/// Commit times (steady clock, ns) by offset, written by a commit listener.
struct commit_clock {
  std::unique_ptr<std::atomic<std::int64_t>[]> at;
  std::size_t size;

  explicit commit_clock(std::size_t n) : at(new std::atomic<std::int64_t>[n]), size(n) {
    for (std::size_t i = 0; i < n; ++i)
      at[i].store(0, std::memory_order_relaxed);
  }
};

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
    .count();
}

std::int64_t system_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// An in-memory read model (balance per account) that also records each event's lag.
class lag_probe final : public annals::actors::projection_handler {
public:
  lag_probe(std::shared_ptr<commit_clock> clock, std::uint64_t watch_from, std::size_t expected)
    : clock_(std::move(clock)), watch_from_(watch_from) {
    lag_ms_.reserve(expected);
    ts_lag_ms_.reserve(expected);
  }

  void apply(const event_record& rec) override {
    auto now = steady_ns();
    auto now_us = system_us();
    auto ev = codec::decode(rec.name, rec.version, rec.payload);
    if (!ev)
      throw std::runtime_error{annals::render(ev.error())};
    if (auto* d = std::get_if<bank::deposited>(&*ev))
      balances_[rec.persistence_id] += d->cents;
    if (rec.offset < watch_from_)
      return;
    auto committed =
      rec.offset < clock_->size ? clock_->at[rec.offset].load(std::memory_order_acquire) : 0;
    // 0: the listener has not run yet (it runs first, so this does not happen).
    lag_ms_.push_back(committed == 0 ? 0.0 : static_cast<double>(now - committed) / 1e6);
    ts_lag_ms_.push_back(static_cast<double>(now_us - rec.timestamp_us) / 1e3);
  }

  void reset() override {
    balances_.clear();
  }

  std::vector<double> lag_ms_;
  std::vector<double> ts_lag_ms_;

private:
  std::shared_ptr<commit_clock> clock_;
  std::uint64_t watch_from_;
  std::unordered_map<std::string, std::int64_t> balances_;
};

std::shared_ptr<sqlite_journal> open_journal(const std::string& path) {
  remove_db(path);
  auto opened = sqlite_journal::open({.path = path, .durability = durability_level::full});
  if (!opened)
    die(annals::render(opened.error()));
  return *opened;
}

/// Waits until only `baseline` actors run (the host's aggregates have ended).
void await_actors(caf::actor_system& sys, std::size_t baseline) {
  sys.registry().await_running_count_equal(baseline);
}

struct runtime_run {
  double commands_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  std::uint64_t transactions = 0;
  std::uint64_t failed = 0;
  double open_s = 0;
  double seconds = 0;
  cpu_times cpu;
  std::optional<lag_figures> lag;
};

runtime_run run_runtime(caf::actor_system& sys, const std::string& path, const workload& w,
                        std::size_t in_flight, bool with_projection) {
  runtime_run out;
  auto baseline = sys.registry().running();
  auto j = open_journal(path);
  {
    host h{sys, j};
    if (auto err = h.register_aggregate<bank::account>())
      die(annals::render(err));
    auto t0 = clock_type::now();
    auto opened = drive(sys, h, w.ids, w.ids.size(), in_flight,
                        [&w](std::size_t i) { return bank::open{w.owners[i]}; });
    out.open_s = ms_between(t0, clock_type::now()) / 1000.0;
    if (opened.failed > 0)
      die("opening accounts: " + annals::render(opened.first_error));
    auto n = w.cents.size();
    std::shared_ptr<commit_clock> clock;
    std::shared_ptr<lag_probe> probe;
    annals::actors::projection proj;
    std::uint64_t listener = 0;
    if (with_projection) {
      // Offsets 1..ids are the `opened` events; the deposits follow.
      auto first = static_cast<std::uint64_t>(w.ids.size()) + 1;
      clock = std::make_shared<commit_clock>(w.ids.size() + n + 1);
      listener = j->subscribe([clock](const std::vector<event_record>& batch) {
        auto now = steady_ns();
        for (const auto& rec : batch)
          if (rec.offset < clock->size)
            clock->at[rec.offset].store(now, std::memory_order_release);
      });
      probe = std::make_shared<lag_probe>(clock, first, n);
      proj = annals::actors::spawn_projection(
        sys, j, probe,
        {.name = "bench", .filter = annals::actors::event_filter::aggregate_type<bank::account>()});
      auto st = proj.await_offset(first - 1, std::chrono::seconds{60});
      if (!st)
        die("projection catch-up: " + annals::render(st.error()));
    }
    auto tx_before = j->stats().transactions;
    auto cpu_before = cpu_now();
    auto res =
      drive(sys, h, w.ids, n, in_flight, [&w](std::size_t i) { return bank::deposit{w.cents[i]}; });
    out.cpu = cpu_now() - cpu_before;
    out.seconds = res.seconds;
    out.transactions = j->stats().transactions - tx_before;
    out.commands_per_s = static_cast<double>(n) / res.seconds;
    out.p50_ms = percentile(res.latency_ms, 0.50);
    out.p99_ms = percentile(res.latency_ms, 0.99);
    out.max_ms = *std::max_element(res.latency_ms.begin(), res.latency_ms.end());
    out.failed = res.failed;
    if (res.failed > 0)
      std::fprintf(stderr, "bench_runtime: %llu commands failed, first: %s\n",
                   static_cast<unsigned long long>(res.failed),
                   annals::render(res.first_error).c_str());
    if (with_projection) {
      auto head = static_cast<std::uint64_t>(w.ids.size() + n - res.failed);
      auto st = proj.await_offset(head, std::chrono::seconds{60});
      if (!st)
        die("projection: " + annals::render(st.error()));
      proj.stop();
      j->unsubscribe(listener);
      lag_figures lag;
      lag.ids = w.ids.size();
      lag.commands_per_s = out.commands_per_s;
      lag.p50_ms = percentile(probe->lag_ms_, 0.50);
      lag.p99_ms = percentile(probe->lag_ms_, 0.99);
      lag.max_ms = probe->lag_ms_.empty()
                     ? 0
                     : *std::max_element(probe->lag_ms_.begin(), probe->lag_ms_.end());
      lag.ts_p50_ms = percentile(probe->ts_lag_ms_, 0.50);
      lag.ts_p99_ms = percentile(probe->ts_lag_ms_, 0.99);
      lag.events = probe->lag_ms_.size();
      lag.live_dropped = st->live_dropped;
      out.lag = lag;
    }
  }
  await_actors(sys, baseline);
  j->close();
  return out;
}

// -- the raw journal ----------------------------------------------------------------------

struct raw_run {
  double events_per_s = 0;
  double seconds = 0;
  cpu_times cpu;
  double p50_ms = 0;
  double p99_ms = 0;
  std::uint64_t transactions = 0;
  std::uint64_t failed = 0;
};

/// Appends `reqs` with `in_flight` outstanding; the next one is submitted from the
/// completion callback (as bench_journal does).
raw_run append_all(sqlite_journal& j, const std::vector<append_request>& reqs,
                   std::size_t in_flight) {
  struct driver {
    sqlite_journal* j;
    const std::vector<append_request>* reqs;
    std::vector<clock_type::time_point> started;
    std::vector<double> latency_ms;
    std::mutex mtx;
    std::condition_variable cv;
    std::size_t next = 0;
    std::size_t completed = 0;
    std::uint64_t failed = 0;

    void submit_locked() {
      auto i = next++;
      started[i] = clock_type::now();
      j->append((*reqs)[i], [self = this, i](caf::expected<append_result> res) {
        self->done(i, static_cast<bool>(res));
      });
    }

    void done(std::size_t i, bool ok) {
      latency_ms[i] = ms_between(started[i], clock_type::now());
      std::lock_guard guard{mtx};
      if (!ok)
        ++failed;
      if (next < reqs->size())
        submit_locked();
      if (++completed == reqs->size())
        cv.notify_all();
    }
  };
  auto n = reqs.size();
  driver d{&j, &reqs, std::vector<clock_type::time_point>(n), std::vector<double>(n)};
  auto tx_before = j.stats().transactions;
  auto cpu_before = cpu_now();
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
  raw_run out;
  out.seconds = ms_between(start, clock_type::now()) / 1000.0;
  out.cpu = cpu_now() - cpu_before;
  out.events_per_s = static_cast<double>(n) / out.seconds;
  out.p50_ms = percentile(d.latency_ms, 0.50);
  out.p99_ms = percentile(d.latency_ms, 0.99);
  out.transactions = j.stats().transactions - tx_before;
  out.failed = d.failed;
  return out;
}

raw_run run_raw(const std::string& path, const workload& w, std::size_t in_flight) {
  // The same rows the runtime writes: one `opened` per account (not timed), then the
  // deposits with their sequence numbers, payloads from the aggregate's own codec.
  std::vector<append_request> opens;
  opens.reserve(w.ids.size());
  for (std::size_t k = 0; k < w.ids.size(); ++k)
    opens.push_back({w.pids[k], 0, {codec::encode(bank::opened{w.owners[k]})}, {}});
  std::vector<append_request> deposits;
  deposits.reserve(w.cents.size());
  std::vector<std::uint64_t> seqs(w.ids.size(), 1);
  for (std::size_t i = 0; i < w.cents.size(); ++i) {
    auto k = i % w.ids.size();
    deposits.push_back({w.pids[k], seqs[k]++, {codec::encode(bank::deposited{w.cents[i]})}, {}});
  }
  auto j = open_journal(path);
  auto opened = append_all(*j, opens, in_flight);
  if (opened.failed > 0)
    die("raw journal: opening accounts failed");
  auto out = append_all(*j, deposits, in_flight);
  j->close();
  return out;
}

// -- memory -------------------------------------------------------------------------------

long settled_rss() {
  malloc_trim(0);
  return rss_bytes();
}

memory_figures run_memory(caf::actor_system& sys, std::size_t in_flight) {
  memory_figures out;
  out.aggregates = memory_aggregates;
  // Account 0 warms the path up (first spawn, CAF's per-thread caches).
  workload w{1 + memory_aggregates, 0};
  std::vector<std::string> batch(w.ids.begin() + 1, w.ids.end());
  auto baseline = sys.registry().running();
  // The journal holds every account's `opened` event before the first reading, so that
  // the growth is the actors' and the registry's alone.
  auto j = std::make_shared<memory_journal>();
  for (std::size_t k = 0; k < w.ids.size(); ++k) {
    append_request req{w.pids[k], 0, {codec::encode(bank::opened{w.owners[k]})}, {}};
    j->append(std::move(req), [](caf::expected<append_result> res) {
      if (!res)
        die("memory journal: " + annals::render(res.error()));
    });
  }
  auto heap_in_use = [] { return static_cast<double>(mallinfo2().uordblks); };
  {
    host h{sys, j};
    if (auto err = h.register_aggregate<bank::account>())
      die(annals::render(err));
    if (!h.ask<bank::account>(w.ids[0], bank::get_balance{}))
      die("warm-up get_balance failed");
    // The timer of the warm-up's recovery read has fired by now (see below).
    std::this_thread::sleep_for(annals::actors::aggregate_options{}.journal_timeout
                                + std::chrono::milliseconds{500});
    out.rss_before = settled_rss();
    auto heap_before = heap_in_use();
    auto allocations_before = g_allocations.load();
    auto res = drive(sys, h, batch, batch.size(), in_flight,
                     [](std::size_t) { return bank::get_balance{}; });
    if (res.failed > 0)
      die("activating accounts: " + annals::render(res.first_error));
    res = drive_result{};
    auto allocations = g_allocations.load() - allocations_before;
    // Idle: each recovery armed a `journal_timeout` timer (a pending message in CAF's
    // clock) that fires and is dropped only after that time; wait it out.
    std::this_thread::sleep_for(annals::actors::aggregate_options{}.journal_timeout
                                + std::chrono::milliseconds{500});
    out.rss_after = settled_rss();
    auto heap_after = heap_in_use();
    auto live = h.live_count();
    if (!live)
      die(annals::render(live.error()));
    out.live = *live;
    auto n = static_cast<double>(memory_aggregates);
    out.bytes_per_aggregate = static_cast<double>(out.rss_after - out.rss_before) / n;
    out.heap_bytes_per_aggregate = (heap_after - heap_before) / n;
    out.allocations_per_aggregate = static_cast<double>(allocations) / n;
  }
  await_actors(sys, baseline);
  // The state as an application would count it: the struct plus the owner's heap buffer
  // (none here: `owner-000042` fits the small-string buffer).
  bank::account_state st;
  st.owner = w.owners[0];
  out.state_bytes =
    sizeof(bank::account_state)
    + (st.owner.capacity() > std::string{}.capacity() ? st.owner.capacity() + 1 : 0);
  out.overhead_bytes = out.bytes_per_aggregate - static_cast<double>(out.state_bytes);
  return out;
}

// -- where the time goes -----------------------------------------------------------------

/// One step of the breakdown: the same closed loop (10,000 targets, `in_flight`
/// outstanding) with one more piece of the runtime each time.
struct step_figures {
  std::string name;
  double per_s = 0;
  double cpu_us = 0;      ///< CPU microseconds per command, all threads of the process
  double sys_us = 0;      ///< of which in the kernel
  double clock_us = 0;    ///< of which on CAF's timer thread
  double allocations = 0; ///< operator new calls per command
};

step_figures make_step(std::string name, std::size_t n, double seconds, const cpu_times& cpu) {
  auto dn = static_cast<double>(n);
  return {std::move(name),    dn / seconds,         cpu.total() * 1e6 / dn,
          cpu.sys * 1e6 / dn, cpu.clock * 1e6 / dn, static_cast<double>(cpu.allocations) / dn};
}

/// Plain CAF: one driver actor, request/response to `targets` echo actors.
step_figures caf_floor(caf::actor_system& sys, std::size_t targets, std::size_t n,
                       std::size_t in_flight, bool with_timeout) {
  auto baseline = sys.registry().running();
  std::vector<caf::actor> echo;
  echo.reserve(targets);
  for (std::size_t k = 0; k < targets; ++k)
    echo.push_back(sys.spawn([]() -> caf::behavior { return {[](std::int64_t x) { return x; }}; }));
  struct driver {
    std::vector<caf::actor>* echo;
    std::size_t n;
    bool with_timeout;
    std::size_t next = 0;
    std::size_t completed = 0;
    clock_type::time_point begin;
    double seconds = 0;
    std::promise<void> finished;

    void submit(caf::event_based_actor* self) {
      auto i = next++;
      auto on_reply = [this, self](std::int64_t) { done(self); };
      auto on_error = [this, self](caf::error&) { done(self); };
      const auto& dest = (*echo)[i % echo->size()];
      if (with_timeout)
        self->request(dest, caf::duration{std::chrono::seconds{60}}, std::int64_t{1})
          .then(on_reply, on_error);
      else
        self->request(dest, caf::infinite, std::int64_t{1}).then(on_reply, on_error);
    }

    void done(caf::event_based_actor* self) {
      if (next < n)
        submit(self);
      if (++completed == n) {
        seconds = ms_between(begin, clock_type::now()) / 1000.0;
        finished.set_value();
        self->quit();
      }
    }
  };
  driver d{&echo, n, with_timeout};
  auto fut = d.finished.get_future();
  auto cpu_before = cpu_now();
  sys.spawn([&d, in_flight](caf::event_based_actor* self) -> caf::behavior {
    d.begin = clock_type::now();
    while (d.next < std::min(in_flight, d.n))
      d.submit(self);
    return {[](caf::ok_atom) {}};
  });
  fut.wait();
  auto cpu = cpu_now() - cpu_before;
  for (auto& a : echo)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  echo.clear();
  await_actors(sys, baseline);
  return make_step(with_timeout ? "CAF request/response, 60 s request timeout"
                                : "CAF request/response, no timeout",
                   n, d.seconds, cpu);
}

/// The runtime on 10,000 open accounts: `get_balance` (no persist), then deposits on a
/// memory journal (persist without I/O).
std::vector<step_figures> runtime_steps(caf::actor_system& sys, std::size_t n,
                                        std::size_t in_flight) {
  std::vector<step_figures> out;
  workload w{10'000, n};
  auto baseline = sys.registry().running();
  auto j = std::make_shared<memory_journal>();
  {
    host h{sys, j};
    if (auto err = h.register_aggregate<bank::account>())
      die(annals::render(err));
    auto opened = drive(sys, h, w.ids, w.ids.size(), in_flight,
                        [&w](std::size_t i) { return bank::open{w.owners[i]}; });
    if (opened.failed > 0)
      die("opening accounts: " + annals::render(opened.first_error));
    auto cpu_before = cpu_now();
    auto res = drive(sys, h, w.ids, n, in_flight, [](std::size_t) { return bank::get_balance{}; });
    out.push_back(make_step("runtime get_balance (registry, actor, reply; no persist)", n,
                            res.seconds, cpu_now() - cpu_before));
    cpu_before = cpu_now();
    res =
      drive(sys, h, w.ids, n, in_flight, [&w](std::size_t i) { return bank::deposit{w.cents[i]}; });
    out.push_back(make_step("runtime deposit, memory journal (persist without I/O)", n, res.seconds,
                            cpu_now() - cpu_before));
  }
  await_actors(sys, baseline);
  return out;
}

std::vector<step_figures> run_breakdown(caf::actor_system& sys, std::size_t n,
                                        std::size_t in_flight, const command_figures* big) {
  std::vector<step_figures> out;
  out.push_back(caf_floor(sys, 10'000, n, in_flight, false));
  out.push_back(caf_floor(sys, 10'000, n, in_flight, true));
  for (auto& step : runtime_steps(sys, n, in_flight))
    out.push_back(std::move(step));
  if (big != nullptr) {
    out.push_back(make_step("runtime deposit, SQLite journal (the case above)", big->commands,
                            big->seconds, big->cpu));
    out.push_back(make_step("raw SQLite journal appends (the case above)", big->commands,
                            big->raw_seconds, big->raw_cpu));
  }
  return out;
}

// -- main ---------------------------------------------------------------------------------

boost::json::object cpu_json(const cpu_times& c) {
  return {{"writer", c.writer}, {"readers", c.readers},
          {"clock", c.clock},   {"other", c.other},
          {"user", c.user},     {"sys", c.sys},
          {"total", c.total()}, {"allocations", c.allocations}};
}

struct results {
  std::vector<command_figures> commands;
  std::vector<step_figures> breakdown;
  lag_figures lag;
  memory_figures memory;
};

results run_all(caf::actor_system& sys, const config& cfg, const std::filesystem::path& dir) {
  results r;
  // First, while the heap holds nothing freed that the aggregates could reuse.
  if (wants(cfg, "memory"))
    r.memory = run_memory(sys, cfg.in_flight);
  for (std::size_t ids : cfg.ids) {
    if (!wants(cfg, "e2e") && !(ids == 10'000 && wants(cfg, "breakdown")))
      continue;
    workload w{ids, commands_for(cfg, ids)};
    command_figures fig;
    fig.ids = ids;
    fig.commands = w.cents.size();
    auto runtime_file = (dir / ("runtime-" + std::to_string(ids) + ".db")).string();
    auto raw_file = (dir / ("raw-" + std::to_string(ids) + ".db")).string();
    for (std::size_t round = 0; round < cfg.rounds; ++round) {
      auto run = run_runtime(sys, runtime_file, w, cfg.in_flight, false);
      auto raw = run_raw(raw_file, w, cfg.in_flight);
      if (round == 0 || run.commands_per_s > fig.commands_per_s) {
        fig.commands_per_s = run.commands_per_s;
        fig.p50_ms = run.p50_ms;
        fig.p99_ms = run.p99_ms;
        fig.max_ms = run.max_ms;
        fig.transactions = run.transactions;
        fig.open_s = run.open_s;
        fig.cpu = run.cpu;
        fig.seconds = run.seconds;
      }
      if (round == 0 || raw.events_per_s > fig.raw_events_per_s) {
        fig.raw_events_per_s = raw.events_per_s;
        fig.raw_p50_ms = raw.p50_ms;
        fig.raw_p99_ms = raw.p99_ms;
        fig.raw_transactions = raw.transactions;
        fig.raw_cpu = raw.cpu;
        fig.raw_seconds = raw.seconds;
      }
      fig.failed += run.failed + raw.failed;
      remove_db(runtime_file);
      remove_db(raw_file);
    }
    if (!cfg.json) {
      std::printf("%6zu ids %7zu cmds | runtime %8.0f cmd/s  p50 %7.2f ms  p99 %7.2f ms  "
                  "%5llu commits | raw journal %8.0f ev/s  p50 %6.2f ms  p99 %6.2f ms  "
                  "%4llu commits | ratio %5.2f\n",
                  ids, fig.commands, fig.commands_per_s, fig.p50_ms, fig.p99_ms,
                  static_cast<unsigned long long>(fig.transactions), fig.raw_events_per_s,
                  fig.raw_p50_ms, fig.raw_p99_ms,
                  static_cast<unsigned long long>(fig.raw_transactions),
                  fig.commands_per_s / fig.raw_events_per_s);
      auto per_cmd = [](double s, std::size_t n) { return s * 1e6 / static_cast<double>(n); };
      std::printf("           CPU us per command: runtime %6.1f (writer %5.1f, readers %4.1f, "
                  "CAF timer thread %4.1f, CAF workers+other %5.1f; sys %5.1f) on %.2f s wall "
                  "| raw %5.1f (writer %5.1f; sys %5.1f) on %.2f s wall\n",
                  per_cmd(fig.cpu.total(), fig.commands), per_cmd(fig.cpu.writer, fig.commands),
                  per_cmd(fig.cpu.readers, fig.commands), per_cmd(fig.cpu.clock, fig.commands),
                  per_cmd(fig.cpu.other, fig.commands), per_cmd(fig.cpu.sys, fig.commands),
                  fig.seconds, per_cmd(fig.raw_cpu.total(), fig.commands),
                  per_cmd(fig.raw_cpu.writer, fig.commands), per_cmd(fig.raw_cpu.sys, fig.commands),
                  fig.raw_seconds);
    }
    std::fflush(stdout);
    r.commands.push_back(fig);
  }
  if (wants(cfg, "breakdown")) {
    const command_figures* big = nullptr;
    for (const auto& fig : r.commands)
      if (fig.ids == 10'000)
        big = &fig;
    r.breakdown = run_breakdown(sys, commands_for(cfg, 10'000), cfg.in_flight, big);
    if (!cfg.json) {
      std::printf("where the time goes (10000 targets, %zu in flight):\n", cfg.in_flight);
      for (const auto& step : r.breakdown)
        std::printf("  %-58s %8.0f /s  CPU %5.1f us each (sys %4.1f, timer thread %4.1f)  "
                    "%5.1f allocations\n",
                    step.name.c_str(), step.per_s, step.cpu_us, step.sys_us, step.clock_us,
                    step.allocations);
    }
  }
  if (wants(cfg, "lag")) {
    workload w{10'000, commands_for(cfg, 10'000)};
    auto file = (dir / "projection.db").string();
    auto run = run_runtime(sys, file, w, cfg.in_flight, true);
    remove_db(file);
    r.lag = *run.lag;
    if (!cfg.json)
      std::printf("projection lag (10000 ids, %zu events, runtime at %.0f cmd/s): p50 %.2f ms"
                  "  p99 %.2f ms  max %.2f ms  | from journal timestamp: p50 %.2f ms  "
                  "p99 %.2f ms  (live commits dropped: %llu)\n",
                  static_cast<std::size_t>(r.lag.events), r.lag.commands_per_s, r.lag.p50_ms,
                  r.lag.p99_ms, r.lag.max_ms, r.lag.ts_p50_ms, r.lag.ts_p99_ms,
                  static_cast<unsigned long long>(r.lag.live_dropped));
  }
  if (!cfg.json && wants(cfg, "memory"))
    std::printf("memory   %zu live idle aggregates: %.0f bytes each (RSS %.1f -> %.1f MiB); "
                "malloc in use %.0f bytes each; %.1f allocations each to activate; state %zu "
                "bytes; framework overhead %.0f bytes\n",
                r.memory.aggregates, r.memory.bytes_per_aggregate,
                static_cast<double>(r.memory.rss_before) / 1048576.0,
                static_cast<double>(r.memory.rss_after) / 1048576.0,
                r.memory.heap_bytes_per_aggregate, r.memory.allocations_per_aggregate,
                r.memory.state_bytes, r.memory.overhead_bytes);
  return r;
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
    if (arg == "--commands")
      cfg.commands = std::stoul(value());
    else if (arg == "--in-flight")
      cfg.in_flight = std::stoul(value());
    else if (arg == "--rounds")
      cfg.rounds = std::max<std::size_t>(std::stoul(value()), 1);
    else if (arg == "--dir")
      cfg.dir = value();
    else if (arg == "--json")
      cfg.json = true;
    else if (arg == "--ids")
      cfg.ids = {std::stoul(value())};
    else if (arg == "--only")
      cfg.only = value();
    else
      die("usage: bench_runtime [--commands N] [--in-flight N] [--rounds N] [--dir PATH] "
          "[--json] [--ids N] [--only e2e|breakdown|lag|memory]");
  }
  if (cfg.commands == 0 || cfg.in_flight == 0)
    die("--commands and --in-flight must be positive");
  std::filesystem::path dir;
  if (cfg.dir.empty())
    dir = std::filesystem::temp_directory_path()
          / ("annals-bench-runtime-" + std::to_string(std::random_device{}()));
  else
    dir = cfg.dir;
  std::filesystem::create_directories(dir);
  auto load_before = load_average();
  auto started = clock_type::now();
  results r;
  std::size_t threads = 0;
  {
    caf::actor_system_config sys_cfg;
    annals::actors::configure(sys_cfg);
    caf::actor_system sys{sys_cfg};
    threads = caf::get_or(sys_cfg, "scheduler.max-threads", std::size_t{0});
    r = run_all(sys, cfg, dir);
  } // every host is gone by now; the system waits for the last actors here
  auto total_s = ms_between(started, clock_type::now()) / 1000.0;
  if (cfg.dir.empty())
    std::filesystem::remove_all(dir);
  // Each target: met, not met, or not measured in this run (`--only`, `--ids`).
  std::optional<double> big_ratio;
  for (const auto& fig : r.commands)
    if (fig.ids == 10'000)
      big_ratio = fig.commands_per_s / fig.raw_events_per_s;
  std::optional<bool> ratio_met;
  if (big_ratio)
    ratio_met = *big_ratio >= 0.5;
  std::optional<bool> lag_met;
  if (r.lag.events > 0)
    lag_met = r.lag.p99_ms < 100.0;
  std::optional<bool> memory_met;
  if (r.memory.live > 0)
    memory_met = r.memory.overhead_bytes <= 2048.0;
  auto verdict = [](const std::optional<bool>& met) {
    return !met ? "not measured" : *met ? "met" : "NOT met";
  };
  auto verdict_json = [](const std::optional<bool>& met) -> boost::json::value {
    if (!met)
      return nullptr;
    return *met;
  };
  auto load_after = load_average();
  if (cfg.json) {
    boost::json::object obj;
    obj["commands"] = cfg.commands;
    obj["in_flight"] = cfg.in_flight;
    obj["rounds"] = cfg.rounds;
    obj["durability"] = "full";
    obj["scheduler_threads"] = threads;
    obj["cores"] = std::thread::hardware_concurrency();
    boost::json::array arr;
    for (const auto& fig : r.commands) {
      arr.push_back(boost::json::object{
        {"ids", fig.ids},
        {"commands_per_s", fig.commands_per_s},
        {"p50_ms", fig.p50_ms},
        {"p99_ms", fig.p99_ms},
        {"max_ms", fig.max_ms},
        {"transactions", fig.transactions},
        {"raw_events_per_s", fig.raw_events_per_s},
        {"raw_p50_ms", fig.raw_p50_ms},
        {"raw_p99_ms", fig.raw_p99_ms},
        {"raw_transactions", fig.raw_transactions},
        {"ratio", fig.commands_per_s / fig.raw_events_per_s},
        {"open_s", fig.open_s},
        {"failed", fig.failed},
        {"commands", fig.commands},
        {"seconds", fig.seconds},
        {"raw_seconds", fig.raw_seconds},
        {"cpu_s", cpu_json(fig.cpu)},
        {"raw_cpu_s", cpu_json(fig.raw_cpu)},
      });
    }
    obj["end_to_end"] = std::move(arr);
    boost::json::array steps;
    for (const auto& step : r.breakdown)
      steps.push_back(boost::json::object{{"name", step.name},
                                          {"per_s", step.per_s},
                                          {"cpu_us", step.cpu_us},
                                          {"sys_us", step.sys_us},
                                          {"clock_us", step.clock_us},
                                          {"allocations", step.allocations}});
    obj["breakdown"] = std::move(steps);
    obj["projection_lag"] = boost::json::object{
      {"ids", r.lag.ids},
      {"events", r.lag.events},
      {"commands_per_s", r.lag.commands_per_s},
      {"p50_ms", r.lag.p50_ms},
      {"p99_ms", r.lag.p99_ms},
      {"max_ms", r.lag.max_ms},
      {"from_timestamp_p50_ms", r.lag.ts_p50_ms},
      {"from_timestamp_p99_ms", r.lag.ts_p99_ms},
      {"live_dropped", r.lag.live_dropped},
    };
    obj["memory"] = boost::json::object{
      {"aggregates", r.memory.aggregates},
      {"heap_bytes_per_aggregate", r.memory.heap_bytes_per_aggregate},
      {"allocations_per_aggregate", r.memory.allocations_per_aggregate},
      {"rss_before", r.memory.rss_before},
      {"rss_after", r.memory.rss_after},
      {"bytes_per_aggregate", r.memory.bytes_per_aggregate},
      {"state_bytes", r.memory.state_bytes},
      {"overhead_bytes", r.memory.overhead_bytes},
    };
    obj["targets_met"] = boost::json::object{
      {"ratio_at_10000_ids_0_5", verdict_json(ratio_met)},
      {"projection_lag_p99_under_100ms", verdict_json(lag_met)},
      {"overhead_at_most_2kib", verdict_json(memory_met)},
    };
    obj["load_average_before"] = load_before;
    obj["load_average_after"] = load_after;
    obj["seconds"] = total_s;
    std::puts(boost::json::serialize(obj).c_str());
  } else {
    std::printf("targets: >= 0.5 x raw journal at 10000 ids (%.2f): %s; projection lag p99 < "
                "100 ms: %s; overhead <= 2 KiB: %s\n",
                big_ratio.value_or(0), verdict(ratio_met), verdict(lag_met), verdict(memory_met));
    std::printf("load average before %s, after %s; %zu scheduler threads; %.1f s\n",
                load_before.c_str(), load_after.c_str(), threads, total_s);
  }
  for (const auto& fig : r.commands)
    if (fig.failed > 0)
      die(std::to_string(fig.failed) + " commands or appends failed");
  return 0;
}

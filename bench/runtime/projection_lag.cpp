// Projection lag: the 10,000-account case once more with an at-least-once projection
// (in-memory handler that decodes each event and folds balances) attached; lag = from the
// commit (a commit listener subscribed before the projection's) to the handler's call.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "account/account.hpp"
#include "annals/actors/projection.hpp"

#include "projection_lag.hpp"
#include "runtime.hpp"

namespace annals::bench::runtime {

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

lag_watch::lag_watch(caf::actor_system& sys, std::shared_ptr<sqlite_journal> journal,
                     std::size_t ids, std::size_t commands)
  : journal_(std::move(journal)), ids_(ids) {
  // Offsets 1..ids are the `opened` events; the deposits follow.
  auto first = static_cast<std::uint64_t>(ids) + 1;
  clock_ = std::make_shared<commit_clock>(ids + commands + 1);
  listener_ = journal_->subscribe([clock = clock_](const std::vector<event_record>& batch) {
    auto now = steady_ns();
    for (const auto& rec : batch)
      if (rec.offset < clock->size)
        clock->at[rec.offset].store(now, std::memory_order_release);
  });
  probe_ = std::make_shared<lag_probe>(clock_, first, commands);
  proj_ = annals::actors::spawn_projection(
    sys, journal_, probe_,
    {.name = "bench", .filter = annals::actors::event_filter::aggregate_type<bank::account>()});
  auto st = proj_.await_offset(first - 1, std::chrono::seconds{60});
  if (!st)
    die("projection catch-up: " + annals::render(st.error()));
}

lag_figures lag_watch::finish(std::uint64_t head, double commands_per_s) {
  auto st = proj_.await_offset(head, std::chrono::seconds{60});
  if (!st)
    die("projection: " + annals::render(st.error()));
  proj_.stop();
  journal_->unsubscribe(listener_);
  lag_figures lag;
  lag.ids = ids_;
  lag.commands_per_s = commands_per_s;
  lag.p50_ms = percentile(probe_->lag_ms_, 0.50);
  lag.p99_ms = percentile(probe_->lag_ms_, 0.99);
  lag.max_ms =
    probe_->lag_ms_.empty() ? 0 : *std::max_element(probe_->lag_ms_.begin(), probe_->lag_ms_.end());
  lag.ts_p50_ms = percentile(probe_->ts_lag_ms_, 0.50);
  lag.ts_p99_ms = percentile(probe_->ts_lag_ms_, 0.99);
  lag.events = probe_->lag_ms_.size();
  lag.live_dropped = st->live_dropped;
  return lag;
}

lag_figures run_projection_lag(caf::actor_system& sys, const config& cfg,
                               const std::filesystem::path& dir) {
  workload w{10'000, commands_for(cfg, 10'000)};
  auto file = (dir / "projection.db").string();
  auto run = run_runtime(sys, file, w, cfg.in_flight, true);
  remove_db(file);
  return *run.lag;
}

} // namespace annals::bench::runtime

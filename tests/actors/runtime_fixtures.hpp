#pragma once

// Helpers for the aggregate runtime tests: an actor system per test, a journal decorator
// that can hold operations back, and a bounded wait on many asynchronous replies.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/system.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/persistence/memory_journal.hpp"

namespace rt {

using namespace std::chrono_literals;
namespace ap = annals::persistence;

struct system_config : caf::actor_system_config {
  system_config() {
    annals::actors::configure(*this);
  }
};

// Counts down to zero; `wait` returns false if the bound passes first.
class latch {
public:
  explicit latch(std::size_t n) : n_(n) {}
  void count_down() {
    std::lock_guard guard{mtx_};
    if (n_ > 0 && --n_ == 0)
      cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds bound = 60s) {
    std::unique_lock lk{mtx_};
    return cv_.wait_for(lk, bound, [this] { return n_ == 0; });
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::size_t n_;
};

// A journal that forwards everything to another journal; tests override what they fault.
class proxy_journal : public ap::journal {
public:
  explicit proxy_journal(ap::journal_ptr inner) : inner_(std::move(inner)) {}

  void append(ap::append_request req, ap::callback<ap::append_result> done) override {
    inner_->append(std::move(req), std::move(done));
  }
  void read_stream(std::string pid, std::uint64_t from, std::uint64_t to, std::size_t max,
                   ap::callback<std::vector<ap::event_record>> done) override {
    inner_->read_stream(std::move(pid), from, to, max, std::move(done));
  }
  void read_all(std::uint64_t from, std::size_t max,
                ap::callback<std::vector<ap::event_record>> done) override {
    inner_->read_all(from, max, std::move(done));
  }
  void read_tagged(std::string tag, std::uint64_t from, std::size_t max,
                   ap::callback<std::vector<ap::event_record>> done) override {
    inner_->read_tagged(std::move(tag), from, max, std::move(done));
  }
  void highest_seq(std::string pid, ap::callback<std::uint64_t> done) override {
    inner_->highest_seq(std::move(pid), std::move(done));
  }
  void head_offset(ap::callback<std::uint64_t> done) override {
    inner_->head_offset(std::move(done));
  }
  void persistence_ids(std::string after, std::size_t max,
                       ap::callback<std::vector<std::string>> done) override {
    inner_->persistence_ids(std::move(after), max, std::move(done));
  }
  std::uint64_t subscribe(ap::commit_listener f) override {
    return inner_->subscribe(std::move(f));
  }
  void unsubscribe(std::uint64_t h) override {
    inner_->unsubscribe(h);
  }

protected:
  ap::journal_ptr inner_;
};

// A proxy of a memory journal, which tests can also reach directly as `inner`.
class forwarding_journal : public proxy_journal {
public:
  forwarding_journal() : forwarding_journal(std::make_shared<ap::memory_journal>()) {}

  std::shared_ptr<ap::memory_journal> inner;

private:
  explicit forwarding_journal(std::shared_ptr<ap::memory_journal> mem)
    : proxy_journal(mem), inner(std::move(mem)) {}
};

// While `hold_*` is set, appends or stream reads wait until released.
class holding_journal final : public forwarding_journal {
public:
  void hold_appends(bool on) {
    release_if(on, hold_appends_);
  }
  void hold_reads(bool on) {
    release_if(on, hold_reads_);
  }
  // Waits until at least one operation is held; false if `bound` passes first.
  bool wait_held(std::chrono::milliseconds bound = 30s) {
    std::unique_lock lk{mtx_};
    return held_cv_.wait_for(lk, bound, [this] { return !held_.empty(); });
  }

  void append(ap::append_request req, ap::callback<ap::append_result> done) override {
    defer(hold_appends_, [this, req = std::move(req), done = std::move(done)]() mutable {
      inner->append(std::move(req), std::move(done));
    });
  }
  void read_stream(std::string pid, std::uint64_t from, std::uint64_t to, std::size_t max,
                   ap::callback<std::vector<ap::event_record>> done) override {
    defer(hold_reads_, [=, this]() mutable { inner->read_stream(pid, from, to, max, done); });
  }

private:
  void defer(bool& flag, std::function<void()> op) {
    {
      std::lock_guard guard{mtx_};
      if (flag) {
        held_.push_back(std::move(op));
        held_cv_.notify_all();
        return;
      }
    }
    op();
  }
  void release_if(bool on, bool& flag) {
    std::deque<std::function<void()>> run;
    {
      std::lock_guard guard{mtx_};
      flag = on;
      if (!on)
        run.swap(held_);
    }
    for (auto& op : run)
      op();
  }

  std::mutex mtx_;
  bool hold_appends_ = false;
  bool hold_reads_ = false;
  std::deque<std::function<void()>> held_;
  std::condition_variable held_cv_;
};

// Fails the appends that `fault` names (returns an error for).
class faulty_journal final : public forwarding_journal {
public:
  std::function<caf::error(const ap::append_request&)> fault;

  void append(ap::append_request req, ap::callback<ap::append_result> done) override {
    if (fault)
      if (auto err = fault(req))
        return done(std::move(err));
    inner->append(std::move(req), std::move(done));
  }
};

// All events of one stream, read with a bound.
inline std::vector<ap::event_record> stream(ap::journal& j, const std::string& pid) {
  auto r = ap::wait_for<std::vector<ap::event_record>>(
    [&](ap::callback<std::vector<ap::event_record>> cb) {
      j.read_stream(pid, 1, UINT64_MAX, 1'000'000, std::move(cb));
    },
    30s);
  REQUIRE(r);
  return std::move(*r);
}

} // namespace rt

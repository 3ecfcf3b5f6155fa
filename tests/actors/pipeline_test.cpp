// Pipelining: while an append is in flight, an aggregate decides the commands queued behind
// it on the state including the uncommitted events and sends their events as the next
// append. The guarantees a caller sees are those of one command at a time: no reply before
// its events are committed, replies in command order, each reply the state right after its
// own events, and a failed append fails every command decided on top of it.

#include <catch2/catch.hpp>

#include <atomic>
#include <optional>
#include <thread>

#include <boost/describe.hpp>
#include <caf/event_based_actor.hpp>

#include "account/account.hpp"
#include "annals/actors/ask.hpp"
#include "annals/actors/host.hpp"
#include "runtime_fixtures.hpp"

using namespace rt;
using annals::actors::host;
using bank::account;
using view = bank::account_view;

namespace {

// Holds the appends it is given while `hold` is on, until the test releases or fails them,
// oldest first. Records the number of events of every append it was given.
class stepping_journal final : public forwarding_journal {
public:
  void append(ap::append_request req, ap::callback<ap::append_result> done) override {
    {
      std::lock_guard guard{mtx_};
      sizes_.push_back(req.events.size());
      if (holding_) {
        held_.push_back({std::move(req), std::move(done)});
        cv_.notify_all();
        return;
      }
    }
    inner->append(std::move(req), std::move(done));
  }

  void hold(bool on) {
    std::deque<held> run;
    {
      std::lock_guard guard{mtx_};
      holding_ = on;
      if (!on)
        run.swap(held_);
    }
    for (auto& h : run)
      inner->append(std::move(h.req), std::move(h.done));
  }

  // Waits until at least `n` appends are held; false if `bound` passes first.
  bool wait_held(std::size_t n, std::chrono::milliseconds bound = 30s) {
    std::unique_lock lk{mtx_};
    return cv_.wait_for(lk, bound, [&] { return held_.size() >= n; });
  }

  // Commits the oldest held append.
  void release_one() {
    auto h = take();
    inner->append(std::move(h.req), std::move(h.done));
  }

  // Fails the oldest held append with `err`; nothing of it is stored.
  void fail_one(caf::error err) {
    auto h = take();
    h.done(std::move(err));
  }

  std::vector<std::size_t> sizes() {
    std::lock_guard guard{mtx_};
    return sizes_;
  }

private:
  struct held {
    ap::append_request req;
    ap::callback<ap::append_result> done;
  };

  held take() {
    std::lock_guard guard{mtx_};
    REQUIRE_FALSE(held_.empty());
    auto h = std::move(held_.front());
    held_.pop_front();
    return h;
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  bool holding_ = false;
  std::deque<held> held_;
  std::vector<std::size_t> sizes_;
};

// The replies to commands sent at once from one actor, in the order they arrived.
class firing {
public:
  using result = caf::expected<std::int64_t>;

  explicit firing(std::size_t n) : replies_(n) {}

  void record(std::size_t i, result r) {
    std::lock_guard guard{mtx_};
    replies_[i] = std::move(r);
    order_.push_back(i);
    cv_.notify_all();
  }
  bool wait(std::size_t n, std::chrono::milliseconds bound = 30s) {
    std::unique_lock lk{mtx_};
    return cv_.wait_for(lk, bound, [&] { return order_.size() >= n; });
  }
  std::size_t answered() {
    std::lock_guard guard{mtx_};
    return order_.size();
  }
  std::vector<std::size_t> order() {
    std::lock_guard guard{mtx_};
    return order_;
  }
  result reply(std::size_t i) {
    std::lock_guard guard{mtx_};
    return *replies_[i];
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::optional<result>> replies_;
  std::vector<std::size_t> order_;
};

// Sends one command from `self`; reports the balance the reply carries, or the error.
using sender =
  std::function<void(caf::event_based_actor*, std::function<void(firing::result)> report)>;

sender deposit(host& h, std::string id, std::int64_t cents, std::string key = {}) {
  return [&h, id, cents, key](caf::event_based_actor* self, auto report) {
    h.request<account>(self, id, bank::deposit{cents},
                       [report](caf::expected<view> v) {
                         report(v ? firing::result{v->balance}
                                  : firing::result{std::move(v.error())});
                       },
                       {.timeout = 30s, .idempotency_key = key});
  };
}

sender balance_of(host& h, std::string id) {
  return [&h, id](caf::event_based_actor* self, auto report) {
    h.request<account>(self, id, bank::get_balance{}, std::move(report), {.timeout = 30s});
  };
}

std::shared_ptr<firing> fire_all(caf::actor_system& sys, std::vector<sender> sends) {
  auto f = std::make_shared<firing>(sends.size());
  sys.spawn([sends = std::move(sends), f](caf::event_based_actor* self) {
    for (std::size_t i = 0; i < sends.size(); ++i)
      sends[i](self, [f, i](firing::result r) { f->record(i, std::move(r)); });
  });
  return f;
}

std::vector<sender> deposits(host& h, const std::string& id, std::int64_t n) {
  std::vector<sender> out;
  for (std::int64_t i = 1; i <= n; ++i)
    out.push_back(deposit(h, id, i));
  return out;
}

// Waits until `n` commands were decided ahead of the journal; false if `bound` passes first.
bool wait_pipelined(host& h, std::uint64_t n, std::chrono::milliseconds bound = 30s) {
  auto until = std::chrono::steady_clock::now() + bound;
  while (h.metrics().commands_pipelined < n) {
    if (std::chrono::steady_clock::now() > until)
      return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::int64_t folded_balance(ap::journal& j, const std::string& pid) {
  std::int64_t sum = 0;
  for (auto& e : stream(j, pid)) {
    if (e.name == "bank.deposited")
      sum += std::stoll(e.payload.substr(9));
  }
  return sum;
}

// An account `acc`, opened, on a host whose journal appends only when the test lets it.
struct opened_account {
  opened_account() {
    REQUIRE_FALSE(h.register_aggregate<account>());
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  }

  std::shared_ptr<stepping_journal> journal = std::make_shared<stepping_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
};

} // namespace

TEST_CASE_METHOD(
  opened_account,
  "while an append is in flight the commands behind it are decided and share the next "
  "append; no reply goes out before its events are committed",
  "[runtime][pipeline]") {
  journal->hold(true);
  auto f = fire_all(sys, deposits(h, "acc", 100));
  // Deposit 1 is in flight; deposits 2..100 are decided on top of it and wait as one append.
  REQUIRE(journal->wait_held(1));
  REQUIRE(wait_pipelined(h, 99));
  CHECK(f->answered() == 0);
  journal->release_one();
  REQUIRE(f->wait(1));
  CHECK(f->order() == std::vector<std::size_t>{0});
  CHECK(f->reply(0).value() == 1);
  // The first commit sent deposits 2..100 as one append.
  REQUIRE(journal->wait_held(1));
  CHECK(f->answered() == 1);
  journal->hold(false);
  REQUIRE(f->wait(100));
  auto order = f->order();
  for (std::size_t i = 0; i < order.size(); ++i) {
    CHECK(order[i] == i);
    // The balance right after deposit i + 1: 1 + 2 + ... + (i + 1).
    CHECK(f->reply(i).value() == std::int64_t(i + 1) * std::int64_t(i + 2) / 2);
  }
  auto sizes = journal->sizes();
  CHECK(sizes == std::vector<std::size_t>{1, 1, 99});
  auto events = stream(*journal->inner, "account|acc");
  REQUIRE(events.size() == 101);
  for (std::size_t i = 0; i < events.size(); ++i)
    CHECK(events[i].seq == i + 1);
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 5050);
}

TEST_CASE_METHOD(opened_account,
                 "a read-only command decided behind uncommitted events is answered after them, "
                 "with the state they made",
                 "[runtime][pipeline]") {
  journal->hold(true);
  auto f = fire_all(sys, {deposit(h, "acc", 5), balance_of(h, "acc"), deposit(h, "acc", 7)});
  REQUIRE(journal->wait_held(1));
  REQUIRE(wait_pipelined(h, 2));
  CHECK(f->answered() == 0);
  journal->hold(false);
  REQUIRE(f->wait(3));
  CHECK(f->order() == std::vector<std::size_t>{0, 1, 2});
  CHECK(f->reply(0).value() == 5);
  CHECK(f->reply(1).value() == 5);
  CHECK(f->reply(2).value() == 12);
}

TEST_CASE_METHOD(opened_account,
                 "a failed append in the middle of a pipeline fails its commands and every command "
                 "decided on top of it; the aggregate goes on from the committed state",
                 "[runtime][pipeline][failure]") {
  journal->hold(true);
  auto f = fire_all(sys, deposits(h, "acc", 10));
  REQUIRE(journal->wait_held(1)); // deposit 1; 2..10 decided on top of it
  REQUIRE(wait_pipelined(h, 9));
  journal->release_one(); // deposit 1 commits
  REQUIRE(f->wait(1));
  REQUIRE(journal->wait_held(1)); // deposits 2..10 as one append
  journal->fail_one(annals::make_error(ap::journal_errc::storage_error, "test: write failed"));
  REQUIRE(f->wait(10));
  CHECK(f->order() == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(f->reply(0).value() == 1);
  for (std::size_t i = 1; i < 10; ++i) {
    auto r = f->reply(i);
    REQUIRE_FALSE(r);
    CHECK(annals::is(r.error(), ap::journal_errc::storage_error));
  }
  journal->hold(false);
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 1);
  CHECK(h.ask<account>("acc", bank::deposit{20})->balance == 21);
  CHECK(folded_balance(*journal->inner, "account|acc") == 21);
  CHECK(stream(*journal->inner, "account|acc").size() == 3);
}

TEST_CASE_METHOD(
  opened_account,
  "an append that conflicts with another writer fails the pipeline, and the aggregate "
  "re-reads the stream with the other writer's events",
  "[runtime][pipeline][failure]") {
  // Another writer appends a deposit of 1000 behind the aggregate's back.
  auto other = ap::wait_for<ap::append_result>(
    [&](auto cb) {
      journal->inner->append(
        {"account|acc", 1, {account::codec_type::encode(bank::deposited{1000})}, {}},
        std::move(cb));
    },
    10s);
  REQUIRE(other);
  auto f = fire_all(sys, deposits(h, "acc", 20));
  REQUIRE(f->wait(20));
  auto first = f->reply(0);
  REQUIRE_FALSE(first);
  CHECK(annals::is(first.error(), ap::journal_errc::conflict));
  // The commands decided on the stale state failed with it; any that came after the
  // re-read saw the other writer's deposit.
  std::int64_t applied = 1000;
  bool succeeded = false;
  for (std::size_t i = 0; i < 20; ++i) {
    auto r = f->reply(i);
    if (!r) {
      CHECK_FALSE(succeeded);
      CHECK(annals::is(r.error(), ap::journal_errc::conflict));
      continue;
    }
    succeeded = true;
    applied += std::int64_t(i + 1);
    CHECK(*r == applied);
  }
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == applied);
  CHECK(folded_balance(*journal->inner, "account|acc") == applied);
}

TEST_CASE_METHOD(
  opened_account,
  "a retry queued behind its first attempt in a pipeline gets the first reply, and the "
  "events are stored once",
  "[runtime][pipeline][idempotency]") {
  journal->hold(true);
  auto f = fire_all(sys, {deposit(h, "acc", 10, "k-1"), deposit(h, "acc", 5),
                          deposit(h, "acc", 10, "k-1"), deposit(h, "acc", 7)});
  REQUIRE(journal->wait_held(1));
  journal->hold(false);
  REQUIRE(f->wait(4));
  CHECK(f->order() == std::vector<std::size_t>{0, 1, 2, 3});
  CHECK(f->reply(0).value() == 10);
  CHECK(f->reply(1).value() == 15);
  CHECK(f->reply(2).value() == 10); // the first attempt's reply
  CHECK(f->reply(3).value() == 22);
  CHECK(stream(*journal->inner, "account|acc").size() == 4);
}

TEST_CASE("a snapshot taken while its events are in flight is saved once they are committed, "
          "and dropped when they fail",
          "[runtime][pipeline][snapshots]") {
  auto journal = std::make_shared<stepping_journal>();
  auto snapshots = std::make_shared<ap::memory_snapshot_store>(2);
  auto newest_snapshot = [&]() -> std::uint64_t {
    auto snaps = ap::wait_for<std::vector<ap::snapshot_record>>(
      [&](auto cb) { snapshots->load("account|acc", std::move(cb)); }, 10s);
    REQUIRE(snaps);
    return snaps->empty() ? 0 : snaps->front().seq;
  };
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal, snapshots};
    REQUIRE_FALSE(h.register_aggregate<account>({.snapshot_every = 5}));
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    journal->hold(true);
    auto f = fire_all(sys, deposits(h, "acc", 30));
    REQUIRE(journal->wait_held(1));
    REQUIRE(wait_pipelined(h, 29));
    journal->fail_one(annals::make_error(ap::journal_errc::storage_error, "test: write failed"));
    REQUIRE(f->wait(30));
    CHECK_FALSE(f->reply(0));
    journal->hold(false);
    // Snapshots at seq 5, 10, ... were taken on decided state; none may be stored, since
    // none of those events was.
    CHECK(newest_snapshot() == 0);
    auto g = fire_all(sys, deposits(h, "acc", 30));
    REQUIRE(g->wait(30));
    for (std::size_t i = 0; i < 30; ++i)
      REQUIRE(g->reply(i));
    CHECK(*h.ask<account>("acc", bank::get_balance{}) == 465);
  }
  auto events = stream(*journal->inner, "account|acc");
  REQUIRE(events.size() == 31);
  auto at = newest_snapshot();
  CHECK(at > 0);
  CHECK(at <= events.size());
  // A restart from the snapshot plus the tail gives the state of a full replay.
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal, snapshots};
  REQUIRE_FALSE(h.register_aggregate<account>({.snapshot_every = 5}));
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 465);
}

TEST_CASE("pipeline depth 1 decides one command at a time: each command's events are their own "
          "append, sent after the one before is committed",
          "[runtime][pipeline]") {
  auto journal = std::make_shared<stepping_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>({.pipeline_depth = 1}));
  REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  journal->hold(true);
  auto f = fire_all(sys, deposits(h, "acc", 20));
  for (std::size_t i = 0; i < 20; ++i) {
    REQUIRE(journal->wait_held(1));
    journal->release_one();
    REQUIRE(f->wait(i + 1));
  }
  journal->hold(false);
  auto sizes = journal->sizes();
  CHECK(sizes == std::vector<std::size_t>(21, 1));
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 210);
}

namespace asker {

// Persists, then asks another aggregate: the ask must not leave before the commit.
struct note_then_ask {
  std::string other;
};
struct noted {
  static constexpr auto name = "asker.noted";
  std::int64_t n = 0;
};
BOOST_DESCRIBE_STRUCT(noted, (), (n))
struct asker_state {
  std::int64_t notes = 0;
  void apply(const noted&) {
    ++notes;
  }
};

inline host* peer_host = nullptr;
inline std::atomic<int> peer_asked{0};

struct ping {};
struct pong_state {
  void apply(const noted&) {}
};
class ponger : public annals::aggregate<pong_state, noted> {
public:
  static constexpr auto name = "ponger";
  std::int64_t handle(ping) const {
    return ++peer_asked;
  }
};

class asker : public annals::aggregate<asker_state, noted> {
public:
  static constexpr auto name = "asker";
  annals::task<std::int64_t> handle(note_then_ask cmd) {
    co_await persist(noted{1});
    auto r = co_await annals::actors::ask<ponger>(*peer_host, cmd.other, ping{});
    if (!r)
      co_return r.error();
    co_return state().notes * 100 + *r;
  }
};

} // namespace asker

TEST_CASE("a handler that asks another aggregate after persisting sends the ask only once its "
          "events are committed",
          "[runtime][pipeline][ask]") {
  auto journal = std::make_shared<stepping_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  asker::peer_host = &h;
  asker::peer_asked = 0;
  REQUIRE_FALSE(h.register_aggregate<asker::asker>());
  REQUIRE_FALSE(h.register_aggregate<asker::ponger>());
  journal->hold(true);
  auto reply = std::make_shared<latch>(1);
  std::int64_t got = 0;
  sys.spawn([&h, reply, &got](caf::event_based_actor* self) {
    h.request<asker::asker>(self, "a", asker::note_then_ask{"p"},
                            [reply, &got](caf::expected<std::int64_t> r) {
                              got = r ? *r : -1;
                              reply->count_down();
                            },
                            {.timeout = 30s});
  });
  REQUIRE(journal->wait_held(1));
  // A round trip to the peer: an ask sent before the commit would have reached it first.
  CHECK(*h.ask<asker::ponger>("p", asker::ping{}) == 1);
  journal->hold(false);
  REQUIRE(reply->wait());
  CHECK(got == 102);
  CHECK(asker::peer_asked == 2);
}

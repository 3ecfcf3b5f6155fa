#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <numeric>
#include <thread>

#include <caf/event_based_actor.hpp>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "runtime_fixtures.hpp"

using namespace rt;
using annals::actors::host;
using bank::account;
using bank::account_errc;
using view = bank::account_view;

namespace {

// Sends `n` commands at once from one actor and waits for every reply, at most `bound`.
template <class C>
std::vector<caf::expected<std::int64_t>> fire(caf::actor_system& sys, host& h, std::string id,
                                              std::size_t n, std::function<C(std::size_t)> make,
                                              std::chrono::milliseconds bound = 60s) {
  auto replies = std::make_shared<std::vector<caf::expected<std::int64_t>>>(
    n, caf::expected<std::int64_t>{std::int64_t{-1}});
  auto done = std::make_shared<latch>(n);
  sys.spawn([&h, id, n, make, replies, done](caf::event_based_actor* self) {
    for (std::size_t i = 0; i < n; ++i)
      h.request<account>(self, id, make(i),
                         [i, replies, done](caf::expected<view> r) {
                           (*replies)[i] =
                             r ? caf::expected<std::int64_t>{r->balance} : std::move(r.error());
                           done->count_down();
                         },
                         {.timeout = 30s});
  });
  REQUIRE(done->wait(bound));
  return std::move(*replies);
}

} // namespace

TEST_CASE("a command to a new id starts its aggregate, which handles it", "[runtime]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  auto opened = h.ask<account>("acc-1", bank::open{"Ada"});
  REQUIRE(opened);
  auto bal = h.ask<account>("acc-1", bank::deposit{500});
  REQUIRE(bal);
  CHECK(bal->balance == 500);
  auto refused = h.ask<account>("acc-1", bank::withdraw{501});
  REQUIRE_FALSE(refused);
  CHECK(annals::is(refused.error(), account_errc::insufficient_funds));
  auto events = stream(*journal, "account|acc-1");
  REQUIRE(events.size() == 2);
  CHECK(events[1].name == "bank.deposited");
  CHECK(events[1].payload == R"({"cents":500})");
}

TEST_CASE("1,000 concurrent deposits to one account get sequence numbers 1..1000 in order",
          "[runtime][concurrency]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  auto replies = fire<bank::deposit>(
    sys, h, "acc", 1000, [](std::size_t i) { return bank::deposit{std::int64_t(i + 1)}; });
  std::vector<std::int64_t> balances;
  for (auto& r : replies) {
    REQUIRE(r);
    balances.push_back(*r);
  }
  // Each reply is the balance right after that deposit: all distinct, the last is the sum.
  std::sort(balances.begin(), balances.end());
  CHECK(std::adjacent_find(balances.begin(), balances.end()) == balances.end());
  CHECK(balances.back() == 1000 * 1001 / 2);
  auto events = stream(*journal, "account|acc");
  REQUIRE(events.size() == 1001);
  for (std::size_t i = 0; i < events.size(); ++i)
    CHECK(events[i].seq == i + 1);
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 500500);
}

TEST_CASE("an aggregate recovers the same state after the actor system stops",
          "[runtime][recovery]") {
  auto journal = std::make_shared<ap::memory_journal>();
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>());
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    for (int i = 1; i <= 20; ++i)
      REQUIRE(h.ask<account>("acc", bank::deposit{i}));
    REQUIRE(h.ask<account>("acc", bank::withdraw{10}));
  }
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  auto bal = h.ask<account>("acc", bank::get_balance{});
  REQUIRE(bal);
  CHECK(*bal == 210 - 10);
  CHECK(h.metrics().events_replayed == 22);
  CHECK(h.ask<account>("acc", bank::deposit{1})->balance == 201);
}

TEST_CASE("recovery from a snapshot plus the tail equals a full replay", "[runtime][snapshots]") {
  auto journal = std::make_shared<ap::memory_journal>();
  auto snapshots = std::make_shared<ap::memory_snapshot_store>(2);
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal, snapshots};
    REQUIRE_FALSE(h.register_aggregate<account>({.snapshot_every = 10}));
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    for (int i = 1; i <= 24; ++i)
      REQUIRE(h.ask<account>("acc", bank::deposit{i}));
  }
  auto snaps = ap::wait_for<std::vector<ap::snapshot_record>>(
    [&](auto cb) { snapshots->load("account|acc", std::move(cb)); }, 10s);
  REQUIRE(snaps);
  REQUIRE_FALSE(snaps->empty());
  CHECK(snaps->front().seq == 20);
  std::int64_t with_snapshot = 0;
  std::int64_t full = 0;
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal, snapshots};
    REQUIRE_FALSE(h.register_aggregate<account>({.snapshot_every = 10}));
    with_snapshot = *h.ask<account>("acc", bank::get_balance{});
    CHECK(h.metrics().events_replayed == 5); // seq 21..25 only
    CHECK(h.ask<account>("acc", bank::get_account{})->version == 25);
  }
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>());
    full = *h.ask<account>("acc", bank::get_balance{});
    CHECK(h.metrics().events_replayed == 25);
    CHECK(h.ask<account>("acc", bank::get_account{})->version == 25);
  }
  CHECK(with_snapshot == 300);
  CHECK(with_snapshot == full);
}

TEST_CASE("a snapshot that does not decode is skipped and recovery replays instead",
          "[runtime][snapshots]") {
  auto journal = std::make_shared<ap::memory_journal>();
  auto snapshots = std::make_shared<ap::memory_snapshot_store>(2);
  std::vector<std::string> warnings;
  std::mutex mtx;
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>());
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    REQUIRE(h.ask<account>("acc", bank::deposit{70}));
  }
  REQUIRE(ap::wait_for<caf::unit_t>(
    [&](auto cb) {
      snapshots->save({"account|acc", 2, "bank.account_state", 1, R"({"broken":)", 0},
                      std::move(cb));
    },
    10s));
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal, snapshots, {.warn = [&](std::string_view w) {
           std::lock_guard guard{mtx};
           warnings.emplace_back(w);
         }}};
  REQUIRE_FALSE(h.register_aggregate<account>({.snapshot_every = 10}));
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 70);
  std::lock_guard guard{mtx};
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("skipping snapshot of account|acc at seq 2"));
}

TEST_CASE("commands sent during recovery are all answered, in arrival order",
          "[runtime][recovery]") {
  auto journal = std::make_shared<holding_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  REQUIRE(h.ask<account>("acc", bank::deposit{1000}));
  // A second host on the same journal recovers the account while its reads are held.
  host h2{sys, journal};
  REQUIRE_FALSE(h2.register_aggregate<account>());
  journal->hold_reads(true);
  auto replies = std::make_shared<std::vector<std::int64_t>>();
  auto done = std::make_shared<latch>(50);
  sys.spawn([&h2, replies, done](caf::event_based_actor* self) {
    for (int i = 0; i < 50; ++i)
      h2.request<account>(self, "acc", bank::deposit{1},
                          [replies, done](caf::expected<view> r) {
                            replies->push_back(r ? r->balance : -1);
                            done->count_down();
                          },
                          {.timeout = 30s});
  });
  // Wait until recovery is parked on the held read, then release it.
  REQUIRE(journal->wait_held());
  journal->hold_reads(false);
  REQUIRE(done->wait());
  std::vector<std::int64_t> expected(50);
  std::iota(expected.begin(), expected.end(), 1001);
  CHECK(*replies == expected);
}

TEST_CASE("a failed append leaves the state unchanged and the next command works",
          "[runtime][failure]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  REQUIRE(h.ask<account>("acc", bank::deposit{100}));
  journal->fail_appends_with(annals::make_error(ap::journal_errc::disk_full, "test: no space"));
  auto failed = h.ask<account>("acc", bank::deposit{50});
  REQUIRE_FALSE(failed);
  CHECK(annals::is(failed.error(), ap::journal_errc::disk_full));
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 100);
  journal->fail_appends_with(caf::error{});
  CHECK(h.ask<account>("acc", bank::deposit{50})->balance == 150);
  CHECK(stream(*journal, "account|acc").size() == 3);
}

TEST_CASE("an append the journal does not acknowledge in time fails with a timeout and the "
          "aggregate never serves what the journal lacks",
          "[runtime][failure]") {
  auto journal = std::make_shared<holding_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>({.journal_timeout = 200ms}));
  REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  journal->hold_appends(true);
  auto timed_out = h.ask<account>("acc", bank::deposit{40});
  REQUIRE_FALSE(timed_out);
  CHECK(annals::is(timed_out.error(), annals::errc::timeout));
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 0);
  journal->hold_appends(false); // the late append commits now
  // The aggregate's view is stale (it never saw the late commit); its next write detects
  // that as a conflict and re-reads the tail, after which it includes the late event.
  auto next = h.ask<account>("acc", bank::deposit{2});
  if (!next) {
    CHECK(annals::is(next.error(), ap::journal_errc::conflict));
    next = h.ask<account>("acc", bank::deposit{2});
  }
  REQUIRE(next);
  CHECK(next->balance == 42);
  std::int64_t folded = 0;
  for (auto& e : stream(*journal->inner, "account|acc"))
    if (e.name == "bank.deposited")
      folded += std::stoll(e.payload.substr(9));
  CHECK(folded == 42);
}

namespace {
struct boom {};
struct fragile : annals::aggregate<bank::account_state, bank::opened, bank::deposited> {
  static constexpr auto name = "fragile";
  annals::task<std::int64_t> handle(bank::deposit cmd) {
    co_await persist(bank::deposited{cmd.cents});
    co_return state().balance;
  }
  annals::task<std::int64_t> handle(boom) {
    throw std::runtime_error{"handler exploded"};
    co_return 0;
  }
};
// The account under a type name the host refuses.
struct misnamed_account : account {
  static constexpr auto name = "acc|ount";
};
} // namespace

TEST_CASE("an exception in a handler becomes an error reply and the aggregate goes on",
          "[runtime][failure]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<fragile>());
  auto r = h.ask<fragile>("f", boom{});
  REQUIRE_FALSE(r);
  CHECK(annals::render(r.error()) == "annals.handler_failed: handler exploded");
  CHECK(*h.ask<fragile>("f", bank::deposit{3}) == 3);
}

TEST_CASE("a command id makes a retry return the first reply and persist nothing, also "
          "after a restart",
          "[runtime][idempotency]") {
  auto journal = std::make_shared<ap::memory_journal>();
  annals::actors::command_options key{.idempotency_key = "req-7"};
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>());
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    auto first = h.ask<account>("acc", bank::deposit{100}, key);
    REQUIRE(first);
    CHECK(first->balance == 100);
    CHECK(first->version == 2);
    CHECK(h.ask<account>("acc", bank::deposit{5})->balance == 105);
    // The retry answers exactly what the first attempt answered, version included.
    CHECK(h.ask<account>("acc", bank::deposit{100}, key) == first);
    CHECK(h.metrics().duplicates == 1);
  }
  CHECK(stream(*journal, "account|acc").size() == 3);
  CHECK(stream(*journal, "account|acc")[1].metadata.command_id == "req-7");
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  // After a restart the reply is recomputed from the log: the same balance and version.
  auto again = h.ask<account>("acc", bank::deposit{100}, key);
  REQUIRE(again);
  CHECK(again->balance == 100);
  CHECK(again->version == 2);
  CHECK(stream(*journal, "account|acc").size() == 3);
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 105);
}

TEST_CASE("passivation and reactivation under concurrent commands lose nothing",
          "[runtime][passivation]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal, nullptr, {.max_live = 3}};
  REQUIRE_FALSE(h.register_aggregate<account>({.idle_timeout = 5ms}));
  constexpr std::size_t accounts = 10;
  for (std::size_t a = 0; a < accounts; ++a)
    REQUIRE(h.ask<account>("acc-" + std::to_string(a), bank::open{"owner"}));
  auto done = std::make_shared<latch>(accounts * 100);
  auto failures = std::make_shared<std::atomic<int>>(0);
  sys.spawn([&h, done, failures](caf::event_based_actor* self) {
    for (int round = 0; round < 100; ++round)
      for (std::size_t a = 0; a < accounts; ++a)
        h.request<account>(self, "acc-" + std::to_string(a), bank::deposit{1},
                           [done, failures](caf::expected<view> r) {
                             if (!r)
                               ++*failures;
                             done->count_down();
                           },
                           {.timeout = 30s});
  });
  REQUIRE(done->wait());
  CHECK(*failures == 0);
  CHECK(h.metrics().passivations > 0);
  CHECK(*h.live_count() <= 3);
  for (std::size_t a = 0; a < accounts; ++a) {
    auto id = "acc-" + std::to_string(a);
    CHECK(*h.ask<account>(id, bank::get_balance{}) == 100);
    auto events = stream(*journal, "account|" + id);
    REQUIRE(events.size() == 101);
    CHECK(events.back().seq == 101);
  }
}

TEST_CASE("bad ids and unregistered types get clear errors", "[runtime][errors]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  auto unregistered = h.ask<account>("acc", bank::get_balance{});
  REQUIRE_FALSE(unregistered);
  CHECK_THAT(annals::render(unregistered.error()), Catch::Contains("not registered"));
  REQUIRE_FALSE(h.register_aggregate<account>());
  CHECK(h.register_aggregate<account>());
  CHECK(h.register_aggregate<misnamed_account>());
  CHECK_THAT(annals::render(h.ask<account>("", bank::get_balance{}).error()),
             Catch::Contains("empty"));
  CHECK_THAT(annals::render(h.ask<account>(std::string(256, 'x'), bank::get_balance{}).error()),
             Catch::Contains("at most 255"));
  CHECK_THAT(annals::render(h.ask<account>("a\nb", bank::get_balance{}).error()),
             Catch::Contains("control character"));
  CHECK_THAT(annals::render(h.ask<account>("ab\xff", bank::get_balance{}).error()),
             Catch::Contains("aggregate id is not valid UTF-8 (byte 2)"));
  // Command and correlation ids are stored with the events and shown as JSON: the same rules.
  CHECK_THAT(
    annals::render(
      h.ask<account>("acc", bank::get_balance{}, {.idempotency_key = "k\xc3\x28"}).error()),
    Catch::Contains("command id is not valid UTF-8 (byte 1)"));
  CHECK_THAT(annals::render(h.ask<account>("acc", bank::get_balance{},
                                           {.idempotency_key = "k", .correlation_id = "c\td"})
                              .error()),
             Catch::Contains("correlation id holds a control character"));
  CHECK(h.ask<account>("caf\xc3\xa9", bank::open{"Zo\xc3\xab"}, {.idempotency_key = "cl\xc3\xa9"}));
}

TEST_CASE("a command whose events exceed the journal's size limit fails with too_large and "
          "changes nothing",
          "[runtime][errors]") {
  auto journal = std::make_shared<ap::memory_journal>(256);
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  auto huge = h.ask<account>("acc", bank::open{std::string(300, 'o')});
  REQUIRE_FALSE(huge);
  CHECK(annals::is(huge.error(), ap::journal_errc::too_large));
  CHECK_THAT(annals::render(huge.error()), Catch::Contains("persistence id account|acc"));
  // The aggregate applied nothing and takes the next command as if the first never came.
  REQUIRE(h.ask<account>("acc", bank::open{"ada"}));
  REQUIRE(h.ask<account>("acc", bank::deposit{5}));
  auto balance = h.ask<account>("acc", bank::get_balance{});
  REQUIRE(balance);
  CHECK(*balance == 5);
  CHECK(stream(*journal, "account|acc").size() == 2);
}

TEST_CASE("an aggregate whose stored events do not decode refuses commands with the cause",
          "[runtime][errors]") {
  auto journal = std::make_shared<ap::memory_journal>();
  auto appended = ap::wait_for<ap::append_result>(
    [&](auto cb) {
      journal->append({"account|bad", 0, {{"bank.opened", 1, R"({"owner":7})", {}}}, {}},
                      std::move(cb));
    },
    10s);
  REQUIRE(appended);
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal, nullptr, {.warn = [](std::string_view) {}}};
  REQUIRE_FALSE(h.register_aggregate<account>());
  // Every command gets the cause, also those that arrive after recovery failed.
  for (int i = 0; i < 3; ++i) {
    auto r = h.ask<account>("bad", bank::deposit{1});
    REQUIRE_FALSE(r);
    CHECK(annals::is(r.error(), ap::journal_errc::corrupt_row));
    CHECK_THAT(annals::render(r.error()), Catch::Contains("account|bad, seq 1"));
  }
}

TEST_CASE("drain finishes the commands already routed, refuses new ones and stops every "
          "aggregate",
          "[runtime][drain]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  constexpr std::size_t accounts = 10;
  for (std::size_t a = 0; a < accounts; ++a)
    REQUIRE(h.ask<account>("acc-" + std::to_string(a), bank::open{"owner"}));
  auto done = std::make_shared<latch>(accounts * 50);
  auto ok = std::make_shared<std::atomic<int>>(0);
  auto refused = std::make_shared<std::atomic<int>>(0);
  auto other = std::make_shared<std::atomic<int>>(0);
  sys.spawn([&h, done, ok, refused, other](caf::event_based_actor* self) {
    for (int round = 0; round < 50; ++round)
      for (std::size_t a = 0; a < accounts; ++a)
        h.request<account>(self, "acc-" + std::to_string(a), bank::deposit{1},
                           [done, ok, refused, other](caf::expected<view> r) {
                             if (r)
                               ++*ok;
                             else if (annals::is(r.error(), annals::errc::unavailable))
                               ++*refused;
                             else
                               ++*other;
                             done->count_down();
                           },
                           {.timeout = 30s});
  });
  REQUIRE_FALSE(h.drain(30s));
  REQUIRE(done->wait());
  CHECK(*other == 0);
  CHECK(*ok + *refused == static_cast<int>(accounts * 50));
  CHECK(*h.live_count() == 0);
  // Every acknowledged deposit is in the journal, and nothing else is.
  std::size_t deposits = 0;
  for (std::size_t a = 0; a < accounts; ++a)
    deposits += stream(*journal, "account|acc-" + std::to_string(a)).size() - 1;
  CHECK(deposits == static_cast<std::size_t>(ok->load()));
  auto after = h.ask<account>("acc-0", bank::get_balance{});
  REQUIRE_FALSE(after);
  CHECK(annals::is(after.error(), annals::errc::unavailable));
}

TEST_CASE("a retry whose first attempt a snapshot covers is still recognised after a restart",
          "[runtime][idempotency][snapshots]") {
  auto journal = std::make_shared<ap::memory_journal>();
  auto snapshots = std::make_shared<ap::memory_snapshot_store>(2);
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal, snapshots};
    REQUIRE_FALSE(h.register_aggregate<account>({.snapshot_every = 10}));
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    for (int i = 1; i <= 24; ++i)
      REQUIRE(
        h.ask<account>("acc", bank::deposit{1}, {.idempotency_key = "k" + std::to_string(i)}));
  }
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal, snapshots};
  REQUIRE_FALSE(h.register_aggregate<account>({.snapshot_every = 10}));
  // k5 is event 6, under the snapshot at seq 20; k23 is after it.
  for (const char* key : {"k5", "k23"}) {
    auto again = h.ask<account>("acc", bank::deposit{1}, {.idempotency_key = key});
    REQUIRE(again);
    CHECK(again->balance == (std::string{key} == "k5" ? 5 : 23));
  }
  CHECK(h.metrics().duplicates == 2);
  CHECK(stream(*journal, "account|acc").size() == 25);
  CHECK(*h.ask<account>("acc", bank::get_balance{}) == 24);
}

namespace {

// Sends `cmd` through the registry and returns the raw reply, with its version and offset.
template <class C>
caf::expected<annals::actors::detail::reply_msg>
raw_ask(caf::actor_system& sys, host& h, std::string_view id, C cmd,
        annals::actors::command_options opts = {}) {
  auto env = h.make_envelope<account>(id, std::move(cmd), std::move(opts));
  if (!env)
    return std::move(env.error());
  caf::scoped_actor self{sys};
  caf::expected<annals::actors::detail::reply_msg> out{caf::error{}};
  self->request(h.registry(), caf::duration{10s}, std::move(*env))
    .receive([&](annals::actors::detail::reply_msg& r) { out = std::move(r); },
             [&](caf::error& err) { out = std::move(err); });
  return out;
}

} // namespace

TEST_CASE("a reply carries the global offset of the last event its command persisted, 0 if none",
          "[runtime][offsets]") {
  auto journal = std::make_shared<ap::memory_journal>();
  annals::actors::command_options key{.idempotency_key = "dep-1"};
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>());
    auto opened = raw_ask(sys, h, "a", bank::open{"Ada"});
    REQUIRE(opened);
    CHECK(opened->offset == 1);
    CHECK(opened->version == 1);
    REQUIRE(raw_ask(sys, h, "b", bank::open{"Bob"})->offset == 2);
    auto deposited = raw_ask(sys, h, "a", bank::deposit{10}, key);
    REQUIRE(deposited);
    CHECK(deposited->offset == 3);
    CHECK(deposited->version == 2);
    auto read = raw_ask(sys, h, "a", bank::get_balance{});
    REQUIRE(read);
    CHECK(read->offset == 0);
    CHECK(read->version == 2);
    REQUIRE(raw_ask(sys, h, "a", bank::deposit{1})->offset == 4);
    // A retry persists nothing and answers with the offset and version of its first attempt.
    auto retried = raw_ask(sys, h, "a", bank::deposit{10}, key);
    REQUIRE(retried);
    CHECK(retried->offset == 3);
    CHECK(retried->version == 2);
  }
  // After a restart the retry's offset comes from the stored events.
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  auto retried = raw_ask(sys, h, "a", bank::deposit{10}, key);
  REQUIRE(retried);
  CHECK(retried->offset == 3);
  CHECK(retried->version == 2);
  CHECK(stream(*journal, "account|a").size() == 3);
}

TEST_CASE("a retry whose recompute meets an event that does not decode fails with the "
          "corrupt row's persistence id and seq, and the aggregate goes on",
          "[runtime][idempotency][errors]") {
  auto journal = std::make_shared<ap::memory_journal>();
  auto snapshots = std::make_shared<ap::memory_snapshot_store>(2);
  auto append = [&](std::uint64_t expected, std::string name, std::string payload,
                    std::string key) {
    return ap::wait_for<ap::append_result>(
      [&](auto cb) {
        journal->append({"account|x", expected, {{name, 1, payload, {}}}, {key, {}}},
                        std::move(cb));
      },
      10s);
  };
  // Event 1 does not decode; a snapshot at seq 2 lets recovery start past it.
  REQUIRE(append(0, "bank.opened", R"({"owner":7})", ""));
  REQUIRE(append(1, "bank.deposited", R"({"cents":5})", "k"));
  bank::account_state st;
  st.status = bank::account_status::open;
  st.owner = "Ada";
  st.balance = 5;
  REQUIRE(ap::wait_for<caf::unit_t>(
    [&](auto cb) {
      snapshots->save({"account|x", 2, std::string{bank::account_state::name},
                       annals::schema_version<bank::account_state>(),
                       annals::type_codec<bank::account_state>::to_json(st), 0},
                      std::move(cb));
    },
    10s));
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal, snapshots, {.warn = [](std::string_view) {}}};
  REQUIRE_FALSE(h.register_aggregate<account>({.snapshot_every = 10}));
  // The retry of "k" re-runs its command on events 1..1, which do not decode.
  auto retried = h.ask<account>("x", bank::deposit{5}, {.timeout = 10s, .idempotency_key = "k"});
  REQUIRE_FALSE(retried);
  CHECK(annals::is(retried.error(), ap::journal_errc::corrupt_row));
  CHECK_THAT(annals::render(retried.error()), Catch::Contains("account|x, seq 1"));
  CHECK(*h.ask<account>("x", bank::get_balance{}) == 5);
}

TEST_CASE("a request whose reply does not come within its timeout gets request_timeout, and "
          "the next request after the aggregate recovered goes through",
          "[runtime][timeout]") {
  auto journal = std::make_shared<holding_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
  // A second host recovers the account only when its reads are released.
  host h2{sys, journal};
  REQUIRE_FALSE(h2.register_aggregate<account>());
  journal->hold_reads(true);
  std::promise<caf::expected<view>> first;
  std::promise<caf::expected<view>> second;
  auto answered = std::make_shared<std::atomic<bool>>(false);
  auto started = std::chrono::steady_clock::now();
  sys.spawn([&h2, &first, &second, answered](caf::event_based_actor* self) {
    h2.request<account>(self, "acc", bank::deposit{1},
                        [&first](caf::expected<view> r) { first.set_value(std::move(r)); },
                        {.timeout = 200ms});
    h2.request<account>(self, "acc", bank::deposit{2},
                        [&second, answered](caf::expected<view> r) {
                          *answered = true;
                          second.set_value(std::move(r));
                        },
                        {.timeout = 30s});
  });
  REQUIRE(journal->wait_held());
  auto f = first.get_future();
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  CHECK(std::chrono::steady_clock::now() - started >= 200ms);
  auto r1 = f.get();
  REQUIRE_FALSE(r1);
  CHECK(r1.error() == caf::sec::request_timeout);
  // The other one, with a longer timeout, still waits for the held recovery.
  CHECK_FALSE(answered->load());
  journal->hold_reads(false);
  auto s2 = second.get_future();
  REQUIRE(s2.wait_for(30s) == std::future_status::ready);
  auto r2 = s2.get();
  REQUIRE(r2);
  // The timed-out deposit was still handled (the timeout only ends the wait for it).
  CHECK(r2->balance == 3);
}

TEST_CASE("commands sent straight to live aggregates across idle passivations are each "
          "applied once, in the order each client sent them",
          "[runtime][passivation]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>({.idle_timeout = 5ms}));
  constexpr int accounts = 5;
  constexpr int rounds = 20;
  constexpr int per_round = 10;
  for (int a = 0; a < accounts; ++a)
    REQUIRE(h.ask<account>("acc-" + std::to_string(a), bank::open{"owner"}));
  auto failures = std::make_shared<std::atomic<int>>(0);
  for (int round = 0; round < rounds; ++round) {
    // One client per round pipelines its deposits (amount = its position in the run) to
    // every account; between rounds the aggregates sit idle long enough to passivate.
    auto done = std::make_shared<latch>(accounts * per_round);
    sys.spawn([&h, round, done, failures](caf::event_based_actor* self) {
      for (int k = 0; k < per_round; ++k)
        for (int a = 0; a < accounts; ++a)
          h.request<account>(self, "acc-" + std::to_string(a),
                             bank::deposit{round * per_round + k + 1},
                             [done, failures](caf::expected<view> r) {
                               if (!r)
                                 ++*failures;
                               done->count_down();
                             },
                             {.timeout = 30s});
    });
    REQUIRE(done->wait());
    std::this_thread::sleep_for(round % 2 == 0 ? 20ms : 1ms);
  }
  CHECK(*failures == 0);
  CHECK(h.metrics().passivations > 0);
  for (int a = 0; a < accounts; ++a) {
    auto events = stream(*journal, "account|acc-" + std::to_string(a));
    REQUIRE(events.size() == 1 + rounds * per_round);
    for (std::size_t i = 1; i < events.size(); ++i)
      CHECK(events[i].payload == R"({"cents":)" + std::to_string(i) + "}");
  }
}

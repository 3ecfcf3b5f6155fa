// Projections: catch-up, live delivery, the switch between them under load, rebuild,
// status, failures, exactly-once SQLite read models, and consistency between projections.
//
// No sleeps: every wait is `projection::await_offset` (the actor answers once it has
// processed that offset) or a condition variable, each with a bound that only a broken
// build reaches.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <latch>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <catch2/catch.hpp>
#include <sqlite3.h>

#include "annals/actors/projection.hpp"
#include "annals/actors/system.hpp"
#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::actors;
using annals::persistence::event_record;
using annals::persistence::test::bound;
using annals::persistence::test::temp_dir;

namespace {

/// An actor system configured for annals; declare it before the projections, so that
/// they stop before it shuts down.
struct test_system {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  test_system() : sys{(configure(cfg), cfg)} {}
};

/// Appends `n` events, one per append, to `pid` starting after `seq`; returns the new seq.
std::uint64_t write(persistence::journal& j, const std::string& pid, std::uint64_t seq,
                    std::size_t n, std::vector<std::string> tags = {}) {
  for (std::size_t i = 0; i < n; ++i) {
    auto res = persistence::test::append(
      j, pid, seq, {persistence::test::ev("test.happened", R"({"n":1})", tags)});
    if (!res)
      FAIL("append to " << pid << " failed: " << render(res.error()));
    seq = res->last_seq;
  }
  return seq;
}

std::uint64_t head_of(persistence::journal& j) {
  auto head = persistence::test::head_offset(j);
  REQUIRE(head);
  return *head;
}

std::vector<std::uint64_t> iota_offsets(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> xs;
  for (auto i = first; i <= last; ++i)
    xs.push_back(i);
  return xs;
}

/// Records what the projection applied: offsets, identities, resets. Throws at
/// `throw_at` to simulate a bug in a read model.
class recording_handler : public projection_handler {
public:
  explicit recording_handler(std::uint64_t throw_at = 0) : throw_at_(throw_at) {}

  void apply(const event_record& rec) override {
    if (rec.offset == throw_at_)
      throw std::runtime_error{"boom: cannot fold this event"};
    std::lock_guard guard{mtx_};
    offsets_.push_back(rec.offset);
    ids_.push_back(rec.persistence_id + "#" + std::to_string(rec.seq));
  }

  void reset() override {
    std::lock_guard guard{mtx_};
    offsets_.clear();
    ids_.clear();
    ++resets_;
  }

  std::vector<std::uint64_t> offsets() const {
    std::lock_guard guard{mtx_};
    return offsets_;
  }
  std::vector<std::string> ids() const {
    std::lock_guard guard{mtx_};
    return ids_;
  }
  int resets() const {
    std::lock_guard guard{mtx_};
    return resets_;
  }

private:
  std::uint64_t throw_at_;
  mutable std::mutex mtx_;
  std::vector<std::uint64_t> offsets_;
  std::vector<std::string> ids_;
  int resets_ = 0;
};

/// Waits until `p` has processed `offset`; fails the test with the projection's error.
projection_status reach(const projection& p, std::uint64_t offset) {
  auto st = p.await_offset(offset, bound);
  if (!st)
    FAIL("projection '" << p.name() << "' did not reach offset " << offset << ": "
                        << render(st.error()));
  return *st;
}

/// Several threads append to their own streams until each wrote `per_writer` events; the
/// latch opens once every writer has written `warmup` events.
class busy_writers {
public:
  busy_writers(persistence::journal_ptr j, int writers, std::size_t per_writer, std::size_t warmup)
    : warm_(writers) {
    for (int w = 0; w < writers; ++w)
      threads_.emplace_back([this, j, w, per_writer, warmup] {
        std::uint64_t seq = 0;
        auto pid = "account|writer-" + std::to_string(w);
        while (seq < per_writer) {
          // 1 to 3 events per append, so that live batches have several records.
          auto n = std::min<std::size_t>(1 + seq % 3, per_writer - seq);
          std::vector<encoded_event> evs(n, persistence::test::ev("test.happened"));
          auto res = persistence::test::append(*j, pid, seq, std::move(evs));
          if (!res) {
            failures_.fetch_add(1);
            break;
          }
          auto before = seq;
          seq = res->last_seq;
          if (before < warmup && seq >= warmup)
            warm_.count_down();
        }
        if (seq < warmup)
          warm_.count_down();
      });
  }
  void wait_warm() {
    warm_.wait();
  }
  int join() {
    for (auto& t : threads_)
      t.join();
    threads_.clear();
    return failures_.load();
  }
  ~busy_writers() {
    join();
  }

private:
  std::latch warm_;
  std::atomic<int> failures_{0};
  std::vector<std::thread> threads_;
};

/// The in-memory journal seen through offsets with gaps (each one times 10), as a journal
/// that numbers appends rather than events hands them out: projections must neither wait
/// for the missing numbers nor take a jump for a lost event. `unavailable_reads` makes
/// that many `read_all` calls fail with `journal_errc::unavailable`, as a networked
/// journal between leaders does.
class gapped_journal final : public persistence::journal {
public:
  static constexpr std::uint64_t stride = 10;
  persistence::memory_journal inner;
  std::atomic<int> unavailable_reads{0};

  void append(persistence::append_request req,
              persistence::callback<persistence::append_result> done) override {
    inner.append(std::move(req), [done = std::move(done)](auto res) {
      if (res) {
        res->first_offset *= stride;
        res->last_offset *= stride;
      }
      done(std::move(res));
    });
  }
  void read_stream(std::string pid, std::uint64_t from, std::uint64_t to, std::size_t max,
                   persistence::callback<std::vector<event_record>> done) override {
    inner.read_stream(std::move(pid), from, to, max, spread(std::move(done)));
  }
  void read_all(std::uint64_t from, std::size_t max,
                persistence::callback<std::vector<event_record>> done) override {
    if (unavailable_reads.fetch_sub(1) > 0) {
      done(make_error(persistence::journal_errc::unavailable, "no stream leader (test)"));
      return;
    }
    inner.read_all(inner_from(from), max, spread(std::move(done)));
  }
  void read_tagged(std::string tag, std::uint64_t from, std::size_t max,
                   persistence::callback<std::vector<event_record>> done) override {
    inner.read_tagged(std::move(tag), inner_from(from), max, spread(std::move(done)));
  }
  void highest_seq(std::string pid, persistence::callback<std::uint64_t> done) override {
    inner.highest_seq(std::move(pid), std::move(done));
  }
  void head_offset(persistence::callback<std::uint64_t> done) override {
    inner.head_offset([done = std::move(done)](caf::expected<std::uint64_t> head) {
      done(head ? caf::expected<std::uint64_t>{*head * stride} : head);
    });
  }
  void persistence_ids(std::string after, std::size_t max,
                       persistence::callback<std::vector<std::string>> done) override {
    inner.persistence_ids(std::move(after), max, std::move(done));
  }
  std::uint64_t subscribe(persistence::commit_listener f) override {
    return inner.subscribe([f = std::move(f)](const std::vector<event_record>& batch) {
      auto copy = batch;
      for (auto& rec : copy)
        rec.offset *= stride;
      f(copy);
    });
  }
  void unsubscribe(std::uint64_t handle) override {
    inner.unsubscribe(handle);
  }

private:
  /// The first inner offset whose outer offset is at least `from`.
  static std::uint64_t inner_from(std::uint64_t from) {
    return (from + stride - 1) / stride;
  }
  static persistence::callback<std::vector<event_record>>
  spread(persistence::callback<std::vector<event_record>> done) {
    return [done = std::move(done)](caf::expected<std::vector<event_record>> recs) {
      if (recs)
        for (auto& rec : *recs)
          rec.offset *= stride;
      done(std::move(recs));
    };
  }
};

/// Every offset in `j`, read back from the journal itself.
std::vector<std::uint64_t> all_offsets(persistence::journal& j) {
  std::vector<std::uint64_t> out;
  for (;;) {
    auto page = persistence::test::read_all(j, out.empty() ? 1 : out.back() + 1, 4096);
    REQUIRE(page);
    if (page->empty())
      return out;
    for (auto& rec : *page)
      out.push_back(rec.offset);
  }
}

persistence::journal_ptr open_sqlite_journal(const temp_dir& dir) {
  auto res = persistence::sqlite_journal::open(
    {.path = dir.file("journal.db"), .durability = persistence::durability_level::normal});
  if (!res)
    FAIL(render(res.error()));
  return *res;
}

} // namespace

TEST_CASE("a projection catches up from its stored offset and applies only the events after "
          "it") {
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  write(*journal, "account|a", 0, 10);
  auto offsets = std::make_shared<memory_offset_store>();
  REQUIRE_FALSE(offsets->save("balances", 4));
  auto handler = std::make_shared<recording_handler>();
  auto proj = spawn_projection(ts.sys, journal, handler,
                               {.name = "balances", .offsets = offsets, .page_size = 3});
  auto st = reach(proj, 10);
  CHECK(handler->offsets() == iota_offsets(5, 10));
  CHECK(st.offset == 10);
  CHECK(*offsets->load("balances") == 10);
}

TEST_CASE("a projection applies events committed after it caught up, in offset order") {
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  write(*journal, "account|a", 0, 3);
  auto handler = std::make_shared<recording_handler>();
  auto proj = spawn_projection(ts.sys, journal, handler, {.name = "live"});
  reach(proj, 3);
  std::uint64_t seq_a = 3, seq_b = 0;
  for (int i = 0; i < 20; ++i) { // interleave two streams; each append is one live batch
    if (i % 2)
      seq_a = write(*journal, "account|a", seq_a, 1);
    else
      seq_b = write(*journal, "account|b", seq_b, 1);
  }
  auto st = reach(proj, 23);
  CHECK(handler->offsets() == iota_offsets(1, 23));
  CHECK(st.state == projection_state::running);
  CHECK(st.lag == 0);
}

TEST_CASE("a projection started in the middle of heavy writing ends with exactly the "
          "journal's events, none twice") {
  temp_dir dir;
  auto kind = GENERATE(as<std::string>{}, "memory", "sqlite", "gapped");
  INFO("journal: " << kind);
  test_system ts;
  persistence::journal_ptr journal = kind == "memory"
                                       ? std::make_shared<persistence::memory_journal>()
                                     : kind == "sqlite" ? open_sqlite_journal(dir)
                                                        : std::make_shared<gapped_journal>();
  auto handler = std::make_shared<recording_handler>();
  projection proj;
  {
    busy_writers writers{journal, 4, 1500, 200};
    writers.wait_warm();
    // Small pages: many reads during catch-up, so the switch to live happens while
    // commits keep coming.
    proj = spawn_projection(ts.sys, journal, handler, {.name = "busy", .page_size = 64});
    REQUIRE(writers.join() == 0);
  }
  auto head = head_of(*journal);
  auto all = all_offsets(*journal);
  REQUIRE(all.size() == 4 * 1500);
  REQUIRE(all.back() == head);
  reach(proj, head);
  CHECK(handler->offsets() == all);
}

TEST_CASE("a projection whose journal is unavailable for a while keeps its place, reads "
          "again, and applies every event once") {
  test_system ts;
  auto journal = std::make_shared<gapped_journal>();
  write(*journal, "account|a", 0, 5);
  journal->unavailable_reads = 4; // the first catch-up read and three retries fail
  auto handler = std::make_shared<recording_handler>();
  auto proj = spawn_projection(ts.sys, journal, handler, {.name = "patient", .page_size = 2});
  write(*journal, "account|b", 0, 3);
  auto head = head_of(*journal);
  auto st = reach(proj, head);
  CHECK(st.state != projection_state::failed);
  CHECK(st.error.empty()); // the failed reads' error is gone once a read succeeded
  CHECK(journal->unavailable_reads.load() < 0);
  CHECK(handler->offsets() == all_offsets(*journal));
  CHECK(handler->offsets().size() == 8);
}

TEST_CASE("on a journal with gaps between offsets a projection applies live commits once each, "
          "and reaches the offset an append returned") {
  test_system ts;
  auto journal = std::make_shared<gapped_journal>();
  REQUIRE_FALSE(journal->gapless_offsets());
  write(*journal, "account|a", 0, 3);
  auto handler = std::make_shared<recording_handler>();
  auto proj = spawn_projection(ts.sys, journal, handler, {.name = "gapped", .page_size = 2});
  reach(proj, 3 * gapped_journal::stride);
  std::uint64_t seq_a = 3, seq_b = 0;
  for (int i = 0; i < 20; ++i) {
    if (i % 2)
      seq_a = write(*journal, "account|a", seq_a, 1);
    else
      seq_b = write(*journal, "account|b", seq_b, 1);
  }
  auto last = persistence::test::append(*journal, "account|b", seq_b,
                                        {persistence::test::ev("test.happened")});
  REQUIRE(last);
  auto st = reach(proj, last->last_offset);
  CHECK(st.offset == last->last_offset);
  CHECK(st.state != projection_state::failed); // running, or reading on a commit notice
  CHECK(handler->offsets() == all_offsets(*journal));
  CHECK(handler->offsets().size() == 24);
}

namespace {

/// A journal whose commit notifications and read completions the test controls, to
/// script the races between catch-up and live delivery. Reads see the data as of the
/// request (like a snapshot) but complete only when the test releases them.
class scripted_journal final : public persistence::journal {
public:
  persistence::memory_journal inner;

  void append(persistence::append_request req,
              persistence::callback<persistence::append_result> done) override {
    inner.append(std::move(req), std::move(done)); // inner has no listeners: no notice
  }
  void read_stream(std::string pid, std::uint64_t from, std::uint64_t to, std::size_t max,
                   persistence::callback<std::vector<event_record>> done) override {
    inner.read_stream(std::move(pid), from, to, max, std::move(done));
  }
  void read_all(std::uint64_t from, std::size_t max,
                persistence::callback<std::vector<event_record>> done) override {
    caf::expected<std::vector<event_record>> snapshot{std::vector<event_record>{}};
    inner.read_all(
      from, max, [&](caf::expected<std::vector<event_record>> res) { snapshot = std::move(res); });
    std::lock_guard guard{mtx_};
    reads_.push_back(
      {from, [done = std::move(done), snapshot]() mutable { done(std::move(snapshot)); }});
    cv_.notify_all();
  }
  void read_tagged(std::string tag, std::uint64_t from, std::size_t max,
                   persistence::callback<std::vector<event_record>> done) override {
    inner.read_tagged(std::move(tag), from, max, std::move(done));
  }
  void highest_seq(std::string pid, persistence::callback<std::uint64_t> done) override {
    inner.highest_seq(std::move(pid), std::move(done));
  }
  void head_offset(persistence::callback<std::uint64_t> done) override {
    inner.head_offset(std::move(done));
  }
  void persistence_ids(std::string after, std::size_t max,
                       persistence::callback<std::vector<std::string>> done) override {
    inner.persistence_ids(std::move(after), max, std::move(done));
  }
  std::uint64_t subscribe(persistence::commit_listener f) override {
    std::lock_guard guard{mtx_};
    listener_ = std::move(f);
    return 1;
  }
  void unsubscribe(std::uint64_t) override {
    std::lock_guard guard{mtx_};
    listener_ = nullptr;
  }
  bool gapless_offsets() const noexcept override {
    return true; // the offsets of `inner`
  }

  /// Waits for the projection's next read request and returns its start offset.
  std::uint64_t next_read() {
    std::unique_lock lk{mtx_};
    if (!cv_.wait_for(lk, bound, [&] { return !reads_.empty(); }))
      FAIL("the projection did not read from the journal");
    return reads_.front().from;
  }
  /// Completes the oldest read request with the data it saw when it was made.
  void release_read() {
    std::function<void()> f;
    {
      std::lock_guard guard{mtx_};
      REQUIRE(!reads_.empty());
      f = std::move(reads_.front().complete);
      reads_.erase(reads_.begin());
    }
    f();
  }
  bool read_pending() {
    std::lock_guard guard{mtx_};
    return !reads_.empty();
  }
  /// Notifies the projection of a commit of the records at offsets [first, last].
  void publish(std::uint64_t first, std::uint64_t last) {
    caf::expected<std::vector<event_record>> recs{std::vector<event_record>{}};
    inner.read_all(first, last - first + 1,
                   [&](caf::expected<std::vector<event_record>> res) { recs = std::move(res); });
    REQUIRE(recs);
    persistence::commit_listener f;
    {
      std::lock_guard guard{mtx_};
      f = listener_;
    }
    REQUIRE(f);
    f(*recs);
  }

private:
  struct pending_read {
    std::uint64_t from;
    std::function<void()> complete;
  };
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<pending_read> reads_;
  persistence::commit_listener listener_;
};

} // namespace

TEST_CASE("the switch from catch-up to live neither skips nor repeats an event") {
  test_system ts;
  auto journal = std::make_shared<scripted_journal>();
  write(journal->inner, "account|a", 0, 5);
  auto handler = std::make_shared<recording_handler>();
  auto proj = spawn_projection(ts.sys, journal, handler, {.name = "switch"});
  REQUIRE(journal->next_read() == 1); // its snapshot holds 1..5

  SECTION("a commit announced while a read is in flight is read again, not skipped") {
    write(journal->inner, "account|a", 5, 1);
    journal->publish(6, 6);  // arrives before the read completes,
    journal->release_read(); // which ends at 5: the projection must read on from 6
    REQUIRE(journal->next_read() == 6);
    journal->release_read();
    reach(proj, 6);
    CHECK(handler->offsets() == iota_offsets(1, 6));
  }

  SECTION("live records the projection already has are not applied twice") {
    journal->release_read();
    reach(proj, 5);
    write(journal->inner, "account|a", 5, 2);
    journal->publish(4, 6); // overlaps what catch-up applied
    journal->publish(6, 7); // overlaps the previous notice
    reach(proj, 7);
    CHECK(handler->offsets() == iota_offsets(1, 7));
    CHECK_FALSE(journal->read_pending());
  }

  SECTION("a live batch beyond the next offset makes the projection read the gap first") {
    journal->release_read();
    reach(proj, 5);
    write(journal->inner, "account|a", 5, 3);
    journal->publish(7, 8); // the notice of 6 never came
    REQUIRE(journal->next_read() == 6);
    journal->release_read();
    reach(proj, 8);
    CHECK(handler->offsets() == iota_offsets(1, 8));
  }
}

namespace {

/// Holds the projection inside `apply` of offset 1 until `open` is called.
class gated_handler : public recording_handler {
public:
  void apply(const event_record& rec) override {
    if (rec.offset == 1) {
      std::unique_lock lk{mtx_};
      entered_ = true;
      cv_.notify_all();
      if (!cv_.wait_for(lk, bound, [&] { return open_; }))
        throw std::runtime_error{"the test never opened the gate"};
    }
    recording_handler::apply(rec);
  }
  void wait_entered() {
    std::unique_lock lk{mtx_};
    REQUIRE(cv_.wait_for(lk, bound, [&] { return entered_; }));
  }
  void open() {
    std::lock_guard guard{mtx_};
    open_ = true;
    cv_.notify_all();
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  bool entered_ = false;
  bool open_ = false;
};

} // namespace

TEST_CASE("a projection behind the writers queues a bounded number of live commits and reads "
          "the rest from the journal") {
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  write(*journal, "account|a", 0, 1);
  auto handler = std::make_shared<gated_handler>();
  auto proj = spawn_projection(ts.sys, journal, handler,
                               {.name = "slow", .page_size = 8, .max_queued_batches = 4});
  handler->wait_entered(); // stuck on offset 1 while 300 commits go by
  write(*journal, "account|b", 0, 300);
  handler->open();
  auto st = reach(proj, 301);
  CHECK(st.live_dropped >= 300 - 4);
  CHECK(handler->offsets() == iota_offsets(1, 301));
  // Once caught up, live commits flow through the queue again (three fit in it).
  write(*journal, "account|a", 1, 3);
  CHECK(reach(proj, 304).live_dropped == st.live_dropped);
  CHECK(handler->offsets() == iota_offsets(1, 304));
}

TEST_CASE("a rebuild clears the model and replays the whole journal") {
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  write(*journal, "account|a", 0, 10);
  auto offsets = std::make_shared<memory_offset_store>();
  auto handler = std::make_shared<recording_handler>();
  auto proj = spawn_projection(ts.sys, journal, handler,
                               {.name = "rebuilt", .offsets = offsets, .page_size = 4});
  reach(proj, 10);
  REQUIRE_FALSE(proj.rebuild());
  CHECK(handler->resets() == 1);
  write(*journal, "account|a", 10, 2);
  reach(proj, 12);
  CHECK(handler->offsets() == iota_offsets(1, 12));
  CHECK(*offsets->load("rebuilt") == 12);
}

TEST_CASE("the status names the projection and gives its offset, the journal head and the "
          "lag") {
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  write(*journal, "account|a", 0, 7);
  auto proj =
    spawn_projection(ts.sys, journal, std::make_shared<recording_handler>(6), {.name = "stalls"});
  write(*journal, "account|a", 7, 3);
  auto st = proj.status();
  REQUIRE(st);
  CHECK(st->name == "stalls");
  CHECK(st->head == 10);
  CHECK(st->lag == st->head - st->offset);
  auto ok =
    spawn_projection(ts.sys, journal, std::make_shared<recording_handler>(), {.name = "keeps_up"});
  auto caught_up = reach(ok, 10);
  CHECK(caught_up.offset == 10);
  CHECK(caught_up.head == 10);
  CHECK(caught_up.lag == 0);
  CHECK(caught_up.applied == 10);
  // The stalled one stops at offset 5 (its handler throws at 6): lag 5 behind head 10.
  REQUIRE_FALSE(proj.await_offset(10, bound));
  st = proj.status();
  REQUIRE(st);
  CHECK(st->state == projection_state::failed);
  CHECK(st->offset == 5);
  CHECK(st->head == 10);
  CHECK(st->lag == 5);
}

TEST_CASE("a handler that throws stops only its projection, names the event, and leaves the "
          "offset on the last good event") {
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  write(*journal, "account|a", 0, 4);
  write(*journal, "account|b", 0, 6); // offset 6 is account|b seq 2
  auto offsets = std::make_shared<memory_offset_store>();
  auto bad = std::make_shared<recording_handler>(6);
  auto good = std::make_shared<recording_handler>();
  auto p_bad =
    spawn_projection(ts.sys, journal, bad, {.name = "bad", .offsets = offsets, .page_size = 100});
  auto p_good = spawn_projection(ts.sys, journal, good, {.name = "good", .offsets = offsets});
  reach(p_good, 10);
  auto res = p_bad.await_offset(10, bound);
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), projection_errc::handler_failed));
  auto text = render(res.error());
  INFO(text);
  CHECK(text.find("'bad'") != std::string::npos);
  CHECK(text.find("offset 6") != std::string::npos);
  CHECK(text.find("account|b seq 2") != std::string::npos);
  CHECK(text.find("test.happened") != std::string::npos);
  CHECK(text.find("boom: cannot fold this event") != std::string::npos);
  CHECK(bad->offsets() == iota_offsets(1, 5));
  CHECK(*offsets->load("bad") == 5);
  auto st = p_bad.status();
  REQUIRE(st);
  CHECK(st->state == projection_state::failed);
  CHECK(st->error == text);
  // The healthy projection keeps following the journal.
  write(*journal, "account|a", 4, 2);
  reach(p_good, 12);
  CHECK(good->offsets() == iota_offsets(1, 12));
  CHECK(bad->offsets() == iota_offsets(1, 5));
}

TEST_CASE("a filtered projection sees only matching events, and its offset covers all") {
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  write(*journal, "account|a", 0, 2);               // 1, 2
  write(*journal, "match|m", 0, 2, {"football"});   // 3, 4
  write(*journal, "accounting|x", 0, 1);            // 5: not the `account` type
  write(*journal, "account|b", 0, 1, {"football"}); // 6
  auto by_type = std::make_shared<recording_handler>();
  auto by_tag = std::make_shared<recording_handler>();
  auto p_type = spawn_projection(
    ts.sys, journal, by_type, {.name = "type", .filter = event_filter::aggregate_type("account")});
  auto p_tag = spawn_projection(ts.sys, journal, by_tag,
                                {.name = "tag", .filter = event_filter::tag("football")});
  CHECK(reach(p_type, 6).offset == 6);
  CHECK(reach(p_tag, 6).offset == 6);
  CHECK(by_type->offsets() == std::vector<std::uint64_t>{1, 2, 6});
  CHECK(by_tag->offsets() == std::vector<std::uint64_t>{3, 4, 6});
}

TEST_CASE("two projections fed by the same log apply prefixes of the same global order") {
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  auto one = std::make_shared<recording_handler>();
  auto two = std::make_shared<recording_handler>();
  auto p_one = spawn_projection(ts.sys, journal, one, {.name = "one", .page_size = 1});
  projection p_two;
  {
    busy_writers writers{journal, 3, 600, 100};
    writers.wait_warm();
    p_two = spawn_projection(ts.sys, journal, two, {.name = "two", .page_size = 50});
    // While writing goes on: whatever each has applied so far is a prefix of the other's.
    auto a = one->ids();
    auto b = two->ids();
    auto n = std::min(a.size(), b.size());
    CHECK(std::equal(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n), b.begin()));
    REQUIRE(writers.join() == 0);
  }
  auto head = head_of(*journal);
  reach(p_one, head);
  reach(p_two, head);
  CHECK(one->offsets() == iota_offsets(1, head));
  CHECK(one->ids() == two->ids());
}

TEST_CASE("an at-least-once projection resumes after a restart from the offset in its "
          "SQLite offset store") {
  temp_dir dir;
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  write(*journal, "account|a", 0, 5);
  {
    auto offsets = sqlite_offset_store::open({.path = dir.file("offsets.db")});
    REQUIRE(offsets);
    auto proj = spawn_projection(ts.sys, journal, std::make_shared<recording_handler>(),
                                 {.name = "resumes", .offsets = *offsets});
    reach(proj, 5);
  }
  write(*journal, "account|a", 5, 3);
  auto offsets = sqlite_offset_store::open({.path = dir.file("offsets.db")});
  REQUIRE(offsets);
  CHECK(*(*offsets)->load("resumes") == 5);
  CHECK(*(*offsets)->load("never_ran") == 0);
  auto handler = std::make_shared<recording_handler>();
  auto proj = spawn_projection(ts.sys, journal, handler, {.name = "resumes", .offsets = *offsets});
  reach(proj, 8);
  CHECK(handler->offsets() == iota_offsets(6, 8));
}

TEST_CASE("an SQLite offset store refuses a file that is not SQLite, naming the file") {
  temp_dir dir;
  {
    std::ofstream junk{dir.file("junk.db")};
    junk << "this is not a database, just some text that is long enough to be a header";
  }
  auto res = sqlite_offset_store::open({.path = dir.file("junk.db")});
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), projection_errc::offset_store_failed));
  CHECK(render(res.error()).find("junk.db") != std::string::npos);
}

namespace {

void exec(sqlite3* db, const std::string& sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string text = msg ? msg : "unknown SQLite error";
    sqlite3_free(msg);
    throw std::runtime_error{text};
  }
}

/// A read model in SQLite: one row per applied event (the primary key turns a second
/// application of an event into an error) and a running count per stream.
class event_table : public sqlite_projection_handler {
public:
  explicit event_table(std::uint64_t throw_at = 0) : throw_at_(throw_at) {}

  void create_schema(sqlite3* db) override {
    exec(db, "CREATE TABLE IF NOT EXISTS applied(\"offset\" INTEGER PRIMARY KEY);"
             "CREATE TABLE IF NOT EXISTS counts(id TEXT PRIMARY KEY, n INTEGER NOT NULL)");
  }

  void apply(sqlite3* db, const event_record& rec) override {
    exec(db, "INSERT INTO counts(id, n) VALUES ('" + rec.persistence_id
               + "', 1) ON CONFLICT(id) DO UPDATE SET n = n + 1");
    if (rec.offset == throw_at_) // after a write: the savepoint must undo it
      throw std::runtime_error{"read model rejects offset " + std::to_string(rec.offset)};
    exec(db, "INSERT INTO applied(\"offset\") VALUES (" + std::to_string(rec.offset) + ")");
  }

  void reset(sqlite3* db) override {
    exec(db, "DELETE FROM applied; DELETE FROM counts");
  }

private:
  std::uint64_t throw_at_;
};

/// What a read-model file holds, read through a connection of the test's own.
struct model_contents {
  std::int64_t stored_offset = -1;
  std::int64_t rows = -1;
  std::int64_t max_offset = -1;
  std::int64_t count_sum = -1;
};

model_contents inspect_model(const std::string& path, const std::string& name) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  model_contents out;
  auto scalar = [db](const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    std::int64_t value = -1;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK
        && sqlite3_step(stmt) == SQLITE_ROW)
      value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
  };
  out.stored_offset =
    scalar("SELECT \"offset\" FROM projection_offsets WHERE name = '" + name + "'");
  out.rows = scalar("SELECT count(*) FROM applied");
  out.max_offset = scalar("SELECT coalesce(max(\"offset\"), 0) FROM applied");
  out.count_sum = scalar("SELECT coalesce(sum(n), 0) FROM counts");
  sqlite3_close(db);
  return out;
}

} // namespace

TEST_CASE("an SQLite projection commits model and offset together, so restarts and failures "
          "apply each event exactly once") {
  temp_dir dir;
  test_system ts;
  auto journal = open_sqlite_journal(dir);
  auto model = dir.file("model.db");
  auto opts = sqlite_projection_options{.name = "counts", .path = model, .page_size = 16};
  write(*journal, "account|a", 0, 30);
  write(*journal, "account|b", 0, 20);
  {
    auto proj = spawn_projection(ts.sys, journal, std::make_shared<event_table>(), opts);
    CHECK(reach(proj, 50).state != projection_state::failed);
  }
  auto m = inspect_model(model, "counts");
  CHECK(m.stored_offset == 50);
  CHECK(m.rows == 50);
  CHECK(m.max_offset == 50);
  CHECK(m.count_sum == 50);

  // Restart with a handler that fails at 73, after 50 more events: the transaction keeps
  // 51..72 and their offset, and drops the half-done write of 73.
  write(*journal, "account|a", 30, 50);
  {
    auto proj = spawn_projection(ts.sys, journal, std::make_shared<event_table>(73), opts);
    auto res = proj.await_offset(100, bound);
    REQUIRE_FALSE(res);
    CHECK(render(res.error()).find("offset 73") != std::string::npos);
    auto st = proj.status();
    REQUIRE(st);
    CHECK(st->offset == 72);
  }
  m = inspect_model(model, "counts");
  CHECK(m.stored_offset == 72);
  CHECK(m.rows == 72);
  CHECK(m.max_offset == 72);
  CHECK(m.count_sum == 72);

  // Restart with a working handler: 73..100 once each (a repeat would violate the primary
  // key of `applied` and fail the projection).
  {
    auto proj = spawn_projection(ts.sys, journal, std::make_shared<event_table>(), opts);
    auto st = reach(proj, 100);
    CHECK(st.applied == 28);
    CHECK(st.state != projection_state::failed);
  }
  m = inspect_model(model, "counts");
  CHECK(m.stored_offset == 100);
  CHECK(m.rows == 100);
  CHECK(m.max_offset == 100);
  CHECK(m.count_sum == 100);
}

TEST_CASE("an SQLite projection rebuild empties the model and replays it in step with the "
          "offset") {
  temp_dir dir;
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  write(*journal, "account|a", 0, 12);
  auto model = dir.file("model.db");
  auto proj = spawn_projection(ts.sys, journal, std::make_shared<event_table>(),
                               {.name = "counts", .path = model, .page_size = 5});
  reach(proj, 12);
  REQUIRE_FALSE(proj.rebuild());
  auto st = reach(proj, 12);
  CHECK(st.applied == 24);
  auto m = inspect_model(model, "counts");
  CHECK(m.stored_offset == 12);
  CHECK(m.rows == 12);
  CHECK(m.count_sum == 12);
}

TEST_CASE("a projection whose read-model file cannot be opened reports it as failed, naming "
          "the file") {
  temp_dir dir;
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  auto path = dir.file("missing-dir/model.db");
  auto proj = spawn_projection(ts.sys, journal, std::make_shared<event_table>(),
                               {.name = "nowhere", .path = path});
  auto res = proj.await_offset(0, bound);
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), projection_errc::read_model_failed));
  CHECK(render(res.error()).find(path) != std::string::npos);
  auto st = proj.status();
  REQUIRE(st);
  CHECK(st->state == projection_state::failed);
  // Once the cause is gone, a rebuild starts it.
  std::filesystem::create_directory(dir.path() / "missing-dir");
  write(*journal, "account|a", 0, 3);
  REQUIRE_FALSE(proj.rebuild());
  CHECK(reach(proj, 3).state != projection_state::failed);
  CHECK(inspect_model(path, "nowhere").rows == 3);
}

TEST_CASE("an SQLite projection may keep its read model in the journal's own file") {
  temp_dir dir;
  test_system ts;
  auto journal = open_sqlite_journal(dir);
  write(*journal, "account|a", 0, 20);
  {
    auto proj = spawn_projection(ts.sys, journal, std::make_shared<event_table>(),
                                 {.name = "inside", .path = dir.file("journal.db")});
    reach(proj, 20);
    write(*journal, "account|a", 20, 5); // the journal keeps writing beside the model
    reach(proj, 25);
  }
  auto m = inspect_model(dir.file("journal.db"), "inside");
  CHECK(m.stored_offset == 25);
  CHECK(m.rows == 25);
}

TEST_CASE("a stopped projection answers with an error naming it instead of hanging") {
  test_system ts;
  auto journal = std::make_shared<persistence::memory_journal>();
  auto proj =
    spawn_projection(ts.sys, journal, std::make_shared<recording_handler>(), {.name = "gone"});
  proj.stop();
  proj.stop(); // idempotent
  auto st = proj.status();
  REQUIRE_FALSE(st);
  CHECK(is(st.error(), projection_errc::stopped));
  CHECK(render(st.error()).find("'gone'") != std::string::npos);
}

// The journal contract suite: every journal implementation runs every test here.

#include <algorithm>
#include <latch>
#include <set>
#include <thread>

#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

std::vector<std::uint64_t> offsets_of(const std::vector<event_record>& records) {
  std::vector<std::uint64_t> result;
  for (const auto& rec : records)
    result.push_back(rec.offset);
  return result;
}

[[maybe_unused]] std::vector<std::uint64_t> iota(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> result;
  for (auto i = first; i <= last; ++i)
    result.push_back(i);
  return result;
}

/// Offsets start at `first`, strictly increase, and there are `count` of them; journals
/// with gapless offsets (`Backend::gapless`) number them first, first + 1, ...
template <class Backend>
void check_offsets(const std::vector<std::uint64_t>& offsets, std::uint64_t first,
                   std::size_t count) {
  REQUIRE(offsets.size() == count);
  if constexpr (Backend::gapless) {
    CHECK(offsets == iota(first, first + count - 1));
  } else {
    CHECK(offsets.front() == first);
    CHECK(std::adjacent_find(offsets.begin(), offsets.end(), std::greater_equal<>{})
          == offsets.end());
  }
}

} // namespace

// Other executables run this suite on other journals (tests/jetstream/ on NATS JetStream)
// by defining the backend lists before including this file.
#ifndef ANNALS_CONTRACT_BACKENDS
#define ANNALS_CONTRACT_BACKENDS memory_backend, sqlite_backend
// The read cases: they write through `backend.open()` and read through
// `backend.reader(j)`, which is the same journal except for a read-only SQLite journal
// opened on the file the writer fills.
#define ANNALS_CONTRACT_READ_BACKENDS memory_backend, sqlite_backend, sqlite_readonly_backend
#endif

#define JOURNAL_CONTRACT(description)                                                              \
  TEMPLATE_TEST_CASE(description, "[journal][contract]", ANNALS_CONTRACT_BACKENDS)

#define JOURNAL_READ_CONTRACT(description)                                                         \
  TEMPLATE_TEST_CASE(description, "[journal][contract]", ANNALS_CONTRACT_READ_BACKENDS)

JOURNAL_READ_CONTRACT(
  "a journal stores every field of an event and replays a stream in seq order") {
  TestType backend;
  auto j = backend.open();
  auto first = append(*j, "acc-1", 0,
                      {ev("bank.opened", R"({"owner":"ada"})", {"accounts"}),
                       {"bank.deposited", 2, R"({"cents":100})", {"money", "accounts"}}},
                      {"cmd-1", "corr-1"});
  REQUIRE(first);
  CHECK(first->first_seq == 1);
  CHECK(first->last_seq == 2);
  CHECK(first->first_offset == TestType::at(1, 1, 0));
  CHECK(first->last_offset == TestType::at(2, 1, 1));
  CHECK(first->timestamp_us > 0);
  auto second = append(*j, "acc-1", 2, {ev("bank.withdrawn", R"({"cents":40})")});
  REQUIRE(second);
  CHECK(second->first_seq == 3);
  CHECK(second->first_offset == TestType::at(3, 2, 0));
  auto reader = backend.reader(j);
  auto records = read_stream(*reader, "acc-1");
  REQUIRE(records);
  REQUIRE(records->size() == 3);
  const auto& r = *records;
  CHECK(r[0].offset == TestType::at(1, 1, 0));
  CHECK(r[0].persistence_id == "acc-1");
  CHECK(r[0].seq == 1);
  CHECK(r[0].name == "bank.opened");
  CHECK(r[0].version == 1);
  CHECK(r[0].payload == R"({"owner":"ada"})");
  CHECK(r[0].tags == std::vector<std::string>{"accounts"});
  CHECK(r[0].timestamp_us == first->timestamp_us);
  CHECK(r[0].metadata == event_metadata{"cmd-1", "corr-1"});
  CHECK(r[1].seq == 2);
  CHECK(r[1].version == 2);
  CHECK(r[1].tags == std::vector<std::string>{"money", "accounts"});
  CHECK(r[1].metadata == event_metadata{"cmd-1", "corr-1"});
  CHECK(r[2].seq == 3);
  CHECK(r[2].name == "bank.withdrawn");
  CHECK(r[2].tags.empty());
  CHECK(r[2].metadata == event_metadata{});
  CHECK(highest_seq(*reader, "acc-1") == std::uint64_t{3});
}

JOURNAL_READ_CONTRACT(
  "an unknown stream has highest seq 0 and an empty journal has head offset 0") {
  TestType backend;
  auto j = backend.open();
  auto reader = backend.reader(j);
  CHECK(highest_seq(*reader, "nobody") == std::uint64_t{0});
  CHECK(head_offset(*reader) == std::uint64_t{0});
  auto none = read_stream(*reader, "nobody");
  REQUIRE(none);
  CHECK(none->empty());
  auto all = read_all(*reader);
  REQUIRE(all);
  CHECK(all->empty());
}

JOURNAL_CONTRACT("an append whose expected seq is not the stream's highest fails with "
                 "conflict and writes none of its events") {
  TestType backend;
  auto j = backend.open();
  REQUIRE(append(*j, "acc-1", 0, {ev("a"), ev("b")}));
  for (std::uint64_t stale : {0u, 1u, 3u}) {
    auto res = append(*j, "acc-1", stale, {ev("x", "{}", {"t"}), ev("y"), ev("z")});
    REQUIRE_FALSE(res);
    CHECK(is(res.error(), journal_errc::conflict));
    CHECK_THAT(render(res.error()), Catch::Contains("acc-1"));
  }
  CHECK(highest_seq(*j, "acc-1") == std::uint64_t{2});
  CHECK(head_offset(*j) == TestType::at(2, 1, 1));
  auto tagged = read_tagged(*j, "t");
  REQUIRE(tagged);
  CHECK(tagged->empty());
  // A failed append consumes no offsets: the next one continues the sequence.
  auto next = append(*j, "acc-2", 0, {ev("c")});
  REQUIRE(next);
  CHECK(next->first_offset == TestType::at(3, 2, 0));
}

JOURNAL_CONTRACT("a malformed append is refused as invalid_request and writes nothing") {
  TestType backend;
  auto j = backend.open();
  auto no_id = append(*j, "", 0, {ev("a")});
  REQUIRE_FALSE(no_id);
  CHECK(is(no_id.error(), journal_errc::invalid_request));
  auto no_events = append(*j, "acc-1", 0, {});
  REQUIRE_FALSE(no_events);
  CHECK(is(no_events.error(), journal_errc::invalid_request));
  auto one_bad = append(*j, "acc-1", 0, {ev("fine"), ev("")});
  REQUIRE_FALSE(one_bad);
  CHECK(is(one_bad.error(), journal_errc::invalid_request));
  auto bad_tag = append(*j, "acc-1", 0, {ev("fine", "{}", {"ok", ""})});
  REQUIRE_FALSE(bad_tag);
  CHECK(is(bad_tag.error(), journal_errc::invalid_request));
  CHECK(head_offset(*j) == std::uint64_t{0});
}

JOURNAL_CONTRACT("an append over max_append_bytes is refused as too_large, naming its size, and "
                 "writes nothing; one at the limit is stored intact") {
  TestType backend;
  auto j = backend.open();
  // Two events of 600 KiB each: one record of about 1.2 MiB, over the default 1 MiB.
  std::string big(600 * 1024, 'x');
  auto payload = [](const std::string& s) { return R"({"s":")" + s + R"("})"; };
  auto over = append(*j, "acc-big", 0, {ev("a", payload(big)), ev("b", payload(big))});
  REQUIRE_FALSE(over);
  CHECK(is(over.error(), journal_errc::too_large));
  CHECK_THAT(render(over.error()),
             Catch::Contains("append of 2 event(s) to persistence id acc-big is 1228")
               && Catch::Contains("over the journal's limit of 1048576 (max_append_bytes)")
               && Catch::Contains("nothing was written"));
  CHECK(head_offset(*j) == std::uint64_t{0});
  CHECK(highest_seq(*j, "acc-big") == std::uint64_t{0});
  // Exactly at the limit: stored and read back byte for byte.
  append_request at_limit{"acc-big", 0, {ev("a", payload(""))}, {"cmd-1", "corr-1"}};
  auto room = default_max_append_bytes - encoded_size(at_limit);
  at_limit.events[0].payload = payload(std::string(room, 'y'));
  REQUIRE(encoded_size(at_limit) == default_max_append_bytes);
  auto stored = append(*j, "acc-big", 0, at_limit.events, at_limit.metadata);
  REQUIRE(stored);
  auto records = read_stream(*j, "acc-big");
  REQUIRE(records);
  REQUIRE(records->size() == 1);
  CHECK((*records)[0].payload == at_limit.events[0].payload);
  // One byte more is refused.
  at_limit.events[0].payload += ' ';
  auto one_over = append(*j, "acc-big", 1, at_limit.events, at_limit.metadata);
  REQUIRE_FALSE(one_over);
  CHECK(is(one_over.error(), journal_errc::too_large));
  CHECK(head_offset(*j) == TestType::at(1, 1, 0));
}

JOURNAL_READ_CONTRACT("global offsets increase across streams, are consecutive within an "
                      "append, and gapless where the journal promises it") {
  TestType backend;
  auto j = backend.open();
  CHECK(j->gapless_offsets() == TestType::gapless);
  std::uint64_t event_no = 1;
  std::uint64_t append_no = 1;
  std::vector<std::uint64_t> expected;
  for (int round = 0; round < 5; ++round) {
    for (std::string pid : {"a", "b", "c"}) {
      auto n = static_cast<std::size_t>(round % 3 + 1);
      std::vector<encoded_event> events(n, ev("e"));
      auto res = append(*j, pid, *highest_seq(*j, pid), events);
      REQUIRE(res);
      CHECK(res->first_offset == TestType::at(event_no, append_no, 0));
      CHECK(res->last_offset == res->first_offset + n - 1);
      for (std::size_t i = 0; i < n; ++i)
        expected.push_back(TestType::at(event_no + i, append_no, i));
      event_no += n;
      ++append_no;
      // Interleaved conflicts must not leave holes.
      REQUIRE_FALSE(append(*j, pid, 999, {ev("lost")}));
    }
  }
  auto reader = backend.reader(j);
  auto all = read_all(*reader);
  REQUIRE(all);
  CHECK(offsets_of(*all) == expected);
  check_offsets<TestType>(offsets_of(*all), TestType::at(1, 1, 0), event_no - 1);
  CHECK(head_offset(*reader) == expected.back());
}

JOURNAL_READ_CONTRACT("reads return at most max records and a reader that resumes from the next "
                      "offset or seq sees every record exactly once") {
  TestType backend;
  auto j = backend.open();
  for (int i = 0; i < 30; ++i) {
    auto pid = "p" + std::to_string(i % 3);
    std::vector<std::string> tags;
    if (i % 2 == 0)
      tags.push_back("even");
    REQUIRE(append(*j, pid, *highest_seq(*j, pid), {ev("e", "{}", tags)}));
  }
  auto reader = backend.reader(j);
  std::vector<event_record> paged;
  std::uint64_t from = 1;
  for (;;) {
    auto page = read_all(*reader, from, 4);
    REQUIRE(page);
    REQUIRE(page->size() <= 4);
    if (page->empty())
      break;
    from = page->back().offset + 1;
    paged.insert(paged.end(), page->begin(), page->end());
  }
  CHECK(paged == *read_all(*reader));
  CHECK(paged.size() == 30);

  std::vector<event_record> stream;
  std::uint64_t seq = 1;
  for (;;) {
    auto page = read_stream(*reader, "p1", seq, UINT64_MAX, 3);
    REQUIRE(page);
    REQUIRE(page->size() <= 3);
    if (page->empty())
      break;
    seq = page->back().seq + 1;
    stream.insert(stream.end(), page->begin(), page->end());
  }
  CHECK(stream == *read_stream(*reader, "p1"));
  CHECK(stream.size() == 10);

  std::vector<event_record> tagged;
  from = 1;
  for (;;) {
    auto page = read_tagged(*reader, "even", from, 4);
    REQUIRE(page);
    REQUIRE(page->size() <= 4);
    if (page->empty())
      break;
    from = page->back().offset + 1;
    tagged.insert(tagged.end(), page->begin(), page->end());
  }
  CHECK(tagged == *read_tagged(*reader, "even"));
  CHECK(tagged.size() == 15);
  auto zero = read_all(*reader, 1, 0);
  REQUIRE(zero);
  CHECK(zero->empty());
}

JOURNAL_READ_CONTRACT("read_stream returns exactly the events with from_seq <= seq <= to_seq") {
  TestType backend;
  auto j = backend.open();
  REQUIRE(append(*j, "s", 0, {ev("1"), ev("2"), ev("3"), ev("4"), ev("5")}));
  REQUIRE(append(*j, "other", 0, {ev("x")}));
  auto reader = backend.reader(j);
  auto mid = read_stream(*reader, "s", 2, 4);
  REQUIRE(mid);
  REQUIRE(mid->size() == 3);
  CHECK(mid->front().seq == 2);
  CHECK(mid->back().seq == 4);
  auto from_zero = read_stream(*reader, "s", 0, 1);
  REQUIRE(from_zero);
  REQUIRE(from_zero->size() == 1);
  CHECK(from_zero->front().name == "1");
  auto past_end = read_stream(*reader, "s", 6);
  REQUIRE(past_end);
  CHECK(past_end->empty());
}

JOURNAL_READ_CONTRACT("read_tagged returns exactly the events carrying the tag, in offset order") {
  TestType backend;
  auto j = backend.open();
  REQUIRE(append(*j, "a", 0, {ev("1", "{}", {"red"}), ev("2", "{}", {"blue"})}));
  REQUIRE(append(*j, "b", 0, {ev("3", "{}", {"blue", "red"})}));
  REQUIRE(append(*j, "a", 2, {ev("4")}));
  REQUIRE(append(*j, "c", 0, {ev("5", "{}", {"red"})}));
  auto reader = backend.reader(j);
  auto red = read_tagged(*reader, "red");
  REQUIRE(red);
  CHECK(offsets_of(*red)
        == std::vector<std::uint64_t>{TestType::at(1, 1, 0), TestType::at(3, 2, 0),
                                      TestType::at(5, 4, 0)});
  auto blue = read_tagged(*reader, "blue", TestType::at(3, 2, 0));
  REQUIRE(blue);
  CHECK(offsets_of(*blue) == std::vector<std::uint64_t>{TestType::at(3, 2, 0)});
  auto none = read_tagged(*reader, "green");
  REQUIRE(none);
  CHECK(none->empty());
}

JOURNAL_READ_CONTRACT("persistence_ids lists the ids after a given one, sorted and paged") {
  TestType backend;
  auto j = backend.open();
  for (std::string pid : {"m", "c", "x", "a", "q"})
    REQUIRE(append(*j, pid, 0, {ev("e"), ev("f")}));
  auto reader = backend.reader(j);
  CHECK(persistence_ids(*reader, "", 100) == std::vector<std::string>{"a", "c", "m", "q", "x"});
  CHECK(persistence_ids(*reader, "", 2) == std::vector<std::string>{"a", "c"});
  CHECK(persistence_ids(*reader, "c", 2) == std::vector<std::string>{"m", "q"});
  CHECK(persistence_ids(*reader, "x", 2) == std::vector<std::string>{});
}

JOURNAL_CONTRACT("concurrent appenders to many streams all succeed with gapless offsets and "
                 "per-stream order") {
  TestType backend;
  auto j = backend.open();
  constexpr int threads = 8;
  constexpr int per_thread = 60;
  countdown done;
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  std::latch start{threads};
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      start.arrive_and_wait();
      // Each thread owns three streams and pipelines its appends without waiting, so
      // the expected seq must follow from submission order.
      std::uint64_t seqs[3] = {0, 0, 0};
      for (int i = 0; i < per_thread; ++i) {
        auto k = i % 3;
        auto n = static_cast<std::size_t>(i % 2 + 1);
        append_request req{
          "t" + std::to_string(t) + "-" + std::to_string(k),
          seqs[k],
          std::vector<encoded_event>(n, ev("e", "{\"i\":" + std::to_string(i) + "}")),
          {}};
        seqs[k] += n;
        j->append(std::move(req), [&](caf::expected<append_result> res) {
          if (!res)
            ++failures;
          done.arrive();
        });
      }
    });
  }
  for (auto& w : workers)
    w.join();
  REQUIRE(done.wait(threads * per_thread));
  CHECK(failures == 0);
  auto all = read_all(*j);
  REQUIRE(all);
  auto total = std::uint64_t{threads} * (per_thread / 2) * 3;
  check_offsets<TestType>(offsets_of(*all), TestType::at(1, 1, 0), total);
  std::map<std::string, std::uint64_t> last_seq;
  for (const auto& rec : *all) {
    CHECK(rec.seq == last_seq[rec.persistence_id] + 1);
    last_seq[rec.persistence_id] = rec.seq;
  }
  CHECK(last_seq.size() == threads * 3);
}

JOURNAL_CONTRACT("of concurrent appends to one stream with the same expected seq exactly one "
                 "wins and the others get conflict") {
  TestType backend;
  auto j = backend.open();
  constexpr int contenders = 6;
  std::uint64_t expected = 0;
  for (int round = 0; round < 10; ++round) {
    std::atomic<int> wins{0};
    std::atomic<int> conflicts{0};
    std::atomic<int> others{0};
    countdown done;
    std::latch start{contenders};
    std::vector<std::thread> workers;
    for (int t = 0; t < contenders; ++t) {
      workers.emplace_back([&, t] {
        start.arrive_and_wait();
        append_request req{"contended", expected, {ev("by-" + std::to_string(t)), ev("more")}, {}};
        j->append(std::move(req), [&](caf::expected<append_result> res) {
          if (res)
            ++wins;
          else if (is(res.error(), journal_errc::conflict))
            ++conflicts;
          else
            ++others;
          done.arrive();
        });
      });
    }
    for (auto& w : workers)
      w.join();
    REQUIRE(done.wait(contenders));
    CHECK(wins == 1);
    CHECK(conflicts == contenders - 1);
    CHECK(others == 0);
    // The winner wrote two events; the next round contends for the seq after them.
    expected += 2;
    REQUIRE(highest_seq(*j, "contended") == expected);
  }
}

JOURNAL_CONTRACT("a reopened journal holds every committed event and continues seqs and "
                 "offsets") {
  TestType backend;
  auto j = backend.open();
  REQUIRE(append(*j, "a", 0, {ev("1", R"({"v":1})", {"t"}), ev("2")}, {"c", "r"}));
  REQUIRE(append(*j, "b", 0, {ev("3")}));
  auto before = read_all(*j);
  REQUIRE(before);
  j = backend.reopen(j);
  auto after = read_all(*j);
  REQUIRE(after);
  CHECK(*after == *before);
  CHECK(highest_seq(*j, "a") == std::uint64_t{2});
  auto conflict = append(*j, "a", 1, {ev("stale")});
  REQUIRE_FALSE(conflict);
  CHECK(is(conflict.error(), journal_errc::conflict));
  auto next = append(*j, "a", 2, {ev("4")});
  REQUIRE(next);
  CHECK(next->first_seq == 3);
  CHECK(next->first_offset == TestType::at(4, 3, 0));
  auto tagged = read_tagged(*j, "t");
  REQUIRE(tagged);
  CHECK(offsets_of(*tagged) == std::vector<std::uint64_t>{TestType::at(1, 1, 0)});
}

JOURNAL_CONTRACT("a listener sees every committed batch once, in offset order, without gaps, "
                 "and nothing after it unsubscribes") {
  TestType backend;
  auto j = backend.open();
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<event_record> seen;
  std::size_t batches = 0;
  auto handle = j->subscribe([&](const std::vector<event_record>& batch) {
    std::lock_guard guard{mtx};
    ++batches;
    seen.insert(seen.end(), batch.begin(), batch.end());
    cv.notify_all();
  });
  constexpr int threads = 4;
  constexpr int per_thread = 40;
  countdown done;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::uint64_t seq = 0;
      for (int i = 0; i < per_thread; ++i) {
        auto n = static_cast<std::size_t>(i % 3 + 1);
        append_request req{"s" + std::to_string(t),
                           seq,
                           std::vector<encoded_event>(n, ev("e", "{}", {"tag"})),
                           {"cmd", ""}};
        seq += n;
        j->append(std::move(req), [&](caf::expected<append_result>) { done.arrive(); });
      }
    });
  }
  for (auto& w : workers)
    w.join();
  REQUIRE(done.wait(threads * per_thread));
  auto all = read_all(*j);
  REQUIRE(all);
  std::size_t total = 0;
  for (int i = 0; i < per_thread; ++i)
    total += threads * static_cast<std::size_t>(i % 3 + 1);
  CHECK(all->size() == total);
  {
    std::unique_lock lk{mtx};
    REQUIRE(cv.wait_for(lk, bound, [&] { return seen.size() >= total; }));
    check_offsets<TestType>(offsets_of(seen), TestType::at(1, 1, 0), total);
    CHECK(batches >= 1);
    CHECK(batches <= threads * per_thread);
    CHECK(seen == *all);
  }
  j->unsubscribe(handle);
  REQUIRE(append(*j, "after", 0, {ev("e")}));
  REQUIRE(read_all(*j)); // lets any delivery in flight finish
  std::lock_guard guard{mtx};
  CHECK(seen.size() == total);
}

JOURNAL_CONTRACT("a snapshot store returns the newest snapshots first and keeps only the "
                 "newest N") {
  TestType backend;
  auto j = backend.open();
  auto store = backend.snapshots(j, 2);
  auto save = [&](snapshot_record snap) {
    return wait_for<caf::unit_t>(
      [&](callback<caf::unit_t> done) { store->save(std::move(snap), std::move(done)); }, bound);
  };
  auto load = [&](std::string pid) {
    return wait_for<std::vector<snapshot_record>>(
      [&](callback<std::vector<snapshot_record>> done) { store->load(pid, std::move(done)); },
      bound);
  };
  auto none = load("acc-1");
  REQUIRE(none);
  CHECK(none->empty());
  for (std::uint64_t seq : {5u, 10u, 15u})
    REQUIRE(save(
      {"acc-1", seq, "bank.account_state", 3, R"({"balance":)" + std::to_string(seq) + "}", 42}));
  REQUIRE(save({"acc-2", 7, "bank.account_state", 1, "{}", 0}));
  auto snaps = load("acc-1");
  REQUIRE(snaps);
  REQUIRE(snaps->size() == 2);
  CHECK((*snaps)[0]
        == snapshot_record{"acc-1", 15, "bank.account_state", 3, R"({"balance":15})", 42});
  CHECK((*snaps)[1].seq == 10);
  auto other = load("acc-2");
  REQUIRE(other);
  REQUIRE(other->size() == 1);
  CHECK(other->front().timestamp_us > 0);
  auto invalid = save({"", 1, "x", 1, "{}", 0});
  REQUIRE_FALSE(invalid);
  CHECK(is(invalid.error(), journal_errc::invalid_request));
}

// Exactly-once projections into a Xapian index (annals/actors/xapian_projection.hpp): the
// documents and the offset commit together, a restart neither repeats nor skips an event,
// a second writer on the same directory fails naming it, an offset moved behind the sink's
// back stops it with offset_moved, a throwing handler stops at the event before it, a reset
// empties the index at offset 0, and the folded words find owners by prefix, in any case
// and without their accents. Every wait is bounded and answered by the projection itself
// (`await_offset`).

#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <xapian.h>

#include "account/account.hpp"
#include "annals/actors/system.hpp"
#include "annals/actors/xapian_projection.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "xapian/account_docs.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;
using annals::actors::projection_errc;
using annals::actors::projection_state;
using annals::actors::xapian_projection_options;
using xapian_test::account_docs;
using xapian_test::read_index;

namespace {

struct test_system {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  test_system() : sys{(annals::actors::configure(cfg), cfg)} {}
};

/// A SQLite journal in a temporary directory, with the index directory beside it, and
/// shortcuts that append bank events.
struct env {
  temp_dir dir;
  std::shared_ptr<sqlite_journal> journal;
  std::string index = dir.file("index");
  std::map<std::string, std::uint64_t> seqs;

  env() {
    auto j = sqlite_journal::open(
      {.path = dir.file("journal.db"), .durability = durability_level::normal});
    if (!j)
      FAIL(render(j.error()));
    journal = *j;
  }

  template <class E>
  void write(const std::string& id, E e) {
    auto pid = "account|" + id;
    auto res = append(*journal, pid, seqs[pid], {bank::account::codec_type::encode(e)});
    if (!res)
      FAIL("append to " << pid << " failed: " << render(res.error()));
    seqs[pid] = res->last_seq;
  }

  std::uint64_t head() {
    auto h = head_offset(*journal);
    REQUIRE(h);
    return *h;
  }

  std::vector<event_record> records() {
    auto all = read_all(*journal);
    REQUIRE(all);
    return *all;
  }

  annals::actors::projection spawn(caf::actor_system& sys, std::size_t page_size = 512) {
    return annals::actors::spawn_projection(
      sys, journal, std::make_shared<account_docs>(),
      xapian_projection_options{.name = "docs", .path = index, .page_size = page_size});
  }

  /// The index equals the fold of the journal up to its stored offset, which is `offset`.
  void check_index(std::uint64_t offset) {
    auto st = read_index(index, "docs");
    CHECK(st.offset == offset);
    auto expected = xapian_test::fold_records(records(), st.offset);
    CHECK(st.doc_count == expected.size());
    CHECK(st.docs == expected);
  }
};

/// The ids of the documents whose words match every word of `text`, exactly or as a
/// prefix, best first (the query the bank's /search runs).
std::vector<std::string> search(const std::string& dir, const std::string& text) {
  Xapian::Database db{dir};
  std::vector<Xapian::Query> parts;
  for (const auto& w : annals::actors::search_words(text))
    parts.emplace_back(Xapian::Query::OP_OR, Xapian::Query{w},
                       Xapian::Query{Xapian::Query::OP_WILDCARD, w});
  Xapian::Enquire enquire{db};
  enquire.set_query(Xapian::Query{Xapian::Query::OP_AND, parts.begin(), parts.end()});
  auto mset = enquire.get_mset(0, 100);
  std::vector<std::string> ids;
  for (auto it = mset.begin(); it != mset.end(); ++it)
    ids.push_back(account_docs::parse(it.get_document().get_data()).first);
  return ids;
}

} // namespace

TEST_CASE("a Xapian projection applies each event once, with its offset, across restarts",
          "[xapian][projection]") {
  test_system ts;
  env e;
  e.write("a", bank::opened{"Ada"});
  e.write("b", bank::opened{"Bob"});
  for (int i = 1; i <= 20; ++i)
    e.write(i % 2 ? "a" : "b", bank::deposited{i});
  e.write("b", bank::withdrawn{5});
  e.write("b", bank::closed{});
  {
    auto proj = e.spawn(ts.sys, 5);
    auto st = proj.await_offset(e.head(), bound);
    REQUIRE(st);
    CHECK(st->state == projection_state::running);
    CHECK(st->applied == 24);
    e.write("a", bank::withdrawn{3}); // live
    REQUIRE(proj.await_offset(e.head(), bound));
  }
  e.check_index(25);
  CHECK(read_index(e.index, "docs").docs["account|a"].balance
        == 1 + 3 + 5 + 7 + 9 + 11 + 13 + 15 + 17 + 19 - 3);
  // Started again, it goes on from its stored offset: nothing twice (the event counts and
  // balances), nothing lost.
  e.write("c", bank::opened{"Carla"});
  e.write("c", bank::deposited{40});
  auto again = e.spawn(ts.sys);
  auto st = again.await_offset(27, bound);
  REQUIRE(st);
  CHECK(st->applied == 2);
  e.check_index(27);
  // A rebuild replays everything into an emptied index.
  REQUIRE_FALSE(again.rebuild());
  REQUIRE(again.await_offset(27, bound));
  e.check_index(27);
}

TEST_CASE("a second writer on a Xapian index fails naming the directory, and an offset moved "
          "behind the sink's back stops it with offset_moved",
          "[xapian][projection]") {
  test_system ts;
  env e;
  e.write("a", bank::opened{"Ada"});
  e.write("a", bank::deposited{10});
  auto first = e.spawn(ts.sys);
  REQUIRE(first.await_offset(2, bound));
  SECTION("a second projection on the same directory fails at start") {
    auto second = e.spawn(ts.sys);
    auto st = second.await_offset(2, bound);
    REQUIRE_FALSE(st);
    CHECK(is(st.error(), projection_errc::read_model_failed));
    CHECK_THAT(render(st.error()),
               Catch::Contains(e.index) && Catch::Contains("locked by another writer"));
    // The first one goes on.
    e.write("a", bank::deposited{1});
    REQUIRE(first.await_offset(3, bound));
    e.check_index(3);
  }
  SECTION("a sink told a stale offset applies nothing") {
    first.stop();
    auto sink = annals::actors::make_xapian_sink(
      std::make_shared<account_docs>(), xapian_projection_options{.name = "docs", .path = e.index});
    auto stored = sink->open();
    REQUIRE(stored);
    CHECK(*stored == 2);
    CHECK(sink->guarantee() == annals::actors::delivery::exactly_once);
    e.write("a", bank::deposited{7});
    auto recs = e.records();
    // Another writer had the index at offset 2; this one believes it left it at 1.
    auto out = sink->apply(std::span{recs}.subspan(2), 1);
    REQUIRE(out.err);
    CHECK(is(out.err, projection_errc::offset_moved));
    CHECK(out.last_good == 1);
    CHECK(out.applied == 0);
    sink.reset(); // releases the lock
    e.check_index(2);
  }
}

TEST_CASE("a throwing Xapian handler stops the projection at the event before it",
          "[xapian][projection]") {
  test_system ts;
  env e;
  e.write("a", bank::opened{"Ada"});
  e.write("a", bank::deposited{10});
  e.write("a", bank::deposited{20});
  e.write("p", bank::opened{xapian_test::poison_owner});
  e.write("a", bank::deposited{40});
  // One batch of five (the events before the poisoned one are applied again and committed),
  // or batches of one (the poisoned event's batch commits nothing): the same end.
  auto page_size = GENERATE(std::size_t{512}, std::size_t{1});
  INFO("page size " << page_size);
  auto proj = e.spawn(ts.sys, page_size);
  auto st = proj.await_offset(5, bound);
  REQUIRE_FALSE(st);
  CHECK(is(st.error(), projection_errc::handler_failed));
  CHECK_THAT(render(st.error()), Catch::Contains("poisoned owner") && Catch::Contains("offset 4"));
  auto status = proj.status();
  REQUIRE(status);
  CHECK(status->state == projection_state::failed);
  CHECK(status->offset == 3);
  proj.stop();
  // The good prefix is committed with its offset; nothing of the poisoned event or after.
  e.check_index(3);
  CHECK(read_index(e.index, "docs").docs["account|a"].balance == 30);
}

TEST_CASE("a Xapian reset deletes every document and stores offset 0 in one commit",
          "[xapian][projection]") {
  test_system ts;
  env e;
  e.write("a", bank::opened{"Ada"});
  e.write("b", bank::opened{"Bob"});
  {
    auto proj = e.spawn(ts.sys);
    REQUIRE(proj.await_offset(2, bound));
  }
  REQUIRE(read_index(e.index, "docs").doc_count == 2);
  {
    auto sink = annals::actors::make_xapian_sink(
      std::make_shared<account_docs>(), xapian_projection_options{.name = "docs", .path = e.index});
    REQUIRE(sink->open());
    REQUIRE_FALSE(sink->reset());
  }
  auto st = read_index(e.index, "docs");
  CHECK(st.offset == 0);
  CHECK(st.doc_count == 0);
  // Started on the reset index, the projection replays the journal.
  auto proj = e.spawn(ts.sys);
  REQUIRE(proj.await_offset(2, bound));
  proj.stop();
  e.check_index(2);
}

TEST_CASE("search words fold case and Latin accents and split on punctuation", "[xapian][search]") {
  using annals::actors::search_fold;
  using annals::actors::search_words;
  CHECK(search_fold("José García") == "jose garcia");
  CHECK(search_fold("ÀÉÎÕÜ àéîõü Çç Ññ") == "aeiou aeiou cc nn");
  CHECK(search_fold("Straße Æsir Œuvre Øre Þór") == "strasse aesir oeuvre ore thor");
  CHECK(search_fold("Łódź Żółć Dvořák Şahin") == "lodz zolc dvorak sahin");
  CHECK(search_fold("Jose\u0301") == "jose"); // a combining accent
  CHECK(search_fold("\xff"
                    "abc\xc3")
        == "abc");                                  // invalid bytes dropped
  CHECK(search_fold("東京 Ωmega") == "東京 Ωmega"); // other scripts as they are
  CHECK(search_words("  O'Brien-Smith, Jr. 3rd ")
        == std::vector<std::string>{"o", "brien", "smith", "jr", "3rd"});
  CHECK(search_words("Zoë 東京") == std::vector<std::string>{"zoe", "東京"});
  CHECK(search_words(std::string(100, 'x')) == std::vector<std::string>{std::string(64, 'x')});
  CHECK(search_words("...").empty());
}

TEST_CASE("a Xapian index of owners finds them by prefix, in any case, without accents",
          "[xapian][search]") {
  test_system ts;
  env e;
  e.write("1", bank::opened{"Alice Smith"});
  e.write("2", bank::opened{"José García"});
  e.write("3", bank::opened{"Bob Alison"});
  e.write("4", bank::opened{"ALI Baba"});
  e.write("5", bank::opened{"Łukasz Żółw"});
  auto proj = e.spawn(ts.sys);
  REQUIRE(proj.await_offset(5, bound));
  // An exact word weighs more than the words it begins.
  auto ali = search(e.index, "ali");
  REQUIRE(ali.size() == 3);
  CHECK(ali[0] == "account|4");
  CHECK(std::set<std::string>(ali.begin() + 1, ali.end())
        == std::set<std::string>{"account|1", "account|3"});
  CHECK(search(e.index, "jose") == std::vector<std::string>{"account|2"});
  CHECK(search(e.index, "JOSÉ GARC") == std::vector<std::string>{"account|2"});
  CHECK(search(e.index, "garcia jos") == std::vector<std::string>{"account|2"});
  CHECK(search(e.index, "lukasz zolw") == std::vector<std::string>{"account|5"});
  CHECK(search(e.index, "alice bob").empty()); // every word must match
  CHECK(search(e.index, "zebra").empty());
}

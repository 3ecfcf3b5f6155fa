// What only the SQLite journal promises: the file format guards, append-only triggers,
// full-disk behaviour, group commit, durability settings, and sharing a file.

#include <algorithm>
#include <sqlite3.h>

#include <thread>

#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

std::shared_ptr<sqlite_journal> open_journal(sqlite_options opts) {
  auto res = sqlite_journal::open(std::move(opts));
  if (!res)
    FAIL(render(res.error()));
  return *res;
}

/// A plain connection, as any other program on the machine would use.
class raw_db {
public:
  explicit raw_db(const std::string& path) {
    REQUIRE(sqlite3_open(path.c_str(), &db_) == SQLITE_OK);
  }
  ~raw_db() {
    sqlite3_close(db_);
  }
  /// Runs `sql`; returns SQLite's result code, keeping the error message.
  int exec(const std::string& sql) {
    char* msg = nullptr;
    auto rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg);
    message_ = msg ? msg : "";
    sqlite3_free(msg);
    return rc;
  }
  const std::string& message() const {
    return message_;
  }

private:
  sqlite3* db_ = nullptr;
  std::string message_;
};

std::uint64_t max_page_count(sqlite_journal& j, std::uint64_t pages) {
  auto res = wait_for<std::uint64_t>(
    [&](callback<std::uint64_t> done) { j.set_max_page_count(pages, std::move(done)); }, bound);
  REQUIRE(res);
  return *res;
}

} // namespace

TEST_CASE("the event tables refuse UPDATE and DELETE from any connection", "[sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_journal({.path = path});
  REQUIRE(append(*j, "acc-1", 0, {ev("a", R"({"v":1})", {"t"}), ev("b")}));
  raw_db raw{path};
  for (std::string sql : {
         "UPDATE events SET payload = '{\"v\":2}' WHERE seq = 1",
         "DELETE FROM events WHERE seq = 2",
         "DELETE FROM events",
         "INSERT INTO events (global_offset, persistence_id, seq, name, version, payload, "
         "timestamp_us) VALUES (1, 'acc-1', 9, 'forged', 1, '{}', 0) "
         "ON CONFLICT DO UPDATE SET payload = excluded.payload",
         "UPDATE event_tags SET tag = 'u'",
         "DELETE FROM event_tags",
       }) {
    INFO(sql);
    CHECK((raw.exec(sql) & 0xff) == SQLITE_CONSTRAINT);
    CHECK_THAT(raw.message(), Catch::Contains("append-only"));
  }
  auto records = read_stream(*j, "acc-1");
  REQUIRE(records);
  REQUIRE(records->size() == 2);
  CHECK((*records)[0].payload == R"({"v":1})");
  CHECK((*records)[0].name == "a");
  CHECK(read_tagged(*j, "t")->size() == 1);
}

TEST_CASE("sqlite_options::max_append_bytes bounds an append; 0 lifts the bound", "[sqlite]") {
  temp_dir dir;
  std::string payload = R"({"s":")" + std::string(300, 'x') + R"("})";
  {
    auto j = open_journal({.path = dir.file("small.db"), .max_append_bytes = 256});
    auto res = append(*j, "acc", 0, {ev("e", payload)});
    REQUIRE_FALSE(res);
    CHECK(is(res.error(), journal_errc::too_large));
    CHECK_THAT(render(res.error()), Catch::Contains("over the journal's limit of 256"));
    CHECK(j->stats().failed_appends == 1);
    CHECK(append(*j, "acc", 0, {ev("e")}));
  }
  auto j = open_journal({.path = dir.file("unbounded.db"), .max_append_bytes = 0});
  std::string huge = R"({"s":")" + std::string(3 * default_max_append_bytes, 'x') + R"("})";
  REQUIRE(append(*j, "acc", 0, {ev("e", huge)}));
  auto records = read_stream(*j, "acc");
  REQUIRE(records);
  REQUIRE(records->size() == 1);
  CHECK((*records)[0].payload == huge);
}

TEST_CASE("opening a file that is not SQLite fails with not_a_journal and leaves it as it was",
          "[sqlite]") {
  temp_dir dir;
  auto path = dir.file("notes.txt");
  {
    std::ofstream out{path, std::ios::binary};
    for (int i = 0; i < 200; ++i)
      out << "line " << i << " of something that is not a database\n";
  }
  auto before = slurp(path);
  auto res = sqlite_journal::open({.path = path});
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::not_a_journal));
  CHECK_THAT(render(res.error()), Catch::Contains(path));
  CHECK(slurp(path) == before);
  CHECK(list_dir(dir.path()) == std::vector<std::string>{"notes.txt"});
}

TEST_CASE("opening another application's SQLite database fails with not_a_journal and leaves "
          "it as it was",
          "[sqlite]") {
  temp_dir dir;
  for (bool with_app_id : {false, true}) {
    auto path = dir.file(with_app_id ? "tagged.db" : "plain.db");
    {
      raw_db raw{path};
      REQUIRE(raw.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);"
                       "INSERT INTO customers (name) VALUES ('ada'), ('grace');")
              == SQLITE_OK);
      if (with_app_id)
        REQUIRE(raw.exec("PRAGMA application_id = 1234") == SQLITE_OK);
    }
    auto files = list_dir(dir.path());
    auto before = slurp(path);
    auto res = sqlite_journal::open({.path = path});
    REQUIRE_FALSE(res);
    CHECK(is(res.error(), journal_errc::not_a_journal));
    CHECK_THAT(render(res.error()), Catch::Contains(path));
    CHECK_THAT(render(res.error()), Catch::Contains("another application"));
    CHECK(slurp(path) == before);
    CHECK(list_dir(dir.path()) == files);
  }
}

TEST_CASE("opening a journal written by a newer schema fails with newer_schema and leaves it "
          "as it was",
          "[sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  {
    auto j = open_journal({.path = path});
    REQUIRE(append(*j, "acc-1", 0, {ev("a")}));
  }
  {
    raw_db raw{path};
    REQUIRE(raw.exec("PRAGMA user_version = 99") == SQLITE_OK);
  }
  auto before = slurp(path);
  auto res = sqlite_journal::open({.path = path});
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::newer_schema));
  CHECK_THAT(render(res.error()), Catch::Contains("99"));
  CHECK(slurp(path) == before);
}

TEST_CASE("a new journal file records its application id, schema version and WAL mode",
          "[sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_journal({.path = path});
  CHECK(j->info().created);
  CHECK(j->info().journal_mode == "wal");
  CHECK(j->info().schema_version == sqlite_journal::schema_version);
  j->close();
  auto again = open_journal({.path = path});
  CHECK_FALSE(again->info().created);
  auto missing = sqlite_journal::open({.path = dir.file("missing.db"), .must_exist = true});
  REQUIRE_FALSE(missing);
  CHECK(is(missing.error(), journal_errc::storage_error));
  CHECK_THAT(render(missing.error()), Catch::Contains("missing.db"));
}

TEST_CASE("durability full sets synchronous=FULL and normal sets synchronous=NORMAL", "[sqlite]") {
  temp_dir dir;
  auto full = open_journal({.path = dir.file("full.db")});
  CHECK(full->info().synchronous == 2);
  auto normal =
    open_journal({.path = dir.file("normal.db"), .durability = durability_level::normal});
  CHECK(normal->info().synchronous == 1);
  REQUIRE(append(*normal, "a", 0, {ev("e")}));
  CHECK(read_stream(*normal, "a")->size() == 1);
}

TEST_CASE("on a full disk appends fail with disk_full, write nothing partial, and succeed "
          "again once there is space",
          "[sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_journal({.path = path});
  REQUIRE(append(*j, "acc-1", 0, {ev("opened")}));
  auto pages = max_page_count(*j, 1); // SQLite clamps to the current size
  CHECK(pages >= 1);
  std::string big(60'000, 'x');
  auto payload = R"({"blob":")" + big + R"("})";
  std::uint64_t seq = 1;
  caf::error failure;
  // Three large events cannot fit into the pages already allocated; the loop only guards
  // against free space left over in the file.
  for (int attempt = 0; attempt < 50 && !failure; ++attempt) {
    auto res = append(*j, "acc-1", seq,
                      {ev("big", payload, {"large"}), ev("big", payload), ev("big", payload)});
    if (res)
      seq = res->last_seq;
    else
      failure = res.error();
  }
  REQUIRE(failure);
  CHECK(is(failure, journal_errc::disk_full));
  CHECK_THAT(render(failure), Catch::Contains("full"));
  CHECK_THAT(render(failure), Catch::Contains("acc-1"));
  CHECK(highest_seq(*j, "acc-1") == seq);
  auto stored = read_stream(*j, "acc-1");
  REQUIRE(stored);
  CHECK(stored->size() == seq);
  auto head = head_offset(*j);
  REQUIRE(head);
  CHECK(*head == seq);
  CHECK(read_tagged(*j, "large")->size() == (seq - 1) / 3);
  max_page_count(*j, 1'000'000);
  auto res = append(*j, "acc-1", seq, {ev("big", payload), ev("big", payload)});
  REQUIRE(res);
  CHECK(res->first_seq == seq + 1);
  CHECK(res->first_offset == *head + 1);
}

TEST_CASE("appends that wait while a commit is in flight share one transaction", "[sqlite]") {
  temp_dir dir;
  auto j = open_journal({.path = dir.file("j.db")});
  constexpr std::size_t n = 300;
  countdown done;
  std::atomic<int> failures{0};
  std::uint64_t transactions_before = 0;
  // Submitting from the writer's own callback guarantees that all `n` appends are queued
  // before the writer looks at its queue again.
  // No Catch assertions on the writer thread: Catch is not thread-safe.
  j->append({"first", 0, {ev("e")}, {}}, [&](caf::expected<append_result> res) {
    if (!res)
      ++failures;
    transactions_before = j->stats().transactions;
    for (std::size_t i = 0; i < n; ++i)
      j->append({"id-" + std::to_string(i), 0, {ev("e")}, {}}, [&](caf::expected<append_result> r) {
        if (!r)
          ++failures;
        done.arrive();
      });
  });
  REQUIRE(done.wait(n));
  CHECK(failures == 0);
  auto stats = j->stats();
  CHECK(stats.transactions == transactions_before + 1);
  CHECK(stats.largest_batch == n);
  CHECK(stats.appends == n + 1);
  CHECK(stats.events == n + 1);
  // The histograms count the same two transactions: one of a single append, one of `n`.
  std::uint64_t counted = 0;
  for (auto c : stats.batch_histogram)
    counted += c;
  CHECK(counted == stats.transactions);
  CHECK(stats.batch_histogram[0] == 1);
  auto bucket_of_n = static_cast<std::size_t>(
    std::lower_bound(stats.batch_bounds.begin(), stats.batch_bounds.end(), n)
    - stats.batch_bounds.begin());
  CHECK(stats.batch_histogram[bucket_of_n] == 1);
  CHECK(stats.batch_writes_sum == n + 1);
  counted = 0;
  for (auto c : stats.commit_histogram)
    counted += c;
  CHECK(counted == stats.transactions);
  CHECK(stats.commit_us_sum > 0);
}

TEST_CASE("a conflicting append inside a group commit rolls back alone", "[sqlite]") {
  temp_dir dir;
  auto j = open_journal({.path = dir.file("j.db")});
  REQUIRE(append(*j, "b", 0, {ev("b1")}));
  std::vector<caf::expected<append_result>> results;
  std::mutex mtx;
  countdown done;
  std::uint64_t transactions_before = 0;
  auto collect = [&](std::size_t index) {
    return [&, index](caf::expected<append_result> res) {
      std::lock_guard guard{mtx};
      results[index] = std::move(res);
      done.arrive();
    };
  };
  results.resize(4, caf::expected<append_result>{append_result{}});
  j->append({"trigger", 0, {ev("e")}, {}}, [&](caf::expected<append_result>) {
    transactions_before = j->stats().transactions;
    j->append({"a", 0, {ev("a1", "{}", {"t"}), ev("a2")}, {}}, collect(0));
    j->append({"b", 0, {ev("stale1", "{}", {"t"}), ev("stale2")}, {}}, collect(1));
    j->append({"c", 0, {ev("c1"), ev("c2", "{}", {"t"})}, {}}, collect(2));
    j->append({"b", 1, {ev("b2")}, {}}, collect(3));
  });
  REQUIRE(done.wait(4));
  CHECK(j->stats().transactions == transactions_before + 1);
  REQUIRE(results[0]);
  REQUIRE_FALSE(results[1]);
  CHECK(is(results[1].error(), journal_errc::conflict));
  REQUIRE(results[2]);
  REQUIRE(results[3]);
  // The conflicting write consumed no offsets: the writes around it are contiguous.
  CHECK(results[0]->last_offset + 1 == results[2]->first_offset);
  CHECK(results[2]->last_offset + 1 == results[3]->first_offset);
  auto all = read_all(*j);
  REQUIRE(all);
  std::vector<std::string> names;
  for (const auto& rec : *all)
    names.push_back(rec.name);
  CHECK(names == std::vector<std::string>{"b1", "e", "a1", "a2", "c1", "c2", "b2"});
  CHECK(read_tagged(*j, "t")->size() == 2);
}

TEST_CASE("two journal instances on one file writing one stream: the stale one gets conflict, "
          "never an overwrite",
          "[sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  // Two writers exist only without the owner lock: the journal still detects them.
  auto first = open_journal({.path = path, .owner_lock = false});
  auto second = open_journal({.path = path, .owner_lock = false});
  REQUIRE(append(*first, "shared", 0, {ev("from-first")}));
  // `second` has never seen the stream and reads its state from the file.
  auto stale_second = append(*second, "shared", 0, {ev("lost")});
  REQUIRE_FALSE(stale_second);
  CHECK(is(stale_second.error(), journal_errc::conflict));
  REQUIRE(append(*second, "shared", 1, {ev("from-second")}));
  // `first` still remembers seq 1 as the stream's end; the unique index catches it.
  auto stale_first = append(*first, "shared", 1, {ev("overwrite?"), ev("more")});
  REQUIRE_FALSE(stale_first);
  CHECK(is(stale_first.error(), journal_errc::conflict));
  CHECK_THAT(render(stale_first.error()), Catch::Contains("shared"));
  auto next = append(*first, "shared", 2, {ev("from-first-again")});
  REQUIRE(next);
  CHECK(next->first_offset == 3);
  auto all = read_all(*second);
  REQUIRE(all);
  std::vector<std::string> names;
  for (const auto& rec : *all)
    names.push_back(rec.name);
  CHECK(names == std::vector<std::string>{"from-first", "from-second", "from-first-again"});
}

TEST_CASE("close finishes the appends already submitted and refuses later ones", "[sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_journal({.path = path});
  constexpr int n = 200;
  std::atomic<int> ok{0};
  countdown done;
  for (int i = 0; i < n; ++i)
    j->append({"s", static_cast<std::uint64_t>(i), {ev("e")}, {}},
              [&](caf::expected<append_result> res) {
                if (res)
                  ++ok;
                done.arrive();
              });
  j->close();
  REQUIRE(done.wait(n));
  CHECK(ok == n);
  auto late = append(*j, "s", n, {ev("late")});
  REQUIRE_FALSE(late);
  CHECK(is(late.error(), journal_errc::closed));
  auto late_read = read_all(*j);
  REQUIRE_FALSE(late_read);
  CHECK(is(late_read.error(), journal_errc::closed));
  j->close(); // idempotent
  auto reopened = open_journal({.path = path});
  CHECK(highest_seq(*reopened, "s") == std::uint64_t{n});
}

TEST_CASE("a journal can be closed and released from inside its own callback", "[sqlite]") {
  temp_dir dir;
  auto j = open_journal({.path = dir.file("j.db")});
  countdown done;
  std::atomic<bool> ok{false};
  std::shared_ptr<sqlite_journal> holder = j;
  j.reset();
  holder->append({"s", 0, {ev("e")}, {}}, [&](caf::expected<append_result> res) {
    ok = static_cast<bool>(res);
    holder->close();
    holder.reset(); // the last reference dies on the writer thread
    done.arrive();
  });
  REQUIRE(done.wait(1));
  CHECK(ok);
}

TEST_CASE("a row with a non-text event name fails the read with corrupt_row naming its "
          "persistence id and seq",
          "[sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_journal({.path = path});
  REQUIRE(append(*j, "acc-7", 0, {ev("fine")}));
  {
    raw_db raw{path};
    REQUIRE(raw.exec("INSERT INTO events (global_offset, persistence_id, seq, name, version, "
                     "payload, timestamp_us) VALUES (2, 'acc-7', 2, x'00ff', 1, '{}', 0)")
            == SQLITE_OK);
  }
  auto res = read_stream(*j, "acc-7");
  REQUIRE_FALSE(res);
  CHECK(is(res.error(), journal_errc::corrupt_row));
  CHECK_THAT(render(res.error()), Catch::Contains("persistence id acc-7, seq 2"));
  auto first_only = read_stream(*j, "acc-7", 1, 1);
  REQUIRE(first_only);
  CHECK(first_only->size() == 1);
}

TEST_CASE("snapshots saved through the journal survive reopening, newest first", "[sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  {
    auto j = open_journal({.path = path, .keep_snapshots = 3});
    auto store = j->snapshots();
    for (std::uint64_t seq = 1; seq <= 5; ++seq)
      REQUIRE(wait_for<caf::unit_t>(
        [&](callback<caf::unit_t> done) {
          store->save({"acc-1", seq * 10, "bank.account_state", 1, "{}", 0}, std::move(done));
        },
        bound));
  }
  auto j = open_journal({.path = path, .keep_snapshots = 3});
  auto store = j->snapshots();
  auto snaps = wait_for<std::vector<snapshot_record>>(
    [&](callback<std::vector<snapshot_record>> done) { store->load("acc-1", std::move(done)); },
    bound);
  REQUIRE(snaps);
  REQUIRE(snaps->size() == 3);
  CHECK((*snaps)[0].seq == 50);
  CHECK((*snaps)[1].seq == 40);
  CHECK((*snaps)[2].seq == 30);
}

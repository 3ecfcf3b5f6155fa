// Inline projections: read models the SQLite journal writes inside its own append
// transactions. An acknowledged append implies the model holds it; a model that throws fails
// its append alone with nothing written; a model behind the head (new, or after a rebuild)
// catches up; and a kill -9 at any moment leaves events, model and offset in agreement.

#include <csignal>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include "annals/persistence/sqlite_read_model.hpp"
#include "journal_fixtures.hpp"

using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

void run_sql(sqlite3* db, const std::string& sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string text = msg != nullptr ? msg : "unknown error";
    sqlite3_free(msg);
    throw std::runtime_error{text};
  }
}

// Counts the events of each stream and remembers the offset of its last one; refuses an
// event whose payload says "refuse".
class stream_counts : public sqlite_read_model {
public:
  void create_schema(sqlite3* db) override {
    run_sql(db, "CREATE TABLE IF NOT EXISTS stream_counts (pid TEXT PRIMARY KEY, events "
                "INTEGER NOT NULL, last_offset INTEGER NOT NULL)");
  }
  void apply(sqlite3* db, const event_record& rec) override {
    if (rec.payload.find("refuse") != std::string::npos)
      throw std::runtime_error{"payload " + rec.payload + " refused"};
    sqlite3_stmt* stmt = nullptr;
    sqlite3_prepare_v2(db,
                       "INSERT INTO stream_counts VALUES (?1, 1, ?2) ON CONFLICT(pid) DO "
                       "UPDATE SET events = events + 1, last_offset = ?2",
                       -1, &stmt, nullptr);
    sqlite3_bind_text(stmt, 1, rec.persistence_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 2, static_cast<sqlite3_int64>(rec.offset));
    auto rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
      throw std::runtime_error{sqlite3_errmsg(db)};
  }
  void reset(sqlite3* db) override {
    run_sql(db, "DELETE FROM stream_counts");
  }
};

struct model_row {
  std::uint64_t events = 0;
  std::uint64_t last_offset = 0;
  friend bool operator==(const model_row&, const model_row&) = default;
};

// What a plain connection reads from the file: the model, the counts of the events table and
// the model's stored offset.
struct file_view {
  std::map<std::string, model_row> model;
  std::map<std::string, model_row> events;
  std::uint64_t stored_offset = 0;
  std::uint64_t head = 0;
};

std::map<std::string, model_row> query_rows(sqlite3* db, const char* sql) {
  std::map<std::string, model_row> rows;
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK);
  while (sqlite3_step(stmt) == SQLITE_ROW)
    rows[reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))] = {
      static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 1)),
      static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 2))};
  sqlite3_finalize(stmt);
  return rows;
}

std::uint64_t query_number(sqlite3* db, const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK);
  std::uint64_t n = 0;
  if (sqlite3_step(stmt) == SQLITE_ROW)
    n = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 0));
  sqlite3_finalize(stmt);
  return n;
}

file_view read_file(const std::string& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  sqlite3_busy_timeout(db, 10'000);
  file_view v;
  v.model = query_rows(db, "SELECT pid, events, last_offset FROM stream_counts");
  v.events = query_rows(db, "SELECT persistence_id, count(*), max(global_offset) FROM events "
                            "GROUP BY persistence_id");
  v.stored_offset =
    query_number(db, "SELECT \"offset\" FROM projection_offsets WHERE name = 'counts'");
  v.head = query_number(db, "SELECT coalesce(max(global_offset), 0) FROM events");
  sqlite3_close(db);
  return v;
}

std::shared_ptr<sqlite_journal> open_plain(const std::string& path) {
  auto j = sqlite_journal::open({.path = path});
  if (!j)
    FAIL(annals::render(j.error()));
  return *j;
}

std::shared_ptr<sqlite_journal> open_with_counts(const std::string& path) {
  auto j = sqlite_journal::open(
    {.path = path, .inline_projections = {{"counts", std::make_shared<stream_counts>()}}});
  if (!j)
    FAIL(annals::render(j.error()));
  return *j;
}

} // namespace

TEST_CASE("an inline projection holds every acknowledged append when the append is "
          "acknowledged, with its offset stored in the same commit",
          "[sqlite][inline]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_with_counts(path);
  REQUIRE(append(*j, "account|a", 0, {ev("opened"), ev("deposited")}));
  auto view = read_file(path);
  CHECK(view.model == std::map<std::string, model_row>{{"account|a", {2, 2}}});
  CHECK(view.stored_offset == 2);
  REQUIRE(append(*j, "account|b", 0, {ev("opened")}));
  REQUIRE(append(*j, "account|a", 2, {ev("withdrawn")}));
  view = read_file(path);
  CHECK(view.model == view.events);
  CHECK(view.model.at("account|a") == model_row{3, 4});
  CHECK(view.stored_offset == 4);
  j->close();
}

TEST_CASE("an inline projection that throws fails its append alone, naming the model and the "
          "event, and nothing of that append is written",
          "[sqlite][inline]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_with_counts(path);
  REQUIRE(append(*j, "account|a", 0, {ev("opened")}));
  // Sent together, so that they share one group commit.
  countdown done;
  caf::expected<append_result> good = caf::error{}, bad = caf::error{};
  j->append({"account|b", 0, {ev("opened")}, {}}, [&](caf::expected<append_result> r) {
    good = std::move(r);
    done.arrive();
  });
  j->append({"account|a", 1, {ev("deposited"), ev("deposited", R"({"refuse":1})")}, {}},
            [&](caf::expected<append_result> r) {
              bad = std::move(r);
              done.arrive();
            });
  REQUIRE(done.wait(2));
  REQUIRE(good);
  REQUIRE_FALSE(bad);
  CHECK(annals::is(bad.error(), journal_errc::projection_failed));
  CHECK_THAT(annals::render(bad.error()),
             Catch::Contains("inline projection 'counts' refused offset")
               && Catch::Contains("account|a seq 3") && Catch::Contains("refused")
               && Catch::Contains("nothing of the append was written"));
  CHECK(highest_seq(*j, "account|a") == std::uint64_t{1});
  auto view = read_file(path);
  CHECK(view.model == view.events);
  CHECK(view.model.at("account|a") == model_row{1, 1});
  CHECK(view.stored_offset == view.head);
  // The stream takes appends again from where it was.
  REQUIRE(append(*j, "account|a", 1, {ev("deposited")}));
  CHECK(read_file(path).model.at("account|a").events == 2);
  j->close();
}

TEST_CASE("an inline projection added to a journal that has events catches up when the journal "
          "opens, and rebuild_inline replays the whole journal into a reset model",
          "[sqlite][inline]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  {
    auto plain = open_plain(path);
    for (int i = 0; i < 700; ++i)
      REQUIRE(append(*plain, "account|s" + std::to_string(i % 7), static_cast<std::uint64_t>(i / 7),
                     {ev("deposited")}));
    plain->close();
  }
  auto j = open_with_counts(path);
  auto view = read_file(path);
  CHECK(view.head == 700);
  CHECK(view.model == view.events);
  CHECK(view.stored_offset == 700);

  // The model's rows are damaged behind the journal's back; a rebuild restores them.
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 10'000);
    run_sql(db, "UPDATE stream_counts SET events = 0");
    sqlite3_close(db);
  }
  CHECK_FALSE(read_file(path).model == view.events);
  auto rebuilt = wait_for<std::uint64_t>(
    [&](callback<std::uint64_t> cb) { j->rebuild_inline("counts", std::move(cb)); }, bound);
  REQUIRE(rebuilt);
  CHECK(*rebuilt == 700);
  view = read_file(path);
  CHECK(view.model == view.events);

  auto unknown = wait_for<std::uint64_t>(
    [&](callback<std::uint64_t> cb) { j->rebuild_inline("nope", std::move(cb)); }, bound);
  REQUIRE_FALSE(unknown);
  CHECK(annals::is(unknown.error(), journal_errc::invalid_request));
  CHECK_THAT(annals::render(unknown.error()),
             Catch::Contains("no inline projection is named 'nope'"));
  j->close();
}

TEST_CASE("inline projections are refused on a read-only journal, twice under one name, or "
          "without a model",
          "[sqlite][inline]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  open_plain(path)->close();
  auto model = std::make_shared<stream_counts>();
  auto ro = sqlite_journal::open(
    {.path = path, .read_only = true, .inline_projections = {{"counts", model}}});
  REQUIRE_FALSE(ro);
  CHECK(annals::is(ro.error(), journal_errc::invalid_request));
  CHECK_THAT(annals::render(ro.error()), Catch::Contains("read-only journal cannot keep inline"));
  auto twice = sqlite_journal::open(
    {.path = path, .inline_projections = {{"counts", model}, {"counts", model}}});
  REQUIRE_FALSE(twice);
  CHECK_THAT(annals::render(twice.error()), Catch::Contains("two inline projections are named"));
  auto none = sqlite_journal::open({.path = path, .inline_projections = {{"counts", nullptr}}});
  REQUIRE_FALSE(none);
  CHECK(annals::is(none.error(), journal_errc::invalid_request));
}

TEST_CASE("a process killed with SIGKILL while appending leaves the events, an inline model and "
          "its offset in agreement, every time",
          "[sqlite][inline][processes]") {
#if ANNALS_TEST_TSAN
  WARN("ThreadSanitizer build: the forked appender is skipped");
  return;
#endif
  temp_dir dir;
  auto path = dir.file("j.db");
  std::mt19937 rng{std::random_device{}()};
  constexpr int kills = 6;
  std::uint64_t last_head = 0;
  for (int round = 0; round < kills; ++round) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    auto pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      auto j = sqlite_journal::open(
        {.path = path,
         .durability = durability_level::normal,
         .inline_projections = {{"counts", std::make_shared<stream_counts>()}}});
      if (!j)
        ::_exit(2);
      // Four appenders, each on its own stream, one or more events per append.
      std::vector<std::thread> threads;
      for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
          auto id = "account|k" + std::to_string(t);
          auto expected = highest_seq(**j, id);
          if (!expected)
            ::_exit(3);
          auto seq = *expected;
          for (std::uint64_t n = 0;; ++n) {
            std::vector<annals::encoded_event> evs(1 + n % 3, ev("deposited"));
            auto res = append(**j, id, seq, std::move(evs));
            if (!res)
              ::_exit(4);
            seq = res->last_seq;
          }
        });
      char c = 'y';
      if (::write(fds[1], &c, 1) != 1)
        ::_exit(5);
      for (auto& t : threads)
        t.join();
      ::_exit(0);
    }
    ::close(fds[1]);
    char c = 0;
    REQUIRE(::read(fds[0], &c, 1) == 1);
    ::close(fds[0]);
    std::this_thread::sleep_for(std::chrono::milliseconds{
      std::uniform_int_distribution<int>{20, 250}(rng)}); // a random moment to kill at
    ::kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFSIGNALED(status));
    auto view = read_file(path);
    INFO("round " << round << ": head " << view.head);
    CHECK(view.head >= last_head);
    CHECK(view.model == view.events);
    CHECK(view.stored_offset == view.head);
    last_head = view.head;
  }
  CHECK(last_head > 0);
}

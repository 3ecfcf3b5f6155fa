// What each built-in home of a read model promises when the process dies between the
// model's write and the offset's: a child process projects a journal and kills itself with
// SIGKILL right after the model took event K (before the offset could be stored), several
// times at increasing K; after each death the parent reads the model and the stored offset
// as they are on disk, then a last child catches up to the head.
//
// - at least once (a handler and a `sqlite_offset_store`): every event up to the stored
//   offset is in the model, event K is in it although the offset is before K, and the next
//   run delivers K again;
// - exactly once (a SQLite read model): the model holds exactly the events up to the stored
//   offset, each once, event K not among them, and at the end every event exactly once.

#include <csignal>
#include <cstdint>
#include <fcntl.h>
#include <iterator>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include "annals/actors/offset_store.hpp"
#include "annals/actors/projection.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "runtime_fixtures.hpp"

using namespace rt;
namespace pt = annals::persistence::test;
using annals::persistence::event_record;

namespace {

constexpr std::uint64_t events_in_journal = 1200;

// Appends each event's offset as a line to a file (the model), then dies at `kill_at`.
class offset_lines : public annals::actors::projection_handler {
public:
  offset_lines(const std::string& path, std::uint64_t kill_at)
    : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644)), kill_at_(kill_at) {}
  void apply(const event_record& rec) override {
    auto line = std::to_string(rec.offset) + "\n";
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      throw std::runtime_error{"writing the model file failed"};
    if (rec.offset == kill_at_)
      ::raise(SIGKILL);
  }

private:
  int fd_;
  std::uint64_t kill_at_;
};

// Counts how often each offset was applied, in SQLite; dies at `kill_at` after its write.
class offset_counts : public annals::actors::sqlite_projection_handler {
public:
  explicit offset_counts(std::uint64_t kill_at) : kill_at_(kill_at) {}
  void create_schema(sqlite3* db) override {
    exec(db, "CREATE TABLE IF NOT EXISTS applied (\"offset\" INTEGER PRIMARY KEY, n INTEGER)");
  }
  void apply(sqlite3* db, const event_record& rec) override {
    exec(db, "INSERT INTO applied VALUES (" + std::to_string(rec.offset)
               + ", 1) ON CONFLICT(\"offset\") DO UPDATE SET n = n + 1");
    if (rec.offset == kill_at_)
      ::raise(SIGKILL);
  }
  void reset(sqlite3* db) override {
    exec(db, "DELETE FROM applied");
  }

private:
  static void exec(sqlite3* db, const std::string& sql) {
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
      throw std::runtime_error{sqlite3_errmsg(db)};
  }
  std::uint64_t kill_at_;
};

enum class home { handler_and_offset_store, sqlite_model };

// In a child process: projects the journal at `journal_path` into `home` until the head, or
// dies at `kill_at` (0: never). Exit code 0 once caught up, 1 on any failure.
int run_child(home h, const std::string& dir, const std::string& journal_path,
              std::uint64_t kill_at) {
  auto journal = annals::persistence::sqlite_journal::open_read_only(journal_path);
  if (!journal)
    return 1;
  system_config cfg;
  caf::actor_system sys{cfg};
  annals::actors::projection proj;
  if (h == home::handler_and_offset_store) {
    auto offsets = annals::actors::sqlite_offset_store::open({.path = dir + "/offsets.db"});
    if (!offsets)
      return 1;
    proj = annals::actors::spawn_projection(
      sys, *journal, std::make_shared<offset_lines>(dir + "/model.lines", kill_at),
      annals::actors::projection_options{.name = "lines", .offsets = *offsets, .page_size = 100});
  } else {
    proj = annals::actors::spawn_projection(
      sys, *journal, std::make_shared<offset_counts>(kill_at),
      annals::actors::sqlite_projection_options{
        .name = "counts", .path = dir + "/model.db", .page_size = 100});
  }
  auto done = proj.await_offset(events_in_journal, std::chrono::seconds{30});
  proj.stop();
  return done ? 0 : 1;
}

// Runs a child to its end; returns how it ended: the signal that killed it, or -exit code.
int child_outcome(home h, const std::string& dir, const std::string& journal_path,
                  std::uint64_t kill_at) {
  auto pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0)
    ::_exit(run_child(h, dir, journal_path, kill_at));
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) ? WTERMSIG(status) : -WEXITSTATUS(status);
}

std::uint64_t stored_offset(const std::string& db_path, const std::string& name) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  std::uint64_t offset = 0;
  if (sqlite3_prepare_v2(db, "SELECT \"offset\" FROM projection_offsets WHERE name = ?1", -1, &stmt,
                         nullptr)
      == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, name.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(stmt) == SQLITE_ROW)
      offset = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return offset;
}

// How often each offset is in the model.
std::map<std::uint64_t, int> model_counts(home h, const std::string& dir) {
  std::map<std::uint64_t, int> counts;
  if (h == home::handler_and_offset_store) {
    auto text = pt::slurp(dir + "/model.lines");
    std::size_t at = 0;
    while (at < text.size()) {
      auto end = text.find('\n', at);
      REQUIRE(end != std::string::npos); // no torn line
      ++counts[std::stoull(text.substr(at, end - at))];
      at = end + 1;
    }
    return counts;
  }
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((dir + "/model.db").c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT \"offset\", n FROM applied", -1, &stmt, nullptr) == SQLITE_OK)
    while (sqlite3_step(stmt) == SQLITE_ROW)
      counts[static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 0))] =
        sqlite3_column_int(stmt, 1);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return counts;
}

// A journal of `events_in_journal` events: appends of four events, each to a new stream.
void write_journal(const std::string& path) {
  auto j = annals::persistence::sqlite_journal::open({.path = path});
  REQUIRE(j);
  for (std::uint64_t i = 0; i < events_in_journal / 4; ++i)
    REQUIRE(pt::append(**j, "account|s" + std::to_string(i), 0,
                       {pt::ev("e"), pt::ev("e"), pt::ev("e"), pt::ev("e")}));
  (*j)->close();
}

// The kill points: increasing, each inside a batch of 100 (not on its last event).
constexpr std::uint64_t kill_points[] = {37, 250, 251, 618, 999};

} // namespace

TEST_CASE("an at-least-once projection killed between its model's write and its offset's "
          "delivers that event again, and loses none",
          "[projection][crash][processes]") {
#if ANNALS_TEST_TSAN
  WARN("ThreadSanitizer build: the forked projections are skipped");
  return;
#endif
  pt::temp_dir dir;
  auto dir_path = dir.path().string();
  auto journal_path = dir.file("j.db");
  write_journal(journal_path);
  std::uint64_t redelivered = 0;
  for (auto k : kill_points) {
    INFO("killed at offset " << k);
    REQUIRE(child_outcome(home::handler_and_offset_store, dir_path, journal_path, k) == SIGKILL);
    auto stored = stored_offset(dir.file("offsets.db"), "lines");
    auto model = model_counts(home::handler_and_offset_store, dir_path);
    CHECK(stored < k);          // the offset did not get past the event that was written
    CHECK(model.count(k) == 1); // the model did
    for (std::uint64_t o = 1; o <= stored; ++o)
      CHECK(model.count(o) == 1);      // nothing up to the stored offset is missing
    CHECK(model.rbegin()->first == k); // nothing after the kill point was written
  }
  REQUIRE(child_outcome(home::handler_and_offset_store, dir_path, journal_path, 0) == 0);
  CHECK(stored_offset(dir.file("offsets.db"), "lines") == events_in_journal);
  auto model = model_counts(home::handler_and_offset_store, dir_path);
  for (std::uint64_t o = 1; o <= events_in_journal; ++o) {
    REQUIRE(model.count(o) == 1);
    if (model[o] > 1)
      redelivered += static_cast<std::uint64_t>(model[o] - 1);
  }
  // Every kill point was delivered again after its death (at least once, not exactly once).
  for (auto k : kill_points)
    CHECK(model[k] >= 2);
  CHECK(redelivered >= std::size(kill_points));
}

TEST_CASE("an exactly-once SQLite projection killed between its model's write and its "
          "offset's holds exactly the events up to its stored offset, each once",
          "[projection][crash][processes]") {
#if ANNALS_TEST_TSAN
  WARN("ThreadSanitizer build: the forked projections are skipped");
  return;
#endif
  pt::temp_dir dir;
  auto dir_path = dir.path().string();
  auto journal_path = dir.file("j.db");
  write_journal(journal_path);
  for (auto k : kill_points) {
    INFO("killed at offset " << k);
    REQUIRE(child_outcome(home::sqlite_model, dir_path, journal_path, k) == SIGKILL);
    auto stored = stored_offset(dir.file("model.db"), "counts");
    auto model = model_counts(home::sqlite_model, dir_path);
    CHECK(stored < k);
    CHECK(model.count(k) == 0); // the write died with its transaction
    CHECK(model.size() == stored);
    for (const auto& [offset, n] : model) {
      CHECK(offset <= stored);
      CHECK(n == 1);
    }
  }
  REQUIRE(child_outcome(home::sqlite_model, dir_path, journal_path, 0) == 0);
  CHECK(stored_offset(dir.file("model.db"), "counts") == events_in_journal);
  auto model = model_counts(home::sqlite_model, dir_path);
  CHECK(model.size() == events_in_journal);
  for (const auto& [offset, n] : model)
    CHECK(n == 1);
}

// kill -9 against a files projection: a child process projects a journal of bank events
// into statement files and is killed, at random moments and at the sink's failpoints
// (between two model files of a batch, and between the model files and the offset); after
// every kill each file must parse line by line and be exactly the fold of its events up to
// its own header offset, and the next run must carry on to the journal's head.

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "annals/persistence/sqlite_journal.hpp"
#include "files/files_fixtures.hpp"
#include "persistence/journal_fixtures.hpp"

extern char** environ;

namespace {

/// A started child process; `wait` returns its raw wait status.
struct child {
  pid_t pid = -1;

  static child start(const std::vector<std::string>& args, const std::string& failpoint) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e)
      if (!std::string_view{*e}.starts_with("ANNALS_FILE_SINK_FAILPOINT="))
        env.emplace_back(*e);
    if (!failpoint.empty())
      env.push_back("ANNALS_FILE_SINK_FAILPOINT=" + failpoint);
    std::vector<char*> argv, envp;
    for (const auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env)
      envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    child c;
    c.pid = ::fork();
    if (c.pid == 0) {
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    REQUIRE(c.pid > 0);
    return c;
  }

  int wait() const {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
  }
};

/// Files named `.*.tmp` in `dir`.
int temporary_files(const std::string& dir) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator{dir}) {
    auto name = entry.path().filename().string();
    n += name.starts_with(".") && name.ends_with(".tmp");
  }
  return n;
}

} // namespace

TEST_CASE("files projected by a process killed at any moment are never torn or doubled, and "
          "the next run catches up to the head") {
  annals::persistence::test::temp_dir tmp;
  auto db = tmp.file("journal.db");
  auto dir = tmp.file("statements");
  auto j = annals::persistence::sqlite_journal::open(
    {.path = db, .durability = annals::persistence::durability_level::normal});
  REQUIRE(j);
  REQUIRE(files_test::write_history(**j, 200, 6000, 42).empty());
  auto records = files_test::all_records(**j);
  REQUIRE(records);
  auto head = records->back().offset;
  auto expected = files_test::statements_of(*records);
  std::vector<std::string> args{ANNALS_FILE_CRASH_CHILD, db, dir, "8"};

  // 1. Failpoints: the child ends itself between the files of a batch, or after the model
  //    files and before the offset.
  bool ahead_seen = false;
  for (std::string point : {"before_offset:1", "between_files:2", "before_offset:4",
                            "between_files:7", "before_offset:9"}) {
    INFO("failpoint " << point);
    auto status = child::start(args, point).wait();
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 86);
    REQUIRE(files_test::check_statements(dir, expected) == "");
    // The state the failpoint leaves: some file ahead of the stored offset.
    auto stored = annals::actors::read_stored_offset(dir);
    REQUIRE(stored);
    for (const auto& [name, lines] : expected) {
      auto f = annals::actors::read_model_file(dir, name);
      if (f && f->offset > *stored)
        ahead_seen = true;
    }
  }
  CHECK(ahead_seen);

  // 2. A write cut off before its rename leaves a temporary file, never part of the model;
  //    the next start removes it.
  auto status_tmp = child::start(args, "before_rename:5").wait();
  REQUIRE(WIFEXITED(status_tmp));
  REQUIRE(WEXITSTATUS(status_tmp) == 86);
  REQUIRE(files_test::check_statements(dir, expected) == "");
  CHECK(temporary_files(dir) > 0);

  // 3. SIGKILL at random moments.
  std::mt19937 rng{7};
  int killed_running = 0;
  for (int round = 0; round < 12; ++round) {
    auto c = child::start(args, "");
    std::this_thread::sleep_for(
      std::chrono::milliseconds{std::uniform_int_distribution<int>{10, 300}(rng)});
    ::kill(c.pid, SIGKILL);
    auto status = c.wait();
    if (WIFSIGNALED(status))
      ++killed_running;
    else
      REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    INFO("round " << round);
    REQUIRE(files_test::check_statements(dir, expected) == "");
  }
  WARN(killed_running << " of 12 random kills hit a running projection; stored offset "
                      << *annals::actors::read_stored_offset(dir) << " of " << head);
  CHECK(killed_running > 0);

  // 4. A run left alone reaches the head, with every file complete and no temporary file.
  auto before = annals::actors::read_stored_offset(dir);
  REQUIRE(before);
  auto t0 = std::chrono::steady_clock::now();
  auto status = child::start(args, "").wait();
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("the last run applied " << head - *before << " events (pages of 8, no fsync) in " << secs
                               << " s, process start included: "
                               << static_cast<double>(head - *before) / secs << " events/s");
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(*annals::actors::read_stored_offset(dir) == head);
  CHECK(files_test::check_statements(dir, expected) == "");
  CHECK(temporary_files(dir) == 0);
  for (const auto& [name, lines] : expected) {
    auto f = annals::actors::read_model_file(dir, name);
    REQUIRE(f);
    CHECK(f->offset == lines.back().offset);
  }
}

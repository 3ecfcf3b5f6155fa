// The owner lock of the SQLite journal: one writer per file, in this process or another;
// readers are not owners; the lock ends with the journal or the process, however it ends.

#include <csignal>
#include <filesystem>

#include <sys/wait.h>
#include <unistd.h>

#include "persistence/journal_fixtures.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<sqlite_journal> open_journal(sqlite_options opts) {
  auto res = sqlite_journal::open(std::move(opts));
  if (!res)
    FAIL(render(res.error()));
  return *res;
}

/// A child process that owns the journal at `path` until it is killed.
class owner_process {
public:
  explicit owner_process(const std::string& path) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::close(fds[0]);
      auto j = sqlite_journal::open({.path = path});
      char c = j ? 'y' : 'n';
      if (::write(fds[1], &c, 1) != 1 || !j)
        ::_exit(1);
      for (;;)
        ::pause();
    }
    ::close(fds[1]);
    char c = 0;
    auto n = ::read(fds[0], &c, 1);
    ::close(fds[0]);
    REQUIRE(n == 1);
    REQUIRE(c == 'y');
  }
  owner_process(const owner_process&) = delete;
  owner_process& operator=(const owner_process&) = delete;
  ~owner_process() {
    kill();
  }
  pid_t pid() const {
    return pid_;
  }
  /// Kills it with SIGKILL (nothing of it runs after) and waits for its end.
  void kill() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

private:
  pid_t pid_ = -1;
};

} // namespace

TEST_CASE("a second writer of one journal file is refused with owned, naming the file and "
          "its owner, while the first keeps writing",
          "[sqlite][owner]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto first = open_journal({.path = path});
  REQUIRE(append(*first, "acc", 0, {ev("opened")}));
  auto second = sqlite_journal::open({.path = path});
  REQUIRE_FALSE(second);
  CHECK(is(second.error(), journal_errc::owned));
  auto text = render(second.error());
  CHECK_THAT(text, Catch::StartsWith("journal.owned: " + path + " is owned by this process"));
  CHECK_THAT(text, Catch::Contains(path + ".owner"));
  CHECK_THAT(text, Catch::Contains("networked journal"));
  REQUIRE(append(*first, "acc", 1, {ev("deposited")}));
  CHECK(head_offset(*first) == std::uint64_t{2});
  first->close();
}

TEST_CASE("closing a journal releases its owner lock: the file opens again at once and no "
          "lock file stays behind",
          "[sqlite][owner]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto first = open_journal({.path = path});
  CHECK(fs::exists(path + ".owner"));
  REQUIRE(append(*first, "acc", 0, {ev("opened")}));
  first->close();
  CHECK_FALSE(fs::exists(path + ".owner"));
  auto again = open_journal({.path = path});
  CHECK(highest_seq(*again, "acc") == std::uint64_t{1});
  again.reset(); // the destructor closes too
  CHECK_FALSE(fs::exists(path + ".owner"));
  auto third = open_journal({.path = path});
  third->close();
}

TEST_CASE("a read-only journal is no owner: it opens beside the writer, and a writer opens "
          "beside it",
          "[sqlite][owner]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  {
    auto writer = open_journal({.path = path});
    REQUIRE(append(*writer, "acc", 0, {ev("opened")}));
    auto reader = sqlite_journal::open_read_only(path);
    REQUIRE(reader);
    CHECK(highest_seq(**reader, "acc") == std::uint64_t{1});
    (*reader)->close();
    writer->close();
  }
  auto reader = sqlite_journal::open_read_only(path);
  REQUIRE(reader);
  auto writer = open_journal({.path = path});
  REQUIRE(append(*writer, "acc", 1, {ev("deposited")}));
  CHECK(highest_seq(**reader, "acc") == std::uint64_t{2});
  writer->close();
  (*reader)->close();
}

TEST_CASE("a journal opened with owner_lock off neither takes nor checks the lock",
          "[sqlite][owner]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto owner = open_journal({.path = path});
  auto bypass = open_journal({.path = path, .owner_lock = false});
  REQUIRE(append(*bypass, "acc", 0, {ev("opened")}));
  bypass->close();
  // The owner still holds its lock.
  auto refused = sqlite_journal::open({.path = path});
  REQUIRE_FALSE(refused);
  CHECK(is(refused.error(), journal_errc::owned));
  owner->close();
}

TEST_CASE("an open that fails after taking the owner lock releases it", "[sqlite][owner]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  // One page cannot hold the schema: creating it fails after the lock was taken.
  auto res = sqlite_journal::open({.path = path, .max_page_count = 1});
  REQUIRE_FALSE(res);
  CHECK_FALSE(is(res.error(), journal_errc::owned));
  CHECK_FALSE(fs::exists(path + ".owner"));
}

TEST_CASE("another process that owns the journal is named in the refusal, and its kill -9 "
          "releases the lock at once",
          "[sqlite][owner][processes]") {
#if ANNALS_TEST_TSAN
  // The child starts the journal's threads after a fork, which TSan refuses to follow; the
  // service tests cover another process too (tests/service/owner_test.cpp).
  WARN("ThreadSanitizer build: the forked owner is skipped");
  return;
#endif
  temp_dir dir;
  auto path = dir.file("j.db");
  open_journal({.path = path})->close();
  owner_process child{path};
  auto refused = sqlite_journal::open({.path = path});
  REQUIRE_FALSE(refused);
  CHECK(is(refused.error(), journal_errc::owned));
  CHECK_THAT(render(refused.error()), Catch::Contains("(pid " + std::to_string(child.pid())));
  child.kill();
  // The lock file stays behind (nothing of the child ran after the signal); its lock does not.
  CHECK(fs::exists(path + ".owner"));
  auto next = open_journal({.path = path});
  REQUIRE(append(*next, "acc", 0, {ev("opened")}));
  next->close();
}

// The kill -9 test of a Redis projection's process: a child process
// (annals_redis_projector) projects a SQLite journal into Redis and is SIGKILLed at random
// moments, six times; after each kill the model equals the fold of the journal's events up
// to the offset stored with it (each event once, none skipped), and the last run catches up
// to the head. The kill moments are random offsets the stored offset must reach first
// (polled in Redis, bounded), so every kill lands while the child is writing batches.

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "annals/persistence/sqlite_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "redis/recording_model.hpp"
#include "redis/redis_server.hpp"

#ifndef ANNALS_REDIS_PROJECTOR_BINARY
#error "ANNALS_REDIS_PROJECTOR_BINARY must name the annals_redis_projector executable"
#endif

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

/// The projector as a child process, SIGKILLed (and reaped) by the destructor if it runs.
class projector {
public:
  projector(const std::string& journal, const std::string& url, const std::string& log) {
    std::vector<std::string> args{ANNALS_REDIS_PROJECTOR_BINARY, journal, url, "10"};
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    auto parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        ::_exit(126);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fd);
    REQUIRE(pid_ > 0);
  }
  ~projector() {
    kill9();
  }
  projector(const projector&) = delete;
  projector& operator=(const projector&) = delete;

  void kill9() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  /// The exit code once the child has ended, or -1 while it runs.
  int exited() {
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return pid_ > 0 ? -1 : code_;
  }

private:
  pid_t pid_ = -1;
  int code_ = -1;
};

} // namespace

TEST_CASE("a Redis projection's process killed with SIGKILL at random moments: the model is "
          "always the fold up to its offset, and catches up",
          "[redis][projection][kill]") {
  redis_server server;
  temp_dir dir;
  auto path = dir.file("journal.db");
  auto log = dir.file("projector.log");
  constexpr int events = 12'000;
  std::vector<std::uint64_t> offsets;
  {
    auto j = sqlite_journal::open({.path = path});
    REQUIRE(j);
    std::uint64_t seqs[7] = {};
    for (int i = 0; i < events / 20; ++i) {
      std::vector<encoded_event> batch;
      for (int k = 0; k < 20; ++k)
        batch.push_back(ev("test.happened", R"({"n":1})"));
      auto res = append(**j, "s" + std::to_string(i % 7), seqs[i % 7], batch);
      REQUIRE(res);
      seqs[i % 7] = res->last_seq;
    }
    auto all = read_all(**j);
    REQUIRE(all);
    for (const auto& r : *all)
      offsets.push_back(r.offset);
    (*j)->close();
  }
  REQUIRE(offsets.size() == events);
  auto c = server.client();
  // The model must be the fold of exactly the journal's events up to its offset.
  auto check_model = [&](const recorded& m) {
    std::vector<std::uint64_t> expected;
    std::uint64_t sum = 0;
    for (auto o : offsets)
      if (o <= m.offset) {
        expected.push_back(o);
        sum += o;
      }
    CHECK(m.log == expected);
    CHECK(m.sum == sum);
  };

  std::mt19937 rng{std::random_device{}()};
  std::uint64_t stored = 0;
  int mid_stream = 0;
  constexpr int kills = 6;
  for (int k = 1; k <= kills; ++k) {
    auto upper = offsets.back() * k / (kills + 1);
    auto target = std::uniform_int_distribution<std::uint64_t>{stored + 1, upper}(rng);
    projector child{path, server.url(), log};
    auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
      auto m = read_recorded(c, "seen:");
      if (m.offset >= target)
        break;
      INFO("projector log:\n" << slurp(log));
      REQUIRE(child.exited() == -1);
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
    child.kill9();
    auto m = read_recorded(c, "seen:");
    INFO("kill " << k << " at stored offset " << m.offset << " (target " << target << ")");
    CHECK(m.offset >= target);
    CHECK(m.offset >= stored);
    check_model(m);
    if (m.offset < offsets.back())
      ++mid_stream;
    stored = m.offset;
  }
  CHECK(mid_stream >= 1);
  // The last run catches up to the head and ends.
  projector last{path, server.url(), log};
  auto deadline = std::chrono::steady_clock::now() + bound;
  int code = -1;
  while ((code = last.exited()) == -1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  INFO("projector log:\n" << slurp(log));
  REQUIRE(code == 0);
  auto m = read_recorded(c, "seen:");
  CHECK(m.offset == offsets.back());
  check_model(m);
}

// The Xapian sink under kill -9: a child process (annals_xapian_projector) projects a
// SQLite journal into an index in small batches and is SIGKILLed at random moments; after
// each kill the index must hold exactly the fold of the journal up to the offset stored in
// it (nothing doubled, nothing missing, no document of an event after it), and at the end
// a last run catches up to the head. More events are appended between the runs, so every
// run has work. While the first child runs, a second one on the same index must fail at
// start, naming the directory.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "account/account.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "xapian/account_docs.hpp"

extern char** environ;

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

/// The projector as a child process, its standard output and error on one pipe.
class projector {
public:
  projector(const std::string& journal, const std::string& index, std::size_t page_size,
            std::optional<std::uint64_t> until = {}) {
    int out[2];
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
    std::vector<std::string> args{ANNALS_XAPIAN_PROJECTOR_BINARY, journal, index,
                                  std::to_string(page_size)};
    if (until)
      args.push_back(std::to_string(*until));
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    auto rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    out_ = out[0];
    REQUIRE(rc == 0);
  }
  ~projector() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    ::close(out_);
  }

  /// Waits (at most `bound`) for the line "started"; false if the child ended first.
  bool started() {
    return read_until(
      [](const std::string& text) { return text.find("started\n") != std::string::npos; });
  }

  /// Everything the child wrote until it closed its output (at most `bound`).
  std::string output() {
    read_until([](const std::string&) { return false; });
    return text_;
  }

  void kill9() {
    ::kill(pid_, SIGKILL);
  }

  /// The child's wait status.
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

private:
  // Reads the child's output into `text_` until `done(text_)`, the end of the output or
  // the bound; true for `done`.
  template <class Done>
  bool read_until(Done done) {
    auto deadline = std::chrono::steady_clock::now() + bound;
    while (!done(text_)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        return false;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        return false;
      char buf[256];
      auto n = ::read(out_, buf, sizeof buf);
      if (n <= 0)
        return false;
      text_.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  std::string text_;
};

} // namespace

TEST_CASE("a Xapian index killed -9 at random moments always equals the fold of the journal "
          "up to its stored offset, and catches up to the head",
          "[xapian][crash]") {
  temp_dir dir;
  auto path = dir.file("journal.db");
  auto index = dir.file("index");
  auto j = sqlite_journal::open({.path = path, .durability = durability_level::normal});
  if (!j)
    FAIL(render(j.error()));
  auto& journal = **j;
  std::mt19937_64 rng{std::random_device{}()};
  auto seed = rng();
  INFO("seed " << seed);
  rng.seed(seed);

  // Accounts that are opened, receive deposits and withdrawals, and now and then close.
  std::map<std::string, std::uint64_t> seqs;
  std::vector<std::string> open_accounts;
  int next_account = 0;
  auto write_events = [&](int n) {
    for (int i = 0; i < n; ++i) {
      std::string id;
      encoded_event e;
      auto pick = rng() % 100;
      if (open_accounts.size() < 5 || pick < 10) {
        id = "acc-" + std::to_string(next_account++);
        e = bank::account::codec_type::encode(bank::opened{"Owner " + id});
        open_accounts.push_back(id);
      } else {
        auto k = rng() % open_accounts.size();
        id = open_accounts[k];
        if (pick < 13) {
          e = bank::account::codec_type::encode(bank::closed{});
          open_accounts.erase(open_accounts.begin() + static_cast<std::ptrdiff_t>(k));
        } else if (pick < 60) {
          e = bank::account::codec_type::encode(
            bank::deposited{static_cast<std::int64_t>(rng() % 1000 + 1)});
        } else {
          e = bank::account::codec_type::encode(
            bank::withdrawn{static_cast<std::int64_t>(rng() % 100 + 1)});
        }
      }
      auto pid = "account|" + id;
      auto res = append(journal, pid, seqs[pid], {std::move(e)});
      if (!res)
        FAIL("append to " << pid << " failed: " << render(res.error()));
      seqs[pid] = res->last_seq;
    }
  };

  // The index equals the fold up to its stored offset.
  auto check = [&](const std::string& when) -> std::uint64_t {
    auto st = xapian_test::read_index(index, "docs");
    auto all = read_all(journal);
    REQUIRE(all);
    auto expected = xapian_test::fold_records(*all, st.offset);
    INFO(when << ": stored offset " << st.offset);
    CHECK(st.doc_count == expected.size());
    for (const auto& [pid, doc] : expected) {
      auto it = st.docs.find(pid);
      INFO(pid << " expected " << xapian_test::describe(doc));
      REQUIRE(it != st.docs.end());
      INFO("found " << xapian_test::describe(it->second));
      CHECK(it->second == doc);
    }
    CHECK(st.docs.size() == expected.size());
    return st.offset;
  };

  constexpr int kills = 6;
  constexpr std::size_t page_size = 8; // a Xapian commit (with its fsyncs) per 8 events
  write_events(1500);
  std::uint64_t last = 0;
  int mid_way = 0; // kills that left the index strictly between its start and the head
  for (int k = 1; k <= kills; ++k) {
    auto head = head_offset(journal);
    REQUIRE(head);
    {
      projector child{path, index, page_size};
      REQUIRE(child.started());
      if (k == 1) { // a second process on the same index fails at start, naming it
        projector second{path, index, page_size};
        auto out = second.output();
        auto st = second.wait();
        CHECK(WIFEXITED(st));
        CHECK(WEXITSTATUS(st) == 1);
        CHECK_THAT(out, Catch::Contains(index) && Catch::Contains("locked by another writer"));
      }
      // The kill moment is what is random here: somewhere in the catch-up, or after it.
      std::this_thread::sleep_for(std::chrono::milliseconds{20 + rng() % 400});
      child.kill9();
      auto status = child.wait();
      CHECK(WIFSIGNALED(status));
    }
    auto stored = check("after kill " + std::to_string(k));
    CHECK(stored >= last); // a kill never takes back a commit
    if (stored > last && stored < *head)
      ++mid_way;
    last = stored;
    write_events(300);
  }
  auto head = head_offset(journal);
  REQUIRE(head);
  projector final_run{path, index, page_size, *head};
  auto status = final_run.wait();
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(check("after the final run") == *head);
  WARN(mid_way << " of " << kills << " kills landed during a catch-up");
}

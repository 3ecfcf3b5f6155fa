// Faults under the aggregate runtime, through a real host on a real SQLite journal: a full
// disk, write and fsync errors, a journal slower than the command timeout, and two
// processes writing one account through one journal file. In each case the caller gets
// the error, the aggregate never serves state that the journal lacks (its answers equal
// the fold of the journal's events), and commands succeed again once the fault is gone.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>

#include <boost/describe.hpp>
#include <boost/json.hpp>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "persistence/journal_fixtures.hpp"
#include "persistence/vfs_shim.hpp"
#include "runtime_fixtures.hpp"

extern char** environ;

using namespace rt;
using annals::actors::host;
using annals::test::fault_vfs;
using annals::test::io_fault;
using bank::account;
using view = bank::account_view;
namespace pt = annals::persistence::test;

namespace ledger_ns {

// An aggregate whose one command persists three events at once, each carrying a memo of
// the requested size: all three are stored or none.
struct post {
  std::int64_t cents;
  std::size_t memo_bytes;
};
struct get_total {};

struct posted {
  static constexpr auto name = "test.posted";
  std::int64_t cents;
  std::string memo;
};
BOOST_DESCRIBE_STRUCT(posted, (), (cents, memo))

struct ledger_state {
  std::int64_t total = 0;
  std::uint64_t entries = 0;
  void apply(const posted& e) {
    total += e.cents;
    ++entries;
  }
};

class ledger : public annals::aggregate<ledger_state, posted> {
public:
  static constexpr auto name = "ledger";

  annals::task<std::int64_t> handle(post cmd) {
    // Named first: GCC 12 destroys an aggregate temporary that owns memory twice when it
    // is created inside a co_await expression.
    posted a{cmd.cents, std::string(cmd.memo_bytes, 'a')};
    posted b{cmd.cents, std::string(cmd.memo_bytes, 'b')};
    posted c{cmd.cents, std::string(cmd.memo_bytes, 'c')};
    co_await persist(a, b, c);
    co_return state().total;
  }
  caf::expected<std::int64_t> handle(get_total) const {
    return state().total;
  }
};

} // namespace ledger_ns

using ledger_ns::ledger;

namespace {

std::shared_ptr<ap::sqlite_journal> open_sqlite(const std::string& path) {
  auto res = ap::sqlite_journal::open({.path = path});
  if (!res)
    FAIL(annals::render(res.error()));
  return *res;
}

std::uint64_t page_limit(ap::sqlite_journal& j, std::uint64_t pages) {
  auto res = ap::wait_for<std::uint64_t>(
    [&](ap::callback<std::uint64_t> done) { j.set_max_page_count(pages, std::move(done)); }, 30s);
  REQUIRE(res);
  return *res;
}

std::int64_t cents_of(const ap::event_record& e) {
  return boost::json::parse(e.payload).as_object().at("cents").to_number<std::int64_t>();
}

// What an account's events fold to, read from the journal itself.
struct folded {
  std::int64_t balance = 0;
  std::uint64_t version = 0;
  std::size_t deposits = 0;
};

folded fold_account(ap::journal& j, const std::string& id) {
  folded f;
  for (auto& e : stream(j, "account|" + id)) {
    if (e.name == "bank.deposited") {
      f.balance += cents_of(e);
      ++f.deposits;
    } else if (e.name == "bank.withdrawn") {
      f.balance -= cents_of(e);
    }
    f.version = e.seq;
  }
  return f;
}

struct folded_ledger {
  std::int64_t total = 0;
  std::uint64_t entries = 0;
};

folded_ledger fold_ledger(ap::journal& j, const std::string& id) {
  folded_ledger f;
  for (auto& e : stream(j, "ledger|" + id)) {
    f.total += cents_of(e);
    f.entries = e.seq;
  }
  return f;
}

// The account as the aggregate serves it equals the fold of the journal's events.
void check_account_matches_journal(host& h, ap::journal& j, const std::string& id) {
  auto served = h.ask<account>(id, bank::get_account{});
  REQUIRE(served);
  auto f = fold_account(j, id);
  INFO("account " << id << ": served balance " << served->balance << " version " << served->version
                  << ", journal balance " << f.balance << " version " << f.version);
  CHECK(served->balance == f.balance);
  CHECK(served->version == f.version);
}

void check_ledger_matches_journal(host& h, ap::journal& j, const std::string& id) {
  auto served = h.ask<ledger>(id, ledger_ns::get_total{});
  REQUIRE(served);
  auto f = fold_ledger(j, id);
  CHECK(*served == f.total);
  // Every post stores three events or none.
  CHECK(f.entries % 3 == 0);
}

// A second host on the same journal recovers the account from the journal alone.
void check_recovery_matches_journal(caf::actor_system& sys, ap::journal_ptr j,
                                    ap::snapshot_store_ptr snapshots, const std::string& id) {
  host fresh{sys, j, std::move(snapshots), {.warn = [](std::string_view) {}}};
  REQUIRE_FALSE(fresh.register_aggregate<account>({.snapshot_every = 4}));
  check_account_matches_journal(fresh, *j, id);
}

// Forwards to another journal. While stalled, appends (and, if asked, stream reads) wait
// until `resume` runs them, or until `resume_dropping_appends` answers the held appends
// with an error without storing them; `wait_finished` waits until the answers to every
// released operation have been delivered.
class stalling_journal final : public proxy_journal {
public:
  explicit stalling_journal(ap::journal_ptr inner) : proxy_journal(std::move(inner)) {}

  void stall(bool appends, bool reads) {
    std::lock_guard guard{mtx_};
    stall_appends_ = appends;
    stall_reads_ = reads;
  }

  // Waits until at least `n` operations are held; false if `bound` passes first.
  bool wait_held(std::size_t n, std::chrono::milliseconds bound = 30s) {
    std::unique_lock lk{mtx_};
    return cv_.wait_for(lk, bound, [&] { return held_.size() >= n; });
  }

  void resume() {
    release(caf::error{});
  }

  void resume_dropping_appends(caf::error err) {
    release(std::move(err));
  }

  // Waits until the callback of every released operation has returned.
  bool wait_finished(std::chrono::milliseconds bound = 30s) {
    std::unique_lock lk{mtx_};
    return cv_.wait_for(lk, bound, [&] { return running_ == 0; });
  }

  void append(ap::append_request req, ap::callback<ap::append_result> done) override {
    auto shared_req = std::make_shared<ap::append_request>(std::move(req));
    hold_or_run(
      true,
      [this, shared_req](ap::callback<ap::append_result> cb) {
        inner_->append(std::move(*shared_req), std::move(cb));
      },
      std::move(done));
  }
  void read_stream(std::string pid, std::uint64_t from, std::uint64_t to, std::size_t max,
                   ap::callback<std::vector<ap::event_record>> done) override {
    hold_or_run(
      false,
      [this, pid, from, to, max](ap::callback<std::vector<ap::event_record>> cb) {
        inner_->read_stream(pid, from, to, max, std::move(cb));
      },
      std::move(done));
  }

private:
  struct held_op {
    bool is_append;
    std::function<void()> run;                 // forwards to the inner journal
    std::function<void(caf::error)> fail_with; // answers without forwarding
  };

  template <class T, class Start>
  void hold_or_run(bool is_append, Start start, ap::callback<T> done) {
    // The answer counts as delivered once the caller's callback has returned.
    auto finish = [this, done](caf::expected<T> res) {
      done(std::move(res));
      std::lock_guard guard{mtx_};
      --running_;
      cv_.notify_all();
    };
    {
      std::lock_guard guard{mtx_};
      ++running_;
      if (is_append ? stall_appends_ : stall_reads_) {
        held_.push_back({is_append, [start, finish]() mutable { start(finish); },
                         [finish](caf::error err) mutable { finish(std::move(err)); }});
        cv_.notify_all();
        return;
      }
    }
    start(finish);
  }

  void release(caf::error drop_appends) {
    std::deque<held_op> run;
    {
      std::lock_guard guard{mtx_};
      stall_appends_ = false;
      stall_reads_ = false;
      run.swap(held_);
    }
    for (auto& op : run) {
      if (op.is_append && drop_appends)
        op.fail_with(drop_appends);
      else
        op.run();
    }
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  bool stall_appends_ = false;
  bool stall_reads_ = false;
  std::deque<held_op> held_;
  std::size_t running_ = 0; // operations whose callback has not returned yet
};

// A child process with a pipe to its standard input and one from its standard output.
class child_process {
public:
  explicit child_process(const std::vector<std::string>& argv) {
    int in[2];
    int out[2];
    REQUIRE(pipe2(in, O_CLOEXEC) == 0);
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    auto rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    to_child_ = in[1];
    from_child_ = out[0];
    REQUIRE(rc == 0);
  }
  ~child_process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    ::close(to_child_);
    ::close(from_child_);
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  // False if the child cannot take it (it has ended): the write then fails with EPIPE
  // instead of raising SIGPIPE in this process.
  bool send(const std::string& text) {
    auto old = ::signal(SIGPIPE, SIG_IGN);
    auto n = ::write(to_child_, text.data(), text.size());
    ::signal(SIGPIPE, old);
    return n == static_cast<ssize_t>(text.size());
  }

  // The next line of output; nothing if the output ended or `deadline` passed first.
  std::optional<std::string> read_line(std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        auto line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      if (eof_ || !fill(deadline))
        return std::nullopt;
    }
  }

  // Waits for the process to end; its exit code, or nothing if `deadline` passed first.
  std::optional<int> wait(std::chrono::steady_clock::time_point deadline) {
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      auto r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      // Output ends when the process does: block on it instead of polling waitpid.
      if (!eof_)
        fill(std::min(deadline, std::chrono::steady_clock::now() + 100ms));
      else
        ::poll(nullptr, 0, 10);
    }
    return std::nullopt;
  }

private:
  bool fill(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return false;
    pollfd p{from_child_, POLLIN, 0};
    auto r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r <= 0)
      return false;
    char buf[4096];
    auto n = ::read(from_child_, buf, sizeof(buf));
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buffer_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int to_child_ = -1;
  int from_child_ = -1;
  std::string buffer_;
  bool eof_ = false;
  bool exited_ = false;
};

std::map<std::string, long long> parse_counters(const std::string& line) {
  std::map<std::string, long long> result;
  std::istringstream in{line};
  std::string field;
  while (in >> field) {
    auto eq = field.find('=');
    if (eq != std::string::npos)
      result[field.substr(0, eq)] = std::stoll(field.substr(eq + 1));
  }
  return result;
}

} // namespace

TEST_CASE("on a full disk commands fail with journal.disk_full, aggregates serve only what the "
          "journal holds, and commands work again once there is space",
          "[faults][runtime]") {
  pt::temp_dir dir;
  auto journal = open_sqlite(dir.file("j.db"));
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    std::mutex warn_mtx;
    std::vector<std::string> warnings;
    host h{sys, journal, journal->snapshots(), {.warn = [&](std::string_view w) {
             std::lock_guard guard{warn_mtx};
             warnings.emplace_back(w);
           }}};
    REQUIRE_FALSE(h.register_aggregate<account>({.snapshot_every = 4}));
    REQUIRE_FALSE(h.register_aggregate<ledger>());
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    REQUIRE(h.ask<account>("acc", bank::deposit{100}));
    REQUIRE(h.ask<ledger>("led", ledger_ns::post{1, 10}));
    page_limit(*journal, 1); // clamped to the file's current size: no page can be added

    // Three-event posts with large memos until one does not fit.
    caf::error post_failure;
    for (int i = 0; i < 200 && !post_failure; ++i) {
      auto r = h.ask<ledger>("led", ledger_ns::post{1, 1500});
      if (!r)
        post_failure = r.error();
    }
    REQUIRE(post_failure);
    CHECK(annals::is(post_failure, ap::journal_errc::disk_full));
    CHECK_THAT(annals::render(post_failure), Catch::StartsWith("journal.disk_full: appending seq ")
                                               && Catch::Contains("to persistence id ledger|led")
                                               && Catch::EndsWith("database or disk is full"));
    check_ledger_matches_journal(h, *journal, "led");

    // Then small deposits until the last free bytes are used up.
    std::int64_t acknowledged = 100;
    caf::error deposit_failure;
    for (int i = 1; i <= 5000 && !deposit_failure; ++i) {
      auto r = h.ask<account>("acc", bank::deposit{i});
      if (r) {
        acknowledged += i;
        CHECK(r->balance == acknowledged);
      } else {
        deposit_failure = r.error();
      }
    }
    REQUIRE(deposit_failure);
    CHECK(annals::is(deposit_failure, ap::journal_errc::disk_full));
    CHECK_THAT(annals::render(deposit_failure),
               Catch::Contains("to persistence id account|acc") && Catch::Contains("full"));
    check_account_matches_journal(h, *journal, "acc");
    CHECK(fold_account(*journal, "acc").balance == acknowledged);
    // Still full: the next deposit fails the same way and changes nothing.
    auto again = h.ask<account>("acc", bank::deposit{1});
    REQUIRE_FALSE(again);
    CHECK(annals::is(again.error(), ap::journal_errc::disk_full));
    check_account_matches_journal(h, *journal, "acc");
    check_recovery_matches_journal(sys, journal, journal->snapshots(), "acc");

    page_limit(*journal, 1'000'000);
    auto healed = h.ask<account>("acc", bank::deposit{7});
    REQUIRE(healed);
    CHECK(healed->balance == acknowledged + 7);
    auto posted = h.ask<ledger>("led", ledger_ns::post{5, 1500});
    REQUIRE(posted);
    check_account_matches_journal(h, *journal, "acc");
    check_ledger_matches_journal(h, *journal, "led");
    check_recovery_matches_journal(sys, journal, journal->snapshots(), "acc");
    // Snapshot saves that hit the full disk were only warned about.
    std::lock_guard guard{warn_mtx};
    for (const auto& w : warnings)
      CHECK_THAT(w, Catch::StartsWith("snapshot of account|acc not written: journal.disk_full"));
  }
  journal->close();
}

TEST_CASE("a write or fsync error fails the command with journal.storage_error, the aggregate "
          "serves only what the journal holds, and commands work again once the fault clears",
          "[faults][runtime][io]") {
  pt::temp_dir dir;
  fault_vfs vfs{dir.path().string()};
  io_fault kind = io_fault::none;
  SECTION("writes fail") {
    kind = io_fault::write;
  }
  SECTION("fsync fails") {
    kind = io_fault::sync;
  }
  auto path = dir.file("j.db");
  auto journal = open_sqlite(path);
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal, nullptr};
    REQUIRE_FALSE(h.register_aggregate<account>());
    REQUIRE_FALSE(h.register_aggregate<ledger>());
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    REQUIRE(h.ask<account>("acc", bank::deposit{100}));
    REQUIRE(h.ask<ledger>("led", ledger_ns::post{1, 100}));
    vfs.arm(kind);
    auto failed = h.ask<account>("acc", bank::deposit{50});
    REQUIRE_FALSE(failed);
    CHECK(annals::is(failed.error(), ap::journal_errc::storage_error));
    // The cause names the system call, and says the commit's outcome is unknown: the
    // commit record may be in the WAL already, so the caller retries with its key.
    CHECK_THAT(annals::render(failed.error()),
               Catch::StartsWith("journal.storage_error: persistence id account|acc: committing ("
                                 + path + "): disk I/O error (")
                 && Catch::Contains("the outcome of this commit is unknown"));
    auto failed_post = h.ask<ledger>("led", ledger_ns::post{1, 5000});
    REQUIRE_FALSE(failed_post);
    CHECK(annals::is(failed_post.error(), ap::journal_errc::storage_error));
    CHECK(vfs.failed_writes() + vfs.failed_syncs() >= 2);
    // Reads are unaffected: the aggregates answer, with exactly what the journal holds.
    check_account_matches_journal(h, *journal, "acc");
    check_ledger_matches_journal(h, *journal, "led");
    CHECK(fold_account(*journal, "acc").balance == 100);
    vfs.arm(io_fault::none);
    auto healed = h.ask<account>("acc", bank::deposit{25});
    REQUIRE(healed);
    CHECK(healed->balance == 125);
    CHECK(healed->version == 3);
    REQUIRE(h.ask<ledger>("led", ledger_ns::post{2, 5000}));
    check_account_matches_journal(h, *journal, "acc");
    check_ledger_matches_journal(h, *journal, "led");
    check_recovery_matches_journal(sys, journal, nullptr, "acc");
  }
  journal->close();
  CHECK(vfs.open_files() == 0);
}

TEST_CASE("a stalled append fails the command with annals.timeout, the aggregate applies "
          "nothing it was not told was committed and converges on the journal, whether or not "
          "the late append lands",
          "[faults][runtime][stall]") {
  pt::temp_dir dir;
  auto sqlite = open_sqlite(dir.file("j.db"));
  auto journal = std::make_shared<stalling_journal>(sqlite);
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>({.journal_timeout = 200ms}));
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    REQUIRE(h.ask<account>("acc", bank::deposit{100}));
    journal->stall(true, false);
    auto timed_out = h.ask<account>("acc", bank::deposit{40});
    REQUIRE_FALSE(timed_out);
    CHECK(annals::is(timed_out.error(), annals::errc::timeout));
    CHECK(annals::render(timed_out.error())
          == "annals.timeout: the journal did not answer within 200 ms for account|acc");
    REQUIRE(journal->wait_held(1));
    // While the append is held, the journal lacks it, and so does the aggregate.
    check_account_matches_journal(h, *sqlite, "acc");
    CHECK(fold_account(*sqlite, "acc").balance == 100);
    std::int64_t landed = 0;
    SECTION("the late append never lands") {
      journal->resume_dropping_appends(
        annals::make_error(ap::journal_errc::storage_error, "the write was lost"));
    }
    SECTION("the late append lands") {
      journal->resume();
      landed = 40;
    }
    REQUIRE(journal->wait_finished());
    CHECK(fold_account(*sqlite, "acc").balance == 100 + landed);
    // The next write either fits the journal or detects the late append as a conflict,
    // after which the aggregate has re-read its tail and the retry fits.
    auto next = h.ask<account>("acc", bank::deposit{2});
    if (!next) {
      CHECK(landed == 40);
      CHECK(annals::is(next.error(), ap::journal_errc::conflict));
      next = h.ask<account>("acc", bank::deposit{2});
    }
    REQUIRE(next);
    CHECK(next->balance == 102 + landed);
    check_account_matches_journal(h, *sqlite, "acc");
    check_recovery_matches_journal(sys, sqlite, nullptr, "acc");
  }
  sqlite->close();
}

TEST_CASE("once a stalled append has landed late, the aggregate serves it without waiting for "
          "another write",
          "[faults][runtime][stall]") {
  pt::temp_dir dir;
  auto sqlite = open_sqlite(dir.file("j.db"));
  auto journal = std::make_shared<stalling_journal>(sqlite);
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>({.journal_timeout = 200ms}));
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    REQUIRE(h.ask<account>("acc", bank::deposit{100}));
    journal->stall(true, false);
    auto timed_out = h.ask<account>("acc", bank::deposit{40});
    REQUIRE_FALSE(timed_out);
    CHECK(annals::is(timed_out.error(), annals::errc::timeout));
    journal->resume();
    // The late answer has reached the aggregate's mailbox before the next command.
    REQUIRE(journal->wait_finished());
    REQUIRE(fold_account(*sqlite, "acc").balance == 140);
    check_account_matches_journal(h, *sqlite, "acc");
  }
  sqlite->close();
}

TEST_CASE("after the whole journal stalled (appends and reads), the aggregate serves commands "
          "again once the journal answers",
          "[faults][runtime][stall]") {
  pt::temp_dir dir;
  auto sqlite = open_sqlite(dir.file("j.db"));
  auto journal = std::make_shared<stalling_journal>(sqlite);
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal, nullptr, {.warn = [](std::string_view) {}}};
    REQUIRE_FALSE(h.register_aggregate<account>({.journal_timeout = 200ms}));
    REQUIRE(h.ask<account>("acc", bank::open{"Ada"}));
    REQUIRE(h.ask<account>("acc", bank::deposit{100}));
    journal->stall(true, true);
    auto timed_out = h.ask<account>("acc", bank::deposit{40});
    REQUIRE_FALSE(timed_out);
    CHECK(annals::is(timed_out.error(), annals::errc::timeout));
    // The aggregate re-reads its tail after the failed append; that read is held as well.
    REQUIRE(journal->wait_held(2));
    auto during = h.ask<account>("acc", bank::get_balance{});
    REQUIRE_FALSE(during);
    CHECK(annals::is(during.error(), annals::errc::timeout));
    journal->resume();
    REQUIRE(journal->wait_finished());
    REQUIRE(fold_account(*sqlite, "acc").balance == 140);
    auto after = h.ask<account>("acc", bank::get_account{});
    INFO((after ? std::string{"served"} : annals::render(after.error())));
    REQUIRE(after);
    check_account_matches_journal(h, *sqlite, "acc");
    auto next = h.ask<account>("acc", bank::deposit{1});
    REQUIRE(next);
    CHECK(next->balance == 141);
  }
  sqlite->close();
}

TEST_CASE("two processes writing one account through one journal file: conflicts are detected, "
          "nothing is lost or overwritten, and every deposit of both eventually succeeds",
          "[faults][runtime][processes]") {
#ifndef ANNALS_TWOWRITER_BINARY
  WARN("annals_twowriter was not built; skipped");
#else
  constexpr int deposits = 250;
  const std::int64_t first_amount[2] = {1'000'000, 2'000'000};
  pt::temp_dir dir;
  auto path = dir.file("shared.db");
  {
    auto journal = open_sqlite(path);
    {
      system_config cfg;
      caf::actor_system sys{cfg};
      host h{sys, journal};
      REQUIRE_FALSE(h.register_aggregate<account>());
      REQUIRE(h.ask<account>("X", bank::open{"Two Writers"}));
    }
    journal->close();
  }
  auto deadline = std::chrono::steady_clock::now() + 240s;
  std::vector<std::unique_ptr<child_process>> writers;
  for (auto amount : first_amount)
    writers.push_back(std::make_unique<child_process>(std::vector<std::string>{
      ANNALS_TWOWRITER_BINARY, path, "X", std::to_string(deposits), std::to_string(amount)}));
  // Both open the journal and recover the account first; then both start at once.
  for (auto& w : writers) {
    auto ready = w->read_line(deadline);
    REQUIRE(ready);
    REQUIRE(*ready == "ready");
  }
  for (auto& w : writers)
    REQUIRE(w->send("go\n"));
  std::vector<std::map<std::string, long long>> counters;
  for (auto& w : writers) {
    auto report = w->read_line(deadline);
    REQUIRE(report);
    INFO(*report);
    auto exit_code = w->wait(deadline);
    REQUIRE(exit_code);
    CHECK(*exit_code == 0);
    counters.push_back(parse_counters(*report));
  }
  long long conflicts = 0;
  for (std::size_t i = 0; i < 2; ++i) {
    INFO("writer " << i);
    CHECK(counters[i]["ok"] == deposits);
    CHECK(counters[i]["errors"] == 0);
    conflicts += counters[i]["conflicts"];
  }
  if (conflicts == 0)
    WARN("the two writers never collided in this run");

  auto journal = open_sqlite(path);
  auto events = stream(*journal, "account|X");
  REQUIRE(events.size() == 1 + 2 * deposits);
  std::map<std::int64_t, int> seen;
  std::int64_t sum = 0;
  for (std::size_t i = 0; i < events.size(); ++i) {
    CHECK(events[i].seq == i + 1);
    if (i == 0) {
      CHECK(events[i].name == "bank.opened");
      continue;
    }
    REQUIRE(events[i].name == "bank.deposited");
    auto cents = cents_of(events[i]);
    ++seen[cents];
    sum += cents;
  }
  // Each deposit of each writer is stored exactly once.
  std::map<std::int64_t, int> expected;
  for (auto amount : first_amount)
    for (int i = 0; i < deposits; ++i)
      expected[amount + i] = 1;
  CHECK(seen == expected);
  {
    system_config cfg;
    caf::actor_system sys{cfg};
    host h{sys, journal};
    REQUIRE_FALSE(h.register_aggregate<account>());
    auto served = h.ask<account>("X", bank::get_account{});
    REQUIRE(served);
    CHECK(served->balance == sum);
    CHECK(served->version == events.size());
  }
  journal->close();
#endif
}

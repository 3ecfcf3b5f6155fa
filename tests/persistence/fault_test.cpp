// Faults under the SQLite journal, one file system failure at a time: a full disk inside a
// group commit, write and fsync errors (through the VFS shim in vfs_shim.hpp), the journal
// file deleted or replaced while open, and a read-only file or directory. For each, the
// caller gets an error that names the file and the cause, nothing of a failed write is
// stored (events, tags, offsets), reads keep working, and appends succeed again once the
// fault is gone.

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>

#include <sqlite3.h>

#include "persistence/journal_fixtures.hpp"
#include "persistence/vfs_shim.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;
using annals::test::fault_vfs;
using annals::test::io_fault;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<sqlite_journal> open_journal(sqlite_options opts) {
  auto res = sqlite_journal::open(std::move(opts));
  if (!res)
    FAIL(render(res.error()));
  return *res;
}

std::uint64_t page_limit(sqlite_journal& j, std::uint64_t pages) {
  auto res = wait_for<std::uint64_t>(
    [&](callback<std::uint64_t> done) { j.set_max_page_count(pages, std::move(done)); }, bound);
  REQUIRE(res);
  return *res;
}

std::string big_payload(std::size_t bytes) {
  return R"({"blob":")" + std::string(bytes, 'x') + R"("})";
}

/// Copies the journal's files as a crash would leave them on disk (the database and its
/// write-ahead log; the shared-memory index is rebuilt by the next opener).
void copy_as_crashed(const fs::path& dir, const std::string& from, const std::string& to) {
  for (std::string suffix : {"", "-wal"}) {
    if (fs::exists(dir / (from + suffix)))
      fs::copy_file(dir / (from + suffix), dir / (to + suffix));
  }
}

/// Lowers this thread's effective capabilities so that file permissions apply to it even
/// when it runs as root; threads it starts meanwhile (the journal's) inherit that.
/// Restores them on destruction.
class permissions_enforced {
public:
  permissions_enforced() {
    if (geteuid() != 0) {
      active_ = true;
      return;
    }
    if (!caps(false))
      return;
    dropped_ = true;
    active_ = true;
  }
  ~permissions_enforced() {
    if (dropped_)
      caps(true);
  }
  permissions_enforced(const permissions_enforced&) = delete;
  permissions_enforced& operator=(const permissions_enforced&) = delete;

  /// False if file permissions cannot be made to apply (root without the capability).
  bool active() const {
    return active_;
  }

private:
  static bool caps(bool on) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (syscall(SYS_capget, &header, data) != 0)
      return false;
    for (int bit : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER}) {
      auto mask = 1u << (bit % 32);
      if (on)
        data[bit / 32].effective |= mask;
      else
        data[bit / 32].effective &= ~mask;
    }
    return syscall(SYS_capset, &header, data) == 0;
  }

  bool active_ = false;
  bool dropped_ = false;
};

/// Sets a path's permission bits and puts the old ones back on destruction.
class chmod_guard {
public:
  chmod_guard(fs::path path, fs::perms perms)
    : path_(std::move(path)), old_(fs::status(path_).permissions()) {
    fs::permissions(path_, perms);
  }
  ~chmod_guard() {
    std::error_code ec;
    fs::permissions(path_, old_, ec);
  }
  chmod_guard(const chmod_guard&) = delete;
  chmod_guard& operator=(const chmod_guard&) = delete;

private:
  fs::path path_;
  fs::perms old_;
};

/// Opens the file as its only connection and closes it again, which checkpoints the
/// write-ahead log into the database and removes the -wal and -shm files.
void checkpoint_and_close(const std::string& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "SELECT count(*) FROM events", nullptr, nullptr, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_close(db) == SQLITE_OK);
}

bool writable(const std::string& path) {
  auto fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0)
    return false;
  ::close(fd);
  return true;
}

} // namespace

TEST_CASE("a full disk fails only the write that does not fit, and the other writes of its group "
          "commit are stored with gapless offsets",
          "[faults][sqlite]") {
  temp_dir dir;
  auto j = open_journal({.path = dir.file("j.db")});
  REQUIRE(append(*j, "small-1", 0, {ev("s")}));
  page_limit(*j, 1); // clamped to the file's current size: no page can be added
  auto payload = big_payload(60'000);
  std::vector<std::optional<caf::expected<append_result>>> results(3);
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
  // Submitted from the writer's own callback, so that all three share one transaction.
  j->append({"trigger", 0, {ev("t")}, {}}, [&](caf::expected<append_result>) {
    transactions_before = j->stats().transactions;
    j->append({"small-1", 1, {ev("s")}, {}}, collect(0));
    j->append({"big", 0, {ev("b", payload, {"big"}), ev("b", payload), ev("b", payload)}, {}},
              collect(1));
    j->append({"small-2", 0, {ev("s", "{}", {"small"})}, {}}, collect(2));
  });
  REQUIRE(done.wait(3));
  std::lock_guard guard{mtx};
  REQUIRE(*results[0]);
  REQUIRE_FALSE(*results[1]);
  REQUIRE(*results[2]);
  auto& failure = results[1]->error();
  CHECK(is(failure, journal_errc::disk_full));
  CHECK_THAT(render(failure), Catch::Contains("big") && Catch::Contains(dir.file("j.db"))
                                && Catch::Contains("full"));
  // The survivors were committed together, and the failed write consumed no offsets.
  CHECK(j->stats().transactions == transactions_before + 1);
  CHECK((*results[0])->last_offset + 1 == (*results[2])->first_offset);
  CHECK(read_stream(*j, "big")->empty());
  CHECK(read_tagged(*j, "big")->empty());
  CHECK(read_tagged(*j, "small")->size() == 1);
  auto head = head_offset(*j);
  REQUIRE(head);
  CHECK(*head == (*results[2])->last_offset);
  page_limit(*j, 1'000'000);
  auto again = append(*j, "big", 0, {ev("b", payload, {"big"}), ev("b", payload)});
  REQUIRE(again);
  CHECK(again->first_offset == *head + 1);
  CHECK(read_tagged(*j, "big")->size() == 1);
}

TEST_CASE("a write or fsync error fails the append with storage_error naming the file, stores "
          "nothing, and the journal works again once the fault clears, without reopening",
          "[faults][sqlite][io]") {
  temp_dir dir;
  fault_vfs vfs{dir.path().string()};
  auto path = dir.file("j.db");
  io_fault kind = io_fault::none;
  std::int64_t pass = 0;
  SECTION("every write fails") {
    kind = io_fault::write;
  }
  SECTION("the write-ahead log is written in part, then writes fail") {
    kind = io_fault::write;
    pass = 3;
  }
  SECTION("fsync fails") {
    kind = io_fault::sync;
  }
  {
    auto j = open_journal({.path = path});
    REQUIRE(append(*j, "acc", 0, {ev("opened")}));
    auto payload = big_payload(20'000);
    vfs.arm(kind, pass);
    auto failed =
      append(*j, "acc", 1, {ev("big", payload, {"t"}), ev("big", payload), ev("big", payload)});
    REQUIRE_FALSE(failed);
    CHECK(vfs.failed_writes() + vfs.failed_syncs() > 0);
    CHECK(is(failed.error(), journal_errc::storage_error));
    CHECK_THAT(render(failed.error()), Catch::Contains(path) && Catch::Contains("disk I/O error"));
    // A fault that persists fails each append the same way; nothing hangs.
    auto still = append(*j, "acc", 1, {ev("small")});
    REQUIRE_FALSE(still);
    CHECK(is(still.error(), journal_errc::storage_error));
    // Reads work throughout and show nothing of the failed writes.
    CHECK(highest_seq(*j, "acc") == std::uint64_t{1});
    CHECK(head_offset(*j) == std::uint64_t{1});
    CHECK(read_stream(*j, "acc")->size() == 1);
    CHECK(read_tagged(*j, "t")->empty());
    vfs.arm(io_fault::none);
    auto healed = append(*j, "acc", 1, {ev("after", "{}", {"t"}), ev("after")});
    REQUIRE(healed);
    CHECK(healed->first_seq == 2);
    CHECK(healed->first_offset == 2);
    j->close();
  }
  auto reopened = open_journal({.path = path});
  auto all = read_all(*reopened);
  REQUIRE(all);
  std::vector<std::string> names;
  for (const auto& rec : *all)
    names.push_back(rec.name);
  CHECK(names == std::vector<std::string>{"opened", "after", "after"});
  CHECK(read_tagged(*reopened, "t")->size() == 1);
  reopened->close();
  CHECK(vfs.open_files() == 0);
}

TEST_CASE("an I/O error names the persistence id and the operation that failed",
          "[faults][sqlite][io]") {
  temp_dir dir;
  fault_vfs vfs{dir.path().string()};
  auto j = open_journal({.path = dir.file("j.db")});
  REQUIRE(append(*j, "acc-io", 0, {ev("opened")}));
  vfs.arm(io_fault::sync);
  auto synced = append(*j, "acc-io", 1, {ev("e")});
  vfs.arm(io_fault::write);
  auto written = append(*j, "acc-io", 1, {ev("e")});
  vfs.arm(io_fault::none);
  j->close();
  REQUIRE_FALSE(synced);
  REQUIRE_FALSE(written);
  INFO(render(synced.error()));
  INFO(render(written.error()));
  CHECK_THAT(render(synced.error()), Catch::Contains("acc-io") && Catch::Contains("fsync"));
  CHECK_THAT(render(written.error()), Catch::Contains("acc-io") && Catch::Contains("write"));
}

TEST_CASE("an append whose commit failed in fsync is reported as of unknown outcome, and "
          "after a crash it is there whole or not at all",
          "[faults][sqlite][io]") {
  temp_dir dir;
  fault_vfs vfs{dir.path().string()};
  {
    auto j = open_journal({.path = dir.file("j.db")});
    REQUIRE(append(*j, "acc", 0, {ev("opened")}));
    vfs.arm(io_fault::sync);
    auto failed = append(*j, "acc", 1, {ev("deposited"), ev("deposited")});
    REQUIRE_FALSE(failed);
    CHECK(is(failed.error(), journal_errc::storage_error));
    // The commit record may already be in the WAL: the caller is not told "not written",
    // it is told the outcome is unknown (and retries with its idempotency key).
    CHECK_THAT(render(failed.error()), Catch::Contains("outcome of this commit is unknown"));
    vfs.arm(io_fault::none);
    copy_as_crashed(dir.path(), "j.db", "crashed.db");
    j->close();
  }
  auto after_crash = open_journal({.path = dir.file("crashed.db")});
  // All or none: never one of the two events alone.
  auto seq = highest_seq(*after_crash, "acc");
  REQUIRE(seq);
  CHECK((*seq == 1 || *seq == 3));
  CHECK(read_stream(*after_crash, "acc")->size() == *seq);
  after_crash->close();
}

TEST_CASE("a journal file replaced by something else while open: reopening it gives a clear "
          "error, never a crash",
          "[faults][sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  auto j = open_journal({.path = path});
  REQUIRE(append(*j, "acc", 0, {ev("opened")}));
  for (std::string suffix : {"", "-wal", "-shm"})
    fs::remove(path + suffix);
  {
    std::ofstream out{path, std::ios::binary};
    out << "a file that is not a database\n";
  }
  // Whatever the running journal does with the replaced file, it answers every call.
  auto late = append(*j, "acc", 1, {ev("late")});
  INFO((late ? std::string{"acknowledged"} : render(late.error())));
  CHECK(highest_seq(*j, "acc"));
  j->close();
  auto reopened = sqlite_journal::open({.path = path});
  REQUIRE_FALSE(reopened);
  CHECK(is(reopened.error(), journal_errc::not_a_journal));
  CHECK(render(reopened.error()) == "journal.not_a_journal: " + path + " is not a SQLite database");
  CHECK(slurp(path) == "a file that is not a database\n");
}

TEST_CASE("after the journal file is deleted or replaced while open, appends fail instead of "
          "being acknowledged into the unlinked file",
          "[faults][sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  std::uint64_t other_events = 0;
  auto j = open_journal({.path = path});
  REQUIRE(append(*j, "acc", 0, {ev("opened")}));
  for (std::string suffix : {"", "-wal", "-shm"})
    fs::remove(path + suffix);
  SECTION("deleted") {}
  SECTION("replaced by another journal") {
    // Written as by a process that ignores the owner lock (`j` still holds it).
    auto other = open_journal({.path = path, .owner_lock = false});
    REQUIRE(append(*other, "other", 0, {ev("x"), ev("y")}));
    other_events = 2;
    other->close();
  }
  auto late = append(*j, "acc", 1, {ev("late")});
  j->close();
  if (!late) {
    CHECK(is(late.error(), journal_errc::storage_error));
    CHECK_THAT(render(late.error()), Catch::Contains(path));
    return;
  }
  // Acknowledged: then it must be where the journal lives, like every acknowledged event.
  auto reopened = open_journal({.path = path});
  CHECK(highest_seq(*reopened, "acc") == std::uint64_t{2});
  CHECK(head_offset(*reopened) == other_events + 2);
  reopened->close();
}

TEST_CASE("a read-only journal file or directory gives read_only errors and writes nothing",
          "[faults][sqlite]") {
  temp_dir dir;
  auto path = dir.file("j.db");
  {
    auto j = open_journal({.path = path});
    REQUIRE(append(*j, "acc", 0, {ev("opened")}));
  }
  checkpoint_and_close(path);
  REQUIRE(list_dir(dir.path()) == std::vector<std::string>{"j.db"});
  auto before = slurp(path);
  permissions_enforced enforced;
  if (!enforced.active()) {
    WARN("running as root without the capability to lower CAP_DAC_OVERRIDE: file permissions "
         "do not apply, the read-only sections are skipped");
    return;
  }
  SECTION("the file is read-only: opening succeeds, each append fails with read_only") {
    chmod_guard file_ro{path, fs::perms(0444)};
    if (writable(path)) {
      WARN("file permissions are not enforced here; skipped");
      return;
    }
    auto j = sqlite_journal::open({.path = path});
    if (!j) {
      // Refusing at open is as clear as refusing each append.
      CHECK(is(j.error(), journal_errc::read_only));
      CHECK_THAT(render(j.error()), Catch::Contains(path));
    } else {
      CHECK(highest_seq(**j, "acc") == std::uint64_t{1});
      auto res = append(**j, "acc", 1, {ev("deposited"), ev("deposited")});
      REQUIRE_FALSE(res);
      CHECK(is(res.error(), journal_errc::read_only));
      CHECK(render(res.error())
            == "journal.read_only: appending seq 2 to persistence id acc (" + path
                 + "): attempt to write a readonly database");
      CHECK(read_stream(**j, "acc")->size() == 1);
      CHECK(head_offset(**j) == std::uint64_t{1});
      (*j)->close();
    }
  }
  SECTION("the directory is read-only: opening fails with read_only") {
    chmod_guard dir_ro{dir.path(), fs::perms(0555)};
    auto j = sqlite_journal::open({.path = path});
    REQUIRE_FALSE(j);
    CHECK(is(j.error(), journal_errc::read_only));
    CHECK(render(j.error())
          == "journal.read_only: running `PRAGMA application_id` (" + path
               + "): attempt to write a readonly database");
    CHECK(list_dir(dir.path()) == std::vector<std::string>{"j.db"});
  }
  SECTION("file and directory are read-only: opening fails with read_only") {
    chmod_guard dir_ro{dir.path(), fs::perms(0555)};
    chmod_guard file_ro{path, fs::perms(0444)};
    auto j = sqlite_journal::open({.path = path});
    REQUIRE_FALSE(j);
    CHECK(is(j.error(), journal_errc::read_only));
    CHECK_THAT(render(j.error()), Catch::Contains(path));
    CHECK(list_dir(dir.path()) == std::vector<std::string>{"j.db"});
  }
  CHECK(slurp(path) == before);
}

TEST_CASE("after close the journal file alone holds every event: the write-ahead log is "
          "checkpointed and removed",
          "[faults][sqlite]") {
  temp_dir dir;
  // Closing races between the journal's connections; a few rounds show whether any ends
  // with the log left behind.
  for (int round = 0; round < 50; ++round) {
    auto path = dir.file("j" + std::to_string(round) + ".db");
    {
      auto j = open_journal({.path = path});
      REQUIRE(append(*j, "acc", 0, {ev("opened"), ev("deposited")}));
      j->close();
    }
    // The file alone, as a backup of a closed journal copies it.
    auto copy = dir.file("copy" + std::to_string(round) + ".db");
    fs::copy_file(path, copy);
    auto reopened = open_journal({.path = copy});
    auto seq = highest_seq(*reopened, "acc");
    reopened->close();
    INFO("round " << round);
    CHECK_FALSE(fs::exists(path + "-wal"));
    CHECK(seq == std::uint64_t{2});
    if (fs::exists(path + "-wal") || seq != std::uint64_t{2})
      break;
  }
}

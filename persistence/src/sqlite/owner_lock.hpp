#pragma once

// The owner lock of a journal file: one process at a time writes a SQLite journal.
//
// It is a `flock` on a file of its own beside the journal (`PATH.owner`), not a lock on
// the journal file: SQLite takes POSIX `fcntl` locks on the journal file, which belong to
// the process and are all dropped when any descriptor of that file closes, so a lock of
// ours there would vanish behind our back. A `flock` belongs to the open file description,
// survives SQLite's opens and closes, and is released by the kernel when the process ends,
// however it ends: a `kill -9` leaves the file behind, never the lock. The file holds one
// line naming the owner (`pid=... host=... program=... since=...`) for the refusal message
// a second owner gets.

#include <chrono>
#include <string>
#include <utility>

#include <caf/expected.hpp>

namespace annals::persistence::sqlite {

/// The file whose `flock` makes a process the owner of the journal at `journal_path`.
std::string owner_file(const std::string& journal_path);

/// An exclusive owner lock, held until `release` or destruction (which also removes the
/// lock file).
class owner_lock {
public:
  owner_lock() = default;
  owner_lock(owner_lock&& other) noexcept;
  owner_lock& operator=(owner_lock&& other) noexcept;
  owner_lock(const owner_lock&) = delete;
  owner_lock& operator=(const owner_lock&) = delete;
  ~owner_lock();

  /// Takes the owner lock of the journal at `journal_path`, waiting at most `grace` for
  /// an owner that is ending (a process killed a moment ago still holds it until the kernel
  /// has torn it down). Fails with `journal_errc::owned` if another owner holds it longer
  /// (in this process or another), naming the journal, that owner as its lock file
  /// describes it, and what to do instead; with `journal_errc::storage_error` if the lock
  /// file cannot be created.
  static caf::expected<owner_lock>
  acquire(const std::string& journal_path,
          std::chrono::milliseconds grace = std::chrono::milliseconds{1'000});

  /// Removes the lock file and releases the lock; idempotent.
  void release();

  bool held() const {
    return fd_ >= 0;
  }

private:
  owner_lock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}

  int fd_ = -1;
  std::string path_;
};

} // namespace annals::persistence::sqlite

#include "sqlite/owner_lock.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "annals/error.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::persistence::sqlite {

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0)
    return "?";
  return buf;
}

std::string utc_now() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// `pid=... host=... program=... since=...`: who owns the lock, one line.
std::string owner_line() {
  return "pid=" + std::to_string(::getpid()) + " host=" + host_name()
         + " program=" + program_invocation_short_name + " since=" + utc_now() + "\n";
}

std::map<std::string, std::string> parse_line(const std::string& line) {
  std::map<std::string, std::string> fields;
  std::istringstream in{line};
  std::string word;
  while (in >> word)
    if (auto eq = word.find('='); eq != std::string::npos)
      fields[word.substr(0, eq)] = word.substr(eq + 1);
  return fields;
}

// The owner as the lock file at `fd` describes it, and its details in parentheses, which
// end with the lock file's name.
std::string describe_owner(int fd, const std::string& file) {
  char buf[512] = {};
  auto n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  auto fields = parse_line(n > 0 ? std::string{buf, static_cast<std::size_t>(n)} : std::string{});
  auto pid = fields["pid"];
  auto host = fields["host"];
  if (pid.empty())
    return "another process (lock file " + file + ")";
  if (pid == std::to_string(::getpid()) && host == host_name())
    return "this process (another open journal of the same file; lock file " + file + ")";
  auto program = fields["program"].empty() ? std::string{"a process"} : fields["program"];
  std::string who = program + " (pid " + pid;
  if (host != host_name())
    who += " on host " + host;
  if (!fields["since"].empty())
    who += ", since " + fields["since"];
  return who + "; lock file " + file + ")";
}

// Whether the lock file at `fd` names this process as its owner.
bool owned_by_this_process(int fd) {
  char buf[512] = {};
  auto n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  auto fields = parse_line(n > 0 ? std::string{buf, static_cast<std::size_t>(n)} : std::string{});
  return fields["pid"] == std::to_string(::getpid()) && fields["host"] == host_name();
}

// Takes the lock on `fd`, trying again for up to `bound` unless this process holds it: a
// process killed a moment ago may still be on its way out (the kernel unmaps its memory
// before it closes its files). False with errno set if it did not get it.
bool lock_within(int fd, std::chrono::milliseconds bound) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0)
      return true;
    int err = errno;
    if (err != EWOULDBLOCK || owned_by_this_process(fd)
        || std::chrono::steady_clock::now() >= deadline) {
      errno = err;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
}

caf::error system_error(const std::string& what, const std::string& file) {
  return make_error(journal_errc::storage_error,
                    "cannot " + what + " the owner lock " + file + ": " + std::strerror(errno));
}

} // namespace

std::string owner_file(const std::string& journal_path) {
  return journal_path + ".owner";
}

owner_lock::owner_lock(owner_lock&& other) noexcept
  : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

owner_lock& owner_lock::operator=(owner_lock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

owner_lock::~owner_lock() {
  release();
}

void owner_lock::release() {
  if (fd_ < 0)
    return;
  // Removed while still locked: a process that opened the file before the removal finds
  // it unlinked after taking the lock (see acquire) and tries again on a new one.
  ::unlink(path_.c_str());
  ::close(fd_);
  fd_ = -1;
}

caf::expected<owner_lock> owner_lock::acquire(const std::string& journal_path,
                                              std::chrono::milliseconds grace) {
  auto file = owner_file(journal_path);
  // A few rounds at most: each retry means a previous owner removed the file in between.
  for (int round = 0; round < 16; ++round) {
    int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      return system_error("create", file);
    if (!lock_within(fd, grace)) {
      if (errno != EWOULDBLOCK) {
        auto err = system_error("take", file);
        ::close(fd);
        return err;
      }
      auto who = describe_owner(fd, file);
      ::close(fd);
      return make_error(journal_errc::owned,
                        journal_path + " is owned by " + who
                          + ": one process at a time owns a SQLite journal; stop that one "
                            "first, or run several processes on a networked journal. Reading "
                            "needs no ownership (sqlite_journal::open_read_only, the annals "
                            "tool)");
    }
    // Locked: still the file at that path, or one a previous owner removed meanwhile?
    struct stat locked {};
    struct stat named {};
    if (::fstat(fd, &locked) == 0 && ::stat(file.c_str(), &named) == 0
        && locked.st_dev == named.st_dev && locked.st_ino == named.st_ino) {
      auto line = owner_line();
      if (::ftruncate(fd, 0) != 0
          || ::pwrite(fd, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size())) {
        auto err = system_error("write", file);
        ::unlink(file.c_str());
        ::close(fd);
        return err;
      }
      // Removed by absolute path on release: the process may change its directory meanwhile.
      std::error_code ec;
      auto absolute = std::filesystem::absolute(file, ec);
      return owner_lock{fd, ec ? file : absolute.string()};
    }
    ::close(fd);
  }
  return make_error(journal_errc::storage_error,
                    "cannot take the owner lock " + file + ": it kept being replaced");
}

} // namespace annals::persistence::sqlite

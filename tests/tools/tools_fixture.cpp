#include "tools_fixture.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "account/account.hpp"
#include "account/balances.hpp"
#include "account/statement.hpp"
#include "account/transfer.hpp"
#include "annals/actors/host.hpp"
#include "annals/actors/projection.hpp"
#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "match/match.hpp"

namespace tools_test {

namespace fs = std::filesystem;
namespace ap = annals::persistence;
namespace aa = annals::actors;
using namespace std::chrono_literals;

namespace {

template <class T>
T checked(caf::expected<T> x, const char* what) {
  if (!x)
    throw std::runtime_error{std::string{what} + ": " + annals::render(x.error())};
  return std::move(*x);
}

void checked(const caf::error& err, const char* what) {
  if (err)
    throw std::runtime_error{std::string{what} + ": " + annals::render(err)};
}

// Commands a few milliseconds apart: every event gets a commit time of its own.
void pause() {
  std::this_thread::sleep_for(3ms);
}

struct sample_store {
  temp_dir dir;
  std::string path = dir.file("sample.db");
  sample_facts facts;

  sample_store() {
    auto journal = checked(ap::sqlite_journal::open({.path = path}), "opening the journal");
    std::uint64_t head = 0;
    {
      caf::actor_system_config cfg;
      aa::configure(cfg);
      caf::actor_system sys{cfg};
      auto accounts = aa::event_filter::aggregate_type<bank::account>();
      std::vector<aa::projection> projections;
      projections.push_back(
        aa::spawn_projection(sys, journal, std::make_shared<bank::balances_projection>(),
                             {.name = "balances", .path = path, .filter = accounts}));
      projections.push_back(
        aa::spawn_projection(sys, journal, std::make_shared<bank::statement_projection>(),
                             {.name = "statement", .path = path, .filter = accounts}));
      {
        aa::host h{sys, journal, journal->snapshots()};
        checked(h.register_aggregate<bank::account>({.snapshot_every = 2}), "registering account");
        checked(h.register_aggregate<bank::transfer>({}, [&h] { return bank::transfer{&h}; }),
                "registering transfer");
        checked(h.register_aggregate<match::football_match>(), "registering match");
        checked(h.ask<bank::account>("acc-1", bank::open{"Ada"}), "open acc-1");
        pause();
        checked(h.ask<bank::account>("acc-1", bank::deposit{100}), "deposit 100");
        pause();
        checked(h.ask<bank::account>("acc-1", bank::deposit{50}), "deposit 50");
        pause();
        checked(h.ask<bank::account>("acc-2", bank::open{"Bob"}), "open acc-2");
        pause();
        checked(h.ask<bank::account>("acc-1", bank::withdraw{30}), "withdraw 30");
        pause();
        checked(h.ask<bank::transfer>("t1", bank::start_transfer{"t1", "acc-1", "acc-2", 20}),
                "transfer t1");
        pause();
        checked(h.ask<match::football_match>("m1", match::schedule{"Home FC", "Away FC"}),
                "schedule m1");
        pause();
        checked(h.ask<match::football_match>("m1", match::kick_off{}), "kick off m1");
        pause();
        checked(
          h.ask<match::football_match>("m1", match::score_goal{match::side::home, "Kane", 12}),
          "goal in m1");
        pause();
      }
      ap::append_request req{.persistence_id = "audit|a1",
                             .expected_seq = 0,
                             .events = {{.name = "audit.flagged",
                                         .version = 1,
                                         .payload = R"({"reason":"large transfer"})",
                                         .tags = {"vip", "audit"}}},
                             .metadata = {"cmd-9", "corr-9"}};
      auto res = checked(ap::wait_for<ap::append_result>(
                           [&](ap::callback<ap::append_result> done) {
                             journal->append(std::move(req), std::move(done));
                           },
                           30s),
                         "appending the audit event");
      head = res.last_offset;
      for (auto& p : projections)
        checked(p.await_offset(head, 30s), "waiting for a projection");
      for (auto& p : projections)
        p.stop();
    }
    journal->close();
    facts.events = head;
  }
};

sample_store& store() {
  static sample_store s;
  return s;
}

int decode(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return -1;
}

struct pipe_pair {
  int read = -1;
  int write = -1;
  pipe_pair() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error{std::string{"pipe2: "} + std::strerror(errno)};
    read = fds[0];
    write = fds[1];
  }
};

void close_fd(int& fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}

// Forks and execs `argv` with the given descriptors as stdin, stdout and stderr.
pid_t spawn(const std::vector<std::string>& argv, int in, int out, int err) {
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // Writing to a child that has exited must fail with EPIPE, not kill the test.
  ::signal(SIGPIPE, SIG_IGN);
  auto pid = ::fork();
  if (pid < 0)
    throw std::runtime_error{std::string{"fork: "} + std::strerror(errno)};
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

// Reads what is available on `fd` into `buf`; false at end of file.
bool drain(int fd, std::string& buf) {
  char chunk[65536];
  for (;;) {
    auto n = ::read(fd, chunk, sizeof(chunk));
    if (n > 0) {
      buf.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0)
      return false;
    return errno == EAGAIN || errno == EINTR;
  }
}

int wait_exit(pid_t pid, std::chrono::milliseconds bound) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  for (;;) {
    int status = 0;
    auto r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid)
      return decode(status);
    if (r < 0 && errno != EINTR)
      return -1;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(5ms);
  }
}

} // namespace

const sample_facts& sample() {
  return store().facts;
}

temp_dir::temp_dir() {
  std::random_device rd;
  for (int attempt = 0;; ++attempt) {
    path_ = fs::temp_directory_path() / ("annals-tools-test-" + std::to_string(rd()));
    std::error_code ec;
    if (fs::create_directory(path_, ec))
      return;
    if (attempt > 100)
      throw std::runtime_error{"cannot create a temporary directory"};
  }
}

temp_dir::~temp_dir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string copy_sample(const temp_dir& dir, std::string_view name) {
  const auto& s = store();
  auto target = dir.file(name);
  fs::copy_file(s.path, target, fs::copy_options::overwrite_existing);
  if (fs::exists(s.path + "-wal"))
    fs::copy_file(s.path + "-wal", target + "-wal", fs::copy_options::overwrite_existing);
  return target;
}

live_journal::live_journal(const std::string& path)
  : journal_(checked(ap::sqlite_journal::open({.path = path}), "opening the live journal")) {}

live_journal::~live_journal() {
  journal_->close();
}

std::uint64_t live_journal::append(const std::string& persistence_id, const std::string& name,
                                   const std::string& payload, std::vector<std::string> tags) {
  auto seq = checked(ap::wait_for<std::uint64_t>(
                       [&](ap::callback<std::uint64_t> done) {
                         journal_->highest_seq(persistence_id, std::move(done));
                       },
                       30s),
                     "reading the highest seq");
  ap::append_request req{
    .persistence_id = persistence_id,
    .expected_seq = seq,
    .events = {{.name = name, .version = 1, .payload = payload, .tags = std::move(tags)}}};
  auto res = checked(ap::wait_for<ap::append_result>(
                       [&](ap::callback<ap::append_result> done) {
                         journal_->append(std::move(req), std::move(done));
                       },
                       30s),
                     "appending");
  return res.last_offset;
}

result run(const std::vector<std::string>& argv, const std::string& input,
           std::chrono::milliseconds bound) {
  pipe_pair in, out, err;
  auto pid = spawn(argv, in.read, out.write, err.write);
  close_fd(in.read);
  close_fd(out.write);
  close_fd(err.write);
  for (int fd : {in.write, out.read, err.read})
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  result r;
  std::size_t written = 0;
  if (input.empty())
    close_fd(in.write);
  auto deadline = std::chrono::steady_clock::now() + bound;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      break;
    pollfd fds[3] = {{out_open ? out.read : -1, POLLIN, 0},
                     {err_open ? err.read : -1, POLLIN, 0},
                     {in.write, POLLOUT, 0}};
    ::poll(fds, 3, static_cast<int>(std::min<long>(left.count(), 100)));
    if (out_open && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
      out_open = drain(out.read, r.out);
    if (err_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
      err_open = drain(err.read, r.err);
    if (in.write >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      auto n = ::write(in.write, input.data() + written, input.size() - written);
      if (n > 0)
        written += static_cast<std::size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == input.size())
        close_fd(in.write);
    }
  }
  close_fd(in.write);
  close_fd(out.read);
  close_fd(err.read);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    deadline - std::chrono::steady_clock::now());
  r.code = wait_exit(pid, std::max(left, std::chrono::milliseconds{1}));
  return r;
}

background::background(const std::vector<std::string>& argv) {
  pipe_pair out, err;
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_ = spawn(argv, devnull, out.write, err.write);
  ::close(devnull);
  ::close(out.write);
  ::close(err.write);
  out_fd_ = out.read;
  err_fd_ = err.read;
  for (int fd : {out_fd_, err_fd_})
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

background::~background() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  close_fd(out_fd_);
  close_fd(err_fd_);
}

void background::pump(int timeout_ms) {
  pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  ::poll(fds, 2, timeout_ms);
  if (out_fd_ >= 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && !drain(out_fd_, out_))
    close_fd(out_fd_);
  if (err_fd_ >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) && !drain(err_fd_, err_))
    close_fd(err_fd_);
}

bool background::wait_for_output(std::string_view needle, std::chrono::milliseconds bound) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (out_.find(needle) == std::string::npos) {
    if (out_fd_ < 0 || std::chrono::steady_clock::now() >= deadline)
      return false;
    pump(50);
  }
  return true;
}

int background::stop(int sig, std::chrono::milliseconds bound) {
  if (pid_ <= 0)
    return -1;
  ::kill(pid_, sig);
  auto deadline = std::chrono::steady_clock::now() + bound;
  while ((out_fd_ >= 0 || err_fd_ >= 0) && std::chrono::steady_clock::now() < deadline)
    pump(50);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    deadline - std::chrono::steady_clock::now());
  auto code = wait_exit(pid_, std::max(left, std::chrono::milliseconds{1}));
  pid_ = -1;
  return code;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos)
      end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

} // namespace tools_test

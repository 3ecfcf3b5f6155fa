#pragma once

// What the fixtures that run real servers (nats-server, postgres) share, without Catch2 so
// that drivers such as the crash test can use them: a scratch directory, a file's text, a
// free loopback port and a child process with its output in a file.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace annals::persistence::test {

/// A fresh directory under the system's temp directory, removed with everything in it.
class server_dir {
public:
  server_dir() {
    auto pattern = (std::filesystem::temp_directory_path() / "annals-server-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error{"cannot create a directory for nats-server under " + pattern};
    path_ = pattern;
  }
  ~server_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  server_dir(const server_dir&) = delete;
  server_dir& operator=(const server_dir&) = delete;
  const std::filesystem::path& path() const {
    return path_;
  }

private:
  std::filesystem::path path_;
};

/// The whole content of the file at `path` (empty if it cannot be read).
inline std::string file_text(const std::filesystem::path& path) {
  std::ifstream in{path, std::ios::binary};
  std::ostringstream all;
  all << in.rdbuf();
  return all.str();
}

/// A port nobody listens on right now (the kernel's choice for an ephemeral bind).
inline std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

/// Starts the program `args[0]` with arguments `args`: its standard output and error go to
/// `log` (truncated), its standard input is /dev/null, no signal is blocked or ignored in it
/// (a test may block some for its own threads), and it gets SIGKILL when the process that
/// started it dies. Returns its pid; throws `std::runtime_error` when `log` cannot be
/// created or fork fails.
inline pid_t spawn_logged(std::vector<std::string> args, const std::filesystem::path& log) {
  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls are made.
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0)
    throw std::runtime_error{"cannot create " + log.string() + ": " + std::strerror(errno)};
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(log_fd);
    throw std::runtime_error{std::string{"fork: "} + std::strerror(e)};
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(126);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0)
      ::dup2(null_fd, STDIN_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  return pid;
}

} // namespace annals::persistence::test

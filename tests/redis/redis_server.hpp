#pragma once

// A real Redis server for tests and test drivers (no Catch2 here; failures throw
// std::runtime_error): `redis-server` on a free loopback port with a temporary directory
// for its append-only file, run with `appendonly yes` and `appendfsync always` (an EXEC is
// on disk before it is answered, so a SIGKILL of the server loses nothing it answered).
// Start-up is waited for with a bound (a PING that answers PONG); the destructor SIGKILLs
// the server, and PR_SET_PDEATHSIG kills it if the test process dies without running
// destructors.

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "annals/actors/redis_projection.hpp"
#include "server_support.hpp"

#ifndef ANNALS_REDIS_SERVER_BINARY
#define ANNALS_REDIS_SERVER_BINARY "/usr/bin/redis-server"
#endif

namespace annals::persistence::test {

class redis_server {
public:
  redis_server() : port_(free_port()) {
    start();
  }
  ~redis_server() {
    kill9();
  }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  /// Starts the server on its port and directory (reloading its append-only file) and
  /// waits, at most 30 s, until it answers PING. The first start tries other ports if its
  /// port was taken meanwhile; a restart keeps the port (clients know it).
  void start() {
    if (pid_ > 0)
      return;
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto log = (dir_.path() / "server.log").string();
      auto before = file_text(log).size();
      pid_ = spawn(log);
      if (wait_ready())
        return;
      if (started_once_
          || file_text(log).find("Address already in use", before) == std::string::npos)
        break;
      kill9();
      port_ = free_port();
    }
    throw std::runtime_error{"redis-server did not answer PING within 30 s:\n" + log()};
  }

  /// SIGKILL and reap: the server ends without saving anything more.
  void kill9() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::uint16_t port() const {
    return port_;
  }

  /// `redis://127.0.0.1:PORT`.
  std::string url() const {
    return "redis://127.0.0.1:" + std::to_string(port_);
  }

  /// A new client connection; throws if the server does not answer.
  actors::redis_client client() const {
    auto c = actors::redis_client::connect(url(), std::chrono::seconds{10});
    if (!c)
      throw std::runtime_error{"cannot connect to redis-server: " + render(c.error())};
    return std::move(*c);
  }

  std::string log() const {
    return file_text(dir_.path() / "server.log");
  }

private:
  pid_t spawn(const std::string& log) {
    std::vector<std::string> args{ANNALS_REDIS_SERVER_BINARY,
                                  "--port",
                                  std::to_string(port_),
                                  "--bind",
                                  "127.0.0.1",
                                  "--dir",
                                  dir_.path().string(),
                                  "--appendonly",
                                  "yes",
                                  "--appendfsync",
                                  "always",
                                  "--save",
                                  "",
                                  "--daemonize",
                                  "no",
                                  "--protected-mode",
                                  "yes"};
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    auto parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0)
      throw std::runtime_error{"fork failed for redis-server"};
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        ::_exit(1);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    return pid;
  }

  bool wait_ready() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{30};
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      // `connect` sends PING: a server still loading its append-only file refuses it.
      if (auto c = actors::redis_client::connect(url(), std::chrono::seconds{1}); c) {
        started_once_ = true;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    return false;
  }

  server_dir dir_;
  std::uint16_t port_;
  pid_t pid_ = -1;
  bool started_once_ = false;
};

} // namespace annals::persistence::test

#pragma once

// A real PostgreSQL server for tests and test drivers (no Catch2 here; failures throw
// std::runtime_error): `initdb` on a temporary directory, then `postgres` on a free
// loopback port, run as the unprivileged `postgres` user when the test runs as root
// (PostgreSQL refuses to run as root). The server is waited for with a bound (a connection
// that answers), stopped with SIGQUIT (what `pg_ctl stop -m immediate` sends) in the
// destructor, and PR_SET_PDEATHSIG kills it if the test process dies without running
// destructors. One server is shared by the test cases of a process (`shared_server`); each
// case gets a database of its own (`create_database`).

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

#include "server_support.hpp"

#ifndef ANNALS_PG_BINDIR
#define ANNALS_PG_BINDIR "/usr/lib/postgresql/15/bin"
#endif

namespace annals::persistence::test {

/// Runs `SQL` on a libpq connection and returns the error message ("" on success).
inline std::string run_sql(PGconn* conn, const std::string& sql) {
  PGresult* res = PQexec(conn, sql.c_str());
  auto st = PQresultStatus(res);
  std::string err;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    err = PQresultErrorMessage(res);
  PQclear(res);
  return err.empty() && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK ? "failed" : err;
}

/// One PostgreSQL server on its own data directory.
class pg_server {
public:
  pg_server() : port_(free_port()) {
    data_ = dir_.path() / "data";
    if (::getuid() == 0) {
      passwd* pw = ::getpwnam("postgres");
      if (pw == nullptr)
        throw std::runtime_error{"the tests run as root and there is no user `postgres` to run "
                                 "PostgreSQL as (install postgresql-15, or `useradd postgres`)"};
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
      if (::chown(dir_.path().c_str(), uid_, gid_) != 0)
        throw std::runtime_error{"cannot chown " + dir_.path().string() + " to postgres"};
    }
    auto log = (dir_.path() / "initdb.log").string();
    auto rc = run_and_wait({bin("initdb"), "-D", data_.string(), "-U", "annals", "--auth=trust",
                            "-E", "UTF8", "--locale=C", "--no-sync"},
                           log, std::chrono::seconds{120});
    if (rc != 0)
      throw std::runtime_error{"initdb failed (exit " + std::to_string(rc) + "):\n"
                               + file_text(log)};
    start();
  }
  ~pg_server() {
    stop();
  }
  pg_server(const pg_server&) = delete;
  pg_server& operator=(const pg_server&) = delete;

  /// Starts the server and waits until it accepts connections. If the port was taken
  /// between choosing it and binding it (another test process), tries another one.
  void start() {
    if (pid_ > 0)
      return;
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto log = (dir_.path() / "server.log").string();
      auto before = file_text(log).size();
      pid_ = spawn({bin("postgres"), "-D", data_.string(), "-p", std::to_string(port_), "-k",
                    dir_.path().string(), "-c", "listen_addresses=127.0.0.1", "-c",
                    "max_connections=200", "-c", "shared_buffers=32MB", "-c",
                    // one syncfs instead of an fsync per file before crash recovery
                    "recovery_init_sync_method=syncfs"},
                   log);
      if (wait_ready())
        return;
      if (file_text(log).find("could not bind", before) == std::string::npos)
        break;
      port_ = free_port();
    }
    throw std::runtime_error{"postgres did not accept connections within 60 s:\n"
                             + file_text(dir_.path() / "server.log")};
  }

  /// Immediate shutdown (SIGQUIT, as `pg_ctl stop -m immediate`): no checkpoint, backends
  /// killed, crash recovery on the next start. SIGKILL if it does not go within 20 s.
  void stop() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGQUIT);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{20};
    while (::waitpid(pid_, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    pid_ = -1;
  }

  /// `pg_ctl restart -m immediate`: an immediate stop, then a start.
  void restart_immediate() {
    stop();
    start();
  }

  /// The port the server listens on (127.0.0.1).
  std::uint16_t port() const {
    return port_;
  }

  /// A connection string for `dbname` on this server.
  std::string conninfo(const std::string& dbname = "postgres") const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " user=annals dbname=" + dbname;
  }

  /// Creates a fresh database and returns its connection string.
  std::string create_database() {
    auto name = "t" + std::to_string(++databases_);
    PGconn* conn = PQconnectdb(conninfo().c_str());
    auto err = PQstatus(conn) == CONNECTION_OK ? run_sql(conn, "CREATE DATABASE " + name)
                                               : std::string{PQerrorMessage(conn)};
    PQfinish(conn);
    if (!err.empty())
      throw std::runtime_error{"cannot create database " + name + ": " + err};
    return conninfo(name);
  }

  std::string log() const {
    return file_text((dir_.path() / "server.log").string());
  }

private:
  static std::string bin(const char* name) {
    return std::string{ANNALS_PG_BINDIR} + "/" + name;
  }

  // Forks and execs `args` as the server's user, output to `log`.
  pid_t spawn(std::vector<std::string> args, const std::string& log) {
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    auto parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      if (uid_ != 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(gid_) != 0 || ::setuid(uid_) != 0)
          ::_exit(126);
      }
      // After the change of user, which clears it.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        ::_exit(1);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    if (uid_ != 0) // the log is written by the child, read by us
      (void)::chown(log.c_str(), uid_, gid_);
    return pid;
  }

  int run_and_wait(std::vector<std::string> args, const std::string& log,
                   std::chrono::seconds limit) {
    auto pid = spawn(std::move(args), log);
    auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  bool wait_ready() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{60};
    auto info = conninfo();
    while (std::chrono::steady_clock::now() < deadline) {
      if (PQping(info.c_str()) == PQPING_OK)
        return true;
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
    return false;
  }

  server_dir dir_;
  std::filesystem::path data_;
  std::uint16_t port_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  pid_t pid_ = -1;
  int databases_ = 0;
};

/// The server the test cases of this process share, started by the first one to ask.
inline pg_server& shared_server() {
  static std::unique_ptr<pg_server> server;
  if (!server)
    server = std::make_unique<pg_server>();
  return *server;
}

} // namespace annals::persistence::test

#pragma once

// The real annals-bank binary as a child process, for tests that talk HTTP to it.
//
// Each fixture owns a fresh directory under /tmp that holds the journal (bank.db) and the
// output of every run (run-N.log, stdout and stderr together). The constructor starts the
// service on a free loopback port (--port 0) and waits, bounded, for its
// "annals-bank listening on http://127.0.0.1:PORT" line. The destructor SIGKILLs a child
// that still runs and removes the directory, so a failed assertion leaks neither. The
// child also gets SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG), which
// covers a test process that dies without unwinding. A fixture made on another fixture's
// journal starts a second service on the same file (`run_expecting_exit`).
//
// Built with ANNALS_SERVICE_ON_JETSTREAM, every service keeps its journal on a three-server
// NATS JetStream cluster (R3, started once per test process, a fresh stream per fixture)
// and only its read models in bank.db; with ANNALS_SERVICE_ON_POSTGRES, on a PostgreSQL
// server (started once per test process, a fresh database per fixture).

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "server_support.hpp"
#include "service/http_client.hpp"

#ifdef ANNALS_SERVICE_ON_JETSTREAM
#include "jetstream/nats_servers.hpp"
#endif
#ifdef ANNALS_SERVICE_ON_POSTGRES
#include "postgres/pg_server.hpp"
#endif

#ifndef ANNALS_BANK_BINARY
#error "ANNALS_BANK_BINARY must name the annals-bank executable"
#endif

namespace service_test {

/// Whether the services keep their journal on JetStream (see the file comment).
#ifdef ANNALS_SERVICE_ON_JETSTREAM
inline constexpr bool on_jetstream = true;
inline constexpr bool on_postgres = false;
inline constexpr bool journal_in_db_file = false;

/// The cluster the services of this process share.
inline annals::persistence::test::nats_cluster& jetstream_cluster() {
  static annals::persistence::test::nats_cluster cluster{3};
  return cluster;
}

/// A journal URI on a stream of its own.
inline std::string fresh_journal_uri() {
  return jetstream_cluster().urls()
         + "?stream=" + annals::persistence::test::fresh_stream_name("BANK") + "&replicas=3";
}
#elif defined(ANNALS_SERVICE_ON_POSTGRES)
inline constexpr bool on_jetstream = false;
inline constexpr bool on_postgres = true;
inline constexpr bool journal_in_db_file = false;

/// A journal URI on a fresh database of the server this process shares.
inline std::string fresh_journal_uri() {
  auto& server = annals::persistence::test::shared_server();
  auto info = server.create_database();
  auto db = info.substr(info.rfind("dbname=") + 7);
  return "postgresql://annals@127.0.0.1:" + std::to_string(server.port()) + "/" + db;
}
#else
inline constexpr bool on_jetstream = false;
inline constexpr bool on_postgres = false;
inline constexpr bool journal_in_db_file = true;

inline std::string fresh_journal_uri() {
  return {}; // the --db file
}
#endif

/// The offset of the `n`-th one-event append to a fresh journal.
inline std::int64_t offset_of_append(std::int64_t n) {
  return on_jetstream ? n * 1'000'000 : n;
}

class service_process {
public:
  /// How long start-up may take before the fixture gives up.
  static constexpr std::chrono::seconds start_bound{30};

  /// Creates the directory and starts the service on a fresh journal.
  service_process() : service_process(std::vector<std::string>{}) {}

  /// Creates the directory and starts the service on a fresh journal, with `extra_args`
  /// after the usual arguments at every start (e.g. `{"--redis", url}`).
  explicit service_process(std::vector<std::string> extra_args)
    : extra_args_(std::move(extra_args)) {
    char pattern[] = "/tmp/annals-bank-test-XXXXXX";
    if (::mkdtemp(pattern) == nullptr)
      throw std::runtime_error{std::string{"mkdtemp: "} + std::strerror(errno)};
    dir_ = pattern;
    journal_ = fresh_journal_uri();
    try {
      start();
    } catch (...) {
      cleanup();
      throw;
    }
  }

  /// Asks for a service that also keeps statement files (`--statements-dir`).
  struct with_statement_files {};

  /// Creates the directory and starts the service on a fresh journal, with
  /// `--statements-dir statements_dir()`.
  explicit service_process(with_statement_files) : statement_files_(true) {
    char pattern[] = "/tmp/annals-bank-test-XXXXXX";
    if (::mkdtemp(pattern) == nullptr)
      throw std::runtime_error{std::string{"mkdtemp: "} + std::strerror(errno)};
    dir_ = pattern;
    journal_ = fresh_journal_uri();
    try {
      start();
    } catch (...) {
      cleanup();
      throw;
    }
  }

  /// Where a service made `with_statement_files` keeps them.
  std::string statements_dir() const {
    return (dir_ / "statements").string();
  }

  /// Creates the directory for a service on the journal `db` (e.g. another fixture's
  /// `db_path()`) without starting it: `run_expecting_exit` starts it.
  explicit service_process(std::string db) : db_(std::move(db)) {
    char pattern[] = "/tmp/annals-bank-test-XXXXXX";
    if (::mkdtemp(pattern) == nullptr)
      throw std::runtime_error{std::string{"mkdtemp: "} + std::strerror(errno)};
    dir_ = pattern;
  }

  /// Arguments added to the command line of every later start (e.g. `--search-dir DIR`).
  void add_args(std::vector<std::string> args) {
    extra_args_.insert(extra_args_.end(), args.begin(), args.end());
  }

  /// SIGKILLs the child if it still runs and removes the directory.
  ~service_process() {
    cleanup();
  }

  service_process(const service_process&) = delete;
  service_process& operator=(const service_process&) = delete;

  /// The port the running service listens on (that of the latest start).
  unsigned short port() const {
    return port_;
  }

  /// A new blocking client for the service's current port.
  service::http::client client() const {
    return service::http::client{"127.0.0.1", port_};
  }

  /// The journal's URI (JetStream, PostgreSQL); empty when the journal is the file
  /// `db_path()`.
  const std::string& journal_uri() const {
    return journal_;
  }

  /// The journal file (with JetStream: the read models' file).
  std::string db_path() const {
    return db_.empty() ? (dir_ / "bank.db").string() : db_;
  }

  /// The process id of the running child; -1 when none runs.
  pid_t pid() const {
    return pid_;
  }

  /// Starts the service and waits, up to `bound`, for it to exit without listening.
  /// Returns its exit code (as `terminate` does); -1 if it listened or ran past `bound`
  /// (it is then SIGKILLed).
  int run_expecting_exit(std::chrono::milliseconds bound = std::chrono::seconds{30}) {
    spawn();
    auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return decode(status);
      }
      if (output().find("annals-bank listening on") != std::string::npos
          || std::chrono::steady_clock::now() >= deadline) {
        kill9();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
  }

  /// Whether a child was started and has not been reaped yet.
  bool running() const {
    return pid_ > 0;
  }

  /// SIGKILL, then waits for the child to be gone. No-op when nothing runs.
  void kill9() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    reap_blocking();
  }

  /// SIGTERM, then waits up to `bound` for the exit. Returns the exit code; 128 + the
  /// signal number when a signal ended the child; -1 when it did not end within `bound` (it
  /// is then SIGKILLed) or nothing ran.
  int terminate(std::chrono::milliseconds bound = std::chrono::seconds{45}) {
    if (pid_ <= 0)
      return -1;
    ::kill(pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
      int status = 0;
      auto r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return decode(status);
      }
      if (r < 0 && errno != EINTR) {
        pid_ = -1;
        return -1;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        kill9();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
  }

  /// Starts the service again on the same journal; a child that still runs is SIGKILLed
  /// first. The port may change.
  void restart() {
    kill9();
    start();
  }

  /// What the latest run printed so far (stdout and stderr).
  std::string output() const {
    std::ifstream in{log_path_, std::ios::binary};
    std::ostringstream all;
    all << in.rdbuf();
    return all.str();
  }

  /// What every run printed so far, oldest first.
  std::string all_output() const {
    std::string all;
    for (int i = 1; i <= runs_; ++i) {
      std::ifstream in{dir_ / ("run-" + std::to_string(i) + ".log"), std::ios::binary};
      std::ostringstream one;
      one << in.rdbuf();
      all += "--- run " + std::to_string(i) + " ---\n" + one.str();
    }
    return all;
  }

private:
  static int decode(int status) {
    if (WIFEXITED(status))
      return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
      return 128 + WTERMSIG(status);
    return -1;
  }

  void reap_blocking() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  void cleanup() noexcept {
    kill9();
    std::error_code ec;
    if (!dir_.empty())
      std::filesystem::remove_all(dir_, ec);
  }

  void start() {
    spawn();
    wait_until_listening();
  }

  void spawn() {
    ++runs_;
    log_path_ = dir_ / ("run-" + std::to_string(runs_) + ".log");
    std::string binary = ANNALS_BANK_BINARY;
    std::string db = db_path();
    std::vector<std::string> args{binary, "--db", db, "--port", "0", "--host", "127.0.0.1"};
    if (!journal_.empty()) {
      args.emplace_back("--journal");
      args.push_back(journal_);
    }
    if (statement_files_) {
      args.emplace_back("--statements-dir");
      args.push_back(statements_dir());
    }
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    pid_ = annals::persistence::test::spawn_logged(std::move(args), log_path_);
  }

  // Polls the log for the start-up line, bounded by `start_bound`; fails at once when the
  // child exits first.
  void wait_until_listening() {
    static constexpr std::string_view marker = "annals-bank listening on http://127.0.0.1:";
    auto deadline = std::chrono::steady_clock::now() + start_bound;
    for (;;) {
      auto text = output();
      if (auto at = text.find(marker); at != std::string::npos) {
        auto digits = at + marker.size();
        auto end = digits;
        while (end < text.size() && text[end] >= '0' && text[end] <= '9')
          ++end;
        // The number counts once a character follows it (the line is complete).
        if (end > digits && end < text.size()) {
          auto p = std::stoul(text.substr(digits, end - digits));
          if (p == 0 || p > 65535) {
            kill9();
            throw std::runtime_error{"annals-bank printed an invalid port:\n" + text};
          }
          port_ = static_cast<unsigned short>(p);
          return;
        }
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error{"annals-bank exited (status " + std::to_string(decode(status))
                                 + ") before listening:\n" + output()};
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        kill9();
        throw std::runtime_error{"annals-bank did not listen within "
                                 + std::to_string(start_bound.count()) + " s:\n" + output()};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
  }

  std::filesystem::path dir_;
  std::string db_;      // empty: bank.db in dir_
  std::string journal_; // empty: the journal is db_path()
  std::vector<std::string> extra_args_;
  std::filesystem::path log_path_;
  pid_t pid_ = -1;
  unsigned short port_ = 0;
  int runs_ = 0;
  bool statement_files_ = false;
};

} // namespace service_test

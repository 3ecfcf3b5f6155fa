#pragma once

// Helpers for the tests of the operator tool: a sample journal written by the bank's real
// aggregates and projections, temporary directories, a journal kept open in-process, and
// the tool binaries run as child processes with bounded waits.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#ifndef ANNALS_TOOL_BINARY
#error "ANNALS_TOOL_BINARY must name the annals executable"
#endif
#ifndef ANNALS_BANK_BINARY
#error "ANNALS_BANK_BINARY must name the annals-bank executable"
#endif
#ifndef ANNALS_SQLITE3_SHELL
#error "ANNALS_SQLITE3_SHELL must name the sqlite3 command-line shell"
#endif

namespace annals::persistence {
class sqlite_journal;
} // namespace annals::persistence

namespace tools_test {

inline const std::string tool = ANNALS_TOOL_BINARY;
inline const std::string bank = ANNALS_BANK_BINARY;
inline const std::string sqlite3_shell = ANNALS_SQLITE3_SHELL;

/// What the sample journal holds.
struct sample_facts {
  std::uint64_t events = 0; ///< also the head offset
};

/// The sample journal, written once per test process and closed: accounts acc-1 and acc-2
/// (acc-1: opened, +100, +50, -30, then -20 by transfer t1 to acc-2), transfer t1, match m1
/// (scheduled, kicked off, a goal), and one event of `audit|a1` with the tags `vip` and
/// `audit`, command id `cmd-9` and correlation id `corr-9`. The `balances` and `statement`
/// projections ran live into the same file; accounts were snapshotted every 2 events.
/// Commands are a few milliseconds apart, so no two events share a commit time.
const sample_facts& sample();

/// A fresh directory under the system's temp directory, removed with everything in it.
class temp_dir {
public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string file(std::string_view name) const {
    return (path_ / name).string();
  }

private:
  std::filesystem::path path_;
};

/// Copies the sample journal to `dir`/`name` and returns its path.
std::string copy_sample(const temp_dir& dir, std::string_view name = "bank.db");

/// A journal file opened in-process, as a running service holds it.
class live_journal {
public:
  explicit live_journal(const std::string& path);
  ~live_journal();
  /// Appends one event at the end of `persistence_id`; returns its offset.
  std::uint64_t append(const std::string& persistence_id, const std::string& name,
                       const std::string& payload, std::vector<std::string> tags = {});

private:
  std::shared_ptr<annals::persistence::sqlite_journal> journal_;
};

/// What a finished child printed and how it ended.
struct result {
  int code = -1; ///< exit code; 128 + N after signal N; -1 if it had to be killed
  std::string out;
  std::string err;
};

/// Runs `argv` (argv[0] is the executable's path) with `input` on stdin, waiting at most
/// `bound`.
result run(const std::vector<std::string>& argv, const std::string& input = {},
           std::chrono::milliseconds bound = std::chrono::seconds{60});

/// A child that keeps running (e.g. `events --follow`); SIGKILLed by the destructor if it
/// still runs.
class background {
public:
  explicit background(const std::vector<std::string>& argv);
  ~background();
  background(const background&) = delete;
  background& operator=(const background&) = delete;

  /// Reads the child's stdout until it contains `needle`; false if `bound` passed or the
  /// child closed its stdout first.
  bool wait_for_output(std::string_view needle, std::chrono::milliseconds bound);

  /// Sends `sig`, then waits at most `bound` for the exit and collects the rest of the
  /// output; returns the exit code as `result::code` does.
  int stop(int sig, std::chrono::milliseconds bound);

  const std::string& out() const {
    return out_;
  }
  const std::string& err() const {
    return err_;
  }

private:
  void pump(int timeout_ms);

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::string out_;
  std::string err_;
};

/// The lines of `text`, without their newlines.
std::vector<std::string> lines(const std::string& text);

} // namespace tools_test

#pragma once

// Helpers shared by the persistence tests: blocking wrappers with a generous bound (a
// hung journal fails the test instead of hanging it), temporary directories, and one
// fixture per journal implementation for the contract suite.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "annals/persistence/blocking.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/persistence/memory_journal.hpp"
#include "annals/persistence/sqlite_journal.hpp"

// 1 in a ThreadSanitizer build: tests that fork a child which starts threads skip
// themselves there (TSan does not follow a process that starts threads after a fork).
#if defined(__SANITIZE_THREAD__)
#define ANNALS_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ANNALS_TEST_TSAN 1
#endif
#endif
#ifndef ANNALS_TEST_TSAN
#define ANNALS_TEST_TSAN 0
#endif

namespace annals::persistence::test {

/// How long any single wait may take before the test fails; never reached when things work.
inline constexpr std::chrono::milliseconds bound{30'000};

/// A fresh directory under the system's temp directory, removed with its contents.
class temp_dir {
public:
  temp_dir() {
    std::random_device rd;
    auto base = std::filesystem::temp_directory_path();
    for (;;) {
      path_ = base / ("annals-test-" + std::to_string(rd()));
      if (std::filesystem::create_directory(path_))
        break;
    }
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  std::string file(const std::string& name) const {
    return (path_ / name).string();
  }
  const std::filesystem::path& path() const {
    return path_;
  }

private:
  std::filesystem::path path_;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return std::string{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

inline std::vector<std::string> list_dir(const std::filesystem::path& dir) {
  std::vector<std::string> result;
  for (const auto& entry : std::filesystem::directory_iterator{dir})
    result.push_back(entry.path().filename().string());
  std::sort(result.begin(), result.end());
  return result;
}

inline encoded_event ev(std::string name, std::string payload = "{}",
                        std::vector<std::string> tags = {}) {
  return encoded_event{std::move(name), 1, std::move(payload), std::move(tags)};
}

inline caf::expected<append_result> append(journal& j, std::string pid, std::uint64_t expected,
                                           std::vector<encoded_event> events,
                                           event_metadata md = {}) {
  append_request req{std::move(pid), expected, std::move(events), std::move(md)};
  return wait_for<append_result>(
    [&](callback<append_result> done) { j.append(std::move(req), std::move(done)); }, bound);
}

inline caf::expected<std::vector<event_record>> read_stream(journal& j, std::string pid,
                                                            std::uint64_t from = 1,
                                                            std::uint64_t to = UINT64_MAX,
                                                            std::size_t max = SIZE_MAX) {
  return wait_for<std::vector<event_record>>(
    [&](callback<std::vector<event_record>> done) {
      j.read_stream(pid, from, to, max, std::move(done));
    },
    bound);
}

inline caf::expected<std::vector<event_record>> read_all(journal& j, std::uint64_t from = 1,
                                                         std::size_t max = SIZE_MAX) {
  return wait_for<std::vector<event_record>>(
    [&](callback<std::vector<event_record>> done) { j.read_all(from, max, std::move(done)); },
    bound);
}

inline caf::expected<std::vector<event_record>>
read_tagged(journal& j, std::string tag, std::uint64_t from = 1, std::size_t max = SIZE_MAX) {
  return wait_for<std::vector<event_record>>(
    [&](callback<std::vector<event_record>> done) {
      j.read_tagged(tag, from, max, std::move(done));
    },
    bound);
}

inline caf::expected<std::uint64_t> highest_seq(journal& j, std::string pid) {
  return wait_for<std::uint64_t>(
    [&](callback<std::uint64_t> done) { j.highest_seq(pid, std::move(done)); }, bound);
}

inline caf::expected<std::uint64_t> head_offset(journal& j) {
  return wait_for<std::uint64_t>(
    [&](callback<std::uint64_t> done) { j.head_offset(std::move(done)); }, bound);
}

inline caf::expected<std::vector<std::string>> persistence_ids(journal& j, std::string after,
                                                               std::size_t max) {
  return wait_for<std::vector<std::string>>(
    [&](callback<std::vector<std::string>> done) {
      j.persistence_ids(after, max, std::move(done));
    },
    bound);
}

/// Counts arrivals from any thread; `wait` blocks until `n` arrived or the bound passed.
class countdown {
public:
  void arrive() {
    std::lock_guard guard{mtx_};
    ++count_;
    cv_.notify_all();
  }
  bool wait(std::size_t n) {
    std::unique_lock lk{mtx_};
    return cv_.wait_for(lk, bound, [&] { return count_ >= n; });
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::size_t count_ = 0;
};

/// Contract-suite fixture for `memory_journal`: "reopening" hands back the same instance,
/// the only way memory survives.
struct memory_backend {
  static constexpr bool persistent = false;
  /// Offsets are the events' ordinals: 1, 2, 3, ...
  static constexpr bool gapless = true;
  /// The offset of the `event_no`th event (1-based), the `index`th (0-based) of the
  /// `append_no`th successful append (1-based).
  static std::uint64_t at(std::uint64_t event_no, std::uint64_t, std::uint64_t) {
    return event_no;
  }
  std::shared_ptr<memory_journal> instance = std::make_shared<memory_journal>();

  journal_ptr open() {
    return instance;
  }
  /// The journal the read cases read `j` through: `j` itself.
  journal_ptr reader(journal_ptr& j) {
    return j;
  }
  journal_ptr reopen(journal_ptr& j) {
    j.reset();
    return instance;
  }
  snapshot_store_ptr snapshots(journal_ptr&, std::size_t keep) {
    return std::make_shared<memory_snapshot_store>(keep);
  }
};

/// Contract-suite fixture for `sqlite_journal` on a fresh file.
struct sqlite_backend {
  static constexpr bool persistent = true;
  static constexpr bool gapless = true;
  static std::uint64_t at(std::uint64_t event_no, std::uint64_t, std::uint64_t) {
    return event_no;
  }
  temp_dir dir;

  journal_ptr open(std::size_t keep_snapshots = 2) {
    auto res =
      sqlite_journal::open({.path = dir.file("journal.db"), .keep_snapshots = keep_snapshots});
    if (!res)
      FAIL(render(res.error()));
    return *res;
  }
  journal_ptr reader(journal_ptr& j) {
    return j;
  }
  journal_ptr reopen(journal_ptr& j) {
    std::static_pointer_cast<sqlite_journal>(j)->close();
    j.reset();
    return open();
  }
  snapshot_store_ptr snapshots(journal_ptr& j, std::size_t keep) {
    std::static_pointer_cast<sqlite_journal>(j)->close();
    j = open(keep);
    return std::static_pointer_cast<sqlite_journal>(j)->snapshots();
  }
};

/// Read-case fixture for `sqlite_journal` opened read-only: the cases write through a
/// writer on a fresh file and read through a second, read-only journal opened on the same
/// file while the writer still has it open (as the operator tool reads a running service's
/// journal).
struct sqlite_readonly_backend : sqlite_backend {
  journal_ptr reader(journal_ptr&) {
    auto res = sqlite_journal::open_read_only(dir.file("journal.db"));
    if (!res)
      FAIL(render(res.error()));
    REQUIRE((*res)->read_only());
    return *res;
  }
};

} // namespace annals::persistence::test

#pragma once

/// @file
/// The journal contract kept in memory: for tests, samples and tools that need no file.
///
/// ```cpp
/// auto journal = std::make_shared<annals::persistence::memory_journal>();
/// journal->append({.persistence_id = "account|acc-1", .expected_seq = 0,
///                  .events = {{.name = "bank.deposited", .payload = R"({"cents":5})"}}},
///                 [](caf::expected<append_result> res) { ... });  // runs inline
/// ```
///
/// Every operation completes inline on the calling thread before the call returns. The
/// journal is thread-safe; callbacks and commit listeners run without any internal lock
/// held, so they may call back into the journal (but must not block waiting on it).

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "annals/persistence/journal.hpp"

namespace annals::persistence {

/// A thread-safe journal in memory; see the file comment.
///
/// Commit listeners see every batch exactly once, in offset order. A batch committed by
/// one thread while another thread is delivering to listeners is delivered by that other
/// thread, so a listener may see a batch after the append's own callback has run.
class memory_journal final : public journal {
public:
  /// `max_append_bytes`: see `default_max_append_bytes` (0: no bound).
  explicit memory_journal(std::size_t max_append_bytes = default_max_append_bytes);
  ~memory_journal() override;

  void append(append_request req, callback<append_result> done) override;
  void read_stream(std::string persistence_id, std::uint64_t from_seq, std::uint64_t to_seq,
                   std::size_t max, callback<std::vector<event_record>> done) override;
  void read_all(std::uint64_t from_offset, std::size_t max,
                callback<std::vector<event_record>> done) override;
  void read_tagged(std::string tag, std::uint64_t from_offset, std::size_t max,
                   callback<std::vector<event_record>> done) override;
  void highest_seq(std::string persistence_id, callback<std::uint64_t> done) override;
  void head_offset(callback<std::uint64_t> done) override;
  void persistence_ids(std::string after, std::size_t max,
                       callback<std::vector<std::string>> done) override;
  std::uint64_t subscribe(commit_listener f) override;
  void unsubscribe(std::uint64_t handle) override;
  /// Offsets are 1, 2, 3, ... without gaps.
  [[nodiscard]] bool gapless_offsets() const noexcept override {
    return true;
  }

  /// Makes every later append fail with `err` (e.g. `journal_errc::disk_full`) until
  /// called with a default-constructed error. A fault-injection hook for tests.
  void fail_appends_with(caf::error err);

private:
  void commit(append_request& req, append_result& res);
  void deliver_pending();

  std::size_t max_append_bytes_;
  std::mutex mtx_;
  std::vector<event_record> events_; // index = offset - 1
  std::unordered_map<std::string, std::vector<std::size_t>> streams_;
  std::unordered_map<std::string, std::vector<std::size_t>> tagged_;
  std::map<std::string, std::uint64_t> ids_; // sorted for `persistence_ids`
  std::map<std::uint64_t, std::shared_ptr<commit_listener>> listeners_;
  std::uint64_t next_listener_ = 1;
  std::deque<std::vector<event_record>> undelivered_;
  bool delivering_ = false;
  caf::error injected_failure_;
};

/// A thread-safe snapshot store in memory that keeps the newest `keep` snapshots per
/// stream. Operations complete inline.
class memory_snapshot_store final : public snapshot_store {
public:
  explicit memory_snapshot_store(std::size_t keep = 2);
  ~memory_snapshot_store() override;

  void save(snapshot_record snap, callback<caf::unit_t> done) override;
  void load(std::string persistence_id, callback<std::vector<snapshot_record>> done) override;

private:
  std::size_t keep_;
  std::mutex mtx_;
  std::unordered_map<std::string, std::map<std::uint64_t, snapshot_record>> snaps_;
};

} // namespace annals::persistence

#pragma once

// The state a `sqlite_journal` shares with its threads: the writer's and the readers'
// queues, the threads themselves, commit listeners and counters; and what each thread
// owns (its connection and prepared statements).

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include "annals/persistence/audit.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "sqlite/handles.hpp"
#include "sqlite/owner_lock.hpp"

namespace annals::persistence::sqlite {

struct writer_state;
struct reader_state;

/// An append waiting for the writer.
struct append_item {
  append_request req;
  callback<append_result> done;
};

/// A snapshot save waiting for the writer.
struct snapshot_item {
  snapshot_record snap;
  callback<caf::unit_t> done;
};

/// Work run on the writer thread between two transactions.
struct control_item {
  std::function<void(writer_state&)> run;
};

using write_item = std::variant<append_item, snapshot_item, control_item>;

using read_task = std::function<void(reader_state&)>;

/// Everything the writer thread owns; no other thread touches it.
struct writer_state {
  // Declared first, so released last: after the connection has closed.
  owner_lock owner;
  std::string path;
  std::size_t keep_snapshots = 2;
  std::size_t seq_cache_entries = 0;
  connection conn;
  statement begin, commit, rollback, savepoint, release, rollback_to;
  statement max_offset, max_seq, insert_event, insert_tag, head_hash;
  statement insert_snapshot, trim_snapshots;
  // Inline projections (inline.hpp) and their statements; prepared only if there are any.
  std::vector<sqlite_inline_projection> inlines;
  statement get_inline_offset, set_inline_offset, read_after;
  // Highest seq per stream as of the last commit; the UNIQUE index stays the authority.
  std::unordered_map<std::string, std::uint64_t> seq_cache;
  std::string tags_buf;
  // The hash chain's value after the newest event, within the current transaction.
  event_hash chain{};
};

/// Everything one reader thread owns.
struct reader_state {
  std::string path;
  connection conn;
  statement stream, all, tagged, highest, head, ids, snapshots;
};

} // namespace annals::persistence::sqlite

namespace annals::persistence {

struct sqlite_journal::impl {
  sqlite_options opts;
  sqlite_journal_info info;

  std::mutex write_mtx;
  std::condition_variable write_cv;
  std::deque<sqlite::write_item> write_queue;
  bool write_stop = false;

  std::mutex read_mtx;
  std::condition_variable read_cv;
  std::deque<sqlite::read_task> read_queue;
  bool read_stop = false;

  std::mutex threads_mtx;
  std::vector<std::thread> threads;
  std::mutex readers_mtx;
  std::condition_variable readers_cv;
  std::size_t live_readers = 0;

  std::mutex listeners_mtx;
  std::map<std::uint64_t, std::shared_ptr<commit_listener>> listeners;
  std::uint64_t next_listener = 1;
  std::atomic<bool> has_listeners{false};

  std::atomic<std::uint64_t> appends{0};
  std::atomic<std::uint64_t> events{0};
  std::atomic<std::uint64_t> failed_appends{0};
  std::atomic<std::uint64_t> transactions{0};
  std::atomic<std::uint64_t> largest_batch{0};
  std::array<std::atomic<std::uint64_t>, sqlite_journal_stats::batch_bounds.size() + 1>
    batch_histogram{};
  std::array<std::atomic<std::uint64_t>, sqlite_journal_stats::commit_bounds_us.size() + 1>
    commit_histogram{};
  std::atomic<std::uint64_t> commit_us_sum{0};
  std::atomic<std::uint64_t> batch_writes_sum{0};

  /// Adds `value` to the bucket of `histogram` whose bound first reaches it.
  template <std::size_t N>
  static void count(std::array<std::atomic<std::uint64_t>, N + 1>& histogram,
                    const std::array<std::uint64_t, N>& bounds, std::uint64_t value) {
    auto i = static_cast<std::size_t>(std::lower_bound(bounds.begin(), bounds.end(), value)
                                      - bounds.begin());
    histogram[i].fetch_add(1, std::memory_order_relaxed);
  }

  /// Queues `item` for the writer (moving from it); false, leaving it intact, if the
  /// journal is closed.
  bool submit_write(sqlite::write_item& item);

  /// Queues `task` for a reader; false if the journal is closed.
  bool submit_read(sqlite::read_task&& task);

  /// `journal_errc::read_only` for a write to a read-only journal: names the file and
  /// says it was opened read-only, then `what` was not done.
  caf::error refuse_write(const std::string& what) const;

  /// Stops the threads once their queues are empty; see `sqlite_journal::close`.
  void close();

  /// Serves the read queue until it is closed and empty.
  void reader_loop(sqlite::reader_state& r);

  /// Takes every waiting write (up to `max_batch`) into one group commit until the write
  /// queue is closed and empty (writer.cpp).
  void writer_loop(sqlite::writer_state& w);
};

} // namespace annals::persistence

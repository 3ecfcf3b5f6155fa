#pragma once

/// @file
/// The journal contract on one SQLite file, with group commit, and a snapshot store in
/// the same file.
///
/// ```cpp
/// using namespace annals::persistence;
/// auto journal = sqlite_journal::open({.path = "bank.journal",
///                                      .durability = durability_level::full});
/// if (!journal)
///   return fail(annals::render(journal.error()));  // e.g. journal.not_a_journal: ...
/// (*journal)->append(std::move(req), [](caf::expected<append_result> res) { ... });
/// auto snapshots = (*journal)->snapshots();
/// ```
///
/// How it works (docs/journal.md has the details and the measured figures):
/// - **One writer thread** with its own connection takes every append that is waiting when
///   it becomes free and writes them in one transaction (group commit: one fsync for the
///   batch). Each append inside the batch is atomic on its own (a savepoint): a conflict or
///   a failure rolls back that append alone. Completion callbacks and commit listeners then
///   run on the writer thread, listeners first.
/// - **Reader threads** with their own connections serve all reads, so replay and
///   projections never stall writes and no caller ever blocks on SQLite I/O.
/// - The file is an annals journal only if its `application_id` says so; a file that is
///   not one, or one with a newer schema version, is refused without writing to it.
/// - **One owner**: a writer takes an exclusive owner lock (`sqlite_options::owner_lock`);
///   a second writer on the same file, in any process, is refused with
///   `journal_errc::owned`, naming the process that owns it.
/// - **Read-only mode** (`sqlite_options::read_only`, `open_read_only`): reader threads
///   only, on read-only connections, for a file another process may be writing; no schema
///   change and no write, ever.
/// - UPDATE and DELETE on the event tables are refused by triggers inside the file.
/// - Errors: SQLITE_FULL becomes `journal_errc::disk_full`, SQLITE_READONLY becomes
///   `journal_errc::read_only`, a duplicate (persistence id, seq) becomes
///   `journal_errc::conflict`, anything else `journal_errc::storage_error`; the context
///   names the file, the persistence id and SQLite's own message.

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "annals/persistence/audit.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/persistence/sqlite_read_model.hpp"

namespace annals::persistence {

/// What an acknowledged append survives.
enum class durability_level : std::uint8_t {
  /// `synchronous=FULL`: the WAL is fsynced before an append is acknowledged, so an
  /// acknowledged event survives power loss.
  full,
  /// `synchronous=NORMAL`: survives a crash of the process; a power loss may drop the most
  /// recently acknowledged commits (never corrupts the file).
  normal,
};

/// Options of `sqlite_journal::open`; meant for designated initializers.
struct sqlite_options {
  /// The journal file; created (with its schema) if it does not exist.
  std::string path;
  /// See `durability_level`.
  durability_level durability = durability_level::full;
  /// Most appends and snapshot saves written in one transaction.
  std::size_t max_batch = 4096;
  /// Reader threads, each with its own connection.
  std::size_t readers = 1;
  /// Appends whose `encoded_size` exceeds this fail with `journal_errc::too_large` and
  /// write nothing (0: no bound; see `default_max_append_bytes`).
  std::size_t max_append_bytes = default_max_append_bytes;
  /// Refuse to open a file that does not exist yet instead of creating it.
  bool must_exist = false;
  /// Open an existing journal for reading only, e.g. one a running service writes to:
  /// no schema is created or upgraded, no writer thread starts and nothing is ever
  /// written to the file. `append`, snapshot saves and `set_max_page_count` fail with
  /// `journal_errc::read_only`, naming the file. Reads see every commit, also those another
  /// process makes after opening (WAL readers never block that writer); commit listeners
  /// are never called, since no commit happens through this journal. The file must exist
  /// and be an annals journal of any schema version up to this build's, or `open` fails
  /// (`storage_error` for a missing file, `not_a_journal`, `newer_schema`).
  bool read_only = false;
  /// Take the journal's owner lock (a writer only; a read-only journal never takes it):
  /// an exclusive `flock` on the file `PATH.owner` beside the journal, held until `close`
  /// and released by the kernel when the process ends, however it ends (`kill -9`
  /// included; the file may stay, the lock does not). The file names the owner (pid,
  /// host, program, start time). While one journal holds it, `open` of the same file in
  /// any process, this one included, fails with `journal_errc::owned`, naming the file
  /// and that owner (after waiting up to 1 s for an owner in another process, which may be
  /// a process killed a moment ago that the kernel is still tearing down): one process at a time
  /// owns a SQLite journal, and several processes need a networked journal. Turn it off only to
  /// test what the journal does with two writers (it still detects their conflicting appends; see
  /// docs/journal.md).
  bool owner_lock = true;
  /// How long a connection waits for another connection's lock (the writer for another
  /// process's write transaction; a read-only journal while opening).
  std::chrono::milliseconds busy_timeout{10'000};
  /// Snapshots kept per persistence id by `snapshots()` (at least 1).
  std::size_t keep_snapshots = 2;
  /// Highest sequence numbers cached by the writer; the cache is dropped when it grows
  /// past this and refilled from the index on demand.
  std::size_t seq_cache_entries = 1'000'000;
  /// Read models written inside the append transactions (sqlite_read_model.hpp): each
  /// event of an append is applied to every one of them in the append's savepoint, so an
  /// acknowledged append implies the models hold it, and a model that throws fails that
  /// append alone (`journal_errc::projection_failed`, nothing of it written). Their tables
  /// live in the journal file; each keeps its offset in the file's `projection_offsets`
  /// table, updated in the same transactions. `open` creates their schemas and brings a
  /// model that is behind (new, or rebuilt) up to the head before any append; see
  /// `rebuild_inline`. A read-only journal refuses them.
  std::vector<sqlite_inline_projection> inline_projections;
  /// If nonzero, `PRAGMA max_page_count` for the writer: a test hook that simulates a
  /// full disk. See also `sqlite_journal::set_max_page_count`.
  std::uint64_t max_page_count = 0;
};

/// Counters of a `sqlite_journal` since it was opened.
struct sqlite_journal_stats {
  std::uint64_t appends = 0;        ///< appends committed
  std::uint64_t events = 0;         ///< events committed
  std::uint64_t failed_appends = 0; ///< appends answered with an error
  std::uint64_t transactions = 0;   ///< write transactions committed (one fsync each)
  std::uint64_t largest_batch = 0;  ///< most writes committed by one transaction

  /// Upper bounds (inclusive) of the `batch_histogram` buckets; a last bucket counts the
  /// larger batches.
  static constexpr std::array<std::uint64_t, 12> batch_bounds{1,  2,   4,   8,   16,   32,
                                                              64, 128, 256, 512, 1024, 4096};
  /// Committed transactions by number of writes (appends and snapshot saves).
  std::array<std::uint64_t, batch_bounds.size() + 1> batch_histogram{};
  /// Writes committed in all those transactions.
  std::uint64_t batch_writes_sum = 0;

  /// Upper bounds (inclusive, microseconds) of the `commit_histogram` buckets; a last
  /// bucket counts the slower ones.
  static constexpr std::array<std::uint64_t, 12> commit_bounds_us{
    100, 250, 500, 1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000, 250'000, 1'000'000};
  /// Committed transactions by duration, from BEGIN to the end of COMMIT (the fsync).
  std::array<std::uint64_t, commit_bounds_us.size() + 1> commit_histogram{};
  /// Sum of those durations, microseconds.
  std::uint64_t commit_us_sum = 0;
};

/// What the file and the writer connection actually use, read back after opening.
struct sqlite_journal_info {
  std::string path;
  std::string journal_mode;         ///< `wal`
  int synchronous = 0;              ///< SQLite's code: 1 = NORMAL, 2 = FULL (the writer's)
  std::uint32_t schema_version = 0; ///< the file's `user_version`
  bool created = false;             ///< true if `open` created the file's schema
  bool read_only = false;           ///< opened with `sqlite_options::read_only`
};

class sqlite_snapshot_store;

/// The journal contract on a SQLite file; see the file comment.
class sqlite_journal final : public journal {
public:
  /// The schema version this build writes (`PRAGMA user_version`).
  static constexpr std::uint32_t schema_version = 2;

  /// The `PRAGMA application_id` that marks a file as an annals journal (`ANNL`).
  static constexpr std::int32_t application_id = 0x414E4E4C;

  /// Opens (or creates) the journal at `opts.path` and starts its threads; with
  /// `opts.read_only`, opens an existing journal for reading only (see `sqlite_options`).
  ///
  /// Fails with `journal_errc::not_a_journal` if the file exists but is not an annals
  /// journal (a SQLite file of another application, or not SQLite at all), with
  /// `journal_errc::newer_schema` if a newer annals wrote it, and with
  /// `journal_errc::storage_error` if SQLite cannot open it, and with `journal_errc::owned`
  /// if another journal (in any process) owns the file; in all those cases the file is
  /// left exactly as it was.
  static caf::expected<std::shared_ptr<sqlite_journal>> open(sqlite_options opts);

  /// `open` with `read_only` set: the journal at `path`, for reading only, waiting at most
  /// `busy_timeout` for a lock while opening.
  ///
  /// ```cpp
  /// auto journal = sqlite_journal::open_read_only("bank.journal");
  /// (*journal)->read_all(1, 100, [](caf::expected<std::vector<event_record>> page) { ... });
  /// ```
  static caf::expected<std::shared_ptr<sqlite_journal>>
  open_read_only(std::string path,
                 std::chrono::milliseconds busy_timeout = std::chrono::milliseconds{10'000});

  /// Whether the journal was opened with `read_only`.
  bool read_only() const;

  /// Closes the journal; see `close`.
  ~sqlite_journal() override;

  sqlite_journal(const sqlite_journal&) = delete;
  sqlite_journal& operator=(const sqlite_journal&) = delete;

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

  /// Finishes every operation already submitted, then stops the threads and closes the
  /// connections. Operations submitted afterwards fail with `journal_errc::closed`.
  /// Idempotent. Called from one of the journal's own callbacks, it stops the threads
  /// without waiting for the calling one.
  void close();

  /// A snapshot store in the same file whose saves join the writer's group commits and
  /// whose loads run on the reader threads. It keeps `keep_snapshots` per stream.
  std::shared_ptr<sqlite_snapshot_store> snapshots();

  /// Counters since opening (read without waiting for the threads).
  sqlite_journal_stats stats() const;

  /// The settings read back from the file after opening.
  const sqlite_journal_info& info() const;

  /// Sets `PRAGMA max_page_count` on the writer connection, between two transactions, and
  /// reports the value in effect (SQLite never sets it below the file's current size).
  /// A test hook: a small limit makes appends fail as on a full disk.
  void set_max_page_count(std::uint64_t pages, callback<std::uint64_t> done);

  /// Rebuilds the inline projection `name` (see `sqlite_options::inline_projections`)
  /// between two group commits, in one transaction: its model's `reset`, offset 0, then
  /// every event of the journal applied again; reports the offset it reached (the head).
  /// Appends wait meanwhile. Fails with `journal_errc::invalid_request` for a name that is
  /// not an inline projection of this journal, `journal_errc::projection_failed` if the
  /// model throws (nothing of the rebuild is kept then).
  void rebuild_inline(std::string name, callback<std::uint64_t> done);

  /// Recomputes the hash chain over every event of the journal file at `path`, in offset
  /// order, on a read-only connection (the file may be in use), and reports the first
  /// event that does not match (see audit.hpp). Fails for a file that is not a journal.
  static caf::expected<verify_report> verify(const std::string& path);

  /// Internal state shared with the journal's threads.
  struct impl;

private:
  explicit sqlite_journal(std::shared_ptr<impl> ptr);

  std::shared_ptr<impl> impl_;
};

/// Snapshots in a `sqlite_journal`'s file (table `snapshots`); obtain one with
/// `sqlite_journal::snapshots()`. Unlike events, old snapshots are deleted: each save
/// keeps the newest `keep_snapshots` of its stream.
class sqlite_snapshot_store final : public snapshot_store {
public:
  explicit sqlite_snapshot_store(std::shared_ptr<sqlite_journal::impl> ptr);
  ~sqlite_snapshot_store() override;

  void save(snapshot_record snap, callback<caf::unit_t> done) override;
  void load(std::string persistence_id, callback<std::vector<snapshot_record>> done) override;

private:
  std::shared_ptr<sqlite_journal::impl> impl_;
};

} // namespace annals::persistence

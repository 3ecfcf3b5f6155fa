#pragma once

/// @file
/// The journal contract on PostgreSQL (15 or newer), with group commit, and a snapshot
/// store in the same database.
///
/// ```cpp
/// using namespace annals::persistence;
/// auto journal = postgres_journal::open({.conninfo = "host=127.0.0.1 dbname=bank user=bank"});
/// if (!journal)
///   return fail(annals::render(journal.error()));  // e.g. journal.unavailable: ...
/// (*journal)->append(std::move(req), [](caf::expected<append_result> res) { ... });
/// auto snapshots = (*journal)->snapshots();
/// ```
///
/// How it works (docs/postgres.md has the details and the measured figures):
/// - **One writer thread** with its own connection takes every append waiting when it
///   becomes free and writes them in one transaction (group commit). Each append is atomic
///   on its own: the writer checks the expected seqs against the highest ones it reads under
///   its lock (below), so a conflict fails that append alone, and loads the others with
///   `COPY ... FROM STDIN`; should that fail anyway (a writer that ignores the lock, an
///   error of the server), it writes them again with INSERTs, one savepoint per append, so
///   that the failure rolls back only the append that caused it.
/// - **Gapless offsets, visible in order.** The writer takes a transaction-level advisory
///   lock before it reads the highest offset, numbers the batch's events from there and
///   holds the lock until its commit is visible. Writers of other journals (in any process)
///   on the same database take the same lock, so commits happen one after the other in
///   offset order: a reader never sees offset N + 1 before N, and offsets have no holes.
/// - **Subscriptions** are woken by `LISTEN`/`NOTIFY` (every writer notifies on commit) on a
///   connection of their own, and read the committed events by offset, so they also see
///   what other journals on the same database append.
/// - **Reader threads** with their own connections serve all reads and snapshot saves.
/// - The database holds an annals journal only if its `annals_schema` table says so; a
///   database with a table `events` but no such marker, or a newer schema version, is
///   refused without writing to it.
/// - UPDATE, DELETE and TRUNCATE on the event tables are refused by triggers.
/// - Errors: a duplicate (persistence id, seq) (SQLSTATE 23505) or a stream whose highest
///   seq is not the expected one becomes `journal_errc::conflict`; a lost or refused
///   connection `journal_errc::unavailable`; SQLSTATE 53100 `journal_errc::disk_full`;
///   anything else `journal_errc::storage_error`. The context names the server, the
///   database, the persistence id and PostgreSQL's own message. An append whose COMMIT was
///   sent when the connection broke says that its outcome is unknown. The writer
///   reconnects on the next append.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "annals/persistence/audit.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::persistence {

/// Options of `postgres_journal::open`; meant for designated initializers.
struct postgres_options {
  /// A libpq connection string, e.g. `host=127.0.0.1 port=5432 dbname=bank user=bank`
  /// (keywords as in PostgreSQL's documentation, "Connection Strings").
  std::string conninfo;
  /// Most appends written in one transaction.
  std::size_t max_batch = 4096;
  /// Reader threads, each with its own connection (at least 1).
  std::size_t readers = 1;
  /// Appends whose `encoded_size` exceeds this fail with `journal_errc::too_large` and
  /// write nothing (0: no bound; see `default_max_append_bytes`).
  std::size_t max_append_bytes = default_max_append_bytes;
  /// Snapshots kept per persistence id by `snapshots()` (at least 1).
  std::size_t keep_snapshots = 2;
  /// How long one connection attempt may take.
  std::chrono::milliseconds connect_timeout{10'000};
  /// The longest pause between two attempts of the subscription connection to reconnect
  /// after it lost the server (the pause doubles from 50 ms up to this).
  std::chrono::milliseconds max_reconnect_delay{2'000};
};

/// What the server and the writer connection actually use, read back after opening.
struct postgres_journal_info {
  std::string server;               ///< `host:port/dbname`
  std::string server_version;       ///< e.g. `15.5`
  std::string synchronous_commit;   ///< the writer's setting: `on`
  std::uint32_t schema_version = 0; ///< the database's `annals_schema` version
  bool created = false;             ///< true if `open` created the schema
};

class postgres_snapshot_store;

/// The journal contract on PostgreSQL; see the file comment.
class postgres_journal final : public journal {
public:
  /// The schema version this build writes (table `annals_schema`).
  static constexpr std::uint32_t schema_version = 1;

  /// The key of the transaction-level advisory lock every writer holds from reading the
  /// highest offset until its commit (`pg_advisory_xact_lock`).
  static constexpr std::int64_t offset_lock_key = 0x414E4E4C0001;

  /// The `LISTEN`/`NOTIFY` channel every writer notifies on commit.
  static constexpr const char* channel = "annals_events";

  /// Connects, creates the schema if the database has none, and starts the threads.
  ///
  /// Fails with `journal_errc::unavailable` if the server cannot be reached, with
  /// `journal_errc::not_a_journal` if the database has a table `events` without the annals
  /// marker, with `journal_errc::newer_schema` if a newer annals created it, and with
  /// `journal_errc::storage_error` for other failures; in those cases nothing is written.
  static caf::expected<std::shared_ptr<postgres_journal>> open(postgres_options opts);

  /// Closes the journal; see `close`.
  ~postgres_journal() override;

  postgres_journal(const postgres_journal&) = delete;
  postgres_journal& operator=(const postgres_journal&) = delete;

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

  /// Registers `f` for every batch committed from now on, by this journal or any other
  /// writer on the same database. Batches arrive in offset order on the subscription
  /// thread, after the commit; none is left out, also across a lost connection.
  std::uint64_t subscribe(commit_listener f) override;
  /// Removes a listener; once it returns, the listener is not called again (unless called
  /// from inside a listener, where the current delivery finishes).
  void unsubscribe(std::uint64_t handle) override;
  /// Offsets are 1, 2, 3, ... without gaps: every writer numbers its batch under one
  /// advisory lock, after the highest committed offset.
  [[nodiscard]] bool gapless_offsets() const noexcept override {
    return true;
  }

  /// Finishes every operation already submitted, then stops the threads and closes the
  /// connections. Operations submitted afterwards fail with `journal_errc::closed`.
  /// Idempotent. Called from one of the journal's own callbacks, it stops the threads
  /// without waiting for the calling one.
  void close();

  /// A snapshot store in the same database whose saves and loads run on the reader
  /// threads. It keeps `keep_snapshots` per stream.
  std::shared_ptr<postgres_snapshot_store> snapshots();

  /// The settings read back after opening.
  const postgres_journal_info& info() const;

  /// Recomputes the hash chain over every event in the database at `conninfo`, in offset
  /// order, in one repeatable-read transaction (the journal may be in use), and reports the
  /// first event that does not match (see audit.hpp).
  static caf::expected<verify_report> verify(const std::string& conninfo);

  /// Internal state shared with the journal's threads.
  struct impl;

private:
  explicit postgres_journal(std::shared_ptr<impl> ptr);

  std::shared_ptr<impl> impl_;
};

/// Snapshots in a `postgres_journal`'s database (table `snapshots`); obtain one with
/// `postgres_journal::snapshots()`. Unlike events, old snapshots are deleted: each save
/// keeps the newest `keep_snapshots` of its stream.
class postgres_snapshot_store final : public snapshot_store {
public:
  explicit postgres_snapshot_store(std::shared_ptr<postgres_journal::impl> ptr);
  ~postgres_snapshot_store() override;

  void save(snapshot_record snap, callback<caf::unit_t> done) override;
  void load(std::string persistence_id, callback<std::vector<snapshot_record>> done) override;

private:
  std::shared_ptr<postgres_journal::impl> impl_;
};

} // namespace annals::persistence

#pragma once

/// @file
/// Where an at-least-once projection remembers how far it got in the journal.
///
/// A projection stores the offset of the last event it has processed after each batch it
/// applied. On restart it reads the journal from the event after that offset, so an event
/// applied just before a crash (whose offset was not stored yet) is delivered again: the
/// handler sees each record's offset and de-duplicates where that matters.
///
/// ```cpp
/// using namespace annals::actors;
/// auto offsets = sqlite_offset_store::open({.path = "read-models.db"});
/// if (!offsets)
///   return fail(annals::render(offsets.error()));
/// auto balances = spawn_projection(sys, journal, handler,
///                                  {.name = "balances", .offsets = *offsets});
/// ```
///
/// Exactly-once projections into SQLite (`sqlite_projection_handler`) need no offset store:
/// they keep their offset in the read-model file itself.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <caf/error.hpp>
#include <caf/expected.hpp>

struct sqlite3;

namespace annals::actors {

/// Durable storage of projection offsets, keyed by projection name.
///
/// Called only from projection threads (never from a CAF scheduler thread), so an
/// implementation may block on I/O. Implementations are thread-safe: several projections
/// may share one store.
class offset_store {
public:
  virtual ~offset_store();

  /// The stored offset of `projection`: the last event it has processed, 0 if none.
  virtual caf::expected<std::uint64_t> load(const std::string& projection) = 0;

  /// Stores `offset` as the last event `projection` has processed, whatever was stored
  /// (a projection's reset stores 0 this way).
  virtual caf::error save(const std::string& projection, std::uint64_t offset) = 0;

  /// Compare-and-set: stores `offset` for `projection` if the stored offset is still
  /// `expected` (0 also matches a projection with none stored); otherwise stores nothing and
  /// fails with `projection_errc::offset_moved`, naming both offsets. A projection advances
  /// its offset this way after each batch, so that of two instances of one projection
  /// sharing a store (two processes), the second one to advance stops. The default runs
  /// `load` then `save`, atomic only against this process's own projections; the stores
  /// below override it with one atomic step.
  virtual caf::error advance(const std::string& projection, std::uint64_t expected,
                             std::uint64_t offset);
};

using offset_store_ptr = std::shared_ptr<offset_store>;

/// Offsets in memory: for tests and for read models that live in memory too (they are
/// rebuilt from the journal after a restart anyway).
///
/// ```cpp
/// auto offsets = std::make_shared<annals::actors::memory_offset_store>();
/// offsets->save("balances", 42);
/// assert(*offsets->load("balances") == 42);
/// ```
class memory_offset_store final : public offset_store {
public:
  memory_offset_store();
  ~memory_offset_store() override;

  caf::expected<std::uint64_t> load(const std::string& projection) override;
  caf::error save(const std::string& projection, std::uint64_t offset) override;
  caf::error advance(const std::string& projection, std::uint64_t expected,
                     std::uint64_t offset) override;

private:
  std::mutex mtx_;
  std::unordered_map<std::string, std::uint64_t> offsets_;
};

/// Options of `sqlite_offset_store::open`; meant for designated initializers.
struct sqlite_offset_store_options {
  /// Any SQLite file (a journal's, a read model's, or its own); the table
  /// `projection_offsets(name TEXT PRIMARY KEY, offset INTEGER)` is created if missing.
  std::string path;
  /// `synchronous=FULL` instead of `NORMAL`. Not needed for correctness: a power loss that
  /// drops the newest offsets only makes events arrive again, which at-least-once allows.
  bool fsync_each_save = false;
  /// How long a save waits for another connection's write transaction on the same file.
  std::chrono::milliseconds busy_timeout{10'000};
};

/// Offsets in the table `projection_offsets` of a SQLite file (WAL mode).
///
/// ```cpp
/// auto offsets = annals::actors::sqlite_offset_store::open({.path = "offsets.db"});
/// ```
class sqlite_offset_store final : public offset_store {
public:
  /// Opens (or creates) the file and the table. Fails with
  /// `projection_errc::offset_store_failed`, naming the file and SQLite's message.
  static caf::expected<std::shared_ptr<sqlite_offset_store>> open(sqlite_offset_store_options opts);

  ~sqlite_offset_store() override;
  sqlite_offset_store(const sqlite_offset_store&) = delete;
  sqlite_offset_store& operator=(const sqlite_offset_store&) = delete;

  caf::expected<std::uint64_t> load(const std::string& projection) override;
  caf::error save(const std::string& projection, std::uint64_t offset) override;
  /// One `UPDATE ... WHERE "offset" = expected` (an insert for a first offset): atomic
  /// also against other processes that share the file.
  caf::error advance(const std::string& projection, std::uint64_t expected,
                     std::uint64_t offset) override;

  struct impl;

private:
  explicit sqlite_offset_store(std::unique_ptr<impl> ptr);

  std::unique_ptr<impl> impl_;
};

/// Makes the SQLite connection `db` ready to keep projection offsets: WAL mode,
/// `synchronous=FULL` if `fsync` (else `NORMAL`), and the table
/// `projection_offsets(name TEXT PRIMARY KEY, "offset" INTEGER NOT NULL)` if missing. Every
/// offset store and read-model file creates the table through this function.
///
/// Switching a new file to WAL mode needs an exclusive lock for which SQLite reports
/// `SQLITE_BUSY` without calling the busy handler, so two connections opening one new file at
/// once would fail here: this retries until `busy_timeout` has passed. Returns false on
/// failure; `sqlite3_errmsg(db)` then says why.
///
/// ```cpp
/// if (!annals::actors::create_offsets_table(db, false, std::chrono::seconds{10}))
///   return fail(sqlite3_errmsg(db));
/// ```
[[nodiscard]] bool create_offsets_table(sqlite3* db, bool fsync,
                                        std::chrono::milliseconds busy_timeout);

} // namespace annals::actors

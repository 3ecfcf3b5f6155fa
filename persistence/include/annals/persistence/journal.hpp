#pragma once

/// @file
/// The journal contract: the asynchronous interface every event store implements (the
/// in-memory journal, the SQLite journal, and later networked, replicated backends).
///
/// Rules every implementation keeps (the contract suite in tests/persistence checks them):
/// - `append` writes all events of one request atomically, or none. The request names the
///   sequence number the writer last saw (`expected_seq`); the events get
///   `expected_seq + 1, ...`. If the stream's highest sequence number differs, nothing is
///   written and the result is `journal_errc::conflict`.
/// - Each committed event gets a global offset: strictly increasing in commit order, at least
///   1, and consecutive within one append. A reader that remembers the last offset it saw and
///   reads on from that offset + 1 never skips or repeats an event. The SQLite and in-memory
///   journals number events 1, 2, 3, ... without gaps; a journal whose log is ordered per
///   append rather than per event (NATS JetStream: `stream sequence * 1,000,000 + index`)
///   leaves gaps between appends, so readers must not infer a missing event from a gap;
///   `gapless_offsets()` says which kind a journal is.
/// - Reads are paged: each returns at most `max` records, in sequence or offset order.
/// - Completion callbacks may run on any thread (a journal's own worker thread, or inline
///   in the caller). They must return quickly and must not wait on the journal.
/// - One append request is one unit on the wire: a backend that cannot write several
///   messages atomically (NATS JetStream) stores the whole request as one record.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/expected.hpp>
#include <caf/unit.hpp>

#include "annals/error.hpp"
#include "annals/event.hpp"

namespace annals::persistence {

/// Errors of journals and snapshot stores (category `journal`).
enum class journal_errc : std::uint8_t {
  conflict = 1,      ///< the expected sequence number was not the stream's last one
  storage_error,     ///< the backend failed; the context names the cause
  disk_full,         ///< no space left; nothing of the write was stored
  corrupt_row,       ///< a stored row is malformed; the context names id and sequence number
  not_a_journal,     ///< the file is not an annals journal
  newer_schema,      ///< the file was written by a newer annals schema
  closed,            ///< the journal was closed
  invalid_request,   ///< e.g. an empty persistence id or an append without events
  read_only,         ///< the backend refuses writes
  too_large,         ///< an append over the journal's size limit; nothing was written
  owned,             ///< another process (or journal object) owns the file; see sqlite_options
  unavailable,       ///< a networked backend cannot be reached (no server, no leader); an
                     ///< append that fails so may or may not have been stored: read the
                     ///< stream's highest seq before writing again
  projection_failed, ///< an inline projection refused the append (its model threw); nothing
                     ///< of the append was written; the context names the model and event
};
BOOST_DESCRIBE_ENUM(journal_errc, conflict, storage_error, disk_full, corrupt_row, not_a_journal,
                    newer_schema, closed, invalid_request, read_only, too_large, owned, unavailable,
                    projection_failed)
constexpr std::string_view error_category(journal_errc) {
  return "journal";
}

/// An atomic write of events to one stream.
struct append_request {
  std::string persistence_id;        ///< the stream, e.g. `account|acc-42`
  std::uint64_t expected_seq = 0;    ///< highest sequence number the writer has seen
  std::vector<encoded_event> events; ///< at least one
  event_metadata metadata;           ///< stored with every event of this write
};

/// The size of an append as one record: the names, payloads and tags of its events, its
/// metadata once, and the persistence id. An append travels as one record so that backends
/// without multi-message transactions (NATS JetStream) can still write it atomically; such
/// backends bound a record's size, so every journal refuses an append larger than its
/// `max_append_bytes` with `journal_errc::too_large`.
std::size_t encoded_size(const append_request& req) noexcept;

/// The default bound on `encoded_size` of one append: 1 MiB, NATS JetStream's default
/// message size limit.
inline constexpr std::size_t default_max_append_bytes = std::size_t{1} << 20;

/// Where an append landed.
struct append_result {
  std::uint64_t first_seq = 0;
  std::uint64_t last_seq = 0;
  std::uint64_t first_offset = 0;
  std::uint64_t last_offset = 0;
  std::int64_t timestamp_us = 0; ///< commit time, microseconds since the Unix epoch
};

/// One stored event.
struct event_record {
  std::uint64_t offset = 0; ///< global position (see the file comment)
  std::string persistence_id;
  std::uint64_t seq = 0; ///< position within its stream, from 1
  std::string name;
  std::uint32_t version = 1;
  std::string payload; ///< JSON text
  std::vector<std::string> tags;
  std::int64_t timestamp_us = 0;
  event_metadata metadata;

  friend bool operator==(const event_record&, const event_record&) = default;
};

/// Completion callback of an asynchronous journal operation.
template <class T>
using callback = std::function<void(caf::expected<T>)>;

/// Called with each committed batch of events, in offset order, after the commit.
using commit_listener = std::function<void(const std::vector<event_record>&)>;

/// The journal contract; see the file comment.
class journal {
public:
  virtual ~journal();

  /// Appends `req.events` to `req.persistence_id` atomically.
  virtual void append(append_request req, callback<append_result> done) = 0;

  /// Events of one stream with `from_seq <= seq <= to_seq`, at most `max`, in order.
  virtual void read_stream(std::string persistence_id, std::uint64_t from_seq, std::uint64_t to_seq,
                           std::size_t max, callback<std::vector<event_record>> done) = 0;

  /// All events with `offset >= from_offset`, at most `max`, in offset order.
  virtual void read_all(std::uint64_t from_offset, std::size_t max,
                        callback<std::vector<event_record>> done) = 0;

  /// Events carrying `tag` with `offset >= from_offset`, at most `max`, in offset order.
  virtual void read_tagged(std::string tag, std::uint64_t from_offset, std::size_t max,
                           callback<std::vector<event_record>> done) = 0;

  /// The highest sequence number of a stream (0 if it has no events).
  virtual void highest_seq(std::string persistence_id, callback<std::uint64_t> done) = 0;

  /// The highest offset committed so far (0 if the journal is empty).
  virtual void head_offset(callback<std::uint64_t> done) = 0;

  /// Persistence ids greater than `after`, sorted, at most `max`.
  virtual void persistence_ids(std::string after, std::size_t max,
                               callback<std::vector<std::string>> done) = 0;

  /// Registers `f` for every batch committed from now on; returns a handle for
  /// `unsubscribe`. Batches arrive in offset order and none is left out.
  virtual std::uint64_t subscribe(commit_listener f) = 0;
  virtual void unsubscribe(std::uint64_t handle) = 0;

  /// True if offsets run 1, 2, 3, ... without gaps, so that a reader may take a jump in
  /// the offsets it sees for an event it missed (and read it from the journal). False, the
  /// default, makes readers treat commit notices as wake-ups and read the log itself; a
  /// journal overrides this only when it numbers every event consecutively.
  [[nodiscard]] virtual bool gapless_offsets() const noexcept {
    return false;
  }
};

using journal_ptr = std::shared_ptr<journal>;

/// A stored snapshot of one aggregate's state.
struct snapshot_record {
  std::string persistence_id;
  std::uint64_t seq = 0; ///< the state includes events 1..seq
  std::string name;      ///< the state type's name
  std::uint32_t version = 1;
  std::string payload; ///< JSON text
  std::int64_t timestamp_us = 0;

  friend bool operator==(const snapshot_record&, const snapshot_record&) = default;
};

/// Snapshot storage contract; keeps the newest `keep` snapshots per stream.
class snapshot_store {
public:
  virtual ~snapshot_store();

  /// Stores `snap`, then drops all but the newest `keep` snapshots of its stream.
  virtual void save(snapshot_record snap, callback<caf::unit_t> done) = 0;

  /// The stored snapshots of a stream, newest first (empty if none). A caller that cannot
  /// decode the first one falls back to the next, then to a full replay.
  virtual void load(std::string persistence_id, callback<std::vector<snapshot_record>> done) = 0;
};

using snapshot_store_ptr = std::shared_ptr<snapshot_store>;

} // namespace annals::persistence

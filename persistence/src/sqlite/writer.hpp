#pragma once

// The write side: the writer connection's settings and statements, and the group commit
// (every waiting append and snapshot save in one transaction, each atomic on its own).

#include <caf/error.hpp>

#include "annals/persistence/sqlite_journal.hpp"
#include "sqlite/state.hpp"

namespace annals::persistence::sqlite {

/// Sets the writer connection's pragmas (WAL, synchronous, caches, the test hook
/// `max_page_count`) and records what is in effect in `info`.
caf::error configure_writer(writer_state& w, const sqlite_options& opts, sqlite_journal_info& info);

/// Prepares every statement of the writer on its connection.
caf::error prepare_writer(writer_state& w);

/// What became of one write of a batch.
struct outcome {
  caf::error err;
  append_result res;
  std::vector<event_record> records; // only filled while listeners exist
  bool settled = false;              // answered before the transaction (invalid, control)
};

/// How applying one write inside the batch's transaction went.
enum class applied { ok, failed, transaction_lost };

/// Turns the failure of a statement into the error for its write and says whether the
/// transaction survived it (SQLite may roll back the whole transaction on SQLITE_FULL,
/// SQLITE_IOERR, SQLITE_BUSY or SQLITE_NOMEM); rolls back the write's savepoint if it had
/// one.
applied fail_step(writer_state& w, caf::error err, bool in_savepoint, outcome& out);

/// `fail_step` with the error of the statement that just failed on the writer connection,
/// described as `what`.
applied fail_last(writer_state& w, const std::string& what, bool in_savepoint, outcome& out);

/// Writes one snapshot and trims the older ones of its stream (snapshots.cpp).
applied apply_snapshot(writer_state& w, snapshot_item& item, outcome& out);

} // namespace annals::persistence::sqlite

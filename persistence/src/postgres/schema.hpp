#pragma once

// The journal's tables in PostgreSQL, written once: the DDL, the schema marker, the
// append-only triggers, and the column list every read selects.

#include <caf/error.hpp>

#include "annals/persistence/postgres_journal.hpp"
#include "postgres/connection.hpp"

namespace annals::persistence::postgres {

/// The columns of `events` a reader selects, in `event_record` order (see `read_row`).
inline constexpr const char* event_columns =
  "global_offset, persistence_id, seq, name, version, payload, tags, timestamp_us, command_id, "
  "correlation_id";

/// The SQLSTATE that `annals_expect_seq` raises when a stream's highest seq is not the
/// expected one.
inline constexpr const char* seq_mismatch_state = "AN001";

/// Creates the schema in an empty database (under an advisory lock, so that journals
/// opening the same database at once do not race), or checks the one there: refuses a
/// database with a table `events` but no annals marker (`not_a_journal`) and one with a
/// newer schema version (`newer_schema`). Fills `info.schema_version` and `info.created`.
caf::error ensure_schema(const connection& conn, postgres_journal_info& info);

/// Reads the row of `res` at `row`, selected with `event_columns`, into `rec`;
/// `journal_errc::corrupt_row` naming the offset if a column is malformed.
caf::error read_row(const result& res, int row, const std::string& where, event_record& rec);

} // namespace annals::persistence::postgres

#pragma once

// The read side: the readers' prepared statements and how a row of `events` becomes an
// `event_record`.

#include <cstddef>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/persistence/journal.hpp"
#include "sqlite/state.hpp"

namespace annals::persistence::sqlite {

/// Prepares every statement of a reader on its connection.
caf::error prepare_reader(reader_state& r);

/// Fills `rec` from the current row of `stmt`, whose columns are
/// `sqlite_format::event_columns`; `journal_errc::corrupt_row` for a row that breaks the
/// schema's invariants.
caf::error read_row(sqlite3_stmt* stmt, const std::string& path, event_record& rec);

/// Steps the bound `stmt` to the end (at most `max` rows expected), then resets it.
caf::expected<std::vector<event_record>> read_records(sqlite3* db, sqlite3_stmt* stmt,
                                                      std::size_t max, const std::string& path,
                                                      const char* what);

} // namespace annals::persistence::sqlite

#pragma once

// The table `projection_offsets` in SQLite: one row per projection, its last offset.
//
// A projection advances its row by compare-and-set (`advance_offset_sql`, or
// `insert_offset_sql` for its first offset): two instances of one projection writing one
// model, e.g. two processes on one database file, cannot both advance from the same offset.

#include <cstdint>
#include <optional>
#include <string>

#include <caf/error.hpp>

#include "annals/persistence/sqlite_format.hpp"

namespace annals::actors::internal {

// The statements on the table (one definition, in the file format's header).
using persistence::sqlite_format::advance_offset_sql;
using persistence::sqlite_format::insert_offset_sql;
using persistence::sqlite_format::select_offset_sql;
using persistence::sqlite_format::upsert_offset_sql;

} // namespace annals::actors::internal

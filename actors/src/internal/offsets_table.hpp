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

#include "annals/actors/projection_sink.hpp"

namespace annals::actors::internal {

/// Reads the offset of projection `?1`.
inline constexpr const char* select_offset_sql =
  "SELECT \"offset\" FROM projection_offsets WHERE name = ?1";

/// Stores offset `?2` of projection `?1` whatever the row held: for a reset only.
inline constexpr const char* upsert_offset_sql =
  "INSERT INTO projection_offsets(name, \"offset\") VALUES (?1, ?2) "
  "ON CONFLICT(name) DO UPDATE SET \"offset\" = excluded.\"offset\"";

/// Moves projection `?1` from offset `?3` to `?2`; changes no row if it is not at `?3`.
inline constexpr const char* advance_offset_sql =
  "UPDATE projection_offsets SET \"offset\" = ?2 WHERE name = ?1 AND \"offset\" = ?3";

/// Stores the first offset `?2` of projection `?1`; changes no row if it has one.
inline constexpr const char* insert_offset_sql =
  "INSERT INTO projection_offsets(name, \"offset\") VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING";

using actors::offset_moved_error;

} // namespace annals::actors::internal

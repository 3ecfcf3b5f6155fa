#pragma once

// The table `projection_offsets` in SQLite: one row per projection, its last offset.

namespace annals::actors::internal {

/// Reads the offset of projection `?1`.
inline constexpr const char* select_offset_sql =
  "SELECT \"offset\" FROM projection_offsets WHERE name = ?1";

/// Stores offset `?2` of projection `?1`.
inline constexpr const char* upsert_offset_sql =
  "INSERT INTO projection_offsets(name, \"offset\") VALUES (?1, ?2) "
  "ON CONFLICT(name) DO UPDATE SET \"offset\" = excluded.\"offset\"";

} // namespace annals::actors::internal

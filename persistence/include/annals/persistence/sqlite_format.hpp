#pragma once

/// @file
/// Facts about the SQLite journal's file format that code outside the journal needs to read
/// or write the file directly (the operator tool's queries, its import): the table
/// definitions, the column list of an event row and how tags are stored. Everything that
/// touches the file's tables takes them from here, so that each fact is written once.
///
/// ```cpp
/// using namespace annals::persistence;
/// std::string sql = std::string{"SELECT "} + sqlite_format::event_columns
///                   + " FROM events ORDER BY global_offset";
/// ```

#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>

#include "annals/persistence/journal.hpp"

struct sqlite3_stmt;

namespace annals::persistence::sqlite_format {

/// Separates the tags of one event in the `tags` column of `events`; a tag may therefore
/// not contain it (every journal refuses such a tag).
inline constexpr char tag_separator = '\x1f';

/// The columns of an event row, in the order `sqlite_journal` reads them: offset, stream,
/// seq, event name, schema version, payload, tags, commit time, command id, correlation
/// id. The stored hash (`hash`) follows them in the table but is not part of the record.
inline constexpr const char* event_columns =
  "global_offset, persistence_id, seq, name, version, payload, tags, timestamp_us, "
  "command_id, correlation_id";

/// `event_columns`, each prefixed with the table alias `e.` (for joins).
inline constexpr const char* event_columns_e =
  "e.global_offset, e.persistence_id, e.seq, e.name, e.version, e.payload, e.tags, "
  "e.timestamp_us, e.command_id, e.correlation_id";

/// Inserts one event: `event_columns` as ?1..?10, then the hash as ?11.
inline constexpr const char* insert_event_sql =
  "INSERT INTO events (global_offset, persistence_id, seq, name, version, payload, tags, "
  "timestamp_us, command_id, correlation_id, hash) "
  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Inserts one row of the tag index: the tag as ?1, the event's offset as ?2.
inline constexpr const char* insert_tag_sql =
  "INSERT INTO event_tags (tag, global_offset) VALUES (?1, ?2)";

// UPDATE and DELETE are refused by triggers. A BEFORE INSERT trigger could also refuse
// INSERT OR REPLACE (whose implicit delete fires no delete trigger unless the connection
// enables recursive_triggers), but any INSERT trigger doubles the CPU cost of an append
// (measured: 0.57 s -> 1.05 s per 100k rows), so that hole is documented instead.

/// The tables of a journal file (schema version 2), without their triggers.
inline constexpr const char* tables_ddl = R"sql(
CREATE TABLE events (
  global_offset  INTEGER PRIMARY KEY,
  persistence_id TEXT    NOT NULL,
  seq            INTEGER NOT NULL CHECK (seq >= 1),
  name           TEXT    NOT NULL,
  version        INTEGER NOT NULL CHECK (version >= 1),
  payload        TEXT    NOT NULL,
  tags           TEXT,
  timestamp_us   INTEGER NOT NULL,
  command_id     TEXT,
  correlation_id TEXT,
  hash           BLOB,
  UNIQUE (persistence_id, seq)
);
CREATE TABLE event_tags (
  tag           TEXT    NOT NULL,
  global_offset INTEGER NOT NULL,
  PRIMARY KEY (tag, global_offset)
) WITHOUT ROWID;
CREATE TABLE snapshots (
  persistence_id TEXT    NOT NULL,
  seq            INTEGER NOT NULL,
  name           TEXT    NOT NULL,
  version        INTEGER NOT NULL,
  payload        TEXT    NOT NULL,
  timestamp_us   INTEGER NOT NULL,
  PRIMARY KEY (persistence_id, seq)
) WITHOUT ROWID;
)sql";

/// The trigger that refuses UPDATE on `events` (a schema 1 upgrade lifts it while it
/// stores the hash chain, then creates it again).
inline constexpr const char* events_no_update_ddl =
  "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
  "BEGIN SELECT RAISE(ABORT, 'annals: events are append-only, UPDATE refused'); END;";

/// The other append-only triggers: DELETE on `events`, UPDATE and DELETE on `event_tags`.
inline constexpr const char* other_triggers_ddl = R"sql(
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'annals: events are append-only, DELETE refused'); END;
CREATE TRIGGER event_tags_no_update BEFORE UPDATE ON event_tags
BEGIN SELECT RAISE(ABORT, 'annals: event tags are append-only, UPDATE refused'); END;
CREATE TRIGGER event_tags_no_delete BEFORE DELETE ON event_tags
BEGIN SELECT RAISE(ABORT, 'annals: event tags are append-only, DELETE refused'); END;
)sql";

/// The table of projection offsets in a read model's file (the journal's own file for
/// inline projections): one row per projection, the offset of the last event its model
/// holds. Projections advance their row by compare-and-set (`advance_offset_sql`), so two
/// instances of one projection writing one model cannot both advance from one offset.
inline constexpr const char* projection_offsets_ddl =
  "CREATE TABLE IF NOT EXISTS projection_offsets(name TEXT PRIMARY KEY, \"offset\" INTEGER "
  "NOT NULL)";

/// Reads the offset of projection `?1`.
inline constexpr const char* select_offset_sql =
  "SELECT \"offset\" FROM projection_offsets WHERE name = ?1";

/// Stores offset `?2` of projection `?1` whatever the row held.
inline constexpr const char* upsert_offset_sql =
  "INSERT INTO projection_offsets(name, \"offset\") VALUES (?1, ?2) "
  "ON CONFLICT(name) DO UPDATE SET \"offset\" = excluded.\"offset\"";

/// Moves projection `?1` from offset `?3` to `?2`; changes no row if it is not at `?3`.
inline constexpr const char* advance_offset_sql =
  "UPDATE projection_offsets SET \"offset\" = ?2 WHERE name = ?1 AND \"offset\" = ?3";

/// Stores the first offset `?2` of projection `?1`; changes no row if it has one.
inline constexpr const char* insert_offset_sql =
  "INSERT INTO projection_offsets(name, \"offset\") VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING";

/// The tables the journal owns; anything else in the file belongs to read models.
inline constexpr std::string_view journal_tables[] = {"events", "event_tags", "snapshots"};

/// The tags of an event as stored in the `tags` column (`tag_separator` between them; an
/// empty result stands for NULL).
inline std::string join_tags(const std::vector<std::string>& tags) {
  std::string out;
  for (const auto& tag : tags) {
    if (!out.empty())
      out += tag_separator;
    out += tag;
  }
  return out;
}

/// The tags stored in a non-NULL `tags` column.
inline std::vector<std::string> split_tags(std::string_view stored) {
  std::vector<std::string> out;
  for (;;) {
    auto sep = stored.find(tag_separator);
    out.emplace_back(stored.substr(0, sep));
    if (sep == std::string_view::npos)
      return out;
    stored.remove_prefix(sep + 1);
  }
}

/// Fills `rec` from the current row of `stmt`, whose first columns are `event_columns` in
/// that order (the journal's own reader). `journal_errc::corrupt_row`, naming the event
/// and `path`, for a row that breaks the schema's invariants (a name that is not text, a
/// version out of range, a NULL payload).
caf::error read_event(sqlite3_stmt* stmt, const std::string& path, event_record& rec);

} // namespace annals::persistence::sqlite_format

#include "sqlite/schema.hpp"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>
#include <vector>

#include "annals/persistence/audit.hpp"
#include "annals/persistence/sqlite_format.hpp"
#include "sqlite/handles.hpp"
#include "sqlite/reader.hpp"

namespace annals::persistence::sqlite {

file_header read_header(const std::string& path) {
  file_header result;
  std::ifstream in{path, std::ios::binary};
  char buf[100] = {};
  in.read(buf, sizeof(buf));
  if (in.gcount() < static_cast<std::streamsize>(sizeof(buf))
      || std::memcmp(buf, "SQLite format 3", 16) != 0)
    return result;
  result.sqlite = true;
  auto byte = [&](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(buf[i])); };
  result.application_id = (byte(68) << 24) | (byte(69) << 16) | (byte(70) << 8) | byte(71);
  return result;
}

std::string hex(std::uint32_t x) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", x);
  return buf;
}

caf::expected<bool> check_identity(sqlite3* db, const std::string& path) {
  auto app = query_int(db, "PRAGMA application_id", path);
  if (!app)
    return std::move(app.error());
  auto version = query_int(db, "PRAGMA user_version", path);
  if (!version)
    return std::move(version.error());
  auto tables = query_int(db, "SELECT count(*) FROM sqlite_schema", path);
  if (!tables)
    return std::move(tables.error());
  auto app_id = static_cast<std::uint32_t>(*app);
  if (app_id == static_cast<std::uint32_t>(sqlite_journal::application_id)) {
    if (*version > static_cast<std::int64_t>(sqlite_journal::schema_version))
      return make_error(journal_errc::newer_schema,
                        path + " has journal schema version " + std::to_string(*version)
                          + ", this build reads up to "
                          + std::to_string(sqlite_journal::schema_version));
    if (*version < 1)
      return make_error(journal_errc::not_a_journal,
                        path + " carries the annals application id but no schema version");
    return false;
  }
  if (app_id == 0 && *version == 0 && *tables == 0)
    return true;
  return make_error(journal_errc::not_a_journal,
                    path + " is a SQLite database with application_id " + hex(app_id)
                      + ", user_version " + std::to_string(*version) + " and "
                      + std::to_string(*tables) + " schema objects: one of another application");
}

caf::error check_header(const std::string& path) {
  auto header = read_header(path);
  if (!header.sqlite)
    return make_error(journal_errc::not_a_journal, path + " is not a SQLite database");
  if (header.application_id != 0
      && header.application_id != static_cast<std::uint32_t>(sqlite_journal::application_id))
    return make_error(journal_errc::not_a_journal,
                      path + " is a SQLite database of another application (application_id "
                        + hex(header.application_id) + ")");
  return {};
}

caf::error check_existing_file(const std::string& path, std::chrono::milliseconds busy_timeout) {
  if (auto err = check_header(path))
    return err;
  // The header alone cannot tell an empty database from a foreign one, nor see a schema
  // version still in the WAL: ask SQLite, read-only.
  auto ro = open_connection(path, SQLITE_OPEN_READONLY, busy_timeout);
  if (!ro)
    return std::move(ro.error());
  if (auto err = exec(ro->db, "BEGIN", path))
    return err;
  auto verdict = check_identity(ro->db, path);
  if (!verdict)
    return std::move(verdict.error());
  return {};
}

caf::expected<std::uint32_t> check_readable(sqlite3* db, const std::string& path) {
  if (auto err = exec(db, "BEGIN", path))
    return err;
  auto empty = check_identity(db, path);
  auto version = query_int(db, "PRAGMA user_version", path);
  exec(db, "COMMIT", path);
  if (!empty)
    return std::move(empty.error());
  if (*empty)
    return make_error(journal_errc::not_a_journal,
                      path + " is an empty SQLite database, not an annals journal");
  if (!version)
    return std::move(version.error());
  return static_cast<std::uint32_t>(*version);
}

namespace {

// Schema 1 had no hash chain: add the column and chain every stored event, in offset
// order, inside the caller's transaction. The UPDATE trigger is lifted for exactly that.
caf::error migrate_from_v1(sqlite3* db, const std::string& path) {
  if (auto err =
        exec(db, "ALTER TABLE events ADD COLUMN hash BLOB; DROP TRIGGER events_no_update;", path))
    return err;
  auto select = prepare(
    db,
    (std::string{"SELECT "} + sqlite_format::event_columns + " FROM events ORDER BY global_offset")
      .c_str(),
    path);
  if (!select)
    return std::move(select.error());
  std::vector<std::pair<std::uint64_t, event_hash>> hashes;
  event_hash chain{};
  for (;;) {
    auto rc = sqlite3_step(select->ptr);
    if (rc == SQLITE_DONE)
      break;
    if (rc != SQLITE_ROW)
      return sqlite_failure(rc, db, "reading events to chain them", path);
    event_record rec;
    if (auto err = read_row(select->ptr, path, rec))
      return err;
    chain = chain_hash(chain, rec);
    hashes.emplace_back(rec.offset, chain);
  }
  auto update = prepare(db, "UPDATE events SET hash = ?1 WHERE global_offset = ?2", path);
  if (!update)
    return std::move(update.error());
  for (const auto& [offset, h] : hashes) {
    sqlite3_bind_blob(update->ptr, 1, h.data(), static_cast<int>(h.size()), SQLITE_STATIC);
    bind_u64(update->ptr, 2, offset);
    auto rc = sqlite3_step(update->ptr);
    sqlite3_reset(update->ptr);
    if (rc != SQLITE_DONE)
      return sqlite_failure(rc, db, "storing the hash chain", path);
  }
  if (auto err = exec(db, sqlite_format::events_no_update_ddl, path))
    return err;
  return exec(db, "PRAGMA user_version = 2;", path);
}

caf::error create_schema(sqlite3* db, const std::string& path) {
  auto pragmas = "PRAGMA application_id = " + std::to_string(sqlite_journal::application_id)
                 + "; PRAGMA user_version = " + std::to_string(sqlite_journal::schema_version)
                 + ";";
  for (const char* sql : {sqlite_format::tables_ddl, sqlite_format::events_no_update_ddl,
                          sqlite_format::other_triggers_ddl, pragmas.c_str()})
    if (auto err = exec(db, sql, path))
      return err;
  return {};
}

} // namespace

caf::error ensure_schema(sqlite3* db, const std::string& path, sqlite_journal_info& info) {
  if (auto err = exec(db, "BEGIN IMMEDIATE", path))
    return err;
  auto create = check_identity(db, path);
  if (!create) {
    exec(db, "ROLLBACK", path);
    return std::move(create.error());
  }
  if (*create) {
    if (auto err = create_schema(db, path)) {
      exec(db, "ROLLBACK", path);
      return err;
    }
    info.created = true;
  } else {
    auto version = query_int(db, "PRAGMA user_version", path);
    caf::error err = version ? caf::error{} : version.error();
    if (!err && *version == 1)
      err = migrate_from_v1(db, path);
    if (err) {
      exec(db, "ROLLBACK", path);
      return err;
    }
  }
  if (auto err = exec(db, "COMMIT", path)) {
    exec(db, "ROLLBACK", path);
    return err;
  }
  auto version = query_int(db, "PRAGMA user_version", path);
  if (!version)
    return std::move(version.error());
  info.schema_version = static_cast<std::uint32_t>(*version);
  return {};
}

} // namespace annals::persistence::sqlite

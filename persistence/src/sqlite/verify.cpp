#include <cstring>
#include <filesystem>

#include "annals/persistence/audit.hpp"
#include "annals/persistence/sqlite_format.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "sqlite/handles.hpp"
#include "sqlite/reader.hpp"
#include "sqlite/schema.hpp"

namespace annals::persistence {

using namespace sqlite;

caf::expected<verify_report> sqlite_journal::verify(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return make_error(journal_errc::storage_error, path + " does not exist");
  auto header = read_header(path);
  if (!header.sqlite)
    return make_error(journal_errc::not_a_journal, path + " is not a SQLite database");
  auto conn = open_connection(path, SQLITE_OPEN_READONLY, sqlite_options{}.busy_timeout);
  if (!conn)
    return std::move(conn.error());
  auto db = conn->db;
  // Through the connection, not the file header: a live journal's newest header is in its
  // WAL until the next checkpoint.
  auto app = query_int(db, "PRAGMA application_id", path);
  if (!app)
    return std::move(app.error());
  if (static_cast<std::uint32_t>(*app) != static_cast<std::uint32_t>(application_id))
    return make_error(journal_errc::not_a_journal,
                      path + " is a SQLite database of another application (application_id "
                        + hex(static_cast<std::uint32_t>(*app)) + ")");
  auto version = query_int(db, "PRAGMA user_version", path);
  if (!version)
    return std::move(version.error());
  if (*version < 2)
    return make_error(journal_errc::invalid_request,
                      path + " has journal schema " + std::to_string(*version)
                        + ", which has no hash chain; opening it once with this build adds it");
  if (*version > static_cast<std::int64_t>(schema_version))
    return make_error(journal_errc::newer_schema,
                      path + " has journal schema version " + std::to_string(*version));
  // One read transaction: a consistent view even while a writer appends.
  if (auto err = exec(db, "BEGIN", path))
    return err;
  auto select = prepare(db,
                        (std::string{"SELECT "} + sqlite_format::event_columns
                         + ", hash FROM events ORDER BY global_offset")
                          .c_str(),
                        path);
  if (!select)
    return std::move(select.error());
  verify_report report;
  event_hash chain{};
  for (;;) {
    auto rc = sqlite3_step(select->ptr);
    if (rc == SQLITE_DONE)
      break;
    if (rc != SQLITE_ROW)
      return sqlite_failure(rc, db, "reading events", path);
    event_record rec;
    auto bad = read_row(select->ptr, path, rec);
    auto fail = [&](std::string reason) {
      report.first_break = chain_break{rec.offset, rec.persistence_id, rec.seq, std::move(reason)};
    };
    ++report.events_checked;
    report.head_offset = rec.offset;
    if (bad) {
      fail("the row does not read back: " + render(bad));
      break;
    }
    if (rec.offset != report.events_checked) {
      fail("expected offset " + std::to_string(report.events_checked) + " (events missing)");
      break;
    }
    auto expected = chain_hash(chain, rec);
    if (sqlite3_column_bytes(select->ptr, 10) != static_cast<int>(expected.size())) {
      fail("no hash stored");
      break;
    }
    event_hash stored{};
    std::memcpy(stored.data(), sqlite3_column_blob(select->ptr, 10), stored.size());
    if (stored != expected) {
      fail("stored hash " + to_hex(stored) + " differs from the recomputed " + to_hex(expected)
           + " (the event or one before it was altered)");
      break;
    }
    chain = expected;
    report.head_hash = chain;
  }
  if (report.first_break) {
    // The head is still the file's last offset.
    auto head = query_int(db, "SELECT coalesce(max(global_offset), 0) FROM events", path);
    if (head)
      report.head_offset = static_cast<std::uint64_t>(*head);
  }
  exec(db, "COMMIT", path);
  return report;
}

} // namespace annals::persistence

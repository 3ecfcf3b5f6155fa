// `postgres_journal::verify`: the hash chain recomputed over the whole log, in offset
// order, inside one repeatable-read transaction.

#include <charconv>

#include "annals/persistence/audit.hpp"
#include "postgres/schema.hpp"

namespace annals::persistence {

using namespace postgres;

namespace {

constexpr int verify_page_size = 10'000;

std::optional<event_hash> stored_hash(std::string_view text) {
  if (text.size() < 2 || text.substr(0, 2) != "\\x")
    return std::nullopt;
  return hash_from_hex(text.substr(2));
}

} // namespace

caf::expected<verify_report> postgres_journal::verify(const std::string& conninfo) {
  auto conn = connection::open(conninfo, postgres_options{}.connect_timeout);
  if (!conn)
    return std::move(conn.error());
  if (auto err =
        conn->run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "starting a read transaction"))
    return err;
  postgres_journal_info info;
  auto marker = conn->exec("SELECT version FROM annals_schema WHERE name = 'journal'");
  if (!marker.ok() || marker.rows() != 1)
    return make_error(journal_errc::not_a_journal,
                      conn->where() + " holds no annals journal (no annals_schema marker)");
  if (marker.u64(0, 0) > schema_version)
    return make_error(journal_errc::newer_schema, conn->where() + " has journal schema version "
                                                    + std::string{marker.text(0, 0)});
  static const std::string sql = std::string{"SELECT "} + event_columns
                                 + ", hash FROM events WHERE global_offset > $1 ORDER BY "
                                   "global_offset LIMIT "
                                 + std::to_string(verify_page_size);
  verify_report report;
  event_hash chain{};
  std::uint64_t after = 0;
  for (;;) {
    auto res = conn->exec(sql.c_str(), {bigint_of(after)});
    if (!res.ok())
      return conn->failure(res, "reading events");
    for (int row = 0; row < res.rows(); ++row) {
      event_record rec;
      auto bad = read_row(res, row, conn->where(), rec);
      auto fail = [&](std::string reason) {
        report.first_break =
          chain_break{rec.offset, rec.persistence_id, rec.seq, std::move(reason)};
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
      auto stored = stored_hash(res.text(row, 10));
      if (!stored) {
        fail("no hash stored");
        break;
      }
      if (*stored != expected) {
        fail("stored hash " + to_hex(*stored) + " differs from the recomputed " + to_hex(expected)
             + " (the event or one before it was altered)");
        break;
      }
      chain = expected;
      report.head_hash = chain;
    }
    if (report.first_break || res.rows() < verify_page_size)
      break;
    after = report.head_offset;
  }
  if (report.first_break) {
    auto head = conn->exec("SELECT coalesce(max(global_offset), 0) FROM events", {});
    if (head.ok())
      report.head_offset = head.u64(0, 0);
  }
  conn->exec("COMMIT");
  return report;
}

} // namespace annals::persistence

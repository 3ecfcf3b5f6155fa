#include "commands.hpp"

#include <cstring>

#include <boost/json.hpp>
#include <sqlite3.h>

#include "annals/persistence/audit.hpp"
#include "annals/persistence/sqlite_format.hpp"
#include "journal_file.hpp"
#include "output.hpp"
#include "remote_journal.hpp"

namespace annals::tools::detail {

namespace json = boost::json;
using persistence::event_record;

namespace {

json::object export_json(const event_record& rec) {
  auto o = event_json(rec);
  o["timestamp_us"] = rec.timestamp_us;
  o["name"] = rec.name;
  o["payload"] = rec.payload;
  return o;
}

// A networked journal read through the contract. One that stores the global chain
// (PostgreSQL) exports each event's stored hash, as a schema-2 SQLite file does, so that an
// event altered in the database breaks the chain where `import` checks it; an offset without
// a stored hash exports `null`. One that stores none (JetStream chains each persistence id)
// exports the global chain computed on the way out, over the journal's own offsets, as a
// schema-1 file does.
int export_remote(const std::string& uri, std::ostream& out) {
  auto remote = open_remote(uri, false);
  auto& j = remote->journal();
  auto head = remote_head(j);
  persistence::event_hash chain{};
  std::uint64_t from = 1;
  while (from <= head) {
    auto page = read_page(j, from, 1000);
    if (page.empty())
      break;
    auto stored = remote->stored_hashes(page.front().offset, page.back().offset);
    for (const auto& rec : page) {
      if (rec.offset > head)
        break;
      auto o = export_json(rec);
      chain = persistence::chain_hash(chain, rec);
      if (!stored) {
        o["hash"] = persistence::to_hex(chain);
      } else if (auto h = stored->find(rec.offset); h != stored->end()) {
        o["hash"] = persistence::to_hex(h->second);
      } else {
        o["hash"] = nullptr;
      }
      out << json::serialize(o) << '\n';
    }
    from = page.back().offset + 1;
  }
  out.flush();
  return 0;
}

} // namespace

int export_log(const args_list& in, std::ostream& out) {
  auto args = parse_arguments(in, {});
  auto path = journal_path(args);
  if (is_journal_uri(path))
    return export_remote(path, out);
  auto journal = open_journal(path);
  auto db = journal.db();
  // Schema 1 stored no hashes: the chain is computed on the way out.
  bool stored_hash = journal.schema_version() >= 2;
  read_transaction txn{db, path};
  statement stmt{db,
                 std::string{"SELECT "} + persistence::sqlite_format::event_columns
                   + (stored_hash ? ", hash" : "") + " FROM events ORDER BY global_offset",
                 path};
  persistence::event_hash chain{};
  event_record rec;
  while (stmt.step()) {
    read_event(stmt, rec, path);
    auto o = export_json(rec);
    chain = persistence::chain_hash(chain, rec);
    if (!stored_hash) {
      o["hash"] = persistence::to_hex(chain);
    } else if (sqlite3_column_bytes(stmt.get(), 10) == static_cast<int>(chain.size())) {
      persistence::event_hash h{};
      std::memcpy(h.data(), sqlite3_column_blob(stmt.get(), 10), h.size());
      o["hash"] = persistence::to_hex(h);
    } else {
      o["hash"] = nullptr;
    }
    out << json::serialize(o) << '\n';
  }
  out.flush();
  return 0;
}

} // namespace annals::tools::detail

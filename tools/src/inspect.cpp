#include "commands.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <boost/json.hpp>
#include <sqlite3.h>

#include "annals/persistence/redact.hpp"
#include "annals/persistence_id.hpp"
#include "journal_file.hpp"
#include "output.hpp"
#include "remote_journal.hpp"

namespace annals::tools::detail {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

bool has_table(sqlite3* db, const char* name, const std::string& path) {
  statement stmt{db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1", path};
  stmt.bind(1, std::string_view{name});
  return stmt.step() && stmt.int64(0) > 0;
}

// A networked journal, read through the journal contract: every event once, counted by
// aggregate type. Snapshots and projection offsets do not live in its log.
int inspect_remote(const std::string& uri, bool as_json, std::ostream& out) {
  auto remote = open_remote(uri, false);
  auto& j = remote->journal();
  auto head = remote_head(j);
  struct type_row {
    std::set<std::string> ids;
    std::uint64_t events = 0;
  };
  std::map<std::string, type_row> types;
  std::uint64_t total = 0;
  for (std::uint64_t from = 1; from <= head;) {
    auto page = read_page(j, from, 1000);
    if (page.empty())
      break;
    for (const auto& rec : page) {
      if (rec.offset > head)
        break;
      auto sep = rec.persistence_id.find(persistence_id::separator);
      auto& r = types[sep == std::string::npos || sep == 0 ? std::string{}
                                                           : rec.persistence_id.substr(0, sep)];
      r.ids.insert(rec.persistence_id);
      ++r.events;
      ++total;
    }
    from = page.back().offset + 1;
  }
  auto type_name = [](const std::string& t) { return t.empty() ? std::string{"(no type)"} : t; };
  if (as_json) {
    json::object o;
    o["journal"] = persistence::redact_secrets(uri);
    o["backend"] = remote->describe();
    o["head_offset"] = head;
    o["events"] = total;
    json::array ta;
    for (const auto& [t, r] : types)
      ta.push_back(
        json::object{{"type", type_name(t)}, {"ids", r.ids.size()}, {"events", r.events}});
    o["aggregates"] = std::move(ta);
    out << json::serialize(o) << '\n';
    return 0;
  }
  out << "journal   " << remote->describe() << '\n'
      << "events    " << grouped(total) << ", head offset " << grouped(head) << "\n\n";
  text_table agg{{"aggregate", "ids", "events"}, {false, true, true}, {}};
  std::uint64_t ids = 0;
  for (const auto& [t, r] : types) {
    agg.rows.push_back({type_name(t), grouped(r.ids.size()), grouped(r.events)});
    ids += r.ids.size();
  }
  agg.rows.push_back({"total", grouped(ids), grouped(total)});
  agg.print(out);
  return 0;
}

} // namespace

int inspect(const args_list& in, const std::vector<cli::projection_entry>& known,
            std::ostream& out) {
  auto args = parse_arguments(in, {{"--json", false}});
  auto path = journal_path(args);
  if (is_journal_uri(path))
    return inspect_remote(path, args.has("--json"), out);
  auto journal = open_journal(path);
  auto db = journal.db();
  read_transaction txn{db, path};
  auto head = static_cast<std::uint64_t>(
    scalar(db, "SELECT coalesce(max(global_offset), 0) FROM events", path));
  auto total = static_cast<std::uint64_t>(scalar(db, "SELECT count(*) FROM events", path));
  struct type_row {
    std::uint64_t ids = 0, events = 0, snapshots = 0;
  };
  std::map<std::string, type_row> types;
  auto type_expr = "CASE WHEN " + separator_position + " > 0 THEN substr(persistence_id, 1, "
                   + separator_position + " - 1) ELSE '' END";
  {
    statement stmt{db,
                   "SELECT " + type_expr
                     + " AS t, count(DISTINCT persistence_id), count(*) FROM events GROUP BY t",
                   path};
    while (stmt.step()) {
      auto& r = types[stmt.text(0)];
      r.ids = static_cast<std::uint64_t>(stmt.int64(1));
      r.events = static_cast<std::uint64_t>(stmt.int64(2));
    }
  }
  if (has_table(db, "snapshots", path)) {
    statement stmt{db, "SELECT " + type_expr + " AS t, count(*) FROM snapshots GROUP BY t", path};
    while (stmt.step())
      types[stmt.text(0)].snapshots = static_cast<std::uint64_t>(stmt.int64(1));
  }
  std::vector<std::pair<std::string, std::optional<std::uint64_t>>> projections;
  if (has_table(db, "projection_offsets", path)) {
    statement stmt{db, "SELECT name, \"offset\" FROM projection_offsets ORDER BY name", path};
    while (stmt.step())
      projections.emplace_back(stmt.text(0), static_cast<std::uint64_t>(stmt.int64(1)));
  }
  for (const auto& p : known)
    if (std::none_of(projections.begin(), projections.end(),
                     [&](const auto& x) { return x.first == p.name; }))
      projections.emplace_back(p.name, std::nullopt);
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  auto wal = fs::file_size(path + "-wal", ec);
  auto wal_size = ec ? 0 : wal;
  auto type_name = [](const std::string& t) { return t.empty() ? std::string{"(no type)"} : t; };
  if (args.has("--json")) {
    json::object o;
    o["journal"] = path;
    o["file_bytes"] = size;
    o["wal_bytes"] = wal_size;
    o["schema_version"] = journal.schema_version();
    o["head_offset"] = head;
    o["events"] = total;
    json::array ta;
    for (const auto& [t, r] : types)
      ta.push_back(json::object{
        {"type", type_name(t)}, {"ids", r.ids}, {"events", r.events}, {"snapshots", r.snapshots}});
    o["aggregates"] = std::move(ta);
    json::array pa;
    for (const auto& [name, offset] : projections) {
      json::object p{{"name", name}};
      p["offset"] = offset ? json::value(*offset) : json::value(nullptr);
      p["lag"] = offset ? json::value(head > *offset ? head - *offset : 0) : json::value(head);
      pa.push_back(std::move(p));
    }
    o["projections"] = std::move(pa);
    out << json::serialize(o) << '\n';
    return 0;
  }
  out << "journal   " << path << '\n'
      << "file      " << file_size_text(path) << '\n'
      << "schema    version " << journal.schema_version() << '\n'
      << "events    " << grouped(total) << ", head offset " << grouped(head) << "\n\n";
  text_table agg{{"aggregate", "ids", "events", "snapshots"}, {false, true, true, true}, {}};
  type_row sum;
  for (const auto& [t, r] : types) {
    agg.rows.push_back({type_name(t), grouped(r.ids), grouped(r.events), grouped(r.snapshots)});
    sum.ids += r.ids;
    sum.events += r.events;
    sum.snapshots += r.snapshots;
  }
  agg.rows.push_back({"total", grouped(sum.ids), grouped(sum.events), grouped(sum.snapshots)});
  agg.print(out);
  out << '\n';
  if (projections.empty()) {
    out << "projections: none stored in projection_offsets\n";
    return 0;
  }
  text_table proj{{"projection", "offset", "lag"}, {false, true, true}, {}};
  for (const auto& [name, offset] : projections) {
    if (offset)
      proj.rows.push_back({name, grouped(*offset), grouped(head > *offset ? head - *offset : 0)});
    else
      proj.rows.push_back({name, "never run", grouped(head)});
  }
  proj.print(out);
  return 0;
}

} // namespace annals::tools::detail

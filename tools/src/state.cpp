#include "commands.hpp"

#include <algorithm>
#include <memory>
#include <optional>

#include <boost/json.hpp>

#include "annals/error.hpp"
#include "annals/persistence_id.hpp"
#include "journal_file.hpp"
#include "output.hpp"
#include "remote_journal.hpp"

namespace annals::tools::detail {

namespace json = boost::json;

namespace {

struct version_range {
  std::uint64_t highest = 0; ///< the id's highest seq (0: no events)
  std::uint64_t up_to = 0;   ///< the seq to replay up to (0: none at or before --at-time)
};

version_range versions(journal_file& file, const std::string& pid, std::optional<std::uint64_t> at,
                       std::optional<std::int64_t> at_time) {
  version_range v;
  statement stmt{file.db(), "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = ?1",
                 file.path};
  stmt.bind(1, pid);
  v.highest = stmt.step() ? static_cast<std::uint64_t>(stmt.int64(0)) : 0;
  v.up_to = at && *at <= v.highest ? *at : v.highest;
  if (at_time && v.highest > 0) {
    statement when{file.db(),
                   "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = ?1 AND "
                   "timestamp_us <= ?2",
                   file.path};
    when.bind(1, pid).bind(2, *at_time);
    v.up_to = when.step() ? static_cast<std::uint64_t>(when.int64(0)) : 0;
  }
  return v;
}

version_range versions_remote(persistence::journal& j, const std::string& pid,
                              std::optional<std::uint64_t> at,
                              std::optional<std::int64_t> at_time) {
  version_range v;
  v.highest = remote_call<std::uint64_t>(
    [&](persistence::callback<std::uint64_t> done) { j.highest_seq(pid, std::move(done)); },
    "reading the highest seq of " + pid);
  v.up_to = at && *at <= v.highest ? *at : v.highest;
  if (at_time && v.highest > 0) {
    // Timestamps increase along one id's events: the last one at or before the time.
    v.up_to = 0;
    for (std::uint64_t from = 1; from <= v.highest;) {
      auto page = remote_call<std::vector<persistence::event_record>>(
        [&](persistence::callback<std::vector<persistence::event_record>> done) {
          j.read_stream(pid, from, v.highest, 1000, std::move(done));
        },
        "reading the events of " + pid);
      if (page.empty())
        break;
      for (const auto& rec : page)
        if (rec.timestamp_us <= *at_time)
          v.up_to = rec.seq;
      from = page.back().seq + 1;
    }
  }
  return v;
}

} // namespace

int state(const args_list& in, const std::vector<cli::aggregate_entry>& known,
          const std::string& program, std::ostream& out) {
  auto args = parse_arguments(
    in, {{"--aggregate", true}, {"--id", true}, {"--at", true}, {"--at-time", true}});
  auto path = journal_path(args);
  auto type = args.get("--aggregate");
  auto id = args.get("--id");
  if (!type)
    usage_error("--aggregate TYPE is required");
  if (!id)
    usage_error("--id ID is required");
  if (args.has("--at") && args.has("--at-time"))
    usage_error("--at and --at-time exclude each other");
  auto at = optional_number(args, "--at");
  std::optional<std::int64_t> at_time;
  if (auto s = args.get("--at-time"))
    at_time = time_value("--at-time", *s);
  if (at && *at == 0)
    usage_error("--at needs a sequence number from 1");
  if (id->find(persistence_id::separator) != std::string::npos) {
    auto parsed = persistence_id::parse(*id);
    if (!parsed || parsed->type() != *type)
      usage_error("--id " + *id + " names another aggregate type than --aggregate " + *type);
    id = std::string{parsed->entity_id()};
  }
  std::unique_ptr<remote_journal> remote;
  std::optional<journal_file> file;
  if (is_journal_uri(path))
    remote = open_remote(path, false);
  else
    file.emplace(open_journal(path));
  auto entry =
    std::find_if(known.begin(), known.end(), [&](const auto& a) { return a.type_name == *type; });
  if (entry == known.end()) {
    if (known.empty())
      fail("unknown aggregate type '" + *type + "': " + program
           + " registers no aggregate types; run the service's own admin command (e.g. "
             "annals-bank admin state ...)");
    std::vector<std::string> names;
    for (const auto& a : known)
      names.push_back(a.type_name);
    fail("unknown aggregate type '" + *type + "' (registered: " + joined(names) + ")");
  }
  auto pid = persistence_id{*type, *id}.str();
  auto [highest, up_to] = remote ? versions_remote(remote->journal(), pid, at, at_time)
                                 : versions(*file, pid, at, at_time);
  if (highest == 0)
    fail("unknown id '" + *id + "': the journal has no events for " + pid);
  if (at && *at > highest)
    fail(pid + " has " + std::to_string(highest) + " events; there is no event "
         + std::to_string(*at));
  if (at_time && up_to == 0)
    fail(pid + " has no event at or before " + iso_time(*at_time));
  persistence::journal& j = remote ? remote->journal() : *file->journal;
  auto r = entry->replay(j, pid, up_to);
  if (!r)
    fail("replaying " + pid + ": " + render(r.error()));
  json::object o;
  o["aggregate"] = *type;
  o["id"] = *id;
  o["version"] = r->version;
  o["timestamp"] = iso_time(r->timestamp_us);
  o["state"] = std::move(r->state);
  pretty(out, o, 0);
  out << '\n';
  return 0;
}

} // namespace annals::tools::detail

#include "commands.hpp"

#include <algorithm>
#include <optional>

#include <boost/json.hpp>

#include "annals/error.hpp"
#include "annals/persistence_id.hpp"
#include "journal_file.hpp"
#include "output.hpp"

namespace annals::tools::detail {

namespace json = boost::json;

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
  auto journal = open_journal(path);
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
  std::uint64_t highest = 0;
  std::uint64_t up_to = 0;
  {
    statement stmt{journal.db(),
                   "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = ?1", path};
    stmt.bind(1, pid);
    highest = stmt.step() ? static_cast<std::uint64_t>(stmt.int64(0)) : 0;
    if (highest == 0)
      fail("unknown id '" + *id + "': the journal has no events for " + pid);
    up_to = highest;
    if (at) {
      if (*at > highest)
        fail(pid + " has " + std::to_string(highest) + " events; there is no event "
             + std::to_string(*at));
      up_to = *at;
    }
    if (at_time) {
      statement when{journal.db(),
                     "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = ?1 AND "
                     "timestamp_us <= ?2",
                     path};
      when.bind(1, pid).bind(2, *at_time);
      up_to = when.step() ? static_cast<std::uint64_t>(when.int64(0)) : 0;
      if (up_to == 0)
        fail(pid + " has no event at or before " + iso_time(*at_time));
    }
  }
  auto r = entry->replay(*journal.journal, pid, up_to);
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

#include "commands.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <sqlite3.h>

#include "annals/actors/offset_store.hpp"
#include "annals/actors/projection.hpp"
#include "annals/actors/projection_sink.hpp"
#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "annals/persistence/sqlite_format.hpp"
#include "journal_file.hpp"
#include "output.hpp"

namespace annals::tools::detail {

namespace {

std::string sql_identifier(std::string_view identifier) {
  std::string out = "\"";
  for (char c : identifier) {
    out += c;
    if (c == '"')
      out += '"';
  }
  return out + "\"";
}

// The offset stored for `name` in the journal file's projection_offsets, if any.
std::optional<std::uint64_t> stored_offset(sqlite3* db, const std::string& schema,
                                           const std::string& name, const std::string& path) {
  statement exists{db,
                   "SELECT count(*) FROM " + schema
                     + ".sqlite_schema WHERE type = 'table' AND name = 'projection_offsets'",
                   path};
  if (!exists.step() || exists.int64(0) == 0)
    return std::nullopt;
  statement select{db, "SELECT \"offset\" FROM " + schema + ".projection_offsets WHERE name = ?1",
                   path};
  select.bind(1, name);
  if (!select.step())
    return std::nullopt;
  return static_cast<std::uint64_t>(select.int64(0));
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", s);
  return buf;
}

// Progress of the catch-up on the error stream: a bar redrawn in place on a terminal,
// plain lines (at most one a second) otherwise.
class progress {
public:
  progress(std::ostream& err, std::string name, std::uint64_t total)
    : err_(err), tty_(is_terminal(err)), name_(std::move(name)), total_(total),
      start_(std::chrono::steady_clock::now()), last_line_(start_) {}

  void update(std::uint64_t done, bool final) {
    auto now = std::chrono::steady_clock::now();
    if (!tty_ && !final && now - last_line_ < std::chrono::seconds{1})
      return;
    last_line_ = now;
    done = std::min(done, total_);
    auto elapsed = std::chrono::duration<double>(now - start_).count();
    auto rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    std::string line = std::to_string(done) + "/" + std::to_string(total_) + " events, "
                       + grouped(static_cast<std::uint64_t>(rate)) + " ev/s, ";
    if (final)
      line += "done in " + seconds_text(elapsed);
    else if (rate > 0)
      line += "ETA " + seconds_text(static_cast<double>(total_ - done) / rate);
    else
      line += "ETA unknown";
    if (tty_) {
      constexpr std::size_t width = 30;
      auto filled = total_ == 0 ? width : static_cast<std::size_t>(width * done / total_);
      std::string bar(filled, '#');
      bar.resize(width, '.');
      err_ << "\rrebuild " << name_ << " [" << bar << "] " << line << "   ";
      if (final)
        err_ << '\n';
    } else {
      err_ << "rebuild " << name_ << ": " << line << '\n';
    }
    err_.flush();
  }

private:
  std::ostream& err_;
  bool tty_;
  std::string name_;
  std::uint64_t total_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_line_;
};

struct swapped_table {
  std::string name;
  std::uint64_t rows = 0;
};

// Replaces the projection's tables in the journal file with the shadow's, and its stored
// offset with the shadow's, in one transaction.
std::vector<swapped_table> swap_in(const std::string& path, const std::string& shadow,
                                   const std::string& name, std::optional<std::uint64_t> before,
                                   std::uint64_t& offset) {
  auto conn = open_connection(path, SQLITE_OPEN_READWRITE, 10'000);
  auto db = conn.get();
  // The offsets table is created the way every read-model file creates it, before the swap's
  // transaction (it also sets the connection's journal mode, which a transaction forbids).
  if (!actors::create_offsets_table(db, true, std::chrono::seconds{10}))
    fail(sqlite_message(db, sqlite3_errcode(db), "creating projection_offsets", path));
  {
    statement attach{db, "ATTACH DATABASE ?1 AS annals_shadow", path};
    attach.bind(1, shadow).run();
  }
  exec(db, "BEGIN IMMEDIATE", path);
  std::vector<swapped_table> tables;
  try {
    std::vector<std::pair<std::string, std::string>> defs;
    {
      statement list{db,
                     "SELECT name, sql FROM annals_shadow.sqlite_schema WHERE type = 'table' AND "
                     "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> 'projection_offsets' "
                     "ORDER BY name",
                     path};
      while (list.step())
        defs.emplace_back(list.text(0), list.text(1));
    }
    for (const auto& [table, sql] : defs)
      if (std::find(std::begin(persistence::sqlite_format::journal_tables),
                    std::end(persistence::sqlite_format::journal_tables), table)
          != std::end(persistence::sqlite_format::journal_tables))
        fail("projection " + name + " created a table named " + table
             + ", which is a journal table; nothing was swapped in");
    // A service that runs this projection on the file would have moved its offset.
    auto now = stored_offset(db, "main", name, path);
    if (now != before)
      fail("the stored offset of projection " + name + " moved from "
           + (before ? std::to_string(*before) : "none") + " to "
           + (now ? std::to_string(*now) : "none")
           + " during the rebuild: a running service projects it; stop the service and retry");
    for (const auto& [table, sql] : defs) {
      exec(db, "DROP TABLE IF EXISTS main." + sql_identifier(table), path);
      exec(db, sql, path);
      exec(db,
           "INSERT INTO main." + sql_identifier(table) + " SELECT * FROM annals_shadow."
             + sql_identifier(table),
           path);
      tables.push_back({table, static_cast<std::uint64_t>(sqlite3_changes64(db))});
    }
    // Indexes and triggers of those tables (the DROP took the old ones with it).
    {
      statement extra{db,
                      "SELECT sql, tbl_name FROM annals_shadow.sqlite_schema WHERE type IN "
                      "('index', 'trigger') AND sql IS NOT NULL",
                      path};
      std::vector<std::string> sqls;
      while (extra.step()) {
        auto tbl = extra.text(1);
        if (std::any_of(defs.begin(), defs.end(), [&](const auto& d) { return d.first == tbl; }))
          sqls.push_back(extra.text(0));
      }
      for (const auto& sql : sqls)
        exec(db, sql, path);
    }
    offset = stored_offset(db, "annals_shadow", name, path).value_or(0);
    statement upsert{db,
                     "INSERT INTO main.projection_offsets(name, \"offset\") VALUES (?1, ?2) "
                     "ON CONFLICT(name) DO UPDATE SET \"offset\" = excluded.\"offset\"",
                     path};
    upsert.bind(1, name).bind(2, static_cast<std::int64_t>(offset)).run();
    exec(db, "COMMIT", path);
  } catch (...) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  exec(db, "DETACH DATABASE annals_shadow", path);
  return tables;
}

// Waits until `running` has processed `head`, drawing its progress; fails if it fails.
void follow_to_head(actors::projection& running, std::uint64_t head, progress& bar) {
  const auto& name = running.name();
  for (;;) {
    auto st = running.await_offset(head, std::chrono::milliseconds{200});
    if (st)
      break;
    if (!is(st.error(), actors::projection_errc::timeout))
      fail("projection " + name + " failed while rebuilding: " + render(st.error()));
    auto now = running.status();
    if (!now)
      fail("projection " + name + " does not answer: " + render(now.error()));
    if (now->state == actors::projection_state::failed)
      fail("projection " + name + " failed while rebuilding: " + now->error);
    bar.update(now->offset, false);
  }
  bar.update(head, true);
  running.stop();
}

// Rebuilds the sink of `proj` in place: reset (offset 0), then the whole journal.
void rebuild_sink(const cli::projection_entry& proj, const journal_file& journal, std::ostream& out,
                  std::ostream& err) {
  auto head = journal.head();
  auto made = proj.make_sink(journal.path);
  if (!made)
    fail("projection " + proj.name + ": " + render(made.error()));
  if (!*made)
    fail("the factory of projection " + proj.name + " returned no sink");
  auto sink = std::move(*made);
  // The model is opened first, so that a model another process writes is refused before
  // anything is reset.
  if (auto opened = sink->open(); !opened)
    fail("projection " + proj.name + ": " + render(opened.error()));
  if (auto reset = sink->reset())
    fail("projection " + proj.name + ": resetting its model: " + render(reset));
  auto guarantee = sink->guarantee();
  progress bar{err, proj.name, head};
  {
    caf::actor_system_config cfg;
    actors::configure(cfg);
    caf::actor_system sys{cfg};
    auto running = actors::spawn_projection(sys, journal.journal, std::move(sink),
                                            actors::sink_options{.name = proj.name});
    follow_to_head(running, head, bar);
  }
  out << "rebuilt projection " << proj.name << " at offset " << head << " in place ("
      << actors::to_string(guarantee) << ")\n";
}

// Rebuilds `proj` from offset 0 into a shadow file next to the journal and swaps its
// tables into the journal's file; progress goes to `err`, the summary to `out`.
void rebuild_projection(const cli::projection_entry& proj, const journal_file& journal,
                        std::ostream& out, std::ostream& err) {
  const auto& path = journal.path;
  auto shadow = path + ".rebuild-" + proj.name;
  remove_database_files(shadow);
  auto head = journal.head();
  auto before = stored_offset(journal.db(), "main", proj.name, path);
  auto handler = proj.make();
  if (!handler)
    fail("the factory of projection " + proj.name + " returned no handler");
  progress bar{err, proj.name, head};
  try {
    caf::actor_system_config cfg;
    actors::configure(cfg);
    caf::actor_system sys{cfg};
    auto running =
      actors::spawn_projection(sys, journal.journal, std::move(handler),
                               {.name = proj.name, .path = shadow, .filter = proj.filter});
    follow_to_head(running, head, bar);
  } catch (...) {
    remove_database_files(shadow);
    throw;
  }
  std::uint64_t offset = 0;
  std::vector<swapped_table> tables;
  try {
    tables = swap_in(path, shadow, proj.name, before, offset);
  } catch (...) {
    remove_database_files(shadow);
    throw;
  }
  remove_database_files(shadow);
  out << "rebuilt projection " << proj.name << " at offset " << offset << ": ";
  for (std::size_t i = 0; i < tables.size(); ++i)
    out << (i ? ", " : "") << "table " << tables[i].name << " (" << grouped(tables[i].rows)
        << (tables[i].rows == 1 ? " row)" : " rows)");
  if (tables.empty())
    out << "no tables";
  out << '\n';
}

} // namespace

int rebuild(const args_list& in, const std::vector<cli::projection_entry>& known,
            const std::string& program, std::ostream& out, std::ostream& err) {
  auto args = parse_arguments(in, {{"--projection", true}});
  auto path = journal_path(args);
  auto name = args.get("--projection");
  if (!name)
    usage_error("--projection NAME is required");
  auto journal = open_journal(path);
  auto entry =
    std::find_if(known.begin(), known.end(), [&](const auto& p) { return p.name == *name; });
  if (entry == known.end()) {
    if (known.empty())
      fail("unknown projection '" + *name + "': " + program
           + " registers no projections; run the service's own admin command (e.g. "
             "annals-bank admin rebuild ...)");
    std::vector<std::string> names;
    for (const auto& p : known)
      names.push_back(p.name);
    fail("unknown projection '" + *name + "' (registered: " + joined(names) + ")");
  }
  if (entry->make_sink)
    rebuild_sink(*entry, journal, out, err);
  else
    rebuild_projection(*entry, journal, out, err);
  return 0;
}

} // namespace annals::tools::detail

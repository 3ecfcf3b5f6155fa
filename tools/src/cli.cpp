// The tool's entry point: registration, usage texts and dispatch to the subcommands
// (one file each, declared in commands.hpp).

#include "annals/tools/cli.hpp"

#include <algorithm>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "options.hpp"

namespace annals::tools {

using namespace detail;

cli::cli(std::string program_name) : program_(std::move(program_name)) {}

void cli::register_replay(std::string type_name, replay_function replay) {
  aggregates_.push_back({std::move(type_name), std::move(replay)});
}

void cli::register_projection(std::string name, projection_factory make,
                              actors::event_filter filter) {
  projections_.push_back({std::move(name), std::move(make), std::move(filter), {}});
}

void cli::register_sink(std::string name, sink_factory make) {
  projections_.push_back({std::move(name), {}, actors::event_filter::all(), std::move(make)});
}

namespace {

constexpr std::string_view subcommands[] = {"inspect", "events", "state",  "verify",
                                            "rebuild", "export", "import", "backup"};

std::string general_usage(const std::string& p) {
  return "usage: " + p + " <subcommand> DB [options]   (" + p
         + " <subcommand> --help describes one)\n"
           "\n"
           "  inspect DB   what the journal holds: aggregate types, events, snapshots, "
           "projections\n"
           "  events DB    events in offset order, filtered; --follow prints new ones as they "
           "commit\n"
           "  state DB     an aggregate's state rebuilt by replay, now or at a version or time\n"
           "  verify DB    recompute the hash chain over every event\n"
           "  rebuild DB   rebuild a projection from offset 0 (SQL: in a shadow, swapped in)\n"
           "  export DB    the whole log as JSON lines on stdout\n"
           "  import DB    JSON lines from stdin into an empty (or new) journal\n"
           "  backup DB DEST  a consistent copy of the journal into a new file, also while a\n"
           "               service writes to it\n"
           "\n"
           "Every subcommand but rebuild and import only reads DB, through read-only connections:\n"
           "safe while a service writes to the same file. Exit codes: 0 ok, 1 failure, 2 usage.\n"
           "\n"
           "inspect, events, state, verify, export and import also take a journal on NATS\n"
           "JetStream as DB: nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N]\n"
           "(in a build with the JetStream journal), or on PostgreSQL:\n"
           "postgresql://USER@HOST:PORT/DB (in a build with the PostgreSQL journal).\n";
}

std::string usage_of(std::string_view sub, const std::string& p) {
  std::string u = "usage: " + p + " " + std::string{sub};
  if (sub == "inspect")
    return u
           + " DB [--json]\n"
             "\n"
             "Aggregate types (the part of a persistence id before '|') with their number of\n"
             "ids, events and snapshots; the head offset, the schema version, the file size\n"
             "(and that of its WAL); every projection in projection_offsets with its offset\n"
             "and lag behind the head.\n"
             "\n"
             "  --json   one JSON object instead of the text\n";
  if (sub == "events")
    return u
           + " DB [filters] [--limit N] [--follow] [--json | --table]\n"
             "\n"
             "Events in offset order.\n"
             "\n"
             "  --id ID           a persistence id (account|acc-1), or without '|' the id part\n"
             "                    of any type (acc-1)\n"
             "  --aggregate TYPE  events of one aggregate type (persistence ids TYPE|...)\n"
             "  --type NAME       events of one event type (bank.deposited)\n"
             "  --tag TAG         events carrying a tag\n"
             "  --from-offset N   events from offset N on\n"
             "  --since TIME      events committed at or after TIME: ISO 8601 UTC\n"
             "                    (2026-11-27T10:42:00Z, fractions allowed) or Unix seconds\n"
             "  --limit N         at most N events\n"
             "  --follow          then wait for new events and print them as they commit\n"
             "                    (polls every 200 ms) until SIGINT or SIGTERM, exit 0\n"
             "  --json            JSON lines (the default unless stdout is a terminal):\n"
             "                    offset, persistence_id, seq, type, version, timestamp, data,\n"
             "                    tags, command_id, correlation_id\n"
             "  --table           an aligned table (the default on a terminal)\n";
  if (sub == "state")
    return u
           + " DB --aggregate TYPE --id ID [--at SEQ | --at-time TIME]\n"
             "\n"
             "The state of TYPE|ID rebuilt by replaying its events with the aggregate's own\n"
             "codec and apply functions: all of them, events 1..SEQ, or those committed at or\n"
             "before TIME (ISO 8601 UTC or Unix seconds). Prints JSON: aggregate, id, version,\n"
             "timestamp, state. Needs the aggregate type registered in this binary (a service's\n"
             "admin command registers its own).\n";
  if (sub == "verify")
    return u
           + " DB\n"
             "\n"
             "Recomputes the SHA-256 chain over every event in offset order. Prints\n"
             "\"ok: N events, head offset H, head hash X\" and exits 0, or names the first\n"
             "event whose stored hash does not match and exits 1.\n";
  if (sub == "rebuild")
    return u
           + " DB --projection NAME\n"
             "\n"
             "Rebuilds the SQL projection NAME from offset 0 into a shadow file next to DB\n"
             "(DB.rebuild-NAME), waits until it has caught up with the head, then replaces\n"
             "the projection's tables and its stored offset in DB in one transaction and\n"
             "deletes the shadow. The journal is read through a read-only connection.\n"
             "Progress goes to stderr.\n"
             "\n"
             "Run it with the service stopped, or for a projection the service does not run:\n"
             "a running projection would go on writing the same tables. The swap is refused\n"
             "if the projection's stored offset moved during the rebuild.\n"
             "\n"
             "A projection into another home (a search index, files, a key-value store) is\n"
             "rebuilt in place: its model is reset to offset 0 and the whole journal replayed\n"
             "into it, with the same progress; its readers see it fill up again.\n";
  if (sub == "export")
    return u
           + " DB\n"
             "\n"
             "The whole log as JSON lines on stdout, in offset order: the fields of `events\n"
             "--json` plus timestamp_us, name, payload (the stored text, verbatim) and hash\n"
             "(hex), so that `import` restores it exactly. Snapshots and read models are not\n"
             "exported: they are rebuilt from the events.\n";
  if (sub == "backup")
    return u
           + " DB DEST\n"
             "\n"
             "Copies the journal DB into the new file DEST with SQLite's online backup: every\n"
             "page under one read transaction, so the copy is consistent (the log up to some\n"
             "commit) even while a service appends to DB, which it never blocks. Refuses a DEST\n"
             "that exists. Then verifies the copy's hash chain and prints what `verify` prints.\n";
  if (sub == "import")
    return u
           + " DB < export.jsonl\n"
             "\n"
             "Reads the JSON lines of `export` from stdin into DB, which must be an empty\n"
             "journal or not exist yet (it is created). Checks that offsets run on from 1\n"
             "and that every line's hash continues the chain; a broken line is named and\n"
             "nothing is written. All rows go in in one transaction; then the file is\n"
             "verified.\n"
             "\n"
             "Into a JetStream journal (DB nats://...?stream=NAME): the whole input is checked\n"
             "first (offsets need only increase), then appended in its order into an empty or\n"
             "new stream, which numbers and timestamps the events anew; then it is verified.\n"
             "Into a PostgreSQL journal (DB postgresql://USER@HOST:PORT/DB) the same way: the\n"
             "database must hold an empty journal or no tables of that name (the schema is\n"
             "created); the events get offsets 1, 2, 3, ... and the time of the import.\n";
  return general_usage(p);
}

} // namespace

int cli::run(int argc, char** argv, std::ostream& out, std::ostream& err) const {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i)
    args.emplace_back(argv[i]);
  if (args.empty()) {
    err << general_usage(program_);
    return exit_usage;
  }
  auto sub = args.front();
  args.erase(args.begin());
  if (sub == "--help" || sub == "-h" || sub == "help") {
    if (!args.empty()
        && std::find(std::begin(subcommands), std::end(subcommands), args.front())
             != std::end(subcommands))
      out << usage_of(args.front(), program_);
    else
      out << general_usage(program_);
    return 0;
  }
  if (std::find(std::begin(subcommands), std::end(subcommands), sub) == std::end(subcommands)) {
    err << program_ << ": unknown subcommand '" << sub << "' (" << program_
        << " --help lists them)\n";
    return exit_usage;
  }
  if (std::any_of(args.begin(), args.end(),
                  [](const auto& a) { return a == "--help" || a == "-h"; })) {
    out << usage_of(sub, program_);
    return 0;
  }
  try {
    if (sub == "inspect")
      return detail::inspect(args, projections_, out);
    if (sub == "events")
      return detail::events(args, out);
    if (sub == "state")
      return detail::state(args, aggregates_, program_, out);
    if (sub == "verify")
      return detail::verify(args, out);
    if (sub == "rebuild")
      return detail::rebuild(args, projections_, program_, out, err);
    if (sub == "export")
      return export_log(args, out);
    if (sub == "backup")
      return detail::backup(args, out);
    return import_log(args, std::cin, out);
  } catch (const failure& f) {
    out.flush();
    err << program_ << ": " << sub << ": " << f.message;
    if (f.code == exit_usage)
      err << " (" << program_ << " " << sub << " --help)";
    err << '\n';
    return f.code;
  } catch (const std::exception& e) {
    out.flush();
    err << program_ << ": " << sub << ": " << e.what() << '\n';
    return exit_failure;
  }
}

} // namespace annals::tools

#include "annals/tools/cli.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include <boost/json.hpp>
#include <sqlite3.h>

#include "annals/error.hpp"
#include "annals/persistence/audit.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "journal_file.hpp"

namespace annals::tools {

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace detail;
using persistence::event_record;

cli::cli(std::string program_name) : program_(std::move(program_name)) {}

void cli::register_replay(std::string type_name, replay_function replay) {
  aggregates_.push_back({std::move(type_name), std::move(replay)});
}

void cli::register_projection(std::string name, projection_factory make,
                              actors::event_filter filter) {
  projections_.push_back({std::move(name), std::move(make), std::move(filter)});
}

namespace {

// -- usage texts ------------------------------------------------------------------------

constexpr std::string_view subcommands[] = {"inspect", "events", "state", "verify",
                                            "rebuild", "export", "import"};

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
           "  rebuild DB   rebuild a SQL projection from offset 0 and swap it in\n"
           "  export DB    the whole log as JSON lines on stdout\n"
           "  import DB    JSON lines from stdin into an empty (or new) journal\n"
           "\n"
           "Every subcommand but rebuild and import only reads, through read-only connections:\n"
           "safe while a service writes to the same file. Exit codes: 0 ok, 1 failure, 2 usage.\n";
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
             "if the projection's stored offset moved during the rebuild.\n";
  if (sub == "export")
    return u
           + " DB\n"
             "\n"
             "The whole log as JSON lines on stdout, in offset order: the fields of `events\n"
             "--json` plus timestamp_us, name, payload (the stored text, verbatim) and hash\n"
             "(hex), so that `import` restores it exactly. Snapshots and read models are not\n"
             "exported: they are rebuilt from the events.\n";
  if (sub == "import")
    return u
           + " DB < export.jsonl\n"
             "\n"
             "Reads the JSON lines of `export` from stdin into DB, which must be an empty\n"
             "journal or not exist yet (it is created). Checks that offsets run on from 1\n"
             "and that every line's hash continues the chain; a broken line is named and\n"
             "nothing is written. All rows go in in one transaction; then the file is\n"
             "verified.\n";
  return general_usage(p);
}

// -- arguments --------------------------------------------------------------------------

struct option_spec {
  std::string_view name;
  bool takes_value;
};

struct arguments {
  std::vector<std::string> positional;
  std::map<std::string, std::string, std::less<>> values;

  bool has(std::string_view name) const {
    return values.find(name) != values.end();
  }
  std::optional<std::string> get(std::string_view name) const {
    auto i = values.find(name);
    if (i == values.end())
      return std::nullopt;
    return i->second;
  }
};

arguments parse_arguments(const std::vector<std::string>& in,
                          std::initializer_list<option_spec> spec) {
  arguments out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const auto& a = in[i];
    if (a.size() < 2 || a[0] != '-' || a == "-") {
      out.positional.push_back(a);
      continue;
    }
    auto eq = a.find('=');
    std::string name = a.substr(0, eq);
    auto s = std::find_if(spec.begin(), spec.end(), [&](const auto& o) { return o.name == name; });
    if (s == spec.end())
      usage_error("unknown option " + name);
    if (out.has(name))
      usage_error(name + " given twice");
    if (!s->takes_value) {
      if (eq != std::string::npos)
        usage_error(name + " takes no value");
      out.values[name] = "";
    } else if (eq != std::string::npos) {
      out.values[name] = a.substr(eq + 1);
    } else {
      if (i + 1 >= in.size())
        usage_error(name + " needs a value");
      out.values[name] = in[++i];
    }
  }
  return out;
}

// The one positional argument: the journal file.
std::string journal_path(const arguments& args) {
  if (args.positional.empty())
    usage_error("missing the journal file (DB)");
  if (args.positional.size() > 1)
    usage_error("unexpected argument " + args.positional[1]);
  return args.positional[0];
}

std::uint64_t number(std::string_view flag, const std::string& text) {
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || ptr != text.data() + text.size()
      || v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    usage_error(std::string{flag} + " needs a whole number, not '" + text + "'");
  return v;
}

std::optional<std::uint64_t> optional_number(const arguments& args, std::string_view flag) {
  if (auto s = args.get(flag))
    return number(flag, *s);
  return std::nullopt;
}

std::int64_t time_value(std::string_view flag, const std::string& text) {
  auto t = parse_time(text);
  if (!t)
    usage_error(std::string{flag}
                + " needs ISO 8601 UTC (2026-11-27T10:42:00Z) or Unix seconds, not '" + text + "'");
  return *t;
}

// -- output helpers ---------------------------------------------------------------------

json::value payload_json(const std::string& payload) {
  boost::system::error_code ec;
  auto v = json::parse(payload, ec);
  if (ec)
    return json::value(payload); // not JSON: shown as the stored text
  return v;
}

json::value optional_string(const std::string& s) {
  return s.empty() ? json::value(nullptr) : json::value(s);
}

json::object event_json(const event_record& rec) {
  json::object o;
  o["offset"] = rec.offset;
  o["persistence_id"] = rec.persistence_id;
  o["seq"] = rec.seq;
  o["type"] = rec.name;
  o["version"] = rec.version;
  o["timestamp"] = iso_time(rec.timestamp_us);
  o["data"] = payload_json(rec.payload);
  json::array tags;
  for (const auto& t : rec.tags)
    tags.emplace_back(t);
  o["tags"] = std::move(tags);
  o["command_id"] = optional_string(rec.metadata.command_id);
  o["correlation_id"] = optional_string(rec.metadata.correlation_id);
  return o;
}

void pretty(std::ostream& os, const json::value& v, int indent) {
  auto pad = [&](int n) { os << std::string(static_cast<std::size_t>(n), ' '); };
  if (v.is_object() && !v.get_object().empty()) {
    os << "{\n";
    bool first = true;
    for (const auto& kv : v.get_object()) {
      if (!first)
        os << ",\n";
      first = false;
      pad(indent + 2);
      os << json::serialize(kv.key()) << ": ";
      pretty(os, kv.value(), indent + 2);
    }
    os << '\n';
    pad(indent);
    os << '}';
  } else if (v.is_array() && !v.get_array().empty()) {
    os << "[\n";
    bool first = true;
    for (const auto& x : v.get_array()) {
      if (!first)
        os << ",\n";
      first = false;
      pad(indent + 2);
      pretty(os, x, indent + 2);
    }
    os << '\n';
    pad(indent);
    os << ']';
  } else {
    os << json::serialize(v);
  }
}

// Left- or right-aligned columns.
struct text_table {
  std::vector<std::string> header;
  std::vector<bool> right;
  std::vector<std::vector<std::string>> rows;

  void print(std::ostream& os) const {
    std::vector<std::size_t> width(header.size(), 0);
    for (std::size_t c = 0; c < header.size(); ++c) {
      width[c] = header[c].size();
      for (const auto& r : rows)
        width[c] = std::max(width[c], r[c].size());
    }
    auto line = [&](const std::vector<std::string>& r) {
      std::string out;
      for (std::size_t c = 0; c < r.size(); ++c) {
        std::string cell = r[c];
        std::string fill(width[c] - cell.size(), ' ');
        out += c ? "  " : "";
        out += right[c] ? fill + cell : cell + fill;
      }
      while (!out.empty() && out.back() == ' ')
        out.pop_back();
      os << out << '\n';
    };
    line(header);
    for (const auto& r : rows)
      line(r);
  }
};

std::string file_size_text(const std::string& path) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  std::string out = grouped(ec ? 0 : size) + " bytes";
  auto wal = fs::file_size(path + "-wal", ec);
  if (!ec)
    out += " (+ " + grouped(wal) + " bytes WAL)";
  return out;
}

std::int64_t scalar(sqlite3* db, const std::string& sql, const std::string& path) {
  statement stmt{db, sql, path};
  return stmt.step() ? stmt.int64(0) : 0;
}

bool has_table(sqlite3* db, const char* name, const std::string& path) {
  statement stmt{db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1", path};
  stmt.bind(1, std::string_view{name});
  return stmt.step() && stmt.int64(0) > 0;
}

// The aggregate types that occur in the journal, sorted.
std::vector<std::string> journal_types(sqlite3* db, const std::string& path) {
  statement stmt{db,
                 "SELECT DISTINCT substr(persistence_id, 1, instr(persistence_id, '|') - 1) AS t "
                 "FROM events WHERE instr(persistence_id, '|') > 1 ORDER BY t",
                 path};
  std::vector<std::string> out;
  while (stmt.step())
    out.push_back(stmt.text(0));
  return out;
}

std::string joined(const std::vector<std::string>& xs) {
  std::string out;
  for (const auto& x : xs)
    out += (out.empty() ? "" : ", ") + x;
  return out.empty() ? "none" : out;
}

// Read transactions on the tool's connection: one consistent view for several queries.
struct read_transaction {
  read_transaction(sqlite3* db, const std::string& path) : db_(db) {
    exec(db, "BEGIN", path);
  }
  ~read_transaction() {
    sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  }
  sqlite3* db_;
};

// -- inspect ----------------------------------------------------------------------------

int inspect(const std::vector<std::string>& in, const std::vector<cli::projection_entry>& known,
            std::ostream& out) {
  auto args = parse_arguments(in, {{"--json", false}});
  auto path = journal_path(args);
  auto journal = readonly_journal::open(path);
  auto db = journal->db();
  read_transaction txn{db, path};
  auto head = static_cast<std::uint64_t>(
    scalar(db, "SELECT coalesce(max(global_offset), 0) FROM events", path));
  auto total = static_cast<std::uint64_t>(scalar(db, "SELECT count(*) FROM events", path));
  struct type_row {
    std::uint64_t ids = 0, events = 0, snapshots = 0;
  };
  std::map<std::string, type_row> types;
  constexpr const char* type_expr = "CASE WHEN instr(persistence_id, '|') > 0 THEN "
                                    "substr(persistence_id, 1, instr(persistence_id, '|') - 1) "
                                    "ELSE '' END";
  {
    statement stmt{db,
                   std::string{"SELECT "} + type_expr
                     + " AS t, count(DISTINCT persistence_id), count(*) FROM events GROUP BY t",
                   path};
    while (stmt.step()) {
      auto& r = types[stmt.text(0)];
      r.ids = static_cast<std::uint64_t>(stmt.int64(1));
      r.events = static_cast<std::uint64_t>(stmt.int64(2));
    }
  }
  if (has_table(db, "snapshots", path)) {
    statement stmt{
      db, std::string{"SELECT "} + type_expr + " AS t, count(*) FROM snapshots GROUP BY t", path};
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
    o["schema_version"] = journal->schema_version();
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
      << "schema    version " << journal->schema_version() << '\n'
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

// -- events -----------------------------------------------------------------------------

volatile std::sig_atomic_t stop_requested = 0;

void on_stop_signal(int) {
  stop_requested = 1;
}

// SIGINT and SIGTERM set `stop_requested` while this lives (and are unblocked, whatever
// mask the process inherited); the previous handlers and mask come back afterwards.
class stop_signals {
public:
  stop_signals() {
    stop_requested = 0;
    struct sigaction sa {};
    sa.sa_handler = &on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &set, &old_mask_);
  }
  ~stop_signals() {
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  stop_signals(const stop_signals&) = delete;
  stop_signals& operator=(const stop_signals&) = delete;

private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
  sigset_t old_mask_{};
};

struct event_filter_sql {
  std::string where;
  std::vector<std::variant<std::int64_t, std::string>> params;

  void add(std::string clause) {
    where += where.empty() ? " WHERE " : " AND ";
    where += clause;
  }
  void bind(statement& stmt) const {
    int i = 1;
    for (const auto& p : params)
      std::visit([&](const auto& v) { stmt.bind(i++, v); }, p);
  }
};

std::size_t terminal_width() {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  if (const char* cols = std::getenv("COLUMNS")) {
    std::size_t n = 0;
    auto [ptr, ec] = std::from_chars(cols, cols + std::strlen(cols), n);
    if (ec == std::errc{} && n > 0)
      return n;
  }
  return 120;
}

// Cuts `s` to `width` bytes, ending in "...", without splitting a UTF-8 sequence.
std::string fit(std::string s, std::size_t width) {
  if (s.size() <= width)
    return s;
  if (width <= 3)
    return s.substr(0, width);
  auto cut = width - 3;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
    --cut;
  return s.substr(0, cut) + "...";
}

class table_printer {
public:
  table_printer(sqlite3* db, const std::string& path, std::ostream& out) : out_(out) {
    statement stmt{db,
                   "SELECT coalesce(max(length(persistence_id)), 0), coalesce(max(length(name)), "
                   "0), coalesce(max(seq), 0), coalesce(max(global_offset), 0) FROM events",
                   path};
    stmt.step();
    stream_ = std::clamp<std::size_t>(static_cast<std::size_t>(stmt.int64(0)), 6, 40);
    type_ = std::clamp<std::size_t>(static_cast<std::size_t>(stmt.int64(1)), 4, 32);
    seq_ = std::max<std::size_t>(std::to_string(stmt.int64(2)).size(), 3);
    offset_ = std::max<std::size_t>(std::to_string(stmt.int64(3)).size() + 1, 6);
    auto used = offset_ + 2 + 23 + 2 + stream_ + 2 + seq_ + 2 + type_ + 2;
    auto width = terminal_width();
    data_ = width > used + 20 ? width - used : 20;
    row("OFFSET", "TIME", "STREAM", "SEQ", "TYPE", "DATA");
  }

  void print(const event_record& rec) {
    auto time = iso_time(rec.timestamp_us); // 2026-11-27T10:42:00.123456Z
    time = time.substr(0, 10) + " " + time.substr(11, 12);
    std::string data = rec.payload;
    boost::system::error_code ec;
    auto v = json::parse(rec.payload, ec);
    if (!ec)
      data = json::serialize(v);
    row(std::to_string(rec.offset), time, rec.persistence_id, std::to_string(rec.seq), rec.name,
        data);
  }

private:
  void row(const std::string& offset, const std::string& time, const std::string& stream,
           const std::string& seq, const std::string& type, const std::string& data) {
    auto left = [](std::string s, std::size_t w) {
      s = fit(std::move(s), w);
      return s + std::string(w - s.size(), ' ');
    };
    auto right = [](std::string s, std::size_t w) {
      s = fit(std::move(s), w);
      return std::string(w - s.size(), ' ') + s;
    };
    out_ << right(offset, offset_) << "  " << left(time, 23) << "  " << left(stream, stream_)
         << "  " << right(seq, seq_) << "  " << left(type, type_) << "  " << fit(data, data_)
         << '\n';
  }

  std::ostream& out_;
  std::size_t offset_, stream_, seq_, type_, data_;
};

int events(const std::vector<std::string>& in, std::ostream& out) {
  auto args = parse_arguments(in, {{"--id", true},
                                   {"--aggregate", true},
                                   {"--type", true},
                                   {"--tag", true},
                                   {"--from-offset", true},
                                   {"--since", true},
                                   {"--limit", true},
                                   {"--follow", false},
                                   {"--json", false},
                                   {"--table", false}});
  auto path = journal_path(args);
  if (args.has("--json") && args.has("--table"))
    usage_error("--json and --table exclude each other");
  auto from = optional_number(args, "--from-offset");
  auto limit = optional_number(args, "--limit");
  std::optional<std::int64_t> since;
  if (auto s = args.get("--since"))
    since = time_value("--since", *s);
  bool follow = args.has("--follow");
  bool as_table = args.has("--table") || (!args.has("--json") && is_terminal(out));

  auto journal = readonly_journal::open(path);
  auto db = journal->db();
  auto head = journal->head();
  event_filter_sql filter;
  if (auto id = args.get("--id")) {
    if (id->find('|') != std::string::npos) {
      filter.add("persistence_id = ?");
    } else {
      filter.add("instr(persistence_id, '|') > 0 AND "
                 "substr(persistence_id, instr(persistence_id, '|') + 1) = ?");
    }
    filter.params.emplace_back(*id);
    if (!follow) {
      statement probe{db, "SELECT 1 FROM events" + filter.where + " LIMIT 1", path};
      filter.bind(probe);
      if (!probe.step())
        fail(
          "unknown id '" + *id + "': no persistence id "
          + (id->find('|') != std::string::npos ? "is '" + *id + "'" : "ends in '|" + *id + "'"));
    }
  }
  if (auto type = args.get("--aggregate")) {
    filter.add("persistence_id >= ? AND persistence_id < ?");
    filter.params.emplace_back(*type + "|");
    filter.params.emplace_back(*type + "}"); // '}' follows '|'
    if (!follow) {
      statement probe{db,
                      "SELECT 1 FROM events WHERE persistence_id >= ?1 AND persistence_id < ?2 "
                      "LIMIT 1",
                      path};
      probe.bind(1, *type + "|").bind(2, *type + "}");
      if (!probe.step())
        fail("unknown aggregate type '" + *type
             + "' (the journal has: " + joined(journal_types(db, path)) + ")");
    }
  }
  if (auto name = args.get("--type")) {
    filter.add("name = ?");
    filter.params.emplace_back(*name);
  }
  if (auto tag = args.get("--tag")) {
    filter.add("global_offset IN (SELECT global_offset FROM event_tags WHERE tag = ?)");
    filter.params.emplace_back(*tag);
  }
  if (from) {
    if (*from > head + 1)
      fail("offset " + std::to_string(*from) + " is beyond the head (" + std::to_string(head)
           + ")");
    filter.add("global_offset >= ?");
    filter.params.emplace_back(static_cast<std::int64_t>(*from));
  }
  if (since) {
    filter.add("timestamp_us >= ?");
    filter.params.emplace_back(*since);
  }

  std::optional<table_printer> table;
  if (as_table)
    table.emplace(db, path, out);
  std::optional<stop_signals> signals;
  if (follow)
    signals.emplace();
  constexpr std::uint64_t page = 1000;
  std::uint64_t last = 0;
  std::uint64_t printed = 0;
  auto sql = std::string{"SELECT "} + event_columns + " FROM events" + filter.where
             + (filter.where.empty() ? " WHERE " : " AND ")
             + "global_offset > ? ORDER BY global_offset LIMIT ?";
  statement stmt{db, sql, path};
  while (!limit || printed < *limit) {
    auto want = limit ? std::min(page, *limit - printed) : page;
    stmt.reset();
    filter.bind(stmt);
    auto n = static_cast<int>(filter.params.size());
    stmt.bind(n + 1, static_cast<std::int64_t>(last)).bind(n + 2, static_cast<std::int64_t>(want));
    std::uint64_t got = 0;
    event_record rec;
    while (stmt.step()) {
      read_event(stmt, 0, rec, path);
      if (table)
        table->print(rec);
      else
        out << json::serialize(event_json(rec)) << '\n';
      last = rec.offset;
      ++got;
    }
    stmt.reset();
    printed += got;
    if (got == want)
      continue;
    if (!follow)
      break;
    out.flush();
    for (int i = 0; i < 10 && !stop_requested; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    if (stop_requested)
      break;
  }
  out.flush();
  return 0;
}

// -- state ------------------------------------------------------------------------------

int state(const std::vector<std::string>& in, const std::vector<cli::aggregate_entry>& known,
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
  if (auto bar = id->find('|'); bar != std::string::npos) {
    if (id->substr(0, bar) != *type)
      usage_error("--id " + *id + " names another aggregate type than --aggregate " + *type);
    id = id->substr(bar + 1);
  }
  auto journal = readonly_journal::open(path);
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
  auto pid = *type + "|" + *id;
  std::uint64_t highest = 0;
  std::uint64_t up_to = 0;
  {
    std::lock_guard guard{journal->mutex()};
    statement stmt{journal->db(),
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
      statement when{journal->db(),
                     "SELECT coalesce(max(seq), 0) FROM events WHERE persistence_id = ?1 AND "
                     "timestamp_us <= ?2",
                     path};
      when.bind(1, pid).bind(2, *at_time);
      up_to = when.step() ? static_cast<std::uint64_t>(when.int64(0)) : 0;
      if (up_to == 0)
        fail(pid + " has no event at or before " + iso_time(*at_time));
    }
  }
  auto r = entry->replay(*journal, pid, up_to);
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

// -- verify -----------------------------------------------------------------------------

void print_ok(std::ostream& out, const persistence::verify_report& r) {
  out << "ok: " << r.events_checked << " events, head offset " << r.head_offset << ", head hash "
      << persistence::to_hex(r.head_hash) << '\n';
}

int verify(const std::vector<std::string>& in, std::ostream& out) {
  auto args = parse_arguments(in, {});
  auto path = journal_path(args);
  readonly_journal::open(path); // the tool's own checks: missing, not a journal, locked
  auto report = persistence::sqlite_journal::verify(path);
  if (!report)
    fail(render(report.error()));
  if (const auto& b = report->first_break) {
    out << "broken: offset " << b->offset << ", persistence id " << b->persistence_id << ", seq "
        << b->seq << ": " << b->reason << '\n';
    out.flush();
    fail(path + ": the hash chain breaks at offset " + std::to_string(b->offset) + " ("
         + b->persistence_id + ", seq " + std::to_string(b->seq) + "); head offset "
         + std::to_string(report->head_offset));
  }
  print_ok(out, *report);
  return 0;
}

// -- rebuild ----------------------------------------------------------------------------

int rebuild_cmd(const std::vector<std::string>& in, const std::vector<cli::projection_entry>& known,
                const std::string& program, std::ostream& out, std::ostream& err) {
  auto args = parse_arguments(in, {{"--projection", true}});
  auto path = journal_path(args);
  auto name = args.get("--projection");
  if (!name)
    usage_error("--projection NAME is required");
  auto journal = readonly_journal::open(path);
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
  detail::rebuild(*entry, journal, out, err);
  return 0;
}

// -- export -----------------------------------------------------------------------------

int export_cmd(const std::vector<std::string>& in, std::ostream& out) {
  auto args = parse_arguments(in, {});
  auto path = journal_path(args);
  auto journal = readonly_journal::open(path);
  auto db = journal->db();
  // Schema 1 stored no hashes: the chain is computed on the way out.
  bool stored_hash = journal->schema_version() >= 2;
  read_transaction txn{db, path};
  statement stmt{db,
                 std::string{"SELECT "} + event_columns + (stored_hash ? ", hash" : "")
                   + " FROM events ORDER BY global_offset",
                 path};
  persistence::event_hash chain{};
  event_record rec;
  while (stmt.step()) {
    read_event(stmt, 0, rec, path);
    auto o = event_json(rec);
    o["timestamp_us"] = rec.timestamp_us;
    o["name"] = rec.name;
    o["payload"] = rec.payload;
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

// -- import -----------------------------------------------------------------------------

struct import_line {
  std::size_t number = 0;
  const json::object* obj = nullptr;

  [[noreturn]] void bad(const std::string& what) const {
    fail("line " + std::to_string(number) + ": " + what);
  }
  const json::value* find(std::string_view key) const {
    auto i = obj->find(key);
    return i == obj->end() ? nullptr : &i->value();
  }
  std::uint64_t u64(std::string_view key) const {
    auto v = find(key);
    if (v && v->is_int64() && v->get_int64() >= 0)
      return static_cast<std::uint64_t>(v->get_int64());
    if (v && v->is_uint64())
      return v->get_uint64();
    bad(std::string{key} + " is missing or not a whole number");
  }
  std::string text(std::string_view key) const {
    auto v = find(key);
    if (!v || !v->is_string())
      bad(std::string{key} + " is missing or not a string");
    return std::string{v->get_string()};
  }
  std::string optional_text(std::string_view key) const {
    auto v = find(key);
    if (!v || v->is_null())
      return {};
    if (!v->is_string())
      bad(std::string{key} + " is not a string");
    return std::string{v->get_string()};
  }
};

event_record record_of(const import_line& l) {
  event_record rec;
  rec.offset = l.u64("offset");
  rec.persistence_id = l.text("persistence_id");
  rec.seq = l.u64("seq");
  rec.name = l.find("name") ? l.text("name") : l.text("type");
  auto version = l.u64("version");
  if (version < 1 || version > std::numeric_limits<std::uint32_t>::max())
    l.bad("version " + std::to_string(version) + " is out of range");
  rec.version = static_cast<std::uint32_t>(version);
  rec.payload = l.text("payload");
  if (auto ts = l.find("timestamp_us")) {
    if (!ts->is_int64())
      l.bad("timestamp_us is not a whole number");
    rec.timestamp_us = ts->get_int64();
  } else {
    auto t = parse_time(l.text("timestamp"));
    if (!t)
      l.bad("timestamp is not ISO 8601 UTC");
    rec.timestamp_us = *t;
  }
  if (auto tags = l.find("tags"); tags && !tags->is_null()) {
    if (!tags->is_array())
      l.bad("tags is not an array");
    for (const auto& t : tags->get_array()) {
      if (!t.is_string() || t.get_string().empty()
          || t.get_string().find(tag_separator) != json::string::npos)
        l.bad("tags holds an empty tag, a non-string or one containing \\x1f");
      rec.tags.emplace_back(t.get_string());
    }
  }
  rec.metadata.command_id = l.optional_text("command_id");
  rec.metadata.correlation_id = l.optional_text("correlation_id");
  if (rec.persistence_id.empty() || rec.seq == 0 || rec.name.empty())
    l.bad("an empty persistence id or event name, or seq 0");
  return rec;
}

int import_cmd(const std::vector<std::string>& in, std::istream& input, std::ostream& out) {
  auto args = parse_arguments(in, {});
  auto path = journal_path(args);
  std::error_code ec;
  bool create =
    !fs::exists(path, ec) || (fs::is_regular_file(path, ec) && fs::file_size(path, ec) == 0);
  if (create) {
    auto j = persistence::sqlite_journal::open({.path = path});
    if (!j)
      fail(render(j.error()));
    (*j)->close();
  }
  bool committed = false;
  // A journal this import created is removed again if the import fails.
  struct cleanup {
    bool active;
    const std::string& path;
    const bool& committed;
    ~cleanup() {
      if (active && !committed) {
        std::error_code e;
        for (const char* suffix : {"", "-wal", "-shm"})
          fs::remove(path + suffix, e);
      }
    }
  } undo{create, path, committed};
  {
    auto journal = readonly_journal::open(path);
    if (journal->schema_version() != persistence::sqlite_journal::schema_version)
      fail(path + " has journal schema version " + std::to_string(journal->schema_version())
           + "; open it once with this build (which upgrades it) before importing");
  }
  auto conn = open_connection(path, SQLITE_OPEN_READWRITE, 10'000);
  auto db = conn.get();
  exec(db, "BEGIN IMMEDIATE", path);
  std::uint64_t imported = 0;
  try {
    if (auto n = scalar(db, "SELECT count(*) FROM events", path); n > 0)
      fail(path + " already holds " + grouped(static_cast<std::uint64_t>(n))
           + " events; import writes only into an empty journal");
    statement insert{db,
                     "INSERT INTO events (global_offset, persistence_id, seq, name, version, "
                     "payload, tags, timestamp_us, command_id, correlation_id, hash) VALUES "
                     "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                     path};
    statement insert_tag{db, "INSERT INTO event_tags (tag, global_offset) VALUES (?1, ?2)", path};
    persistence::event_hash chain{};
    std::map<std::string, std::uint64_t, std::less<>> seqs;
    std::string text;
    std::size_t number = 0;
    while (std::getline(input, text)) {
      ++number;
      if (text.find_first_not_of(" \t\r") == std::string::npos)
        continue;
      boost::system::error_code jec;
      auto v = json::parse(text, jec);
      if (jec || !v.is_object())
        fail("line " + std::to_string(number) + ": not a JSON object"
             + (jec ? " (" + jec.message() + ")" : std::string{}));
      import_line line{number, &v.get_object()};
      auto rec = record_of(line);
      auto where =
        "line " + std::to_string(number) + " (offset " + std::to_string(rec.offset) + ")";
      // `data` is derived from `payload`; an edit of one without the other is refused.
      if (auto data = line.find("data"); data && *data != payload_json(rec.payload))
        fail(where + ": data does not match payload (only payload is imported)");
      if (rec.offset != imported + 1)
        fail(where + ": expected offset " + std::to_string(imported + 1)
             + " (the log has a gap or is out of order)");
      auto& last_seq = seqs[rec.persistence_id];
      if (rec.seq != last_seq + 1)
        fail(where + ": " + rec.persistence_id + " seq " + std::to_string(rec.seq) + ", expected "
             + std::to_string(last_seq + 1));
      last_seq = rec.seq;
      auto stored = persistence::hash_from_hex(line.text("hash"));
      if (!stored)
        fail(where + ": hash is not 64 hex digits");
      chain = persistence::chain_hash(chain, rec);
      if (*stored != chain)
        fail(where + ": the hash chain breaks here: the line says " + persistence::to_hex(*stored)
             + ", the chain gives " + persistence::to_hex(chain)
             + " (this event or one before it was altered)");
      std::string tags;
      for (const auto& t : rec.tags)
        tags += (tags.empty() ? "" : std::string(1, tag_separator)) + t;
      insert.reset();
      insert.bind(1, static_cast<std::int64_t>(rec.offset))
        .bind(2, rec.persistence_id)
        .bind(3, static_cast<std::int64_t>(rec.seq))
        .bind(4, rec.name)
        .bind(5, static_cast<std::int64_t>(rec.version))
        .bind(6, rec.payload);
      if (rec.tags.empty())
        insert.bind_null(7);
      else
        insert.bind(7, tags);
      insert.bind(8, rec.timestamp_us)
        .bind_optional(9, rec.metadata.command_id)
        .bind_optional(10, rec.metadata.correlation_id)
        .bind_blob(11, chain.data(), static_cast<int>(chain.size()));
      insert.run();
      for (const auto& t : rec.tags) {
        insert_tag.reset();
        insert_tag.bind(1, t).bind(2, static_cast<std::int64_t>(rec.offset)).run();
      }
      ++imported;
    }
    if (input.bad())
      fail("reading stdin failed");
    exec(db, "COMMIT", path);
    committed = true;
  } catch (...) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  auto report = persistence::sqlite_journal::verify(path);
  if (!report)
    fail("imported " + std::to_string(imported)
         + " events, then verify failed: " + render(report.error()));
  if (report->first_break)
    fail("imported " + std::to_string(imported) + " events, then verify found a break at offset "
         + std::to_string(report->first_break->offset) + ": " + report->first_break->reason);
  out << "imported " << imported << " events into " << path << '\n';
  print_ok(out, *report);
  return 0;
}

} // namespace

// -- dispatch ---------------------------------------------------------------------------

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
      return inspect(args, projections_, out);
    if (sub == "events")
      return events(args, out);
    if (sub == "state")
      return state(args, aggregates_, program_, out);
    if (sub == "verify")
      return verify(args, out);
    if (sub == "rebuild")
      return rebuild_cmd(args, projections_, program_, out, err);
    if (sub == "export")
      return export_cmd(args, out);
    return import_cmd(args, std::cin, out);
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

#include "commands.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>
#include <thread>
#include <variant>

#include <boost/json.hpp>

#include "annals/persistence/sqlite_format.hpp"
#include "annals/persistence_id.hpp"
#include "journal_file.hpp"
#include "output.hpp"
#include "remote_journal.hpp"

namespace annals::tools::detail {

namespace json = boost::json;
using persistence::event_record;

namespace {

// The aggregate types that occur in the journal, sorted.
std::vector<std::string> journal_types(sqlite3* db, const std::string& path) {
  statement stmt{db,
                 "SELECT DISTINCT substr(persistence_id, 1, " + separator_position
                   + " - 1) AS t FROM events WHERE " + separator_position + " > 1 ORDER BY t",
                 path};
  std::vector<std::string> out;
  while (stmt.step())
    out.push_back(stmt.text(0));
  return out;
}

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

/// The longest values of a journal's columns, which size the table's columns.
struct column_widths {
  std::size_t persistence_id = 0;
  std::size_t name = 0;
  std::uint64_t seq = 0;
  std::uint64_t offset = 0;
};

column_widths widths_of(sqlite3* db, const std::string& path) {
  statement stmt{db,
                 "SELECT coalesce(max(length(persistence_id)), 0), coalesce(max(length(name)), "
                 "0), coalesce(max(seq), 0), coalesce(max(global_offset), 0) FROM events",
                 path};
  stmt.step();
  return {static_cast<std::size_t>(stmt.int64(0)), static_cast<std::size_t>(stmt.int64(1)),
          static_cast<std::uint64_t>(stmt.int64(2)), static_cast<std::uint64_t>(stmt.int64(3))};
}

class table_printer {
public:
  table_printer(const column_widths& w, std::ostream& out) : out_(out) {
    stream_ = std::clamp<std::size_t>(w.persistence_id, 6, 40);
    type_ = std::clamp<std::size_t>(w.name, 4, 32);
    seq_ = std::max<std::size_t>(std::to_string(w.seq).size(), 3);
    offset_ = std::max<std::size_t>(std::to_string(w.offset).size() + 1, 6);
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

/// What `events` selects, for a journal read without SQL.
struct event_selection {
  std::optional<std::string> id;
  std::optional<std::string> aggregate_prefix; ///< `TYPE|`
  std::optional<std::string> name;
  std::optional<std::string> tag;
  std::optional<std::int64_t> since;

  bool id_matches(const event_record& rec) const {
    if (!id)
      return true;
    if (id->find(persistence_id::separator) != std::string::npos)
      return rec.persistence_id == *id;
    auto sep = rec.persistence_id.find(persistence_id::separator);
    return sep != std::string::npos && sep > 0
           && std::string_view{rec.persistence_id}.substr(sep + 1) == *id;
  }
  bool aggregate_matches(const event_record& rec) const {
    return !aggregate_prefix || rec.persistence_id.rfind(*aggregate_prefix, 0) == 0;
  }
  bool matches(const event_record& rec) const {
    return id_matches(rec) && aggregate_matches(rec) && (!name || rec.name == *name)
           && (!tag || std::find(rec.tags.begin(), rec.tags.end(), *tag) != rec.tags.end())
           && (!since || rec.timestamp_us >= *since);
  }
};

// A networked journal: `read_all` pages filtered here. An unknown --id or --aggregate is
// named after the pass (nothing matched, so nothing but a table's heading was printed).
int events_remote(const std::string& uri, const event_selection& sel,
                  std::optional<std::uint64_t> from, std::optional<std::uint64_t> limit,
                  bool follow, bool as_table, std::ostream& out) {
  auto remote = open_remote(uri, false);
  auto& j = remote->journal();
  auto head = remote_head(j);
  if (from && *from > head + 1)
    fail("offset " + std::to_string(*from) + " is beyond the head (" + std::to_string(head) + ")");
  std::optional<table_printer> table;
  if (as_table)
    table.emplace(column_widths{24, 20, 999'999, head}, out);
  std::optional<stop_signals> signals;
  if (follow)
    signals.emplace();
  bool id_seen = false;
  bool aggregate_seen = false;
  std::set<std::string> types;
  std::uint64_t next = from ? std::max<std::uint64_t>(*from, 1) : 1;
  std::uint64_t printed = 0;
  while (!limit || printed < *limit) {
    auto page = read_page(j, next, 1000);
    for (const auto& rec : page) {
      auto sep = rec.persistence_id.find(persistence_id::separator);
      if (sep != std::string::npos && sep > 0)
        types.insert(rec.persistence_id.substr(0, sep));
      id_seen = id_seen || sel.id_matches(rec);
      aggregate_seen = aggregate_seen || sel.aggregate_matches(rec);
      if (!sel.matches(rec) || (limit && printed >= *limit))
        continue;
      if (table)
        table->print(rec);
      else
        out << json::serialize(event_json(rec)) << '\n';
      ++printed;
    }
    if (!page.empty()) {
      next = page.back().offset + 1;
      continue;
    }
    if (!follow)
      break;
    out.flush();
    for (int i = 0; i < 10 && !stop_requested; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    if (stop_requested)
      break;
  }
  out.flush();
  if (!follow && sel.id && !id_seen)
    fail("unknown id '" + *sel.id + "': no persistence id "
         + (sel.id->find(persistence_id::separator) != std::string::npos
              ? "is '" + *sel.id + "'"
              : "ends in '" + std::string(1, persistence_id::separator) + *sel.id + "'"));
  if (!follow && sel.aggregate_prefix && !aggregate_seen)
    fail("unknown aggregate type '"
         + sel.aggregate_prefix->substr(0, sel.aggregate_prefix->size() - 1)
         + "' (the journal has: " + joined({types.begin(), types.end()}) + ")");
  return 0;
}

} // namespace

int events(const args_list& in, std::ostream& out) {
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

  if (is_journal_uri(path)) {
    event_selection sel{args.get("--id"), std::nullopt, args.get("--type"), args.get("--tag"),
                        since};
    if (auto type = args.get("--aggregate"))
      sel.aggregate_prefix = persistence_id::prefix_of(*type);
    return events_remote(path, sel, from, limit, follow, as_table, out);
  }
  auto journal = open_journal(path);
  auto db = journal.db();
  auto head = journal.head();
  event_filter_sql filter;
  if (auto id = args.get("--id")) {
    bool whole = id->find(persistence_id::separator) != std::string::npos;
    if (whole) {
      filter.add("persistence_id = ?");
    } else {
      filter.add(separator_position + " > 0 AND substr(persistence_id, " + separator_position
                 + " + 1) = ?");
    }
    filter.params.emplace_back(*id);
    if (!follow) {
      statement probe{db, "SELECT 1 FROM events" + filter.where + " LIMIT 1", path};
      filter.bind(probe);
      if (!probe.step())
        fail("unknown id '" + *id + "': no persistence id "
             + (whole ? "is '" + *id + "'"
                      : "ends in '" + std::string(1, persistence_id::separator) + *id + "'"));
    }
  }
  if (auto type = args.get("--aggregate")) {
    // The ids of a type are those from its prefix up to (excluding) the text that follows
    // every one of them: the prefix with its separator incremented.
    auto lower = persistence_id::prefix_of(*type);
    auto upper = lower;
    upper.back() = static_cast<char>(upper.back() + 1);
    filter.add("persistence_id >= ? AND persistence_id < ?");
    filter.params.emplace_back(lower);
    filter.params.emplace_back(upper);
    if (!follow) {
      statement probe{db,
                      "SELECT 1 FROM events WHERE persistence_id >= ?1 AND persistence_id < ?2 "
                      "LIMIT 1",
                      path};
      probe.bind(1, lower).bind(2, upper);
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
    table.emplace(widths_of(db, path), out);
  std::optional<stop_signals> signals;
  if (follow)
    signals.emplace();
  constexpr std::uint64_t page = 1000;
  std::uint64_t last = 0;
  std::uint64_t printed = 0;
  auto sql = std::string{"SELECT "} + persistence::sqlite_format::event_columns + " FROM events"
             + filter.where + (filter.where.empty() ? " WHERE " : " AND ")
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
      read_event(stmt, rec, path);
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

} // namespace annals::tools::detail

#include "commands.hpp"

#include <filesystem>
#include <functional>
#include <istream>
#include <limits>
#include <map>
#include <vector>

#include <boost/json.hpp>
#include <sqlite3.h>

#include "annals/error.hpp"
#include "annals/persistence/audit.hpp"
#include "annals/persistence/sqlite_format.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "journal_file.hpp"
#include "output.hpp"
#include "remote_journal.hpp"

namespace annals::tools::detail {

namespace json = boost::json;
namespace fs = std::filesystem;
using persistence::event_record;

namespace {

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
          || t.get_string().find(persistence::sqlite_format::tag_separator) != json::string::npos)
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

/// Reads the lines of `export` from `input`, checks each (offsets in order, seqs
/// consecutive per persistence id, the hash chain) and hands each event with the chain value
/// after it to `take`; returns the number of events. `consecutive`: offsets must run on
/// from 1 (a SQLite journal keeps them); otherwise they must only increase (a journal that
/// numbers its events itself). Throws `failure` naming the first broken line.
std::uint64_t
read_export(std::istream& input, bool consecutive,
            const std::function<void(const event_record&, const persistence::event_hash&)>& take) {
  std::uint64_t imported = 0;
  std::uint64_t last_offset = 0;
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
    auto where = "line " + std::to_string(number) + " (offset " + std::to_string(rec.offset) + ")";
    // `data` is derived from `payload`; an edit of one without the other is refused.
    if (auto data = line.find("data"); data && *data != payload_json(rec.payload))
      fail(where + ": data does not match payload (only payload is imported)");
    if (consecutive && rec.offset != imported + 1)
      fail(where + ": expected offset " + std::to_string(imported + 1)
           + " (the log has a gap or is out of order)");
    if (!consecutive && rec.offset <= last_offset)
      fail(where + ": offset " + std::to_string(rec.offset) + " does not follow offset "
           + std::to_string(last_offset) + " (the log is out of order)");
    last_offset = rec.offset;
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
    take(rec, chain);
    ++imported;
  }
  if (input.bad())
    fail("reading stdin failed");
  return imported;
}

// Into a networked journal: the whole input is read and checked first (nothing is written
// if a line is broken), then the events are appended in the export's order, one append at
// a time, so that the journal's order across ids is the export's (a journal with several
// appends in flight may store appends to different ids in another order). Consecutive
// events of one id with the same metadata go in one append. The journal numbers the events
// and stamps them with the time of the import.
int import_remote(const std::string& uri, std::istream& input, std::ostream& out) {
  std::vector<event_record> records;
  read_export(input, false, [&](const event_record& rec, const persistence::event_hash&) {
    records.push_back(rec);
  });
  auto remote = open_remote(uri, true);
  auto& j = remote->journal();
  if (auto head = remote_head(j); head > 0)
    fail(remote->describe() + " already holds events (head offset " + std::to_string(head)
         + "); import writes only into an empty journal");
  constexpr std::size_t max_events = 100;
  constexpr std::size_t max_bytes = 256 * 1024;
  std::uint64_t stored = 0;
  for (std::size_t i = 0; i < records.size();) {
    const auto& first = records[i];
    persistence::append_request req;
    req.persistence_id = first.persistence_id;
    req.expected_seq = first.seq - 1;
    req.metadata = first.metadata;
    std::size_t bytes = 0;
    auto k = i;
    for (; k < records.size() && k - i < max_events; ++k) {
      const auto& rec = records[k];
      if (rec.persistence_id != first.persistence_id
          || rec.metadata.command_id != first.metadata.command_id
          || rec.metadata.correlation_id != first.metadata.correlation_id
          || (k > i && bytes + rec.payload.size() > max_bytes))
        break;
      bytes += rec.payload.size();
      req.events.push_back(encoded_event{rec.name, rec.version, rec.payload, rec.tags});
    }
    auto n = req.events.size();
    auto res = persistence::wait_for<persistence::append_result>(
      [&](persistence::callback<persistence::append_result> done) {
        j.append(std::move(req), std::move(done));
      },
      remote_bound);
    if (!res)
      fail("appending the event at offset " + std::to_string(first.offset) + " ("
           + first.persistence_id + ", seq " + std::to_string(first.seq)
           + "): " + render(res.error()) + "; " + std::to_string(stored) + " of "
           + std::to_string(records.size()) + " events were stored");
    stored += n;
    i = k;
  }
  auto report = remote->verify();
  if (!report)
    fail("imported " + std::to_string(stored)
         + " events, then verify failed: " + render(report.error()));
  if (report->first_break)
    fail("imported " + std::to_string(stored) + " events, then verify found a break at offset "
         + std::to_string(report->first_break->offset) + ": " + report->first_break->reason);
  out << "imported " << stored << " events into " << remote->describe() << '\n';
  print_ok(out, *report);
  return 0;
}

} // namespace

int import_log(const args_list& in, std::istream& input, std::ostream& out) {
  auto args = parse_arguments(in, {});
  auto path = journal_path(args);
  if (is_journal_uri(path))
    return import_remote(path, input, out);
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
      if (active && !committed)
        remove_database_files(path);
    }
  } undo{create, path, committed};
  {
    auto journal = open_journal(path);
    if (journal.schema_version() != persistence::sqlite_journal::schema_version)
      fail(path + " has journal schema version " + std::to_string(journal.schema_version())
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
    statement insert{db, persistence::sqlite_format::insert_event_sql, path};
    statement insert_tag{db, persistence::sqlite_format::insert_tag_sql, path};
    imported =
      read_export(input, true, [&](const event_record& rec, const persistence::event_hash& chain) {
        auto tags = persistence::sqlite_format::join_tags(rec.tags);
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
      });
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

} // namespace annals::tools::detail

#pragma once

// Internal to the annals tool: how it prints events, JSON, tables, times and numbers.

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "annals/persistence/audit.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::tools::detail {

/// A stored payload as JSON, or as the stored text when it is not JSON.
boost::json::value payload_json(const std::string& payload);

/// An event as `events --json` prints it.
boost::json::object event_json(const persistence::event_record& rec);

/// `v` indented by two spaces per level.
void pretty(std::ostream& os, const boost::json::value& v, int indent);

/// Left- or right-aligned columns.
struct text_table {
  std::vector<std::string> header;
  std::vector<bool> right;
  std::vector<std::vector<std::string>> rows;

  void print(std::ostream& os) const;
};

/// `N bytes (+ M bytes WAL)`.
std::string file_size_text(const std::string& path);

/// `a, b, c`, or `none`.
std::string joined(const std::vector<std::string>& xs);

/// `ok: N events, head offset H, head hash X`.
void print_ok(std::ostream& out, const persistence::verify_report& r);

/// Parses ISO 8601 UTC (`2026-11-27T10:42:00Z`, optionally with a fraction of a second) or
/// Unix seconds (optionally with a fraction) into microseconds since the Unix epoch.
std::optional<std::int64_t> parse_time(std::string_view text);

/// `2026-11-27T10:42:00.123456Z`.
std::string iso_time(std::int64_t us);

/// `12,345`.
std::string grouped(std::uint64_t n);

/// Whether `os` is `std::cout` or `std::cerr` on a terminal.
bool is_terminal(const std::ostream& os);

} // namespace annals::tools::detail

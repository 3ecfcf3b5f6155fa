#include "output.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <boost/json.hpp>

namespace annals::tools::detail {

namespace json = boost::json;
namespace fs = std::filesystem;
using persistence::event_record;

namespace {

json::value optional_string(const std::string& s) {
  return s.empty() ? json::value(nullptr) : json::value(s);
}

} // namespace

json::value payload_json(const std::string& payload) {
  boost::system::error_code ec;
  auto v = json::parse(payload, ec);
  if (ec)
    return json::value(payload); // not JSON: shown as the stored text
  return v;
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

void text_table::print(std::ostream& os) const {
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

std::string file_size_text(const std::string& path) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  std::string out = grouped(ec ? 0 : size) + " bytes";
  auto wal = fs::file_size(path + "-wal", ec);
  if (!ec)
    out += " (+ " + grouped(wal) + " bytes WAL)";
  return out;
}

std::string joined(const std::vector<std::string>& xs) {
  std::string out;
  for (const auto& x : xs)
    out += (out.empty() ? "" : ", ") + x;
  return out.empty() ? "none" : out;
}

void print_ok(std::ostream& out, const persistence::verify_report& r) {
  out << "ok: " << r.events_checked << " events, head offset " << r.head_offset << ", head hash "
      << persistence::to_hex(r.head_hash) << '\n';
}

namespace {

bool digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

template <class T>
bool to_number(std::string_view s, T& out) {
  if (!digits(s))
    return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && ptr == s.data() + s.size();
}

// ".123" -> 123000 microseconds; more than six digits are truncated.
bool fraction_us(std::string_view s, std::int64_t& us) {
  if (!digits(s))
    return false;
  std::string six{s.substr(0, 6)};
  six.resize(6, '0');
  return to_number(six, us);
}

} // namespace

std::optional<std::int64_t> parse_time(std::string_view text) {
  using namespace std::chrono;
  constexpr std::int64_t max_seconds = 253'402'300'799; // 9999-12-31T23:59:59Z
  if (!text.empty() && text.find_first_not_of("0123456789.") == std::string_view::npos) {
    auto dot = text.find('.');
    std::int64_t secs = 0;
    std::int64_t frac = 0;
    if (!to_number(text.substr(0, dot), secs) || secs > max_seconds)
      return std::nullopt;
    if (dot != std::string_view::npos && !fraction_us(text.substr(dot + 1), frac))
      return std::nullopt;
    return secs * 1'000'000 + frac;
  }
  // YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)
  if (text.size() < 20 || text[4] != '-' || text[7] != '-' || (text[10] != 'T' && text[10] != ' ')
      || text[13] != ':' || text[16] != ':')
    return std::nullopt;
  int y = 0;
  unsigned mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (!to_number(text.substr(0, 4), y) || !to_number(text.substr(5, 2), mo)
      || !to_number(text.substr(8, 2), d) || !to_number(text.substr(11, 2), h)
      || !to_number(text.substr(14, 2), mi) || !to_number(text.substr(17, 2), s))
    return std::nullopt;
  auto rest = text.substr(19);
  std::int64_t frac = 0;
  if (!rest.empty() && (rest[0] == '.' || rest[0] == ',')) {
    auto end = rest.find_first_not_of("0123456789", 1);
    if (end == std::string_view::npos || !fraction_us(rest.substr(1, end - 1), frac))
      return std::nullopt;
    rest.remove_prefix(end);
  }
  if (rest != "Z" && rest != "+00:00" && rest != "+0000")
    return std::nullopt;
  year_month_day ymd{year{y}, month{mo}, day{d}};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 59)
    return std::nullopt;
  auto secs = sys_days{ymd}.time_since_epoch() + hours{h} + minutes{mi} + seconds{s};
  auto total = duration_cast<seconds>(secs).count();
  if (total < 0)
    return std::nullopt;
  return total * 1'000'000 + frac;
}

std::string iso_time(std::int64_t us) {
  using namespace std::chrono;
  sys_time<microseconds> tp{microseconds{us}};
  auto day_point = floor<days>(tp);
  year_month_day ymd{day_point};
  hh_mm_ss<microseconds> hms{tp - day_point};
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%04d-%02u-%02uT%02d:%02d:%02d.%06lldZ",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<int>(hms.hours().count()),
                static_cast<int>(hms.minutes().count()), static_cast<int>(hms.seconds().count()),
                static_cast<long long>(hms.subseconds().count()));
  return buf;
}

std::string grouped(std::uint64_t n) {
  auto digits_text = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits_text.size(); ++i) {
    if (i > 0 && (digits_text.size() - i) % 3 == 0)
      out += ',';
    out += digits_text[i];
  }
  return out;
}

bool is_terminal(const std::ostream& os) {
  if (&os == &std::cout)
    return ::isatty(STDOUT_FILENO) == 1;
  if (&os == &std::cerr)
    return ::isatty(STDERR_FILENO) == 1;
  return false;
}

} // namespace annals::tools::detail

#include "options.hpp"

#include <algorithm>
#include <charconv>
#include <limits>

#include "output.hpp"

namespace annals::tools::detail {

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

} // namespace annals::tools::detail

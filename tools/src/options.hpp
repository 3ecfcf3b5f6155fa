#pragma once

// Internal to the annals tool: how a subcommand ends with an error, and the parsing of its
// arguments.

#include <cstdint>
#include <exception>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace annals::tools::detail {

/// Exit codes.
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;

/// Ends a subcommand: `run` prints `message` as one line and returns `code`.
struct failure : std::exception {
  failure(int c, std::string m) : code(c), message(std::move(m)) {}
  const char* what() const noexcept override {
    return message.c_str();
  }
  int code;
  std::string message;
};

[[noreturn]] inline void fail(std::string message) {
  throw failure{exit_failure, std::move(message)};
}

[[noreturn]] inline void usage_error(std::string message) {
  throw failure{exit_usage, std::move(message)};
}

/// An option a subcommand accepts.
struct option_spec {
  std::string_view name;
  bool takes_value;
};

/// A parsed command line: positional arguments and option values (empty for flags).
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

/// Parses `in` (`--name value`, `--name=value`, flags); a usage error for an unknown
/// option, one given twice, a flag with a value or an option without one.
arguments parse_arguments(const std::vector<std::string>& in,
                          std::initializer_list<option_spec> spec);

/// The one positional argument: the journal file.
std::string journal_path(const arguments& args);

/// The value of `flag`, a whole number up to the largest signed 64-bit one.
std::uint64_t number(std::string_view flag, const std::string& text);

std::optional<std::uint64_t> optional_number(const arguments& args, std::string_view flag);

/// The value of `flag`, a time (see `parse_time`), in microseconds since the epoch.
std::int64_t time_value(std::string_view flag, const std::string& text);

} // namespace annals::tools::detail

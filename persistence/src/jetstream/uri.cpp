#include <charconv>
#include <string>
#include <string_view>

#include "annals/persistence/jetstream_journal.hpp"

namespace annals::persistence {

namespace {

caf::error bad_uri(std::string_view uri, const std::string& what) {
  return make_error(journal_errc::invalid_request,
                    "journal URI '" + std::string{uri} + "': " + what);
}

bool valid_stream_name(std::string_view name) {
  if (name.empty())
    return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
          || c == '_'))
      return false;
  return true;
}

} // namespace

caf::expected<jetstream_options> jetstream_options_from_uri(std::string_view uri) {
  constexpr std::string_view scheme = "nats://";
  if (!uri.starts_with(scheme))
    return bad_uri(uri, "expected nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N]");
  auto rest = uri.substr(scheme.size());
  auto query_at = rest.find('?');
  auto hosts = rest.substr(0, query_at);
  auto query = query_at == std::string_view::npos ? std::string_view{} : rest.substr(query_at + 1);
  jetstream_options opts;
  opts.servers.clear();
  while (!hosts.empty()) {
    auto comma = hosts.find(',');
    auto host = hosts.substr(0, comma);
    hosts = comma == std::string_view::npos ? std::string_view{} : hosts.substr(comma + 1);
    if (host.starts_with(scheme))
      host.remove_prefix(scheme.size());
    if (host.empty() || host.find_first_of("/ ") != std::string_view::npos)
      return bad_uri(uri, "'" + std::string{host} + "' is not a HOST:PORT server address");
    if (!opts.servers.empty())
      opts.servers += ',';
    opts.servers += std::string{scheme} + std::string{host};
  }
  if (opts.servers.empty())
    return bad_uri(uri, "names no server");
  while (!query.empty()) {
    auto amp = query.find('&');
    auto param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = param.find('=');
    auto key = param.substr(0, eq);
    auto value = eq == std::string_view::npos ? std::string_view{} : param.substr(eq + 1);
    if (key == "stream") {
      if (!valid_stream_name(value))
        return bad_uri(uri, "stream name '" + std::string{value}
                              + "' must be letters, digits, '-' and '_'");
      opts.stream = std::string{value};
    } else if (key == "replicas") {
      int n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc{} || end != value.data() + value.size() || n < 1 || n > 5)
        return bad_uri(uri, "replicas '" + std::string{value} + "' must be a number from 1 to 5");
      opts.replicas = n;
    } else {
      return bad_uri(uri, "unknown parameter '" + std::string{key} + "' (known: stream, replicas)");
    }
  }
  return opts;
}

} // namespace annals::persistence

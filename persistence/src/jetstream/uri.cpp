// Journal URIs: nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N].

#include <algorithm>
#include <charconv>

#include "annals/persistence/jetstream_journal.hpp"

namespace annals::persistence {

namespace {

caf::error bad_uri(std::string_view uri, const std::string& why) {
  return make_error(journal_errc::invalid_request,
                    "journal URI '" + std::string{uri} + "': " + why
                      + " (the form is nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N])");
}

bool valid_stream_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'
           || c == '_';
  });
}

} // namespace

caf::expected<jetstream_options> parse_jetstream_uri(std::string_view uri) {
  constexpr std::string_view scheme = "nats://";
  if (uri.substr(0, scheme.size()) != scheme)
    return bad_uri(uri, "it does not start with nats://");
  auto rest = uri.substr(scheme.size());
  auto q = rest.find('?');
  auto hosts = rest.substr(0, q);
  auto query = q == std::string_view::npos ? std::string_view{} : rest.substr(q + 1);
  jetstream_options opts;
  opts.servers.clear();
  while (true) {
    auto comma = hosts.find(',');
    auto host = hosts.substr(0, comma);
    if (host.substr(0, scheme.size()) == scheme)
      host.remove_prefix(scheme.size());
    if (host.empty() || host.find_first_of("/@ ") != std::string_view::npos)
      return bad_uri(uri, "server '" + std::string{host} + "' is not HOST:PORT");
    opts.servers += (opts.servers.empty() ? "" : ",") + std::string{scheme} + std::string{host};
    if (comma == std::string_view::npos)
      break;
    hosts.remove_prefix(comma + 1);
  }
  while (!query.empty()) {
    auto amp = query.find('&');
    auto param = query.substr(0, amp);
    auto eq = param.find('=');
    auto key = param.substr(0, eq);
    auto value = eq == std::string_view::npos ? std::string_view{} : param.substr(eq + 1);
    if (key == "stream") {
      if (!valid_stream_name(value))
        return bad_uri(uri, "stream '" + std::string{value}
                              + "' is not a stream name (letters, digits, - and _)");
      opts.stream = std::string{value};
    } else if (key == "replicas") {
      int n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc{} || end != value.data() + value.size() || n < 1 || n > 5)
        return bad_uri(uri, "replicas '" + std::string{value} + "' is not a number from 1 to 5");
      opts.replicas = n;
    } else if (!param.empty()) {
      return bad_uri(uri, "unknown parameter '" + std::string{key} + "'");
    }
    if (amp == std::string_view::npos)
      break;
    query.remove_prefix(amp + 1);
  }
  return opts;
}

} // namespace annals::persistence

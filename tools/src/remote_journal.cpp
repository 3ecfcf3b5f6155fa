// Journal URIs: which journal a URI names, and the reads every subcommand shares.

#include "remote_journal.hpp"

namespace annals::tools::detail {

bool is_postgres_uri(std::string_view arg) {
  return arg.starts_with("postgresql://") || arg.starts_with("postgres://");
}

bool is_journal_uri(std::string_view arg) {
  return arg.starts_with("nats://") || is_postgres_uri(arg);
}

std::unique_ptr<remote_journal> open_remote(const std::string& uri, bool create) {
  if (is_postgres_uri(uri)) {
#ifdef ANNALS_TOOLS_WITH_POSTGRES
    return open_postgres(uri, create);
#else
    fail(uri.substr(0, uri.find(':'))
         + "://...: this build of the tool has no PostgreSQL journal (build annals with "
           "libpq-dev installed)");
#endif
  }
#ifdef ANNALS_TOOLS_WITH_JETSTREAM
  return open_jetstream(uri, create);
#else
  (void)create;
  fail(uri
       + ": this build of the tool has no JetStream journal (build annals with "
         "libnats-dev installed)");
#endif
}

std::vector<persistence::event_record> read_page(persistence::journal& j, std::uint64_t from_offset,
                                                 std::size_t max) {
  return remote_call<std::vector<persistence::event_record>>(
    [&](persistence::callback<std::vector<persistence::event_record>> done) {
      j.read_all(from_offset, max, std::move(done));
    },
    "reading events from offset " + std::to_string(from_offset));
}

std::uint64_t remote_head(persistence::journal& j) {
  return remote_call<std::uint64_t>(
    [&](persistence::callback<std::uint64_t> done) { j.head_offset(std::move(done)); },
    "reading the head offset");
}

} // namespace annals::tools::detail

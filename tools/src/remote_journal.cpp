#include "remote_journal.hpp"

namespace annals::tools::detail {

bool is_journal_uri(std::string_view arg) {
  return arg.substr(0, 7) == "nats://";
}

std::unique_ptr<remote_journal> open_remote(const std::string& uri, bool create) {
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

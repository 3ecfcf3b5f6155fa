#include "commands.hpp"

#include "annals/error.hpp"
#include "annals/persistence/redact.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "journal_file.hpp"
#include "output.hpp"
#include "remote_journal.hpp"

namespace annals::tools::detail {

int verify(const args_list& in, std::ostream& out) {
  auto args = parse_arguments(in, {});
  auto path = journal_path(args);
  caf::expected<persistence::verify_report> report{persistence::verify_report{}};
  if (is_journal_uri(path)) {
    // JetStream keeps one chain per persistence id, PostgreSQL one over the whole log: a
    // break names the first event that does not match.
    report = open_remote(path, false)->verify();
  } else {
    open_journal(path); // the tool's own checks: missing, not a journal, locked
    report = persistence::sqlite_journal::verify(path);
  }
  if (!report)
    fail(render(report.error()));
  if (const auto& b = report->first_break) {
    out << "broken: offset " << b->offset << ", persistence id " << b->persistence_id << ", seq "
        << b->seq << ": " << b->reason << '\n';
    out.flush();
    fail(persistence::redact_secrets(path) + ": the hash chain breaks at offset "
         + std::to_string(b->offset) + " (" + b->persistence_id + ", seq " + std::to_string(b->seq)
         + "); head offset " + std::to_string(report->head_offset));
  }
  print_ok(out, *report);
  return 0;
}

} // namespace annals::tools::detail

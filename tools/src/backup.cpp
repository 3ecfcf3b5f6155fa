#include "commands.hpp"

#include <filesystem>

#include <sqlite3.h>

#include "annals/error.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "journal_file.hpp"
#include "output.hpp"

namespace annals::tools::detail {

namespace fs = std::filesystem;

namespace {

// Copies every page of `src` into `dest` with SQLite's online backup. One step copies the
// whole file under one read transaction: a consistent snapshot that a writer in WAL mode
// never waits for, and that later commits cannot invalidate halfway.
void copy_pages(const std::string& src, const std::string& dest) {
  auto from = open_connection(src, SQLITE_OPEN_READONLY, 10'000);
  auto to = open_connection(dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, 10'000);
  auto* b = sqlite3_backup_init(to.get(), "main", from.get(), "main");
  if (!b)
    fail(sqlite_message(to.get(), sqlite3_errcode(to.get()), "starting the backup", dest));
  // The source connection's busy timeout bounds the wait for another connection's lock.
  auto rc = sqlite3_backup_step(b, -1);
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE)
    fail(sqlite_message(to.get(), rc, "copying " + src, dest));
}

} // namespace

int backup(const args_list& in, std::ostream& out) {
  auto args = parse_arguments(in, {});
  if (args.positional.size() < 2)
    usage_error("needs the journal file (DB) and the file to create (DEST)");
  if (args.positional.size() > 2)
    usage_error("unexpected argument " + args.positional[2]);
  const auto& src = args.positional[0];
  const auto& dest = args.positional[1];
  std::error_code ec;
  if (fs::exists(dest, ec) || fs::exists(dest + "-wal", ec))
    fail(dest + " already exists; backup never overwrites a file");
  {
    auto journal = open_journal(src); // missing, not a journal, newer schema, locked
  }
  try {
    copy_pages(src, dest);
  } catch (...) {
    remove_database_files(dest);
    throw;
  }
  auto report = persistence::sqlite_journal::verify(dest);
  if (!report)
    fail("copied " + src + " to " + dest + ", then verify failed: " + render(report.error()));
  if (report->first_break)
    fail("copied " + src + " to " + dest + ", then verify found a break at offset "
         + std::to_string(report->first_break->offset) + ": " + report->first_break->reason);
  out << "backed up " << src << " to " << dest << '\n';
  print_ok(out, *report);
  return 0;
}

} // namespace annals::tools::detail

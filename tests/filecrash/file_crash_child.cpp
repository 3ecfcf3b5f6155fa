// The process the files crash test kills: projects the bank statements of a journal into
// files until it reaches the journal's head, then exits 0. Built with the files sink's
// failpoints (ANNALS_FILE_SINK_FAILPOINT, see file_sink.cpp).
//
// Usage: annals_file_crash_child <journal.db> <directory> <page size>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "account/statement_files.hpp"
#include "annals/actors/file_projection.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/sqlite_journal.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <journal.db> <directory> <page size>\n", argv[0]);
    return 2;
  }
  auto j = annals::persistence::sqlite_journal::open(
    {.path = argv[1], .must_exist = true, .read_only = true});
  if (!j) {
    std::fprintf(stderr, "cannot open %s: %s\n", argv[1], annals::render(j.error()).c_str());
    return 2;
  }
  auto head = annals::persistence::wait_for<std::uint64_t>(
    [&](annals::persistence::callback<std::uint64_t> done) { (*j)->head_offset(std::move(done)); },
    std::chrono::seconds{30});
  if (!head) {
    std::fprintf(stderr, "no head: %s\n", annals::render(head.error()).c_str());
    return 2;
  }
  annals::actors::actor_system sys;
  auto p = annals::actors::spawn_projection(
    sys, *j, std::make_shared<bank::statement_files>(),
    annals::actors::file_projection_options{
      .name = "statement-files",
      .directory = argv[2],
      .page_size = static_cast<std::size_t>(std::strtoul(argv[3], nullptr, 10)),
      .fsync = false,
    });
  auto st = p.await_offset(*head, std::chrono::seconds{60});
  if (!st) {
    std::fprintf(stderr, "projection failed: %s\n", annals::render(st.error()).c_str());
    return 1;
  }
  return 0;
}

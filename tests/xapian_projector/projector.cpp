// annals_xapian_projector: the child process of the Xapian kill -9 test
// (tests/xapian/crash_test.cpp). It projects the account events of a SQLite journal
// (opened read-only) into a Xapian index with the test model (xapian/account_docs.hpp),
// prints "started" once the projection runs, and then either waits to be killed or, with
// an offset, exits 0 once the projection has reached it.
//
// usage: annals_xapian_projector <journal file> <index dir> <page size> [<offset>]
//
// Exit codes: 0 the offset was reached, 1 the projection failed or did not reach it within
// 60 s (the error on standard error), 2 bad usage or a journal that does not open.

#include <unistd.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/system.hpp"
#include "annals/actors/xapian_projection.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "xapian/account_docs.hpp"

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: annals_xapian_projector <journal file> <index dir> <page size> "
                 "[<offset>]\n";
    return 2;
  }
  auto journal = annals::persistence::sqlite_journal::open_read_only(argv[1]);
  if (!journal) {
    std::cerr << annals::render(journal.error()) << '\n';
    return 2;
  }
  caf::actor_system_config cfg;
  annals::actors::configure(cfg);
  caf::actor_system sys{cfg};
  auto proj = annals::actors::spawn_projection(
    sys, *journal, std::make_shared<xapian_test::account_docs>(),
    annals::actors::xapian_projection_options{
      .name = "docs", .path = argv[2], .page_size = std::stoul(argv[3])});
  auto st = proj.status();
  if (!st || st->state == annals::actors::projection_state::failed) {
    std::cerr << (st ? st->error : annals::render(st.error())) << '\n';
    return 1;
  }
  std::cout << "started" << std::endl;
  if (argc == 4)
    for (;;)
      ::pause();
  auto reached = proj.await_offset(std::stoull(argv[4]), std::chrono::seconds{60});
  if (!reached) {
    std::cerr << annals::render(reached.error()) << '\n';
    return 1;
  }
  return 0;
}

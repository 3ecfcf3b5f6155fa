#pragma once

// The PostgreSQL journal's test fixtures: a journal opened on a fresh database of the
// shared test server (pg_server.hpp), and the contract suite's backends.

#include <memory>
#include <string>

#include "annals/persistence/postgres_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "postgres/pg_server.hpp"

namespace annals::persistence::test {

/// Opens a journal on `conninfo`, failing the test with the error if that fails.
inline std::shared_ptr<postgres_journal> open_pg(const std::string& conninfo,
                                                 std::size_t keep_snapshots = 2) {
  auto res = postgres_journal::open({.conninfo = conninfo, .keep_snapshots = keep_snapshots});
  if (!res)
    FAIL(render(res.error()));
  return *res;
}

/// Contract-suite fixture for `postgres_journal` on a fresh database of the shared server.
struct postgres_backend {
  static constexpr bool persistent = true;
  /// Offsets are assigned under the writers' advisory lock: 1, 2, 3, ... without holes.
  static constexpr bool gapless = true;
  static std::uint64_t at(std::uint64_t event_no, std::uint64_t, std::uint64_t) {
    return event_no;
  }
  std::string conninfo = shared_server().create_database();

  journal_ptr open(std::size_t keep_snapshots = 2) {
    return open_pg(conninfo, keep_snapshots);
  }
  journal_ptr reader(journal_ptr& j) {
    return j;
  }
  journal_ptr reopen(journal_ptr& j) {
    std::static_pointer_cast<postgres_journal>(j)->close();
    j.reset();
    return open();
  }
  snapshot_store_ptr snapshots(journal_ptr& j, std::size_t keep) {
    std::static_pointer_cast<postgres_journal>(j)->close();
    j = open(keep);
    return std::static_pointer_cast<postgres_journal>(j)->snapshots();
  }
};

/// Read-case fixture: the cases write through one journal and read through a second
/// journal on the same database (another writer's view of the log).
struct postgres_second_journal_backend : postgres_backend {
  journal_ptr reader(journal_ptr&) {
    return open();
  }
};

} // namespace annals::persistence::test

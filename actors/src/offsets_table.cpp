#include <chrono>
#include <string>
#include <thread>

#include <sqlite3.h>

#include "annals/actors/offset_store.hpp"
#include "annals/actors/projection.hpp"
#include "annals/actors/projection_sink.hpp"
#include "internal/offsets_table.hpp"

namespace annals::actors {

bool create_offsets_table(sqlite3* db, bool fsync, std::chrono::milliseconds busy_timeout) {
  auto setup = std::string{"PRAGMA journal_mode=WAL; PRAGMA synchronous="}
               + (fsync ? "FULL" : "NORMAL") + "; "
               + persistence::sqlite_format::projection_offsets_ddl;
  // Switching a new file to WAL needs an exclusive lock, and SQLite reports BUSY for it
  // without calling the busy handler: two connections opening one new file at once meet
  // here, so this retries until the busy timeout has passed.
  auto deadline = std::chrono::steady_clock::now() + busy_timeout;
  while (sqlite3_exec(db, setup.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    auto rc = sqlite3_errcode(db) & 0xff;
    if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  return true;
}

caf::error offset_moved_error(const std::string& name, const std::string& where,
                              std::uint64_t expected, std::optional<std::uint64_t> stored) {
  return make_error(projection_errc::offset_moved,
                    "projection '" + name + "': its stored offset in '" + where + "' is "
                      + (stored ? std::to_string(*stored) : std::string{"gone"}) + ", not "
                      + std::to_string(expected)
                      + " as this instance left it: another instance of the projection "
                        "writes the same model (another process on the same file?); this "
                        "one stops at offset "
                      + std::to_string(expected));
}

} // namespace annals::actors

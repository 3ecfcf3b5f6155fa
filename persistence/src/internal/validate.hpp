#pragma once

// Request checks shared by every journal, so that all backends reject the same inputs
// with the same words.

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/error.hpp>

#include "annals/persistence/journal.hpp"
#include "annals/persistence/sqlite_format.hpp"

namespace annals::persistence::internal {

/// Tags may not contain the separator of the SQLite journal's `tags` column, whichever
/// journal stores them, so that a log moves between journals unchanged.
using sqlite_format::tag_separator;

/// An empty error if `req` is well-formed, otherwise `journal_errc::invalid_request`, or
/// `journal_errc::too_large` when its `encoded_size` exceeds `max_bytes` (0: no bound).
inline caf::error validate(const append_request& req, std::size_t max_bytes) {
  if (req.persistence_id.empty())
    return make_error(journal_errc::invalid_request, "append with an empty persistence id");
  if (req.events.empty())
    return make_error(journal_errc::invalid_request,
                      "append without events for persistence id " + req.persistence_id);
  for (const auto& ev : req.events) {
    if (ev.name.empty())
      return make_error(journal_errc::invalid_request,
                        "event without a name for persistence id " + req.persistence_id);
    if (ev.version == 0)
      return make_error(journal_errc::invalid_request, "event " + ev.name
                                                         + " with version 0 for persistence id "
                                                         + req.persistence_id);
    for (const auto& tag : ev.tags)
      if (tag.empty() || tag.find(tag_separator) != std::string::npos)
        return make_error(journal_errc::invalid_request,
                          "event " + ev.name + " for persistence id " + req.persistence_id
                            + " has an empty tag or one containing \\x1f");
  }
  if (auto size = encoded_size(req); max_bytes != 0 && size > max_bytes)
    return make_error(journal_errc::too_large,
                      "append of " + std::to_string(req.events.size())
                        + " event(s) to persistence id " + req.persistence_id + " is "
                        + std::to_string(size) + " bytes, over the journal's limit of "
                        + std::to_string(max_bytes) + " (max_append_bytes); nothing was written");
  return {};
}

/// An empty error if `snap` is well-formed, otherwise `journal_errc::invalid_request`.
inline caf::error validate(const snapshot_record& snap) {
  if (snap.persistence_id.empty())
    return make_error(journal_errc::invalid_request, "snapshot with an empty persistence id");
  if (snap.name.empty())
    return make_error(journal_errc::invalid_request,
                      "snapshot without a name for persistence id " + snap.persistence_id);
  return {};
}

/// The conflict error both journals report.
inline caf::error conflict_error(const std::string& persistence_id, std::uint64_t expected,
                                 std::uint64_t found) {
  return make_error(journal_errc::conflict, "persistence id " + persistence_id + " expected seq "
                                              + std::to_string(expected) + ", found "
                                              + std::to_string(found));
}

/// Microseconds since the Unix epoch.
inline std::int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

} // namespace annals::persistence::internal

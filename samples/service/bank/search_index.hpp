#pragma once

// The bank's search index: one Xapian index (a directory) that the exactly-once projection
// "search" keeps, with one document per account (its owner's name, open or closed) and one
// per football match (its teams and every player named in its events), and the queries
// of GET /search on it.
//
// Words are folded (case, Latin accents: annals::actors::search_fold) on both sides; every
// word of a query must match a word of the document, exactly or as its beginning ("ali"
// finds "Alice"); hits are ranked by BM25 (an exact word weighs more than a word it begins),
// ties in id order. Each answer reads one commit of the index, and its `offset` is the
// journal offset that commit holds.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <boost/json/object.hpp>
#include <caf/actor_system.hpp>
#include <caf/error.hpp>

#include "annals/actors/projection.hpp"
#include "annals/actors/projection_sink.hpp"
#include "annals/persistence/journal.hpp"

namespace service {

/// The projection's name (its offset's key in the index, its row in /health).
inline constexpr std::string_view search_projection_name = "search";

/// Creates the index in directory `dir` if missing and checks that no other writer holds
/// it; releases it again. Fails with `annals.unavailable` naming the directory.
caf::error create_search_index(const std::string& dir);

/// Starts the projection "search" of `journal` into the index `dir`.
annals::actors::projection spawn_search_projection(caf::actor_system& sys,
                                                   annals::persistence::journal_ptr journal,
                                                   const std::string& dir);

/// The sink of the projection "search" into the index `dir`, for `annals-bank admin rebuild
/// --projection search` (rebuilt in place: reset, then the whole journal).
std::shared_ptr<annals::actors::projection_sink> make_search_sink(const std::string& dir);

/// {"offset", "hits": [{"id", "owner", "closed", "score"}]}: the accounts whose owner
/// matches `text`, best first, at most `limit`. 400 "invalid_query" for a text without
/// words; 503 "read_model_unavailable" when the index cannot be read.
boost::json::object search_accounts(const std::string& dir, std::string_view text,
                                    std::uint64_t limit);

/// {"offset", "hits": [{"id", "home", "away", "players", "score"}]}: the matches whose
/// team or player names match `text`, as `search_accounts`.
boost::json::object search_matches(const std::string& dir, std::string_view text,
                                   std::uint64_t limit);

} // namespace service

#pragma once

// Inline projections: read models the writer keeps in the journal file, inside its own
// append transactions (sqlite_options::inline_projections).

#include <cstdint>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/persistence/sqlite_read_model.hpp"
#include "sqlite/state.hpp"

namespace annals::persistence::sqlite {

/// Takes the writer's inline projections: checks them (a model each, distinct non-empty
/// names), creates `projection_offsets` and their schemas, and brings each model up to the
/// head, each in a transaction of its own. Fails with `journal_errc::invalid_request` for a
/// bad list and `journal_errc::projection_failed` for a model that throws.
caf::error open_inline_projections(writer_state& w, std::vector<sqlite_inline_projection> list);

/// Applies the records of one append to every inline projection, inside the append's
/// savepoint; `journal_errc::projection_failed` naming the model and the event if one
/// throws (the caller rolls the savepoint back).
caf::error apply_inline(writer_state& w, const std::vector<event_record>& recs);

/// Moves every inline projection's stored offset to `head`, inside the batch's transaction.
caf::error advance_inline(writer_state& w, std::uint64_t head);

/// Resets inline projection `name` and applies the whole journal to it again, in one
/// transaction; returns the offset reached.
caf::expected<std::uint64_t> rebuild_inline_projection(writer_state& w, const std::string& name);

} // namespace annals::persistence::sqlite

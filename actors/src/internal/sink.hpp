#pragma once

// The read-model side of a projection: where its batches go.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/actors/projection.hpp"
#include "annals/actors/projection_sink.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::actors::internal {

/// The sink interface is public (annals/actors/projection_sink.hpp); the runtime's own
/// sinks implement it like any other.
using sink = projection_sink;

/// At least once: hands each event that `filter` matches to `handler`, then advances the
/// stored offset to the batch's last one in `offsets` by compare-and-set (a crash in between
/// makes the batch arrive again). A stored offset other than the one it left fails the batch
/// with `offset_moved`, checked before the handler sees it and again when advancing.
std::shared_ptr<sink> make_handler_sink(std::string name, event_filter filter,
                                        std::shared_ptr<projection_handler> handler,
                                        offset_store_ptr offsets);

/// Exactly once: applies each batch and stores its last offset in one transaction of the
/// read model's own SQLite file. The transaction first checks that the stored offset is the
/// one this sink left (else `offset_moved`, with nothing applied) and advances it by
/// compare-and-set.
std::shared_ptr<sink> make_sqlite_sink(sqlite_projection_options opts,
                                       std::shared_ptr<sqlite_projection_handler> handler);

} // namespace annals::actors::internal

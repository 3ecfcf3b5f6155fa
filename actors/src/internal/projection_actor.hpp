#pragma once

// The projection actor: reads the journal from its sink's offset, then follows live
// commits, and hands every batch to the sink.

#include <cstddef>
#include <memory>
#include <string>

#include <caf/fwd.hpp>

#include "annals/persistence/journal.hpp"
#include "internal/sink.hpp"

namespace annals::actors::internal {

/// What a projection actor starts from.
struct projection_setup {
  std::string name;
  persistence::journal_ptr journal;
  std::shared_ptr<sink> out;
  std::size_t page_size = 512;
  std::size_t max_queued_batches = 1024;
};

/// Spawns the actor on a thread of its own (handlers, offset stores and read-model
/// transactions may block on I/O without stalling the scheduler's threads).
caf::actor spawn_projection_actor(caf::actor_system& sys, projection_setup setup);

} // namespace annals::actors::internal

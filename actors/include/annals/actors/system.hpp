#pragma once

/// @file
/// Settings every actor system that hosts annals aggregates should start with.

#include <caf/actor_system_config.hpp>

namespace annals::actors {

/// Prepares `cfg` for annals: the scheduler gets one thread per core (CAF's default of 4
/// threads only adds contention on small machines), and every error category that
/// annals knows renders through `annals::render` in CAF's own messages.
///
/// ```cpp
/// caf::actor_system_config cfg;
/// annals::actors::configure(cfg);
/// caf::actor_system sys{cfg};
/// ```
void configure(caf::actor_system_config& cfg);

} // namespace annals::actors

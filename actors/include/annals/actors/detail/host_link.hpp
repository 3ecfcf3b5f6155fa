#pragma once

// What a host and the `annals::actors::actor_system` it runs on share, so that either may
// be destroyed first (see actor_system's comment).

#include <atomic>

#include <caf/actor.hpp>

namespace annals::actors::detail {

struct host_link {
  /// The host's registry actor; reset by the system when it stops the host's actors.
  caf::actor registry;
  /// Set once the system has stopped the host's actors (it is being destroyed): the host
  /// must no longer touch the system.
  std::atomic<bool> system_gone{false};
};

} // namespace annals::actors::detail

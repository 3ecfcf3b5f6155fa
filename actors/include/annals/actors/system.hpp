#pragma once

/// @file
/// The actor system annals runs on: `annals::actors::actor_system`, or a plain
/// `caf::actor_system` whose config went through `configure`.

#include <memory>
#include <mutex>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

namespace annals::actors {

namespace detail {
struct host_link;
} // namespace detail

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

namespace detail {
/// Holds the config of a default-constructed `actor_system`: a base class, so that it is
/// built before the system that refers to it and destroyed after.
struct own_config {
  caf::actor_system_config own_cfg;
};
} // namespace detail

/// A `caf::actor_system` for annals: it applies `configure` to `cfg`, and it makes the
/// order in which hosts and the system end irrelevant. Destroying the system while a
/// `host` on it still lives first stops that host's actors (the commands they are
/// handling finish, as when the host ends); the host then refuses every command with
/// `annals.unavailable` and may be destroyed later without touching the system.
///
/// ```cpp
/// annals::actors::actor_system sys;  // or sys{cfg}, with a config of your own
/// auto bank = std::make_unique<annals::actors::host>(sys, journal);
/// ```
///
/// On a plain `caf::actor_system` a host must be destroyed before the system: the
/// system's destructor waits for the host's actors, which only the host's destructor
/// stops.
class actor_system : private detail::own_config, public caf::actor_system {
public:
  /// Starts a system with CAF's defaults, after `configure`.
  actor_system();

  /// Applies `configure(cfg)`, then starts the system. `cfg` must outlive the system.
  explicit actor_system(caf::actor_system_config& cfg);

  /// Stops the actors of every host still alive on this system, then ends the system.
  ~actor_system() override;

  actor_system(const actor_system&) = delete;
  actor_system& operator=(const actor_system&) = delete;

  /// Called by a host built on this system; see the class comment.
  void attach(std::shared_ptr<detail::host_link> link);

private:
  std::mutex mtx_;
  std::vector<std::weak_ptr<detail::host_link>> hosts_;
};

} // namespace annals::actors

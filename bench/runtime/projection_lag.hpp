#pragma once

// The projection whose lag the runtime's run measures when asked (projection_lag.cpp).

#include <cstdint>
#include <memory>

#include <caf/actor_system.hpp>

#include "annals/actors/projection.hpp"
#include "annals/persistence/sqlite_journal.hpp"

#include "runtime.hpp"

namespace annals::bench::runtime {

struct commit_clock;
class lag_probe;

/// An at-least-once projection with an in-memory handler attached to a journal that
/// already holds the `opened` event of each of `ids` accounts, and the commit listener,
/// subscribed before it, that the lag is measured from.
class lag_watch {
public:
  /// Subscribes the listener, spawns the projection and waits until it has caught up with
  /// the `opened` events; `commands`: how many deposits follow.
  lag_watch(caf::actor_system& sys, std::shared_ptr<sqlite_journal> journal, std::size_t ids,
            std::size_t commands);

  /// Waits until the projection has handled offset `head`, stops it and the listener, and
  /// returns the lag of the deposits.
  lag_figures finish(std::uint64_t head, double commands_per_s);

private:
  std::shared_ptr<sqlite_journal> journal_;
  std::size_t ids_;
  std::shared_ptr<commit_clock> clock_;
  std::shared_ptr<lag_probe> probe_;
  annals::actors::projection proj_;
  std::uint64_t listener_ = 0;
};

} // namespace annals::bench::runtime

#pragma once

// Messages between clients, the registry and aggregate actors. They never leave the
// process (CAF_ALLOW_UNSAFE_MESSAGE_TYPE); a remote placement would send the command as
// JSON instead.

#include <any>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/expected.hpp>

#include "annals/event.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::actors::detail {

/// A command in progress, with its reply type erased.
class run_base {
public:
  virtual ~run_base() = default;
  virtual bool done() const noexcept = 0;
  virtual caf::expected<std::any> take() = 0;
  virtual void abandon() noexcept = 0;
};

/// A typed command, erased: `start` runs it on the aggregate behind `agg` (an `A*`).
class command_base {
public:
  virtual ~command_base() = default;
  /// Starts the command; called once (it moves the command into the handler).
  virtual std::unique_ptr<run_base> start(void* agg) = 0;
};

/// A command on its way to an aggregate, with its type erased.
struct envelope {
  std::string type_name;   ///< the aggregate type, e.g. `account`
  std::string id;          ///< the aggregate id, e.g. `acc-42`
  event_metadata metadata; ///< command id (idempotency key) and correlation id
  /// The command itself (shared: CAF messages are copyable).
  std::shared_ptr<command_base> command;
  /// Set by the host's client path when it counted this envelope on its way through the
  /// registry (see `host.cpp`, `route::via_registry`); the registry uncounts it.
  bool counted = false;
};

/// The value of a successful reply; errors travel as `caf::error`.
struct reply_msg {
  std::any value;
  /// The aggregate's version (sequence number of its last event) after the command; for a
  /// de-duplicated retry, the version right after the first attempt's events.
  std::uint64_t version = 0;
  /// The global offset of the last event the command persisted, or 0 if it persisted
  /// none. A de-duplicated retry carries the offset of the first attempt's last event.
  std::uint64_t offset = 0;
};

struct append_done {
  std::uint64_t token;
  caf::expected<persistence::append_result> result;
};

struct events_read {
  std::uint64_t token;
  caf::expected<std::vector<persistence::event_record>> result;
};

struct snapshots_read {
  std::uint64_t token;
  caf::expected<std::vector<persistence::snapshot_record>> result;
};

/// The aggregate's single journal timer fired (see `aggregate_core::expect_reply`).
struct io_timeout {};

/// An idle aggregate asks the registry to retire it; `route` is the token the registry
/// gave it at spawn (its entry's key), which stays valid while the actor lives.
struct passivate_msg {
  const void* route;
};

using passivate_atom = caf::atom_constant<caf::atom("passivate")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using deadline_atom = caf::atom_constant<caf::atom("deadline")>;

} // namespace annals::actors::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::detail::envelope)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::detail::reply_msg)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::detail::append_done)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::detail::events_read)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::detail::snapshots_read)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::detail::io_timeout)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::detail::passivate_msg)

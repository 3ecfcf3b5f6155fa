#pragma once

/// @file
/// Settings of the aggregate runtime, per aggregate type and per host.

#include <chrono>
#include <cstddef>
#include <functional>
#include <string_view>

namespace annals::actors {

/// How the runtime treats the aggregates of one type.
///
/// ```cpp
/// auto err = host.register_aggregate<bank::account>({.snapshot_every = 100,
///                                                    .idle_timeout = std::chrono::minutes{5}});
/// ```
struct aggregate_options {
  /// Write a snapshot after this many events (0: never). Snapshots are written after the
  /// reply, without holding commands back; recovery loads the newest one plus the tail.
  std::size_t snapshot_every = 0;

  /// Bound on every journal and snapshot-store operation. A persist that is not
  /// acknowledged in time fails the command with `annals.timeout`.
  std::chrono::milliseconds journal_timeout{5000};

  /// Passivate an aggregate after this long without messages (0: never).
  std::chrono::milliseconds idle_timeout{0};

  /// How many recent command ids each aggregate remembers for de-duplication.
  std::size_t dedupe_window = 1000;

  /// Events per journal read during recovery.
  std::size_t replay_page = 1000;

  /// How many commands one aggregate may have decided but not yet answered (pipelining).
  /// While an append is in flight, the aggregate goes on deciding the commands queued
  /// behind it against its state including the events not yet committed, and sends their
  /// events as the next append (consecutive commands with the same metadata share one).
  /// What a caller sees does not change: a reply goes out only after its command's events
  /// (and every earlier command's) are committed, replies keep command order, and each
  /// reflects the state right after its own events. A failed or conflicting append fails
  /// every command whose events were in it or were decided on top of it; the aggregate then
  /// recovers its committed state from the journal. A handler that asks another aggregate
  /// sends the ask only once everything decided before it is committed, and holds the
  /// queue until it finishes. 1: each command waits for the commit of the one before.
  std::size_t pipeline_depth = 1000;
};

/// Settings of a host (all aggregate types together).
struct host_options {
  /// Passivate the least recently used aggregate when more than this many are live
  /// (0: no limit).
  std::size_t max_live = 0;

  /// Receives warnings that do not fail a command (e.g. a snapshot that did not decode and
  /// was skipped). Default: standard error.
  std::function<void(std::string_view)> warn;
};

} // namespace annals::actors

#pragma once

// The read-model side of a projection: where its batches go.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/actors/projection.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::actors::internal {

/// What applying one batch achieved.
struct batch_outcome {
  std::uint64_t last_good = 0; ///< offset to continue after (stored, unless `err` says not)
  std::size_t applied = 0;     ///< records handed to the handler without throwing
  caf::error err;
};

/// Loads and stores a projection's offset and applies its batches. Every call runs on the
/// projection's own thread.
class sink {
public:
  virtual ~sink() = default;
  /// Prepares the model and returns the stored offset.
  virtual caf::expected<std::uint64_t> open() = 0;
  /// Applies `batch` (contiguous offsets, the first one right after `prev`).
  virtual batch_outcome apply(std::span<const persistence::event_record> batch,
                              std::uint64_t prev) = 0;
  /// Clears the model and stores offset 0.
  virtual caf::error reset() = 0;
};

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

/// The message of the exception in flight; call only inside a `catch` block.
std::string current_exception_text();

/// `projection_errc::handler_failed`, naming the projection, the event and `what`.
caf::error handler_error(const std::string& name, const persistence::event_record& rec,
                         const std::string& what);

} // namespace annals::actors::internal

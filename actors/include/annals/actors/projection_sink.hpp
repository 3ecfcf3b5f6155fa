#pragma once

/// @file
/// The one interface every home of a read model implements: memory or anything else behind
/// a `projection_handler`, SQLite, PostgreSQL, and the sinks of their own libraries (a
/// search index, files, a key-value store). A projection's actor reads the journal in
/// offset order and hands each batch to its sink; the sink applies it to the model and
/// stores the offset, and says in `guarantee()` how the two relate after a crash.
///
/// A sink of one's own:
///
/// ```cpp
/// class counter_file : public annals::actors::projection_sink {
/// public:
///   caf::expected<std::uint64_t> open() override { return read_offset_from_file(); }
///   annals::actors::batch_outcome apply(std::span<const annals::persistence::event_record> batch,
///                                       std::uint64_t prev) override {
///     annals::actors::batch_outcome out{prev, 0, {}};
///     ... fold the batch, write model and batch.back().offset in one atomic step ...
///     out.last_good = batch.back().offset;
///     out.applied = batch.size();
///     return out;
///   }
///   caf::error reset() override { return write_empty_model_at_offset_0(); }
///   annals::actors::delivery guarantee() const noexcept override {
///     return annals::actors::delivery::exactly_once;
///   }
/// };
///
/// auto proj = annals::actors::spawn_projection(sys, journal, std::make_shared<counter_file>(),
///                                              annals::actors::sink_options{.name = "counts"});
/// ```
///
/// Every call runs on the projection's own thread, one at a time.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <boost/describe/enum.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/actors/projection.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::actors {

/// What a sink promises about its model after a crash at any moment.
enum class delivery : std::uint8_t {
  /// The model and the offset are written in one atomic step (one transaction, one commit,
  /// one rename): after a crash they agree, and each event is applied exactly once.
  exactly_once,
  /// The model is written before the offset: after a crash the events since the stored
  /// offset are applied again, so the model's writes must be idempotent (or skip offsets
  /// they have seen).
  at_least_once,
};
BOOST_DESCRIBE_ENUM(delivery, exactly_once, at_least_once)

/// Renders a guarantee as its name, e.g. `exactly_once`.
std::string to_string(delivery d);

/// What applying one batch achieved.
struct batch_outcome {
  std::uint64_t last_good = 0; ///< offset to continue after (stored, unless `err` says not)
  std::size_t applied = 0;     ///< records handed to the model without failing
  caf::error err;              ///< why the projection stops, if it does
};

/// Loads and stores a projection's offset and applies its batches to a read model.
class projection_sink {
public:
  virtual ~projection_sink();

  /// Prepares the model (schema, connection, files) and returns the stored offset: the
  /// last event the model holds, 0 for none.
  virtual caf::expected<std::uint64_t> open() = 0;

  /// Applies `batch` (contiguous offsets, the first one right after `prev`, every record of
  /// the journal: filter inside the sink) and stores its last good offset. A stored offset
  /// other than `prev` means another instance writes the same model: return
  /// `projection_errc::offset_moved` (see `offset_moved_error`) and apply nothing.
  virtual batch_outcome apply(std::span<const persistence::event_record> batch,
                              std::uint64_t prev) = 0;

  /// Clears the model and stores offset 0 (a rebuild replays the journal after it).
  virtual caf::error reset() = 0;

  /// How the model and the offset relate after a crash.
  virtual delivery guarantee() const noexcept = 0;
};

/// Options of `spawn_projection` for a sink.
struct sink_options {
  /// Names the projection in status replies and errors (and, by convention, the sink's
  /// stored offset).
  std::string name;
  /// Most events read from the journal per catch-up page (one `apply` each).
  std::size_t page_size = 512;
  /// Most live commits waiting in the projection's mailbox; see `projection_options`.
  std::size_t max_queued_batches = 1024;
};

/// Starts a projection of `journal` into `sink`. Start-up errors (an unreadable offset)
/// show up as state `failed` in the status, never as an exception.
projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<projection_sink> sink, sink_options opts);

/// For sink implementations: `projection_errc::handler_failed`, naming the projection, the
/// event and `what`.
caf::error handler_error(const std::string& name, const persistence::event_record& rec,
                         const std::string& what);

/// For sink implementations: `projection_errc::offset_moved`. Projection `name` found its
/// stored offset in `where` at `stored` (none: no offset stored) while it had processed up
/// to `expected`, so another instance writes the same model, and this one stops.
caf::error offset_moved_error(const std::string& name, const std::string& where,
                              std::uint64_t expected, std::optional<std::uint64_t> stored);

/// For sink implementations: the message of the exception in flight; call only inside a
/// `catch` block.
std::string current_exception_text();

} // namespace annals::actors

#pragma once

/// @file
/// Exactly-once projections into a Xapian search index (library `annals::actors_xapian`,
/// built when libxapian is found; links libxapian).
///
/// The index is a directory that one `Xapian::WritableDatabase` owns. Each batch of events
/// runs in one Xapian transaction that also sets the projection's offset as the index's
/// metadata (key `annals.offset.<name>`); Xapian commits a transaction atomically, so after
/// a crash at any moment the documents and the offset agree and each event is applied
/// exactly once.
///
/// ```cpp
/// class owners
///   : public annals::actors::typed_xapian_projection<owners, bank::account> {
/// public:
///   void on(const bank::opened& e, const annals::actors::envelope& env,
///           Xapian::WritableDatabase& db) {
///     Xapian::Document doc;
///     doc.set_data(e.owner);
///     auto id = "Q" + std::string{env.entity_id()};
///     doc.add_boolean_term(id);
///     for (const auto& w : annals::actors::search_words(e.owner))
///       doc.add_term(w);
///     db.replace_document(id, doc);
///   }
/// };
///
/// auto proj = annals::actors::spawn_projection(
///   sys, journal, std::make_shared<owners>(),
///   annals::actors::xapian_projection_options{.name = "owners", .path = "bank.search"});
/// ```
///
/// How a batch runs: a check that the stored offset is the one this instance left (another
/// one stops it with `projection_errc::offset_moved`, nothing applied), `begin_transaction`,
/// the handler's calls, the offset, `commit_transaction` (flushed: a durable commit). Inside
/// the transaction Xapian never commits on its own (its flush threshold applies to writes
/// outside transactions only), so nothing of a batch is visible before its offset is.
///
/// A throwing handler: the transaction is cancelled, and the events before the one that
/// threw are applied again in a new transaction that commits with the offset of the last
/// of them (the good prefix). So the projection stops at the event before, with that event
/// committed and nothing after it; the handler must therefore give the same result when it
/// is called again for the same events on the same index (a deterministic fold does).
///
/// One writer per index: the sink holds Xapian's write lock on the directory for its
/// lifetime. A second projection (in this process or another) on the same directory fails
/// at start with `projection_errc::read_model_failed` naming the directory; the lock goes
/// with the process that held it, also when it is killed.
///
/// Readers open a `Xapian::Database` on the directory; what they see is one commit, and
/// `xapian_stored_offset` on that same `Database` object says which offset it holds.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "annals/actors/projection.hpp"
#include "annals/actors/projection_sink.hpp"
#include "annals/actors/typed_projection.hpp"

namespace Xapian {
class Database;
class WritableDatabase;
} // namespace Xapian

namespace annals::actors {

/// The read model of an exactly-once projection into a Xapian index; subclass it. Each call
/// runs inside the batch's Xapian transaction, on the projection's own thread. Report
/// failures by throwing: the projection stops at the event before (see the file comment).
class xapian_projection_handler {
public:
  virtual ~xapian_projection_handler();

  /// Folds one event (one that passed the filter) into the index.
  virtual void apply(Xapian::WritableDatabase& db, const persistence::event_record& rec) = 0;

  /// Called before a rebuild, inside the transaction that then deletes every document and
  /// stores offset 0; for metadata of the handler's own. The default does nothing.
  virtual void reset(Xapian::WritableDatabase& db);
};

/// The base of a typed exactly-once handler into Xapian: as `typed_sqlite_projection`, with
/// `void on(const E&, const envelope&, Xapian::WritableDatabase&)` members, for the event
/// types of one or more aggregates (`typed_xapian_projection<index, bank::account,
/// match::football_match>`): each record goes to the aggregate its persistence id names.
template <class Derived, named_aggregate A, named_aggregate... More>
class typed_xapian_projection : public xapian_projection_handler {
public:
  /// Decodes and dispatches one record to `Derived::on` (typed_projection.hpp says how).
  void apply(Xapian::WritableDatabase& db, const persistence::event_record& rec) final {
    detail::connection_on_caller<Derived, Xapian::WritableDatabase&> call{
      static_cast<Derived&>(*this), db};
    static_assert(
      detail::accepts_any<decltype(call)>(static_cast<typename A::event_type*>(nullptr))
        && (detail::accepts_any<decltype(call)>(static_cast<typename More::event_type*>(nullptr))
            && ...),
      "a typed_xapian_projection needs, for each of its aggregates, at least one public `void "
      "on(const E&, const annals::actors::envelope&, Xapian::WritableDatabase&)` for an event "
      "type E of that aggregate");
    detail::dispatch_typed<A>(rec, call);
    (detail::dispatch_typed<More>(rec, call), ...);
  }
};

/// Options of `spawn_projection` for an exactly-once projection into a Xapian index.
struct xapian_projection_options {
  /// Names the projection in the index's metadata (`annals.offset.<name>`), in status
  /// replies and errors.
  std::string name;
  /// The index directory; created (with its parents) if missing.
  std::string path;
  /// Which events reach the handler.
  event_filter filter = event_filter::all();
  /// Most events read from the journal per catch-up page (one Xapian commit each).
  std::size_t page_size = 512;
  /// Most live commits waiting in the projection's mailbox; see `projection_options`.
  std::size_t max_queued_batches = 1024;
};

/// The sink itself, for callers that drive it without an actor (tools, tests): `open`
/// takes the index's write lock, which the sink keeps until it is destroyed.
std::shared_ptr<projection_sink>
make_xapian_sink(std::shared_ptr<xapian_projection_handler> handler,
                 xapian_projection_options opts);

/// Starts an exactly-once projection of `journal` into the Xapian index `opts.path`.
/// Start-up errors (a locked or unreadable index) show up as state `failed` in the status,
/// never as an exception.
projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<xapian_projection_handler> handler,
                            xapian_projection_options opts);

/// The metadata key under which projection `name` stores its offset.
std::string xapian_offset_key(std::string_view name);

/// The offset projection `name` stored in `db` (0 if none), as of the revision `db` reads.
/// Throws `Xapian::Error` as `db` does.
std::uint64_t xapian_stored_offset(const Xapian::Database& db, std::string_view name);

/// `text` folded for search: ASCII letters in lower case, Latin letters with accents
/// (Latin-1 Supplement, Latin Extended-A) as their base letters in lower case (`José` ->
/// `jose`, `Straße` -> `strasse`, `Łódź` -> `lodz`); other characters as they are. Invalid
/// UTF-8 bytes are dropped.
std::string search_fold(std::string_view text);

/// The words of `text` after `search_fold`: runs of ASCII letters and digits and of
/// non-ASCII characters, at most 64 bytes each (longer ones are cut at a character
/// boundary). Index them as terms, and query with the same function.
std::vector<std::string> search_words(std::string_view text);

} // namespace annals::actors

#pragma once

/// @file
/// The operator tool `annals`: inspects, searches, verifies, exports, imports and repairs
/// an annals journal file without the service that writes it, as a library entry point
/// that any service binary can expose as a subcommand.
///
/// ```cpp
/// int main(int argc, char** argv) {
///   if (argc > 1 && std::string_view{argv[1]} == "admin") {
///     annals::tools::cli tool{"annals-bank admin"};
///     tool.register_aggregate<bank::account>();            // enables `state`
///     tool.register_projection(                             // enables `rebuild`
///       "balances", [] { return std::make_shared<bank::balances_projection>(); },
///       annals::actors::event_filter::aggregate_type<bank::account>());
///     return tool.run(argc - 1, argv + 1, std::cout, std::cerr);
///   }
///   ...
/// }
/// ```
///
/// Subcommands (`<program> <subcommand> --help` describes each): `inspect`, `events`,
/// `state`, `verify`, `rebuild`, `export`, `import`. Every subcommand except `rebuild` and
/// `import` reads the file through read-only SQLite connections only, so it is safe while
/// a service appends to the same file (WAL readers never block the writer). `rebuild` reads
/// the journal the same way and writes only the projection's own tables, in one
/// transaction; `import` writes only into an empty journal.
///
/// The tool opens the journal in the SQLite journal's read-only mode
/// (`sqlite_journal::open_read_only`): no writer, no schema change, the same identity
/// checks; that journal is the `persistence::journal` that `state` replays from and that
/// `rebuild`'s projection reads. Its own queries (`inspect`, `events` filters, `export`) run
/// on a read-only connection and take the file format from `sqlite_format.hpp`.
/// `rebuild` is meant for a stopped service, or for a projection the running service does
/// not run: a live projection would keep writing the same tables.
///
/// Errors are one line on the error stream, `<program>: <subcommand>: <what>`, with exit
/// code 2 for usage errors and 1 for everything else.

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <caf/expected.hpp>

#include "annals/actors/projection.hpp"
#include "annals/actors/projection_sink.hpp"
#include "annals/aggregate.hpp"
#include "annals/named_aggregate.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/persistence/replay.hpp"

namespace annals::tools {

/// An aggregate's state rebuilt by replay, as JSON.
struct replayed_json {
  boost::json::value state;
  std::uint64_t version = 0;     ///< sequence number of the last event folded in
  std::int64_t timestamp_us = 0; ///< commit time of that event
};

/// The command-line tool; see the file comment.
class cli {
public:
  /// Folds events 1..`up_to_seq` of one stream (all of them for the largest value).
  using replay_function = std::function<caf::expected<replayed_json>(
    persistence::journal& journal, const std::string& persistence_id, std::uint64_t up_to_seq)>;

  /// Makes a fresh handler of a SQL projection.
  using projection_factory = std::function<std::shared_ptr<actors::sqlite_projection_handler>()>;

  /// Makes the sink of a projection whose model lives elsewhere (a search index, files, a
  /// key-value store), for the journal at `journal` (the DB argument, e.g. to find an
  /// index directory beside it).
  using sink_factory = std::function<caf::expected<std::shared_ptr<actors::projection_sink>>(
    const std::string& journal)>;

  /// `program_name` starts every usage text and error line, e.g. `annals` or
  /// `annals-bank admin`.
  explicit cli(std::string program_name);

  /// Enables `state` for the streams `A::name|<id>`: replays them with `A::codec_type`
  /// into `A::state_type` and prints the state through `boost::json::value_from` (which
  /// works for a state declared with `BOOST_DESCRIBE_STRUCT`).
  template <named_aggregate A>
  void register_aggregate() {
    register_replay(
      std::string{aggregate_name<A>()},
      [](persistence::journal& journal, const std::string& persistence_id,
         std::uint64_t up_to_seq) -> caf::expected<replayed_json> {
        auto r = persistence::replay_state<A>(journal, persistence_id, up_to_seq);
        if (!r)
          return std::move(r.error());
        return replayed_json{boost::json::value_from(r->state), r->version, r->timestamp_us};
      });
  }

  /// The type-erased form of `register_aggregate`.
  void register_replay(std::string type_name, replay_function replay);

  /// Enables `rebuild --projection name` for an exactly-once SQL projection whose read
  /// model lives in the journal's own file; `make` returns a fresh handler and `filter`
  /// must be the filter the service runs it with.
  void register_projection(std::string name, projection_factory make, actors::event_filter filter);

  /// Enables `rebuild --projection name` for a projection into any sink
  /// (projection_sink.hpp): the tool resets the sink's model (offset 0) and replays the
  /// whole journal into it in place, with progress. Unlike the SQL projections' shadow and
  /// swap, readers of the model see it fill up again, so run it with the service stopped.
  void register_sink(std::string name, sink_factory make);

  /// Runs the command line `argv[1..argc)` (`argv[0]` is skipped: the program or the word
  /// that selected the tool) and returns the exit code: 0 on success, 1 on a failure, 2 on
  /// a usage error. Normal output goes to `out`, progress and errors to `err`; a stream
  /// that is `std::cout` or `std::cerr` counts as a terminal if its file descriptor is one.
  int run(int argc, char** argv, std::ostream& out, std::ostream& err) const;

  /// What the tool knows about; used by the subcommands.
  struct aggregate_entry {
    std::string type_name;
    replay_function replay;
  };
  /// A rebuildable projection: SQL (`make`, rebuilt in a shadow file and swapped in) or
  /// any sink (`make_sink`, rebuilt in place).
  struct projection_entry {
    std::string name;
    projection_factory make;
    actors::event_filter filter;
    sink_factory make_sink;
  };

private:
  std::string program_;
  std::vector<aggregate_entry> aggregates_;
  std::vector<projection_entry> projections_;
};

} // namespace annals::tools

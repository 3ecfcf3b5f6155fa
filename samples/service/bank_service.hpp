#pragma once

// The annals-bank service: accounts, transfers and football matches over HTTP/1.1 + JSON,
// on one SQLite file that holds the journal, the snapshots and the SQL read models (and a
// Xapian search index in a directory beside it, `bank_options::search_dir`), or with
// the journal and the snapshots on NATS JetStream and the read models in the node's own
// SQLite file, fed from the replicated log.
//
// Commands (POST) go to aggregates through `host::ask_async` and never block an I/O
// thread; queries that read the journal or a read model run on a small worker pool. The
// routes and their errors are listed in README.md ("The service").

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "service/http.hpp"

namespace service {

struct bank_options {
  /// The SQLite file of the read models (created if missing); also the journal's, unless
  /// `journal` names another place.
  std::string db_path = "annals.db";
  /// Where the journal lives: empty (the file `db_path`), `sqlite:PATH` (the file PATH,
  /// which then holds the read models too), or
  /// `nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N]` (NATS JetStream), or
  /// `postgresql://USER@HOST:PORT/DB` (a libpq URI); with either the read models stay in
  /// `db_path`. Each needs annals built with that journal.
  std::string journal;
  /// Where the scoreboard and top-scorer read models live: empty (in memory, rebuilt from
  /// the journal at every start), or `redis://HOST:PORT[/DB]` (exactly-once projections
  /// into Redis; needs annals built with hiredis).
  std::string redis;
  /// The search index's directory (GET /search; the Xapian projection "search"): empty for
  /// `db_path` + ".search", next to the read models' file, whichever the journal.
  std::string search_dir;
  /// If not empty: also keep each account's statement as a JSON-lines file
  /// `<account id>.jsonl` in this directory (created if missing), through a files
  /// projection named `statement-files` (samples/account/statement_files.hpp).
  std::string statements_dir;
  /// If not empty: publish the bank's public events (samples/account/public_contract.hpp)
  /// to NATS, `nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N&mode=core]`, through
  /// a projection named `publisher` whose offset is kept in `db_path`. Needs annals built
  /// with the JetStream journal.
  std::string publish;
  /// How long a command may take before the client gets 504 `timeout`.
  std::chrono::milliseconds command_timeout{10'000};
  /// Threads that answer queries (journal reads, read models, metrics).
  std::size_t query_threads = 2;
  /// How long `?fresh=1` waits for a read model to reach the journal's head.
  std::chrono::milliseconds fresh_timeout{5'000};
};

/// The application behind the HTTP server; see the file comment.
class bank_service {
public:
  /// Opens the journal at `opts.db_path`, registers the aggregates and starts the
  /// projections. Fails with the journal's error (e.g. `journal.not_a_journal`).
  static caf::expected<std::unique_ptr<bank_service>> open(caf::actor_system& sys,
                                                           bank_options opts);

  /// Stops the workers and the projections; call `drain` first for a graceful stop.
  ~bank_service();

  bank_service(const bank_service&) = delete;
  bank_service& operator=(const bank_service&) = delete;

  /// The HTTP handler: routes `req` and answers through `respond` (possibly later, from
  /// another thread).
  void handle(http::request req, http::responder respond);

  /// Runs the remaining steps of the transfers that a stop interrupted; returns how many
  /// were pending. Blocks; call it from a thread of its own.
  caf::expected<std::size_t> resume_transfers();

  /// Refuses new commands, finishes the ones in flight and stops every aggregate.
  caf::error drain(std::chrono::milliseconds bound);

private:
  struct impl;
  explicit bank_service(std::unique_ptr<impl> ptr);
  std::unique_ptr<impl> impl_;
};

} // namespace service

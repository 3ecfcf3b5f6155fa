#pragma once

// What the bank service's routes share: the journal, the host, the projections, the read
// models, the query workers, and the helpers that send a command or run a query for a
// request.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/actor_system.hpp>

#include "annals/actors/host.hpp"
#include "annals/actors/projection.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "match/projections.hpp"
#include "service/bank/errors.hpp"
#include "service/bank/json_views.hpp"
#include "service/bank/read_models.hpp"
#include "service/bank/router.hpp"
#include "service/bank/worker_pool.hpp"
#include "service/bank_service.hpp"
#include "service/http.hpp"

namespace service {

/// The running service's parts. `bank_service` builds it, fills `routes` and tears it down.
struct bank_context {
  bank_context(caf::actor_system& s, bank_options o) : sys(s), opts(std::move(o)) {}

  caf::actor_system& sys;
  bank_options opts;
  /// The log, wherever it lives (`bank_options::journal`).
  annals::persistence::journal_ptr journal;
  annals::persistence::snapshot_store_ptr snapshots;
  /// The same journal when it is the SQLite file (its statistics feed /metrics); else null.
  std::shared_ptr<annals::persistence::sqlite_journal> sqlite;
  /// Closes the journal (every backend has a `close`, none in the `journal` interface).
  std::function<void()> close_journal;
  std::unique_ptr<annals::actors::host> host;
  /// The search index's directory (`bank_options::search_dir` or its default); empty when
  /// annals-bank is built without Xapian (GET /search then answers 501).
  std::string search_dir;
  std::shared_ptr<match::scoreboard_projection> board =
    std::make_shared<match::scoreboard_projection>();
  std::shared_ptr<match::top_scorers_projection> scorers =
    std::make_shared<match::top_scorers_projection>();
  /// The scoreboard by match id and the top `n` scorers, each with the offset it reflects,
  /// as the routes read them: from `board` and `scorers`, or from Redis with
  /// `bank_options::redis`. Throw `api_error` (503 "read_model_unavailable") when the
  /// model cannot be read.
  std::function<match::scoreboard_projection::board_t()> read_board;
  std::function<match::top_scorers_projection::top_t(std::size_t n)> read_scorers;
  /// balances, statement, search, scoreboard, scorers
  std::vector<annals::actors::projection> projections;
  std::unique_ptr<read_models> models;
  std::unique_ptr<worker_pool> workers;
  router routes;
  /// Run by `bank_service::drain` and at teardown, before anything else stops: answer what
  /// waits for the journal (the feed's long polls).
  std::vector<std::function<void()>> stop_hooks;

  /// The projection called `name`; it must exist.
  annals::actors::projection& projection_named(std::string_view name);

  /// Counts a response by status, for the metrics.
  void count(unsigned status);

  /// The responses counted so far, by status.
  std::map<unsigned, std::uint64_t> responses_by_status() const;

  /// The Idempotency-Key header of `req` (empty without one); 400
  /// "invalid_idempotency_key" for a key the host refuses.
  std::string idempotency_key(const http::request& req) const;

  /// Sends `cmd` to aggregate `id` of type `A` and answers with `status` and
  /// `to_json(reply)`, or the error reply's JSON error.
  template <class A, class C, class F>
  void command(const http::request& req, const std::string& id, C cmd, unsigned status, F to_json,
               http::responder& respond) {
    using R = annals::reply_t<A, C>;
    auto key = idempotency_key(req);
    host->ask_async<A>(id, std::move(cmd),
                       [respond, status, to_json](caf::expected<R> r) mutable {
                         if (r)
                           respond(json_response(status, to_json(*r)));
                         else
                           respond(error_response(r.error()));
                       },
                       {.timeout = opts.command_timeout, .idempotency_key = key});
  }

  /// Runs `job` on a query worker and answers with what it returns; an `api_error` it throws
  /// becomes the response, any other exception a 500 "internal_error".
  void on_worker(http::responder& respond, std::function<http::response()> job);

  /// The journal's head offset; 503 "journal_unavailable" when the journal does not answer.
  std::uint64_t head_offset();

  /// With `?fresh=1`: waits until projection `name` has caught up with the journal's head
  /// as it was when the request arrived (read your own writes); 503 "read_model_behind"
  /// when it does not within `opts.fresh_timeout`.
  void maybe_fresh(const http::request& req, std::string_view name);

private:
  mutable std::mutex status_mtx_;
  std::map<unsigned, std::uint64_t> responses_by_status_;
};

} // namespace service

#include "service/bank_service.hpp"

#include <utility>

#ifdef ANNALS_BANK_WITH_JETSTREAM
#include "annals/persistence/jetstream_journal.hpp"
#endif
#ifdef ANNALS_BANK_WITH_POSTGRES
#include "annals/persistence/postgres_journal.hpp"
#include "service/bank/postgres_read_models.hpp"
#endif
#ifdef ANNALS_BANK_WITH_REDIS
#include "service/bank/redis_read_models.hpp"
#endif
#ifdef ANNALS_BANK_WITH_NATS_PUBLISHER
#include "account/public_contract.hpp"
#include "annals/actors/nats_publisher.hpp"
#endif
#include "account/account.hpp"
#include "account/balances.hpp"
#include "account/statement.hpp"
#include "account/statement_files.hpp"
#include "account/transfer.hpp"
#include "annals/persistence/redact.hpp"
#include "match/match.hpp"
#include "service/bank/context.hpp"
#include "service/bank/routes.hpp"
#ifdef ANNALS_BANK_WITH_XAPIAN
#include "service/bank/search_index.hpp"
#endif

namespace service {

namespace ap = annals::persistence;
namespace aa = annals::actors;

struct bank_service::impl {
  bank_context ctx;

  impl(caf::actor_system& s, bank_options o) : ctx(s, std::move(o)) {}

  // Every connection to the database file closes here. The last connection to close merges
  // the WAL into the file, which a read-only connection cannot do: the queries' connection
  // closes first and the journal's writer last, so that the file alone holds the journal.
  ~impl() {
    stop_waiting();
    ctx.workers.reset(); // no query runs against what follows
    if (ctx.models)
      ctx.models->close();
    for (auto& p : ctx.projections)
      p.stop();
    ctx.host.reset();
    if (ctx.close_journal)
      ctx.close_journal();
  }

  // Answers what waits on the journal (the feed's long polls) so that nothing holds a stop up.
  void stop_waiting() {
    for (auto& hook : ctx.stop_hooks)
      hook();
  }

  /// Opens the journal `opts.journal` names (see bank_options::journal).
  caf::error open_journal() {
    auto& uri = ctx.opts.journal;
    if (uri.starts_with("sqlite:"))
      ctx.opts.db_path = uri.substr(std::string_view{"sqlite:"}.size());
    if (uri.empty() || uri.starts_with("sqlite:")) {
      auto j = ap::sqlite_journal::open({.path = ctx.opts.db_path});
      if (!j)
        return std::move(j.error());
      ctx.sqlite = *j;
      ctx.journal = *j;
      ctx.snapshots = (*j)->snapshots();
      ctx.close_journal = [j = *j] { j->close(); };
      return {};
    }
    if (uri.starts_with("nats://")) {
#ifdef ANNALS_BANK_WITH_JETSTREAM
      auto opts = ap::parse_jetstream_uri(uri);
      if (!opts)
        return std::move(opts.error());
      auto j = ap::jetstream_journal::open(std::move(*opts));
      if (!j)
        return std::move(j.error());
      ctx.journal = *j;
      ctx.snapshots = (*j)->snapshots();
      ctx.close_journal = [j = *j] { j->close(); };
      return {};
#else
      return annals::make_error(ap::journal_errc::invalid_request,
                                "journal URI '" + uri
                                  + "': this annals-bank was built without JetStream "
                                    "(libnats-dev missing at configure time)");
#endif
    }
    if (uri.starts_with("postgresql://") || uri.starts_with("postgres://")) {
#ifdef ANNALS_BANK_WITH_POSTGRES
      auto j = ap::postgres_journal::open({.conninfo = uri});
      if (!j)
        return std::move(j.error());
      ctx.journal = *j;
      ctx.snapshots = (*j)->snapshots();
      ctx.close_journal = [j = *j] { j->close(); };
      return {};
#else
      return annals::make_error(ap::journal_errc::invalid_request,
                                "journal URI '" + uri
                                  + "': this annals-bank was built without PostgreSQL "
                                    "(libpq-dev missing at configure time)");
#endif
    }
    return annals::make_error(ap::journal_errc::invalid_request,
                              "journal URI '" + uri
                                + "': expected sqlite:PATH, nats://HOST:PORT[,HOST:PORT...]"
                                  "[?stream=NAME&replicas=N] or postgresql://USER@HOST:PORT/DB");
  }

  caf::error start() {
    if (auto err = open_journal())
      return err;
    ctx.host = std::make_unique<aa::host>(ctx.sys, ctx.journal, ctx.snapshots);
    auto* h = ctx.host.get();
    if (auto err = h->register_aggregate<bank::account>({.snapshot_every = 200}))
      return err;
    if (auto err = h->register_aggregate<bank::transfer>({}, [h] { return bank::transfer{h}; }))
      return err;
    if (auto err = h->register_aggregate<match::football_match>({.snapshot_every = 200}))
      return err;
    if (auto err = open_read_models())
      return err;
    if (auto err = open_search_index())
      return err;
    if (auto err = start_projections())
      return err;
    ctx.workers = std::make_unique<worker_pool>(ctx.opts.query_threads);
    add_account_routes(ctx);
    add_transfer_routes(ctx);
    add_match_routes(ctx);
    add_feed_routes(ctx);
    add_operation_routes(ctx);
    return {};
  }

  /// Whether the journal, and with it the SQL read models, is on PostgreSQL.
  bool on_postgres() const {
    const auto& uri = ctx.opts.journal;
    return uri.starts_with("postgresql://") || uri.starts_with("postgres://");
  }

  /// The SQL read models: in the journal's PostgreSQL database, else in the --db file.
  caf::error open_read_models() {
    if (on_postgres()) {
#ifdef ANNALS_BANK_WITH_POSTGRES
      auto models = open_postgres_read_models(ctx.opts.journal);
      if (!models)
        return std::move(models.error());
      ctx.models = std::move(*models);
      return {};
#endif
    }
    if (auto err = create_read_model_tables(ctx.opts.db_path))
      return err;
    auto models = open_sqlite_read_models(ctx.opts.db_path);
    if (!models)
      return std::move(models.error());
    ctx.models = std::move(*models);
    return {};
  }

  /// The search index: `--search-dir`, else next to the read models' file.
  caf::error open_search_index() {
#ifdef ANNALS_BANK_WITH_XAPIAN
    ctx.search_dir =
      ctx.opts.search_dir.empty() ? ctx.opts.db_path + ".search" : ctx.opts.search_dir;
    return create_search_index(ctx.search_dir);
#else
    return {};
#endif
  }

  /// The projections; the football ones into Redis with --redis, else in memory.
  caf::error start_projections() {
    const auto& path = ctx.opts.db_path;
    auto& sys = ctx.sys;
    auto& projections = ctx.projections;
    auto accounts = aa::event_filter::aggregate_type<bank::account>();
    auto matches = aa::event_filter::aggregate_type<match::football_match>();
#ifdef ANNALS_BANK_WITH_POSTGRES
    if (on_postgres())
      projections = spawn_postgres_projections(sys, ctx.journal, ctx.opts.journal);
#endif
    if (projections.empty()) {
      projections.push_back(
        aa::spawn_projection(sys, ctx.journal, std::make_shared<bank::balances_projection>(),
                             {.name = "balances", .path = path, .filter = accounts}));
      projections.push_back(
        aa::spawn_projection(sys, ctx.journal, std::make_shared<bank::statement_projection>(),
                             {.name = "statement", .path = path, .filter = accounts}));
    }
    if (!ctx.opts.statements_dir.empty())
      projections.push_back(aa::spawn_projection(
        sys, ctx.journal, std::make_shared<bank::statement_files>(),
        aa::file_projection_options{
          .name = "statement-files", .directory = ctx.opts.statements_dir, .filter = accounts}));
#ifdef ANNALS_BANK_WITH_XAPIAN
    projections.push_back(spawn_search_projection(sys, ctx.journal, ctx.search_dir));
#endif
    if (auto err = start_publisher())
      return err;
    if (!ctx.opts.redis.empty()) {
#ifdef ANNALS_BANK_WITH_REDIS
      return start_redis_match_models(ctx);
#else
      return annals::make_error(aa::projection_errc::read_model_failed,
                                "--redis " + ap::redact_secrets(ctx.opts.redis)
                                  + ": this annals-bank was built without Redis (libhiredis-dev "
                                    "missing at configure time)");
#endif
    }
    projections.push_back(
      aa::spawn_projection(sys, ctx.journal, ctx.board,
                           aa::projection_options{.name = "scoreboard", .filter = matches}));
    projections.push_back(aa::spawn_projection(
      sys, ctx.journal, ctx.scorers, aa::projection_options{.name = "scorers", .filter = matches}));
    ctx.read_board = [board = ctx.board] { return board->board(); };
    ctx.read_scorers = [scorers = ctx.scorers](std::size_t n) { return scorers->top(n); };
    return {};
  }

  /// With --publish: the bank's public events to NATS, the offset in the --db file.
  caf::error start_publisher() {
    if (ctx.opts.publish.empty())
      return {};
#ifdef ANNALS_BANK_WITH_NATS_PUBLISHER
    auto opts = aa::parse_nats_publish_url(ctx.opts.publish,
                                           {.name = "publisher", .offsets_path = ctx.opts.db_path});
    if (!opts)
      return std::move(opts.error());
    auto sink = aa::make_nats_publisher(bank::public_contract(), std::move(*opts));
    if (!sink)
      return std::move(sink.error());
    ctx.projections.push_back(aa::spawn_projection(ctx.sys, ctx.journal, std::move(*sink),
                                                   aa::sink_options{.name = "publisher"}));
    return {};
#else
    return annals::make_error(aa::projection_errc::read_model_failed,
                              "--publish " + ctx.opts.publish
                                + ": this annals-bank was built without NATS (libnats-dev "
                                  "missing at configure time)");
#endif
  }

  void dispatch(http::request req, http::responder respond) {
    respond = [this, respond = std::move(respond)](http::response r) {
      ctx.count(r.status);
      respond(std::move(r));
    };
    ctx.routes.dispatch(req, respond);
  }
};

bank_service::bank_service(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {}

bank_service::~bank_service() = default;

caf::expected<std::unique_ptr<bank_service>> bank_service::open(caf::actor_system& sys,
                                                                bank_options opts) {
  auto state = std::make_unique<impl>(sys, std::move(opts));
  if (auto err = state->start())
    return err;
  return std::unique_ptr<bank_service>{new bank_service{std::move(state)}};
}

void bank_service::handle(http::request req, http::responder respond) {
  impl_->dispatch(std::move(req), std::move(respond));
}

caf::expected<std::size_t> bank_service::resume_transfers() {
  return bank::resume_pending_transfers(*impl_->ctx.host, *impl_->ctx.journal);
}

caf::error bank_service::drain(std::chrono::milliseconds bound) {
  impl_->stop_waiting();
  return impl_->ctx.host->drain(bound);
}

} // namespace service

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <boost/json/array.hpp>

#include "annals/error.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/redact.hpp"
#include "service/bank/routes.hpp"

namespace service {

namespace json = boost::json;
namespace ap = annals::persistence;
namespace aa = annals::actors;
using namespace std::chrono_literals;

namespace {

// 200 with the journal's head and every projection's progress; 503 "degraded" when the
// journal or a projection does not answer or a projection failed.
http::response health(bank_context& ctx) {
  json::array projs;
  bool healthy = true;
  for (auto& p : ctx.projections) {
    auto st = p.status(5s);
    if (!st) {
      healthy = false;
      projs.push_back(json::object{{"name", p.name()}, {"error", annals::render(st.error())}});
      continue;
    }
    json::object o{{"name", st->name},
                   {"offset", st->offset},
                   {"lag", st->lag},
                   {"state", aa::to_string(st->state)}};
    if (st->state == aa::projection_state::failed) {
      healthy = false;
      o["error"] = st->error;
    }
    projs.push_back(std::move(o));
  }
  auto head =
    ap::wait_for<std::uint64_t>([&ctx](auto cb) { ctx.journal->head_offset(std::move(cb)); }, 5s);
  if (!head)
    healthy = false;
  json::object body{
    {"status", healthy ? "ok" : "degraded"},
    {"journal",
     {{"path", ctx.sqlite ? ctx.opts.db_path : std::string{}},
      {"uri", ctx.sqlite ? "sqlite:" + ctx.opts.db_path : ap::redact_secrets(ctx.opts.journal)},
      {"head_offset", head ? *head : 0}}},
    {"projections", std::move(projs)}};
  return json_response(healthy ? 200 : 503, body);
}

// The Prometheus text exposition of the host's, the journal's, the projections' and the HTTP
// responses' counters.
std::string metrics(bank_context& ctx) {
  std::ostringstream out;
  auto counter = [&out](const char* name, const char* help, std::uint64_t v) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n"
        << name << ' ' << v << '\n';
  };
  auto m = ctx.host->metrics();
  counter("annals_commands_handled_total", "Commands that aggregates answered.",
          m.commands_handled);
  counter("annals_commands_failed_total", "Commands answered with an error.", m.commands_failed);
  counter("annals_events_persisted_total", "Events written by aggregates.", m.events_persisted);
  counter("annals_duplicate_commands_total", "Retries answered from an idempotency key.",
          m.duplicates);
  counter("annals_commands_pipelined_total",
          "Commands decided while their aggregate's earlier events were being committed.",
          m.commands_pipelined);
  counter("annals_recoveries_total", "Aggregates started by recovery.", m.recoveries);
  counter("annals_events_replayed_total", "Events replayed by recoveries.", m.events_replayed);
  counter("annals_snapshots_written_total", "Snapshots saved.", m.snapshots_written);
  counter("annals_passivations_total", "Aggregates stopped when idle or evicted.", m.passivations);
  auto histogram = [&out](const char* name, const char* help, const auto& bounds,
                          const auto& counts, double scale, double sum) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " histogram\n";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds.size(); ++i) {
      cumulative += counts[i];
      out << name << "_bucket{le=\"" << static_cast<double>(bounds[i]) * scale << "\"} "
          << cumulative << '\n';
    }
    cumulative += counts[bounds.size()];
    out << name << "_bucket{le=\"+Inf\"} " << cumulative << '\n'
        << name << "_sum " << sum << '\n'
        << name << "_count " << cumulative << '\n';
  };
  // The SQLite journal counts its own appends and commits; JetStream keeps such figures
  // on its servers (the monitoring endpoint).
  if (ctx.sqlite) {
    auto js = ctx.sqlite->stats();
    counter("annals_journal_appends_total", "Appends committed by the journal.", js.appends);
    counter("annals_journal_failed_appends_total", "Appends the journal refused.",
            js.failed_appends);
    histogram("annals_journal_batch_size", "Writes committed per journal transaction.",
              js.batch_bounds, js.batch_histogram, 1.0, static_cast<double>(js.batch_writes_sum));
    histogram("annals_journal_commit_seconds", "Journal transaction time, BEGIN to COMMIT (fsync).",
              js.commit_bounds_us, js.commit_histogram, 1e-6,
              static_cast<double>(js.commit_us_sum) * 1e-6);
  }
  out << "# HELP annals_projection_offset Last journal offset a projection processed.\n"
         "# TYPE annals_projection_offset gauge\n";
  std::vector<std::pair<std::string, std::uint64_t>> lags;
  for (auto& p : ctx.projections) {
    auto st = p.status(5s);
    if (!st)
      continue;
    out << "annals_projection_offset{projection=\"" << st->name << "\"} " << st->offset << '\n';
    lags.emplace_back(st->name, st->lag);
  }
  out << "# HELP annals_projection_lag_events Events a projection is behind the journal head.\n"
         "# TYPE annals_projection_lag_events gauge\n";
  for (const auto& [name, lag] : lags)
    out << "annals_projection_lag_events{projection=\"" << name << "\"} " << lag << '\n';
  out << "# HELP annals_http_responses_total HTTP responses by status code.\n"
         "# TYPE annals_http_responses_total counter\n";
  for (const auto& [status, n] : ctx.responses_by_status())
    out << "annals_http_responses_total{code=\"" << status << "\"} " << n << '\n';
  return out.str();
}

} // namespace

void add_operation_routes(bank_context& ctx) {
  auto& routes = ctx.routes;

  routes.add("GET", {"health"}, [&ctx](req_t, args_t, resp_t respond) {
    ctx.on_worker(respond, [&ctx] { return health(ctx); });
  });
  routes.add("GET", {"metrics"}, [&ctx](req_t, args_t, resp_t respond) {
    ctx.on_worker(respond, [&ctx] {
      http::response r{200, metrics(ctx)};
      r.content_type = "text/plain; version=0.0.4";
      return r;
    });
  });
}

} // namespace service

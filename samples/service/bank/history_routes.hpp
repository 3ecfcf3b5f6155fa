#pragma once

// The routes every aggregate type has: its events (`GET /<type>s/{id}/events`) and its state
// at a version (`GET /<type>s/{id}/state`), both read from the journal on a query worker.

#include <cstdint>
#include <limits>
#include <string>

#include <boost/json/value_from.hpp>

#include "annals/error.hpp"
#include "annals/persistence/replay.hpp"
#include "annals/persistence_id.hpp"
#include "service/bank/context.hpp"
#include "service/bank/request_fields.hpp"

namespace service {

/// Answers the events of aggregate `raw_id` of type `type` from `?from=` (default 1), at most
/// `?limit=` (default 100) of them: {"id", "events": [{"seq", "type", "version", "offset",
/// "timestamp", "data" (or "raw"), "command_id", "correlation_id"}]}; 404 "not_found" for an
/// aggregate without events.
void events_route(bank_context& ctx, const http::request& req, const std::string& type,
                  const std::string& raw_id, http::responder& respond);

/// Answers the state of aggregate `raw_id` of type `type` (class `A`), replayed from the
/// journal up to `?at=` (default: every event): {"id", "at", "timestamp", "state"}; 404
/// "not_found" for an aggregate without events.
template <class A>
void state_route(bank_context& ctx, const http::request& req, const std::string& type,
                 const std::string& raw_id, http::responder& respond) {
  auto id = check_id(type + " id", raw_id);
  constexpr auto all = std::numeric_limits<std::uint64_t>::max();
  auto at = req.query.count("at")
              ? query_number(req, "at", 0, 1, std::numeric_limits<std::int64_t>::max())
              : all;
  ctx.on_worker(respond, [&ctx, type, id, at] {
    auto pid = annals::persistence_id{type, id}.str();
    auto past = annals::persistence::replay_state<A>(*ctx.journal, pid, at);
    if (!past) {
      if (annals::is(past.error(), annals::errc::invalid_argument))
        throw api_error{404, "not_found", annals::context_of(past.error())};
      auto [status, code] = classify(past.error());
      throw api_error{status, code, annals::render(past.error())};
    }
    if (past->version == 0)
      throw api_error{404, "not_found", "no " + type + " " + id};
    return json_response(200, boost::json::object{{"id", id},
                                                  {"at", past->version},
                                                  {"timestamp", iso_time(past->timestamp_us)},
                                                  {"state", boost::json::value_from(past->state)}});
  });
}

} // namespace service

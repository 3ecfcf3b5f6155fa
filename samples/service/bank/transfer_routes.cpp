#include <string>

#include "account/transfer.hpp"
#include "service/bank/history_routes.hpp"
#include "service/bank/request_fields.hpp"
#include "service/bank/routes.hpp"

namespace service {

namespace json = boost::json;

void add_transfer_routes(bank_context& ctx) {
  auto& routes = ctx.routes;

  routes.add("POST", {"transfers"}, [&ctx](req_t req, args_t, resp_t respond) {
    body_fields f{req.body, {"id", "from", "to", "amount"}};
    auto id = check_id("transfer id", f.text("id"));
    auto from = check_id("from", f.text("from"));
    auto to = check_id("to", f.text("to"));
    // The transfer's id is its idempotency key (a retry with the same id and parameters
    // answers the status), so an Idempotency-Key header is not passed on: re-running a
    // saga's handler to recompute a lost reply would ask the accounts again from outside
    // an actor.
    auto plain = req;
    plain.headers.erase("idempotency-key");
    ctx.command<bank::transfer>(
      plain, id, bank::start_transfer{id, from, to, f.integer("amount")}, 202,
      [id](bank::transfer_status st) {
        return json::object{{"id", id}, {"status", enum_name(st)}};
      },
      respond);
  });
  routes.add("GET", {"transfers", "*"}, [&ctx](req_t req, args_t a, resp_t respond) {
    auto id = check_id("transfer id", a[0]);
    ctx.command<bank::transfer>(
      req, id, bank::get_transfer_state{}, 200,
      [id](const bank::transfer_state& t) { return transfer_json(id, t); }, respond);
  });
  routes.add("GET", {"transfers", "*", "events"}, [&ctx](req_t req, args_t a, resp_t respond) {
    events_route(ctx, req, bank::transfer::name, a[0], respond);
  });
}

} // namespace service

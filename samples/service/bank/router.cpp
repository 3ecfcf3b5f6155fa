#include "service/bank/router.hpp"

#include <cstddef>
#include <utility>

#include "service/bank/errors.hpp"

namespace service {

void router::add(std::string method, std::vector<std::string> pattern, route_handler run) {
  routes_.push_back({std::move(method), std::move(pattern), std::move(run)});
}

void router::dispatch(const http::request& req, http::responder& respond) const {
  try {
    const route* found = nullptr;
    route_args args;
    std::vector<std::string> allowed;
    for (const auto& r : routes_) {
      if (r.pattern.size() != req.segments.size())
        continue;
      route_args captured;
      bool match = true;
      for (std::size_t i = 0; i < r.pattern.size() && match; ++i) {
        if (r.pattern[i] == "*")
          captured.push_back(req.segments[i]);
        else
          match = r.pattern[i] == req.segments[i];
      }
      if (!match)
        continue;
      if (r.method != req.method) {
        allowed.push_back(r.method);
        continue;
      }
      found = &r;
      args = std::move(captured);
      break;
    }
    if (found != nullptr) {
      found->run(req, args, respond);
      return;
    }
    if (!allowed.empty()) {
      auto resp =
        http::json_error(405, "method_not_allowed", req.method + " is not allowed on " + req.path);
      std::string allow;
      for (const auto& m : allowed)
        allow += (allow.empty() ? "" : ", ") + m;
      resp.headers.emplace_back("Allow", allow);
      respond(std::move(resp));
      return;
    }
    respond(http::json_error(404, "unknown_route", "no route for " + req.method + " " + req.path));
  } catch (const api_error& e) {
    respond(http::json_error(e.status, e.code, e.message));
  }
}

} // namespace service

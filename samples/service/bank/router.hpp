#pragma once

// Matching a request to one of the bank service's routes by method and path.

#include <functional>
#include <string>
#include <vector>

#include "service/http.hpp"

namespace service {

/// The path segments a route's "*" segments matched, in order.
using route_args = std::vector<std::string>;

/// What a route does with a request; it may answer later, from any thread, and may throw an
/// `api_error` to refuse the request.
using route_handler =
  std::function<void(const http::request&, const route_args&, http::responder&)>;

/// Shorthands for a route_handler's parameters, for the lambdas that routes are written as.
using req_t = const http::request&;
using args_t = const route_args&;
using resp_t = http::responder&;

/// A table of routes, tried in the order they were added.
class router {
public:
  /// Adds a route for `method` on paths of `pattern`'s segments, "*" matching any one segment.
  void add(std::string method, std::vector<std::string> pattern, route_handler run);

  /// Runs the first route matching `req`; answers 405 "method_not_allowed" (with an Allow
  /// header listing the methods of the routes whose path matches) or 404 "unknown_route" when
  /// none does, and an `api_error` the route throws as its JSON error.
  void dispatch(const http::request& req, http::responder& respond) const;

private:
  struct route {
    std::string method;
    std::vector<std::string> pattern;
    route_handler run;
  };

  std::vector<route> routes_;
};

} // namespace service

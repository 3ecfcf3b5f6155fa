#pragma once

// How the bank service turns failures into HTTP answers: a request refused before it
// reaches an aggregate (`api_error`), and an error reply of the runtime or an aggregate
// (`classify`, `error_response`).

#include <string>
#include <utility>

#include <caf/error.hpp>

#include "service/http.hpp"

namespace service {

/// A request the service refuses before it reaches an aggregate. Routes throw it; the router
/// (or the query worker running the route's job) answers it as a JSON error.
struct api_error {
  unsigned status;
  std::string code;
  std::string message;
};

/// The HTTP status and the error code for an error reply of the runtime or an aggregate:
/// not found 404, invalid input 422 (400 for the runtime's invalid_argument), other domain
/// refusals 409, unavailable 503, timeouts 504, a full disk 507, an oversized append 413,
/// anything else 500 "internal_error".
std::pair<unsigned, std::string> classify(const caf::error& err);

/// The JSON error response for `err`, with the status and code of `classify` and the
/// rendered error as the message.
http::response error_response(const caf::error& err);

} // namespace service

#pragma once

// Reading what a request carries: a strict JSON body, an id from the path or the body, and
// query parameters. Every refusal is thrown as an `api_error`.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "service/http.hpp"

namespace service {

/// A request body: a JSON object whose fields are all among the allowed ones, read by name
/// and type.
class body_fields {
public:
  /// Parses `body`; an empty body is an empty object (for commands without fields).
  /// Throws 400 "malformed_json" for a body that is not a JSON object and 422
  /// "invalid_field" for a field not in `allowed`.
  body_fields(const std::string& body, const std::vector<std::string_view>& allowed);

  /// The string field `name`; 422 "missing_field" or "invalid_field" otherwise.
  std::string text(std::string_view name) const;

  /// The 64-bit signed integer field `name`; 422 "missing_field" or "invalid_field"
  /// otherwise.
  std::int64_t integer(std::string_view name) const;

private:
  const boost::json::value& need(std::string_view name) const;

  boost::json::object obj_;
};

/// `id` when the host accepts it as an entity id; 400 "invalid_id" naming `what` otherwise.
std::string check_id(std::string_view what, std::string_view id);

/// The query parameter `name` as an integer in min..max, or `fallback` when absent; 400
/// "invalid_query" otherwise.
std::uint64_t query_number(const http::request& req, const std::string& name,
                           std::uint64_t fallback, std::uint64_t min, std::uint64_t max);

/// Whether the query parameter `name` is present as "", "1" or "true".
bool query_flag(const http::request& req, const std::string& name);

} // namespace service

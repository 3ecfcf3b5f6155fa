#include "service/bank/request_fields.hpp"

#include <algorithm>
#include <charconv>
#include <system_error>
#include <utility>

#include <boost/json/parse.hpp>

#include "annals/actors/host.hpp"
#include "annals/error.hpp"
#include "service/bank/errors.hpp"

namespace service {

namespace json = boost::json;

body_fields::body_fields(const std::string& body, const std::vector<std::string_view>& allowed) {
  if (body.empty())
    return;
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec)
    throw api_error{400, "malformed_json", "the body is not valid JSON: " + ec.message()};
  if (!v.is_object())
    throw api_error{400, "malformed_json", "the body must be a JSON object"};
  obj_ = std::move(v.as_object());
  for (const auto& kv : obj_)
    if (std::find(allowed.begin(), allowed.end(), kv.key()) == allowed.end())
      throw api_error{422, "invalid_field", "unknown field '" + std::string{kv.key()} + "'"};
}

std::string body_fields::text(std::string_view name) const {
  const auto& v = need(name);
  if (!v.is_string())
    throw api_error{422, "invalid_field", "field '" + std::string{name} + "' must be a string"};
  return std::string{v.as_string()};
}

std::int64_t body_fields::integer(std::string_view name) const {
  const auto& v = need(name);
  if (v.is_int64())
    return v.as_int64();
  if (v.is_uint64())
    throw api_error{422, "invalid_field",
                    "field '" + std::string{name} + "' is out of range (64-bit signed)"};
  throw api_error{422, "invalid_field",
                  "field '" + std::string{name} + "' must be an integer"
                    + (name == "amount" ? std::string{" number of cents"} : std::string{})};
}

const json::value& body_fields::need(std::string_view name) const {
  auto* v = obj_.if_contains(name);
  if (v == nullptr)
    throw api_error{422, "missing_field", "field '" + std::string{name} + "' is required"};
  return *v;
}

std::string check_id(std::string_view what, std::string_view id) {
  if (auto err = annals::actors::host::check_id(id))
    throw api_error{400, "invalid_id", std::string{what} + ": " + annals::context_of(err)};
  return std::string{id};
}

std::uint64_t query_number(const http::request& req, const std::string& name,
                           std::uint64_t fallback, std::uint64_t min, std::uint64_t max) {
  auto i = req.query.find(name);
  if (i == req.query.end())
    return fallback;
  std::uint64_t v = 0;
  const auto& s = i->second;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v < min || v > max)
    throw api_error{400, "invalid_query",
                    "query parameter '" + name + "' must be an integer in " + std::to_string(min)
                      + ".." + std::to_string(max)};
  return v;
}

bool query_flag(const http::request& req, const std::string& name) {
  auto i = req.query.find(name);
  return i != req.query.end() && (i->second.empty() || i->second == "1" || i->second == "true");
}

} // namespace service

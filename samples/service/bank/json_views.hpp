#pragma once

// The JSON the bank service answers with: views of aggregate replies, timestamps and the
// response wrapper every JSON body goes through.

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/describe/enum_to_string.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "account/account.hpp"
#include "account/transfer.hpp"
#include "match/match.hpp"
#include "service/http.hpp"

namespace service {

/// The name of enumerator `e` as declared ("unknown" for a value without one).
template <class E>
std::string enum_name(E e) {
  return boost::describe::enum_to_string(e, "unknown");
}

/// A response with `status` and `body` serialized on one line.
http::response json_response(unsigned status, const boost::json::value& body);

/// `micros` since the epoch as UTC ISO 8601 with milliseconds, e.g.
/// "2024-05-01T12:00:00.250Z".
std::string iso_time(std::int64_t micros);

/// {"id", "owner", "balance", "status", "version"}.
boost::json::object account_json(std::string_view id, const bank::account_view& v);

/// {"id", "status", "from", "to", "amount", "debited"} and "reason" when there is one.
boost::json::object transfer_json(std::string_view id, const bank::transfer_state& t);

/// {"home", "away"} goals.
boost::json::object score_json(const match::scoreline& s);

/// {"id", "home", "away", "score", "period", "substitutions", "version"}.
boost::json::object match_json(std::string_view id, const match::match_state& m,
                               std::uint64_t version);

} // namespace service

#include "service/bank/json_views.hpp"

#include <cstdio>
#include <ctime>

#include <boost/json/serialize.hpp>

namespace service {

namespace json = boost::json;

http::response json_response(unsigned status, const json::value& body) {
  return {status, json::serialize(body) + "\n"};
}

std::string iso_time(std::int64_t micros) {
  auto secs = static_cast<std::time_t>(micros / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>((micros / 1000) % 1000));
  return buf;
}

json::object account_json(std::string_view id, const bank::account_view& v) {
  return {{"id", id},
          {"owner", v.owner},
          {"balance", v.balance},
          {"status", enum_name(v.status)},
          {"version", v.version}};
}

json::object transfer_json(std::string_view id, const bank::transfer_state& t) {
  json::object o{{"id", id},          {"status", enum_name(t.status)},
                 {"from", t.from},    {"to", t.to},
                 {"amount", t.cents}, {"debited", t.debited}};
  if (!t.reason.empty())
    o["reason"] = t.reason;
  return o;
}

json::object score_json(const match::scoreline& s) {
  return {{"home", s.home}, {"away", s.away}};
}

json::object match_json(std::string_view id, const match::match_state& m, std::uint64_t version) {
  return {{"id", id},
          {"home", m.home},
          {"away", m.away},
          {"score", score_json(m.score)},
          {"period", enum_name(m.period)},
          {"substitutions", {{"home", m.substitutions_home}, {"away", m.substitutions_away}}},
          {"version", version}};
}

} // namespace service

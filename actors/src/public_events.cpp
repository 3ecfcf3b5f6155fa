#include "annals/actors/public_events.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <exception>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "annals/actors/projection_sink.hpp"
#include "annals/error.hpp"
#include "annals/persistence_id.hpp"

namespace annals::actors {

public_contract::public_contract(std::string source) : source_(std::move(source)) {}

std::string public_contract::message_id(std::uint64_t position) const {
  return source_ + ':' + std::to_string(position);
}

caf::expected<std::optional<published_message>>
public_contract::translate(const persistence::event_record& rec) const {
  std::string_view pid = rec.persistence_id;
  auto type = pid.substr(0, std::min(pid.find(persistence_id::separator), pid.size()));
  std::string lookup;
  lookup.reserve(type.size() + 1 + rec.name.size());
  lookup.append(type).append(1, '\n').append(rec.name);
  auto it = translators_.find(lookup);
  if (it == translators_.end())
    return std::optional<published_message>{};
  std::optional<translated> body;
  try {
    body = it->second(rec);
  } catch (const rejected& e) {
    return e.error();
  } catch (...) {
    return handler_error("public contract " + source_, rec, current_exception_text());
  }
  if (!body)
    return std::optional<published_message>{};
  published_message msg;
  msg.id = message_id(rec.offset);
  msg.position = rec.offset;
  msg.type = std::move(body->second.first);
  msg.version = body->second.second;
  msg.key = body->first.key.empty() ? std::string{persistence_id::entity_of(rec.persistence_id)}
                                    : std::move(body->first.key);
  msg.occurred_at_us = rec.timestamp_us;
  msg.data = std::move(body->first.data);
  return std::optional<published_message>{std::move(msg)};
}

caf::expected<std::vector<published_message>>
public_contract::translate(std::span<const persistence::event_record> records) const {
  std::vector<published_message> out;
  for (const auto& rec : records) {
    auto msg = translate(rec);
    if (!msg)
      return msg.error();
    if (*msg)
      out.push_back(std::move(**msg));
  }
  return out;
}

std::string format_utc(std::int64_t timestamp_us) {
  auto secs = static_cast<std::time_t>(timestamp_us / 1'000'000);
  auto micros = timestamp_us % 1'000'000;
  if (micros < 0) {
    micros += 1'000'000;
    --secs;
  }
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[96]; // room for any int year, as -Wformat-truncation counts it
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(micros));
  return buf;
}

std::string to_json(const published_message& msg) {
  boost::json::object o;
  o["id"] = msg.id;
  o["position"] = msg.position;
  o["type"] = msg.type;
  o["version"] = msg.version;
  o["key"] = msg.key;
  o["occurred_at"] = format_utc(msg.occurred_at_us);
  o["occurred_at_us"] = msg.occurred_at_us;
  o["data"] = msg.data;
  return boost::json::serialize(o);
}

namespace {

caf::error bad_message(const std::string& what) {
  return make_error(errc::decode_failed, "public message: " + what);
}

} // namespace

caf::expected<published_message> parse_published(std::string_view json) {
  boost::system::error_code ec;
  auto v = boost::json::parse(json, ec);
  if (ec)
    return bad_message("not JSON: " + ec.message());
  auto* o = v.if_object();
  if (!o)
    return bad_message("not a JSON object");
  published_message msg;
  auto text = [&](const char* field, std::string& out) -> caf::error {
    auto* f = o->if_contains(field);
    if (!f || !f->is_string())
      return bad_message(std::string{"field '"} + field + "' missing or not a string");
    out = std::string{f->as_string()};
    return {};
  };
  auto integer = [&](const char* field, auto& out) -> caf::error {
    auto* f = o->if_contains(field);
    if (!f || !(f->is_uint64() || f->is_int64()) || (f->is_int64() && f->as_int64() < 0))
      return bad_message(std::string{"field '"} + field + "' missing or not a whole number >= 0");
    out = static_cast<std::remove_reference_t<decltype(out)>>(f->is_uint64() ? f->as_uint64()
                                                                             : f->as_int64());
    return {};
  };
  if (auto err = text("id", msg.id))
    return err;
  if (auto err = integer("position", msg.position))
    return err;
  if (auto err = text("type", msg.type))
    return err;
  if (auto err = integer("version", msg.version))
    return err;
  if (auto err = text("key", msg.key))
    return err;
  if (auto* at = o->if_contains("occurred_at_us"); at && at->is_int64())
    msg.occurred_at_us = at->as_int64();
  else if (at && at->is_uint64())
    msg.occurred_at_us = static_cast<std::int64_t>(at->as_uint64());
  auto* data = o->if_contains("data");
  if (!data || !data->is_object())
    return bad_message("field 'data' missing or not an object");
  msg.data = data->as_object();
  return msg;
}

} // namespace annals::actors

#include "annals/codec.hpp"

#include <algorithm>
#include <map>
#include <mutex>
#include <string>

#include <boost/json/parse.hpp>

namespace annals::detail {

namespace {

struct name_registry {
  std::mutex mtx;
  std::map<std::string, const void*, std::less<>> owners;
};

name_registry& names() {
  static name_registry instance;
  return instance;
}

std::string quoted(std::string_view s) {
  std::string r{"'"};
  r += s;
  r += '\'';
  return r;
}

} // namespace

caf::error claim_type_name(std::string_view name, const void* token, std::string_view kind) {
  auto& reg = names();
  std::lock_guard guard{reg.mtx};
  auto [i, added] = reg.owners.try_emplace(std::string{name}, token);
  if (!added && i->second != token)
    return make_error(errc::duplicate_event_name, std::string{kind} + " name " + quoted(name)
                                                    + " is registered by two different types");
  return {};
}

caf::error check_upcasters(std::string_view kind, std::string_view name, std::uint32_t version,
                           std::span<const upcaster> ups) {
  auto prefix = std::string{kind} + " " + quoted(name) + " version " + std::to_string(version);
  if (version == 0)
    return make_error(errc::upcaster_gap, prefix + ": versions start at 1");
  for (const auto& u : ups) {
    if (u.from == 0 || u.from >= version)
      return make_error(errc::upcaster_gap, prefix + " has an upcaster from version "
                                              + std::to_string(u.from) + ", outside 1.."
                                              + std::to_string(version - 1));
    if (u.apply == nullptr)
      return make_error(errc::upcaster_gap,
                        prefix + " has an empty upcaster from version " + std::to_string(u.from));
  }
  for (std::uint32_t from = 1; from < version; ++from) {
    auto n = std::count_if(ups.begin(), ups.end(), [from](auto& u) { return u.from == from; });
    if (n == 0)
      return make_error(errc::upcaster_gap, prefix + " has no upcaster from version "
                                              + std::to_string(from) + " to "
                                              + std::to_string(from + 1));
    if (n > 1)
      return make_error(errc::upcaster_gap, prefix + " has " + std::to_string(n)
                                              + " upcasters from version " + std::to_string(from));
  }
  return {};
}

caf::expected<boost::json::value> parse_and_upcast(std::string_view name, std::uint32_t version,
                                                   std::uint32_t current,
                                                   std::span<const upcaster> ups,
                                                   std::string_view payload) {
  if (version > current)
    return make_error(errc::newer_version,
                      quoted(name) + " stored as version " + std::to_string(version)
                        + ", this program knows up to version " + std::to_string(current));
  if (version == 0)
    return make_error(errc::decode_failed, quoted(name) + " stored with version 0");
  boost::system::error_code ec;
  auto jv = boost::json::parse(payload, ec);
  if (ec)
    return make_error(errc::decode_failed, quoted(name) + ": invalid JSON: " + ec.message());
  for (auto v = version; v < current; ++v) {
    auto* obj = jv.if_object();
    if (!obj)
      return make_error(errc::decode_failed, quoted(name) + " version " + std::to_string(v)
                                               + ": upcasting needs a JSON object");
    auto step = std::find_if(ups.begin(), ups.end(), [v](auto& u) { return u.from == v; });
    if (step == ups.end())
      return make_error(errc::upcaster_gap,
                        quoted(name) + ": no upcaster from version " + std::to_string(v));
    try {
      step->apply(*obj);
    } catch (const std::exception& e) {
      return make_error(errc::decode_failed, quoted(name) + ": upcaster from version "
                                               + std::to_string(v) + " threw: " + e.what());
    }
  }
  return jv;
}

} // namespace annals::detail

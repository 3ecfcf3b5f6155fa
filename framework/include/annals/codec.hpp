#pragma once

/// @file
/// The JSON codec of events and snapshots, with upcasting and start-up validation.
///
/// `event_codec<Events...>` turns each event type into an `encoded_event` and back. Reading
/// data of an older schema version runs the type's upcasters in order (v1 -> v2 -> v3)
/// before decoding. `validate()` checks, once at start-up, that no two event types share
/// a name (within the codec and across every codec validated in the process) and that
/// every upcaster chain is complete, so a missing step is found before any replay.
///
/// ```cpp
/// using codec = annals::event_codec<bank::deposited, bank::withdrawn>;
/// if (auto err = codec::validate())
///   std::cerr << annals::render(err) << '\n';
/// auto enc = codec::encode(bank::deposited{100});   // {"cents":100}
/// auto ev = codec::decode(enc.name, enc.version, enc.payload);  // expected<variant>
/// ```

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/error.hpp"
#include "annals/event.hpp"

namespace annals {

namespace detail {

/// A distinct address per type, used to tell types apart without RTTI names.
template <class T>
inline constexpr char type_token = 0;

/// Records that `name` belongs to the type behind `token`; fails if another type already
/// holds the name. Thread-safe.
caf::error claim_type_name(std::string_view name, const void* token, std::string_view kind);

/// Checks that `ups` is a complete chain from 1 to `version` for `name`.
caf::error check_upcasters(std::string_view kind, std::string_view name, std::uint32_t version,
                           std::span<const upcaster> ups);

/// Parses `payload` and upcasts it from `version` to `current`; fails with
/// `decode_failed` (invalid JSON, a non-object that needs upcasting) or `newer_version`.
caf::expected<boost::json::value> parse_and_upcast(std::string_view name, std::uint32_t version,
                                                   std::uint32_t current,
                                                   std::span<const upcaster> ups,
                                                   std::string_view payload);

template <class T>
caf::expected<T> from_json(std::string_view name, const boost::json::value& jv) {
  auto res = boost::json::try_value_to<T>(jv);
  if (!res)
    return make_error(errc::decode_failed, std::string{name} + ": " + res.error().message());
  return std::move(*res);
}

} // namespace detail

/// Encodes and decodes one type with a `name`, optional `version` and `upcasters`; used
/// for events and for snapshot states.
template <class T>
struct type_codec {
  static constexpr std::string_view name() {
    return T::name;
  }

  static constexpr std::uint32_t version() {
    return schema_version<T>();
  }

  /// Checks the name and the upcaster chain; `kind` ("event", "snapshot") is for messages.
  static caf::error validate(std::string_view kind = "event") {
    if (name().empty())
      return make_error(errc::invalid_argument, std::string{kind} + " type with an empty name");
    if (auto err = detail::claim_type_name(name(), &detail::type_token<T>, kind))
      return err;
    return detail::check_upcasters(kind, name(), version(), upcasters_of<T>());
  }

  static std::string to_json(const T& x) {
    return boost::json::serialize(boost::json::value_from(x));
  }

  static caf::expected<T> from_json(std::uint32_t stored_version, std::string_view payload) {
    auto jv =
      detail::parse_and_upcast(name(), stored_version, version(), upcasters_of<T>(), payload);
    if (!jv)
      return std::move(jv.error());
    return detail::from_json<T>(name(), *jv);
  }
};

/// The codec of one aggregate's events; see the file comment.
template <event... Events>
class event_codec {
public:
  using event_type = std::variant<Events...>;

  static constexpr std::size_t size = sizeof...(Events);

  /// Checks names and upcaster chains; an empty error means the codec is usable.
  static caf::error validate() {
    caf::error result;
    ((result ? void() : void(result = type_codec<Events>::validate("event"))), ...);
    return result;
  }

  template <class E>
  requires(std::is_same_v<E, Events> || ...) static encoded_event encode(const E& e) {
    return encoded_event{std::string{E::name}, schema_version<E>(), type_codec<E>::to_json(e),
                         tags_of<E>()};
  }

  static encoded_event encode(const event_type& e) {
    return std::visit([](const auto& x) { return encode(x); }, e);
  }

  /// Decodes a stored event: looks the name up, upcasts older versions, and converts.
  static caf::expected<event_type> decode(std::string_view name, std::uint32_t version,
                                          std::string_view payload) {
    caf::expected<event_type> result{
      make_error(errc::unknown_event, "unknown event type '" + std::string{name} + "'")};
    (void)((name == Events::name ? (result = decode_as<Events>(version, payload), true) : false)
           || ...);
    return result;
  }

  /// True if `name` is one of this codec's event names.
  static bool knows(std::string_view name) {
    return ((name == Events::name) || ...);
  }

private:
  template <class E>
  static caf::expected<event_type> decode_as(std::uint32_t version, std::string_view payload) {
    auto x = type_codec<E>::from_json(version, payload);
    if (!x)
      return std::move(x.error());
    return event_type{std::in_place_type<E>, std::move(*x)};
  }
};

} // namespace annals

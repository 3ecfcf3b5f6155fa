#pragma once

/// @file
/// What makes a type an event, and the form an event takes on its way to storage.
///
/// An event type is a plain struct with a stable `name` (part of the storage format: it
/// never comes from `typeid`) and, optionally, a schema `version` (default 1), `tags`, and
/// `upcasters` that turn the JSON of each older version into the next one:
///
/// ```cpp
/// struct goal_scored {
///   static constexpr auto name = "match.goal_scored";
///   static constexpr std::uint32_t version = 2;
///   static void v1_to_v2(boost::json::object& o) { o["minute"] = 0; }
///   static constexpr annals::upcaster upcasters[] = {{1, &v1_to_v2}};
///   std::string player;
///   int minute;
/// };
/// BOOST_DESCRIBE_STRUCT(goal_scored, (), (player, minute))
/// ```
///
/// The JSON form comes from Boost.JSON: Boost.Describe for plain structs, or a
/// `tag_invoke` overload pair (`value_from_tag`/`value_to_tag`) where a type needs its own.

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/fwd.hpp>

namespace annals {

/// One step of an upcaster chain: rewrites the JSON object of version `from` in place so
/// that it becomes valid JSON of version `from + 1`.
struct upcaster {
  std::uint32_t from;
  void (*apply)(boost::json::object& payload);
};

/// A type with a stable `name`; see the file comment.
template <class E>
concept event = std::is_class_v<E> && requires {
  { E::name } -> std::convertible_to<std::string_view>;
};

/// The schema version of `T`: `T::version` if declared, otherwise 1.
template <class T>
constexpr std::uint32_t schema_version() {
  if constexpr (requires { T::version; })
    return static_cast<std::uint32_t>(T::version);
  else
    return 1;
}

/// The upcasters declared by `T` (empty if none).
template <class T>
constexpr std::span<const upcaster> upcasters_of() {
  if constexpr (requires { T::upcasters; })
    return std::span<const upcaster>{T::upcasters};
  else
    return {};
}

/// The tags declared by `T` (e.g. `static constexpr std::string_view tags[] = {"money"};`).
template <class T>
std::vector<std::string> tags_of() {
  if constexpr (requires { T::tags; })
    return std::vector<std::string>(std::begin(T::tags), std::end(T::tags));
  else
    return {};
}

/// Who caused an event; stored with every event of one write.
struct event_metadata {
  std::string command_id;     ///< idempotency key of the command, if any
  std::string correlation_id; ///< ties together the events of one business process

  friend bool operator==(const event_metadata&, const event_metadata&) = default;
};

/// An event as it travels to the journal: the type's name and version, and its JSON text.
struct encoded_event {
  std::string name;
  std::uint32_t version = 1;
  std::string payload;           ///< JSON text
  std::vector<std::string> tags; ///< tags the journal indexes for tagged reads

  friend bool operator==(const encoded_event&, const encoded_event&) = default;
};

} // namespace annals

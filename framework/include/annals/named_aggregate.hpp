#pragma once

/// @file
/// The type name of an aggregate, given once, as a static member of the aggregate class.
///
/// ```cpp
/// class account : public annals::aggregate<account_state, opened, deposited> {
/// public:
///   static constexpr auto name = "account";  // persistence ids are `account|<id>`
///   ...
/// };
///
/// host.register_aggregate<account>();                   // registered as "account"
/// event_filter::aggregate_type<account>();              // persistence ids "account|..."
/// annals::persistence_id{account::name, "acc-42"};      // "account|acc-42"
/// ```
///
/// The name is part of the storage format (it prefixes every persistence id of the type),
/// so like an event's name it never comes from `typeid`. The host, the projection filters
/// and the operator tool all read it from here. It must not hold `persistence_id::separator`
/// (`|`); the host refuses such a name when registering the type.

#include <concepts>
#include <string_view>

#include "annals/aggregate.hpp"

namespace annals {

/// Satisfied by aggregates that name their type with a `static constexpr name`.
template <class A>
concept named_aggregate = aggregate_type<A> && requires {
  { A::name } -> std::convertible_to<std::string_view>;
};

/// The type name of aggregate `A` (its `static constexpr name`).
template <named_aggregate A>
constexpr std::string_view aggregate_name() noexcept {
  return std::string_view{A::name};
}

} // namespace annals

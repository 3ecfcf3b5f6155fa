#pragma once

// Structural equality for events and states, used by the testkit to prove that a codec
// round trip and a replay lose nothing. Uses operator== where the type has one, else the
// Boost.Describe members one by one, else the JSON encodings.

#include <concepts>
#include <variant>

#include <boost/describe/members.hpp>
#include <boost/json/value_from.hpp>
#include <boost/mp11/algorithm.hpp>

namespace annals::detail {

template <class T>
bool structurally_equal(const T& a, const T& b);

template <class... Ts>
bool structurally_equal(const std::variant<Ts...>& a, const std::variant<Ts...>& b) {
  if (a.index() != b.index())
    return false;
  return std::visit(
    [&b](const auto& x) {
      return structurally_equal(x, *std::get_if<std::decay_t<decltype(x)>>(&b));
    },
    a);
}

template <class T>
bool structurally_equal(const T& a, const T& b) {
  if constexpr (std::equality_comparable<T>) {
    return a == b;
  } else if constexpr (boost::describe::has_describe_members<T>::value) {
    using members = boost::describe::describe_members<T, boost::describe::mod_public>;
    bool eq = true;
    boost::mp11::mp_for_each<members>(
      [&](auto m) { eq = eq && structurally_equal(a.*m.pointer, b.*m.pointer); });
    return eq;
  } else {
    return boost::json::value_from(a) == boost::json::value_from(b);
  }
}

} // namespace annals::detail

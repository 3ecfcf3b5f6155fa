#pragma once

/// @file
/// Errors are values: every error enum of a program maps to a `caf::error` that carries
/// a category name, a code and an optional context string, and renders as a readable
/// message.
///
/// An error enum becomes usable with annals by declaring two things next to it:
///
/// ```cpp
/// namespace bank {
/// enum class account_errc : std::uint8_t { insufficient_funds = 1, account_closed };
/// BOOST_DESCRIBE_ENUM(account_errc, insufficient_funds, account_closed)  // names
/// constexpr std::string_view error_category(account_errc) { return "bank"; }  // <= 10 chars
/// }
/// ```
///
/// `co_return account_errc::insufficient_funds;` in a handler then replies with
/// `annals::make_error(account_errc::insufficient_funds)`, which `annals::to_string`
/// renders as `bank.insufficient_funds`. An optional `std::string error_message(E)`
/// found by ADL supplies a longer text.

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include <boost/describe/enum.hpp>
#include <boost/describe/enum_to_string.hpp>
#include <boost/describe/enumerators.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace annals {

/// Errors raised by the framework itself (category `annals`).
enum class errc : std::uint8_t {
  handler_failed = 1,   ///< a command handler threw an exception
  decode_failed,        ///< stored JSON did not decode into the registered type
  unknown_event,        ///< a stored event name is not registered for the aggregate
  newer_version,        ///< stored data was written by a newer schema version
  duplicate_event_name, ///< two event types registered under one name
  upcaster_gap,         ///< an upcaster chain is missing a step
  state_mismatch,       ///< replayed state differs from the live state
  timeout,              ///< a bounded wait ran out
  unknown_command,      ///< no handler accepts the command
  invalid_argument,     ///< a request was malformed
  unavailable,          ///< the host is shutting down and takes no new commands
};
BOOST_DESCRIBE_ENUM(errc, handler_failed, decode_failed, unknown_event, newer_version,
                    duplicate_event_name, upcaster_gap, state_mismatch, timeout, unknown_command,
                    invalid_argument, unavailable)

/// ADL hook naming the category of `annals::errc`.
constexpr std::string_view error_category(errc) {
  return "annals";
}

/// Satisfied by enums that declare an `error_category(E)` function found by ADL.
template <class E>
concept error_enum = std::is_enum_v<E> && requires(E e) {
  { error_category(e) } -> std::convertible_to<std::string_view>;
};

namespace detail {

/// Renders one code of a category; registered once per error enum.
using code_renderer = std::string (*)(std::uint8_t code);

/// Registers `render` for `category`; idempotent. Returns true.
bool register_error_category(std::string_view category, code_renderer render);

template <class E>
std::string enum_code_name(E e) {
  if constexpr (boost::describe::has_describe_enumerators<E>::value) {
    if (const char* s = boost::describe::enum_to_string(e, nullptr))
      return s;
  }
  return "code_" + std::to_string(static_cast<unsigned>(e));
}

template <class E>
std::string render_code(std::uint8_t code) {
  return enum_code_name(static_cast<E>(code));
}

template <class E>
concept has_error_message = requires(E e) {
  { error_message(e) } -> std::convertible_to<std::string>;
};

} // namespace detail

/// Converts an error enum value (plus an optional context text) to a `caf::error`.
/// The enum's category is registered for rendering on first use.
template <error_enum E>
caf::error make_error(E e, std::string context = {}) {
  static const bool registered =
    detail::register_error_category(error_category(e), &detail::render_code<E>);
  (void)registered;
  auto category = caf::atom_from_string(error_category(e));
  if constexpr (detail::has_error_message<E>) {
    if (context.empty())
      context = error_message(e);
  }
  if (context.empty())
    return caf::error{static_cast<std::uint8_t>(e), category};
  return caf::error{static_cast<std::uint8_t>(e), category, caf::make_message(std::move(context))};
}

/// True if `err` holds `e` (same category and code).
template <error_enum E>
bool is(const caf::error& err, E e) {
  return err.code() == static_cast<std::uint8_t>(e)
         && err.category() == caf::atom_from_string(error_category(e));
}

/// The category name of `err`, e.g. `bank`.
std::string category_name(const caf::error& err);

/// The code name of `err` within its category, e.g. `insufficient_funds`; for categories
/// that annals does not know, `code_<N>`.
std::string code_name(const caf::error& err);

/// The context text attached to `err`, or an empty string.
std::string context_of(const caf::error& err);

/// A one-line rendering: `category.code: context`, e.g.
/// `journal.conflict: acc-1 expected seq 4, found 5`. Empty errors render as `none`.
std::string render(const caf::error& err);

/// Thrown from a handler (or anything it calls) to reply with a specific error instead of
/// `errc::handler_failed`; useful from `task<void>` handlers and deep helper functions.
class rejected : public std::exception {
public:
  template <error_enum E>
  explicit rejected(E e, std::string context = {}) : error_(make_error(e, std::move(context))) {}
  explicit rejected(caf::error err) : error_(std::move(err)) {}
  const caf::error& error() const noexcept {
    return error_;
  }
  const char* what() const noexcept override;

private:
  caf::error error_;
  mutable std::string what_;
};

} // namespace annals

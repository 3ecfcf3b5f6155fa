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
/// constexpr std::string_view error_category(account_errc) { return "bank"; }
/// }
/// ```
///
/// CAF stores the category as an atom: `error_category` must be `constexpr` and return 1
/// to 10 characters from `[A-Za-z0-9_]`; anything else does not compile.
///
/// `co_return account_errc::insufficient_funds;` in a handler then replies with
/// `annals::make_error(account_errc::insufficient_funds)`, which `annals::render` renders
/// as `bank.insufficient_funds`. An optional `std::string error_message(E)` found by ADL
/// supplies a longer text. `add_error_renderers(cfg)` (called by
/// `annals::actors::configure`) makes CAF's own `actor_system::render` print the same.

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include <boost/describe/enum.hpp>
#include <boost/describe/enum_to_string.hpp>
#include <boost/describe/enumerators.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/make_message.hpp>

namespace annals {

/// Errors raised by the framework itself (category `annals`). The numbers travel in
/// `caf::error` values (and over the wire between nodes): a retired code keeps its number
/// unused rather than shifting the ones after it.
enum class errc : std::uint8_t {
  handler_failed = 1,       ///< a command handler threw an exception
  decode_failed = 2,        ///< stored JSON did not decode into the registered type
  unknown_event = 3,        ///< a stored event name is not registered for the aggregate
  newer_version = 4,        ///< stored data was written by a newer schema version
  duplicate_event_name = 5, ///< two event types registered under one name
  upcaster_gap = 6,         ///< an upcaster chain is missing a step
  timeout = 8,              ///< a bounded wait ran out
  invalid_argument = 10,    ///< a request was malformed
  unavailable = 11,         ///< the host is shutting down and takes no new commands
};
BOOST_DESCRIBE_ENUM(errc, handler_failed, decode_failed, unknown_event, newer_version,
                    duplicate_event_name, upcaster_gap, timeout, invalid_argument, unavailable)

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

/// True if `name` fits a CAF atom unchanged: 1 to 10 characters from `[A-Za-z0-9_]`
/// (CAF maps any other character to a space, and a longer text to an empty atom).
constexpr bool valid_category_name(std::string_view name) {
  if (name.empty() || name.size() > 10)
    return false;
  for (char c : name) {
    bool ok =
      (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok)
      return false;
  }
  return true;
}

/// True if `error_category(E{})` is a constant expression.
template <class E>
concept constant_category = requires {
  typename std::integral_constant<std::size_t, error_category(E{}).size()>;
};

/// `error_category(E{})`, refused at compile time unless CAF can store it.
template <class E>
constexpr std::string_view checked_category() {
  static_assert(constant_category<E>,
                "error_category(E) must be constexpr: annals checks the category name at "
                "compile time");
  if constexpr (constant_category<E>) {
    static_assert(valid_category_name(error_category(E{})),
                  "error_category(E) must return 1 to 10 characters from [A-Za-z0-9_]: CAF "
                  "stores an error category as an atom, which holds no more (a longer name "
                  "would silently become the empty atom and match every other long name)");
    return error_category(E{});
  } else {
    return {};
  }
}

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

/// Registers `E`'s category when the program starts: `make_error<E>` and `is<E>` use this
/// variable, which instantiates it, so `add_error_renderers` finds every category the
/// program can produce even before its first error.
template <class E>
inline const bool category_registered = register_error_category(checked_category<E>(),
                                                                &render_code<E>);

} // namespace detail

/// Converts an error enum value (plus an optional context text) to a `caf::error`.
template <error_enum E>
caf::error make_error(E e, std::string context = {}) {
  constexpr std::string_view name = detail::checked_category<E>();
  // Also here, not only at startup: a static initializer elsewhere may come first.
  static const bool registered = detail::register_error_category(name, &detail::render_code<E>);
  (void)registered;
  (void)detail::category_registered<E>;
  auto category = caf::atom_from_string(name);
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
  constexpr std::string_view name = detail::checked_category<E>();
  (void)detail::category_registered<E>;
  return err.code() == static_cast<std::uint8_t>(e)
         && err.category() == caf::atom_from_string(name);
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

/// Makes `caf::actor_system::render` (and so CAF's own messages) print the errors of
/// every category registered so far the way `render` does. CAF looks renderers up by
/// category and knows none of a program's own; every error enum that the program passes
/// to `make_error` or `is` is registered when the program starts, so calling this
/// before constructing the actor system covers them all. `annals::actors::configure`
/// calls it.
///
/// ```cpp
/// caf::actor_system_config cfg;
/// annals::add_error_renderers(cfg);
/// caf::actor_system sys{cfg};
/// sys.render(make_error(bank::account_errc::insufficient_funds, "balance 0"));
/// // "bank.insufficient_funds: balance 0"
/// ```
void add_error_renderers(caf::actor_system_config& cfg);

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

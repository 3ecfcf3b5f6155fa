// Must not compile: an error category name longer than a CAF atom holds (10 characters).
// The build of this file is a test that expects make_error's static_assert message.

#include <cstdint>
#include <string_view>

#include "annals/error.hpp"

namespace refused {

enum class ledger_errc : std::uint8_t { overdrawn = 1 };
BOOST_DESCRIBE_ENUM(ledger_errc, overdrawn)
constexpr std::string_view error_category(ledger_errc) {
  return "general_ledger";
}

caf::error overdrawn() {
  return annals::make_error(ledger_errc::overdrawn);
}

} // namespace refused

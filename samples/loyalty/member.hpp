#pragma once

// The loyalty sample's aggregate: a member of the loyalty programme, one per bank account,
// who earns points for the money credited to that account. It lives in its own service
// (annals-loyalty) with its own journal and learns about credits only from the bank's public
// messages (payments.AccountCredited), never from the bank's internal events.
//
// The rule: one point per cent credited. A credit message is applied at most once: the
// consumer sends `earn` with the message id as the idempotency key, so a redelivered or
// republished message returns the first reply and persists nothing (within the host's
// de-duplication window of recent command ids per member, also across restarts).

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <boost/describe.hpp>

#include "annals/aggregate.hpp"
#include "annals/task.hpp"

namespace loyalty {

/// Points for one credit: `points` earned because of public message `source_message`.
struct earn {
  std::int64_t points;
  std::string source_message;
};
/// The member's points; `member_errc::not_found` for a member who never earned any.
struct get_points {};

struct points_earned {
  static constexpr auto name = "loyalty.points_earned";
  std::int64_t points;
  std::string source_message; ///< the public message id, e.g. `bank:17`
};
BOOST_DESCRIBE_STRUCT(points_earned, (), (points, source_message))

enum class member_errc : std::uint8_t {
  not_found = 1,   // no points were ever earned under this id
  invalid_points,  // an earning of <= 0 points
  points_overflow, // the total would leave the range of 64-bit integers
};
BOOST_DESCRIBE_ENUM(member_errc, not_found, invalid_points, points_overflow)
constexpr std::string_view error_category(member_errc) {
  return "loyalty";
}

/// The points for a credit of `cents`: one point per cent.
constexpr std::int64_t points_for_credit(std::int64_t cents) noexcept {
  return cents;
}

struct member_state {
  static constexpr auto name = "loyalty.member_state";
  std::int64_t points = 0;
  std::uint64_t earnings = 0; ///< how many credits earned points

  void apply(const points_earned& e) {
    points += e.points;
    ++earnings;
  }

  friend bool operator==(const member_state&, const member_state&) = default;
};
BOOST_DESCRIBE_STRUCT(member_state, (), (points, earnings))

class member : public annals::aggregate<member_state, points_earned> {
public:
  // Persistence ids are `member|<account id>`.
  static constexpr auto name = "member";

  /// Adds `cmd.points`; answers the new total.
  annals::task<std::int64_t> handle(earn cmd) {
    if (cmd.points <= 0)
      co_return annals::make_error(member_errc::invalid_points,
                                   "points are positive, got " + std::to_string(cmd.points));
    if (cmd.points > std::numeric_limits<std::int64_t>::max() - state().points)
      co_return annals::make_error(member_errc::points_overflow,
                                   "earning " + std::to_string(cmd.points)
                                     + " points would overflow the total");
    co_await persist<points_earned>(cmd.points, std::move(cmd.source_message));
    co_return state().points;
  }

  caf::expected<member_state> handle(get_points) const {
    if (state().earnings == 0)
      return annals::make_error(member_errc::not_found, "no points were earned under this id");
    return state();
  }
};

} // namespace loyalty

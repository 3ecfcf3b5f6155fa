#pragma once

// The bank account sample: an aggregate that models a thing. Its balance is the sum of
// its deposits and withdrawals; every change is an event.

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <boost/describe.hpp>

#include "annals/aggregate.hpp"
#include "annals/task.hpp"

namespace bank {

// Commands: imperative, taken by value.
struct open {
  std::string owner;
};
struct deposit {
  std::int64_t cents;
};
struct withdraw {
  std::int64_t cents;
};
struct close {};
struct get_balance {};

// Events: past tense, each with a stable name that is part of the storage format.
struct opened {
  static constexpr auto name = "bank.opened";
  std::string owner;
};
struct deposited {
  static constexpr auto name = "bank.deposited";
  std::int64_t cents;
};
struct withdrawn {
  static constexpr auto name = "bank.withdrawn";
  std::int64_t cents;
};
struct closed {
  static constexpr auto name = "bank.closed";
};
BOOST_DESCRIBE_STRUCT(opened, (), (owner))
BOOST_DESCRIBE_STRUCT(deposited, (), (cents))
BOOST_DESCRIBE_STRUCT(withdrawn, (), (cents))
BOOST_DESCRIBE_STRUCT(closed, (), ())

enum class account_errc : std::uint8_t {
  not_found = 1,      // no account was opened under this id
  already_exists,     // open on an account that exists
  invalid_amount,     // an amount <= 0
  insufficient_funds, // a withdrawal beyond the balance
  account_closed,     // a command on a closed account
  amount_overflow,    // the balance would leave the range of 64-bit cents
  invalid_owner,      // an empty owner name
  balance_not_zero,   // close with money left on the account
};
BOOST_DESCRIBE_ENUM(account_errc, not_found, already_exists, invalid_amount, insufficient_funds,
                    account_closed, amount_overflow, invalid_owner, balance_not_zero)
constexpr std::string_view error_category(account_errc) {
  return "bank";
}

enum class account_status : std::uint8_t { unopened, open, closed };
BOOST_DESCRIBE_ENUM(account_status, unopened, open, closed)

// The state folds events; replay calls the same functions.
struct account_state {
  static constexpr auto name = "bank.account_state";
  account_status status = account_status::unopened;
  std::string owner;
  std::int64_t balance = 0;

  void apply(const opened& e) {
    status = account_status::open;
    owner = e.owner;
  }
  void apply(const deposited& e) {
    balance += e.cents;
  }
  void apply(const withdrawn& e) {
    balance -= e.cents;
  }
  void apply(const closed&) {
    status = account_status::closed;
  }

  friend bool operator==(const account_state&, const account_state&) = default;
};
BOOST_DESCRIBE_STRUCT(account_state, (), (status, owner, balance))

class account : public annals::aggregate<account_state, opened, deposited, withdrawn, closed> {
public:
  annals::task<std::int64_t> handle(open cmd) {
    if (state().status != account_status::unopened)
      co_return account_errc::already_exists;
    if (cmd.owner.empty())
      co_return account_errc::invalid_owner;
    // Named first: GCC 12 destroys an aggregate temporary that owns memory twice when it
    // is created inside a co_await expression (docs/pitfalls.md).
    opened e{std::move(cmd.owner)};
    co_await persist(std::move(e));
    co_return state().balance;
  }

  annals::task<std::int64_t> handle(deposit cmd) {
    if (auto err = check_open())
      co_return err;
    if (cmd.cents <= 0)
      co_return account_errc::invalid_amount;
    if (cmd.cents > std::numeric_limits<std::int64_t>::max() - state().balance)
      co_return account_errc::amount_overflow;
    co_await persist(deposited{cmd.cents});
    co_return state().balance;
  }

  annals::task<std::int64_t> handle(withdraw cmd) {
    if (auto err = check_open())
      co_return err;
    if (cmd.cents <= 0)
      co_return account_errc::invalid_amount;
    if (cmd.cents > state().balance)
      co_return account_errc::insufficient_funds;
    co_await persist(withdrawn{cmd.cents});
    co_return state().balance;
  }

  annals::task<std::int64_t> handle(close) {
    if (auto err = check_open())
      co_return err;
    if (state().balance != 0)
      co_return account_errc::balance_not_zero;
    co_await persist(closed{});
    co_return state().balance;
  }

  caf::expected<std::int64_t> handle(get_balance) const {
    if (state().status == account_status::unopened)
      return annals::make_error(account_errc::not_found);
    return state().balance;
  }

private:
  caf::error check_open() const {
    switch (state().status) {
      case account_status::unopened:
        return annals::make_error(account_errc::not_found);
      case account_status::closed:
        return annals::make_error(account_errc::account_closed);
      default:
        return {};
    }
  }
};

} // namespace bank

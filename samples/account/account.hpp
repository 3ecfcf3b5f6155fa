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
struct get_account {};

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

/// What the account commands answer: the account as the command left it. `version` is the
/// sequence number of the account's newest event.
struct account_view {
  account_status status = account_status::unopened;
  std::string owner;
  std::int64_t balance = 0;
  std::uint64_t version = 0;

  friend bool operator==(const account_view&, const account_view&) = default;
};

class account : public annals::aggregate<account_state, opened, deposited, withdrawn, closed> {
public:
  // The aggregate type, given once: persistence ids are `account|<id>`.
  static constexpr auto name = "account";

  annals::task<account_view> handle(open cmd) {
    if (state().status != account_status::unopened)
      co_return annals::make_error(account_errc::already_exists,
                                   "the account was opened for " + state().owner);
    if (cmd.owner.empty())
      co_return annals::make_error(account_errc::invalid_owner, "the owner's name is empty");
    co_await persist<opened>(std::move(cmd.owner));
    co_return view();
  }

  annals::task<account_view> handle(deposit cmd) {
    if (auto err = check_open())
      co_return err;
    if (cmd.cents <= 0)
      co_return bad_amount(cmd.cents);
    if (cmd.cents > std::numeric_limits<std::int64_t>::max() - state().balance)
      co_return annals::make_error(account_errc::amount_overflow,
                                   "a deposit of " + std::to_string(cmd.cents)
                                     + " cents would overflow the balance");
    co_await persist(deposited{cmd.cents});
    co_return view();
  }

  annals::task<account_view> handle(withdraw cmd) {
    if (auto err = check_open())
      co_return err;
    if (cmd.cents <= 0)
      co_return bad_amount(cmd.cents);
    if (cmd.cents > state().balance)
      co_return annals::make_error(account_errc::insufficient_funds,
                                   "withdrawing " + std::to_string(cmd.cents)
                                     + " cents from a balance of "
                                     + std::to_string(state().balance));
    co_await persist(withdrawn{cmd.cents});
    co_return view();
  }

  annals::task<account_view> handle(close) {
    if (auto err = check_open())
      co_return err;
    if (state().balance != 0)
      co_return annals::make_error(account_errc::balance_not_zero,
                                   "the balance is " + std::to_string(state().balance) + " cents");
    co_await persist(closed{});
    co_return view();
  }

  caf::expected<std::int64_t> handle(get_balance) const {
    if (state().status == account_status::unopened)
      return annals::make_error(account_errc::not_found, "no account was opened under this id");
    return state().balance;
  }

  caf::expected<account_view> handle(get_account) const {
    if (state().status == account_status::unopened)
      return annals::make_error(account_errc::not_found, "no account was opened under this id");
    return view();
  }

private:
  account_view view() const {
    return {state().status, state().owner, state().balance, version()};
  }

  static caf::error bad_amount(std::int64_t cents) {
    return annals::make_error(account_errc::invalid_amount,
                              "amounts are positive cents, got " + std::to_string(cents));
  }

  caf::error check_open() const {
    switch (state().status) {
      case account_status::unopened:
        return annals::make_error(account_errc::not_found, "no account was opened under this id");
      case account_status::closed:
        return annals::make_error(account_errc::account_closed, "the account is closed");
      default:
        return {};
    }
  }
};

} // namespace bank

#pragma once

// The bank's public domain events: what other services (notifications, loyalty, fraud
// checks) may follow. They are translated from the account's internal events and versioned
// on their own, so the account's storage format can change without breaking consumers.
//
//   payments.AccountOpened   v1  {account, owner}                          from bank.opened
//   payments.AccountCredited v1  {account, amount, currency, occurred_at}  from bank.deposited
//   payments.AccountDebited  v1  {account, amount, currency, occurred_at}  from bank.withdrawn
//   payments.AccountClosed   v1  {account}                                 from bank.closed
//
// Amounts are whole cents; the currency is always "EUR" (the sample keeps one currency).
// Messages are keyed by account id: one account's messages arrive in log order.

#include <boost/json/object.hpp>

#include "account/account.hpp"
#include "annals/actors/public_events.hpp"

namespace bank {

/// The contract above; message ids are `bank:<journal offset>`.
inline annals::actors::public_contract public_contract() {
  using annals::actors::envelope;
  annals::actors::public_contract c{"bank"};
  c.map<account, opened>("payments.AccountOpened", 1, [](const opened& e, const envelope& env) {
    return boost::json::object{{"account", env.entity_id()}, {"owner", e.owner}};
  });
  c.map<account, deposited>(
    "payments.AccountCredited", 1, [](const deposited& e, const envelope& env) {
      return boost::json::object{{"account", env.entity_id()},
                                 {"amount", e.cents},
                                 {"currency", "EUR"},
                                 {"occurred_at", annals::actors::format_utc(env.timestamp_us())}};
    });
  c.map<account, withdrawn>(
    "payments.AccountDebited", 1, [](const withdrawn& e, const envelope& env) {
      return boost::json::object{{"account", env.entity_id()},
                                 {"amount", e.cents},
                                 {"currency", "EUR"},
                                 {"occurred_at", annals::actors::format_utc(env.timestamp_us())}};
    });
  c.map<account, closed>("payments.AccountClosed", 1, [](const closed&, const envelope& env) {
    return boost::json::object{{"account", env.entity_id()}};
  });
  return c;
}

} // namespace bank

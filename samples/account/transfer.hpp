#pragma once

// Transfers between two accounts as a process manager that is itself event-sourced.
//
// A transfer records what it decided and what it did as events: requested, debited,
// credited (completed), or refunded / failed (compensated). Each step it asks an account
// to take carries an idempotency key derived from the transfer's id, so a transfer that
// a crash interrupted can simply run its remaining steps again after the restart: a step
// that already happened returns its first reply and moves no money twice. Money is never
// created or destroyed: a credit that the target refuses is undone by a refund.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/describe.hpp>

#include "account/account.hpp"
#include "annals/actors/ask.hpp"
#include "annals/aggregate.hpp"
#include "annals/persistence_id.hpp"

namespace bank {

enum class transfer_status : std::uint8_t { none, pending, completed, compensated };
BOOST_DESCRIBE_ENUM(transfer_status, none, pending, completed, compensated)

// Commands.
struct start_transfer {
  std::string id; // the transfer's own id: it keys the steps' idempotency
  std::string from;
  std::string to;
  std::int64_t cents;
};
struct resume_transfer {};
struct get_transfer {};
struct get_transfer_state {};

// Events.
struct transfer_requested {
  static constexpr auto name = "bank.transfer_requested";
  std::string id;
  std::string from;
  std::string to;
  std::int64_t cents;
};
struct transfer_debited {
  static constexpr auto name = "bank.transfer_debited";
};
struct transfer_credited {
  static constexpr auto name = "bank.transfer_credited";
};
struct transfer_refunded {
  static constexpr auto name = "bank.transfer_refunded";
  std::string reason; // why the credit was refused
};
struct transfer_failed {
  static constexpr auto name = "bank.transfer_failed";
  std::string reason; // why the debit was refused; no money moved
};
BOOST_DESCRIBE_STRUCT(transfer_requested, (), (id, from, to, cents))
BOOST_DESCRIBE_STRUCT(transfer_debited, (), ())
BOOST_DESCRIBE_STRUCT(transfer_credited, (), ())
BOOST_DESCRIBE_STRUCT(transfer_refunded, (), (reason))
BOOST_DESCRIBE_STRUCT(transfer_failed, (), (reason))

enum class transfer_errc : std::uint8_t {
  not_found = 1,    // no transfer under this id
  already_exists,   // start on a transfer that exists
  invalid_transfer, // same account twice, empty ids, amount <= 0
};
BOOST_DESCRIBE_ENUM(transfer_errc, not_found, already_exists, invalid_transfer)
constexpr std::string_view error_category(transfer_errc) {
  return "transfer";
}

struct transfer_state {
  static constexpr auto name = "bank.transfer_state";
  transfer_status status = transfer_status::none;
  std::string id;
  std::string from;
  std::string to;
  std::int64_t cents = 0;
  bool debited = false;
  std::string reason;

  void apply(const transfer_requested& e) {
    status = transfer_status::pending;
    id = e.id;
    from = e.from;
    to = e.to;
    cents = e.cents;
  }
  void apply(const transfer_debited&) {
    debited = true;
  }
  void apply(const transfer_credited&) {
    status = transfer_status::completed;
  }
  void apply(const transfer_refunded& e) {
    status = transfer_status::compensated;
    reason = e.reason;
  }
  void apply(const transfer_failed& e) {
    status = transfer_status::compensated;
    reason = e.reason;
  }
  friend bool operator==(const transfer_state&, const transfer_state&) = default;
};
BOOST_DESCRIBE_STRUCT(transfer_state, (), (status, id, from, to, cents, debited, reason))

class transfer : public annals::aggregate<transfer_state, transfer_requested, transfer_debited,
                                          transfer_credited, transfer_refunded, transfer_failed> {
public:
  /// The aggregate type: persistence ids are `transfer|<transfer id>`.
  static constexpr auto name = "transfer";

  /// How long one step waits for an account.
  static constexpr std::chrono::milliseconds step_timeout{5000};

  transfer() = default;
  explicit transfer(annals::actors::host* bank) : bank_(bank) {}

  /// Starting a transfer that exists with the same accounts and amount is a retry: it
  /// runs the remaining steps, if any, and answers the status (the transfer's id is its
  /// idempotency key). The same id with other parameters is `already_exists`.
  annals::task<transfer_status> handle(start_transfer cmd) {
    if (state().status != transfer_status::none) {
      if (cmd.from != state().from || cmd.to != state().to || cmd.cents != state().cents)
        co_return annals::make_error(transfer_errc::already_exists,
                                     "transfer " + state().id
                                       + " exists with other accounts or another amount");
      co_return co_await run_steps();
    }
    if (cmd.id.empty() || cmd.from.empty() || cmd.to.empty() || cmd.from == cmd.to
        || cmd.cents <= 0)
      co_return transfer_errc::invalid_transfer;
    transfer_requested e{std::move(cmd.id), std::move(cmd.from), std::move(cmd.to), cmd.cents};
    co_await persist(e);
    co_return co_await run_steps();
  }

  /// Runs the remaining steps of a pending transfer (after a restart, or after a step
  /// failed for a reason other than the accounts' refusal); harmless on a finished one.
  annals::task<transfer_status> handle(resume_transfer) {
    if (state().status == transfer_status::none)
      co_return transfer_errc::not_found;
    co_return co_await run_steps();
  }

  caf::expected<transfer_status> handle(get_transfer) const {
    if (state().status == transfer_status::none)
      return annals::make_error(transfer_errc::not_found);
    return state().status;
  }

  caf::expected<transfer_state> handle(get_transfer_state) const {
    if (state().status == transfer_status::none)
      return annals::make_error(transfer_errc::not_found);
    return state();
  }

private:
  // The steps not yet recorded. An error that is not the accounts' business refusal (a
  // timeout, a journal failure) leaves the transfer pending; running the steps again is
  // safe because each step's idempotency key is fixed by the transfer's id.
  annals::task<transfer_status> run_steps() {
    if (state().status != transfer_status::pending)
      co_return state().status;
    if (!state().debited) {
      auto taken = co_await ask(state().from, withdraw{state().cents}, "debit");
      if (!taken) {
        if (!refused_by_account(taken.error()))
          co_return taken.error();
        transfer_failed e{annals::code_name(taken.error())};
        co_await persist(e);
        co_return state().status;
      }
      co_await persist(transfer_debited{});
    }
    auto given = co_await ask(state().to, deposit{state().cents}, "credit");
    if (given) {
      co_await persist(transfer_credited{});
      co_return state().status;
    }
    if (!refused_by_account(given.error()))
      co_return given.error();
    auto refunded = co_await ask(state().from, deposit{state().cents}, "refund");
    if (!refunded)
      co_return refunded.error(); // stays pending: the refund is retried on resume
    transfer_refunded e{annals::code_name(given.error())};
    co_await persist(e);
    co_return state().status;
  }

  template <class C>
  annals::actors::ask_awaiter<account, C> ask(const std::string& account_id, C cmd,
                                              std::string_view step) {
    auto key = "transfer:" + state().id + ":" + std::string{step};
    auto correlation = "transfer:" + state().id;
    return annals::actors::ask<account>(
      *bank_, account_id, std::move(cmd),
      {.timeout = step_timeout, .idempotency_key = key, .correlation_id = correlation});
  }

  static bool refused_by_account(const caf::error& err) {
    return err.category() == caf::atom("bank");
  }

  annals::actors::host* bank_ = nullptr;
};

} // namespace bank

#include "annals/persistence/blocking.hpp"

namespace bank {

/// Finds the transfers that a stop interrupted (status pending) and runs their remaining
/// steps; returns how many it resumed, or the first error. For start-up code (it waits).
inline caf::expected<std::size_t> resume_pending_transfers(annals::actors::host& h,
                                                           annals::persistence::journal& j) {
  using namespace std::chrono_literals;
  namespace ap = annals::persistence;
  const std::string prefix = annals::persistence_id::prefix_of(transfer::name);
  std::size_t resumed = 0;
  std::string after = prefix;
  for (;;) {
    auto page = ap::wait_for<std::vector<std::string>>(
      [&](ap::callback<std::vector<std::string>> cb) { j.persistence_ids(after, 500, cb); }, 30s);
    if (!page)
      return std::move(page.error());
    for (const auto& pid : *page) {
      if (pid.compare(0, prefix.size(), prefix) != 0)
        return resumed;
      auto id = std::string{annals::persistence_id::entity_of(pid)};
      auto st = h.ask<transfer>(id, get_transfer{});
      if (st && *st == transfer_status::pending) {
        (void)h.ask<transfer>(id, resume_transfer{}, {.timeout = 60s});
        ++resumed;
      }
    }
    if (page->size() < 500)
      return resumed;
    after = page->back();
  }
}

} // namespace bank

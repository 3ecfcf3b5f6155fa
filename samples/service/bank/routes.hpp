#pragma once

// The bank service's routes, one function per resource; each adds its routes to
// `ctx.routes`. They are added in this order, which is the order of the methods an Allow
// header lists.

#include "service/bank/context.hpp"

namespace service {

/// /accounts, /accounts/{id}[/deposit|/withdraw|/close|/events|/state|/statement], /search.
void add_account_routes(bank_context& ctx);

/// /transfers, /transfers/{id}[/events].
void add_transfer_routes(bank_context& ctx);

/// /matches, /matches/{id}[/kick-off|/goals|/cards|/substitutions|/half-time|/second-half|
/// /full-time|/events|/state], /scorers.
void add_match_routes(bank_context& ctx);

/// /feed, /feed/contract: the public messages of bank::public_contract.
void add_feed_routes(bank_context& ctx);

/// /health, /metrics.
void add_operation_routes(bank_context& ctx);

} // namespace service

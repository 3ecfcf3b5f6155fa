#pragma once

// The football read models in Redis, for annals-bank started with --redis: the scoreboard
// and top-scorer projections write Redis exactly once (match/redis_projections.hpp), and
// the match routes read them there.

#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/error.hpp>

#include "annals/actors/projection.hpp"
#include "service/bank/context.hpp"

namespace service {

/// Connects the routes' reader to Redis at `ctx.opts.redis` (fails with
/// `projection.read_model_failed` naming the server when it does not answer), starts the
/// `scoreboard` and `scorers` projections into it (appended to `ctx.projections`), and
/// points `ctx.read_board` and `ctx.read_scorers` at Redis.
caf::error start_redis_match_models(bank_context& ctx);

} // namespace service

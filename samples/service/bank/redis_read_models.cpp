#include "service/bank/redis_read_models.hpp"

#include <memory>
#include <utility>

#include "annals/actors/redis_projection.hpp"
#include "annals/error.hpp"
#include "match/redis_projections.hpp"
#include "service/bank/errors.hpp"

namespace service {

namespace aa = annals::actors;

caf::error start_redis_match_models(bank_context& ctx) {
  const auto& url = ctx.opts.redis;
  auto reader = std::make_shared<match::redis_match_reader>(url, "scoreboard:", "scorers:");
  // The first read connects: a server that does not answer stops the start.
  if (auto probe = reader->top(1); !probe)
    return std::move(probe.error());
  auto matches = aa::event_filter::aggregate_type<match::football_match>();
  ctx.projections.push_back(aa::spawn_projection(
    ctx.sys, ctx.journal, std::make_shared<match::redis_scoreboard>(),
    aa::redis_projection_options{
      .name = "scoreboard", .url = url, .key_prefix = "scoreboard:", .filter = matches}));
  ctx.projections.push_back(aa::spawn_projection(
    ctx.sys, ctx.journal, std::make_shared<match::redis_top_scorers>(),
    aa::redis_projection_options{
      .name = "scorers", .url = url, .key_prefix = "scorers:", .filter = matches}));
  ctx.read_board = [reader] {
    auto b = reader->board();
    if (!b)
      throw api_error{503, "read_model_unavailable", annals::render(b.error())};
    return std::move(*b);
  };
  ctx.read_scorers = [reader](std::size_t n) {
    auto t = reader->top(n);
    if (!t)
      throw api_error{503, "read_model_unavailable", annals::render(t.error())};
    return std::move(*t);
  };
  return {};
}

} // namespace service

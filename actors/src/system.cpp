#include "annals/actors/system.hpp"

#include <algorithm>
#include <thread>

#include <caf/atom.hpp>

#include "annals/actors/projection.hpp"
#include "annals/error.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::actors {

void configure(caf::actor_system_config& cfg) {
  auto cores = std::max(1u, std::thread::hardware_concurrency());
  cfg.set("scheduler.max-threads", static_cast<std::size_t>(cores));
  // Touch the categories so that their code names are registered before first use.
  (void)make_error(errc::handler_failed);
  (void)make_error(persistence::journal_errc::conflict);
  (void)make_error(projection_errc::handler_failed);
  // Every category the program uses, its own included, renders in CAF's messages.
  annals::add_error_renderers(cfg);
}

} // namespace annals::actors

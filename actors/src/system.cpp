#include "annals/actors/system.hpp"

#include <algorithm>
#include <thread>

#include <caf/atom.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "annals/actors/detail/host_link.hpp"
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

namespace {

// Runs `configure` before the base class sees the config.
caf::actor_system_config& configured(caf::actor_system_config& cfg) {
  configure(cfg);
  return cfg;
}

} // namespace

actor_system::actor_system() : caf::actor_system(configured(own_cfg)) {}

actor_system::actor_system(caf::actor_system_config& cfg) : caf::actor_system(configured(cfg)) {}

actor_system::~actor_system() {
  // Runs before ~caf::actor_system, which waits for every actor: the hosts that are still
  // alive would otherwise keep it waiting forever, and destroying them afterwards would
  // send to a system that is gone.
  std::vector<std::shared_ptr<detail::host_link>> alive;
  {
    std::lock_guard guard{mtx_};
    for (auto& weak : hosts_)
      if (auto link = weak.lock())
        alive.push_back(std::move(link));
    hosts_.clear();
  }
  for (auto& link : alive) {
    link->system_gone = true;
    caf::anon_send_exit(link->registry, caf::exit_reason::user_shutdown);
    link->registry = nullptr;
  }
}

void actor_system::attach(std::shared_ptr<detail::host_link> link) {
  std::lock_guard guard{mtx_};
  std::erase_if(hosts_, [](const auto& weak) { return weak.expired(); });
  hosts_.push_back(std::move(link));
}

} // namespace annals::actors

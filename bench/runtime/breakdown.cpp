// Where the time goes: the same closed loop over 10,000 targets with one more piece each
// step: plain CAF request/response, with a request timeout, the runtime without persist,
// persist into a memory journal; CPU, kernel CPU, CAF timer-thread CPU and heap
// allocations per command.

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "annals/persistence/memory_journal.hpp"

#include "drive.hpp"
#include "runtime.hpp"

namespace annals::bench::runtime {

namespace {

step_figures make_step(std::string name, std::size_t n, double seconds, const cpu_times& cpu) {
  auto dn = static_cast<double>(n);
  return {std::move(name),    dn / seconds,         cpu.total() * 1e6 / dn,
          cpu.sys * 1e6 / dn, cpu.clock * 1e6 / dn, static_cast<double>(cpu.allocations) / dn};
}

/// Plain CAF: one driver actor, request/response to `targets` echo actors.
step_figures caf_floor(caf::actor_system& sys, std::size_t targets, std::size_t n,
                       std::size_t in_flight, bool with_timeout) {
  auto baseline = sys.registry().running();
  std::vector<caf::actor> echo;
  echo.reserve(targets);
  for (std::size_t k = 0; k < targets; ++k)
    echo.push_back(sys.spawn([]() -> caf::behavior { return {[](std::int64_t x) { return x; }}; }));
  struct driver {
    std::vector<caf::actor>* echo;
    std::size_t n;
    bool with_timeout;
    std::size_t next = 0;
    std::size_t completed = 0;
    clock_type::time_point begin;
    double seconds = 0;
    std::promise<void> finished;

    void submit(caf::event_based_actor* self) {
      auto i = next++;
      auto on_reply = [this, self](std::int64_t) { done(self); };
      auto on_error = [this, self](caf::error&) { done(self); };
      const auto& dest = (*echo)[i % echo->size()];
      if (with_timeout)
        self->request(dest, caf::duration{std::chrono::seconds{60}}, std::int64_t{1})
          .then(on_reply, on_error);
      else
        self->request(dest, caf::infinite, std::int64_t{1}).then(on_reply, on_error);
    }

    void done(caf::event_based_actor* self) {
      if (next < n)
        submit(self);
      if (++completed == n) {
        seconds = ms_between(begin, clock_type::now()) / 1000.0;
        finished.set_value();
        self->quit();
      }
    }
  };
  driver d{&echo, n, with_timeout};
  auto fut = d.finished.get_future();
  auto cpu_before = cpu_now();
  sys.spawn([&d, in_flight](caf::event_based_actor* self) -> caf::behavior {
    d.begin = clock_type::now();
    while (d.next < std::min(in_flight, d.n))
      d.submit(self);
    return {[](caf::ok_atom) {}};
  });
  fut.wait();
  auto cpu = cpu_now() - cpu_before;
  for (auto& a : echo)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  echo.clear();
  await_actors(sys, baseline);
  return make_step(with_timeout ? "CAF request/response, 60 s request timeout"
                                : "CAF request/response, no timeout",
                   n, d.seconds, cpu);
}

/// The runtime on 10,000 open accounts: `get_balance` (no persist), then deposits on a
/// memory journal (persist without I/O).
std::vector<step_figures> runtime_steps(caf::actor_system& sys, std::size_t n,
                                        std::size_t in_flight) {
  std::vector<step_figures> out;
  workload w{10'000, n};
  auto baseline = sys.registry().running();
  auto j = std::make_shared<memory_journal>();
  {
    host h{sys, j};
    if (auto err = h.register_aggregate<bank::account>())
      die(annals::render(err));
    auto opened = drive(sys, h, w.ids, w.ids.size(), in_flight,
                        [&w](std::size_t i) { return bank::open{w.owners[i]}; });
    if (opened.failed > 0)
      die("opening accounts: " + annals::render(opened.first_error));
    auto cpu_before = cpu_now();
    auto res = drive(sys, h, w.ids, n, in_flight, [](std::size_t) { return bank::get_balance{}; });
    out.push_back(make_step("runtime get_balance (registry, actor, reply; no persist)", n,
                            res.seconds, cpu_now() - cpu_before));
    cpu_before = cpu_now();
    res =
      drive(sys, h, w.ids, n, in_flight, [&w](std::size_t i) { return bank::deposit{w.cents[i]}; });
    out.push_back(make_step("runtime deposit, memory journal (persist without I/O)", n, res.seconds,
                            cpu_now() - cpu_before));
  }
  await_actors(sys, baseline);
  return out;
}

} // namespace

std::vector<step_figures> run_breakdown(caf::actor_system& sys, std::size_t n,
                                        std::size_t in_flight, const command_figures* big) {
  std::vector<step_figures> out;
  out.push_back(caf_floor(sys, 10'000, n, in_flight, false));
  out.push_back(caf_floor(sys, 10'000, n, in_flight, true));
  for (auto& step : runtime_steps(sys, n, in_flight))
    out.push_back(std::move(step));
  if (big != nullptr) {
    out.push_back(make_step("runtime deposit, SQLite journal (the case above)", big->commands,
                            big->seconds, big->cpu));
    out.push_back(make_step("raw SQLite journal appends (the case above)", big->commands,
                            big->raw_seconds, big->raw_cpu));
  }
  return out;
}

} // namespace annals::bench::runtime

#pragma once

// The closed loop that drives the runtime: one driver actor keeps a number of commands
// outstanding on a host and records each command's latency.

#include <future>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>

#include "account/account.hpp"
#include "annals/actors/host.hpp"

#include "runtime.hpp"

namespace annals::bench::runtime {

using annals::actors::host;

struct drive_result {
  std::vector<double> latency_ms;
  double seconds = 0;
  std::uint64_t failed = 0;
  caf::error first_error;
};

/// Sends `n` commands (`make(i)` to `ids[i % ids.size()]`) from one driver actor that keeps
/// `in_flight` of them outstanding, and waits until every reply is in.
template <class MakeCommand>
drive_result drive(caf::actor_system& sys, host& h, const std::vector<std::string>& ids,
                   std::size_t n, std::size_t in_flight, MakeCommand make) {
  struct driver {
    host* h;
    const std::vector<std::string>* ids;
    MakeCommand make;
    std::size_t n;
    std::vector<clock_type::time_point> started;
    drive_result out;
    std::size_t next = 0;
    std::size_t completed = 0;
    clock_type::time_point begin;
    std::promise<void> finished;

    void submit(caf::event_based_actor* self) {
      auto i = next++;
      started[i] = clock_type::now();
      h->request<bank::account>(self, (*ids)[i % ids->size()], make(i),
                                [this, self, i](auto res) {
                                  out.latency_ms[i] = ms_between(started[i], clock_type::now());
                                  if (!res) {
                                    if (out.failed++ == 0)
                                      out.first_error = res.error();
                                  }
                                  if (next < n)
                                    submit(self);
                                  if (++completed == n) {
                                    out.seconds = ms_between(begin, clock_type::now()) / 1000.0;
                                    finished.set_value();
                                    self->quit();
                                  }
                                },
                                {.timeout = std::chrono::seconds{60}});
    }
  };
  driver d{&h, &ids, std::move(make), n, std::vector<clock_type::time_point>(n), {}};
  d.out.latency_ms.resize(n);
  auto done = d.finished.get_future();
  sys.spawn([&d, in_flight](caf::event_based_actor* self) -> caf::behavior {
    d.begin = clock_type::now();
    while (d.next < std::min(in_flight, d.n))
      d.submit(self);
    return {[](caf::ok_atom) {}};
  });
  done.wait();
  return std::move(d.out);
}

} // namespace annals::bench::runtime

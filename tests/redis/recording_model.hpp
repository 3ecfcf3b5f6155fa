#pragma once

// The model the Redis projection tests fold: for every event, its offset appended to the
// list `log` and added to the counter `sum`. A second application of an event shows as a
// repeated offset in `log`, a missing one as a gap; the fold of the events 1..n is
// `log` = [1, 2, ..., n] and `sum` = n(n+1)/2. Throws on the persistence id `poison`.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "annals/actors/redis_projection.hpp"

namespace annals::persistence::test {

class recording_model : public actors::redis_projection_handler {
public:
  void apply(actors::redis_batch& b, const event_record& rec) override {
    if (rec.persistence_id == "poison")
      throw std::runtime_error{"poisoned event"};
    auto offset = std::to_string(rec.offset);
    b.command({"RPUSH", b.key("log"), offset});
    b.command({"INCRBY", b.key("sum"), offset});
  }
};

/// The recorded model and its offset, read in one transaction.
struct recorded {
  std::uint64_t offset = 0;
  std::vector<std::uint64_t> log;
  std::uint64_t sum = 0;
};

/// Reads the model of projection prefix `prefix` through `c`; throws on a failure.
inline recorded read_recorded(actors::redis_client& c, const std::string& prefix) {
  auto r = c.transaction({{"GET", actors::redis_offset_key(prefix)},
                          {"LRANGE", prefix + "log", "0", "-1"},
                          {"GET", prefix + "sum"}});
  if (!r)
    throw std::runtime_error{"cannot read the model: " + render(r.error())};
  recorded out;
  out.offset = actors::redis_offset_of((*r)[0]);
  for (const auto& v : (*r)[1].elements)
    out.log.push_back(std::stoull(v.text));
  out.sum = actors::redis_offset_of((*r)[2]);
  return out;
}

/// The offsets 1..n.
inline std::vector<std::uint64_t> one_to(std::uint64_t n) {
  std::vector<std::uint64_t> v;
  for (std::uint64_t i = 1; i <= n; ++i)
    v.push_back(i);
  return v;
}

} // namespace annals::persistence::test

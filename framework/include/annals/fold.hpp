#pragma once

/// @file
/// `annals::fold_events`: the one replay path. Recovery, the recompute of a duplicate
/// command's reply, `persistence::replay_state` and the testkit's `restart` all rebuild a
/// state with it, so they decode and apply stored events the same way.
///
/// ```cpp
/// bank::account_state st;
/// auto out = annals::fold_events<bank::account>(st, page);  // page: stored records
/// if (out.error)  // the codec's error; out.seq names the record that did not decode
///   return out.error;
/// ```

#include <cstddef>
#include <cstdint>
#include <utility>
#include <variant>

#include <caf/error.hpp>

#include "annals/aggregate.hpp"

namespace annals {

/// How far `fold_events` got.
struct fold_result {
  std::size_t folded = 0; ///< records applied, from the first
  caf::error error;       ///< why the next record did not decode (empty if all did)
  std::uint64_t seq = 0;  ///< the sequence number of that record (0 if none failed)
};

/// Decodes each record of `records` with `A`'s codec and applies it to `state` with the
/// same `apply` functions a live persist calls, in order. Stops at the first record that
/// does not decode and returns the codec's error with that record's `seq`. A record is
/// anything with `seq`, `name`, `version` and `payload` members (a journal's
/// `event_record`, the testkit's stored events).
template <aggregate_type A, class Records>
fold_result fold_events(typename A::state_type& state, const Records& records) {
  fold_result out;
  for (const auto& rec : records) {
    auto ev = A::codec_type::decode(rec.name, rec.version, rec.payload);
    if (!ev) {
      out.error = std::move(ev.error());
      out.seq = rec.seq;
      return out;
    }
    std::visit([&state](const auto& e) { state.apply(e); }, *ev);
    ++out.folded;
  }
  return out;
}

} // namespace annals

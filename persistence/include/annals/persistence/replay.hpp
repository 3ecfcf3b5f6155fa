#pragma once

/// @file
/// Rebuilding an aggregate's state at any point of its history, by replay (time travel).
///
/// The journal keeps every event, so the state an aggregate had just after its event `n`
/// is the fold of its events 1..n. `replay_state` reads them in pages and folds them with
/// the aggregate's own codec and `apply` functions, exactly as recovery does:
///
/// ```cpp
/// auto past = annals::persistence::replay_state<bank::account>(journal, "account|acc-1", 3);
/// if (past)  // past->state is the account just after its third event; past->version == 3
///   std::cout << past->state.balance << '\n';
/// ```
///
/// It blocks the calling thread (see `wait_for`): for tools, tests and worker threads.

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "annals/error.hpp"
#include "annals/fold.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/decode.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::persistence {

/// A state rebuilt by replay, and the sequence number of the last event folded into it.
template <class State>
struct replayed {
  State state{};
  std::uint64_t version = 0;
  std::int64_t timestamp_us = 0; ///< commit time of that last event (0 if none)
};

/// Folds events 1..`up_to_seq` of `persistence_id` into a fresh `A::state_type`.
///
/// Fails with `errc::invalid_argument` if the stream holds fewer than `up_to_seq` events
/// (when `up_to_seq` is not the default "all"), with `corrupt_event` for the first event
/// that does not decode (`journal.corrupt_row` naming the persistence id and seq), or with
/// the journal's error. Each page read waits at
/// most `page_bound`.
template <class A>
caf::expected<replayed<typename A::state_type>>
replay_state(journal& j, std::string_view persistence_id,
             std::uint64_t up_to_seq = std::numeric_limits<std::uint64_t>::max(),
             std::size_t page = 1024,
             std::chrono::milliseconds page_bound = std::chrono::seconds{30}) {
  replayed<typename A::state_type> out;
  std::string pid{persistence_id};
  for (;;) {
    auto from = out.version + 1;
    auto rows = wait_for<std::vector<event_record>>(
      [&](callback<std::vector<event_record>> cb) {
        j.read_stream(pid, from, up_to_seq, page, std::move(cb));
      },
      page_bound);
    if (!rows)
      return std::move(rows.error());
    auto folded = fold_events<A>(out.state, *rows);
    if (folded.folded > 0) {
      out.version = (*rows)[folded.folded - 1].seq;
      out.timestamp_us = (*rows)[folded.folded - 1].timestamp_us;
    }
    if (folded.error)
      return corrupt_event(pid, folded.seq, folded.error);
    if (rows->size() < page || out.version >= up_to_seq)
      break;
  }
  if (up_to_seq != std::numeric_limits<std::uint64_t>::max() && out.version < up_to_seq)
    return make_error(errc::invalid_argument, pid + " has " + std::to_string(out.version)
                                                + " events; there is no event "
                                                + std::to_string(up_to_seq));
  return out;
}

} // namespace annals::persistence

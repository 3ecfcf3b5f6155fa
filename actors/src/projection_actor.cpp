#include "internal/projection_actor.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <span>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/spawn_options.hpp>
#include <caf/stateful_actor.hpp>

#include "annals/actors/projection.hpp"

namespace annals::actors {
namespace internal {

using persistence::event_record;

// -- messages from journal callbacks to the actor -----------------------------------------

struct live_batch {
  std::vector<event_record> records;
};

struct page_result {
  std::uint64_t generation = 0;
  std::uint64_t from = 0;
  caf::expected<std::vector<event_record>> records{std::vector<event_record>{}};
};

struct head_result {
  std::uint64_t query = 0;
  caf::expected<std::uint64_t> head{std::uint64_t{0}};
};

struct waiter_expired {
  std::uint64_t id = 0;
};

/// Sent instead of live batches while the projection's queue of them is full.
struct live_overflow {};

/// The projection's own timer on a journal with gaps between offsets: a read from the
/// journal at least this often, so that a commit notice lost with a broken connection
/// (a networked journal's subscription) delays the projection but never stalls it.
struct poll_tick {};

/// Reads again after a read failed with `journal_errc::unavailable` (a networked journal
/// between leaders, or reconnecting): the projection keeps its place and retries, with a
/// delay that doubles from `min_retry` up to `max_retry`, instead of failing.
struct retry_read {
  std::uint64_t generation = 0;
};
constexpr std::chrono::milliseconds min_retry{100};
constexpr std::chrono::milliseconds max_retry{2000};
constexpr std::chrono::milliseconds poll_interval{1000};

/// Bounds the live batches waiting in a projection's mailbox. Shared by the commit listener
/// (journal thread) and the actor; a full queue makes the listener drop batches and post
/// one `live_overflow`, after which the actor reads the dropped range from the journal.
struct live_flow {
  explicit live_flow(std::size_t max) : limit(std::max<std::size_t>(max, 1)) {}
  const std::size_t limit;
  std::atomic<std::size_t> queued{0};
  std::atomic<std::uint64_t> dropped_head{0};
  std::atomic<bool> overflow_posted{false};
  std::atomic<std::uint64_t> dropped_batches{0};
};

} // namespace internal
} // namespace annals::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::live_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::page_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::head_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::waiter_expired)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::live_overflow)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::poll_tick)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::retry_read)

namespace annals::actors {
namespace internal {

// -- the actor ----------------------------------------------------------------------------

struct projection_actor_state {
  projection_setup setup;
  std::uint64_t next = 1; // one past the last offset processed (the next one, if gapless)
  bool gapless = true;    // the journal's offsets have no gaps (journal::gapless_offsets)
  bool ticking = false;   // a poll_tick is on its way (only without gapless offsets)
  std::chrono::milliseconds retry_delay{0}; // after an unavailable journal; 0: none failed
  std::uint64_t live_head = 0;              // highest offset seen on the live stream
  std::uint64_t generation = 0; // bumped by rebuild and failure: stale pages are dropped
  bool opened = false;          // the sink has loaded its offset
  std::optional<std::uint64_t> subscription;
  std::shared_ptr<live_flow> flow;
  std::uint64_t applied = 0;
  projection_state state = projection_state::catching_up;
  caf::error error;
  std::uint64_t next_id = 1;
  std::map<std::uint64_t, caf::response_promise> status_queries;
  struct waiter {
    std::uint64_t offset;
    caf::response_promise promise;
  };
  std::map<std::uint64_t, waiter> waiters;

  ~projection_actor_state() {
    if (subscription)
      setup.journal->unsubscribe(*subscription);
  }

  static inline const char* name = "annals.projection";
};

using projection_actor = caf::stateful_actor<projection_actor_state>;

void subscribe(projection_actor* self) {
  auto& st = self->state;
  if (st.subscription)
    return;
  // The listener runs on the journal's thread: it only posts a copy of the batch (or, with
  // a full queue, one overflow notice), through a weak handle so that it neither blocks nor
  // keeps a stopped projection alive.
  st.subscription = st.setup.journal->subscribe(
    [addr = self->address(), flow = st.flow](const std::vector<event_record>& batch) {
      if (batch.empty())
        return;
      auto hdl = caf::actor_cast<caf::actor>(addr);
      if (!hdl)
        return;
      if (flow->queued.load() < flow->limit) {
        flow->queued.fetch_add(1);
        caf::anon_send(hdl, live_batch{batch});
        return;
      }
      flow->dropped_batches.fetch_add(1);
      auto last = batch.back().offset;
      auto cur = flow->dropped_head.load();
      while (cur < last && !flow->dropped_head.compare_exchange_weak(cur, last)) {
      }
      if (!flow->overflow_posted.exchange(true))
        caf::anon_send(hdl, live_overflow{});
    });
}

void unsubscribe(projection_actor* self) {
  auto& st = self->state;
  if (st.subscription) {
    st.setup.journal->unsubscribe(*st.subscription);
    st.subscription.reset();
  }
}

void reply_status(projection_actor* self, caf::response_promise rp) {
  auto& st = self->state;
  auto id = st.next_id++;
  st.status_queries.emplace(id, std::move(rp));
  st.setup.journal->head_offset([addr = self->address(), id](caf::expected<std::uint64_t> h) {
    if (auto hdl = caf::actor_cast<caf::actor>(addr))
      caf::anon_send(hdl, head_result{id, std::move(h)});
  });
}

void fail(projection_actor* self, caf::error err) {
  auto& st = self->state;
  st.state = projection_state::failed;
  st.error = std::move(err);
  ++st.generation;
  unsubscribe(self);
  for (auto& [id, w] : st.waiters)
    w.promise.deliver(st.error);
  st.waiters.clear();
}

void request_page(projection_actor* self) {
  auto& st = self->state;
  st.state = projection_state::catching_up;
  st.setup.journal->read_all(st.next, st.setup.page_size,
                             [addr = self->address(), gen = st.generation,
                              from = st.next](caf::expected<std::vector<event_record>> res) {
                               if (auto hdl = caf::actor_cast<caf::actor>(addr))
                                 caf::anon_send(hdl, page_result{gen, from, std::move(res)});
                             });
}

/// Applies `batch`, which starts at `st.next` with contiguous offsets.
void apply_batch(projection_actor* self, std::span<const event_record> batch) {
  auto& st = self->state;
  if (batch.empty())
    return;
  auto out = st.setup.out->apply(batch, st.next - 1);
  st.next = out.last_good + 1;
  st.applied += out.applied;
  if (out.err) {
    fail(self, std::move(out.err));
    return;
  }
  auto done = st.next - 1;
  for (auto i = st.waiters.begin(); i != st.waiters.end();) {
    if (i->second.offset <= done) {
      reply_status(self, std::move(i->second.promise));
      i = st.waiters.erase(i);
    } else {
      ++i;
    }
  }
}

/// The length of the prefix of `batch` that follows on from `first` with nothing missing:
/// offsets `first, first + 1, ...` on a gapless journal; on any other, offsets from `first`
/// on that only increase (a read from `first` returns every event in between).
std::size_t contiguous_prefix(std::span<const event_record> batch, std::uint64_t first,
                              bool gapless) {
  std::size_t n = 0;
  if (gapless) {
    while (n < batch.size() && batch[n].offset == first + n)
      ++n;
    return n;
  }
  auto floor = first;
  while (n < batch.size() && batch[n].offset >= floor)
    floor = batch[n++].offset + 1;
  return n;
}

/// Starts the poll timer on a journal with gaps between offsets, unless it runs already or
/// the projection failed (a rebuild starts it again).
void arm_poll(projection_actor* self) {
  auto& st = self->state;
  if (st.gapless || st.ticking || st.state == projection_state::failed)
    return;
  st.ticking = true;
  self->delayed_send(self, poll_interval, poll_tick{});
}

caf::behavior projection_behavior(projection_actor* self, projection_setup setup) {
  self->state.setup = std::move(setup);
  self->state.flow = std::make_shared<live_flow>(self->state.setup.max_queued_batches);
  self->state.gapless = self->state.setup.journal->gapless_offsets();
  arm_poll(self);
  // Subscribe before the first read: every commit after this point arrives live, every
  // commit before it is found by the catch-up reads, so nothing falls between the two.
  subscribe(self);
  // The behaviour function runs on the actor's own thread before any message, so the
  // (possibly blocking) open never races with a request.
  if (auto stored = self->state.setup.out->open(); !stored) {
    fail(self, std::move(stored.error()));
  } else {
    self->state.opened = true;
    self->state.next = *stored + 1;
    request_page(self);
  }
  return {
    [self](live_overflow) {
      auto& st = self->state;
      // Clear the flag before reading the head: a batch dropped after this load posts a
      // new notice, one dropped before it is covered by the value read here.
      st.flow->overflow_posted.store(false);
      st.live_head = std::max(st.live_head, st.flow->dropped_head.load());
      if (st.state == projection_state::running && st.next <= st.live_head)
        request_page(self);
    },
    [self](retry_read& r) {
      auto& st = self->state;
      if (r.generation == st.generation && st.state == projection_state::catching_up)
        request_page(self);
    },
    [self](poll_tick) {
      auto& st = self->state;
      st.ticking = false;
      if (st.state == projection_state::running)
        request_page(self);
      arm_poll(self);
    },
    [self](live_batch& batch) {
      auto& st = self->state;
      st.flow->queued.fetch_sub(1);
      if (batch.records.empty())
        return;
      st.live_head = std::max(st.live_head, batch.records.back().offset);
      // While catching up, the next read covers these records (see page_result).
      if (st.state != projection_state::running)
        return;
      std::span<const event_record> rest{batch.records};
      while (!rest.empty() && rest.front().offset < st.next)
        rest = rest.subspan(1); // already processed
      if (rest.empty())
        return;
      // With gaps between appends, a live batch cannot show that nothing came before it:
      // it only says the log grew, and the read from `next` brings what is new.
      if (!st.gapless) {
        request_page(self);
        return;
      }
      auto n = contiguous_prefix(rest, st.next, true);
      apply_batch(self, rest.first(n));
      if (st.state == projection_state::running && n < rest.size())
        request_page(self); // a gap: read the missing events from the journal first
    },
    [self](page_result& page) {
      auto& st = self->state;
      if (page.generation != st.generation || page.from != st.next
          || st.state == projection_state::failed)
        return; // a read made before a rebuild or a failure
      if (!page.records && is(page.records.error(), persistence::journal_errc::unavailable)) {
        st.retry_delay = std::clamp(st.retry_delay * 2, min_retry, max_retry);
        st.error = make_error(projection_errc::journal_failed,
                              "projection '" + st.setup.name + "': reading from offset "
                                + std::to_string(page.from)
                                + " failed, retrying: " + render(page.records.error()));
        self->delayed_send(self, st.retry_delay, retry_read{st.generation});
        return;
      }
      if (!page.records) {
        fail(self, make_error(projection_errc::journal_failed,
                              "projection '" + st.setup.name + "': reading from offset "
                                + std::to_string(page.from)
                                + " failed: " + render(page.records.error())));
        return;
      }
      if (st.retry_delay.count() != 0) { // the journal answers again
        st.retry_delay = std::chrono::milliseconds{0};
        st.error = caf::error{};
      }
      auto& recs = *page.records;
      if (contiguous_prefix(recs, st.next, st.gapless) != recs.size()) {
        fail(self, make_error(projection_errc::journal_failed,
                              "projection '" + st.setup.name + "': a read from offset "
                                + std::to_string(page.from)
                                + (st.gapless ? " did not return consecutive offsets from there"
                                              : " returned offsets out of order")));
        return;
      }
      apply_batch(self, recs);
      if (st.state == projection_state::failed)
        return;
      // A full page, or a live commit beyond what we have: more to read. Otherwise the
      // page ended at the head as of the read; later commits arrive live.
      if (recs.size() >= st.setup.page_size || st.next <= st.live_head)
        request_page(self);
      else
        st.state = projection_state::running;
    },
    [self](projection_status_atom) -> caf::result<projection_status> {
      auto rp = self->make_response_promise<projection_status>();
      reply_status(self, rp);
      return rp;
    },
    [self](head_result& res) {
      auto& st = self->state;
      auto i = st.status_queries.find(res.query);
      if (i == st.status_queries.end())
        return;
      auto rp = std::move(i->second);
      st.status_queries.erase(i);
      if (!res.head) {
        rp.deliver(make_error(projection_errc::journal_failed,
                              "projection '" + st.setup.name
                                + "': cannot read the head: " + render(res.head.error())));
        return;
      }
      projection_status out;
      out.name = st.setup.name;
      out.offset = st.next - 1;
      out.head = *res.head;
      out.lag = out.head > out.offset ? out.head - out.offset : 0;
      out.applied = st.applied;
      out.live_dropped = st.flow->dropped_batches.load();
      out.state = st.state;
      out.error = st.error ? render(st.error) : std::string{};
      rp.deliver(std::move(out));
    },
    [self](projection_await_atom, std::uint64_t offset,
           std::uint64_t timeout_ms) -> caf::result<projection_status> {
      auto& st = self->state;
      if (st.state == projection_state::failed)
        return st.error;
      auto rp = self->make_response_promise<projection_status>();
      if (st.next > offset) {
        reply_status(self, rp);
        return rp;
      }
      auto id = st.next_id++;
      st.waiters.emplace(id, projection_actor_state::waiter{offset, rp});
      self->delayed_send(self, std::chrono::milliseconds{timeout_ms}, waiter_expired{id});
      return rp;
    },
    [self](waiter_expired& w) {
      auto& st = self->state;
      auto i = st.waiters.find(w.id);
      if (i == st.waiters.end())
        return;
      i->second.promise.deliver(make_error(
        projection_errc::timeout, "projection '" + st.setup.name + "' did not reach offset "
                                    + std::to_string(i->second.offset) + " in time (at "
                                    + std::to_string(st.next - 1) + ")"));
      st.waiters.erase(i);
    },
    [self](projection_rebuild_atom) -> caf::result<caf::ok_atom> {
      auto& st = self->state;
      ++st.generation;  // drops the page in flight, if any
      if (!st.opened) { // a failed start: try again
        if (auto stored = st.setup.out->open(); !stored) {
          fail(self, stored.error());
          return stored.error();
        }
        st.opened = true;
      }
      if (auto err = st.setup.out->reset()) {
        fail(self, err);
        return err;
      }
      st.error = caf::error{};
      st.next = 1;
      subscribe(self);
      request_page(self);
      arm_poll(self);
      return caf::ok_atom::value;
    },
  };
}

caf::actor spawn_projection_actor(caf::actor_system& sys, projection_setup setup) {
  return sys.spawn<caf::detached>(projection_behavior, std::move(setup));
}

} // namespace internal
} // namespace annals::actors

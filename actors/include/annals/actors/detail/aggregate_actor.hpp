#pragma once

// The aggregate actor: one per aggregate id. Its phases follow the lifecycle:
//   recovering  load the newest decodable snapshot, then replay the events after it;
//   loading_keys after a snapshot: read the command ids of the events it covers (the
//               de-duplication window), without applying them;
//   running     one command at a time; a handler suspended in persist holds the rest back;
//   reloading   after a failed or timed-out append, re-read the tail before going on;
//   recomputing answer a duplicate command whose reply was lost in a restart by re-running
//               it on the state just before its events;
//   failed      recovery hit data it cannot decode; every command gets that error.
// Commands wait in `queue_` in arrival order during every phase but running-and-idle.

#include <any>
#include <chrono>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/actor_cast.hpp>
#include <caf/after.hpp>
#include <caf/behavior.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "annals/actors/detail/actor_context.hpp"
#include "annals/actors/detail/messages.hpp"
#include "annals/actors/detail/runtime_context.hpp"
#include "annals/aggregate.hpp"
#include "annals/codec.hpp"

namespace annals::actors::detail {

template <class T>
class typed_run final : public run_base {
public:
  explicit typed_run(command_run<T> run) : run_(std::move(run)) {}
  bool done() const noexcept override {
    return run_.done();
  }
  caf::expected<std::any> take() override {
    auto r = run_.take();
    if (!r)
      return std::move(r.error());
    if constexpr (std::is_void_v<T>)
      return std::any{caf::unit};
    else
      return std::any{std::move(*r)};
  }
  void abandon() noexcept override {
    run_.abandon();
  }

private:
  command_run<T> run_;
};

template <class A, class C>
class typed_command final : public command_base {
public:
  explicit typed_command(C cmd) : cmd_(std::move(cmd)) {}
  std::unique_ptr<run_base> start(void* agg) override {
    using T = reply_t<A, C>;
    return std::make_unique<typed_run<T>>(
      command_run<T>::start(*static_cast<A*>(agg), std::move(cmd_)));
  }

private:
  C cmd_;
};

/// Completes every persist at once without storing anything; used to recompute a reply.
class discarding_port final : public persist_port {
public:
  bool begin(pending_persist& op) override {
    op.apply();
    return false;
  }
};

int64_t now_us();

template <class State>
constexpr bool snapshottable = requires {
  State::name;
}
&&boost::json::has_value_from<State>::value&& boost::json::has_value_to<State>::value;

template <class A>
class aggregate_runtime final : public persist_port {
public:
  using state_type = typename A::state_type;
  using codec_type = typename A::codec_type;

  aggregate_runtime(caf::event_based_actor* self, std::shared_ptr<const runtime_context> ctx,
                    std::string id, std::shared_ptr<const std::function<A()>> make)
    : self_(self), ctx_(std::move(ctx)), pid_(ctx_->type_name + "|" + id), make_(std::move(make)),
      agg_(make_ ? (*make_)() : A{}) {
    aggregate_access::set_port(agg_, this);
    actor_ctx_.self = self;
    actor_ctx_.after_resume = [this] { after_resume(); };
  }

  aggregate_runtime(const aggregate_runtime&) = delete;
  aggregate_runtime& operator=(const aggregate_runtime&) = delete;

  ~aggregate_runtime() override {
    // Frames of a handler still suspended (the actor is being killed) die with it.
    if (run_)
      run_->abandon();
  }

  void start() {
    ctx_->stats->recoveries.fetch_add(1, std::memory_order_relaxed);
    phase_ = phase::recovering;
    if (ctx_->snapshots && snapshottable<state_type> && ctx_->options.snapshot_every > 0) {
      auto token = expect_reply();
      ctx_->snapshots->load(pid_, [hdl = handle(), token](auto res) {
        caf::anon_send(hdl, snapshots_read{token, std::move(res)});
      });
    } else {
      read_tail(phase::recovering);
    }
  }

  caf::typed_response_promise<reply_msg> on_command(envelope& env) {
    auto rp = self_->make_response_promise<reply_msg>();
    if (phase_ == phase::failed) {
      ctx_->stats->commands_failed.fetch_add(1, std::memory_order_relaxed);
      rp.deliver(failure_);
      return rp;
    }
    queue_.push_back(queued{std::move(env), rp});
    pump();
    return rp;
  }

  void on_snapshots(snapshots_read& msg) {
    if (msg.token != awaited_)
      return;
    awaited_ = 0;
    if (msg.result) {
      for (auto& snap : *msg.result) {
        if constexpr (snapshottable<state_type>) {
          auto st = type_codec<state_type>::from_json(snap.version, snap.payload);
          if (st) {
            aggregate_access::reset(agg_, std::move(*st), snap.seq);
            seq_ = snap.seq;
            break;
          }
          ctx_->warn("skipping snapshot of " + pid_ + " at seq " + std::to_string(snap.seq) + ": "
                     + render(st.error()));
        }
      }
    } else {
      ctx_->warn("snapshots of " + pid_
                 + " unavailable, replaying all events: " + render(msg.result.error()));
    }
    auto window = ctx_->options.dedupe_window;
    if (seq_ == 0 || window == 0)
      return read_tail(phase::recovering);
    // The snapshot covers events whose command ids a retry may still carry: read the
    // newest `window` of them for their ids only, so that such a retry is recognised as a
    // duplicate instead of being applied again.
    keys_until_ = seq_;
    read_keys(seq_ > window ? seq_ - window + 1 : 1);
  }

  void reload() {
    auto window = ctx_->options.dedupe_window;
    if (keys_until_ != 0) // the ids under the snapshot were not all read yet
      return read_keys(keys_until_ > window ? keys_until_ - window + 1 : 1);
    read_tail(phase::reloading);
  }

  void read_keys(std::uint64_t from) {
    phase_ = phase::loading_keys;
    auto token = expect_reply();
    ctx_->journal->read_stream(pid_, from, keys_until_, ctx_->options.replay_page,
                               [hdl = handle(), token](auto res) {
                                 caf::anon_send(hdl, events_read{token, std::move(res)});
                               });
  }

  void on_keys_page(std::vector<persistence::event_record>& records) {
    std::uint64_t last = 0;
    for (auto& rec : records) {
      remember(rec.metadata.command_id, rec.seq, rec.seq, rec.offset, std::nullopt);
      last = rec.seq;
    }
    if (records.size() >= ctx_->options.replay_page && last < keys_until_)
      return read_keys(last + 1);
    keys_until_ = 0;
    read_tail(phase::recovering);
  }

  void on_events(events_read& msg) {
    if (msg.token != awaited_)
      return;
    awaited_ = 0;
    if (!msg.result)
      return read_failed(std::move(msg.result.error()));
    auto& records = *msg.result;
    if (phase_ == phase::recomputing)
      return on_recompute_page(records);
    if (phase_ == phase::loading_keys)
      return on_keys_page(records);
    for (auto& rec : records) {
      auto ev = codec_type::decode(rec.name, rec.version, rec.payload);
      if (!ev)
        return read_failed(make_error(persistence::journal_errc::corrupt_row,
                                      "persistence id " + pid_ + ", seq " + std::to_string(rec.seq)
                                        + ": " + render(ev.error())));
      aggregate_access::apply(agg_, *ev);
      seq_ = rec.seq;
      remember(rec.metadata.command_id, rec.seq, rec.seq, rec.offset, std::nullopt);
    }
    ctx_->stats->events_replayed.fetch_add(records.size(), std::memory_order_relaxed);
    if (records.size() >= ctx_->options.replay_page)
      return read_tail(phase_);
    phase_ = phase::running;
    pump();
  }

  void on_append(append_done& msg) {
    if (msg.token != awaited_ || op_ == nullptr) {
      // A late answer to an append that already timed out. If it committed after all, the
      // reload that followed the timeout may have missed it: read the tail again before
      // the next command, so the state never lags what the journal holds.
      if (msg.result && msg.result->last_seq > seq_) {
        stale_ = true;
        if (phase_ == phase::running && !busy_)
          reload();
      }
      return;
    }
    awaited_ = 0;
    auto* op = std::exchange(op_, nullptr);
    if (!msg.result)
      return fail_current(std::move(msg.result.error()));
    seq_ = msg.result->last_seq;
    since_snapshot_ += persisting_;
    ctx_->stats->events_persisted.fetch_add(persisting_, std::memory_order_relaxed);
    current_seq_range_ = {current_seq_range_.first ? current_seq_range_.first
                                                   : msg.result->first_seq,
                          msg.result->last_seq};
    current_offset_ = msg.result->last_offset;
    op->apply();
    {
      context_guard guard{&actor_ctx_};
      op->continuation.resume();
    }
    after_resume();
  }

  void on_timeout(io_timeout&) {
    timer_armed_ = false;
    if (awaited_ == 0)
      return;
    auto now = std::chrono::steady_clock::now();
    if (now < deadline_) {
      // The deadline moved on since the timer was set: wait for the rest.
      return schedule_timer(std::chrono::ceil<std::chrono::milliseconds>(deadline_ - now));
    }
    awaited_ = 0;
    auto err = make_error(errc::timeout, "the journal did not answer within "
                                           + std::to_string(ctx_->options.journal_timeout.count())
                                           + " ms for " + pid_);
    if (op_ != nullptr) {
      op_ = nullptr;
      fail_current(std::move(err));
    } else {
      read_failed(std::move(err));
    }
  }

  void on_stop() {
    stop_requested_ = true;
    quit_if_idle();
  }

  bool idle() const noexcept {
    return !busy_ && queue_.empty() && (phase_ == phase::running || phase_ == phase::failed);
  }

  // Stored data this code cannot read: retrying will not help.
  static bool permanent(const caf::error& err) {
    return is(err, persistence::journal_errc::corrupt_row) || is(err, errc::decode_failed)
           || is(err, errc::unknown_event) || is(err, errc::newer_version);
  }

  // persist_port
  bool begin(pending_persist& op) override {
    op_ = &op;
    auto token = expect_reply();
    // The encoded events are not needed after this: move them (only their count is kept).
    persisting_ = op.events.size();
    persistence::append_request req{pid_, seq_, std::move(op.events), current().env.metadata};
    ctx_->journal->append(std::move(req), [hdl = handle(), token](auto res) {
      caf::anon_send(hdl, append_done{token, std::move(res)});
    });
    return true;
  }

private:
  enum class phase { recovering, loading_keys, running, reloading, recomputing, failed };

  struct queued {
    envelope env;
    caf::typed_response_promise<reply_msg> rp;
  };

  struct dedupe_entry {
    std::uint64_t first_seq;
    std::uint64_t last_seq;
    std::uint64_t last_offset; // global offset of the command's last event
    std::optional<std::any> reply;
  };

  // Recent command ids, oldest first in `order`.
  struct dedupe {
    std::unordered_map<std::string, dedupe_entry> entries;
    std::list<std::string> order;
  };

  queued& current() {
    return queue_.front();
  }

  caf::actor handle() const {
    return caf::actor_cast<caf::actor>(self_);
  }

  // Starts waiting for one journal or snapshot-store reply: a fresh token to match it,
  // and a deadline. One timer per aggregate, not one per operation: each operation only
  // moves the deadline, and the timer re-arms for the remainder when it fires early (a CAF
  // timer costs a push to the clock thread and a message, which a persist per command
  // would pay every time).
  std::uint64_t expect_reply() {
    awaited_ = ++token_;
    deadline_ = std::chrono::steady_clock::now() + ctx_->options.journal_timeout;
    if (!timer_armed_)
      schedule_timer(ctx_->options.journal_timeout);
    return awaited_;
  }

  void schedule_timer(std::chrono::milliseconds after) {
    timer_armed_ = true;
    self_->delayed_send(self_, after, io_timeout{});
  }

  void read_tail(phase next) {
    phase_ = next;
    stale_ = false;
    auto token = expect_reply();
    ctx_->journal->read_stream(pid_, seq_ + 1, std::numeric_limits<std::uint64_t>::max(),
                               ctx_->options.replay_page, [hdl = handle(), token](auto res) {
                                 caf::anon_send(hdl, events_read{token, std::move(res)});
                               });
  }

  void read_failed(caf::error err) {
    if (phase_ == phase::recomputing) {
      // Only the duplicate command fails; the aggregate itself is fine.
      finish_current(std::move(err));
      phase_ = phase::running;
      return pump();
    }
    if (!permanent(err)) {
      // A journal that failed or stalled for a moment: the waiting commands get the
      // cause, and the next command reads the tail again (from the last event applied).
      for (auto& q : queue_)
        q.rp.deliver(err);
      ctx_->stats->commands_failed.fetch_add(queue_.size(), std::memory_order_relaxed);
      queue_.clear();
      ctx_->warn("aggregate " + pid_ + " could not read its events: " + render(err));
      phase_ = phase::running;
      stale_ = true;
      return quit_if_idle();
    }
    // Without its full history the aggregate cannot serve any command correctly.
    phase_ = phase::failed;
    failure_ = std::move(err);
    ctx_->warn("aggregate " + pid_ + " failed to recover: " + render(failure_));
    for (auto& q : queue_)
      q.rp.deliver(failure_);
    ctx_->stats->commands_failed.fetch_add(queue_.size(), std::memory_order_relaxed);
    queue_.clear();
    // It stays up and refuses each later command with the same cause (quitting would race
    // with commands already on their way, which would see only "receiver down"); idle
    // passivation stops it like any other aggregate, and the next command tries again.
  }

  void pump() {
    if (stale_ && phase_ == phase::running && !busy_ && !queue_.empty())
      return reload();
    while (phase_ == phase::running && !busy_ && !queue_.empty()) {
      busy_ = true; // the front of the queue is the current command
      current_seq_range_ = {0, 0};
      current_offset_ = 0;
      const auto& cid = current().env.metadata.command_id;
      if (!cid.empty() && seen_) {
        if (auto i = seen_->entries.find(cid); i != seen_->entries.end()) {
          ctx_->stats->duplicates.fetch_add(1, std::memory_order_relaxed);
          current_seq_range_ = {i->second.first_seq, i->second.last_seq};
          current_offset_ = i->second.last_offset;
          if (i->second.reply) {
            finish_current(*i->second.reply);
            continue;
          }
          start_recompute(i->second.first_seq);
          return;
        }
      }
      {
        context_guard guard{&actor_ctx_};
        run_ = current().env.command->start(static_cast<void*>(&agg_));
      }
      after_resume();
    }
    quit_if_idle();
  }

  // Called after a handler started or resumed: finishes the command if it is done.
  void after_resume() {
    if (!run_ || !run_->done())
      return;
    auto result = run_->take();
    run_.reset();
    if (result && current_seq_range_.first != 0)
      remember(current().env.metadata.command_id, current_seq_range_.first,
               current_seq_range_.second, current_offset_, *result);
    finish_current(std::move(result));
    maybe_snapshot();
    pump();
  }

  void finish_current(caf::expected<std::any> result) {
    auto q = std::move(queue_.front());
    queue_.pop_front();
    busy_ = false;
    if (result) {
      ctx_->stats->commands_handled.fetch_add(1, std::memory_order_relaxed);
      // A duplicate answers with the version its first attempt left; any other command
      // with the current one.
      auto version = current_offset_ != 0 ? current_seq_range_.second : seq_;
      q.rp.deliver(reply_msg{std::move(*result), version, current_offset_});
    } else {
      ctx_->stats->commands_failed.fetch_add(1, std::memory_order_relaxed);
      q.rp.deliver(std::move(result.error()));
    }
  }

  // A persist failed or timed out: the handler never resumes, nothing is applied, the
  // caller gets the cause, and the tail is re-read (a timed-out append may have committed).
  void fail_current(caf::error err) {
    if (run_) {
      run_->abandon();
      run_.reset();
    }
    finish_current(std::move(err));
    read_tail(phase::reloading);
  }

  void remember(const std::string& command_id, std::uint64_t first_seq, std::uint64_t last_seq,
                std::uint64_t offset, std::optional<std::any> reply) {
    if (command_id.empty() || ctx_->options.dedupe_window == 0)
      return;
    if (!seen_)
      seen_ = std::make_unique<dedupe>();
    auto [i, added] = seen_->entries.try_emplace(
      command_id, dedupe_entry{first_seq, last_seq, offset, std::move(reply)});
    if (!added) {
      i->second.last_seq = last_seq;
      i->second.last_offset = offset;
      return;
    }
    seen_->order.push_back(command_id);
    if (seen_->order.size() > ctx_->options.dedupe_window) {
      seen_->entries.erase(seen_->order.front());
      seen_->order.pop_front();
    }
  }

  void maybe_snapshot() {
    if constexpr (snapshottable<state_type>) {
      auto every = ctx_->options.snapshot_every;
      if (!ctx_->snapshots || every == 0 || since_snapshot_ < every)
        return;
      since_snapshot_ = 0;
      persistence::snapshot_record snap{pid_,
                                        seq_,
                                        std::string{state_type::name},
                                        schema_version<state_type>(),
                                        type_codec<state_type>::to_json(agg_.state()),
                                        now_us()};
      auto ctx = ctx_;
      auto pid = pid_;
      ctx_->snapshots->save(std::move(snap), [ctx, pid](caf::expected<caf::unit_t> r) {
        if (r)
          ctx->stats->snapshots_written.fetch_add(1, std::memory_order_relaxed);
        else
          ctx->warn("snapshot of " + pid + " not written: " + render(r.error()));
      });
    }
  }

  // Duplicate whose reply was lost in a restart: rebuild the state just before the
  // command's first event and run the command again without storing anything. Handlers
  // are deterministic functions of state and command, so the reply is the original one.
  void start_recompute(std::uint64_t first_seq) {
    phase_ = phase::recomputing;
    scratch_ = std::make_unique<A>(make_ ? (*make_)() : A{});
    recompute_until_ = first_seq - 1;
    recompute_next_ = 1;
    read_scratch_page();
  }

  void read_scratch_page() {
    if (recompute_next_ > recompute_until_)
      return finish_recompute();
    auto token = expect_reply();
    ctx_->journal->read_stream(pid_, recompute_next_, recompute_until_, ctx_->options.replay_page,
                               [hdl = handle(), token](auto res) {
                                 caf::anon_send(hdl, events_read{token, std::move(res)});
                               });
  }

  void on_recompute_page(std::vector<persistence::event_record>& records) {
    for (auto& rec : records) {
      auto ev = codec_type::decode(rec.name, rec.version, rec.payload);
      if (!ev)
        return read_failed(ev.error());
      aggregate_access::apply(*scratch_, *ev);
      recompute_next_ = rec.seq + 1;
    }
    if (records.empty())
      recompute_next_ = recompute_until_ + 1;
    read_scratch_page();
  }

  void finish_recompute() {
    discarding_port port;
    aggregate_access::set_port(*scratch_, &port);
    auto run = current().env.command->start(static_cast<void*>(scratch_.get()));
    caf::expected<std::any> result =
      make_error(errc::handler_failed, "re-running a duplicate command did not complete");
    if (run->done())
      result = run->take();
    else
      run->abandon();
    run.reset();
    scratch_.reset();
    if (result)
      seen_->entries[current().env.metadata.command_id].reply = *result;
    finish_current(std::move(result));
    phase_ = phase::running;
    pump();
  }

  void quit_if_idle() {
    if (stop_requested_ && idle())
      self_->quit();
  }

  caf::event_based_actor* self_;
  actor_context actor_ctx_;
  std::shared_ptr<const runtime_context> ctx_;
  std::string pid_;
  std::shared_ptr<const std::function<A()>> make_; // null: default construction
  A agg_;
  std::uint64_t seq_ = 0;
  phase phase_ = phase::recovering;
  std::list<queued> queue_; // a list: an empty std::deque allocates ~600 bytes
  bool busy_ = false;       // a command (the front of queue_) is in progress
  std::unique_ptr<run_base> run_;
  pending_persist* op_ = nullptr;
  std::pair<std::uint64_t, std::uint64_t> current_seq_range_{0, 0};
  std::uint64_t current_offset_ = 0; // of the last event the current command persisted
  std::uint64_t token_ = 0;
  std::uint64_t awaited_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  bool timer_armed_ = false;
  std::size_t since_snapshot_ = 0;
  std::size_t persisting_ = 0;   // events in the append in flight
  std::unique_ptr<dedupe> seen_; // allocated by the first command id
  std::unique_ptr<A> scratch_;
  std::uint64_t recompute_until_ = 0;
  std::uint64_t recompute_next_ = 0;
  caf::error failure_;
  bool stop_requested_ = false;
  std::uint64_t keys_until_ = 0; // loading_keys: the snapshot's seq
  bool stale_ = false; // the journal may hold events past `seq_`: read them before a command
};

template <class A>
struct aggregate_actor_state {
  std::unique_ptr<aggregate_runtime<A>> rt;
};

template <class A>
caf::behavior aggregate_actor(caf::stateful_actor<aggregate_actor_state<A>>* self,
                              std::shared_ptr<const runtime_context> ctx, std::string id,
                              caf::actor registry, std::shared_ptr<const std::function<A()>> make) {
  auto idle = ctx->options.idle_timeout.count() > 0 ? caf::duration{ctx->options.idle_timeout}
                                                    : caf::duration{caf::infinite};
  self->state.rt =
    std::make_unique<aggregate_runtime<A>>(self, std::move(ctx), std::move(id), std::move(make));
  self->state.rt->start();
  auto* rt = self->state.rt.get();
  return {
    [rt](envelope& env) -> caf::result<reply_msg> { return rt->on_command(env); },
    [rt](append_done& m) { rt->on_append(m); },
    [rt](events_read& m) { rt->on_events(m); },
    [rt](snapshots_read& m) { rt->on_snapshots(m); },
    [rt](io_timeout& m) { rt->on_timeout(m); },
    [rt](stop_atom) { rt->on_stop(); },
    caf::after(idle) >>
      [self, rt, registry] {
        // Only the registry may retire an actor: it first stops routing to it.
        if (rt->idle())
          self->send(registry, passivate_atom::value);
      },
  };
}

} // namespace annals::actors::detail

#include "annals/actors/detail/aggregate_core.hpp"

#include <limits>
#include <utility>

#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

namespace annals::actors::detail {

aggregate_core::aggregate_core(caf::event_based_actor* self,
                               std::shared_ptr<const runtime_context> ctx, std::string id)
  : self_(self), ctx_(std::move(ctx)), pid_(ctx_->type_name + "|" + id) {
  actor_ctx_.self = self;
  actor_ctx_.after_resume = [this] { after_resume(); };
}

aggregate_core::~aggregate_core() {
  abandon_run();
}

void aggregate_core::abandon_run() noexcept {
  // Frames of a handler still suspended (the actor is being killed) die with it.
  if (run_) {
    run_->abandon();
    run_.reset();
  }
}

void aggregate_core::start() {
  ctx_->stats->recoveries.fetch_add(1, std::memory_order_relaxed);
  phase_ = phases::recovering{};
  if (ctx_->snapshots && ctx_->options.snapshot_every > 0 && snapshottable()) {
    auto token = expect_reply();
    ctx_->snapshots->load(pid_, [hdl = handle(), token](auto res) {
      caf::anon_send(hdl, snapshots_read{token, std::move(res)});
    });
  } else {
    read_tail(phases::recovering{});
  }
}

caf::typed_response_promise<reply_msg> aggregate_core::on_command(envelope& env) {
  auto rp = self_->make_response_promise<reply_msg>();
  if (auto* f = std::get_if<phases::failed>(&phase_)) {
    ctx_->stats->commands_failed.fetch_add(1, std::memory_order_relaxed);
    rp.deliver(f->cause);
    return rp;
  }
  queue_.push_back(queued{std::move(env), rp});
  pump();
  return rp;
}

void aggregate_core::on_snapshots(snapshots_read& msg) {
  if (msg.token != awaited_)
    return;
  awaited_ = 0;
  if (msg.result) {
    if (auto at = restore(*msg.result); at != 0)
      seq_ = at;
  } else {
    ctx_->warn("snapshots of " + pid_
               + " unavailable, replaying all events: " + render(msg.result.error()));
  }
  auto window = ctx_->options.dedupe_window;
  if (seq_ == 0 || window == 0)
    return read_tail(phases::recovering{});
  // The snapshot covers events whose command ids a retry may still carry: read the newest
  // `window` of them for their ids only, so that such a retry is recognised as a duplicate
  // instead of being applied again.
  keys_until_ = seq_;
  read_keys(seq_ > window ? seq_ - window + 1 : 1);
}

void aggregate_core::reload() {
  auto window = ctx_->options.dedupe_window;
  if (keys_until_ != 0) // the ids under the snapshot were not all read yet
    return read_keys(keys_until_ > window ? keys_until_ - window + 1 : 1);
  read_tail(phases::reloading{});
}

void aggregate_core::read_keys(std::uint64_t from) {
  phase_ = phases::recovering{true};
  auto token = expect_reply();
  ctx_->journal->read_stream(pid_, from, keys_until_, ctx_->options.replay_page,
                             [hdl = handle(), token](auto res) {
                               caf::anon_send(hdl, events_read{token, std::move(res)});
                             });
}

void aggregate_core::on_keys_page(std::vector<persistence::event_record>& records) {
  std::uint64_t last = 0;
  for (auto& rec : records) {
    remember(rec.metadata.command_id, rec.seq, rec.seq, rec.offset, std::nullopt);
    last = rec.seq;
  }
  if (records.size() >= ctx_->options.replay_page && last < keys_until_)
    return read_keys(last + 1);
  keys_until_ = 0;
  read_tail(phases::recovering{});
}

void aggregate_core::on_events(events_read& msg) {
  if (msg.token != awaited_)
    return;
  awaited_ = 0;
  if (!msg.result)
    return read_failed(std::move(msg.result.error()));
  auto& records = *msg.result;
  if (std::holds_alternative<phases::recomputing>(phase_))
    return on_recompute_page(records);
  if (auto* r = std::get_if<phases::recovering>(&phase_); r && r->keys)
    return on_keys_page(records);
  auto [folded, err] = fold(records);
  for (std::size_t i = 0; i < folded; ++i) {
    const auto& rec = records[i];
    seq_ = rec.seq;
    remember(rec.metadata.command_id, rec.seq, rec.seq, rec.offset, std::nullopt);
  }
  if (err)
    return read_failed(std::move(err));
  ctx_->stats->events_replayed.fetch_add(records.size(), std::memory_order_relaxed);
  if (records.size() >= ctx_->options.replay_page)
    return read_tail(phase_);
  phase_ = phases::running{};
  pump();
}

void aggregate_core::on_append(append_done& msg) {
  if (msg.token != awaited_ || op_ == nullptr) {
    // A late answer to an append that already timed out. If it committed after all, the
    // reload that followed the timeout may have missed it: read the tail again before the
    // next command, so the state never lags what the journal holds.
    if (msg.result && msg.result->last_seq > seq_) {
      stale_ = true;
      if (std::holds_alternative<phases::running>(phase_) && !handling())
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
  current_seq_range_ = {current_seq_range_.first ? current_seq_range_.first : msg.result->first_seq,
                        msg.result->last_seq};
  current_offset_ = msg.result->last_offset;
  op->apply();
  {
    context_guard guard{&actor_ctx_};
    op->continuation.resume();
  }
  after_resume();
}

void aggregate_core::on_timeout(io_timeout&) {
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

void aggregate_core::on_stop() {
  stop_requested_ = true;
  quit_if_idle();
}

bool aggregate_core::handling() const noexcept {
  if (auto* r = std::get_if<phases::running>(&phase_))
    return r->handling;
  return std::holds_alternative<phases::recomputing>(phase_);
}

bool aggregate_core::idle() const noexcept {
  return queue_.empty() && !handling()
         && (std::holds_alternative<phases::running>(phase_)
             || std::holds_alternative<phases::failed>(phase_));
}

// Stored data this code cannot read: retrying will not help.
bool aggregate_core::permanent(const caf::error& err) {
  return is(err, persistence::journal_errc::corrupt_row) || is(err, errc::decode_failed)
         || is(err, errc::unknown_event) || is(err, errc::newer_version);
}

bool aggregate_core::begin(pending_persist& op) {
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

caf::actor aggregate_core::handle() const {
  return caf::actor_cast<caf::actor>(self_);
}

// Starts waiting for one journal or snapshot-store reply: a fresh token to match it, and a
// deadline. One timer per aggregate, not one per operation: each operation only moves the
// deadline, and the timer re-arms for the remainder when it fires early (a CAF timer costs
// a push to the clock thread and a message, which a persist per command would pay every
// time).
std::uint64_t aggregate_core::expect_reply() {
  awaited_ = ++token_;
  deadline_ = std::chrono::steady_clock::now() + ctx_->options.journal_timeout;
  if (!timer_armed_)
    schedule_timer(ctx_->options.journal_timeout);
  return awaited_;
}

void aggregate_core::schedule_timer(std::chrono::milliseconds after) {
  timer_armed_ = true;
  self_->delayed_send(self_, after, io_timeout{});
}

void aggregate_core::read_tail(phase next) {
  phase_ = std::move(next);
  stale_ = false;
  auto token = expect_reply();
  ctx_->journal->read_stream(pid_, seq_ + 1, std::numeric_limits<std::uint64_t>::max(),
                             ctx_->options.replay_page, [hdl = handle(), token](auto res) {
                               caf::anon_send(hdl, events_read{token, std::move(res)});
                             });
}

void aggregate_core::read_failed(caf::error err) {
  if (std::holds_alternative<phases::recomputing>(phase_)) {
    // Only the duplicate command fails; the aggregate itself is fine.
    finish_current(std::move(err));
    phase_ = phases::running{};
    return pump();
  }
  if (!permanent(err)) {
    // A journal that failed or stalled for a moment: the waiting commands get the cause,
    // and the next command reads the tail again (from the last event applied).
    for (auto& q : queue_)
      q.rp.deliver(err);
    ctx_->stats->commands_failed.fetch_add(queue_.size(), std::memory_order_relaxed);
    queue_.clear();
    ctx_->warn("aggregate " + pid_ + " could not read its events: " + render(err));
    phase_ = phases::running{};
    stale_ = true;
    return quit_if_idle();
  }
  // Without its full history the aggregate cannot serve any command correctly.
  ctx_->warn("aggregate " + pid_ + " failed to recover: " + render(err));
  for (auto& q : queue_)
    q.rp.deliver(err);
  ctx_->stats->commands_failed.fetch_add(queue_.size(), std::memory_order_relaxed);
  queue_.clear();
  phase_ = phases::failed{std::move(err)};
  // It stays up and refuses each later command with the same cause (quitting would race
  // with commands already on their way, which would see only "receiver down"); idle
  // passivation stops it like any other aggregate, and the next command tries again.
}

void aggregate_core::pump() {
  auto* run = std::get_if<phases::running>(&phase_);
  if (stale_ && run && !run->handling && !queue_.empty())
    return reload();
  // `phase_` may change inside the loop: look it up again each time.
  while ((run = std::get_if<phases::running>(&phase_)) && !run->handling && !queue_.empty()) {
    run->handling = true; // the front of the queue is the current command
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
      run_ = start_run(current().env);
    }
    after_resume();
  }
  quit_if_idle();
}

// Called after a handler started or resumed: finishes the command if it is done.
void aggregate_core::after_resume() {
  if (!run_ || !run_->done())
    return;
  auto result = run_->take();
  run_.reset();
  if (result && current_seq_range_.first != 0)
    remember(current().env.metadata.command_id, current_seq_range_.first, current_seq_range_.second,
             current_offset_, *result);
  finish_current(std::move(result));
  maybe_snapshot();
  pump();
}

void aggregate_core::finish_current(caf::expected<std::any> result) {
  auto q = std::move(queue_.front());
  queue_.pop_front();
  if (auto* run = std::get_if<phases::running>(&phase_))
    run->handling = false;
  if (result) {
    ctx_->stats->commands_handled.fetch_add(1, std::memory_order_relaxed);
    // A duplicate answers with the version its first attempt left; any other command with
    // the current one.
    auto version = current_offset_ != 0 ? current_seq_range_.second : seq_;
    q.rp.deliver(reply_msg{std::move(*result), version, current_offset_});
  } else {
    ctx_->stats->commands_failed.fetch_add(1, std::memory_order_relaxed);
    q.rp.deliver(std::move(result.error()));
  }
}

// A persist failed or timed out: the handler never resumes, nothing is applied, the caller
// gets the cause, and the tail is re-read (a timed-out append may have committed).
void aggregate_core::fail_current(caf::error err) {
  abandon_run();
  finish_current(std::move(err));
  read_tail(phases::reloading{});
}

void aggregate_core::remember(const std::string& command_id, std::uint64_t first_seq,
                              std::uint64_t last_seq, std::uint64_t offset,
                              std::optional<std::any> reply) {
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

void aggregate_core::maybe_snapshot() {
  auto every = ctx_->options.snapshot_every;
  if (!ctx_->snapshots || every == 0 || since_snapshot_ < every)
    return;
  auto snap = take_snapshot();
  if (!snap)
    return;
  since_snapshot_ = 0;
  ctx_->snapshots->save(std::move(*snap), [ctx = ctx_, pid = pid_](caf::expected<caf::unit_t> r) {
    if (r)
      ctx->stats->snapshots_written.fetch_add(1, std::memory_order_relaxed);
    else
      ctx->warn("snapshot of " + pid + " not written: " + render(r.error()));
  });
}

// A duplicate whose reply was lost in a restart: rebuild the state just before the
// command's first event and run the command again without storing anything. Handlers are
// deterministic functions of state and command, so the reply is the original one.
void aggregate_core::start_recompute(std::uint64_t first_seq) {
  phase_ = phases::recomputing{1, first_seq - 1};
  begin_scratch();
  read_scratch_page();
}

void aggregate_core::read_scratch_page() {
  auto& r = std::get<phases::recomputing>(phase_);
  if (r.next > r.until)
    return finish_recompute();
  auto token = expect_reply();
  ctx_->journal->read_stream(pid_, r.next, r.until, ctx_->options.replay_page,
                             [hdl = handle(), token](auto res) {
                               caf::anon_send(hdl, events_read{token, std::move(res)});
                             });
}

void aggregate_core::on_recompute_page(std::vector<persistence::event_record>& records) {
  auto& r = std::get<phases::recomputing>(phase_);
  auto [folded, err] = fold_scratch(records);
  if (folded > 0)
    r.next = records[folded - 1].seq + 1;
  if (err)
    return read_failed(std::move(err));
  if (records.empty())
    r.next = r.until + 1;
  read_scratch_page();
}

void aggregate_core::finish_recompute() {
  auto result = run_on_scratch(current().env);
  if (result)
    seen_->entries[current().env.metadata.command_id].reply = *result;
  finish_current(std::move(result));
  phase_ = phases::running{};
  pump();
}

void aggregate_core::quit_if_idle() {
  if (stop_requested_ && idle())
    self_->quit();
}

} // namespace annals::actors::detail

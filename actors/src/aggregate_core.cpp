#include "annals/actors/detail/aggregate_core.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

namespace annals::actors::detail {

namespace {

// Appends in flight per aggregate. One: the next append leaves only once the one before
// is committed. With two, the second could commit after the first failed, if another
// writer's events happened to fill the sequence numbers the first one would have taken,
// storing events decided on a state that never existed.
constexpr std::size_t appends_in_flight = 1;

// Consecutive commands share one append up to these bounds, far below every journal's
// limit on one append (1 MiB by default).
constexpr std::size_t coalesce_bytes = std::size_t{256} << 10;
constexpr std::size_t coalesce_events = 1000;

std::size_t event_bytes(const encoded_event& e) {
  auto n = e.name.size() + e.payload.size();
  for (const auto& tag : e.tags)
    n += tag.size() + 1;
  return n;
}

} // namespace

aggregate_core::aggregate_core(caf::event_based_actor* self,
                               std::shared_ptr<const runtime_context> ctx, std::string id)
  : self_(self), ctx_(std::move(ctx)), pid_(ctx_->type_name + "|" + id) {
  actor_ctx_.self = self;
  actor_ctx_.after_resume = [this] { after_resume(); };
  actor_ctx_.gate = this;
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
  load();
}

void aggregate_core::load() {
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
      seq_ = decided_ = at;
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
  decided_ = seq_;
  if (err)
    return read_failed(std::move(err));
  ctx_->stats->events_replayed.fetch_add(records.size(), std::memory_order_relaxed);
  if (records.size() >= ctx_->options.replay_page)
    return read_tail(phase_);
  phase_ = phases::running{};
  pump();
}

void aggregate_core::on_append(append_done& msg) {
  batch* sent = nullptr;
  if (pipe_)
    for (auto& b : pipe_->in_flight)
      if (b.token == msg.token)
        sent = &b;
  if (sent == nullptr) {
    // A late answer to an append given up on (it timed out, or one before it failed). If
    // it committed after all, the recovery that followed may have missed it: read the tail
    // again before the next command, so the state never lags what the journal holds.
    if (msg.result && msg.result->last_seq > seq_) {
      stale_ = true;
      if (std::holds_alternative<phases::running>(phase_) && !handling() && !uncommitted()
          && (!pipe_ || pipe_->commands.empty()))
        reload();
    }
    return;
  }
  // Journals answer one stream's appends in order; should one answer early, it waits for
  // the appends before it.
  sent->result = std::move(msg.result);
  on_committed();
}

// Takes the answered appends at the head of the pipeline: the committed sequence number
// moves on, each command learns the offset of its last event, and replies go out for the
// commands whose appends are all committed.
void aggregate_core::on_committed() {
  auto& p = *pipe_;
  while (!p.in_flight.empty() && p.in_flight.front().result) {
    auto b = std::move(p.in_flight.front());
    p.in_flight.pop_front();
    auto& res = *b.result;
    if (!res)
      return fail_pipeline(res.error());
    seq_ = res->last_seq;
    ctx_->stats->events_persisted.fetch_add(b.events, std::memory_order_relaxed);
    auto offset = res->first_offset; // consecutive within one append
    for (auto [serial, n] : b.parts) {
      offset += n;
      if (auto* d = find(serial)) {
        d->last_offset = offset - 1;
        --d->pending;
      }
    }
  }
  while (p.in_flight.size() < appends_in_flight && !p.forming.empty()) {
    auto b = std::move(p.forming.front());
    p.forming.pop_front();
    send(std::move(b));
  }
  if (p.snapshot && p.snapshot->seq <= seq_) {
    auto snap = std::move(*p.snapshot);
    p.snapshot.reset();
    save_snapshot(std::move(snap));
  }
  deliver_ready();
  if (p.held_send && !uncommitted()) {
    auto start = std::move(p.held_send);
    p.held_send = nullptr;
    start();
  }
  pump();
}

void aggregate_core::on_timeout(io_timeout&) {
  timer_armed_ = false;
  auto now = std::chrono::steady_clock::now();
  auto timeout_error = [this] {
    return make_error(errc::timeout, "the journal did not answer within "
                                       + std::to_string(ctx_->options.journal_timeout.count())
                                       + " ms for " + pid_);
  };
  std::optional<std::chrono::steady_clock::time_point> next;
  if (pipe_ && !pipe_->in_flight.empty()) {
    auto due = pipe_->in_flight.front().deadline; // the oldest append
    if (now >= due)
      return fail_pipeline(timeout_error());
    next = due;
  }
  if (awaited_ != 0) {
    if (now >= deadline_) {
      awaited_ = 0;
      return read_failed(timeout_error());
    }
    next = next ? std::min(*next, deadline_) : deadline_;
  }
  // A deadline moved on since the timer was set: wait for the rest.
  if (next)
    schedule_timer(std::chrono::ceil<std::chrono::milliseconds>(*next - now));
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

bool aggregate_core::uncommitted() const noexcept {
  return pipe_ && (!pipe_->in_flight.empty() || !pipe_->forming.empty());
}

bool aggregate_core::idle() const noexcept {
  return queue_.empty() && !handling() && (!pipe_ || pipe_->commands.empty())
         && (std::holds_alternative<phases::running>(phase_)
             || std::holds_alternative<phases::failed>(phase_));
}

// Stored data this code cannot read: retrying will not help.
bool aggregate_core::permanent(const caf::error& err) {
  return is(err, persistence::journal_errc::corrupt_row) || is(err, errc::decode_failed)
         || is(err, errc::unknown_event) || is(err, errc::newer_version);
}

// The pipeline entry of the command in progress, created by its first persist (or when it
// finishes behind commands still waiting for their commit).
aggregate_core::decided& aggregate_core::active_entry() {
  if (!pipe_)
    pipe_ = std::make_unique<pipeline>();
  if (!active_entry_) {
    auto& d = pipe_->commands.emplace_back();
    d.serial = pipe_->next_serial++;
    active_entry_ = true;
  }
  return pipe_->commands.back();
}

aggregate_core::decided* aggregate_core::find(std::uint64_t serial) {
  auto& cmds = pipe_->commands;
  if (cmds.empty() || serial < cmds.front().serial)
    return nullptr;
  auto i = serial - cmds.front().serial;
  return i < cmds.size() ? &cmds[i] : nullptr;
}

bool aggregate_core::begin(pending_persist& op) {
  auto& d = active_entry();
  auto n = op.events.size();
  auto expected = decided_;
  if (d.first_seq == 0)
    d.first_seq = decided_ + 1;
  decided_ += n;
  d.last_seq = decided_;
  since_snapshot_ += n;
  std::size_t bytes = 0;
  for (const auto& e : op.events)
    bytes += event_bytes(e);
  const auto& meta = current().env.metadata;
  auto& p = *pipe_;
  auto joined = false;
  // The events join the append still waiting for a slot if it carries the same metadata
  // (the journal stores metadata once per append) and has room.
  if (!p.forming.empty()) {
    auto& f = p.forming.back();
    if (f.req.metadata == meta && f.bytes + bytes <= coalesce_bytes
        && f.events + n <= coalesce_events) {
      std::move(op.events.begin(), op.events.end(), std::back_inserter(f.req.events));
      f.events += n;
      f.bytes += bytes;
      if (f.parts.back().first == d.serial) {
        f.parts.back().second += n;
      } else {
        f.parts.emplace_back(d.serial, n);
        ++d.pending;
      }
      joined = true;
    }
  }
  if (!joined) {
    batch b;
    b.req = persistence::append_request{pid_, expected, std::move(op.events), meta};
    b.parts.emplace_back(d.serial, n);
    b.events = n;
    b.bytes = bytes;
    ++d.pending;
    if (p.forming.empty() && p.in_flight.size() < appends_in_flight)
      send(std::move(b));
    else
      p.forming.push_back(std::move(b));
  }
  // Applied now, so that the handler and the commands after it decide on the state
  // including these events; nothing outside the actor sees it before the commit.
  op.apply();
  return false;
}

void aggregate_core::send(batch b) {
  auto& f = pipe_->in_flight.emplace_back(std::move(b));
  f.token = ++token_;
  f.deadline = std::chrono::steady_clock::now() + ctx_->options.journal_timeout;
  if (!timer_armed_)
    schedule_timer(ctx_->options.journal_timeout);
  ctx_->journal->append(std::move(f.req), [hdl = handle(), token = f.token](auto res) {
    caf::anon_send(hdl, append_done{token, std::move(res)});
  });
}

bool aggregate_core::hold(std::function<void()>& start) {
  if (!uncommitted())
    return false;
  pipe_->held_send = std::move(start);
  return true;
}

caf::actor aggregate_core::handle() const {
  return caf::actor_cast<caf::actor>(self_);
}

// Starts waiting for one journal read or snapshot load: a fresh token to match it, and a
// deadline. One timer per aggregate, not one per operation: each operation only moves a
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
    finish_current(std::move(err), 0, 0);
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

// Whether the command at the front of the queue may be decided now, on top of what the
// pipeline holds.
bool aggregate_core::admits(const envelope& env) {
  if (!pipe_ || pipe_->commands.empty())
    return true;
  if (stale_ || pipe_->commands.size() >= std::max<std::size_t>(ctx_->options.pipeline_depth, 1))
    return false;
  // A retry waits until its first attempt is answered: then it is a plain duplicate.
  const auto& cid = env.metadata.command_id;
  return cid.empty() || (!pipe_->ids.contains(cid) && !(seen_ && seen_->entries.contains(cid)));
}

void aggregate_core::pump() {
  if (pumping_) // a handler finished inside the loop below, which goes on by itself
    return;
  auto* run = std::get_if<phases::running>(&phase_);
  if (stale_ && run && !run->handling && !queue_.empty() && (!pipe_ || pipe_->commands.empty()))
    return reload();
  pumping_ = true;
  // `phase_` may change inside the loop: look it up again each time.
  while ((run = std::get_if<phases::running>(&phase_)) && !run->handling && !queue_.empty()
         && admits(current().env)) {
    run->handling = true; // the front of the queue is the current command
    active_entry_ = false;
    const auto& cid = current().env.metadata.command_id;
    if (!cid.empty() && seen_) {
      if (auto i = seen_->entries.find(cid); i != seen_->entries.end()) {
        ctx_->stats->duplicates.fetch_add(1, std::memory_order_relaxed);
        if (i->second.reply) {
          finish_current(*i->second.reply, i->second.last_seq, i->second.last_offset);
          continue;
        }
        pumping_ = false;
        start_recompute(i->second.first_seq);
        return;
      }
    }
    if (pipe_ && !pipe_->commands.empty())
      ctx_->stats->commands_pipelined.fetch_add(1, std::memory_order_relaxed);
    {
      context_guard guard{&actor_ctx_};
      run_ = start_run(current().env);
    }
    after_resume();
  }
  pumping_ = false;
  quit_if_idle();
}

// Called after a handler started or resumed: concludes the command if it is done. Its
// reply goes out now if nothing it saw is uncommitted, else when that is committed.
void aggregate_core::after_resume() {
  if (!run_ || !run_->done())
    return;
  auto result = run_->take();
  run_.reset();
  if (active_entry_ || (pipe_ && !pipe_->commands.empty())) {
    auto& d = active_entry();
    active_entry_ = false;
    d.version = decided_;
    d.result = std::move(result);
    d.cmd.emplace(std::move(queue_.front()));
    queue_.pop_front();
    std::get<phases::running>(phase_).handling = false;
    if (const auto& cid = d.cmd->env.metadata.command_id; !cid.empty())
      pipe_->ids.insert(cid);
    deliver_ready();
  } else {
    finish_current(std::move(result), seq_, 0);
  }
  maybe_snapshot();
  pump();
}

void aggregate_core::deliver_ready() {
  auto& cmds = pipe_->commands;
  while (!cmds.empty() && cmds.front().result && cmds.front().pending == 0) {
    auto& front = cmds.front();
    const auto& cid = front.cmd->env.metadata.command_id;
    if (!cid.empty())
      pipe_->ids.erase(cid); // before the string moves
    auto d = std::move(front);
    cmds.pop_front();
    auto& result = *d.result;
    if (result && d.first_seq != 0)
      remember(d.cmd->env.metadata.command_id, d.first_seq, d.last_seq, d.last_offset, *result);
    if (result) {
      ctx_->stats->commands_handled.fetch_add(1, std::memory_order_relaxed);
      d.cmd->rp.deliver(reply_msg{std::move(*result), d.version, d.last_offset});
    } else {
      ctx_->stats->commands_failed.fetch_add(1, std::memory_order_relaxed);
      d.cmd->rp.deliver(std::move(result.error()));
    }
  }
}

// Answers the command at the front of the queue directly: nothing before it waits for a
// commit. `version` and `offset` as in `reply_msg`.
void aggregate_core::finish_current(caf::expected<std::any> result, std::uint64_t version,
                                    std::uint64_t offset) {
  auto q = std::move(queue_.front());
  queue_.pop_front();
  if (auto* run = std::get_if<phases::running>(&phase_))
    run->handling = false;
  if (result) {
    ctx_->stats->commands_handled.fetch_add(1, std::memory_order_relaxed);
    q.rp.deliver(reply_msg{std::move(*result), version, offset});
  } else {
    ctx_->stats->commands_failed.fetch_add(1, std::memory_order_relaxed);
    q.rp.deliver(std::move(result.error()));
  }
}

// An append failed or timed out. Every command decided since the last commit fails with
// the cause (none of their replies went out), the one in progress included; the state,
// which holds their events, is rebuilt from the journal before the next command.
// Appends still in flight are given up on: a late one that committed after all is read
// back (see `on_append`).
void aggregate_core::fail_pipeline(const caf::error& err) {
  auto p = std::move(pipe_);
  active_entry_ = false;
  if (auto* run = std::get_if<phases::running>(&phase_); run && run->handling) {
    abandon_run();
    finish_current(err, 0, 0);
  }
  for (auto& d : p->commands) {
    if (!d.cmd) // the command that was in progress, answered above
      continue;
    ctx_->stats->commands_failed.fetch_add(1, std::memory_order_relaxed);
    d.cmd->rp.deliver(err);
  }
  recover_committed();
}

void aggregate_core::recover_committed() {
  reset();
  seq_ = decided_ = 0;
  since_snapshot_ = 0;
  keys_until_ = 0;
  stale_ = false;
  load();
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

// Takes a snapshot between commands once enough events were decided. Its state may hold
// events not committed yet: it is saved when they are, and dropped if they fail.
void aggregate_core::maybe_snapshot() {
  auto every = ctx_->options.snapshot_every;
  if (!ctx_->snapshots || every == 0 || since_snapshot_ < every)
    return;
  auto snap = take_snapshot(decided_);
  if (!snap)
    return;
  since_snapshot_ = 0;
  if (decided_ == seq_)
    save_snapshot(std::move(*snap));
  else
    pipe_->snapshot = std::move(snap);
}

void aggregate_core::save_snapshot(persistence::snapshot_record snap) {
  ctx_->snapshots->save(std::move(snap), [ctx = ctx_, pid = pid_](caf::expected<caf::unit_t> r) {
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
  auto& first = seen_->entries[current().env.metadata.command_id];
  if (result)
    first.reply = *result;
  finish_current(std::move(result), first.last_seq, first.last_offset);
  phase_ = phases::running{};
  pump();
}

void aggregate_core::quit_if_idle() {
  if (stop_requested_ && idle())
    self_->quit();
}

} // namespace annals::actors::detail

#pragma once

// What every aggregate actor does whatever its aggregate type: the command queue, the
// pipeline of commands decided ahead of the journal, the journal requests with their reply
// tokens and timer, the de-duplication window, passivation, and the phases of its life.
// `aggregate_runtime<A>` adds what needs the type: decoding, applying and running handlers.

#include <any>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include <deque>
#include <functional>
#include <unordered_set>

#include <caf/fwd.hpp>
#include <caf/typed_response_promise.hpp>

#include "annals/actors/detail/actor_context.hpp"
#include "annals/actors/detail/messages.hpp"
#include "annals/actors/detail/runtime_context.hpp"
#include "annals/aggregate.hpp"

namespace annals::actors::detail {

/// The phases of an aggregate actor, one type each. Commands wait in the queue in arrival
/// order during every phase but an idle `running`.
namespace phases {

/// Loads the newest decodable snapshot, then, with `keys`, reads the command ids of the
/// events it covers (the de-duplication window) without applying them, then replays the
/// events after it.
struct recovering {
  bool keys = false;
};

/// Decides commands one after another, ahead of the journal up to the pipeline depth;
/// `handling` while the front of the queue is in progress (a handler suspended in an ask
/// holds the rest back).
struct running {
  bool handling = false;
};

/// After a failed read, or a late append found on a stale view: re-reads the tail before
/// going on.
struct reloading {};

/// Answers the duplicate at the front of the queue, whose reply was lost in a restart, by
/// re-running it on the state just before its events: folds events `next`..`until` into a
/// scratch aggregate first.
struct recomputing {
  std::uint64_t next = 1;
  std::uint64_t until = 0;
};

/// Recovery hit data it cannot decode: every command gets `cause`.
struct failed {
  caf::error cause;
};

} // namespace phases

using phase = std::variant<phases::recovering, phases::running, phases::reloading,
                           phases::recomputing, phases::failed>;

/// The type-independent part of an aggregate actor; see the file comment. Every member
/// runs on the actor's own thread.
class aggregate_core : public persist_port, private send_gate {
public:
  aggregate_core(caf::event_based_actor* self, std::shared_ptr<const runtime_context> ctx,
                 std::string id);
  aggregate_core(const aggregate_core&) = delete;
  aggregate_core& operator=(const aggregate_core&) = delete;
  ~aggregate_core() override;

  /// Begins recovery.
  void start();

  caf::typed_response_promise<reply_msg> on_command(envelope& env);
  void on_snapshots(snapshots_read& msg);
  void on_events(events_read& msg);
  void on_append(append_done& msg);
  void on_timeout(io_timeout&);
  void on_stop();

  /// No command queued, in progress or waiting for its commit, and not recovering:
  /// passivation may stop it.
  bool idle() const noexcept;

  // persist_port: sends (or queues) the append and applies the events at once; the handler
  // goes on without suspending. The reply waits for the commit.
  bool begin(pending_persist& op) override;

protected:
  /// Whether the state can be snapshotted (and so loaded from a snapshot).
  virtual bool snapshottable() const noexcept = 0;
  /// Restores the state from the first snapshot of `snaps` that decodes (newest first);
  /// returns its sequence number, 0 if none does.
  virtual std::uint64_t restore(std::vector<persistence::snapshot_record>& snaps) = 0;
  /// Decodes and applies `page` to the live aggregate, in order; stops at the first record
  /// that does not decode. Returns how many were applied and that record's error.
  virtual std::pair<std::size_t, caf::error>
  fold(std::span<const persistence::event_record> page) = 0;
  /// Starts the command of `env` on the live aggregate.
  virtual std::unique_ptr<run_base> start_run(envelope& env) = 0;
  /// Creates a fresh scratch aggregate for a recompute.
  virtual void begin_scratch() = 0;
  /// Like `fold`, on the scratch aggregate.
  virtual std::pair<std::size_t, caf::error>
  fold_scratch(std::span<const persistence::event_record> page) = 0;
  /// Runs the command of `env` on the scratch aggregate without storing anything, then
  /// drops the scratch aggregate.
  virtual caf::expected<std::any> run_on_scratch(envelope& env) = 0;
  /// The state as a snapshot at sequence number `seq`, if it has a snapshot codec.
  virtual std::optional<persistence::snapshot_record> take_snapshot(std::uint64_t seq) = 0;
  /// Replaces the live aggregate with a fresh one (before a recovery from the journal).
  virtual void reset() = 0;

  /// Destroys the frame of a handler still suspended; the derived class calls it before its
  /// aggregate dies.
  void abandon_run() noexcept;

  const std::string& persistence_id() const noexcept {
    return pid_;
  }
  const runtime_context& context() const noexcept {
    return *ctx_;
  }

private:
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

  // A command decided ahead of the journal: its reply waits until its appends (and every
  // earlier command's) are committed.
  struct decided {
    std::uint64_t serial = 0;
    std::optional<queued> cmd; // set when its handler finished
    std::optional<caf::expected<std::any>> result;
    std::size_t pending = 0; // appends holding its events, not yet committed
    std::uint64_t first_seq = 0;
    std::uint64_t last_seq = 0;
    std::uint64_t last_offset = 0;
    std::uint64_t version = 0; // the sequence number right after it was decided
  };

  // One append: sent (in flight) or waiting for a free slot (forming), with the commands
  // whose events it holds, in order.
  struct batch {
    persistence::append_request req;
    std::vector<std::pair<std::uint64_t, std::size_t>> parts; // (serial, events)
    std::size_t events = 0;
    std::size_t bytes = 0;
    std::uint64_t token = 0;
    std::chrono::steady_clock::time_point deadline;
    std::optional<caf::expected<persistence::append_result>> result; // arrived early
  };

  // What pipelining needs; allocated by the first persist, so that an aggregate that only
  // answers queries carries none of it.
  struct pipeline {
    std::deque<decided> commands;
    std::deque<batch> in_flight;
    std::deque<batch> forming;
    std::unordered_set<std::string_view> ids;             // command ids in `commands`
    std::optional<persistence::snapshot_record> snapshot; // saved once committed
    std::function<void()> held_send;                      // see `send_gate`
    std::uint64_t next_serial = 1;
  };

  queued& current() {
    return queue_.front();
  }
  bool handling() const noexcept;
  bool uncommitted() const noexcept;
  caf::actor handle() const;
  std::uint64_t expect_reply();
  void schedule_timer(std::chrono::milliseconds after);
  void load();
  void read_tail(phase next);
  void read_keys(std::uint64_t from);
  void on_keys_page(std::vector<persistence::event_record>& records);
  void on_recompute_page(std::vector<persistence::event_record>& records);
  void reload();
  void read_failed(caf::error err);
  void pump();
  bool admits(const envelope& env);
  void after_resume();
  void finish_current(caf::expected<std::any> result, std::uint64_t version, std::uint64_t offset);
  decided& active_entry();
  decided* find(std::uint64_t serial);
  void send(batch b);
  void on_committed();
  void deliver_ready();
  void fail_pipeline(const caf::error& err);
  void recover_committed();
  void remember(const std::string& command_id, std::uint64_t first_seq, std::uint64_t last_seq,
                std::uint64_t offset, std::optional<std::any> reply);
  void maybe_snapshot();
  void save_snapshot(persistence::snapshot_record snap);
  void start_recompute(std::uint64_t first_seq);
  void read_scratch_page();
  void finish_recompute();
  void quit_if_idle();
  static bool permanent(const caf::error& err);

  // send_gate
  bool hold(std::function<void()>& start) override;

  caf::event_based_actor* self_;
  actor_context actor_ctx_;
  std::shared_ptr<const runtime_context> ctx_;
  std::string pid_;
  std::uint64_t seq_ = 0;     // the last committed event applied
  std::uint64_t decided_ = 0; // the last event applied, committed or not
  phase phase_;
  std::list<queued> queue_; // a list: an empty std::deque allocates ~600 bytes
  std::unique_ptr<run_base> run_;
  std::unique_ptr<pipeline> pipe_;
  std::uint64_t token_ = 0;
  std::uint64_t awaited_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  bool timer_armed_ = false;
  bool stop_requested_ = false;
  bool stale_ = false;        // the journal may hold events past `seq_`: read them before a command
  bool active_entry_ = false; // the command in progress has an entry in the pipeline
  bool pumping_ = false;      // inside `pump`'s loop
  std::size_t since_snapshot_ = 0;
  std::unique_ptr<dedupe> seen_; // allocated by the first command id
  std::uint64_t keys_until_ = 0; // the snapshot's seq while its command ids are not all read
};

} // namespace annals::actors::detail

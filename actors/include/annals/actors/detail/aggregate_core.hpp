#pragma once

// What every aggregate actor does whatever its aggregate type: the command queue, the journal
// requests with their reply tokens and timer, the de-duplication window, passivation, and
// the phases of its life. `aggregate_runtime<A>` adds what needs the type: decoding,
// applying and running handlers.

#include <any>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

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

/// Handles one command at a time; `handling` while the front of the queue is in progress
/// (a handler suspended in persist holds the rest back).
struct running {
  bool handling = false;
};

/// After a failed or timed-out append, or a failed read: re-reads the tail before going on.
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
class aggregate_core : public persist_port {
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

  /// No command queued or in progress, and not recovering: passivation may stop it.
  bool idle() const noexcept;

  // persist_port
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
  /// The state as a snapshot at the current sequence number, if it has a snapshot codec.
  virtual std::optional<persistence::snapshot_record> take_snapshot() = 0;

  /// Destroys the frame of a handler still suspended; the derived class calls it before its
  /// aggregate dies.
  void abandon_run() noexcept;

  const std::string& persistence_id() const noexcept {
    return pid_;
  }
  std::uint64_t seq() const noexcept {
    return seq_;
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

  queued& current() {
    return queue_.front();
  }
  bool handling() const noexcept;
  caf::actor handle() const;
  std::uint64_t expect_reply();
  void schedule_timer(std::chrono::milliseconds after);
  void read_tail(phase next);
  void read_keys(std::uint64_t from);
  void on_keys_page(std::vector<persistence::event_record>& records);
  void on_recompute_page(std::vector<persistence::event_record>& records);
  void reload();
  void read_failed(caf::error err);
  void pump();
  void after_resume();
  void finish_current(caf::expected<std::any> result);
  void fail_current(caf::error err);
  void remember(const std::string& command_id, std::uint64_t first_seq, std::uint64_t last_seq,
                std::uint64_t offset, std::optional<std::any> reply);
  void maybe_snapshot();
  void start_recompute(std::uint64_t first_seq);
  void read_scratch_page();
  void finish_recompute();
  void quit_if_idle();
  static bool permanent(const caf::error& err);

  caf::event_based_actor* self_;
  actor_context actor_ctx_;
  std::shared_ptr<const runtime_context> ctx_;
  std::string pid_;
  std::uint64_t seq_ = 0;
  phase phase_;
  std::list<queued> queue_; // a list: an empty std::deque allocates ~600 bytes
  std::unique_ptr<run_base> run_;
  pending_persist* op_ = nullptr;
  std::pair<std::uint64_t, std::uint64_t> current_seq_range_{0, 0};
  std::uint64_t current_offset_ = 0; // of the last event the current command persisted
  std::uint64_t token_ = 0;
  std::uint64_t awaited_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  bool timer_armed_ = false;
  bool stop_requested_ = false;
  bool stale_ = false; // the journal may hold events past `seq_`: read them before a command
  std::size_t since_snapshot_ = 0;
  std::size_t persisting_ = 0;   // events in the append in flight
  std::unique_ptr<dedupe> seen_; // allocated by the first command id
  std::uint64_t keys_until_ = 0; // the snapshot's seq while its command ids are not all read
};

} // namespace annals::actors::detail

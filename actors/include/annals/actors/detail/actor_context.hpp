#pragma once

// Which actor runs an annals coroutine on this thread right now; `ask` needs it to send its
// request from that actor and to resume the coroutine there.

#include <functional>

#include <caf/fwd.hpp>

namespace annals::actors {

namespace detail {

/// Holds back what a handler sends to other actors while events it or an earlier command
/// decided are not committed yet: an aggregate that decides commands ahead of its journal
/// (pipelining) must not let a request built on uncommitted state leave the actor.
class send_gate {
public:
  /// Takes `start` (moving from it) and returns true if it must wait; `start` then runs
  /// once everything decided before it is committed, or never if that fails. Returns false
  /// (leaving `start` alone) if it may run now.
  virtual bool hold(std::function<void()>& start) = 0;

protected:
  ~send_gate() = default;
};

/// The actor that is running an annals coroutine on this thread right now, what to do
/// after the coroutine resumes (the owner checks whether it finished), and the gate its
/// outgoing requests pass (null: none).
struct actor_context {
  caf::event_based_actor* self = nullptr;
  std::function<void()> after_resume;
  send_gate* gate = nullptr;
};

/// The context of the coroutine running on this thread, or null.
actor_context* current_context() noexcept;

/// Makes `ctx` current for the lifetime of the guard.
class context_guard {
public:
  explicit context_guard(actor_context* ctx) noexcept;
  ~context_guard();
  context_guard(const context_guard&) = delete;
  context_guard& operator=(const context_guard&) = delete;

private:
  actor_context* prev_;
};

} // namespace detail

} // namespace annals::actors

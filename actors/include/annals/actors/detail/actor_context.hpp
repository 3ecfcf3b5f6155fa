#pragma once

// Which actor runs an annals coroutine on this thread right now; `ask` needs it to send its
// request from that actor and to resume the coroutine there.

#include <functional>

#include <caf/fwd.hpp>

namespace annals::actors {

namespace detail {

/// The actor that is running an annals coroutine on this thread right now, and what to do
/// after the coroutine resumes (the owner checks whether it finished).
struct actor_context {
  caf::event_based_actor* self = nullptr;
  std::function<void()> after_resume;
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

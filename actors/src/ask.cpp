#include "annals/actors/ask.hpp"

namespace annals::actors {

namespace detail {

namespace {

thread_local actor_context* current = nullptr;

} // namespace

actor_context* current_context() noexcept {
  return current;
}

context_guard::context_guard(actor_context* ctx) noexcept : prev_(current) {
  current = ctx;
}

context_guard::~context_guard() {
  current = prev_;
}

} // namespace detail

void run_task(caf::event_based_actor* self, task<void> t) {
  // The holder lives as long as a pending response handler refers to it (the task is
  // suspended in an ask) or until the task finishes.
  struct holder {
    task<void> t;
  };
  auto h = std::make_shared<holder>(holder{std::move(t)});
  detail::actor_context ctx{self, nullptr};
  // Each resumption checks whether the task finished; a finished task is released here.
  ctx.after_resume = [h]() mutable {
    if (h && h->t.done())
      h->t.reset();
  };
  detail::context_guard guard{&ctx};
  h->t.start();
  if (h->t.done())
    h->t.reset();
}

} // namespace annals::actors

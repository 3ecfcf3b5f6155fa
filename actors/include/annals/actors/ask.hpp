#pragma once

/// @file
/// `co_await annals::actors::ask<A>(host, id, cmd)`: one aggregate (or any actor running an
/// annals task) asks another aggregate and suspends until the reply, without blocking its
/// thread and without letting its other messages in between.
///
/// Inside an aggregate's handler (a process manager asking the aggregates it coordinates):
///
/// ```cpp
/// annals::task<std::string> handle(start_transfer cmd) {
///   auto taken = co_await annals::actors::ask<bank::account>(*bank_, cmd.from,
///                                                           bank::withdraw{cmd.cents});
///   if (!taken)
///     co_return taken.error();  // e.g. bank.insufficient_funds
///   ...
/// }
/// ```
///
/// In any other event-based actor, start a task with `run_task`:
///
/// ```cpp
/// sys.spawn([&](caf::event_based_actor* self) { annals::actors::run_task(self, audit(host)); });
/// ```
///
/// The reply arrives as a CAF response on the asking actor's own thread, and the coroutine
/// resumes there. The wait is bounded (`timeout`); if the asking actor ends first, the
/// suspended coroutine is destroyed with it.

#include <chrono>
#include <coroutine>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>

#include "annals/actors/detail/actor_context.hpp"
#include "annals/actors/host.hpp"
#include "annals/task.hpp"

namespace annals::actors {

/// The awaitable returned by `ask`; see the file comment.
template <class A, class C>
class [[nodiscard]] ask_awaiter {
public:
  using reply_type = reply_t<A, C>;

  ask_awaiter(host& h, std::string id, C cmd, const command_options& opts)
    : host_(h), id_(std::move(id)), cmd_(std::move(cmd)), timeout_(opts.timeout),
      idempotency_key_(opts.idempotency_key), correlation_id_(opts.correlation_id) {}

  bool await_ready() const noexcept {
    return false;
  }

  void await_suspend(std::coroutine_handle<> h) {
    auto* ctx = detail::current_context();
    if (ctx == nullptr)
      throw std::logic_error{
        "annals::actors::ask awaited outside an aggregate handler or run_task"};
    std::function<void()> start = [this, h, self = ctx->self, after = ctx->after_resume,
                                   gate = ctx->gate] {
      host_.request<A>(self, id_, std::move(cmd_),
                       [this, h, self, after, gate](caf::expected<reply_type> r) {
                         result_.emplace(std::move(r));
                         detail::actor_context resumed{self, after, gate};
                         detail::context_guard guard{&resumed};
                         h.resume();
                         if (after)
                           after();
                       },
                       {.timeout = timeout_,
                        .idempotency_key = idempotency_key_,
                        .correlation_id = correlation_id_});
    };
    // An aggregate ahead of its journal sends the request once what it decided so far is
    // committed (see `send_gate`).
    if (ctx->gate != nullptr && ctx->gate->hold(start))
      return;
    start();
  }

  caf::expected<reply_type> await_resume() {
    return std::move(*result_);
  }

private:
  host& host_;
  std::string id_;
  C cmd_;
  std::chrono::milliseconds timeout_;
  // Owned copies: the options' views may point at temporaries of the co_await expression.
  std::string idempotency_key_;
  std::string correlation_id_;
  std::optional<caf::expected<reply_type>> result_;
};

/// Asks aggregate `id` of type `A` from inside a coroutine run by an actor; the result is
/// the reply or its error, never an exception. `opts` as for `host::ask`.
template <aggregate_type A, class C>
requires handles<A, C> ask_awaiter<A, C> ask(host& h, std::string id, C cmd,
                                             const command_options& opts = {}) {
  return {h, std::move(id), std::move(cmd), opts};
}

/// Runs `t` inside actor `self` until it finishes; `co_await ask(...)` works in it. The
/// task is destroyed when it finishes or when `self` ends, whichever comes first.
void run_task(caf::event_based_actor* self, task<void> t);

} // namespace annals::actors

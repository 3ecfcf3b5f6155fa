#pragma once

/// @file
/// `annals::task<T>`: the coroutine type of command handlers.
///
/// A task is lazy: it does not run until its owner starts it (the runtime or the testkit)
/// or until another task awaits it. It finishes with a value, or with an error when the
/// handler `co_return`s an error enum or a `caf::error`, throws `annals::rejected`, or
/// throws anything else (which becomes `errc::handler_failed` carrying `what()`): an
/// exception in a handler becomes an error reply, never a crash.
///
/// ```cpp
/// annals::task<std::int64_t> handle(withdraw cmd) {
///   if (cmd.cents > state().balance)
///     co_return account_errc::insufficient_funds;  // 1. an error reply, nothing persisted
///   co_await persist(withdrawn{cmd.cents});         // 2. applied; the reply waits for the commit
///   co_return state().balance;                      // 3. the state already includes it
/// }
/// ```
///
/// A task resumes only where its owner resumes it: in the actor runtime that is always the
/// aggregate's own actor, never a journal thread. Tasks are move-only; destroying a task
/// destroys its suspended frame (the runtime does that when a persist fails while the
/// handler waits in an `ask`, so that ask is never sent).

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "annals/error.hpp"

namespace annals {

template <class T = void>
class task;

namespace detail {

/// Converts the active exception into an error value.
caf::error current_exception_to_error() noexcept;

class promise_base {
public:
  std::suspend_always initial_suspend() const noexcept {
    return {};
  }

  struct final_awaiter {
    bool await_ready() const noexcept {
      return false;
    }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> self) noexcept {
      // Symmetric transfer back to an awaiting task; a root task returns to its owner.
      if (auto next = self.promise().continuation_)
        return next;
      return std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };

  final_awaiter final_suspend() const noexcept {
    return {};
  }

  void unhandled_exception() noexcept {
    error_ = current_exception_to_error();
  }

  void set_continuation(std::coroutine_handle<> h) noexcept {
    continuation_ = h;
  }

  const caf::error& error() const noexcept {
    return error_;
  }

protected:
  std::coroutine_handle<> continuation_;
  caf::error error_;
};

template <class T>
class promise : public promise_base {
public:
  task<T> get_return_object() noexcept;

  void return_value(T value) {
    value_.emplace(std::move(value));
  }

  template <error_enum E>
  void return_value(E e) {
    error_ = make_error(e);
  }

  void return_value(caf::error err) {
    error_ = std::move(err);
  }

  void return_value(caf::expected<T> x) {
    if (x)
      value_.emplace(std::move(*x));
    else
      error_ = std::move(x.error());
  }

  caf::expected<T> take_result() {
    if (error_)
      return std::move(error_);
    if (!value_)
      return make_error(errc::handler_failed, "handler finished without a result");
    return std::move(*value_);
  }

private:
  std::optional<T> value_;
};

template <>
class promise<void> : public promise_base {
public:
  task<void> get_return_object() noexcept;

  void return_void() noexcept {}

  caf::expected<void> take_result() {
    if (error_)
      return std::move(error_);
    return caf::unit;
  }
};

} // namespace detail

/// A lazily started coroutine that yields a `T` or an error; see the file comment.
template <class T>
class [[nodiscard]] task {
public:
  using promise_type = detail::promise<T>;
  using value_type = T;
  using handle_type = std::coroutine_handle<promise_type>;

  task() noexcept = default;

  explicit task(handle_type h) noexcept : handle_(h) {}

  task(task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}

  task& operator=(task&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }

  task(const task&) = delete;
  task& operator=(const task&) = delete;

  ~task() {
    reset();
  }

  /// True if this task owns a coroutine frame.
  bool valid() const noexcept {
    return static_cast<bool>(handle_);
  }

  /// True once the coroutine ran to its end (with a value or an error).
  bool done() const noexcept {
    return handle_ && handle_.done();
  }

  /// Runs the coroutine until its first suspension or its end. Call once.
  void start() {
    handle_.resume();
  }

  /// The outcome; only after `done()`. Moves the value out.
  caf::expected<T> result() {
    return handle_.promise().take_result();
  }

  /// Destroys the frame (and every task it awaits) without running it further.
  void reset() noexcept {
    if (handle_)
      std::exchange(handle_, {}).destroy();
  }

  /// Awaiting a task runs it; its error propagates to the awaiting task as if thrown.
  auto operator co_await() && noexcept {
    struct awaiter {
      handle_type handle;
      bool await_ready() const noexcept {
        return false;
      }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
        handle.promise().set_continuation(parent);
        return handle;
      }
      T await_resume() {
        auto res = handle.promise().take_result();
        if (!res)
          throw rejected{std::move(res.error())};
        if constexpr (!std::is_void_v<T>)
          return std::move(*res);
      }
    };
    return awaiter{handle_};
  }

private:
  handle_type handle_;
};

namespace detail {

template <class T>
task<T> promise<T>::get_return_object() noexcept {
  return task<T>{std::coroutine_handle<promise<T>>::from_promise(*this)};
}

inline task<void> promise<void>::get_return_object() noexcept {
  return task<void>{std::coroutine_handle<promise<void>>::from_promise(*this)};
}

} // namespace detail

/// True for `task<T>` types.
template <class T>
inline constexpr bool is_task_v = false;

template <class T>
inline constexpr bool is_task_v<task<T>> = true;

} // namespace annals

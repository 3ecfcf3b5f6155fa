#pragma once

/// @file
/// `annals::aggregate<State, Events...>`: the base class of an event-sourced aggregate.
///
/// An aggregate decides; its state applies. Command handlers are public member functions
/// named `handle`, one per command type, taking the command by value:
/// - a coroutine returning `annals::task<T>` may `co_await persist(e...)` or
///   `co_await persist<E>(fields...)`; it resumes once the events are applied to
///   `state()`, and its reply goes out only after the journal committed them. The actor
///   runtime may resume it before that commit (it decides the next commands meanwhile,
///   see `aggregate_options::pipeline_depth`): if the write then fails, the reply becomes
///   the error and the state is rebuilt from the journal. So a handler's effects are its
///   events and its reply; an `ask` it sends after a persist leaves after the commit;
/// - a plain member function returning `T` or `caf::expected<T>` answers read-only
///   commands.
///
/// The state type folds events with one `void apply(const E&)` member per event type.
/// Replay (recovery, the testkit's `restart()`) calls the same `apply` functions, so the
/// state after a replay equals the live state.
///
/// ```cpp
/// class account : public annals::aggregate<account_state, deposited, withdrawn> {
/// public:
///   annals::task<std::int64_t> handle(deposit cmd) {
///     co_await persist(deposited{cmd.cents});
///     co_return state().balance;
///   }
///   std::int64_t handle(get_balance) const { return state().balance; }
/// };
/// ```
///
/// An event that owns memory (an aggregate with a destructor, e.g. one holding a
/// `std::string`) is built in place, `co_await persist<opened>(std::move(cmd.id),
/// std::move(cmd.owner));`, or named first and passed by name, `co_await persist(e);`.
/// Passing it as a temporary or with `std::move` does not compile: g++ 12 destroys an
/// aggregate temporary inside a `co_await` statement twice (see docs/pitfalls.md).
///
/// `persist` reaches storage through a `persist_port`: the testkit's completes at once,
/// the actor runtime's completes when the journal commits. Aggregate code is the same in
/// both.

#include <coroutine>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include <caf/expected.hpp>

#include "annals/codec.hpp"
#include "annals/detail/equal.hpp"
#include "annals/error.hpp"
#include "annals/event.hpp"
#include "annals/task.hpp"

// One message for both forms of `persist`; a macro because `static_assert` takes a literal.
#define ANNALS_DETAIL_OWNING_TEMPORARY_MESSAGE                                                     \
  "persist: an event that owns memory (an aggregate with a destructor, e.g. holding a "            \
  "std::string) cannot be a temporary or std::move'd here: g++ 12 destroys such a temporary "      \
  "inside co_await twice. Build it in place, `co_await persist<opened>(std::move(id), "            \
  "std::move(owner));`, or pass a named event, `opened e{...}; co_await persist(e);`"

namespace annals {

/// One atomic write of events requested by a suspended handler. The port that receives it
/// writes `events`, then calls `apply()` and resumes `continuation`; or it reports a
/// failure to the task's owner, which destroys the task instead of resuming it.
class pending_persist {
public:
  pending_persist() = default;
  pending_persist(const pending_persist&) = delete;
  pending_persist& operator=(const pending_persist&) = delete;

  /// The events, encoded on the aggregate's own thread, in the order given to `persist`.
  std::vector<encoded_event> events;

  /// The coroutine to resume after the write; resuming it continues the handler.
  std::coroutine_handle<> continuation;

  /// Set when the port asked for a codec check and an event did not survive its JSON
  /// round trip; names the event and the difference.
  std::string codec_failure;

  /// Applies the typed events to the aggregate's state, in order. Call once, when the port
  /// accepted the write (the testkit: at once; the actor runtime: when it sent the append,
  /// answering only after the commit).
  virtual void apply() = 0;

protected:
  ~pending_persist() = default;
};

/// Where `persist` sends its events; see the file comment.
class persist_port {
public:
  virtual ~persist_port() = default;

  /// Asks `persist` to round-trip every event through its codec and report losses in
  /// `pending_persist::codec_failure` (the testkit does; the runtime does not).
  virtual bool verify_codec() const noexcept {
    return false;
  }

  /// Starts the atomic write of `op.events`. Returns false if it completed at once (the
  /// port has called `op.apply()`; the handler goes on without suspending), true if the
  /// handler suspends until the port resumes `op.continuation` or its task is destroyed.
  virtual bool begin(pending_persist& op) = 0;
};

template <class State, event... Events>
class aggregate;

/// Runtime access to an aggregate's internals; for the testkit and the actor runtime.
struct aggregate_access {
  template <class S, class... Es>
  static S& state(aggregate<S, Es...>& a) noexcept {
    return a.state_;
  }

  template <class S, class... Es>
  static void set_port(aggregate<S, Es...>& a, persist_port* port) noexcept {
    a.port_ = port;
  }

  /// Applies one stored event (replay); the version moves to the next sequence number.
  template <class S, class... Es>
  static void apply(aggregate<S, Es...>& a, const std::variant<Es...>& e) {
    std::visit([&a](const auto& x) { a.state_.apply(x); }, e);
    ++a.version_;
  }

  /// Counts `n` events that were just applied to the state.
  template <class S, class... Es>
  static void advance(aggregate<S, Es...>& a, std::uint64_t n) noexcept {
    a.version_ += n;
  }

  /// Replaces the state, e.g. with one decoded from a snapshot taken at `version`.
  template <class S, class... Es>
  static void reset(aggregate<S, Es...>& a, S s, std::uint64_t version) {
    a.state_ = std::move(s);
    a.version_ = version;
  }
};

namespace detail {

/// True for the types g++ 12 miscompiles as temporaries in a `co_await` statement (it
/// destroys them twice): aggregates whose destructor does something.
template <class T>
inline constexpr bool owning_aggregate =
  std::is_aggregate_v<T> && !std::is_trivially_destructible_v<T>;

/// True if an argument of forwarded type `A` may appear in a `co_await` statement: an
/// lvalue (a named object, which is not a temporary), or a type g++ 12 handles.
template <class A>
inline constexpr bool safe_in_co_await =
  std::is_lvalue_reference_v<A> || !owning_aggregate<std::remove_cvref_t<A>>;

/// How the awaiter keeps an event given as forwarded type `A`: a named event outlives the
/// `co_await` statement, so a reference suffices; anything else is moved in.
template <class A>
using stored_event_t = std::conditional_t<std::is_lvalue_reference_v<A>,
                                          const std::remove_reference_t<A>&, std::decay_t<A>>;

/// Holds the events of one `persist` (as `const E&` or `E`, see `stored_event_t`).
template <class Agg, class... Es>
class persist_awaiter final : public pending_persist {
public:
  template <class... Args>
  persist_awaiter(Agg& agg, persist_port* port, Args&&... args)
    : agg_(agg), port_(port), typed_(std::forward<Args>(args)...) {}

  bool await_ready() const noexcept {
    return false;
  }

  bool await_suspend(std::coroutine_handle<> h) {
    if (port_ == nullptr)
      throw std::logic_error{"persist called on an aggregate that no runtime or testkit hosts"};
    events.reserve(sizeof...(Es));
    std::apply([this](const auto&... e) { (events.push_back(Agg::codec_type::encode(e)), ...); },
               typed_);
    if (port_->verify_codec())
      std::apply([this](const auto&... e) { (this->check_round_trip(e), ...); }, typed_);
    continuation = h;
    return port_->begin(*this);
  }

  void await_resume() const noexcept {}

  void apply() override {
    std::apply([this](const auto&... e) { (aggregate_access::state(agg_).apply(e), ...); }, typed_);
    aggregate_access::advance(agg_, sizeof...(Es));
  }

private:
  template <class E>
  void check_round_trip(const E& e) {
    auto enc = Agg::codec_type::encode(e);
    auto back = type_codec<E>::from_json(enc.version, enc.payload);
    if (!back) {
      codec_failure += std::string{E::name} + " does not decode from " + enc.payload + ": "
                       + render(back.error()) + "\n";
    } else if (!structurally_equal(*back, e)) {
      codec_failure += std::string{E::name} + " changes in its JSON round trip: encoded as "
                       + enc.payload + ", decoded back as " + type_codec<E>::to_json(*back) + "\n";
    }
  }

  Agg& agg_;
  persist_port* port_;
  std::tuple<Es...> typed_;
};

template <class S, class E>
concept applies = requires(S& s, const E& e) {
  s.apply(e);
};

template <class T, class... Ts>
inline constexpr bool one_of = (std::is_same_v<T, Ts> || ...);

template <class E, class... Fields>
concept brace_constructible = requires(Fields&&... f) {
  E{std::forward<Fields>(f)...};
};

} // namespace detail

/// The base class of aggregates; see the file comment.
template <class State, event... Events>
class aggregate {
public:
  using state_type = State;
  using event_type = std::variant<Events...>;
  using codec_type = event_codec<Events...>;

  static_assert(sizeof...(Events) > 0, "an aggregate needs at least one event type");
  static_assert((detail::applies<State, Events> && ...),
                "the state type needs a member `void apply(const E&)` for every event type");

  /// The current state: everything the journal acknowledged, nothing more.
  const State& state() const noexcept {
    return state_;
  }

  /// The sequence number of the newest event in `state()` (0 before the first event): the
  /// number of events this aggregate's stream holds. Replies can carry it, e.g. as an
  /// HTTP `ETag` or for a client's optimistic concurrency check.
  std::uint64_t version() const noexcept {
    return version_;
  }

protected:
  /// Writes `events` atomically (all or none) and applies them to the state; see the
  /// file comment. Must be awaited: `co_await persist(e1, e2);`. An event that owns
  /// memory must be a named object here (it is not copied); an event without a destructor
  /// may also be a temporary: `co_await persist(deposited{cmd.cents});`.
  template <class... Es>
  requires(sizeof...(Es) > 0 && (detail::one_of<std::remove_cvref_t<Es>, Events...> && ...))
    [[nodiscard]] detail::persist_awaiter<aggregate, detail::stored_event_t<Es>...> persist(
      Es&&... events) {
    static_assert((detail::safe_in_co_await<Es> && ...), ANNALS_DETAIL_OWNING_TEMPORARY_MESSAGE);
    return {*this, port_, std::forward<Es>(events)...};
  }

  /// Builds one event `E{fields...}` inside `persist`, then writes and applies it like
  /// `persist(e)`: `co_await persist<opened>(std::move(cmd.id), std::move(cmd.owner));`.
  /// The form for events that own memory, which must not be temporaries in the
  /// `co_await` statement (see the file comment).
  template <class E, class... Fields>
  requires(detail::one_of<E, Events...>&& detail::brace_constructible<E, Fields...>)
    [[nodiscard]] detail::persist_awaiter<aggregate, E> persist(Fields&&... fields) {
    static_assert((detail::safe_in_co_await<Fields> && ...),
                  ANNALS_DETAIL_OWNING_TEMPORARY_MESSAGE);
    return {*this, port_, E{std::forward<Fields>(fields)...}};
  }

private:
  friend struct aggregate_access;

  State state_{};
  std::uint64_t version_ = 0;
  persist_port* port_ = nullptr;
};

/// Satisfied by types derived from some `aggregate<State, Events...>`.
template <class A>
concept aggregate_type = requires(A& a) {
  typename A::state_type;
  typename A::event_type;
  typename A::codec_type;
  { aggregate_access::state(a) } -> std::same_as<typename A::state_type&>;
};

/// Satisfied if aggregate `A` has a handler for command `C`.
template <class A, class C>
concept handles = requires(A& a, C c) {
  a.handle(std::move(c));
};

namespace detail {

template <class R>
struct reply_traits {
  using type = R;
};

template <class T>
struct reply_traits<task<T>> {
  using type = T;
};

template <class T>
struct reply_traits<caf::expected<T>> {
  using type = T;
};

} // namespace detail

/// The reply type of `A`'s handler for `C` (the `T` of `task<T>` or `caf::expected<T>`).
template <class A, class C>
using reply_t =
  typename detail::reply_traits<decltype(std::declval<A&>().handle(std::declval<C>()))>::type;

/// One command in progress on one aggregate: a plain handler finishes at once; a
/// coroutine handler may suspend in `persist`. The owner checks `done()` after each
/// resumption and takes the result, or calls `abandon()` when a persist failed.
template <class T>
class command_run {
public:
  /// Calls `a.handle(std::move(cmd))` and runs it up to its first suspension. Exceptions
  /// thrown by the handler become error results.
  template <class A, class C>
  static command_run start(A& a, C cmd) {
    command_run run;
    using result_type = decltype(a.handle(std::move(cmd)));
    try {
      if constexpr (is_task_v<result_type>) {
        run.task_ = a.handle(std::move(cmd));
        run.task_.start();
      } else if constexpr (std::is_void_v<result_type>) {
        a.handle(std::move(cmd));
        run.result_.emplace(caf::unit);
      } else {
        run.result_.emplace(a.handle(std::move(cmd)));
      }
    } catch (...) {
      run.task_.reset();
      run.result_.emplace(detail::current_exception_to_error());
    }
    return run;
  }

  /// True once the handler finished.
  bool done() const noexcept {
    return result_.has_value() || task_.done();
  }

  /// The handler's outcome; only after `done()`.
  caf::expected<T> take() {
    if (result_)
      return std::move(*result_);
    return task_.result();
  }

  /// Destroys a suspended handler without running it further.
  void abandon() noexcept {
    task_.reset();
  }

private:
  std::optional<caf::expected<T>> result_;
  task<T> task_;
};

} // namespace annals

#undef ANNALS_DETAIL_OWNING_TEMPORARY_MESSAGE

#pragma once

/// @file
/// `annals::actors::host`: aggregates as CAF actors, addressed by type and id.
///
/// The host owns a registry actor. The first command to an id starts that aggregate's
/// actor (lazy activation), which recovers from its newest snapshot and the events after
/// it; every later command for the id goes to that one actor, which handles one command
/// at a time. Idle actors, or the least recently used ones beyond `host_options::max_live`,
/// are passivated and come back by recovery on their next command.
///
/// ```cpp
/// caf::actor_system_config cfg;
/// annals::actors::configure(cfg);
/// caf::actor_system sys{cfg};
/// auto journal = annals::persistence::sqlite_journal::open({.path = "bank.db"});
/// annals::actors::host host{sys, *journal};
/// if (auto err = host.register_aggregate<bank::account>())  // under bank::account::name
///   return fail(err);
/// auto balance = host.ask<bank::account>("acc-42", bank::deposit{500});  // expected<int64_t>
/// ```

#include <any>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include "annals/actors/detail/aggregate_actor.hpp"
#include "annals/actors/detail/host_link.hpp"
#include "annals/actors/detail/messages.hpp"
#include "annals/actors/detail/runtime_context.hpp"
#include "annals/actors/detail/state_query.hpp"
#include "annals/actors/options.hpp"
#include "annals/actors/system.hpp"
#include "annals/aggregate.hpp"
#include "annals/named_aggregate.hpp"
#include "annals/persistence/journal.hpp"
#include "annals/persistence_id.hpp"

namespace annals::actors {

namespace detail {

/// The host's routes to live aggregate actors and its clients' request deadlines (host.cpp).
struct router;

/// Takes the request of deadline `token` off the deadline list (its reply arrived).
void request_done(router& r, std::uint64_t token) noexcept;

} // namespace detail

/// How one command is sent: how long to wait for its reply, and who sends it (stored with
/// the events it causes, for idempotency and tracing). Fill it with designated
/// initializers, naming only what differs from the defaults:
///
/// ```cpp
/// bank.ask<bank::account>("acc-42", bank::deposit{500}, {.idempotency_key = "pay-1"});
/// bank.ask<bank::account>("acc-42", bank::get_balance{}, {.timeout = 2s});
/// ```
///
/// The two ids are views: every call copies them before it returns, so they may point at
/// temporaries of the calling expression. Views also keep the struct trivially
/// destructible, which matters where it is created inside a `co_await` expression
/// (`co_await actors::ask<A>(host, id, cmd, {.idempotency_key = key})`): GCC 12 destroys
/// an aggregate temporary there twice (docs/pitfalls.md), harmless only for such a type.
struct command_options {
  /// How long to wait for the reply; past it the caller gets `sec::request_timeout`.
  std::chrono::milliseconds timeout = std::chrono::seconds{10};
  /// A command whose key the aggregate already handled (within its de-duplication window,
  /// also across restarts) returns the original reply and persists nothing. Empty: no
  /// de-duplication. Stored as the events' command id.
  std::string_view idempotency_key;
  /// Ties the events of one business process together (e.g. a transfer's id).
  std::string_view correlation_id;
};

/// A command's reply together with where its events went, for read-your-writes:
///
/// ```cpp
/// auto r = bank.ask_reply<bank::account>("acc-42", bank::deposit{500});
/// if (r)
///   balances.await_offset(r->offset, 5s);  // the read model now shows the deposit
/// ```
template <class R>
struct reply {
  /// What the handler returned.
  R value;
  /// The aggregate's version after the command: the sequence number of its newest event.
  std::uint64_t version = 0;
  /// The global journal offset of the last event the command persisted; 0 if it persisted
  /// none (a read-only command, or one that decided nothing changes), so that
  /// `await_offset(offset)` returns at once. A de-duplicated retry carries the offset of
  /// its first attempt.
  std::uint64_t offset = 0;
};

/// The reply of a command whose handler returns nothing.
template <>
struct reply<void> {
  std::uint64_t version = 0;
  std::uint64_t offset = 0;
};

/// Counters of a host since it started.
struct host_metrics {
  std::uint64_t commands_handled = 0;
  std::uint64_t commands_failed = 0;
  std::uint64_t events_persisted = 0;
  std::uint64_t recoveries = 0;
  std::uint64_t events_replayed = 0;
  std::uint64_t snapshots_written = 0;
  std::uint64_t passivations = 0;
  std::uint64_t duplicates = 0;
  /// Commands decided while events of their aggregate were still on their way to the
  /// journal (see `aggregate_options::pipeline_depth`).
  std::uint64_t commands_pipelined = 0;
};

/// Hosts aggregate actors on one actor system; see the file comment.
class host {
public:
  /// A host on `sys`. On an `annals::actors::actor_system` the host and the system may end
  /// in either order (see `actor_system`); on a plain `caf::actor_system`, destroy the host
  /// first.
  host(caf::actor_system& sys, persistence::journal_ptr journal,
       persistence::snapshot_store_ptr snapshots = nullptr, host_options opts = {});

  /// Stops the host's aggregate actors: the commands they already run finish (their events
  /// are persisted), the others are refused.
  ~host();

  host(const host&) = delete;
  host& operator=(const host&) = delete;

  /// Makes aggregate type `A` reachable under its name `A::name` (e.g. `account`; it
  /// prefixes the persistence ids: `account|acc-42`). Fails if the name is taken or
  /// invalid, or if `A`'s event codec is invalid (two types under one name, an upcaster
  /// chain with a hole): such problems surface here, at start-up, not at replay time.
  ///
  /// `make` builds each instance (e.g. to hand a process manager the host it asks);
  /// without it, instances are default-constructed.
  ///
  /// ```cpp
  /// if (auto err = host.register_aggregate<bank::account>({.snapshot_every = 100}))
  ///   return fail(err);
  /// ```
  template <named_aggregate A>
  [[nodiscard]] caf::error register_aggregate(aggregate_options opts = {},
                                              std::function<A()> make = {}) {
    if (auto err = A::codec_type::validate())
      return err;
    std::string type_name{aggregate_name<A>()};
    auto ctx = std::make_shared<detail::runtime_context>();
    ctx->type_name = type_name;
    ctx->journal = journal_;
    ctx->snapshots = snapshots_;
    ctx->options = opts;
    ctx->warn = warn_;
    ctx->stats = stats_;
    std::shared_ptr<const detail::runtime_context> cctx = std::move(ctx);
    std::shared_ptr<const std::function<A()>> factory;
    if (make)
      factory = std::make_shared<const std::function<A()>>(std::move(make));
    spawn_fn spawn = [cctx, factory](caf::actor_system& sys, const std::string& id, caf::actor reg,
                                     const void* route) {
      return sys.spawn(&detail::aggregate_actor<A>, cctx, id, std::move(reg), route, factory);
    };
    return add_type(std::move(type_name), &annals::detail::type_token<A>, std::move(spawn));
  }

  /// Sends `cmd` to aggregate `id` of type `A` and waits for the reply, at most
  /// `opts.timeout`. For plain code (main, tests); actors use `request`, coroutines run by
  /// an actor `actors::ask`, code that must not block `ask_async`.
  template <aggregate_type A, class C>
  requires handles<A, C>
  [[nodiscard]] caf::expected<reply_t<A, C>> ask(std::string_view id, C cmd,
                                                 command_options opts = {}) {
    using T = reply_t<A, C>;
    return blocking_request<T>(make_envelope<A>(id, std::move(cmd), opts), opts.timeout,
                               [](detail::reply_msg& r) { return unbox<T>(r); });
  }

  /// Like `ask`, but the reply also says where the command's events went: the aggregate's
  /// version and the global offset of its last event (see `reply`), so that a projection
  /// can be awaited up to exactly this command's effects.
  template <aggregate_type A, class C>
  requires handles<A, C>
  [[nodiscard]] caf::expected<reply<reply_t<A, C>>> ask_reply(std::string_view id, C cmd,
                                                              command_options opts = {}) {
    using T = reply_t<A, C>;
    return blocking_request<reply<T>>(make_envelope<A>(id, std::move(cmd), opts), opts.timeout,
                                      [](detail::reply_msg& r) -> caf::expected<reply<T>> {
                                        if constexpr (std::is_void_v<T>) {
                                          return reply<T>{r.version, r.offset};
                                        } else {
                                          auto v = unbox<T>(r);
                                          if (!v)
                                            return std::move(v.error());
                                          return reply<T>{std::move(*v), r.version, r.offset};
                                        }
                                      });
  }

  /// Sends `cmd` from actor `self` and calls `on_reply` with the `expected` reply on
  /// `self`'s own thread, at most `opts.timeout` later.
  template <aggregate_type A, class C, class F>
  requires handles<A, C>
  void request(caf::event_based_actor* self, std::string_view id, C cmd, F on_reply,
               command_options opts = {}) {
    using T = reply_t<A, C>;
    auto env = make_envelope<A>(id, std::move(cmd), opts);
    if (!env) {
      on_reply(caf::expected<T>{std::move(env.error())});
      return;
    }
    // No CAF request timeout (one clock entry per request, kept until it expires even after
    // the reply): the host's deadline list answers `sec::request_timeout` instead.
    auto sent = send_command(self, std::move(*env), opts.timeout);
    self->add_multiplexed_response_handler(
      sent.response_id,
      caf::behavior{[on_reply, r = router_, token = sent.token](detail::reply_msg& m) mutable {
                      detail::request_done(*r, token);
                      on_reply(unbox<T>(m));
                    },
                    [on_reply, r = router_, token = sent.token](caf::error& err) mutable {
                      detail::request_done(*r, token);
                      on_reply(caf::expected<T>{std::move(err)});
                    }});
  }

  /// Sends `cmd` from code that is not an actor and must not block (an HTTP server's I/O
  /// threads, a timer): `on_reply` gets the `expected` reply, at most `opts.timeout`
  /// later, on one of CAF's threads, so it should only hand the result on (post it to an
  /// I/O loop, fulfil a promise). Each call spawns a short-lived actor that waits for the
  /// reply.
  ///
  /// ```cpp
  /// host.ask_async<bank::account>("acc-42", bank::deposit{500},
  ///                               [respond](caf::expected<bank::account_view> r) { ... });
  /// ```
  ///
  /// `on_reply` may call `ask_async` again: that is how plain code keeps N commands in
  /// flight (start N, and send the next one from each reply). It must not call the
  /// blocking members (`ask`, `state`, `drain`, `live_count`): they would park one of
  /// CAF's threads, which the replies they wait for may need. An id the host refuses
  /// (`check_id`) calls `on_reply` at once, on the calling thread.
  template <aggregate_type A, class C, class F>
  requires handles<A, C>
  void ask_async(std::string_view id, C cmd, F on_reply, command_options opts = {}) {
    using T = reply_t<A, C>;
    auto env = make_envelope<A>(id, std::move(cmd), opts);
    if (env && link_->system_gone)
      env = gone();
    if (!env) {
      on_reply(caf::expected<T>{std::move(env.error())});
      return;
    }
    sys_->spawn([reg = link_->registry, timeout = opts.timeout, msg = std::move(*env),
                 on_reply = std::move(on_reply)](caf::event_based_actor* self) mutable {
      self->request(reg, caf::duration{timeout}, std::move(msg))
        .then([on_reply](detail::reply_msg& r) mutable { on_reply(unbox<T>(r)); },
              [on_reply](caf::error& err) mutable { on_reply(caf::expected<T>{std::move(err)}); });
    });
  }

  /// Builds the message that carries `cmd` to aggregate `id` of type `A`; fails for an
  /// unregistered type, or an id (aggregate, idempotency key or correlation id) that
  /// `check_id` refuses. `opts.timeout` plays no part here.
  template <aggregate_type A, class C>
  requires handles<A, C>
  [[nodiscard]] caf::expected<detail::envelope>
  make_envelope(std::string_view id, C cmd, const command_options& opts = {}) const {
    return envelope_for<A>(id, opts, std::make_shared<detail::typed_command<A, C>>(std::move(cmd)));
  }

  /// The current state of aggregate `id` of type `A` (recovered first if its actor was
  /// not live), without a command handler for it; waits at most `timeout`. Persists
  /// nothing; an id that never received an event has the default state.
  ///
  /// ```cpp
  /// auto acc = bank.state<bank::account>("acc-42");  // expected<bank::account_state>
  /// ```
  template <named_aggregate A>
  [[nodiscard]] caf::expected<typename A::state_type>
  state(std::string_view id, std::chrono::milliseconds timeout = std::chrono::seconds{10}) {
    using S = typename A::state_type;
    return blocking_request<S>(envelope_for<A>(id, {}, std::make_shared<detail::state_query<A>>()),
                               timeout, [](detail::reply_msg& r) { return unbox<S>(r); });
  }

  /// The registry actor that routes commands (`detail::envelope` messages).
  const caf::actor& registry() const noexcept {
    return link_->registry;
  }

  /// Counters since start.
  host_metrics metrics() const;

  /// Graceful shutdown: from now on every command is refused with `annals.unavailable`;
  /// the commands already routed to an aggregate finish (their events are persisted and
  /// their replies sent), then every aggregate actor stops. Returns once none is left, or
  /// `sec::request_timeout` after `timeout`. For a SIGTERM handler.
  [[nodiscard]] caf::error drain(std::chrono::milliseconds timeout = std::chrono::seconds{30});

  /// Number of live aggregate actors (asks the registry; bounded by `timeout`).
  [[nodiscard]] caf::expected<std::size_t>
  live_count(std::chrono::milliseconds timeout = std::chrono::seconds{5}) const;

  /// Checks an aggregate id (or, naming it `what` in the error, a command or correlation
  /// id): non-empty, at most 255 bytes, valid UTF-8 without control characters. Ids are
  /// stored in the journal and shown in JSON, so arbitrary bytes are refused.
  [[nodiscard]] static caf::error check_id(std::string_view id,
                                           std::string_view what = "aggregate id");

private:
  // Spawns the actor of aggregate `id`, which passivates itself through `registry` naming
  // `route` (see `detail::passivate_msg`).
  using spawn_fn = std::function<caf::actor(caf::actor_system&, const std::string& id,
                                            caf::actor registry, const void* route)>;

  template <class T>
  static caf::expected<T> unbox(detail::reply_msg& r) {
    if constexpr (std::is_void_v<T>) {
      return {};
    } else {
      if (auto* v = std::any_cast<T>(&r.value))
        return std::move(*v);
      return make_error(errc::invalid_argument, "reply of an unexpected type");
    }
  }

  template <aggregate_type A>
  caf::expected<detail::envelope> envelope_for(std::string_view id, const command_options& opts,
                                               std::shared_ptr<detail::command_base> cmd) const {
    auto type_name = name_of(&annals::detail::type_token<A>);
    if (!type_name)
      return std::move(type_name.error());
    if (auto err = check_id(id))
      return err;
    if (!opts.idempotency_key.empty())
      if (auto err = check_id(opts.idempotency_key, "command id"))
        return err;
    if (!opts.correlation_id.empty())
      if (auto err = check_id(opts.correlation_id, "correlation id"))
        return err;
    return detail::envelope{
      std::move(*type_name), std::string{id},
      event_metadata{std::string{opts.idempotency_key}, std::string{opts.correlation_id}},
      std::move(cmd)};
  }

  // Sends `env` and waits at most `timeout` for the reply, which `take` unpacks.
  template <class T, class Take>
  caf::expected<T> blocking_request(caf::expected<detail::envelope> env,
                                    std::chrono::milliseconds timeout, Take take) {
    if (!env)
      return std::move(env.error());
    if (link_->system_gone)
      return gone();
    caf::scoped_actor self{*sys_};
    caf::expected<T> result{caf::error{}};
    self->request(link_->registry, caf::duration{timeout}, std::move(*env))
      .receive([&](detail::reply_msg& r) { result = take(r); },
               [&](caf::error& err) { result = std::move(err); });
    return result;
  }

  // The error of every call after the host's actor system stopped it.
  static caf::error gone();

  struct sent_command {
    caf::message_id response_id;
    std::uint64_t token; // of its deadline; 0: none
  };

  // Sends `env` from `self`: straight to the aggregate's actor when it is live and nothing
  // for it is on its way through the registry, through the registry otherwise; and puts the
  // request on the deadline list, which answers `sec::request_timeout` after `timeout`.
  sent_command send_command(caf::event_based_actor* self, detail::envelope env,
                            std::chrono::milliseconds timeout);

  caf::error add_type(std::string name, const void* token, spawn_fn spawn);
  caf::expected<std::string> name_of(const void* token) const;

public:
  struct shared; // the type table, shared with the registry actor

private:
  caf::actor_system* sys_;
  persistence::journal_ptr journal_;
  persistence::snapshot_store_ptr snapshots_;
  std::function<void(std::string_view)> warn_;
  std::shared_ptr<detail::counters> stats_;
  std::shared_ptr<shared> shared_;
  std::shared_ptr<detail::host_link> link_; // holds the registry actor
  std::shared_ptr<detail::router> router_;  // live aggregates' actors, request deadlines
};

} // namespace annals::actors

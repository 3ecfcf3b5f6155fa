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
/// host.register_aggregate<bank::account>("account");
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
#include "annals/actors/detail/messages.hpp"
#include "annals/actors/detail/runtime_context.hpp"
#include "annals/actors/options.hpp"
#include "annals/aggregate.hpp"
#include "annals/persistence/journal.hpp"

namespace annals::actors {

/// Who sends a command, for idempotency and tracing; stored with the events it causes.
///
/// Not an aggregate on purpose: GCC 12 destroys an aggregate temporary created inside a
/// `co_await` expression twice (docs/pitfalls.md), and `ask(..., {"key"})` is such a place.
struct command_options {
  command_options() = default;
  command_options(std::string command_id_, std::string correlation_id_ = {})
    : command_id(std::move(command_id_)), correlation_id(std::move(correlation_id_)) {}

  /// Idempotency key: a command whose id the aggregate already handled (within its
  /// de-duplication window, also across restarts) returns the original reply and persists
  /// nothing. Empty: no de-duplication.
  std::string command_id;
  /// Ties the events of one business process together (e.g. a transfer's id).
  std::string correlation_id;
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
};

/// Hosts aggregate actors on one actor system; see the file comment.
class host {
public:
  host(caf::actor_system& sys, persistence::journal_ptr journal,
       persistence::snapshot_store_ptr snapshots = nullptr, host_options opts = {});
  ~host();

  host(const host&) = delete;
  host& operator=(const host&) = delete;

  /// Makes aggregate type `A` reachable under `type_name` (e.g. `account`; it prefixes the
  /// persistence ids: `account|acc-42`). Fails if the name is taken or invalid, or if `A`'s
  /// event codec is invalid (two types under one name, an upcaster chain with a hole):
  /// such problems surface here, at start-up, not at replay time.
  ///
  /// `make` builds each instance (e.g. to hand a process manager the host it asks);
  /// without it, instances are default-constructed.
  template <aggregate_type A>
  caf::error register_aggregate(std::string type_name, aggregate_options opts = {},
                                std::function<A()> make = {}) {
    if (auto err = A::codec_type::validate())
      return err;
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
    spawn_fn spawn = [cctx, factory](caf::actor_system& sys, const std::string& id,
                                     caf::actor reg) {
      return sys.spawn(&detail::aggregate_actor<A>, cctx, id, std::move(reg), factory);
    };
    return add_type(std::move(type_name), &annals::detail::type_token<A>, std::move(spawn));
  }

  /// Sends `cmd` to aggregate `id` of type `A` and waits for the reply, at most `timeout`.
  /// For plain code (main, tests); actors use `request` instead.
  template <aggregate_type A, class C>
  requires handles<A, C> caf::expected<reply_t<A, C>>
  ask(std::string_view id, C cmd, std::chrono::milliseconds timeout = std::chrono::seconds{10},
      command_options opts = {}) {
    auto env = make_envelope<A>(id, std::move(cmd), std::move(opts));
    if (!env)
      return std::move(env.error());
    caf::scoped_actor self{*sys_};
    caf::expected<reply_t<A, C>> result{caf::error{}};
    self->request(registry_, caf::duration{timeout}, std::move(*env))
      .receive([&](detail::reply_msg& r) { result = unbox<reply_t<A, C>>(r); },
               [&](caf::error& err) { result = std::move(err); });
    return result;
  }

  /// Sends `cmd` from actor `self` and calls `on_reply` with the `expected` reply on
  /// `self`'s own thread, at most `timeout` later.
  template <aggregate_type A, class C, class F>
  requires handles<A, C>
  void request(caf::event_based_actor* self, std::string_view id, C cmd,
               std::chrono::milliseconds timeout, F on_reply, command_options opts = {}) {
    using T = reply_t<A, C>;
    auto env = make_envelope<A>(id, std::move(cmd), std::move(opts));
    if (!env) {
      on_reply(caf::expected<T>{std::move(env.error())});
      return;
    }
    self->request(registry_, caf::duration{timeout}, std::move(*env))
      .then([on_reply](detail::reply_msg& r) mutable { on_reply(unbox<T>(r)); },
            [on_reply](caf::error& err) mutable { on_reply(caf::expected<T>{std::move(err)}); });
  }

  /// Sends `cmd` from code that is not an actor and must not block (an HTTP server's I/O
  /// threads, a timer): `on_reply` gets the `expected` reply, at most `timeout` later, on
  /// one of CAF's threads, so it should only hand the result on (post it to an I/O loop,
  /// fulfil a promise). Each call spawns a short-lived actor that waits for the reply.
  ///
  /// ```cpp
  /// host.ask_async<bank::account>("acc-42", bank::deposit{500}, 10s,
  ///                               [respond](caf::expected<bank::account_view> r) { ... });
  /// ```
  template <aggregate_type A, class C, class F>
  requires handles<A, C>
  void ask_async(std::string_view id, C cmd, std::chrono::milliseconds timeout, F on_reply,
                 command_options opts = {}) {
    using T = reply_t<A, C>;
    auto env = make_envelope<A>(id, std::move(cmd), std::move(opts));
    if (!env) {
      on_reply(caf::expected<T>{std::move(env.error())});
      return;
    }
    sys_->spawn([reg = registry_, timeout, msg = std::move(*env),
                 on_reply = std::move(on_reply)](caf::event_based_actor* self) mutable {
      self->request(reg, caf::duration{timeout}, std::move(msg))
        .then([on_reply](detail::reply_msg& r) mutable { on_reply(unbox<T>(r)); },
              [on_reply](caf::error& err) mutable { on_reply(caf::expected<T>{std::move(err)}); });
    });
  }

  /// Builds the message that carries `cmd` to aggregate `id` of type `A`; fails for an
  /// unregistered type, or an id (aggregate, command or correlation) that `check_id`
  /// refuses.
  template <aggregate_type A, class C>
  requires handles<A, C> caf::expected<detail::envelope> make_envelope(std::string_view id, C cmd,
                                                                       command_options opts = {})
  const {
    auto type_name = name_of(&annals::detail::type_token<A>);
    if (!type_name)
      return std::move(type_name.error());
    if (auto err = check_id(id))
      return err;
    if (!opts.command_id.empty())
      if (auto err = check_id(opts.command_id, "command id"))
        return err;
    if (!opts.correlation_id.empty())
      if (auto err = check_id(opts.correlation_id, "correlation id"))
        return err;
    return detail::envelope{
      std::move(*type_name), std::string{id},
      event_metadata{std::move(opts.command_id), std::move(opts.correlation_id)},
      std::make_shared<detail::typed_command<A, C>>(std::move(cmd))};
  }

  /// The registry actor that routes commands (`detail::envelope` messages).
  const caf::actor& registry() const noexcept {
    return registry_;
  }

  /// The persistence id of aggregate `id` of a registered type: `type|id`.
  static std::string persistence_id(std::string_view type_name, std::string_view id);

  /// Counters since start.
  host_metrics metrics() const;

  /// Graceful shutdown: from now on every command is refused with `annals.unavailable`;
  /// the commands already routed to an aggregate finish (their events are persisted and
  /// their replies sent), then every aggregate actor stops. Returns once none is left, or
  /// `sec::request_timeout` after `timeout`. For a SIGTERM handler.
  caf::error drain(std::chrono::milliseconds timeout = std::chrono::seconds{30});

  /// Number of live aggregate actors (asks the registry; bounded by `timeout`).
  caf::expected<std::size_t> live_count(std::chrono::milliseconds timeout = std::chrono::seconds{
                                          5}) const;

  /// Checks an aggregate id (or, naming it `what` in the error, a command or correlation
  /// id): non-empty, at most 255 bytes, valid UTF-8 without control characters. Ids are
  /// stored in the journal and shown in JSON, so arbitrary bytes are refused.
  static caf::error check_id(std::string_view id, std::string_view what = "aggregate id");

private:
  using spawn_fn = std::function<caf::actor(caf::actor_system&, const std::string&, caf::actor)>;

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
  caf::actor registry_;
};

} // namespace annals::actors

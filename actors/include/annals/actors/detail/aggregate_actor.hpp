#pragma once

// The aggregate actor: one per aggregate id. `aggregate_core` (a compiled class) holds what
// does not depend on the aggregate type: the phases (recovering, running, reloading,
// recomputing, failed), the command queue, the journal requests and their timer, the
// de-duplication window and passivation. `aggregate_runtime<A>` adds decoding, applying
// and running `A`'s handlers.

#include <any>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <caf/after.hpp>
#include <caf/behavior.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include "annals/actors/detail/aggregate_core.hpp"
#include "annals/aggregate.hpp"
#include "annals/codec.hpp"
#include "annals/fold.hpp"
#include "annals/persistence/decode.hpp"

namespace annals::actors::detail {

template <class T>
class typed_run final : public run_base {
public:
  explicit typed_run(command_run<T> run) : run_(std::move(run)) {}
  bool done() const noexcept override {
    return run_.done();
  }
  caf::expected<std::any> take() override {
    auto r = run_.take();
    if (!r)
      return std::move(r.error());
    if constexpr (std::is_void_v<T>)
      return std::any{caf::unit};
    else
      return std::any{std::move(*r)};
  }
  void abandon() noexcept override {
    run_.abandon();
  }

private:
  command_run<T> run_;
};

template <class A, class C>
class typed_command final : public command_base {
public:
  explicit typed_command(C cmd) : cmd_(std::move(cmd)) {}
  std::unique_ptr<run_base> start(void* agg) override {
    using T = reply_t<A, C>;
    return std::make_unique<typed_run<T>>(
      command_run<T>::start(*static_cast<A*>(agg), std::move(cmd_)));
  }

private:
  C cmd_;
};

/// Completes every persist at once without storing anything; used to recompute a reply.
class discarding_port final : public persist_port {
public:
  bool begin(pending_persist& op) override {
    op.apply();
    return false;
  }
};

int64_t now_us();

template <class State>
constexpr bool snapshottable = requires {
  State::name;
}
&&boost::json::has_value_from<State>::value&& boost::json::has_value_to<State>::value;

template <class A>
class aggregate_runtime final : public aggregate_core {
public:
  using state_type = typename A::state_type;
  using codec_type = typename A::codec_type;

  aggregate_runtime(caf::event_based_actor* self, std::shared_ptr<const runtime_context> ctx,
                    std::string id, std::shared_ptr<const std::function<A()>> make)
    : aggregate_core(self, std::move(ctx), std::move(id)), make_(std::move(make)) {
    reset();
  }

  ~aggregate_runtime() override {
    // A suspended handler's frame refers to `agg_`: it goes first.
    abandon_run();
  }

private:
  bool snapshottable() const noexcept override {
    return detail::snapshottable<state_type>;
  }

  std::uint64_t restore(std::vector<persistence::snapshot_record>& snaps) override {
    if constexpr (detail::snapshottable<state_type>) {
      for (auto& snap : snaps) {
        auto st = type_codec<state_type>::from_json(snap.version, snap.payload);
        if (st) {
          aggregate_access::reset(*agg_, std::move(*st), snap.seq);
          return snap.seq;
        }
        context().warn("skipping snapshot of " + persistence_id() + " at seq "
                       + std::to_string(snap.seq) + ": " + render(st.error()));
      }
    }
    return 0;
  }

  std::pair<std::size_t, caf::error>
  fold(std::span<const persistence::event_record> page) override {
    return fold_into(*agg_, page);
  }

  std::unique_ptr<run_base> start_run(envelope& env) override {
    return env.command->start(static_cast<void*>(&*agg_));
  }

  void begin_scratch() override {
    scratch_ = std::make_unique<A>(make_ ? (*make_)() : A{});
  }

  std::pair<std::size_t, caf::error>
  fold_scratch(std::span<const persistence::event_record> page) override {
    return fold_into(*scratch_, page);
  }

  std::pair<std::size_t, caf::error> fold_into(A& agg,
                                               std::span<const persistence::event_record> page) {
    auto out = fold_events<A>(aggregate_access::state(agg), page);
    aggregate_access::advance(agg, out.folded);
    if (out.error)
      return {out.folded, persistence::corrupt_event(persistence_id(), out.seq, out.error)};
    return {out.folded, caf::error{}};
  }

  caf::expected<std::any> run_on_scratch(envelope& env) override {
    discarding_port port;
    aggregate_access::set_port(*scratch_, &port);
    auto run = env.command->start(static_cast<void*>(scratch_.get()));
    caf::expected<std::any> result =
      make_error(errc::handler_failed, "re-running a duplicate command did not complete");
    if (run->done())
      result = run->take();
    else
      run->abandon();
    run.reset();
    scratch_.reset();
    return result;
  }

  std::optional<persistence::snapshot_record> take_snapshot(std::uint64_t seq) override {
    if constexpr (detail::snapshottable<state_type>) {
      return persistence::snapshot_record{persistence_id(),
                                          seq,
                                          std::string{state_type::name},
                                          schema_version<state_type>(),
                                          type_codec<state_type>::to_json(agg_->state()),
                                          now_us()};
    } else {
      return std::nullopt;
    }
  }

  void reset() override {
    // Built in place from the factory's result: an aggregate need not be assignable.
    struct fresh {
      const std::function<A()>* make;
      operator A() const {
        return make ? (*make)() : A{};
      }
    };
    agg_.emplace(fresh{make_.get()});
    aggregate_access::set_port(*agg_, this);
  }

  std::shared_ptr<const std::function<A()>> make_; // null: default construction
  std::optional<A> agg_;
  std::unique_ptr<A> scratch_; // the aggregate a recompute runs on
};

template <class A>
struct aggregate_actor_state {
  std::unique_ptr<aggregate_runtime<A>> rt;
};

template <class A>
caf::behavior aggregate_actor(caf::stateful_actor<aggregate_actor_state<A>>* self,
                              std::shared_ptr<const runtime_context> ctx, std::string id,
                              caf::actor registry, const void* route,
                              std::shared_ptr<const std::function<A()>> make) {
  auto idle = ctx->options.idle_timeout;
  self->state.rt =
    std::make_unique<aggregate_runtime<A>>(self, std::move(ctx), std::move(id), std::move(make));
  self->state.rt->start();
  auto* rt = self->state.rt.get();
  // The journal's completions and the registry's stop go through the default handler, not
  // the behavior: each case of a behavior costs about 40 bytes in every live aggregate,
  // and a default handler capturing one pointer fits in the std::function CAF keeps anyway.
  self->set_default_handler(
    [rt](caf::scheduled_actor*, caf::message_view& x) -> caf::result<caf::message> {
      auto& c = x.content();
      if (c.size() == 1) {
        if (c.match_element<append_done>(0))
          rt->on_append(c.get_mutable_as<append_done>(0));
        else if (c.match_element<events_read>(0))
          rt->on_events(c.get_mutable_as<events_read>(0));
        else if (c.match_element<snapshots_read>(0))
          rt->on_snapshots(c.get_mutable_as<snapshots_read>(0));
        else if (c.match_element<io_timeout>(0))
          rt->on_timeout(c.get_mutable_as<io_timeout>(0));
        else if (c.match_element<caf::atom_value>(0)
                 && c.get_as<caf::atom_value>(0) == stop_atom::value)
          rt->on_stop();
      }
      // Nothing to answer (a value here would be sent back to a `delayed_send` from self).
      return caf::delegated<caf::message>{};
    });
  auto on_command = [rt](envelope& env) -> caf::result<reply_msg> { return rt->on_command(env); };
  if (idle.count() <= 0) // no timeout case: it would cost memory in every aggregate
    return {on_command};
  return {
    on_command,
    caf::after(caf::duration{idle}) >>
      [self, rt, registry, route] {
        // Only the registry may retire an actor: it first stops routing to it.
        if (rt->idle())
          self->send(registry, passivate_msg{route});
      },
  };
}

} // namespace annals::actors::detail

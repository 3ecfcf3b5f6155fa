#pragma once

/// @file
/// `annals::testkit<A>`: tests an aggregate without an actor system or a database.
///
/// `given` sets up history, `when` runs one command and returns the events it persisted,
/// its reply (or error) and the new state; `restart` rebuilds the state by replaying every
/// stored event from its JSON and checks that it equals the live state. Every event takes
/// the JSON road the journal would take: a codec that loses or changes a field makes
/// `when` or `given` throw `annals::testkit_failure`, which fails the test.
///
/// ```cpp
/// annals::testkit<bank::account> kit;
/// kit.given(bank::opened{"Ada"}, bank::deposited{500});
/// auto out = kit.when(bank::withdraw{200});
/// REQUIRE(out.reply == 300);
/// REQUIRE(out.event<bank::withdrawn>().cents == 200);
/// kit.restart();  // replays all three events and compares the states
/// ```

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <caf/expected.hpp>

#include "annals/aggregate.hpp"
#include "annals/detail/equal.hpp"
#include "annals/error.hpp"
#include "annals/fold.hpp"

namespace annals {

/// Thrown by the testkit when the aggregate under test breaks a framework guarantee
/// (a lossy codec, a replay that differs from the live state, an invalid codec).
class testkit_failure : public std::logic_error {
public:
  using std::logic_error::logic_error;
};

/// What one command did.
template <class T, class Event, class State>
struct outcome {
  std::vector<Event> events; ///< the events persisted, in order (decoded from their JSON)
  caf::expected<T> reply;    ///< the handler's value or error
  State state;               ///< the state after the command

  /// The `i`-th persisted event as `E`; throws `testkit_failure` if it is another type.
  template <class E>
  const E& event(std::size_t i = 0) const {
    if (i >= events.size())
      throw testkit_failure{"no event #" + std::to_string(i) + " (the command persisted "
                            + std::to_string(events.size()) + ")"};
    if (auto* e = std::get_if<E>(&events[i]))
      return *e;
    throw testkit_failure{"event #" + std::to_string(i) + " is not " + std::string{E::name}};
  }

  /// The error of a failed command (empty if it succeeded).
  caf::error error() const {
    return reply ? caf::error{} : reply.error();
  }
};

/// Runs commands against one aggregate instance; see the file comment.
template <aggregate_type A>
class testkit {
public:
  using state_type = typename A::state_type;
  using event_type = typename A::event_type;
  using codec_type = typename A::codec_type;

  /// Constructs the aggregate from `args` and validates its codec (names, upcasters).
  template <class... Args>
  explicit testkit(Args&&... args)
    : args_factory_([=] { return A{args...}; }), aggregate_(args_factory_()) {
    if (auto err = codec_type::validate())
      throw testkit_failure{"invalid event codec: " + render(err)};
    aggregate_access::set_port(aggregate_, &port_);
  }

  testkit(const testkit&) = delete;
  testkit& operator=(const testkit&) = delete;

  /// Records `events` as history, as if earlier commands had persisted them.
  template <class... Es>
  testkit& given(const Es&... events) {
    (given_one(event_type{events}), ...);
    return *this;
  }

  /// Runs one command and returns what it did.
  template <class C>
  requires handles<A, C> outcome<reply_t<A, C>, event_type, state_type> when(C cmd) {
    using reply_type = reply_t<A, C>;
    port_.persisted.clear();
    auto run = command_run<reply_type>::start(aggregate_, std::move(cmd));
    std::string failure = std::move(port_.codec_failure);
    port_.codec_failure.clear();
    if (!failure.empty()) {
      run.abandon();
      throw testkit_failure{"event codec round trip failed:\n" + failure};
    }
    outcome<reply_type, event_type, state_type> out{{}, caf::error{}, {}};
    if (!run.done()) {
      // The port never leaves a handler suspended except for an injected failure.
      run.abandon();
      out.reply = std::move(port_.injected_failure);
      port_.injected_failure = caf::error{};
    } else {
      out.reply = run.take();
    }
    for (auto& enc : port_.persisted)
      out.events.push_back(decode_or_throw(enc));
    out.state = aggregate_.state();
    return out;
  }

  /// Rebuilds the state by replaying every stored event from its JSON into a fresh
  /// aggregate, checks that it equals the live state, and continues with the rebuilt one.
  void restart() {
    A fresh = args_factory_();
    // The same fold as recovery, over the stored events numbered from 1 as the journal would.
    struct stored {
      std::uint64_t seq;
      std::string_view name;
      std::uint32_t version;
      std::string_view payload;
    };
    std::vector<stored> page;
    page.reserve(journal_.size());
    for (const auto& enc : journal_)
      page.push_back({page.size() + 1, enc.name, enc.version, enc.payload});
    auto out = fold_events<A>(aggregate_access::state(fresh), page);
    aggregate_access::advance(fresh, out.folded);
    if (out.error) {
      const auto& enc = journal_[out.seq - 1];
      throw testkit_failure{"stored event " + enc.name + " " + enc.payload + " (seq "
                            + std::to_string(out.seq) + ") does not decode: " + render(out.error)};
    }
    if (!detail::structurally_equal(fresh.state(), aggregate_.state()))
      throw testkit_failure{"the state rebuilt by replay differs from the live state"
                            + describe_states(fresh.state(), aggregate_.state())};
    aggregate_ = std::move(fresh);
    aggregate_access::set_port(aggregate_, &port_);
  }

  /// Makes the next persist fail with `err`: the handler is not resumed, nothing is
  /// stored or applied, and the command replies with `err`.
  void fail_next_persist(caf::error err) {
    port_.next_failure = std::move(err);
  }

  /// The current state.
  const state_type& state() const noexcept {
    return aggregate_.state();
  }

  /// Every event stored so far (given and persisted), encoded as the journal holds them.
  const std::vector<encoded_event>& journal() const noexcept {
    return journal_;
  }

  /// The aggregate under test, e.g. to call a read-only handler directly.
  A& aggregate() noexcept {
    return aggregate_;
  }

private:
  class port final : public persist_port {
  public:
    explicit port(testkit& kit) : kit_(kit) {}

    bool verify_codec() const noexcept override {
      return true;
    }

    bool begin(pending_persist& op) override {
      if (!op.codec_failure.empty()) {
        codec_failure = op.codec_failure;
        return true;
      }
      if (next_failure) {
        injected_failure = std::exchange(next_failure, caf::error{});
        return true;
      }
      for (auto& e : op.events) {
        persisted.push_back(e);
        kit_.journal_.push_back(e);
      }
      op.apply();
      return false;
    }

    std::vector<encoded_event> persisted;
    std::string codec_failure;
    caf::error next_failure;
    caf::error injected_failure;

  private:
    testkit& kit_;
  };

  void given_one(const event_type& e) {
    auto enc = codec_type::encode(e);
    auto back = decode_or_throw(enc);
    if (!detail::structurally_equal(back, e))
      throw testkit_failure{"event " + enc.name + " changes in its JSON round trip: " + enc.payload
                            + " decodes to " + codec_type::encode(back).payload};
    journal_.push_back(enc);
    aggregate_access::apply(aggregate_, back);
  }

  event_type decode_or_throw(const encoded_event& enc) {
    auto ev = codec_type::decode(enc.name, enc.version, enc.payload);
    if (!ev)
      throw testkit_failure{"stored event " + enc.name + " " + enc.payload
                            + " does not decode: " + render(ev.error())};
    return std::move(*ev);
  }

  static std::string describe_states(const state_type& replayed, const state_type& live) {
    if constexpr (boost::json::has_value_from<state_type>::value) {
      return ": replayed " + boost::json::serialize(boost::json::value_from(replayed)) + ", live "
             + boost::json::serialize(boost::json::value_from(live));
    } else {
      return {};
    }
  }

  std::function<A()> args_factory_;
  port port_{*this};
  A aggregate_;
  std::vector<encoded_event> journal_;
};

} // namespace annals

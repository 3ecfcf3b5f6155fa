#pragma once

// The command behind `host::state<A>`: it reads the aggregate's state, persists nothing and
// needs no handler on the aggregate.

#include <any>
#include <memory>

#include <caf/expected.hpp>

#include "annals/actors/detail/messages.hpp"

namespace annals::actors::detail {

/// A run that finished when it started, with `value` as its reply.
class finished_run final : public run_base {
public:
  explicit finished_run(std::any value) : value_(std::move(value)) {}
  bool done() const noexcept override {
    return true;
  }
  caf::expected<std::any> take() override {
    return std::move(value_);
  }
  void abandon() noexcept override {}

private:
  std::any value_;
};

/// Replies with a copy of the state of the aggregate (an `A`) it runs on.
template <class A>
class state_query final : public command_base {
public:
  std::unique_ptr<run_base> start(void* agg) override {
    return std::make_unique<finished_run>(std::any{static_cast<const A*>(agg)->state()});
  }
};

} // namespace annals::actors::detail

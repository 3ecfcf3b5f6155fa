// Read-your-writes: a command's reply carries the offset and version of the events it
// persisted, so a caller waits for a projection up to exactly that command in one call.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "annals/actors/typed_projection.hpp"
#include "annals/persistence/memory_journal.hpp"
#include "persistence/journal_fixtures.hpp"
#include "runtime_fixtures.hpp"

using namespace rt;
using annals::actors::host;
using bank::account;

namespace {

// Remembers each account's balance; any thread may read it.
class balances : public annals::actors::typed_projection<balances, account> {
public:
  void on(const bank::deposited& e, const annals::actors::envelope& env) {
    std::lock_guard guard{mtx_};
    totals_[std::string{env.entity_id()}] += e.cents;
  }
  std::int64_t of(const std::string& id) const {
    std::lock_guard guard{mtx_};
    auto i = totals_.find(id);
    return i == totals_.end() ? 0 : i->second;
  }

private:
  mutable std::mutex mtx_;
  std::map<std::string, std::int64_t> totals_;
};

} // namespace

TEST_CASE("ask_reply carries the offset and version of the command's events, and "
          "await_offset on it shows them in the read model",
          "[host][read-your-writes]") {
  auto journal = std::make_shared<ap::memory_journal>();
  system_config cfg;
  caf::actor_system sys{cfg};
  auto model = std::make_shared<balances>();
  auto proj = annals::actors::spawn_projection(sys, journal, model, {.name = "balances"});
  host h{sys, journal};
  REQUIRE_FALSE(h.register_aggregate<account>());
  auto opened = h.ask_reply<account>("a", bank::open{"Ada"});
  REQUIRE(opened);
  CHECK(opened->offset == 1);
  CHECK(opened->version == 1);
  REQUIRE(h.ask<account>("b", bank::open{"Bob"})); // offset 2, another stream
  for (int i = 1; i <= 5; ++i) {
    auto r = h.ask_reply<account>("a", bank::deposit{10});
    REQUIRE(r);
    CHECK(r->offset == 2 + static_cast<std::uint64_t>(i));
    CHECK(r->version == 1 + static_cast<std::uint64_t>(i));
    CHECK(r->value.balance == 10 * i);
    REQUIRE(proj.await_offset(r->offset, 30s));
    CHECK(model->of("a") == 10 * i); // the read model shows this very deposit
  }
  // A read-only command persists nothing: offset 0, the current version.
  auto read = h.ask_reply<account>("a", bank::get_balance{});
  REQUIRE(read);
  CHECK(read->value == 50);
  CHECK(read->offset == 0);
  CHECK(read->version == 6);
  // A de-duplicated retry answers with the first attempt's offset and version.
  auto first = h.ask_reply<account>("b", bank::deposit{7}, {.idempotency_key = "k"});
  REQUIRE(first);
  auto retry = h.ask_reply<account>("b", bank::deposit{7}, {.idempotency_key = "k"});
  REQUIRE(retry);
  CHECK(retry->offset == first->offset);
  CHECK(retry->version == first->version);
  // A refused command is an error, as with ask.
  auto refused = h.ask_reply<account>("a", bank::withdraw{1000});
  REQUIRE_FALSE(refused);
  CHECK(annals::is(refused.error(), bank::account_errc::insufficient_funds));
  proj.stop();
}

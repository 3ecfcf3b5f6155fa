#include <catch2/catch.hpp>

#include "account/transfer.hpp"
#include "actors/runtime_fixtures.hpp"
#include "annals/actors/host.hpp"

using namespace rt;
using annals::actors::host;
using bank::account;
using bank::transfer;
using bank::transfer_status;

namespace {

// One run of a bank: accounts and transfers on `journal`.
struct bank_run {
  explicit bank_run(ap::journal_ptr journal) : h(sys, std::move(journal)) {
    REQUIRE_FALSE(h.register_aggregate<account>());
    REQUIRE_FALSE(h.register_aggregate<transfer>({}, [this] { return transfer{&h}; }));
  }
  std::int64_t balance(const std::string& id) {
    auto b = h.ask<account>(id, bank::get_balance{});
    REQUIRE(b);
    return *b;
  }
  system_config cfg;
  caf::actor_system sys{cfg};
  host h;
};

std::size_t count_events(ap::journal& j, const std::string& pid, std::string_view name) {
  std::size_t n = 0;
  for (auto& e : stream(j, pid))
    n += e.name == name ? 1 : 0;
  return n;
}

} // namespace

TEST_CASE("a transfer moves money from one account to another", "[runtime][transfer]") {
  auto journal = std::make_shared<ap::memory_journal>();
  bank_run run{journal};
  REQUIRE(run.h.ask<account>("a", bank::open{"A"}));
  REQUIRE(run.h.ask<account>("b", bank::open{"B"}));
  REQUIRE(run.h.ask<account>("a", bank::deposit{100}));
  auto st = run.h.ask<transfer>("t1", bank::start_transfer{"t1", "a", "b", 60});
  REQUIRE(st);
  CHECK(*st == transfer_status::completed);
  CHECK(run.balance("a") == 40);
  CHECK(run.balance("b") == 60);
  CHECK(stream(*journal, "account|a").back().metadata.correlation_id == "transfer:t1");
}

TEST_CASE("a transfer the source account refuses moves nothing and ends compensated",
          "[runtime][transfer]") {
  auto journal = std::make_shared<ap::memory_journal>();
  bank_run run{journal};
  REQUIRE(run.h.ask<account>("a", bank::open{"A"}));
  REQUIRE(run.h.ask<account>("b", bank::open{"B"}));
  auto st = run.h.ask<transfer>("t1", bank::start_transfer{"t1", "a", "b", 60});
  REQUIRE(st);
  CHECK(*st == transfer_status::compensated);
  CHECK(run.balance("a") == 0);
  CHECK(run.balance("b") == 0);
  CHECK(count_events(*journal, "transfer|t1", "bank.transfer_failed") == 1);
}

TEST_CASE("a transfer whose target refuses the credit refunds the source", "[runtime][transfer]") {
  auto journal = std::make_shared<ap::memory_journal>();
  bank_run run{journal};
  REQUIRE(run.h.ask<account>("a", bank::open{"A"}));
  REQUIRE(run.h.ask<account>("a", bank::deposit{100}));
  auto st = run.h.ask<transfer>("t1", bank::start_transfer{"t1", "a", "nobody", 60});
  REQUIRE(st);
  CHECK(*st == transfer_status::compensated);
  CHECK(run.balance("a") == 100);
  CHECK(count_events(*journal, "account|a", "bank.withdrawn") == 1);
  CHECK(count_events(*journal, "account|a", "bank.deposited") == 2);
  auto events = stream(*journal, "transfer|t1");
  REQUIRE(events.back().name == "bank.transfer_refunded");
  CHECK(events.back().payload == R"({"reason":"not_found"})");
}

TEST_CASE("a transfer interrupted after its debit finishes after a restart without "
          "debiting twice",
          "[runtime][transfer][recovery]") {
  auto journal = std::make_shared<faulty_journal>();
  {
    bank_run run{journal};
    REQUIRE(run.h.ask<account>("a", bank::open{"A"}));
    REQUIRE(run.h.ask<account>("b", bank::open{"B"}));
    REQUIRE(run.h.ask<account>("a", bank::deposit{100}));
    // The account takes the debit, then the transfer cannot record it: a crash between
    // the two writes, as far as the transfer is concerned.
    journal->fault = [](const ap::append_request& req) -> caf::error {
      if (req.events.front().name == "bank.transfer_debited")
        return annals::make_error(ap::journal_errc::storage_error, "test: crash");
      return {};
    };
    auto st = run.h.ask<transfer>("t1", bank::start_transfer{"t1", "a", "b", 60});
    REQUIRE_FALSE(st);
    CHECK(run.balance("a") == 40);
    CHECK(*run.h.ask<transfer>("t1", bank::get_transfer{}) == transfer_status::pending);
  }
  journal->fault = nullptr;
  bank_run run{journal};
  auto resumed = bank::resume_pending_transfers(run.h, *journal);
  REQUIRE(resumed);
  CHECK(*resumed == 1);
  CHECK(*run.h.ask<transfer>("t1", bank::get_transfer{}) == transfer_status::completed);
  CHECK(run.balance("a") == 40);
  CHECK(run.balance("b") == 60);
  CHECK(count_events(*journal->inner, "account|a", "bank.withdrawn") == 1);
  CHECK(count_events(*journal->inner, "account|b", "bank.deposited") == 1);
}

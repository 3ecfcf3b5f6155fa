// annals_twowriter: one of two processes that write the same account through the same
// journal file (tests/actors/fault_runtime_test.cpp starts two at once). It opens the
// journal with a host, recovers the account, prints "ready", waits for a line on standard
// input, then makes its deposits one after the other. A deposit that fails with
// journal.conflict (the other process appended first) is sent again: the aggregate
// re-reads its tail after a failed append, so the retry builds on the other process's
// events. Any other failure is retried too, a bounded number of times. Both processes
// open the journal with `owner_lock` off: a service would refuse the second one.
//
// usage: annals_twowriter <journal file> <account id> <deposits> <first amount>
//
// Deposit i (from 0) is of <first amount> + i cents and carries the idempotency key
// "<first amount>/<i>", so a retry after a failure whose outcome is unclear cannot count
// twice. The last line of output is
//   ok=<deposits that succeeded> conflicts=<conflict replies> errors=<other failures>
//   max_attempts=<most attempts one deposit needed>
// and the exit code is 0 if every deposit succeeded, 1 if not, 2 on bad usage or a journal
// that does not open.

#include <cstdint>
#include <iostream>
#include <string>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "account/account.hpp"
#include "annals/actors/host.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/sqlite_journal.hpp"

namespace {

struct config : caf::actor_system_config {
  config() {
    annals::actors::configure(*this);
  }
};

constexpr int max_attempts_per_deposit = 100'000;
constexpr int max_other_failures = 50;

} // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: annals_twowriter <journal file> <account id> <deposits> <first amount>\n";
    return 2;
  }
  std::string path = argv[1];
  std::string id = argv[2];
  long deposits = std::stol(argv[3]);
  std::int64_t first_amount = std::stoll(argv[4]);
  // Without the owner lock, which would refuse the second process: what is tested here is
  // the journal's own detection of a second writer.
  auto journal = annals::persistence::sqlite_journal::open(
    {.path = path, .must_exist = true, .owner_lock = false});
  if (!journal) {
    std::cerr << annals::render(journal.error()) << '\n';
    return 2;
  }
  long ok = 0;
  long conflicts = 0;
  long errors = 0;
  int max_attempts = 0;
  {
    config cfg;
    caf::actor_system sys{cfg};
    annals::actors::host h{sys, *journal};
    if (auto err = h.register_aggregate<bank::account>()) {
      std::cerr << annals::render(err) << '\n';
      return 2;
    }
    auto recovered = h.ask<bank::account>(id, bank::get_account{});
    if (!recovered) {
      std::cerr << annals::render(recovered.error()) << '\n';
      return 2;
    }
    std::cout << "ready" << std::endl;
    std::string go;
    if (!std::getline(std::cin, go))
      return 2;
    for (long i = 0; i < deposits; ++i) {
      auto key = std::to_string(first_amount) + "/" + std::to_string(i);
      for (int attempt = 1; attempt <= max_attempts_per_deposit; ++attempt) {
        auto r =
          h.ask<bank::account>(id, bank::deposit{first_amount + i},
                               {.timeout = std::chrono::seconds{60}, .idempotency_key = key});
        if (r) {
          ++ok;
          max_attempts = std::max(max_attempts, attempt);
          break;
        }
        if (annals::is(r.error(), annals::persistence::journal_errc::conflict)) {
          ++conflicts;
          continue;
        }
        ++errors;
        std::cerr << "deposit " << i << ", attempt " << attempt << ": " << annals::render(r.error())
                  << '\n';
        if (errors >= max_other_failures)
          break;
      }
      if (errors >= max_other_failures)
        break;
    }
  }
  (*journal)->close();
  std::cout << "ok=" << ok << " conflicts=" << conflicts << " errors=" << errors
            << " max_attempts=" << max_attempts << std::endl;
  return ok == deposits ? 0 : 1;
}

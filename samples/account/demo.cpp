// The annals demo: bank accounts as event-sourced actors on an embedded SQLite journal.
//
// Session 1 opens two accounts and sends them commands; every accepted command is an
// event in the journal before its reply goes out, and a projection keeps a `balances`
// table in the same file. Then everything stops, as in a restart. Session 2 starts from
// the file alone: the aggregates recover by replay, the projection resumes from its
// stored offset, and the log shows what happened.

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <sqlite3.h>

#include "account/account.hpp"
#include "account/balances.hpp"
#include "annals/actors/host.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/blocking.hpp"
#include "annals/persistence/sqlite_journal.hpp"

namespace {

using namespace std::chrono_literals;
using annals::actors::host;
using bank::account;
namespace ap = annals::persistence;

struct config : caf::actor_system_config {
  config() {
    annals::actors::configure(*this);
  }
};

std::string money(std::int64_t cents) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%lld.%02lld", cents < 0 ? "-" : "",
                static_cast<long long>(std::llabs(cents) / 100),
                static_cast<long long>(std::llabs(cents) % 100));
  return buf;
}

void say(const std::string& what, const caf::expected<std::int64_t>& balance) {
  std::printf("  %-44s -> %s\n", what.c_str(),
              balance ? ("ok, balance " + money(*balance)).c_str()
                      : ("refused: " + annals::render(balance.error())).c_str());
}

void say(const std::string& what, const caf::expected<bank::account_view>& reply) {
  say(what, reply ? caf::expected<std::int64_t>{reply->balance} : reply.error());
}

void show_balances_table(const std::string& path) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, "SELECT id, owner, balance, status, version FROM balances ORDER BY id", -1,
                     &stmt, nullptr);
  std::printf("  %-8s %-6s %10s %-7s %s\n", "id", "owner", "balance", "status", "version");
  while (stmt != nullptr && sqlite3_step(stmt) == SQLITE_ROW)
    std::printf("  %-8s %-6s %10s %-7s %lld\n",
                reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)),
                reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1)),
                money(sqlite3_column_int64(stmt, 2)).c_str(),
                reinterpret_cast<const char*>(sqlite3_column_text(stmt, 3)),
                static_cast<long long>(sqlite3_column_int64(stmt, 4)));
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

std::uint64_t head_of(ap::journal& j) {
  auto head = ap::wait_for<std::uint64_t>([&](auto cb) { j.head_offset(std::move(cb)); }, 10s);
  return head ? *head : 0;
}

// Everything one run of the service holds: the actor system, the balances projection and
// the host of the account aggregates, all on one journal file. Members end in reverse
// order: host and projection before the actor system.
struct session {
  session(std::shared_ptr<ap::sqlite_journal> j, const std::string& path)
    : journal(std::move(j)),
      balances(annals::actors::spawn_projection(
        sys, journal, std::make_shared<bank::balances_projection>(),
        {.name = "balances",
         .path = path,
         .filter = annals::actors::event_filter::aggregate_type<bank::account>()})),
      bank(sys, journal, journal->snapshots()) {}

  std::shared_ptr<ap::sqlite_journal> journal;
  config cfg;
  caf::actor_system sys{cfg};
  annals::actors::projection balances;
  host bank;
};

int fail(const caf::error& err) {
  std::cerr << "demo: " << annals::render(err) << '\n';
  return 1;
}

} // namespace

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : "annals-demo.db";
  for (auto suffix : {"", "-wal", "-shm"})
    std::filesystem::remove(path + suffix);
  std::printf("annals demo: bank accounts as event-sourced actors, journal in %s\n", path.c_str());

  {
    std::printf("\n== session 1: commands in, events out\n");
    auto journal = ap::sqlite_journal::open({.path = path});
    if (!journal)
      return fail(journal.error());
    session s{*journal, path};
    if (auto err = s.bank.register_aggregate<account>({.snapshot_every = 3}))
      return fail(err);
    auto& bank = s.bank;
    auto& balances = s.balances;
    say("open acc-ada for Ada", bank.ask<account>("acc-ada", bank::open{"Ada"}));
    say("open acc-bob for Bob", bank.ask<account>("acc-bob", bank::open{"Bob"}));
    say("acc-ada: deposit 120.00", bank.ask<account>("acc-ada", bank::deposit{12'000}));
    say("acc-ada: withdraw 20.50", bank.ask<account>("acc-ada", bank::withdraw{2'050}));
    say("acc-bob: deposit 5.00 (key dep-1)",
        bank.ask<account>("acc-bob", bank::deposit{500}, {.idempotency_key = "dep-1"}));
    say("acc-bob: same request retried (key dep-1)",
        bank.ask<account>("acc-bob", bank::deposit{500}, {.idempotency_key = "dep-1"}));
    say("acc-bob: withdraw 50.00", bank.ask<account>("acc-bob", bank::withdraw{5'000}));
    say("acc-bob: deposit -1.00", bank.ask<account>("acc-bob", bank::deposit{-100}));
    say("acc-eve: deposit 1.00", bank.ask<account>("acc-eve", bank::deposit{100}));
    auto head = head_of(**journal);
    if (auto st = balances.await_offset(head, 10s); !st)
      return fail(st.error());
    std::printf("\n  journal head offset %llu; the balances projection applied all of it:\n",
                static_cast<unsigned long long>(head));
    show_balances_table(path);
    auto m = bank.metrics();
    std::printf("  commands handled %llu, refused %llu, events persisted %llu, duplicates %llu\n",
                static_cast<unsigned long long>(m.commands_handled),
                static_cast<unsigned long long>(m.commands_failed),
                static_cast<unsigned long long>(m.events_persisted),
                static_cast<unsigned long long>(m.duplicates));
    std::printf("\n== stopping everything, as in a restart\n");
  }

  {
    std::printf("\n== session 2: only the file survived\n");
    auto journal = ap::sqlite_journal::open({.path = path});
    if (!journal)
      return fail(journal.error());
    session s{*journal, path};
    if (auto err = s.bank.register_aggregate<account>({.snapshot_every = 3}))
      return fail(err);
    auto& bank = s.bank;
    auto& balances = s.balances;
    say("acc-ada: balance (recovered)", bank.ask<account>("acc-ada", bank::get_balance{}));
    say("acc-bob: balance (recovered)", bank.ask<account>("acc-bob", bank::get_balance{}));
    say("acc-bob: retry of dep-1 after the restart",
        bank.ask<account>("acc-bob", bank::deposit{500}, {.idempotency_key = "dep-1"}));
    say("acc-ada: withdraw 99.50", bank.ask<account>("acc-ada", bank::withdraw{9'950}));
    auto m = bank.metrics();
    std::printf("  recovered %llu aggregates: %llu events replayed after their snapshots\n",
                static_cast<unsigned long long>(m.recoveries),
                static_cast<unsigned long long>(m.events_replayed));
    auto head = head_of(**journal);
    auto st = balances.await_offset(head, 10s);
    if (!st)
      return fail(st.error());
    std::printf("  the projection resumed from its stored offset and applied %llu new event(s)\n",
                static_cast<unsigned long long>(st->applied));
    show_balances_table(path);

    std::printf("\n  the log of acc-ada (append-only; state is its fold):\n");
    auto events = ap::wait_for<std::vector<ap::event_record>>(
      [&](auto cb) {
        (*journal)->read_stream(annals::persistence_id{account::name, "acc-ada"}.str(), 1,
                                UINT64_MAX, 100, std::move(cb));
      },
      10s);
    if (!events)
      return fail(events.error());
    for (const auto& e : *events)
      std::printf("  seq %llu  offset %-3llu %-15s %s\n", static_cast<unsigned long long>(e.seq),
                  static_cast<unsigned long long>(e.offset), e.name.c_str(), e.payload.c_str());
  }
  std::printf("\ndone: %s holds the journal, the snapshots and the balances table\n", path.c_str());
  return 0;
}

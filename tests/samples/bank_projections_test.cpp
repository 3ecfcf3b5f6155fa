// The bank's read models fed by one ordered journal: the statement (exactly-once, SQLite),
// the balances (exactly-once, SQLite) and the owner index (at-least-once, in memory).
// Real account and transfer aggregates write to a SQLite journal in a temporary directory.
//
// No sleeps: every wait is `projection::await_offset` on the journal's head, with a bound
// that only a broken build reaches. The account commands are checked for success or
// refusal only, never for the value of their reply.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include "account/account.hpp"
#include "account/balances.hpp"
#include "account/owner_index.hpp"
#include "account/statement.hpp"
#include "account/transfer.hpp"
#include "actors/runtime_fixtures.hpp"
#include "annals/actors/host.hpp"
#include "annals/actors/projection.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "persistence/journal_fixtures.hpp"

using namespace rt;
using annals::actors::event_filter;
using annals::actors::host;
using annals::actors::projection;
using annals::persistence::test::bound;
using annals::persistence::test::temp_dir;
using bank::account;
using bank::transfer;
using bank::transfer_status;

namespace bank {

std::ostream& operator<<(std::ostream& os, const owner_hit& h) {
  return os << '{' << h.account_id << " '" << h.owner << "'" << (h.closed ? " closed}" : "}");
}

} // namespace bank

namespace {

// Forwards to a real journal; `fault` may refuse chosen appends, as a crash between two
// writes would. Set it only while no command is in flight.
class interrupting_journal final : public proxy_journal {
public:
  explicit interrupting_journal(ap::journal_ptr inner) : proxy_journal(std::move(inner)) {}

  std::function<caf::error(const ap::append_request&)> fault;

  void append(ap::append_request req, ap::callback<ap::append_result> done) override {
    if (fault)
      if (auto err = fault(req))
        return done(std::move(err));
    inner_->append(std::move(req), std::move(done));
  }
};

// A bank on a SQLite journal in a temporary directory: one actor system, a host of
// accounts and transfers (restartable), and the read-model file the SQLite projections
// share. Projections declared after it stop before its actor system.
struct bank_env {
  bank_env() {
    auto j = ap::sqlite_journal::open(
      {.path = dir.file("journal.db"), .durability = ap::durability_level::normal});
    if (!j)
      FAIL(annals::render(j.error()));
    journal = *j;
    front = std::make_shared<interrupting_journal>(journal);
    start_host();
  }

  // Stops the host as a shutdown would and starts a new one on the same journal.
  void restart_host() {
    REQUIRE_FALSE(h->drain());
    h.reset();
    start_host();
  }

  projection spawn_statement(const std::string& name = "statement") {
    return annals::actors::spawn_projection(
      sys, journal, std::make_shared<bank::statement_projection>(),
      {.name = name, .path = model, .filter = event_filter::aggregate_type<bank::account>()});
  }
  projection spawn_balances() {
    return annals::actors::spawn_projection(
      sys, journal, std::make_shared<bank::balances_projection>(),
      {.name = "balances", .path = model, .filter = event_filter::aggregate_type<bank::account>()});
  }
  projection spawn_owners(std::shared_ptr<bank::owner_index> idx) {
    return annals::actors::spawn_projection(
      sys, journal, std::move(idx),
      {.name = "owners", .filter = event_filter::aggregate_type<bank::account>()});
  }

  std::uint64_t head() {
    auto head = ap::wait_for<std::uint64_t>(
      [this](ap::callback<std::uint64_t> cb) { journal->head_offset(std::move(cb)); }, bound);
    REQUIRE(head);
    return *head;
  }

  temp_dir dir;
  std::string model = dir.file("read-model.db");
  system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<ap::sqlite_journal> journal;
  std::shared_ptr<interrupting_journal> front;
  std::optional<host> h;

private:
  void start_host() {
    h.emplace(sys, front);
    REQUIRE_FALSE(h->register_aggregate<account>());
    REQUIRE_FALSE(h->register_aggregate<transfer>({}, [this] { return transfer{&*h}; }));
  }
};

// Waits until `p` has processed `offset`; fails the test with the projection's error.
annals::actors::projection_status reach(const projection& p, std::uint64_t offset) {
  auto st = p.await_offset(offset, bound);
  if (!st)
    FAIL("projection '" << p.name() << "' did not reach offset " << offset << ": "
                        << annals::render(st.error()));
  return *st;
}

// A read-only connection to a read-model file, closed with the object.
class read_only_db {
public:
  explicit read_only_db(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      std::string msg = sqlite3_errmsg(db_);
      sqlite3_close(db_);
      db_ = nullptr;
      FAIL("cannot open " << path << ": " << msg);
    }
  }
  ~read_only_db() {
    sqlite3_close(db_);
  }
  read_only_db(const read_only_db&) = delete;
  read_only_db& operator=(const read_only_db&) = delete;

  sqlite3* get() const {
    return db_;
  }

  // Every row of `sql`, each as its columns' text joined by '|'.
  std::vector<std::string> rows(const char* sql) const {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK)
      FAIL(sql << ": " << sqlite3_errmsg(db_));
    std::vector<std::string> out;
    int rc = SQLITE_ROW;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      std::string row;
      for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
        auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
        row += (c > 0 ? "|" : "") + std::string{text != nullptr ? text : "NULL"};
      }
      out.push_back(std::move(row));
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
      FAIL(sql << ": " << sqlite3_errmsg(db_));
    return out;
  }

  std::int64_t scalar(const char* sql) const {
    auto r = rows(sql);
    REQUIRE(r.size() == 1);
    return std::stoll(r.front());
  }

private:
  sqlite3* db_ = nullptr;
};

struct balance_row {
  std::string id;
  std::string owner;
  std::int64_t balance = 0;
  std::string status;
  std::uint64_t version = 0;
};

std::vector<balance_row> read_balances(sqlite3* db) {
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db,
                             "SELECT id, owner, balance, status, version FROM balances"
                             " ORDER BY id",
                             -1, &stmt, nullptr)
          == SQLITE_OK);
  std::vector<balance_row> out;
  while (sqlite3_step(stmt) == SQLITE_ROW)
    out.push_back({reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)),
                   reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1)),
                   sqlite3_column_int64(stmt, 2),
                   reinterpret_cast<const char*>(sqlite3_column_text(stmt, 3)),
                   static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 4))});
  sqlite3_finalize(stmt);
  return out;
}

// The status a transfer command replied with; fails the test on an error reply.
transfer_status status_of(const caf::expected<transfer_status>& st) {
  if (!st)
    FAIL(annals::render(st.error()));
  return *st;
}

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// What a statement line says, without its position and time.
struct movement {
  std::string kind;
  std::int64_t amount;
  std::int64_t balance;
  std::string correlation_id;
  friend bool operator==(const movement&, const movement&) = default;
};

std::ostream& operator<<(std::ostream& os, const movement& m) {
  return os << '{' << m.kind << ' ' << m.amount << " -> " << m.balance << " '" << m.correlation_id
            << "'}";
}

std::vector<movement> movements(const std::vector<bank::statement_line>& lines) {
  std::vector<movement> out;
  for (const auto& l : lines)
    out.push_back({l.kind, l.amount, l.balance, l.correlation_id});
  return out;
}

// Eight owners, each with an opening deposit; transfers in a fixed pattern between them
// (some refused for lack of money, some refunded because the target is closed); direct
// withdrawals; two accounts closed. Returns the cents deposited minus those withdrawn by
// direct commands: what all balances must add up to, since transfers only move money.
std::int64_t run_business(bank_env& env) {
  const std::vector<std::pair<std::string, std::string>> owners{
    {"a1", "Ada Lovelace"},      {"a2", "Grace Hopper"},   {"a3", "Alan Turing"},
    {"a4", "Edsger Dijkstra"},   {"a5", "Barbara Liskov"}, {"a6", "Ada Yonath"},
    {"a7", "Katherine Johnson"}, {"a8", "Donald Knuth"}};
  std::int64_t total = 0;
  for (std::size_t i = 0; i < owners.size(); ++i) {
    const auto& [id, owner] = owners[i];
    REQUIRE(env.h->ask<account>(id, bank::open{owner}));
    auto cents = static_cast<std::int64_t>(500 * (i + 1));
    REQUIRE(env.h->ask<account>(id, bank::deposit{cents}));
    total += cents;
  }
  for (std::size_t i = 1; i < owners.size(); i += 2) {
    REQUIRE(env.h->ask<account>(owners[i].first, bank::withdraw{40}));
    total -= 40;
  }
  // Closed early: later transfers to it are refunded.
  REQUIRE(env.h->ask<account>("z1", bank::open{"Niklaus Wirth"}));
  REQUIRE(env.h->ask<account>("z1", bank::close{}));
  for (int k = 0; k < 24; ++k) {
    const auto& from = owners[static_cast<std::size_t>(k) % owners.size()].first;
    auto to = k % 5 == 4 ? std::string{"z1"}
                         : owners[static_cast<std::size_t>(k * 3 + 1) % owners.size()].first;
    if (from == to)
      continue;
    auto id = "t" + std::to_string(k);
    CHECK(status_of(env.h->ask<transfer>(id, bank::start_transfer{id, from, to, 150 + 97 * k}))
          != transfer_status::pending);
  }
  // Emptied and closed.
  REQUIRE(env.h->ask<account>("z2", bank::open{"Frances Allen"}));
  REQUIRE(env.h->ask<account>("z2", bank::deposit{250}));
  REQUIRE(env.h->ask<account>("z2", bank::withdraw{250}));
  REQUIRE(env.h->ask<account>("z2", bank::close{}));
  return total;
}

} // namespace

TEST_CASE("the statement lists every movement of an account in order, with the running "
          "balance and the correlation id of the transfer that caused it",
          "[runtime][bank-projections]") {
  bank_env env;
  auto statement = env.spawn_statement();
  auto before = now_ms();

  REQUIRE(env.h->ask<account>("a", bank::open{"Ada Lovelace"}));
  REQUIRE(env.h->ask<account>("b", bank::open{"Grace Hopper"}));
  REQUIRE(
    env.h->ask<account>("a", bank::deposit{100}, {.timeout = bound, .correlation_id = "teller:7"}));
  REQUIRE(env.h->ask<account>("a", bank::withdraw{30}));
  REQUIRE_FALSE(env.h->ask<account>("a", bank::withdraw{1000})); // refused: no line
  REQUIRE(status_of(env.h->ask<transfer>("t1", bank::start_transfer{"t1", "a", "b", 50}))
          == transfer_status::completed);
  // The target does not exist: the debit is refunded.
  REQUIRE(status_of(env.h->ask<transfer>("t2", bank::start_transfer{"t2", "a", "nobody", 10}))
          == transfer_status::compensated);

  // t3 takes the debit, then cannot record it; after a restart it is resumed and the
  // account is not debited twice.
  env.front->fault = [](const ap::append_request& req) -> caf::error {
    if (req.events.front().name == std::string_view{bank::transfer_debited::name})
      return annals::make_error(ap::journal_errc::storage_error, "test: crash");
    return {};
  };
  REQUIRE_FALSE(env.h->ask<transfer>("t3", bank::start_transfer{"t3", "a", "b", 15}));
  env.front->fault = nullptr;
  env.restart_host();
  auto resumed = bank::resume_pending_transfers(*env.h, *env.front);
  REQUIRE(resumed);
  CHECK(*resumed == 1);
  REQUIRE(status_of(env.h->ask<transfer>("t3", bank::get_transfer{}))
          == transfer_status::completed);
  // Running a finished transfer again moves nothing.
  REQUIRE(status_of(env.h->ask<transfer>("t1", bank::resume_transfer{}))
          == transfer_status::completed);

  REQUIRE(env.h->ask<account>("b", bank::withdraw{65}));
  REQUIRE(env.h->ask<account>("b", bank::close{}));
  auto head = env.head();
  reach(statement, head);
  auto after = now_ms();

  read_only_db db{env.model};
  auto a = bank::read_statement(db.get(), "a");
  auto b = bank::read_statement(db.get(), "b");
  REQUIRE(a);
  REQUIRE(b);
  CHECK(movements(*a)
        == std::vector<movement>{
          {"opened", 0, 0, ""},
          {"deposit", 100, 100, "teller:7"},
          {"withdrawal", 30, 70, ""},
          {"withdrawal", 50, 20, "transfer:t1"},
          {"withdrawal", 10, 10, "transfer:t2"},
          {"deposit", 10, 20, "transfer:t2"},
          {"withdrawal", 15, 5, "transfer:t3"},
        });
  CHECK(movements(*b)
        == std::vector<movement>{
          {"opened", 0, 0, ""},
          {"deposit", 50, 50, "transfer:t1"},
          {"deposit", 15, 65, "transfer:t3"},
          {"withdrawal", 65, 0, ""},
          {"closed", 0, 0, ""},
        });

  // Each line is its event: same sequence number, offset and commit time (in ms).
  for (const auto& [id, lines] : {std::pair{"a", *a}, std::pair{"b", *b}}) {
    auto events = stream(*env.journal, std::string{"account|"} + id);
    REQUIRE(events.size() == lines.size());
    for (std::size_t i = 0; i < lines.size(); ++i) {
      CHECK(lines[i].seq == i + 1);
      CHECK(lines[i].seq == events[i].seq);
      CHECK(lines[i].offset == events[i].offset);
      CHECK(lines[i].correlation_id == events[i].metadata.correlation_id);
      CHECK(lines[i].timestamp_ms == events[i].timestamp_us / 1000);
      CHECK(lines[i].timestamp_ms >= before);
      CHECK(lines[i].timestamp_ms <= after);
      if (i > 0) {
        CHECK(lines[i].offset > lines[i - 1].offset);
        CHECK(lines[i].timestamp_ms >= lines[i - 1].timestamp_ms);
      }
    }
  }

  auto none = bank::read_statement(db.get(), "nobody");
  REQUIRE(none);
  CHECK(none->empty());

  // A connection to a file without the table: an error that names the cause.
  sqlite3* empty = nullptr;
  REQUIRE(sqlite3_open(":memory:", &empty) == SQLITE_OK);
  auto missing = bank::read_statement(empty, "a");
  sqlite3_close(empty);
  REQUIRE_FALSE(missing);
  CHECK(annals::is(missing.error(), annals::actors::projection_errc::read_model_failed));
  CHECK_THAT(annals::render(missing.error()), Catch::Contains("statement: no such table"));
}

TEST_CASE("the statement, the balances and the owner index, fed by one log, reach the same "
          "offset and agree with each other",
          "[runtime][bank-projections]") {
  bank_env env;
  auto owners = std::make_shared<bank::owner_index>();
  // Opened one after the other: the first creates the shared read-model file (opening a
  // new SQLite file from two connections at the same moment may find it locked).
  auto statement = env.spawn_statement();
  reach(statement, 0);
  auto balances = env.spawn_balances();
  auto owner_proj = env.spawn_owners(owners);
  auto total = run_business(env);
  auto head = env.head();
  CHECK(reach(statement, head).offset == head);
  CHECK(reach(balances, head).offset == head);
  CHECK(reach(owner_proj, head).offset == head);

  read_only_db db{env.model};
  // The owner index applied the same last account event as the statement.
  CHECK(
    owners->offset()
    == static_cast<std::uint64_t>(db.scalar("SELECT coalesce(max(\"offset\"), 0) FROM statement")));
  auto rows = read_balances(db.get());
  REQUIRE(rows.size() == 10);
  CHECK(owners->search("", 100).size() == rows.size());
  CHECK(db.scalar("SELECT count(DISTINCT account_id) FROM statement")
        == static_cast<std::int64_t>(rows.size()));
  std::int64_t sum = 0;
  for (const auto& row : rows) {
    INFO("account " << row.id);
    sum += row.balance;
    auto lines = bank::read_statement(db.get(), row.id);
    REQUIRE(lines);
    REQUIRE_FALSE(lines->empty());
    CHECK(lines->back().balance == row.balance);
    CHECK(lines->back().seq == row.version);
    CHECK((lines->back().kind == "closed") == (row.status == "closed"));
    CHECK(lines->front().kind == "opened");
    // Gapless, and every balance is the previous one plus the movement.
    std::int64_t running = 0;
    for (std::size_t i = 0; i < lines->size(); ++i) {
      const auto& l = (*lines)[i];
      CHECK(l.seq == i + 1);
      running += l.kind == "deposit" ? l.amount : l.kind == "withdrawal" ? -l.amount : 0;
      CHECK(l.balance == running);
      CHECK(l.balance >= 0);
    }
    auto hits = owners->search(row.owner);
    auto hit = std::find_if(hits.begin(), hits.end(),
                            [&](const bank::owner_hit& x) { return x.account_id == row.id; });
    REQUIRE(hit != hits.end());
    CHECK(hit->owner == row.owner);
    CHECK(hit->closed == (row.status == "closed"));
  }
  CHECK(sum == total);
  // Transfers left their correlation ids: a refused credit to the closed account shows as
  // a debit and a refund under one id.
  CHECK(db.scalar("SELECT count(*) FROM statement WHERE correlation_id LIKE 'transfer:%'") > 0);
  CHECK(db.scalar("SELECT count(*) FROM statement WHERE account_id = 'z1' AND kind = 'deposit'")
        == 0);
  CHECK(db.scalar("SELECT count(*) FROM statement s JOIN statement r"
                  " ON r.correlation_id = s.correlation_id AND r.account_id = s.account_id"
                  " WHERE s.kind = 'withdrawal' AND r.kind = 'deposit' AND r.seq > s.seq"
                  " AND s.correlation_id LIKE 'transfer:%'")
        > 0);

  auto ada = owners->search("ada");
  REQUIRE(ada.size() == 2);
  CHECK(ada[0] == bank::owner_hit{"a1", "Ada Lovelace", false});
  CHECK(ada[1] == bank::owner_hit{"a6", "Ada Yonath", false});
  CHECK(owners->search("WIRTH") == std::vector<bank::owner_hit>{{"z1", "Niklaus Wirth", true}});
}

TEST_CASE("a statement rebuilt from offset zero has the same rows, and so has the owner index",
          "[runtime][bank-projections]") {
  bank_env env;
  auto owners = std::make_shared<bank::owner_index>();
  auto statement = env.spawn_statement();
  auto owner_proj = env.spawn_owners(owners);
  run_business(env);
  auto head = env.head();
  reach(statement, head);
  reach(owner_proj, head);

  const char* dump = "SELECT account_id, seq, \"offset\", kind, amount, balance, correlation_id,"
                     " timestamp FROM statement ORDER BY account_id, seq";
  std::vector<std::string> first;
  {
    read_only_db db{env.model};
    first = db.rows(dump);
  }
  auto first_hits = owners->search("", 100);
  auto first_offset = owners->offset();
  REQUIRE(first.size() > 50);

  REQUIRE_FALSE(statement.rebuild());
  REQUIRE_FALSE(owner_proj.rebuild());
  auto st = reach(statement, head);
  CHECK(st.applied == 2 * first.size()); // every event once before and once in the replay
  reach(owner_proj, head);

  read_only_db db{env.model};
  CHECK(db.rows(dump) == first);
  CHECK(owners->search("", 100) == first_hits);
  CHECK(owners->offset() == first_offset);
}

TEST_CASE("the owner index ignores a redelivered batch, finds owners ignoring case, and "
          "forgets its offset on reset",
          "[bank-projections]") {
  auto record = [](std::uint64_t offset, std::string id, std::uint64_t seq,
                   const account::event_type& ev) {
    auto enc = account::codec_type::encode(ev);
    ap::event_record rec;
    rec.offset = offset;
    rec.persistence_id = "account|" + id;
    rec.seq = seq;
    rec.name = enc.name;
    rec.version = enc.version;
    rec.payload = enc.payload;
    return rec;
  };
  const std::vector<ap::event_record> batch{
    record(1, "a", 1, bank::opened{"Ada Lovelace"}),
    record(2, "b", 1, bank::opened{"GRACE Hopper"}),
    record(3, "a", 2, bank::deposited{100}),
    record(4, "b", 2, bank::closed{}),
    record(5, "c", 1, bank::opened{"Ada Yonath"}),
  };
  bank::owner_index idx;
  for (const auto& rec : batch)
    idx.apply(rec);
  const std::vector<bank::owner_hit> all{
    {"a", "Ada Lovelace", false}, {"b", "GRACE Hopper", true}, {"c", "Ada Yonath", false}};
  CHECK(idx.search("") == all);
  CHECK(idx.offset() == 5);

  // The same batch again (as after a crash before the offset was stored), and the opening
  // of the closed account alone: applying either would duplicate or reopen.
  for (const auto& rec : batch)
    idx.apply(rec);
  idx.apply(batch[1]);
  CHECK(idx.search("") == all);
  CHECK(idx.offset() == 5);

  CHECK(idx.search("ADA") == std::vector<bank::owner_hit>{all[0], all[2]});
  CHECK(idx.search("ada", 1) == std::vector<bank::owner_hit>{all[0]});
  CHECK(idx.search("grace hop") == std::vector<bank::owner_hit>{all[1]});
  CHECK(idx.search("ada", 0).empty());
  CHECK(idx.search("turing").empty());

  idx.reset();
  CHECK(idx.offset() == 0);
  CHECK(idx.search("").empty());
  idx.apply(batch[0]);
  CHECK(idx.search("") == std::vector<bank::owner_hit>{all[0]});
  CHECK(idx.offset() == 1);
}

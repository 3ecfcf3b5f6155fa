// Public contracts: mapped events become public messages with their own names, versions,
// stable ids and positions; unmapped events are not published; a mapped record that does
// not decode is an error naming its stream; the wire form round-trips.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>

#include "account/account.hpp"
#include "annals/actors/public_events.hpp"
#include "annals/error.hpp"

using annals::actors::envelope;
using annals::actors::public_body;
using annals::actors::public_contract;
using annals::persistence::event_record;

namespace {

event_record record(std::uint64_t offset, std::string pid, std::uint64_t seq, std::string name,
                    std::string payload) {
  event_record r;
  r.offset = offset;
  r.persistence_id = std::move(pid);
  r.seq = seq;
  r.name = std::move(name);
  r.payload = std::move(payload);
  r.timestamp_us = 1'764'669'600'123'456; // 2025-12-02T10:00:00.123456Z
  return r;
}

public_contract bank_contract() {
  public_contract c{"bank"};
  c.map<bank::account, bank::deposited>(
    "payments.AccountCredited", 2, [](const bank::deposited& e, const envelope& env) {
      return boost::json::object{{"account", env.entity_id()}, {"amount", e.cents}};
    });
  c.map<bank::account, bank::withdrawn>(
    "payments.AccountDebited", 1,
    [](const bank::withdrawn& e, const envelope&) -> std::optional<public_body> {
      if (e.cents < 100)
        return std::nullopt; // small debits stay internal
      return public_body{{{"amount", e.cents}}, "all-debits"};
    });
  return c;
}

} // namespace

TEST_CASE("a mapped event becomes its public message with a stable id and its position") {
  auto c = bank_contract();
  auto msg = c.translate(record(17, "account|acc-1", 3, "bank.deposited", R"({"cents":250})"));
  REQUIRE(msg);
  REQUIRE(*msg);
  CHECK((*msg)->id == "bank:17");
  CHECK((*msg)->position == 17);
  CHECK((*msg)->type == "payments.AccountCredited");
  CHECK((*msg)->version == 2);
  CHECK((*msg)->key == "acc-1");
  CHECK((*msg)->data.at("account").as_string() == "acc-1");
  CHECK((*msg)->data.at("amount").as_int64() == 250);
  // The same event translated again (a retry) gets the same id.
  auto again = c.translate(record(17, "account|acc-1", 3, "bank.deposited", R"({"cents":250})"));
  REQUIRE(again);
  CHECK(**again == **msg);
}

TEST_CASE("unmapped events, other aggregates and skipped translations publish nothing") {
  auto c = bank_contract();
  for (auto rec : {record(1, "account|acc-1", 1, "bank.opened", R"({"owner":"Ada"})"),
                   record(2, "transfer|t-1", 1, "bank.deposited", R"({"cents":5})"),
                   record(3, "account|acc-1", 2, "bank.withdrawn", R"({"cents":50})")}) {
    auto msg = c.translate(rec);
    REQUIRE(msg);
    CHECK_FALSE(*msg);
  }
  auto big = c.translate(record(4, "account|acc-1", 3, "bank.withdrawn", R"({"cents":500})"));
  REQUIRE(big);
  REQUIRE(*big);
  CHECK((*big)->key == "all-debits");
  CHECK((*big)->type == "payments.AccountDebited");
}

TEST_CASE("a mapped record that does not decode is an error naming its stream and seq") {
  auto c = bank_contract();
  auto msg = c.translate(record(9, "account|acc-7", 4, "bank.deposited", R"({"cents":"x"})"));
  REQUIRE_FALSE(msg);
  CHECK(annals::is(msg.error(), annals::persistence::journal_errc::corrupt_row));
  auto text = annals::render(msg.error());
  CHECK(text.find("account|acc-7") != std::string::npos);
  CHECK(text.find("seq 4") != std::string::npos);
}

TEST_CASE("a batch keeps the mapped messages in log order") {
  auto c = bank_contract();
  std::vector<event_record> batch{
    record(1, "account|a", 1, "bank.opened", R"({"owner":"A"})"),
    record(2, "account|a", 2, "bank.deposited", R"({"cents":10})"),
    record(3, "account|b", 1, "bank.opened", R"({"owner":"B"})"),
    record(4, "account|b", 2, "bank.deposited", R"({"cents":20})"),
  };
  auto msgs = c.translate(std::span<const event_record>{batch});
  REQUIRE(msgs);
  REQUIRE(msgs->size() == 2);
  CHECK((*msgs)[0].position == 2);
  CHECK((*msgs)[1].position == 4);
  CHECK(c.types().size() == 2);
  CHECK(c.types()[0].internal_event == "bank.deposited");
  CHECK(c.types()[0].aggregate == "account");
}

TEST_CASE("the wire form round-trips and names what is missing") {
  auto c = bank_contract();
  auto msg = c.translate(record(17, "account|acc-1", 3, "bank.deposited", R"({"cents":250})"));
  REQUIRE(msg);
  REQUIRE(*msg);
  auto text = annals::actors::to_json(**msg);
  auto v = boost::json::parse(text);
  CHECK(v.at("occurred_at").as_string() == "2025-12-02T10:00:00.123456Z");
  auto back = annals::actors::parse_published(text);
  REQUIRE(back);
  CHECK(*back == **msg);
  auto bad = annals::actors::parse_published(R"({"id":"bank:1","position":1,"type":"t"})");
  REQUIRE_FALSE(bad);
  CHECK(annals::render(bad.error()).find("'version'") != std::string::npos);
  CHECK_FALSE(annals::actors::parse_published("not json"));
}

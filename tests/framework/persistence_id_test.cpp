#include <catch2/catch.hpp>

#include "annals/persistence_id.hpp"

using annals::persistence_id;

TEST_CASE("a persistence id prints as type, separator, entity id", "[persistence_id]") {
  persistence_id pid{"account", "acc-ada"};
  CHECK(pid.str() == "account|acc-ada");
  CHECK(pid.type() == "account");
  CHECK(pid.entity_id() == "acc-ada");
  CHECK(persistence_id::prefix_of("account") == "account|");
}

TEST_CASE("parsing a printed persistence id gives back the same type and entity id",
          "[persistence_id]") {
  for (auto entity : {"acc-ada", "with|bar", "a.b c*>", "", "\xc3\xa9t\xc3\xa9"}) {
    persistence_id pid{"match", entity};
    auto parsed = persistence_id::parse(pid.str());
    REQUIRE(parsed);
    CHECK(*parsed == pid);
    CHECK(parsed->type() == "match");
    CHECK(parsed->entity_id() == entity);
    CHECK(persistence_id::entity_of(pid.str()) == entity);
  }
}

TEST_CASE("text without a type part is not a persistence id", "[persistence_id]") {
  CHECK_FALSE(persistence_id::parse("no-separator"));
  CHECK_FALSE(persistence_id::parse("|entity"));
  CHECK(persistence_id::entity_of("no-separator") == "no-separator");
}

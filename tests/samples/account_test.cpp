#include <catch2/catch.hpp>

#include <limits>

#include "account/account.hpp"
#include "annals/testkit.hpp"

using bank::account_errc;
using kit_type = annals::testkit<bank::account>;

TEST_CASE("an account opens once, for a named owner", "[account]") {
  kit_type kit;
  auto out = kit.when(bank::open{"Ada"});
  REQUIRE(out.reply);
  CHECK(out.event<bank::opened>().owner == "Ada");
  CHECK(out.state.status == bank::account_status::open);
  CHECK(annals::is(kit.when(bank::open{"Bob"}).error(), account_errc::already_exists));
  annals::testkit<bank::account> other;
  CHECK(annals::is(other.when(bank::open{""}).error(), account_errc::invalid_owner));
}

TEST_CASE("deposits and withdrawals move the balance by whole cents", "[account]") {
  kit_type kit;
  kit.given(bank::opened{"Ada"});
  CHECK(kit.when(bank::deposit{1'000}).reply->balance == 1'000);
  CHECK(kit.when(bank::withdraw{250}).reply->balance == 750);
  auto third = kit.when(bank::deposit{1});
  CHECK(third.reply->balance == 751);
  CHECK(third.reply->version == 4); // opened, deposited, withdrawn, deposited
  CHECK(*kit.aggregate().handle(bank::get_balance{}) == 751);
  kit.restart();
  CHECK(kit.state().balance == 751);
  CHECK(kit.aggregate().version() == 4);
}

TEST_CASE("an account refuses an overdraft", "[account]") {
  kit_type kit;
  kit.given(bank::opened{"Ada"}, bank::deposited{100});
  auto out = kit.when(bank::withdraw{101});
  CHECK(annals::is(out.error(), account_errc::insufficient_funds));
  CHECK(out.events.empty());
  CHECK(out.state.balance == 100);
  CHECK(kit.when(bank::withdraw{100}).reply->balance == 0);
}

TEST_CASE("amounts must be positive", "[account]") {
  kit_type kit;
  kit.given(bank::opened{"Ada"}, bank::deposited{100});
  for (std::int64_t bad :
       {std::int64_t{0}, std::int64_t{-1}, std::numeric_limits<std::int64_t>::min()}) {
    CHECK(annals::is(kit.when(bank::deposit{bad}).error(), account_errc::invalid_amount));
    CHECK(annals::is(kit.when(bank::withdraw{bad}).error(), account_errc::invalid_amount));
  }
  CHECK(kit.journal().size() == 2);
}

TEST_CASE("a deposit that would overflow the balance is rejected", "[account]") {
  kit_type kit;
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  kit.given(bank::opened{"Ada"}, bank::deposited{max - 10});
  CHECK(annals::is(kit.when(bank::deposit{11}).error(), account_errc::amount_overflow));
  CHECK(kit.when(bank::deposit{10}).reply->balance == max);
  CHECK(annals::is(kit.when(bank::deposit{1}).error(), account_errc::amount_overflow));
}

TEST_CASE("nothing happens to an account that was never opened", "[account]") {
  kit_type kit;
  CHECK(annals::is(kit.when(bank::deposit{1}).error(), account_errc::not_found));
  CHECK(annals::is(kit.when(bank::withdraw{1}).error(), account_errc::not_found));
  CHECK(annals::is(kit.when(bank::close{}).error(), account_errc::not_found));
  CHECK_FALSE(kit.aggregate().handle(bank::get_balance{}));
  CHECK(kit.journal().empty());
}

TEST_CASE("a closed account takes no more deposits or withdrawals", "[account]") {
  kit_type kit;
  kit.given(bank::opened{"Ada"}, bank::deposited{100});
  CHECK(annals::is(kit.when(bank::close{}).error(), account_errc::balance_not_zero));
  (void)kit.when(bank::withdraw{100});
  auto out = kit.when(bank::close{});
  REQUIRE(out.reply);
  CHECK(out.state.status == bank::account_status::closed);
  CHECK(annals::is(kit.when(bank::deposit{1}).error(), account_errc::account_closed));
  CHECK(annals::is(kit.when(bank::withdraw{1}).error(), account_errc::account_closed));
  CHECK(annals::is(kit.when(bank::close{}).error(), account_errc::account_closed));
  kit.restart();
  CHECK(kit.state().status == bank::account_status::closed);
}

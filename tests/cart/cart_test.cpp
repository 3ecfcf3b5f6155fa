// The shopping-cart sample: the cart's rules, and the after-the-fact analysis of a
// generated history checked against a count made from the generator's own commands.

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "annals/actors/projection.hpp"
#include "annals/actors/system.hpp"
#include "annals/persistence/memory_journal.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "annals/testkit.hpp"
#include "cart/cart.hpp"
#include "cart/history.hpp"
#include "cart/removed_items.hpp"
#include "persistence/journal_fixtures.hpp"

using shop::cart_errc;
using kit_type = annals::testkit<shop::cart>;

TEST_CASE("a cart takes items in and out and checks out once", "[cart]") {
  kit_type kit;
  CHECK(kit.when(shop::add_item{"sku-01", 2}).event<shop::item_added>().qty == 2);
  CHECK(kit.when(shop::remove_item{"sku-01", 1}).reply->items.at("sku-01") == 1);
  auto out = kit.when(shop::check_out{});
  REQUIRE(out.reply);
  CHECK(out.state.checked_out);
  kit.restart();
  CHECK(kit.state().items == std::map<std::string, std::int64_t>{{"sku-01", 1}});
}

TEST_CASE("a cart refuses removals of items it does not hold", "[cart]") {
  kit_type kit;
  CHECK(annals::is(kit.when(shop::remove_item{"sku-01", 1}).error(), cart_errc::item_not_in_cart));
  kit.given(shop::item_added{"sku-01", 2});
  auto out = kit.when(shop::remove_item{"sku-01", 3});
  CHECK(annals::is(out.error(), cart_errc::item_not_in_cart));
  CHECK_THAT(annals::render(out.error()), Catch::Contains("holds 2"));
  CHECK(kit.when(shop::remove_item{"sku-01", 2}).state.items.empty());
  CHECK(annals::is(kit.when(shop::remove_item{"sku-01", 1}).error(), cart_errc::item_not_in_cart));
}

TEST_CASE("a cart refuses everything after checkout, an empty checkout and bad input", "[cart]") {
  kit_type kit;
  CHECK(annals::is(kit.when(shop::check_out{}).error(), cart_errc::empty_cart));
  CHECK(annals::is(kit.when(shop::add_item{"sku-01", 0}).error(), cart_errc::invalid_quantity));
  CHECK(annals::is(kit.when(shop::add_item{"", 1}).error(), cart_errc::invalid_sku));
  kit.given(shop::item_added{"sku-01", 1}, shop::checked_out{});
  CHECK(annals::is(kit.when(shop::add_item{"sku-02", 1}).error(), cart_errc::already_checked_out));
  CHECK(
    annals::is(kit.when(shop::remove_item{"sku-01", 1}).error(), cart_errc::already_checked_out));
  CHECK(annals::is(kit.when(shop::check_out{}).error(), cart_errc::already_checked_out));
  CHECK(kit.journal().size() == 2);
}

TEST_CASE("the same seed generates the same history", "[cart]") {
  auto a = std::make_shared<annals::persistence::memory_journal>();
  auto b = std::make_shared<annals::persistence::memory_journal>();
  auto ha = shop::generate_history(*a, {.carts = 100, .seed = 5});
  auto hb = shop::generate_history(*b, {.carts = 100, .seed = 5});
  REQUIRE(ha);
  REQUIRE(hb);
  CHECK(ha->events == hb->events);
  REQUIRE(ha->commands.size() == hb->commands.size());
  for (std::size_t i = 0; i < ha->commands.size(); ++i)
    REQUIRE((ha->commands[i].sku == hb->commands[i].sku
             && ha->commands[i].qty == hb->commands[i].qty
             && ha->commands[i].accepted == hb->commands[i].accepted));
}

TEST_CASE("the removed-items analysis over a whole history matches a count of the generated "
          "commands",
          "[cart]") {
  annals::persistence::test::temp_dir tmp;
  auto j = annals::persistence::sqlite_journal::open(
    {.path = tmp.file("carts.db"), .durability = annals::persistence::durability_level::normal});
  REQUIRE(j);
  auto h = shop::generate_history(**j, {.carts = 3000, .seed = 11});
  REQUIRE(h);
  CHECK(h->checked_out > 0);
  CHECK(h->abandoned > 0);
  CHECK(h->refused > 0);

  // The expected table, from the accepted commands: per cart, removals wait for its
  // checkout; a cart that never checks out contributes its additions only.
  std::map<std::string, shop::removal_row> expected;
  std::map<std::uint32_t, std::map<std::string, std::uint64_t>> pending;
  std::uint64_t accepted = 0;
  using kind = shop::command_record::kind;
  for (const auto& c : h->commands) {
    if (!c.accepted)
      continue;
    ++accepted;
    switch (c.what) {
      case kind::add:
        expected[c.sku].sku = c.sku;
        ++expected[c.sku].added;
        break;
      case kind::remove:
        ++pending[c.cart][c.sku];
        break;
      case kind::check_out:
        for (const auto& [sku, n] : pending[c.cart])
          expected[sku].removed_before_checkout += n;
        pending.erase(c.cart);
        break;
    }
  }
  CHECK(accepted == h->events); // each accepted command persisted one event
  std::vector<shop::removal_row> want;
  for (const auto& [sku, row] : expected)
    want.push_back(row);
  shop::sort_rows(want);

  auto head = annals::persistence::test::head_offset(**j);
  REQUIRE(head);
  CHECK(*head == h->events);
  annals::actors::actor_system sys;
  auto model = std::make_shared<shop::removed_items_projection>();
  auto t0 = std::chrono::steady_clock::now();
  auto proj = annals::actors::spawn_projection(
    sys, *j, model,
    {.name = "removed-items",
     .filter = annals::actors::event_filter::aggregate_type<shop::cart>(),
     .page_size = 4096});
  auto st = proj.await_offset(*head, annals::persistence::test::bound);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(st);
  CHECK(st->applied == h->events);
  auto got = model->table();
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("row " << i << ": want " << want[i].sku << " " << want[i].removed_before_checkout << "/"
                << want[i].added << ", got " << got[i].sku << " " << got[i].removed_before_checkout
                << "/" << got[i].added);
    CHECK(got[i] == want[i]);
  }
  // Removals in carts that never checked out are not in the table.
  std::uint64_t all_removals = 0, counted = 0;
  for (const auto& c : h->commands)
    all_removals += c.accepted && c.what == kind::remove;
  for (const auto& r : got)
    counted += r.removed_before_checkout;
  CHECK(counted < all_removals);
  WARN("scanned " << *head << " events in " << secs << " s: " << static_cast<double>(*head) / secs
                  << " events/s (first row " << got.front().sku << " "
                  << got.front().removed_before_checkout << "/" << got.front().added << ")");
}

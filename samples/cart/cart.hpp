#pragma once

// The shopping-cart sample: an aggregate whose history answers questions nobody asked when
// it was written. A cart takes items in and out, then checks out once; every change is an
// event. Invariants: quantities are positive, only items in the cart (and no more of them
// than it holds) are removed, nothing happens after checkout, an empty cart does not check
// out.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include <boost/describe.hpp>

#include "annals/aggregate.hpp"
#include "annals/task.hpp"

namespace shop {

// Commands.
struct add_item {
  std::string sku;
  std::int64_t qty;
};
struct remove_item {
  std::string sku;
  std::int64_t qty;
};
struct check_out {};
struct get_cart {};

// Events.
struct item_added {
  static constexpr auto name = "cart.item_added";
  std::string sku;
  std::int64_t qty;
};
struct item_removed {
  static constexpr auto name = "cart.item_removed";
  std::string sku;
  std::int64_t qty;
};
struct checked_out {
  static constexpr auto name = "cart.checked_out";
};
BOOST_DESCRIBE_STRUCT(item_added, (), (sku, qty))
BOOST_DESCRIBE_STRUCT(item_removed, (), (sku, qty))
BOOST_DESCRIBE_STRUCT(checked_out, (), ())

enum class cart_errc : std::uint8_t {
  invalid_quantity = 1, // a quantity <= 0
  invalid_sku,          // an empty sku
  item_not_in_cart,     // removing an item the cart does not hold (or more than it holds)
  already_checked_out,  // any change after checkout
  empty_cart,           // checking out a cart without items
};
BOOST_DESCRIBE_ENUM(cart_errc, invalid_quantity, invalid_sku, item_not_in_cart, already_checked_out,
                    empty_cart)
constexpr std::string_view error_category(cart_errc) {
  return "cart";
}

// The state folds events; replay calls the same functions.
struct cart_state {
  static constexpr auto name = "shop.cart_state";
  std::map<std::string, std::int64_t> items; // sku -> quantity held, only quantities > 0
  bool checked_out = false;

  void apply(const item_added& e) {
    items[e.sku] += e.qty;
  }
  void apply(const item_removed& e) {
    if ((items[e.sku] -= e.qty) <= 0)
      items.erase(e.sku);
  }
  void apply(const shop::checked_out&) {
    checked_out = true;
  }

  friend bool operator==(const cart_state&, const cart_state&) = default;
};
BOOST_DESCRIBE_STRUCT(cart_state, (), (items, checked_out))

class cart : public annals::aggregate<cart_state, item_added, item_removed, checked_out> {
public:
  // The aggregate type, given once: persistence ids are `cart|<id>`.
  static constexpr auto name = "cart";

  annals::task<cart_state> handle(add_item cmd) {
    if (auto err = check_change(cmd.sku, cmd.qty))
      co_return err;
    item_added e{std::move(cmd.sku), cmd.qty};
    co_await persist(e);
    co_return state();
  }

  annals::task<cart_state> handle(remove_item cmd) {
    if (auto err = check_change(cmd.sku, cmd.qty))
      co_return err;
    auto held = state().items.find(cmd.sku);
    if (held == state().items.end())
      co_return annals::make_error(cart_errc::item_not_in_cart,
                                   "sku '" + cmd.sku + "' is not in the cart");
    if (cmd.qty > held->second)
      co_return annals::make_error(cart_errc::item_not_in_cart,
                                   "removing " + std::to_string(cmd.qty) + " of sku '" + cmd.sku
                                     + "', the cart holds " + std::to_string(held->second));
    item_removed e{std::move(cmd.sku), cmd.qty};
    co_await persist(e);
    co_return state();
  }

  annals::task<cart_state> handle(check_out) {
    if (state().checked_out)
      co_return annals::make_error(cart_errc::already_checked_out, "the cart is checked out");
    if (state().items.empty())
      co_return annals::make_error(cart_errc::empty_cart, "the cart holds no items");
    co_await persist(checked_out{});
    co_return state();
  }

  cart_state handle(get_cart) const {
    return state();
  }

private:
  caf::error check_change(const std::string& sku, std::int64_t qty) const {
    if (state().checked_out)
      return annals::make_error(cart_errc::already_checked_out, "the cart is checked out");
    if (sku.empty())
      return annals::make_error(cart_errc::invalid_sku, "the sku is empty");
    if (qty <= 0)
      return annals::make_error(cart_errc::invalid_quantity,
                                "quantities are positive, got " + std::to_string(qty));
    return {};
  }
};

} // namespace shop

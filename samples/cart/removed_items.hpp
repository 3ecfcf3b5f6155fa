#pragma once

// A read model written after the fact: which items do shoppers put in their cart and take
// out again before they check out? The cart never recorded "removed before checkout"; the
// history holds it. Whether a removal counts is known only later in the log, at the cart's
// checkout: until then the projection keeps the cart's removals pending, and a cart that
// never checks out (abandoned) adds none.
//
// Per sku: `added` counts item_added events (every cart), `removed_before_checkout` counts
// item_removed events in carts that checked out afterwards. In memory, at least once: it
// remembers the last offset it applied and skips anything at or below it.

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "annals/actors/typed_projection.hpp"
#include "cart/cart.hpp"

namespace shop {

/// One row of the table.
struct removal_row {
  std::string sku;
  std::uint64_t removed_before_checkout = 0;
  std::uint64_t added = 0;

  friend bool operator==(const removal_row&, const removal_row&) = default;
};

/// Sorts rows by removals before checkout (most first), then by the share of additions
/// removed (highest first), then by sku.
inline void sort_rows(std::vector<removal_row>& rows) {
  std::sort(rows.begin(), rows.end(), [](const removal_row& a, const removal_row& b) {
    if (a.removed_before_checkout != b.removed_before_checkout)
      return a.removed_before_checkout > b.removed_before_checkout;
    // a.removed / a.added > b.removed / b.added, in integers
    auto lhs = a.removed_before_checkout * b.added;
    auto rhs = b.removed_before_checkout * a.added;
    if (lhs != rhs)
      return lhs > rhs;
    return a.sku < b.sku;
  });
}

class removed_items_projection
  : public annals::actors::typed_projection<removed_items_projection, cart> {
public:
  void on(const item_added& e, const annals::actors::envelope& env) {
    std::lock_guard guard{mtx_};
    if (seen(env))
      return;
    ++counts_[e.sku].added;
  }

  void on(const item_removed& e, const annals::actors::envelope& env) {
    std::lock_guard guard{mtx_};
    if (seen(env))
      return;
    ++pending_[std::string{env.entity_id()}][e.sku];
  }

  void on(const checked_out&, const annals::actors::envelope& env) {
    std::lock_guard guard{mtx_};
    if (seen(env))
      return;
    auto cart = pending_.find(std::string{env.entity_id()});
    if (cart == pending_.end())
      return;
    for (const auto& [sku, n] : cart->second)
      counts_[sku].removed += n;
    pending_.erase(cart);
  }

  void reset() override {
    std::lock_guard guard{mtx_};
    counts_.clear();
    pending_.clear();
    offset_ = 0;
  }

  /// The table, sorted (see `sort_rows`): every sku added at least once.
  std::vector<removal_row> table() const {
    std::lock_guard guard{mtx_};
    std::vector<removal_row> rows;
    rows.reserve(counts_.size());
    for (const auto& [sku, c] : counts_)
      rows.push_back({sku, c.removed, c.added});
    sort_rows(rows);
    return rows;
  }

  /// Carts with removals and no checkout yet.
  std::size_t carts_pending() const {
    std::lock_guard guard{mtx_};
    return pending_.size();
  }

private:
  struct count {
    std::uint64_t removed = 0;
    std::uint64_t added = 0;
  };

  bool seen(const annals::actors::envelope& env) {
    if (env.offset() <= offset_)
      return true;
    offset_ = env.offset();
    return false;
  }

  mutable std::mutex mtx_;
  std::uint64_t offset_ = 0;
  std::map<std::string, count> counts_;
  std::unordered_map<std::string, std::map<std::string, std::uint64_t>> pending_;
};

} // namespace shop
